"""PPO-Lag config: reference defaults, geometry, fail-fast errors, the tiny preset and the CLI."""

import argparse
from pathlib import Path

import pytest

from rad.config import load_config
from rad.errors import ConfigError
from safe_rlhf_baseline.cli import add_cli
from safe_rlhf_baseline.config import PPOLagConfig
from safe_rlhf_baseline.trainer import fit_geometry, updates_per_step

REQUIRED = ["reward_model=r", "cost_model=c"]
PRESET = Path(__file__).resolve().parents[2] / "launch" / "configs" / "ppo_lag_tiny.yaml"


def test_defaults_are_the_reference_scripts():
    cfg = load_config(PPOLagConfig, None, REQUIRED)
    a = cfg.algo
    assert (a.kl_coeff, a.clip_range_ratio, a.clip_range_score, a.clip_range_value) == (0.01, 0.2, 50.0, 5.0)
    assert (a.gamma, a.gae_lambda, a.threshold) == (1.0, 0.95, 0.0)
    assert (a.lambda_init, a.lambda_lr, a.lambda_max, a.lambda_update_delay_steps) == (1.0, 0.1, 5.0, 0)
    assert (a.episode_cost_window_size, a.update_iters, a.ptx_coeff) == (128, 1, 16.0)
    assert (cfg.actor_learner.lr, cfg.actor_learner.scheduler, cfg.actor_learner.warmup_ratio) == (1e-5, "cosine", 0.03)
    assert (cfg.critic_learner.lr, cfg.critic_learner.scheduler) == (5e-6, "constant")
    assert cfg.rollout.sampling.temperature == 1.0


def test_geometry_one_optimizer_step_per_update():
    cfg = load_config(PPOLagConfig, None, REQUIRED + ["algo.prompts_per_step=8", "algo.samples_per_prompt=2",
                                                      "algo.train_batch_size=8", "algo.update_iters=3",
                                                      "resources.num_learners=2", "actor_learner.micro_batch_size=3"])
    assert updates_per_step(cfg) == 3 * 16 // 8
    geo = fit_geometry(cfg.actor_learner, cfg.algo.train_batch_size, cfg.resources.num_learners)
    assert geo.micro_batch_size * geo.grad_accum == 4 and geo.micro_batch_size == 2


@pytest.mark.parametrize("overrides,needle", [
    (["cost_model=c"], "reward_model"),
    (REQUIRED + ["algo.train_batch_size=5"], "train_batch_size = 5 must divide the rollout batch"),
    (REQUIRED + ["algo.train_batch_size=8", "algo.prompts_per_step=8", "resources.num_learners=3"],
     "num_learners = 3"),
    (REQUIRED + ["algo.lambda_init=0"], "algo.lambda_init"),
    (REQUIRED + ["algo.gae_lambda=1.5"], "algo.gae_lambda"),
    (REQUIRED + ["reference_micro_batch_size=0"], "reference_micro_batch_size"),
    (REQUIRED + ["actor_learner.logprob_chunk_size=-1"], "actor_learner.logprob_chunk_size"),
    (REQUIRED + ["lora.enabled=true", "actor_learner.zero_stage=3"], "lora.enabled with actor_learner.zero_stage=3"),
])
def test_bad_configs_fail_fast(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(PPOLagConfig, None, overrides)


def test_tiny_preset_loads():
    cfg = load_config(PPOLagConfig, PRESET, REQUIRED)
    assert cfg.actor_learner.lr > 1e-5 and cfg.algo.threshold != 0.0


def test_cli_registers_baseline_ppo_lag(capsys):
    parser = argparse.ArgumentParser(prog="rad")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["baseline", "ppo-lag", "--help-config"])
    assert args.func(args) == 0
    keys = capsys.readouterr().out
    for key in ("algo.lambda_lr", "algo.episode_cost_window_size", "critic_learner.lr", "reward_critic_model"):
        assert key in keys
