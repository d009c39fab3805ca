"""The PPO-Lagrangian controller: Safe RLHF's training loop on rad's Ray runtime.

Six roles, each a Ray actor group; the controller (driver) owns the dataflow::

    prompts --rollout pool--> responses --scorer--> reward r, cost c    (episode costs -> lambda window)
      --reference / actor / reward critic / cost critic (in parallel, and with the scorer)-->
            log pi_ref, log pi_old, V_r, V_c per response token
    driver: shaped streams (KL per token, scores on the last token, clipped)
            GAE per stream -> A_r, R_r, A_c, R_c
    update_iters x minibatches:
        driver: lambda step (SGD on log lambda with Jc = mean of the cost window)
        actor, reward critic, cost critic (concurrently): one optimizer step each
    weights actor -> rollout engines; metrics; atomic checkpoints

The roles (rollout pool, scorer, reference, weight sync by the actor ranks), the loop,
checkpoints and evaluation are rad's shared online runtime: :class:`PPOLagTrainer` is a
sibling of RAD's trainer on :class:`rad.algos.online.OnlineRLTrainer`, and says only what
PPO-Lag is: its trained roles (actor, reward critic, cost critic), its step, its checkpoint
state (updates, the multiplier) and its held-out verdict.

Metric names are the reference's (``train/lambda``, ``train/episode_cost``,
``train/reward_critic_loss``, ...), plus rad's shared ``objective/*``,
``timing/*``, ``throughput/*``. The reference logs every PPO update; here each
rollout step logs the mean over its updates, and ``train/lambda`` /
``train/episode_cost`` as of the last update.
"""

from __future__ import annotations

import dataclasses
import random
import time
from typing import Any

import torch

from rad.algos.online import OnlineRLTrainer, run_trainer
from rad.errors import ConfigError
from rad.runtime.roles import TrainedRole
from rad.settings import LearnerConfig
from safe_rlhf_baseline.config import PPOLagConfig
from safe_rlhf_baseline.lagrange import LagrangeMultiplier
from safe_rlhf_baseline.ppo_math import gae, masked_mean, shape_rewards

def fit_geometry(learner: LearnerConfig, train_batch_size: int, num_ranks: int) -> LearnerConfig:
    """``learner`` with micro batch and accumulation fitted so one PPO update is one optimizer step per rank."""
    shard = train_batch_size // num_ranks
    micro = min(learner.micro_batch_size, shard)
    while shard % micro:
        micro -= 1
    return dataclasses.replace(learner, micro_batch_size=micro, grad_accum=shard // micro)


def updates_per_step(cfg: PPOLagConfig) -> int:
    algo = cfg.algo
    return algo.update_iters * algo.prompts_per_step * algo.samples_per_prompt // algo.train_batch_size


def constraint_report(policy_costs: list[float], reference_costs: list[float], threshold: float) -> dict[str, Any]:
    """Whether the held-out mean costs meet the constraint ``E[cost] <= threshold``, stated outright.

    ``cost_mean_policy_stderr`` (sample standard deviation / sqrt(n)) says how far
    from the threshold a mean must be for the verdict not to be noise; it treats
    samples as independent, though several share a prompt, so it errs small.
    """
    pc = torch.tensor(policy_costs, dtype=torch.float64)
    policy_mean, reference_mean = float(pc.mean()), float(torch.tensor(reference_costs, dtype=torch.float64).mean())
    stderr = float(pc.std() / len(pc) ** 0.5) if len(pc) > 1 else float("nan")
    return {"threshold": threshold, "cost_within_threshold_policy": policy_mean <= threshold,
            "cost_within_threshold_reference": reference_mean <= threshold,
            "cost_mean_policy_stderr": stderr}


class PPOLagTrainer(OnlineRLTrainer):
    """Safe RLHF's PPO-Lagrangian on the shared online loop: actor + two critics, GAE, clipped PPO, lambda."""

    name = "ppo-lag"

    def __init__(self, cfg: PPOLagConfig):
        from rad.algos.assets import load_records

        algo, res = cfg.algo, cfg.resources
        self.ptx_records = load_records(cfg.data.ptx, "sft", cfg.world, cfg.seed)
        if cfg.data.ptx and not self.ptx_records:
            raise ConfigError("data.ptx: no records after loading")
        self.total_updates = algo.steps * updates_per_step(cfg)
        self.actor_cfg = fit_geometry(cfg.actor_learner, algo.train_batch_size, res.num_learners)
        self.critic_cfg = fit_geometry(cfg.critic_learner, algo.train_batch_size, res.num_learners)
        self.multiplier = LagrangeMultiplier(algo.lambda_init, algo.lambda_lr, algo.lambda_max, algo.threshold,
                                             algo.episode_cost_window_size, algo.lambda_update_delay_steps)
        self.updates = 0  # PPO updates so far (the reference's global_step)
        super().__init__(cfg)

    def policy_role(self) -> TrainedRole:
        from safe_rlhf_baseline.workers import PPOActor

        cfg = self.cfg
        return TrainedRole(PPOActor, (self.policy_dir, self.actor_cfg, self.total_updates, cfg.policy.dtype,
                                      cfg.policy.trust_remote_code),
                           {"allow_pickle": cfg.policy.allow_pickle_weights, "prompt_format": cfg.policy.prompt_format,
                            "lora": cfg.lora})

    def trained_roles(self) -> dict[str, TrainedRole]:
        from safe_rlhf_baseline.workers import CriticLearner

        cfg = self.cfg
        args = (self.critic_cfg, self.total_updates, cfg.policy.dtype, cfg.policy.trust_remote_code)
        # A critic given by its own key is read with the default (detected) format; one starting from the
        # reward / cost model is read as that model is (its format, template and sign).
        return {"reward_critic": TrainedRole(CriticLearner, (cfg.reward_critic_model or cfg.reward_model,
                                                              self.policy_dir, *args),
                                             {"source": None if cfg.reward_critic_model else cfg.reward_scorer}),
                "cost_critic": TrainedRole(CriticLearner, (cfg.cost_critic_model or cfg.cost_model,
                                                            self.policy_dir, *args),
                                           {"source": None if cfg.cost_critic_model else cfg.cost_scorer})}

    def policy_learner(self) -> LearnerConfig:
        return self.cfg.actor_learner

    def model_dir_keys(self) -> tuple[str, ...]:
        return (*super().model_dir_keys(), "reward_critic_model", "cost_critic_model")

    @property
    def lam(self) -> float:
        return self.multiplier.value

    @property
    def actor(self):
        return self.roles.learners

    @property
    def reward_critic(self):
        return self.roles.trained["reward_critic"]

    @property
    def cost_critic(self):
        return self.roles.trained["cost_critic"]

    def trained_groups(self):
        return (self.actor, self.reward_critic, self.cost_critic)

    # -- experience ----------------------------------------------------------------------------
    def _ptx_samples(self, update: int):
        """PTX samples of PPO update ``update`` (a TokenBatch): consecutive slices of seeded per-epoch
        permutations."""
        if not self.ptx_records or self.cfg.algo.ptx_coeff == 0:
            return None
        from rad.data.encode import encode_pair

        size, n = self.cfg.algo.train_batch_size, len(self.ptx_records)
        from rad.runtime.batch import TokenBatch

        prompts, responses = [], []
        for pos in range(update * size, (update + 1) * size):
            epoch, i = divmod(pos, n)
            order = list(range(n))
            random.Random(self.cfg.seed * 7919 + 31 + epoch).shuffle(order)
            rec = self.ptx_records[order[i]]
            enc = encode_pair(self.tokenizer, rec["prompt"], rec["response"], self.cfg.data.ptx_max_length)
            prompts.append(enc.prompt_ids)
            responses.append(enc.response_ids)
        return TokenBatch.from_ids(prompts, responses, self.pad_id)

    def experience_calls(self, batch) -> list[list]:
        """The four roles' log-prob and value calls on the step's TokenBatch, started and not waited for."""
        return [g.split_async(m, batch) for g, m in ((self.reference_policy, "logprobs"), (self.actor, "logprobs"),
                                                       (self.reward_critic, "values"), (self.cost_critic, "values"))]

    def make_experience(self, batch, calls: list[list], rewards: torch.Tensor,
                        costs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Log-probs and values of :meth:`experience_calls`, then shaped streams and GAE on the driver, all in
        response coordinates ``[B, L]`` (each response from column 0; float64)."""
        from rad.runtime.worker_group import WorkerGroup

        parts = [batch.response_aligned(WorkerGroup.concat(refs).double()) for refs in calls]
        ref_lp, old_lp, r_values, c_values = (p[0] for p in parts)
        mask = parts[0][1]
        algo = self.cfg.algo
        shaped_r, shaped_c = shape_rewards(rewards, costs, old_lp, ref_lp, mask, algo.kl_coeff, algo.clip_range_score)
        adv_r, ret_r = gae(r_values, shaped_r, mask, algo.gamma, algo.gae_lambda)
        adv_c, ret_c = gae(c_values, shaped_c, mask, algo.gamma, algo.gae_lambda)
        return {"mask": mask, "ref_logprobs": ref_lp, "old_logprobs": old_lp, "reward_values": r_values,
                "cost_values": c_values, "shaped_rewards": shaped_r, "shaped_costs": shaped_c,
                "reward_advantages": adv_r, "reward_returns": ret_r, "cost_advantages": adv_c, "cost_returns": ret_c}

    # -- one rollout step ----------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        import ray

        from rad.runtime.metrics import PhaseTimer

        algo = self.cfg.algo
        timer = PhaseTimer()
        start = time.perf_counter()
        prompts = self.step_prompts(self.step)
        with timer.phase("generation"):
            rollouts = self.sample(prompts, algo.samples_per_prompt, seed=self.step_seed())
        rollouts.sort(key=lambda r: (r.prompt_index, r.sample_index))
        batch = self.token_batch(rollouts)
        # as in RAD, the scorers work while the four roles compute log-probs and values
        with timer.phase("scoring"):
            score_refs = self.roles.score_async([r.prompt for r in rollouts], [r.response_text for r in rollouts])
            calls = self.experience_calls(batch)
            rewards, costs = self.roles.gather_scores(score_refs)
        self.multiplier.observe(costs.tolist())
        with timer.phase("logprobs"):
            exp = self.make_experience(batch, calls, rewards, costs)
        mask = exp["mask"]
        token = {k: batch.from_response_aligned(exp[k].float()) for k in (
            "old_logprobs", "reward_advantages", "cost_advantages", "reward_values", "reward_returns", "cost_values",
            "cost_returns")}
        actor_batch = batch.with_fields(old_logprobs=token["old_logprobs"],
                                        reward_advantages=token["reward_advantages"],
                                        cost_advantages=token["cost_advantages"])
        critic_batch = {name: batch.with_fields(old_values=token[f"{name}_values"], returns=token[f"{name}_returns"])
                        for name in ("reward", "cost")}
        n = len(self.actor)
        tbs = algo.train_batch_size
        stats: dict[str, list[float]] = {}
        jc = float("nan")
        with timer.phase("learner"):
            for _ in range(algo.update_iters):
                for lo in range(0, len(batch), tbs):
                    jc = self.multiplier.step()
                    ptx = self._ptx_samples(self.updates)
                    ptx_shards = ptx.split(n) if ptx else [None] * n
                    refs = [a.ppo_step.remote(s, self.lam, algo.clip_range_ratio, p, algo.ptx_coeff)
                            for a, s, p in zip(self.actor.actors, actor_batch.rows(lo, lo + tbs).split(n), ptx_shards)]
                    for name, group in (("reward", self.reward_critic), ("cost", self.cost_critic)):
                        refs += [a.train_step.remote(s, algo.clip_range_value) for a, s in
                                 zip(group.actors, critic_batch[name].rows(lo, lo + tbs).split(n))]
                    out = ray.get(refs)
                    actor_out, reward_out, cost_out = out[:n], out[n: 2 * n], out[2 * n:]
                    for prefix, group_out in (("actor", actor_out), ("reward_critic", reward_out),
                                              ("cost_critic", cost_out)):
                        for key in group_out[0]:
                            stats.setdefault(f"{prefix}/{key}", []).append(
                                sum(o[key] for o in group_out) / len(group_out))
                    self.updates += 1
        with timer.phase("weight_sync"):
            sync = self.roles.sync_weights()
        self.step += 1
        elapsed = time.perf_counter() - start
        mean = {k: sum(v) / len(v) for k, v in stats.items()}
        lengths = batch.response_lengths.double()
        kl = ((exp["old_logprobs"] - exp["ref_logprobs"]) * mask).sum(-1)
        metrics = {
            # the reference's names
            "train/actor_loss": mean["actor/actor_loss"], "train/reward_critic_loss": mean["reward_critic/loss"],
            "train/cost_critic_loss": mean["cost_critic/loss"], "train/lambda": self.lam, "train/episode_cost": jc,
            "train/reward": rewards.mean(), "train/cost": costs.mean(),
            "train/reward_with_kl_penalty": (exp["shaped_rewards"] * mask).sum(-1).mean(),
            "train/reward_advantage": masked_mean(exp["reward_advantages"], mask),
            "train/reward_return": masked_mean(exp["reward_returns"], mask),
            "train/reward_value": mean["reward_critic/value"],
            "train/cost_with_kl_penalty": (exp["shaped_costs"] * mask).sum(-1).mean(),
            "train/cost_advantage": masked_mean(exp["cost_advantages"], mask),
            "train/cost_return": masked_mean(exp["cost_returns"], mask),
            "train/cost_value": mean["cost_critic/value"], "train/kl_divergence": kl.mean(),
            "train/actor_lr": mean["actor/lr"], "train/reward_critic_lr": mean["reward_critic/lr"],
            "train/cost_critic_lr": mean["cost_critic/lr"], "train/mean_generated_length": lengths.mean(),
            "train/max_generated_length": lengths.max(),
            "train/clip_fraction": mean["actor/clip_fraction"], "train/approx_kl": mean["actor/approx_kl"],
            # rad's shared names
            "objective/reward": rewards.mean(), "objective/cost": costs.mean(), "objective/kl": kl.mean(),
            "objective/safe_fraction": (costs <= 0).double().mean(),
            **self.common_step_metrics(rollouts, lengths, elapsed, timer, sync),
        }
        if self.ptx_records and algo.ptx_coeff > 0:
            metrics["train/ptx_loss"] = mean["actor/ptx_loss"]
        if "actor/grad_norm" in mean:
            metrics["train/actor_grad_norm"] = mean["actor/grad_norm"]
        return {k: float(v) for k, v in metrics.items()}

    # -- the loop's hooks ------------------------------------------------------------------------
    def checkpoint_groups(self) -> dict[str, Any]:
        return {"actor": self.actor, "reward_critic": self.reward_critic, "cost_critic": self.cost_critic}

    def trainer_state(self) -> dict[str, Any]:
        return {"updates": self.updates, "multiplier": self.multiplier.state_dict()}

    def load_trainer_state(self, state: dict[str, Any]) -> None:
        self.updates = state["updates"]
        self.multiplier.load_state_dict(state["multiplier"])

    def compare(self, policy: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
        """Held-out comparison with the reference (SFT): mean cost against the threshold, reward, safety."""
        return {**constraint_report(policy["costs"], reference["costs"], self.cfg.algo.threshold),
                **self.common_comparison(policy, reference)}

    def progress(self, last: dict[str, float]) -> dict[str, str]:
        return {"cost": f"{last['train/cost']:.2f}", "reward": f"{last['train/reward']:.2f}", "lam": f"{self.lam:.2f}"}

    def summary_extra(self) -> dict[str, Any]:
        return {"lambda": self.lam, "ppo_updates": self.updates}


def run_ppo_lag(cfg: PPOLagConfig) -> dict[str, Any]:
    return run_trainer(PPOLagTrainer, cfg)
