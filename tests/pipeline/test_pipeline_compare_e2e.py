"""``rad train`` with the optional stages: PPO-Lag and the arena report after RAD, on tiny budgets.

SFT and the score models come from the session fixtures (recorded as finished
stages of the run), so the pipeline runs RAD, PPO-Lag and eval for real, then a
second time to show that finished stages are skipped and the report is rebuilt
from cached generations.
"""

import json
from pathlib import Path

import pytest

from rad.config import load_config
from rad.pipeline import PipelineConfig, run_pipeline

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).resolve().parents[2] / "launch" / "configs" / "tiny_compare.yaml"
COMPETITIONS = {"sft vs rad", "sft vs ppo-lag", "ppo-lag vs rad"}


def test_compare_pipeline_runs_ppo_lag_and_reports_all_three_competitions(ray_cluster, tmp_path, sft_model_dir,
                                                                          score_dirs):
    out = tmp_path / "run"
    for stage, model in (("sft", sft_model_dir), ("reward", score_dirs["reward"]), ("cost", score_dirs["cost"])):
        (out / stage).mkdir(parents=True)
        (out / stage / "model").symlink_to(model)
    (out / "summary.json").write_text(json.dumps({"stages": {s: {"fixture": True} for s in ("sft", "reward", "cost")}}))
    cfg = load_config(PipelineConfig, CONFIG, [
        f"output_dir={out}", "logging.tensorboard=false", "logging.progress=false",
        "rad.algo.steps=2", "rad.algo.k=2", "rad.algo.prompts_per_step=4", "rad.algo.ot.n_particles=8",
        "rad.algo.ref_costs.prompts=8", "rad.algo.ref_costs.samples_per_prompt=2", "rad.learner.micro_batch_size=4",
        "rad.rollout.sampling.max_new_tokens=12", "rad.data.eval_prompts=embedded/prompts-test:6",
        "rad.eval_samples_per_prompt=1", "rad.save_every=0", "rad.algo.selection.rule=last",
        "ppo_lag.algo.steps=2", "ppo_lag.algo.prompts_per_step=4", "ppo_lag.algo.train_batch_size=4",
        "ppo_lag.rollout.sampling.max_new_tokens=12", "ppo_lag.data.eval_prompts=embedded/prompts-test:6",
        "ppo_lag.eval_samples_per_prompt=1", "ppo_lag.save_every=0",
        "eval.prompts=embedded/prompts-test:8", "eval.redteam=embedded/redteam:4", "eval.judge.seeds=[0]",
        "eval.sampling.max_new_tokens=12", f"eval.cache_dir={tmp_path / 'cache'}"])

    summary = run_pipeline(cfg)
    stages = summary["stages"]
    assert [stages[s] for s in ("sft", "reward", "cost")] == [{"fixture": True}] * 3  # found finished, not rerun
    for stage in ("rad", "ppo_lag"):
        assert (out / stage / "model" / "config.json").is_file()
    assert stages["ppo_lag"]["steps"] == 2
    report = stages["eval"]
    assert set(report["competitions"]) == COMPETITIONS
    text = (out / "eval" / "report.md").read_text()
    assert all(label in text for label in COMPETITIONS)
    results = json.loads((out / "eval" / "results.json").read_text())
    assert {(c["red"], c["blue"]) for c in results["competitions"]} == {
        ("sft", "rad"), ("sft", "ppo-lag"), ("ppo-lag", "rad")}
    assert results["models"]["ppo-lag"]["path"] == str((out / "ppo_lag" / "model").resolve())
    for name in ("sft_vs_rad", "sft_vs_ppo-lag", "ppo-lag_vs_rad"):
        assert (out / "eval" / "pairs" / f"{name}.csv").is_file()
    for fig in ("winrate_heatmap", "cost_cdf", "quantile_gaps_cost", "quantile_gaps_true_harm"):
        assert (out / "eval" / "figures" / f"{fig}.png").stat().st_size > 10_000
    assert (out / "eval" / "report.html").is_file()

    again = run_pipeline(cfg)["stages"]
    assert again["rad"] == stages["rad"] and again["ppo_lag"] == stages["ppo_lag"]  # skipped
    assert again["eval"]["generated"] == [] and len(again["eval"]["reused"]) == 3 * 2  # held-out + 1 OOD seed
    assert set(again["eval"]["competitions"]) == COMPETITIONS
