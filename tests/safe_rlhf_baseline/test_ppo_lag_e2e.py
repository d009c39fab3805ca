"""PPO-Lag end to end on a local Ray cluster: actor, both critics, reference, scorer, rollout engine.

Two rollout steps of two PPO updates each must change the actor and both critics,
sync the actor into the engine, move lambda the right way, log the reference's
metric names, and leave a checkpoint that ``resume`` restores exactly.
"""

import json

import pytest
import torch

from rad.config import load_config
from rad.runtime.metrics import read_metrics
from safe_rlhf_baseline.config import PPOLagConfig
from safe_rlhf_baseline.trainer import PPOLagTrainer

pytestmark = pytest.mark.slow


def test_two_steps_train_the_actor_and_both_critics(ray_cluster, tmp_path, sft_model_dir, score_dirs):
    import ray

    # threshold far below any cost the untrained head gives: Jc > d, so lambda must rise
    cfg = load_config(PPOLagConfig, None, [
        f"output_dir={tmp_path / 'run'}", f"policy.name_or_path={sft_model_dir}",
        f"reward_model={score_dirs['reward']}", f"cost_model={score_dirs['cost']}",
        "algo.steps=2", "algo.prompts_per_step=4", "algo.samples_per_prompt=2", "algo.train_batch_size=4",
        "algo.threshold=-3.0", "algo.lambda_lr=0.05", "data.ptx=[embedded/sft-train:64]", "algo.ptx_coeff=1.0",
        "actor_learner.lr=1e-3", "critic_learner.lr=1e-3", "actor_learner.micro_batch_size=2",
        "rollout.engine=hf", "rollout.sampling.max_new_tokens=12",
        "data.eval_prompts=embedded/prompts-test:6", "eval_samples_per_prompt=1",
        "save_every=1", "logging.tensorboard=false", "logging.progress=false", "resources.placement=pack"])
    trainer = PPOLagTrainer(cfg)
    try:
        # every role in one placement group: actor, two critics, reference, scorer, engine
        table = ray.util.placement_group_table(trainer.placement.group)
        assert table["state"] == "CREATED" and len(table["bundles"]) == 6
        # an EOS-first (empty) answer is scored, not an error
        rewards, costs = trainer.score(["how do i stay safe?"], [""])
        assert torch.isfinite(rewards).all() and torch.isfinite(costs).all()
        groups = {"actor": trainer.actor, "reward_critic": trainer.reward_critic, "cost_critic": trainer.cost_critic}
        before = {name: g.broadcast("state_dict")[0] for name, g in groups.items()}
        summary = trainer.train()
        after = {name: g.broadcast("state_dict")[0] for name, g in groups.items()}
        for name in groups:
            changed = [k for k in before[name] if not torch.equal(before[name][k], after[name][k])]
            assert changed, f"{name} weights did not change"
        assert any(k.startswith("head.") for k in before["cost_critic"])  # the critic starts from the score model
        engine = ray.get(trainer.rollout.actors[0].get_weights.remote())
        for name, tensor in after["actor"].items():
            torch.testing.assert_close(engine[name], tensor, rtol=0, atol=0, msg=name)
        # one more step moves everything; resume() must restore the step-2 checkpoint exactly
        saved_multiplier = trainer.multiplier.state_dict()
        trainer.train_step()
        assert trainer.updates == 6 and trainer.multiplier.state_dict() != saved_multiplier
        assert trainer.resume()
        assert (trainer.step, trainer.updates) == (2, 4) and trainer.multiplier.state_dict() == saved_multiplier
        for name, g in groups.items():
            restored = g.broadcast("state_dict")[0]
            for k, tensor in after[name].items():
                torch.testing.assert_close(restored[k], tensor, rtol=0, atol=0, msg=f"{name}: {k}")
    finally:
        trainer.shutdown()
    assert summary["ppo_updates"] == 4
    rows = [r for r in read_metrics(tmp_path / "run") if "train/lambda" in r]
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("train/actor_loss", "train/reward_critic_loss", "train/cost_critic_loss", "train/episode_cost",
                "train/reward_advantage", "train/cost_return", "train/kl_divergence", "train/ptx_loss",
                "train/actor_lr", "train/cost_critic_lr", "objective/reward", "objective/cost",
                "timing/generation", "timing/learner", "timing/weight_sync", "timing/step"):
        assert key in rows[0], key
    assert rows[0]["train/episode_cost"] > -3.0
    assert 1.0 < rows[0]["train/lambda"] < rows[1]["train/lambda"] <= 5.0
    assert (tmp_path / "run" / "model" / "config.json").is_file()
    ckpt = tmp_path / "run" / "checkpoints" / "step-2"
    for role in ("actor", "reward_critic", "cost_critic"):
        assert (ckpt / role / "engine").is_dir(), role
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["updates"] == 4 and len(state["multiplier"]["costs"]) == 16
    held = json.loads((tmp_path / "run" / "summary.json").read_text())["heldout"]
    assert 0 <= held["reward_win_rate"] <= 1 and "true_harm_mean_policy" in held
    assert held["threshold"] == -3.0
    assert held["cost_within_threshold_policy"] is (held["cost_mean_policy"] <= -3.0)
