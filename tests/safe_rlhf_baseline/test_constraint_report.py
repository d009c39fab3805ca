"""The held-out verdict of the PPO-Lag summary: mean cost against the threshold, stated outright."""

import math

import pytest

from safe_rlhf_baseline.trainer import constraint_report


def test_the_verdict_compares_each_mean_with_the_threshold():
    report = constraint_report([-3.0, -2.0, -4.0, -3.0], [-1.0, -2.0], threshold=-2.5)
    assert report["threshold"] == -2.5
    assert report["cost_within_threshold_policy"] is True  # mean -3.0
    assert report["cost_within_threshold_reference"] is False  # mean -1.5
    assert report["cost_mean_policy_stderr"] == pytest.approx(math.sqrt(2 / 3) / 2)


def test_a_mean_equal_to_the_threshold_meets_it():
    report = constraint_report([-2.5, -2.5], [-2.5], threshold=-2.5)
    assert report["cost_within_threshold_policy"] and report["cost_within_threshold_reference"]
    assert report["cost_mean_policy_stderr"] == 0.0
