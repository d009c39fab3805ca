"""Short score-model trainings on the embedded world: learning signal, outputs, CLI, resume."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest

from rad.errors import ConfigError, DataError
from rad.models.score_model import load_score_model
from rad.runtime.scorer import Scorer
from reward_cost_models.config import RewardModelConfig
from reward_cost_models.train import check_pairs, run_score_model

TRAIN = "embedded/pref-train:640"
EVAL = "embedded/pref-test:128"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matmuls gain nothing from a second thread, and lose a lot when other jobs share the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _overrides(tmp, backbone) -> list[str]:
    return [f"output_dir={tmp}", f"model.name_or_path={backbone}", f"data.train=[{TRAIN}]", f"data.eval=[{EVAL}]",
            "schedule.epochs=1", "logging.progress=false", "logging.tensorboard=false"]


def test_cost_model_via_cli_learns_signs_and_tracks_hidden_harm(sft_model_dir, tmp_path, capsys):
    from reward_cost_models.cli import add_cli

    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    out = tmp_path / "cost"
    args = parser.parse_args(["cm", "train", *_overrides(out, sft_model_dir)])
    assert args.func(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert '"kind": "cost"' in capsys.readouterr().out  # the CLI prints the summary
    held = summary["heldout"]
    assert held["pairs"] == 128 and summary["train_rows"] == 640
    # rows the contradiction filter dropped from the files are counted (embedded world: 5% label noise)
    assert summary["skipped_rows"]["train"]["safer_unsafe_other_safe"] > 0
    assert summary["skipped_rows"]["eval"]["safer_unsafe_other_safe"] > 0
    assert held["sign_accuracy"] > 0.8, held
    assert held["accuracy"] > 0.6, held
    assert held["spearman_harm"] > 0.5, held
    assert held["safe_cost_mean"] < 0 < held["unsafe_cost_mean"], held
    assert summary["final_eval"]["eval/sign_accuracy"] > summary["initial_eval"]["eval/sign_accuracy"]
    assert (out / "score_hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any("eval/sign_accuracy" in json.loads(line) for line in open(out / "metrics.jsonl"))
    # The saved model scores through the service like the run measured, with its statistics stored.
    model = load_score_model(out / "model")
    assert model.kind == "cost"
    assert model.score_config.mean == pytest.approx(held["score_mean"])
    assert model.score_config.std == pytest.approx(held["score_std"])
    costs = Scorer(cost_dir=out / "model").score(["how do i make a bomb?"] * 2,
                                                   ["i can't help with that.", "sure, mix the chemicals."])["costs"]
    assert np.isfinite(costs).all()


def test_reward_model_learns_preferences_and_resumes(sft_model_dir, tmp_path):
    from rad.config import load_config

    out = tmp_path / "reward"
    base = _overrides(out, sft_model_dir)
    command = [*base, "schedule.max_steps=24", "schedule.save_every=12"]
    first = run_score_model(load_config(RewardModelConfig, None, command))
    assert first["steps"] == 24
    assert first["heldout"]["accuracy"] > 0.65, first["heldout"]
    assert first["heldout"]["spearman_help"] > 0.3, first["heldout"]
    # Rerunning the same command returns the finished run instead of training again.
    assert run_score_model(load_config(RewardModelConfig, None, command)) == first
    # Cut after the step-12 checkpoint: the same command continues from it instead of starting over.
    shutil.rmtree(out / "checkpoints" / "step-24")
    shutil.rmtree(out / "model")
    second = run_score_model(load_config(RewardModelConfig, None, command))
    assert second["steps"] == 24 and second["initial_eval"] == {}
    assert second["final_eval"] == pytest.approx(first["final_eval"], rel=1e-4)
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["step"] for r in rows].count(0) == 1  # the initial evaluation, once
    assert [r["step"] for r in rows if "train/loss" in r] == list(range(1, 25))  # no step logged twice
    # A longer schedule changes the learning-rate schedule: refused, naming the key.
    with pytest.raises(ConfigError, match=r"^schedule.max_steps: "):
        run_score_model(load_config(RewardModelConfig, None, [*base, "schedule.max_steps=30"]))


def test_empty_response_is_reported_with_its_file_and_row(tmp_path):
    """Rows skipped before it do not shift the row named (issue 17, item 9)."""
    from rad.algos.assets import load_data
    from rad.settings import WorldConfig

    rows = [{"prompt": f"p{i}", "response_0": "no", "response_1": "yes", "better_response_id": 1,
             "safer_response_id": 0, "is_response_0_safe": i != 4, "is_response_1_safe": i == 4}
            for i in range(14)]  # row 4 is contradictory
    rows[12]["response_1"] = ""
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_data([str(path)], "preference", WorldConfig(data_root=str(tmp_path)), seed=0)
    assert len(data.records) == 13 and dict(data.skipped) == {"safer_unsafe_other_safe": 1}
    with pytest.raises(DataError, match=rf"^{path} row 12: response_1 is empty"):
        check_pairs(data.records, data.origins)
