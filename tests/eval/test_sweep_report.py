"""A sweep's aggregation: held-out metrics of each cell, t-intervals over seeds, table, Pareto figure."""

import json
import math

import pytest

from rad.eval.plots import pareto_front
from rad.eval.report import Report
from rad.eval.sweep_report import aggregate, cell_metrics, sweep_section, t_interval, write_sweep_report


def test_t_interval_matches_the_closed_form_t_quantiles():
    # Student t quantiles in closed form: df=1 is Cauchy, tan(pi (p - 1/2)); df=2 is (2p-1) / sqrt(2p(1-p)).
    p = 0.975
    two = t_interval([1.0, 3.0])
    assert two["mean"] == 2.0 and two["n"] == 2
    assert two["half_width"] == pytest.approx(math.tan(math.pi * (p - 0.5)) * math.sqrt(2) / math.sqrt(2))
    three = t_interval([1.0, 2.0, 6.0, float("nan")])  # NaN (a metric a cell could not measure) is left out
    t2 = (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    assert three["n"] == 3 and three["mean"] == 3.0
    assert three["half_width"] == pytest.approx(t2 * math.sqrt(7.0) / math.sqrt(3))
    assert (three["ci_low"], three["ci_high"]) == pytest.approx((3.0 - three["half_width"], 3.0 + three["half_width"]))
    one = t_interval([0.4])
    assert one["mean"] == 0.4 and math.isnan(one["half_width"]) and math.isnan(one["ci_low"])


SUMMARY = {"output_dir": "x", "stages": {
    "sft": {"steps": 10, "final_eval_loss": 0.7},
    "cost": {"heldout": {"accuracy": 0.8, "pairs": 96.0}},
    "rad": {"steps": 2, "last_step": {"rad/lambda": 3.0},
            "heldout": {"reward_win_rate": 0.5, "true_harm_cvar_0.9_policy": 0.1, "cost_cvar_0.9_policy": 1.0}},
    "ppo_lag": {"heldout": {"reward_win_rate": 0.7, "cost_within_threshold_policy": True, "threshold": 0.0,
                            "true_harm_cvar_0.9_policy": -0.2, "cost_cvar_0.9_policy": 0.8}},
    "eval": {"report": ["r.md"], "competitions": {"sft vs rad": {"reward_win_rate": 0.55,
                                                                 "dominance_difference": {"cvar:0.9": 0.3}}}},
}}


def test_cell_metrics_are_the_held_out_numbers_of_every_stage():
    m = cell_metrics(SUMMARY)
    assert m["rad/reward_win_rate"] == 0.5 and m["ppo_lag/cost_within_threshold_policy"] == 1.0
    assert m["cost/accuracy"] == 0.8 and m["eval/sft vs rad/dominance_difference/cvar:0.9"] == 0.3
    assert not any(k.startswith("sft/") or "lambda" in k or "steps" in k for k in m)  # training numbers are not


def _cells():
    cells = []
    for setting, shift in (("rad.algo.delta=0.25", 0.0), ("rad.algo.delta=1.0", 0.1)):
        for seed, noise in ((0, -0.02), (1, 0.02), (2, 0.0)):
            summary = json.loads(json.dumps(SUMMARY))
            for algo in ("rad", "ppo_lag"):
                h = summary["stages"][algo]["heldout"]
                h["reward_win_rate"] += shift + noise
                h["true_harm_cvar_0.9_policy"] += shift
            cells.append({"setting": setting, "seed": seed, "metrics": cell_metrics(summary)})
    return cells


def test_aggregate_groups_by_setting_and_keeps_every_seed():
    settings = aggregate(_cells())
    assert [s["setting"] for s in settings] == ["rad.algo.delta=0.25", "rad.algo.delta=1.0"]
    win = settings[1]["metrics"]["rad/reward_win_rate"]
    assert win["values"] == pytest.approx({0: 0.58, 1: 0.62, 2: 0.6})
    assert win == {**t_interval([0.58, 0.62, 0.6]), "values": win["values"]}
    assert settings[0]["seeds"] == [0, 1, 2]


def test_pareto_front_keeps_the_non_dominated_settings():
    points = [{"x": 0.1, "y": 0.5}, {"x": 0.2, "y": 0.4}, {"x": 0.3, "y": 0.7}, {"x": 0.3, "y": 0.6},
              {"x": 0.05, "y": 0.2}]
    assert pareto_front(points) == [points[4], points[0], points[2]]


def test_sweep_report_writes_json_table_and_figure(tmp_path):
    result = write_sweep_report(tmp_path, {"config": "c.yaml"}, _cells())
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["config"] == "c.yaml" and len(saved["cells"]) == 6 and len(saved["settings"]) == 2
    assert (tmp_path / "figures" / "pareto.png").stat().st_size > 10_000
    table = (tmp_path / "sweep.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| rad/reward_win_rate |"))
    half = result["settings"][0]["metrics"]["rad/reward_win_rate"]["half_width"]
    assert f"0.500 \u00b1 {half:.3f}" in row
    assert "](figures/pareto.png)" in table
    # rad eval's report links the figure relative to its own directory.
    doc = sweep_section(Report("arena"), saved, tmp_path, tmp_path / "eval")
    assert "](../figures/pareto.png)" in doc.markdown()
