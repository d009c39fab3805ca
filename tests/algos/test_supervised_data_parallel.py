"""Supervised stages on several learner ranks (Ray actors, DeepSpeed on gloo): same trajectory as one rank.

Two ranks at ``grad_accum=1`` take each optimizer step on the global batch one rank
takes at ``grad_accum=2`` (the same micro batches, see ``rad.runtime.sharding``),
so their losses, held-out metrics and weights agree up to float reassociation.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from rad.algos.sft import SFTConfig, run_sft
from rad.errors import ConfigError
from rad.models.loading import load_causal_lm
from rad.runtime.checkpoint import list_checkpoints
from rad.runtime.metrics import read_metrics
from rad.settings import LearnerConfig, LoggingConfig, ModelConfig

pytestmark = pytest.mark.slow

STEPS = 4


def _cfg(tmp_path, name: str, tiny_model_dir, world_config, ranks: int, **schedule) -> SFTConfig:
    cfg = SFTConfig(output_dir=str(tmp_path / name), world=world_config,
                    model=ModelConfig(name_or_path=str(tiny_model_dir)),
                    learner=LearnerConfig(lr=3e-3, micro_batch_size=4, grad_accum=2 // ranks, zero_stage=2,
                                          warmup_ratio=0.0, scheduler="constant"),
                    logging=LoggingConfig(tensorboard=False, progress=False), num_samples=0)
    cfg.data.train = ["embedded/sft-train:64"]
    cfg.data.eval = ["embedded/sft-test:20"]  # 3 eval batches of 8: one rank runs an uncounted extra
    cfg.data.max_length = 64
    cfg.schedule.epochs = 1
    cfg.schedule.max_steps = STEPS
    cfg.schedule.eval_batch_size = 8
    cfg.resources.num_learners = ranks
    for k, v in schedule.items():
        setattr(cfg.schedule, k, v)
    return cfg


def _losses(run_dir) -> list[float]:
    return [r["train/loss"] for r in read_metrics(run_dir) if "train/loss" in r]


def _assert_same_weights(dir_a, dir_b, atol: float) -> None:
    a, b = load_causal_lm(dir_a).state_dict(), load_causal_lm(dir_b).state_dict()
    for name, tensor in a.items():
        torch.testing.assert_close(b[name], tensor, rtol=0, atol=atol, msg=name)


def test_two_ranks_follow_the_one_rank_trajectory_and_resume(tmp_path, ray_cluster, tiny_model_dir, world_config):
    one = run_sft(_cfg(tmp_path, "one", tiny_model_dir, world_config, ranks=1))
    two_cfg = _cfg(tmp_path, "two", tiny_model_dir, world_config, ranks=2, save_every=2)
    two = run_sft(two_cfg)

    assert one["learner_ranks"] == 1 and two["learner_ranks"] == 2 and one["steps"] == two["steps"] == STEPS
    loss_one, loss_two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(loss_one) == len(loss_two) == STEPS
    assert loss_one[-1] < loss_one[0]  # it trains: a wrong shard would still "agree" if nothing moved
    torch.testing.assert_close(torch.tensor(loss_two), torch.tensor(loss_one), rtol=2e-4, atol=0)
    for key in ("initial_eval_loss", "final_eval_loss"):
        assert two[key] == pytest.approx(one[key], rel=2e-4), key
    _assert_same_weights(tmp_path / "one" / "model", tmp_path / "two" / "model", atol=1e-4)

    # Rank 0 alone wrote the metrics (one row per step, not one per rank) and the summary.
    rows = read_metrics(tmp_path / "two")
    assert [r["step"] for r in rows if "train/loss" in r] == list(range(1, STEPS + 1))
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["learner_ranks"] == 2
    # Every rank wrote its RNG state into the shared checkpoints.
    ckpts = list_checkpoints(tmp_path / "two")
    assert [step for step, _ in ckpts] == [2, 4]
    assert {p.name for p in ckpts[0][1].iterdir()} >= {"trainer_state.json", "rng.pt", "rng-rank1.pt", "engine"}

    # Resume: lose the last checkpoint and the model, rerun the same config (resume is the default) from step 2
    # on two ranks: the same weights.
    shutil.rmtree(ckpts[-1][1])
    shutil.rmtree(tmp_path / "two" / "model")
    resumed = run_sft(two_cfg)
    assert resumed["steps"] == STEPS
    _assert_same_weights(tmp_path / "one" / "model", tmp_path / "two" / "model", atol=1e-4)
    steps = [r["step"] for r in read_metrics(tmp_path / "two") if "train/loss" in r]
    assert steps == [1, 2, 3, 4]  # the rows logged after the step-2 checkpoint were cut, then logged again

    # A checkpoint of two ranks does not resume on one (data position and optimizer shards differ).
    shutil.rmtree(tmp_path / "two" / "model")
    one_rank = _cfg(tmp_path, "two", tiny_model_dir, world_config, ranks=1)
    with pytest.raises(ConfigError, match=r"^learner.grad_accum, resources.num_learners: .* holds a run made with "
                                          r"different values \(learner.grad_accum: 1 -> 2, "
                                          r"resources.num_learners: 2 -> 1\)"):
        run_sft(one_rank)


def _two_ways(tmp_path, make, run):
    """``run`` of ``make(ranks)`` on one rank (grad_accum 2) and on two (grad_accum 1); both summaries."""
    out = []
    for ranks in (1, 2):
        cfg = make(ranks)
        cfg.output_dir = str(tmp_path / f"ranks{ranks}")
        cfg.learner = LearnerConfig(lr=2e-3, micro_batch_size=4, grad_accum=2 // ranks, warmup_ratio=0.0,
                                    scheduler="constant")
        cfg.logging = LoggingConfig(tensorboard=False, progress=False)
        cfg.schedule.epochs, cfg.schedule.max_steps, cfg.schedule.eval_batch_size = 1, 3, 8
        cfg.resources.num_learners = ranks
        cfg.data.max_length = 64
        out.append(run(cfg))
    return out


def test_reward_model_and_dpo_on_two_ranks_match_one(tmp_path, ray_cluster, tiny_model_dir, world_config):
    from reward_cost_models.config import ScoreModelConfig
    from reward_cost_models.train import run_score_model
    from risk_dpo.trainer import DPOConfig, run_dpo

    def score_cfg(ranks):
        cfg = ScoreModelConfig(kind="reward", world=world_config, model=ModelConfig(name_or_path=str(tiny_model_dir)))
        cfg.data.train, cfg.data.eval = ["embedded/pref-train:48"], ["embedded/pref-test:20"]
        return cfg

    one, two = _two_ways(tmp_path / "reward", score_cfg, run_score_model)
    assert two["learner_ranks"] == 2 and two["steps"] == one["steps"] == 3
    for key in ("eval/loss", "eval/accuracy", "eval/score_mean"):
        assert two["final_eval"][key] == pytest.approx(one["final_eval"][key], rel=1e-4, abs=1e-6), key
    assert two["heldout"]["score_mean"] == pytest.approx(one["heldout"]["score_mean"], rel=1e-4, abs=1e-6)
    assert (tmp_path / "reward" / "ranks2" / "score_hist.png").is_file()

    def dpo_cfg(ranks):
        cfg = DPOConfig(world=world_config, model=ModelConfig(name_or_path=str(tiny_model_dir)))
        cfg.data.pairs = "safety"
        cfg.data.train, cfg.data.eval = ["embedded/pref-train:48"], ["embedded/pref-test:20"]
        return cfg

    one, two = _two_ways(tmp_path / "dpo", dpo_cfg, run_dpo)
    assert two["learner_ranks"] == 2 and two["steps"] == one["steps"] == 3
    assert one["final_eval"]["eval/loss"] != one["initial_eval"]["eval/loss"]
    for key in ("eval/loss", "eval/rewards/margins", "eval/rewards/accuracies"):
        assert two["final_eval"][key] == pytest.approx(one["final_eval"][key], rel=1e-4, abs=1e-6), key
    _assert_same_weights(tmp_path / "dpo" / "ranks1" / "model", tmp_path / "dpo" / "ranks2" / "model", atol=1e-4)
