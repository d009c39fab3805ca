"""RAD: REINFORCE-RLOO with a first-order stochastic-dominance constraint on the cost distribution.

RAD's step on the shared online loop (:mod:`rad.algos.online`: roles, loop, checkpoints,
validation, evaluation); every model lives in a Ray actor of its role::

    prompts --rollout pool--> k responses/prompt --scorers--> reward r, cost c
                                                 --reference / learner--> per-token log-probs (ref, policy)
                                                 (scorers, reference and learner at the same time)
    driver:  r~ = r - beta * KL_t-sum (k1 or k3)                          shaped_rewards
             costs of the batch -> quantile particles -> FSD gain and violation vs the reference's
             -> particle gradients -> dominance signals s_gain, s_viol (per sample)   dominance_step
             g = (delta + margin - gain, viol - tolerance) -> multipliers (lambda, mu)  the dual controller
             A = RLOO over k of  r~ + lambda s_gain + mu s_viol               rad_advantages
    learner: loss = -mean A * log pi(y|x)     (DeepSpeed, data-parallel ranks)
    learner ranks -> rollout engines (weight sync); metrics; atomic checkpoints

With ``algo.overlap`` the engines generate the next step's batch while the learners update
(:meth:`~rad.algos.online.OnlineRLTrainer.generate_ahead`), so a step learns from samples of
the policy one update older (mu), and each advantage is multiplied by the truncated importance
weight ``min(pi(y|x) / mu(y|x), cap)`` of its whole response: mu's log-probs are the engine's
own, pi's come from the learners' forward pass of the update, where the weight is applied
(:meth:`~rad.runtime.policy_workers.PolicyLearner.train_step`). With ``algo.overlap_scoring`` the
batch generated ahead is scored too (reward, cost, reference log-probs) during the update, as soon
as it is in (:meth:`RADTrainer.score_ahead`).

The KL term's policy log-probs come from the learners' log-prob pass, or with
``algo.policy_logprobs=rollout`` from the engine that sampled (one forward pass fewer per
step; the same numbers on-policy, up to engine numerics; with ``algo.overlap`` the KL is then
that of the sampling policy, one update older).

The step's math is in the pure functions below (tests call them directly); the
multipliers come from a controller of :mod:`rad.algos.dual` (``algo.dual.controller``;
``projected`` is the paper's dual ascent). The reference particles are the cost
quantiles of reference-policy samples (``algo.ref_costs``), computed once and cached
in the run directory with what they were computed from
(``reference_particles.pt.inputs.json``). The config is in :mod:`rad.algos.rad_config`.

Reading chosen for the dual step: the gain the controller sees, and the ``rad/gain``
metric, is the exact 1-D value (``gain_exact``); Sinkhorn's entropic gain is biased
upwards by the regularisation (measured 8-16% at eps=0.01) and only drives the
particle gradient, as in the paper.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from rad.algos.advantages import rloo_advantages
from rad.algos.dual import rad_controller
from rad.algos.online import OnlineRLTrainer, run_trainer
from rad.algos.rad_config import RADConfig, RADStage
from rad.errors import ConfigError
from rad.runtime.batch import TokenBatch
from rad.runtime.roles import TrainedRole
from rad.settings import LearnerConfig

__all__ = ["RADConfig", "RADTrainer", "ReferenceCosts", "behaviour_logp", "constraint_values", "kl_per_sample",
           "learner_geometry", "off_policy_metrics", "rad_advantages", "rollout_token_logprobs", "run_rad",
           "shaped_rewards", "window_gain"]


# -- the step's math ---------------------------------------------------------------------------
def shaped_rewards(rewards: torch.Tensor, kl: torch.Tensor, beta: float) -> torch.Tensor:
    """``r~ = r - beta KL``: the reward with the KL penalty folded in, per sample."""
    return rewards - beta * kl


def constraint_values(gain: float, violation: float, delta: float, tolerance: float,
                      with_violation: bool, margin: float = 0.0) -> list[float]:
    """RAD's constraints as ``g <= 0``: ``delta + margin - gain`` and, when mu is on, ``violation - tolerance``
    (``margin``: how far above ``delta`` the controller aims, ``algo.dual.gain_margin``)."""
    g = [delta + margin - gain]
    return g + [violation - tolerance] if with_violation else g


def rad_advantages(shaped: torch.Tensor, signals: Sequence[torch.Tensor], multipliers: Sequence[float],
                   whiten: bool = False) -> torch.Tensor:
    """RLOO advantages ``[P, k]`` of ``r~ + sum_i m_i s_i``: the shaped rewards plus each multiplier times its
    dominance signal (RAD: ``lambda s_gain + mu s_viol``), optionally divided by their batch std."""
    total = shaped
    for m, s in zip(multipliers, signals, strict=True):
        total = total + m * s
    adv = rloo_advantages(total)
    return adv / adv.std().clamp(min=1e-8) if whiten else adv


def learner_geometry(cfg: RADStage) -> LearnerConfig:
    """The learner config with micro batch and accumulation fitted to one RL batch per optimizer step."""
    import dataclasses

    shard = cfg.algo.prompts_per_step * cfg.algo.k // cfg.resources.num_learners
    micro = min(cfg.learner.micro_batch_size, shard)
    while shard % micro:
        micro -= 1
    return dataclasses.replace(cfg.learner, micro_batch_size=micro, grad_accum=shard // micro)


def kl_per_sample(batch: TokenBatch, logp: torch.Tensor, ref: torch.Tensor, estimator: str) -> torch.Tensor:
    """``[B]`` float64: each sample's sum over its response tokens of the per-token KL estimate between the
    ``[B, T-1]`` policy and reference log-probs (k1: the log-ratio; k3: r - 1 - log r)."""
    out = []
    for lp, lr in zip(batch.response_values(logp), batch.response_values(ref)):
        log_ratio = lp.double() - lr.double()
        out.append(log_ratio.sum() if estimator == "k1" else (torch.exp(-log_ratio) - 1 + log_ratio).sum())
    return torch.stack(out)


def window_gain(window: Sequence[Sequence[Sequence[float]]], n_particles: int, weighting) -> tuple[float, float]:
    """Exact FSD (gain, violation) between the pooled policy and pooled reference costs of ``window``.

    ``window`` holds one ``[policy costs, reference costs]`` pair per step; both sides are
    pooled and reduced to ``n_particles`` quantile particles, as in the dominance step.
    """
    from rad.risk import empirical_quantiles, fsd_exact

    policy = empirical_quantiles(torch.tensor([c for pc, _ in window for c in pc], dtype=torch.float64), n_particles)
    ref = empirical_quantiles(torch.tensor([c for _, rc in window for c in rc], dtype=torch.float64), n_particles)
    gain, viol = fsd_exact(policy, ref, weighting)
    return float(gain), float(viol)


def _engine_logprobs(rollouts, who: str) -> list[list[float]]:
    if any(r.logprobs is None for r in rollouts):
        raise ConfigError(f"{who}: the rollout engine returned no log-probs, which it needs")
    return [r.logprobs for r in rollouts]


def behaviour_logp(rollouts) -> torch.Tensor:
    """``[B]`` float64: each rollout's summed response-token log-prob under the engine that sampled it (mu)."""
    return torch.tensor([sum(lp) for lp in _engine_logprobs(rollouts, "algo.overlap")], dtype=torch.float64)


def rollout_token_logprobs(batch: TokenBatch, rollouts) -> torch.Tensor:
    """``[B, T-1]`` float32: the rollouts' per-token log-probs under the engine that sampled them, where the
    learner's :meth:`~rad.runtime.policy_workers.PolicyLearner.logprobs` puts its own (0 off the response)."""
    lps = _engine_logprobs(rollouts, "algo.policy_logprobs=rollout")
    aligned = torch.zeros((len(lps), int(batch.response_lengths.max())), dtype=torch.float32)
    for i, lp in enumerate(lps):
        aligned[i, :len(lp)] = torch.tensor(lp, dtype=torch.float32)
    return batch.from_response_aligned(aligned)


def off_policy_metrics(stats: Sequence[dict[str, float]], lag: int) -> dict[str, float]:
    """The truncated importance weights' metrics of one step from the learner ranks' sums
    (:meth:`~rad.runtime.policy_workers.PolicyLearner.train_step` with ``behaviour_logp``)."""
    n = sum(s["samples"] for s in stats)
    return {"off_policy/lag": lag, "off_policy/is_weight_mean": sum(s["is_weight_sum"] for s in stats) / n,
            "off_policy/is_weight_capped": sum(s["is_weight_capped"] for s in stats) / n,  # w >= cap
            "off_policy/log_ratio_abs_mean": sum(s["log_ratio_abs_sum"] for s in stats) / n}


@dataclass
class ReferenceCosts:
    """Costs of reference-policy samples and the particles the dominance step compares against.

    ``pooled``: one particle set from a fixed prompt sample (the paper). ``matched``: the costs
    of every training prompt (``costs[prompt, sample]``); a step's particles are the quantiles of
    the reference costs on the prompts that step drew, so both sides of the OT problem see the
    same prompt mix. With a 16-prompt batch the share of harmful prompts alone moves the batch
    CVaR-0.9 by several cost units, which otherwise reads as gain or violation.
    """

    costs: torch.Tensor
    n_particles: int
    matched: bool

    def costs_of(self, prompt_indices: Sequence[int]) -> torch.Tensor:
        """The reference costs a step with these prompts compares against (all of them when pooled)."""
        return self.costs[list(prompt_indices)].reshape(-1) if self.matched else self.costs.reshape(-1)

    def particles(self, prompt_indices: Sequence[int]) -> torch.Tensor:
        from rad.risk import empirical_quantiles

        return empirical_quantiles(self.costs_of(prompt_indices), self.n_particles)


class RADTrainer(OnlineRLTrainer):
    """RAD on the shared online loop (:class:`~rad.algos.online.OnlineRLTrainer`): the reference particles,
    the step (KL-shaped reward + multipliers x dominance signals -> RLOO advantages -> REINFORCE) and the
    dual update of lambda and mu."""

    name = "rad"
    _REF_SEED = 1_000_003  # the reference particles' sampling seed, after cfg.seed

    def __init__(self, cfg: RADConfig):
        from rad.risk import weighting_from_spec

        self.weighting = weighting_from_spec(cfg.algo.weighting)
        self.learner_cfg = learner_geometry(cfg)
        self.dual = rad_controller(cfg.algo.dual)
        self.applied = self.dual.multipliers  # the multipliers of the last step (lambda[, mu])
        self.window: list[list[list[float]]] = []  # [policy costs, reference costs] of recent steps
        super().__init__(cfg, selection=cfg.algo.selection)

    def policy_role(self) -> TrainedRole:
        from rad.runtime.policy_workers import PolicyLearner

        cfg = self.cfg
        return TrainedRole(PolicyLearner, (self.policy_dir, self.learner_cfg, cfg.algo.steps, cfg.policy.dtype,
                                           cfg.policy.trust_remote_code, cfg.algo.loss_aggregation),
                           {"allow_pickle": cfg.policy.allow_pickle_weights, "prompt_format": cfg.policy.prompt_format,
                            "lora": cfg.lora})

    def policy_learner(self) -> LearnerConfig:
        return self.cfg.learner

    # -- reference costs --------------------------------------------------------------------------
    def reference_costs(self) -> ReferenceCosts:
        """Reference-policy costs, sampled once before training and cached with the run (with what they were
        computed from: a cache of other models, prompts or settings is computed again, see :meth:`reusable`)."""
        from rad.runtime.provenance import record_inputs

        rc = self.cfg.algo.ref_costs
        matched = rc.pairing == "matched"
        n_particles = self.cfg.algo.ot.n_particles
        path = self.out / "reference_particles.pt"
        m = rc.samples_per_prompt
        if matched:
            prompts = list(self.prompts)
        else:
            prompts = random.Random(self.cfg.seed + 17).sample(self.prompts, min(rc.prompts, len(self.prompts)))
        inputs = {**self.sample_inputs(prompts, m, self._REF_SEED), "mode": rc.pairing}
        if self.reusable(path, inputs):
            return ReferenceCosts(torch.load(path)["costs"], n_particles, matched)
        if self.reference_dir != self.policy_dir:
            raise ConfigError("reference_model differs from the policy initialisation: sampling the reference needs "
                              "its own engine, not supported yet; leave `reference_model` empty to use the SFT policy")
        rollouts = self.sample(prompts, m, seed=self.cfg.seed + self._REF_SEED)
        rollouts.sort(key=lambda r: (r.prompt_index, r.sample_index))
        _, costs = self.score([r.prompt for r in rollouts], [r.response_text for r in rollouts])
        costs = costs.view(len(prompts), m)
        tmp = path.with_suffix(".tmp")
        torch.save({"mode": rc.pairing, "costs": costs, "prompts": prompts}, tmp)
        tmp.replace(path)
        record_inputs(path, inputs)
        return ReferenceCosts(costs, n_particles, matched)

    # -- one step ------------------------------------------------------------------------------
    def train_step(self, ref_costs: ReferenceCosts) -> dict[str, float]:
        from rad.risk import dominance_step, spectral_risk
        from rad.runtime.blas_threads import one_blas_thread
        from rad.runtime.metrics import PhaseTimer

        algo, ot, dual = self.cfg.algo, self.cfg.algo.ot, self.cfg.algo.dual
        timer = PhaseTimer()
        start = time.perf_counter()
        indices = self.step_prompt_indices(self.step)
        prompts = [self.prompts[i] for i in indices]
        with timer.phase("generation"):  # with algo.overlap: only the wait for the batch generated ahead
            rollouts, lag = self.step_rollouts(prompts, algo.k)
        # Scores and both log-prob passes need only the rollouts, so the scorer, reference and learner actors
        # work at the same time: "scoring" times the scores, "logprobs" the further wait for the log-probs.
        # With algo.overlap_scoring the scores and reference log-probs of a batch generated ahead were started
        # during the previous update (score_ahead): then "scoring" is the wait for what is left of them.
        scored, self._scored_ahead = self._scored_ahead, None
        scored_ahead = lag == 1 and scored is not None and scored[0] == self.step
        batch = scored[1] if scored_ahead else self.token_batch(rollouts)
        with timer.phase("scoring"):
            score_refs, ref_refs = scored[2] if scored_ahead else self.start_scoring(rollouts, batch)
            pol_refs = self.learners.split_async("logprobs", batch) if algo.policy_logprobs == "learner" else None
            rewards, costs = self.roles.gather_scores(score_refs)
        with timer.phase("logprobs"):
            ref_lp = self.reference_policy.concat(ref_refs)
            pol_lp = (self.learners.concat(pol_refs) if pol_refs is not None
                      else rollout_token_logprobs(batch, rollouts))
        kl = kl_per_sample(batch, pol_lp, ref_lp, algo.kl_estimator)
        shaped = shaped_rewards(rewards, kl, algo.beta)
        with timer.phase("dominance"), one_blas_thread():
            dom = dominance_step(costs.view(len(prompts), algo.k), ref_costs.particles(indices), self.weighting,
                                 solver=ot.solver, eps=ot.eps, max_iter=ot.max_iter, sinkhorn_method=ot.method,
                                 n_particles=ot.n_particles, density=ot.density, bandwidth=ot.bandwidth or None,
                                 indicator_bandwidth=ot.indicator_bandwidth or None)
        if dual.window > 1:
            gain_hat, viol_hat = self.windowed_gain(costs, ref_costs.costs_of(indices))
        else:  # a one-step window is this batch: the dominance step already has its exact values
            gain_hat, viol_hat = dom.gain_exact, dom.violation_exact
        self.applied = self.dual.observe(constraint_values(gain_hat, viol_hat, algo.delta, algo.violation_tolerance,
                                                           dual.mu_on, dual.gain_margin))
        signals = [dom.signal, dom.violation_signal][:len(self.applied)]  # mu's only when it is on
        adv = rad_advantages(shaped.view(len(prompts), algo.k), signals, self.applied, whiten=algo.reward_whiten)
        fields = {"advantages": adv.reshape(-1)}
        if algo.overlap:  # samples of the previous policy version: E_mu[w A grad log pi], w = min(pi / mu, cap)
            fields["behaviour_logp"] = behaviour_logp(rollouts)  # the learners weigh with pi of their forward pass
        with timer.phase("learner"):
            import ray

            refs = self.learners.scatter_async("train_step", batch.with_fields(**fields).split(len(self.learners)),
                                               is_cap=algo.overlap_is_cap)
            if algo.overlap:  # the engines sample the next batch with the weights they hold, during the update
                self.generate_ahead(algo.k)
                if algo.overlap_scoring:
                    self.score_ahead()
            stats = ray.get(refs)
        off_policy = ({**off_policy_metrics(stats, lag), "off_policy/scored_ahead": float(scored_ahead)}
                      if algo.overlap else {})
        with timer.phase("weight_sync"):
            sync = self.roles.sync_weights()
        self.step += 1
        elapsed = time.perf_counter() - start
        lengths = batch.response_lengths.double()
        lam, mu = self.applied[0], (self.applied[1] if dual.mu_on else 0.0)
        metrics = {
            "objective/reward": rewards.mean(), "objective/cost": costs.mean(), "objective/kl": kl.mean(),
            "objective/rlhf_reward": shaped.mean(), "objective/safe_fraction": (costs <= 0).double().mean(),
            "rad/gain": dom.gain_exact, "rad/violation": dom.violation_exact, "rad/gain_sinkhorn": dom.gain,
            "rad/sinkhorn_iters": dom.n_iter, "rad/sinkhorn_marginal_error": dom.marginal_error,
            "rad/gain_window": gain_hat, "rad/violation_window": viol_hat,
            "rad/lambda": lam, "rad/mu": mu,
            "rad/violation_signal_mean": dom.violation_signal.mean(),
            "rad/spectral_risk": dom.rho_policy, "rad/spectral_risk_ref": dom.rho_ref,
            "rad/cvar_0.9": spectral_risk(costs, "cvar:0.9"), "rad/signal_mean": dom.signal.mean(),
            "rad/advantage_std": adv.std(), **off_policy,
            "train/loss": sum(s["loss"] for s in stats) / len(stats), "train/lr": stats[0]["lr"],
            **self.common_step_metrics(rollouts, lengths, elapsed, timer, sync),
        }
        if "grad_norm" in stats[0]:
            metrics["train/grad_norm"] = stats[0]["grad_norm"]
        return {k: float(v) for k, v in metrics.items()}

    #: (step, its token batch, (score refs, reference log-prob refs)) of the batch generated ahead, started by
    #: score_ahead
    _scored_ahead: tuple[int, Any, tuple[list, list]] | None = None

    def start_scoring(self, rollouts, batch) -> tuple[list, list]:
        """Start the reward and cost models' scores and the reference's log-probs of ``rollouts`` (as ``batch``):
        their object refs, for :meth:`~rad.runtime.roles.RLRoles.gather_scores` and the reference group's ``concat``."""
        return (self.roles.score_async([r.prompt for r in rollouts], [r.response_text for r in rollouts]),
                self.reference_policy.split_async("logprobs", batch))

    def score_ahead(self) -> None:
        """``algo.overlap_scoring``: wait for the next step's batch generated ahead, then start its scores and
        reference log-probs, which read only the samples, so they run during this step's update as well. The
        next step gathers them (the same numbers as scoring then; the scorers and reference share the cores
        with the learners for the rest of the update)."""
        rollouts = self.rollouts_ahead()
        if rollouts is not None:
            batch = self.token_batch(rollouts)
            self._scored_ahead = (self.step + 1, batch, self.start_scoring(rollouts, batch))

    def windowed_gain(self, costs: torch.Tensor, ref_costs: torch.Tensor) -> tuple[float, float]:
        """Exact (gain, violation) of the costs pooled over the last ``dual.window`` steps, this one included."""
        self.window = (self.window + [[costs.tolist(), ref_costs.tolist()]])[-self.cfg.algo.dual.window:]
        return window_gain(self.window, self.cfg.algo.ot.n_particles, self.weighting)

    # -- the loop's hooks ------------------------------------------------------------------------
    def before_loop(self) -> tuple[tuple, dict[str, Any]]:
        """The reference particles (every ``train_step``'s argument) and how long they took."""
        start = time.perf_counter()
        ref_costs = self.reference_costs()
        return (ref_costs,), {"reference_particles_seconds": round(time.perf_counter() - start, 1)}

    def trainer_state(self) -> dict[str, Any]:
        return {"dual": self.dual.state_dict(), "applied": self.applied, "dual_window": self.window}

    def load_trainer_state(self, state: dict[str, Any]) -> None:
        if "dual" not in state:
            raise ConfigError("the checkpoint predates algo.dual (it holds lambda/mu, not a dual controller's state); "
                              "resume it with the rad version that wrote it, or start a new output_dir")
        self.dual.load_state_dict(state["dual"])
        self.applied = state["applied"]
        self.window = state.get("dual_window", [])

    def make_selector(self):
        """``algo.selection.rule=feasible``: validated steps judged against the reference's validation samples."""
        if not self.val_prompts:
            return None
        from rad.algos.selection import ValidationSelector

        algo = self.cfg.algo
        return ValidationSelector(self.validation_reference(), self.weighting, algo.delta, algo.violation_tolerance,
                                  algo.selection.confidence)

    def compare(self, policy: dict[str, Any], reference: dict[str, Any]) -> dict[str, float]:
        """Held-out comparison of the trained policy against the reference (SFT)."""
        from rad.risk import empirical_gain_violation

        gain, viol = empirical_gain_violation(torch.tensor(policy["costs"]), torch.tensor(reference["costs"]),
                                              self.weighting)
        return {"gain": float(gain), "violation": float(viol), "delta": self.cfg.algo.delta,
                **self.common_comparison(policy, reference)}

    def progress(self, last: dict[str, float]) -> dict[str, str]:
        return {"cost": f"{last['objective/cost']:.2f}", "gain": f"{last['rad/gain']:.3f}",
                "lam": f"{self.applied[0]:.2f}"}

    def summary_extra(self) -> dict[str, Any]:
        return {"lambda": self.applied[0], "dual": self.dual.state_dict()}


def run_rad(cfg: RADConfig) -> dict[str, Any]:
    return run_trainer(RADTrainer, cfg)
