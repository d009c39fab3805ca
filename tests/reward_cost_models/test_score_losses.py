"""Score-model losses and metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reward_cost_models.losses import (cost_loss, neg_log_sigmoid, pair_accuracy, reward_loss, safety_sign,
                                       sign_accuracy)


def nls(x: float) -> float:
    """-log(sigmoid(x)) written out directly: -log(1 / (1 + exp(-x)))."""
    return -math.log(1.0 / (1.0 + math.exp(-x)))


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_reward_loss_hand_computed():
    better, worse = t(1.0, 0.0), t(0.0, 2.0)
    # pair 1: -log sigmoid(1) = log(1 + e^-1) = 0.3132617; pair 2: -log sigmoid(-2) = log(1 + e^2) = 2.1269280
    expected = (0.31326169 + 2.12692801) / 2
    assert reward_loss(better, worse).item() == pytest.approx(expected, abs=1e-7)
    assert reward_loss(better, worse).item() == pytest.approx((nls(1.0) + nls(-2.0)) / 2, abs=1e-12)
    # regularisation: mean of squares over all four scores = (1 + 0 + 0 + 4) / 4
    assert reward_loss(better, worse, reg=0.1).item() == pytest.approx(expected + 0.1 * 1.25, abs=1e-7)


def test_cost_loss_hand_computed():
    safer, unsafer = t(-1.0, 0.5), t(2.0, 0.0)
    safer_safe, unsafer_safe = torch.tensor([True, True]), torch.tensor([False, True])
    # pair 1: nls(2 - -1) + nls(-1 * -1) + nls(+1 * 2); pair 2: nls(0 - 0.5) + nls(-1 * 0.5) + nls(-1 * 0)
    pair1 = 0.04858735 + 0.31326169 + 0.12692801
    pair2 = 0.97407698 + 0.97407698 + 0.69314718
    loss = cost_loss(safer, unsafer, safety_sign(safer_safe), safety_sign(unsafer_safe))
    assert loss.item() == pytest.approx((pair1 + pair2) / 2, abs=1e-7)
    reg = cost_loss(safer, unsafer, safety_sign(safer_safe), safety_sign(unsafer_safe), reg=0.5)
    assert reg.item() == pytest.approx((pair1 + pair2) / 2 + 0.5 * (1 + 0.25 + 4 + 0) / 4, abs=1e-7)


def test_cost_gradient_pushes_safe_down_and_unsafe_up():
    safer = t(0.3).requires_grad_()
    unsafer = t(0.1).requires_grad_()
    cost_loss(safer, unsafer, safety_sign(torch.tensor([True])), safety_sign(torch.tensor([False]))).backward()
    assert safer.grad.item() > 0  # descent lowers the safe response's cost
    assert unsafer.grad.item() < 0  # and raises the unsafe one's


def test_losses_finite_for_extreme_scores():
    big = t(1e4)
    assert reward_loss(-big, big).item() == pytest.approx(2e4)
    assert reward_loss(big, -big).item() == pytest.approx(0.0, abs=1e-12)
    loss = cost_loss(big, -big, t(-1.0), t(1.0))
    assert math.isfinite(loss.item()) and loss.item() == pytest.approx(4e4)


def test_safety_sign_and_accuracies():
    assert safety_sign(torch.tensor([True, False])).tolist() == [-1.0, 1.0]
    # ties count as wrong
    assert pair_accuracy(t(1.0, 2.0, 3.0, 1.0), t(0.0, 2.0, 4.0, 0.5)).item() == pytest.approx(0.5)
    # cost 0 is "safe" (cost <= 0), a positive cost is "unsafe"
    costs = t(0.0, -1.0, 2.0, 0.5)
    is_safe = torch.tensor([True, True, False, True])
    assert sign_accuracy(costs, is_safe).item() == pytest.approx(0.75)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(-30, 30), st.floats(-30, 30)), min_size=1, max_size=8))
def test_reward_loss_antisymmetry(pairs):
    # softplus(-x) - softplus(x) = -x, so L(a, b) - L(b, a) = mean(b - a) exactly.
    a = t(*[p[0] for p in pairs])
    b = t(*[p[1] for p in pairs])
    # cancellation at |x| ~ 30
    assert (reward_loss(a, b) - reward_loss(b, a)).item() == pytest.approx((b - a).mean().item(), abs=1e-7)
    assert torch.allclose(neg_log_sigmoid(a), t(*[nls(x) for x in a.tolist()]), atol=1e-9)
