"""RAD: REINFORCE-RLOO with a first-order stochastic-dominance constraint on the cost distribution.

RAD's step on the shared online loop (:mod:`rad.algos.online`: roles, loop, checkpoints,
validation, evaluation); every model lives in a Ray actor of its role::

    prompts --rollout pool--> k responses/prompt --scorers--> reward r, cost c
                                                 --reference / learner--> per-token log-probs (ref, policy)
                                                 (scorers, reference and learner at the same time)
    driver:  r~ = r - beta * KL_t-sum (k1 or k3)
             costs of the whole batch -> quantile particles -> FSD gain vs reference particles
             -> particle gradient -> dominance signal s (>= 0)
             R = r~ + lambda * s ;  A = RLOO over the k samples of each prompt
    learner: loss = -mean A * log pi(y|x)     (DeepSpeed, data-parallel ranks)
    driver:  lambda <- clamp(lambda - lr_lambda * (gain - delta), 0, lambda_max)
    learner ranks -> rollout engines (weight sync); metrics; atomic checkpoints

The reference particles are the cost quantiles of reference-policy samples on
``algo.ref_prompts`` prompts, computed once and cached in the run directory with what
they were computed from (``reference_particles.pt.inputs.json``).

Reading chosen for the dual step (DESIGN section 2): the gain used for dual ascent
and for the ``rad/gain`` metric is the exact 1-D value (``gain_exact``); Sinkhorn's
entropic gain is biased upwards by the regularisation (measured 8-16% at eps=0.01)
and only drives the particle gradient, as in the paper.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from rad.algos.online import OnlineRLTrainer, run_trainer
from rad.config import field
from rad.runtime.run_dir import resume_field
from rad.errors import ConfigError
from rad.runtime.batch import TokenBatch
from rad.runtime.resources import ResourcesConfig
from rad.runtime.roles import TrainedRole
from rad.runtime.rollout.config import RolloutConfig
from rad.settings import LearnerConfig, LoggingConfig, ModelConfig, WorldConfig

@dataclass
class RADAlgoConfig:
    """The RAD objective, constraint and dual update."""

    k: int = field(4, min=1, help="responses per prompt (RLOO needs >= 2; the paper uses 2)")
    prompts_per_step: int = field(16, min=1, help="prompts per RL step (batch = prompts_per_step * k)")
    steps: int = field(40, min=1, help="RL steps")
    beta: float = field(0.05, min=0, help="KL coefficient folded into the reward")
    kl_estimator: str = field("k1", choices=("k1", "k3"), help="per-token KL estimator")
    loss_aggregation: str = field("sequence_sum", choices=("sequence_sum", "token_mean"),
                                  help="REINFORCE on sum_t log pi (unbiased) or its per-token mean")
    weighting: str = field("cvar:0.9", help="spectral weighting spec: uniform, cvar:0.9, var:0.9,0.05, "
                                            "linear, exponential:5, power:3, wang:0.75")
    solver: str = field("sinkhorn", choices=("sinkhorn", "exact"), help="OT solver for the particle gradient")
    eps: float = field(0.01, gt=0, help="Sinkhorn regularisation, relative to the particles' spread")
    sinkhorn_iters: int = field(1000, min=1, help="iteration cap of the entropic OT solve")
    sinkhorn_method: str = field("auto", choices=("auto", "semi_dual", "scaling", "log"),
                                 help="how the entropic plan is computed: semi_dual (L-BFGS on POT's smooth-OT "
                                      "semi-dual), scaling or log (Sinkhorn), auto picks; see rad/risk/dominance.py")
    n_particles: int = field(64, min=2, help="quantile particles N")
    density: str = field("kde", choices=("kde", "constant"), help="f(q_i) in the quantile gradient")
    bandwidth: float = field(0.0, min=0, help="KDE bandwidth (0 = Silverman)")
    indicator_bandwidth: float = field(0.0, min=0, help="smooth 1{c<=q} with Phi((q-c)/h) (0 = hard)")
    delta: float = field(0.0, min=0, help="required gain: gain_w(pi) >= delta")
    lambda_init: float = field(1.0, min=0)
    lambda_lr: float = field(0.5, min=0, help="dual ascent step size")
    lambda_max: float = field(20.0, gt=0, help="cap of both multipliers (lambda and mu)")
    mu_init: float = field(0.0, min=0, help="multiplier of the violation constraint viol_w <= "
                                             "violation_tolerance (Cor. 3 asks for viol = 0 besides gain >= delta)")
    mu_lr: float = field(0.0, min=0, help="dual ascent step of mu (0 with mu_init 0 = the paper's Lagrangian, "
                                           "gain only; a policy that trails at every weighted quantile then gets "
                                           "no dominance gradient at all)")
    violation_tolerance: float = field(0.0, min=0, help="allowed viol_w before mu grows")
    dual_kp: float = field(0.0, min=0, help="proportional gain of a PI Lagrangian (Stooke et al. 2020): the "
                                             "multipliers applied are clip(lambda + kp (delta - gain), 0, "
                                             "lambda_max) and clip(mu + kp (viol - tolerance), ...) with the last "
                                             "windowed estimates; damps the overshoot of pure dual ascent")
    dual_window: int = field(1, min=1, help="the multipliers follow gain and violation of the costs pooled over "
                                            "the last N steps (like Safe RLHF's window of episode costs): a "
                                            "64-sample batch holds 6 samples of a CVaR-0.9 tail")
    reference: str = field("pooled", choices=("pooled", "matched"),
                           help="pooled: reference particles from ref_prompts prompts, fixed for the run (the "
                                "paper); matched: reference costs of every training prompt, and each step's "
                                "particles from the reference costs of that step's prompts (a paired estimate "
                                "that removes the prompt-mix noise from the gain)")
    ref_prompts: int = field(128, min=1, help="prompts whose reference samples make the pooled particles")
    ref_samples_per_prompt: int = field(4, min=1)
    reward_whiten: bool = field(False, help="normalise the RLOO advantages by their batch std")
    select: str = field("last", choices=("last", "feasible"),
                        help="the policy the run returns: the last iterate, or the validated iterate with the "
                             "highest reward win-rate over the reference among those meeting gain >= delta and "
                             "violation <= violation_tolerance on val_prompts held-out training prompts (the "
                             "last one if none does); see rad/algos/selection.py")
    val_prompts: int = field(0, min=0, help="training prompts held out for select=feasible")
    val_every: int = field(5, min=1, help="validate every N steps (and at the last one) when select=feasible")
    val_confidence: float = field(0.0, min=0, help="count a validated step as feasible only if the one-sided "
                                                   "bootstrap bounds at this level (over validation prompts) meet "
                                                   "the constraint, e.g. 0.9 (0 = point estimates)")
    val_samples_per_prompt: int = field(4, min=1, help="samples per validation prompt (the reference's and "
                                                       "each validated policy's)")

    def validate(self) -> None:
        if self.k < 2:
            raise ConfigError(f"algo.k: RLOO needs at least 2 responses per prompt, got {self.k}")
        from rad.risk import weighting_from_spec

        weighting_from_spec(self.weighting)  # raises ConfigError naming the allowed weightings
        if not self.val_confidence < 1:
            raise ConfigError(f"algo.val_confidence: must be < 1, got {self.val_confidence}")
        if self.select == "feasible" and self.val_prompts == 0:
            raise ConfigError("algo.select=feasible needs algo.val_prompts > 0 training prompts held out for "
                              "validation")


@dataclass
class RADDataConfig:
    prompts: list[str] = field(default_factory=lambda: ["embedded/prompts-train"], help="RL prompt specs")
    eval_prompts: list[str] = field(default_factory=lambda: ["embedded/prompts-test"], help="held-out prompts")


@dataclass
class RADStage:
    """The RAD-specific keys (the ``rad:`` section of a pipeline config)."""

    algo: RADAlgoConfig = field(default_factory=RADAlgoConfig)
    data: RADDataConfig = field(default_factory=RADDataConfig)
    learner: LearnerConfig = field(default_factory=lambda: LearnerConfig(lr=1e-4, micro_batch_size=16,
                                                                         warmup_ratio=0.0, scheduler="constant"))
    rollout: RolloutConfig = field(default_factory=lambda: RolloutConfig(num_gpus_per_engine=0.0))
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    save_every: int = field(10, min=0, help="checkpoint every N steps (0 = only at the end)")
    keep_checkpoints: int = field(2, min=0)
    eval_samples_per_prompt: int = field(4, min=1, help="samples per held-out prompt in the final evaluation")
    reference_micro_batch_size: int = field(16, min=1, help="samples per forward pass of the reference policy's "
                                                            "log-probs (it takes learner.logprob_chunk_size too)")


@dataclass
class RADConfig(RADStage):
    """``rad rad``: RAD online RL from an SFT policy with trained reward and cost models."""

    output_dir: str = field("runs/rad", help="run directory")
    seed: int = field(0)
    resume: bool = resume_field()
    world: WorldConfig = field(default_factory=WorldConfig)
    policy: ModelConfig = field(default_factory=ModelConfig, help="policy initialisation (the SFT model)")
    reference: str = field("", help="reference policy directory ('' = the policy initialisation)")
    reward_model: str = field("", help="reward model directory (rad rm train output)")
    cost_model: str = field("", help="cost model directory (rad cm train output)")
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def validate(self) -> None:
        for key in ("reward_model", "cost_model"):
            if not getattr(self, key):
                raise ConfigError(f"{key}: a trained score-model directory is required")
        n = self.resources.num_learners
        batch = self.algo.prompts_per_step * self.algo.k
        if batch % n:
            raise ConfigError(f"algo.prompts_per_step * algo.k = {batch} must divide evenly over "
                              f"resources.num_learners = {n}")


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
        self.lam = cfg.algo.lambda_init
        self.mu = cfg.algo.mu_init
        self.window: list[list[list[float]]] = []  # [policy costs, reference costs] of recent steps
        self.errors = [0.0, 0.0]  # last (delta - gain, viol - tolerance), for dual_kp
        super().__init__(cfg, val_prompts=cfg.algo.val_prompts if cfg.algo.select == "feasible" else 0)

    def policy_role(self) -> TrainedRole:
        from rad.runtime.policy_workers import PolicyLearner

        cfg = self.cfg
        return TrainedRole(PolicyLearner, (self.policy_dir, self.learner_cfg, cfg.algo.steps, cfg.policy.dtype,
                                           cfg.policy.trust_remote_code, cfg.algo.loss_aggregation))

    def policy_logprob_chunk_size(self) -> int:
        return self.cfg.learner.logprob_chunk_size

    # -- reference particles -------------------------------------------------------------------
    def reference_particles(self) -> ReferenceCosts:
        """Reference-policy costs, sampled once before training and cached with the run (with what they were
        computed from: a cache of other models, prompts or settings is computed again, see :meth:`reusable`)."""
        from rad.runtime.provenance import record_inputs

        algo = self.cfg.algo
        matched = algo.reference == "matched"
        path = self.out / "reference_particles.pt"
        m = algo.ref_samples_per_prompt
        if matched:
            prompts = list(self.prompts)
        else:
            prompts = random.Random(self.cfg.seed + 17).sample(self.prompts, min(algo.ref_prompts, len(self.prompts)))
        inputs = {**self.sample_inputs(prompts, m, self._REF_SEED), "mode": algo.reference}
        if self.reusable(path, inputs):
            return ReferenceCosts(torch.load(path)["costs"], algo.n_particles, matched)
        if self.reference_dir != self.policy_dir:
            raise ConfigError("reference differs from the policy initialisation: sampling the reference needs its "
                              "own engine, not supported yet; leave `reference` empty to use the SFT policy")
        rollouts = self.sample(prompts, m, seed=self.cfg.seed + self._REF_SEED)
        rollouts.sort(key=lambda r: (r.prompt_index, r.sample_index))
        _, costs = self.score([r.prompt for r in rollouts], [r.response_text for r in rollouts])
        costs = costs.view(len(prompts), m)
        tmp = path.with_suffix(".tmp")
        torch.save({"mode": algo.reference, "costs": costs, "prompts": prompts}, tmp)
        tmp.replace(path)
        record_inputs(path, inputs)
        return ReferenceCosts(costs, algo.n_particles, matched)

    # -- one step ------------------------------------------------------------------------------
    def train_step(self, reference: ReferenceCosts) -> dict[str, float]:
        from rad.risk import dominance_step, dual_ascent, rloo_advantages, spectral_risk
        from rad.runtime.metrics import PhaseTimer

        algo = self.cfg.algo
        timer = PhaseTimer()
        start = time.perf_counter()
        indices = self.step_prompt_indices(self.step)
        prompts = [self.prompts[i] for i in indices]
        with timer.phase("generation"):
            rollouts = self.sample(prompts, algo.k, seed=self.step_seed())
        rollouts.sort(key=lambda r: (r.prompt_index, r.sample_index))
        batch = self.token_batch(rollouts)
        # Scores and both log-prob passes need only the rollouts, so the scorer, reference and learner actors
        # work at the same time: "scoring" times the scores, "logprobs" the further wait for the log-probs.
        with timer.phase("scoring"):
            score_refs = self.roles.score_async([r.prompt for r in rollouts], [r.response_text for r in rollouts])
            ref_refs = self.reference.split_async("logprobs", batch)
            pol_refs = self.learners.split_async("logprobs", batch)
            rewards, costs = self.roles.gather_scores(score_refs)
        with timer.phase("logprobs"):
            ref_lp = self.reference.concat(ref_refs)
            pol_lp = self.learners.concat(pol_refs)
        kl = kl_per_sample(batch, pol_lp, ref_lp, algo.kl_estimator)
        shaped = rewards - algo.beta * kl
        with timer.phase("dominance"):
            dom = dominance_step(costs.view(len(prompts), algo.k), reference.particles(indices), self.weighting,
                                 solver=algo.solver, eps=algo.eps, max_iter=algo.sinkhorn_iters,
                                 sinkhorn_method=algo.sinkhorn_method,
                                 n_particles=algo.n_particles, density=algo.density,
                                 bandwidth=algo.bandwidth or None,
                                 indicator_bandwidth=algo.indicator_bandwidth or None)
        lam, mu = self.applied_multipliers()
        total = shaped.view(len(prompts), algo.k) + lam * dom.signal + mu * dom.violation_signal
        adv = rloo_advantages(total)
        if algo.reward_whiten:
            adv = adv / adv.std().clamp(min=1e-8)
        with timer.phase("learner"):
            stats = self.learners.scatter("train_step", batch.with_fields(advantages=adv.reshape(-1)).split(
                len(self.learners)))
        lam_integral = self.lam
        if algo.dual_window > 1:
            gain_hat, viol_hat = self.windowed_gain(costs, reference.costs_of(indices))
        else:  # a one-step window is this batch: the dominance step already has its exact values
            gain_hat, viol_hat = dom.gain_exact, dom.violation_exact
        self.errors = [algo.delta - gain_hat, viol_hat - algo.violation_tolerance]
        self.lam = dual_ascent(self.lam, gain_hat, algo.delta, algo.lambda_lr, algo.lambda_max)
        if algo.mu_lr > 0:  # mu grows while viol > tolerance: the same projected step on -viol >= -tolerance
            self.mu = dual_ascent(self.mu, -viol_hat, -algo.violation_tolerance, algo.mu_lr, algo.lambda_max)
        with timer.phase("weight_sync"):
            sync = self.roles.sync_weights()
        self.step += 1
        elapsed = time.perf_counter() - start
        lengths = batch.response_lengths.double()
        metrics = {
            "objective/reward": rewards.mean(), "objective/cost": costs.mean(), "objective/kl": kl.mean(),
            "objective/rlhf_reward": shaped.mean(), "objective/safe_fraction": (costs <= 0).double().mean(),
            "rad/gain": dom.gain_exact, "rad/violation": dom.violation_exact, "rad/gain_sinkhorn": dom.gain,
            "rad/sinkhorn_iters": dom.n_iter, "rad/sinkhorn_marginal_error": dom.marginal_error,
            "rad/gain_window": gain_hat, "rad/violation_window": viol_hat,
            "rad/lambda": lam, "rad/mu": mu, "rad/lambda_integral": lam_integral,
            "rad/violation_signal_mean": dom.violation_signal.mean(),
            "rad/spectral_risk": dom.rho_policy, "rad/spectral_risk_ref": dom.rho_ref,
            "rad/cvar_0.9": spectral_risk(costs, "cvar:0.9"), "rad/signal_mean": dom.signal.mean(),
            "rad/advantage_std": adv.std(),
            "train/loss": sum(s["loss"] for s in stats) / len(stats), "train/lr": stats[0]["lr"],
            **self.common_step_metrics(rollouts, lengths, elapsed, timer, sync),
        }
        if "grad_norm" in stats[0]:
            metrics["train/grad_norm"] = stats[0]["grad_norm"]
        return {k: float(v) for k, v in metrics.items()}

    def applied_multipliers(self) -> tuple[float, float]:
        """(lambda, mu) this step applies: the dual-ascent states plus ``dual_kp`` times the last errors."""
        algo = self.cfg.algo
        lam = min(max(self.lam + algo.dual_kp * self.errors[0], 0.0), algo.lambda_max)
        mu_on = algo.mu_lr > 0 or algo.mu_init > 0
        mu = min(max(self.mu + algo.dual_kp * self.errors[1], 0.0), algo.lambda_max) if mu_on else 0.0
        return lam, mu

    def windowed_gain(self, costs: torch.Tensor, ref_costs: torch.Tensor) -> tuple[float, float]:
        """Exact (gain, violation) of the costs pooled over the last ``dual_window`` steps, this one included."""
        self.window = (self.window + [[costs.tolist(), ref_costs.tolist()]])[-self.cfg.algo.dual_window:]
        return window_gain(self.window, self.cfg.algo.n_particles, self.weighting)

    # -- the loop's hooks ------------------------------------------------------------------------
    def before_loop(self) -> tuple[tuple, dict[str, Any]]:
        """The reference particles (every ``train_step``'s argument) and how long they took."""
        start = time.perf_counter()
        reference = self.reference_particles()
        return (reference,), {"reference_particles_seconds": round(time.perf_counter() - start, 1)}

    def trainer_state(self) -> dict[str, Any]:
        return {"lambda": self.lam, "mu": self.mu, "dual_window": self.window, "dual_errors": self.errors}

    def load_trainer_state(self, state: dict[str, Any]) -> None:
        self.lam, self.mu = state["lambda"], state.get("mu", self.cfg.algo.mu_init)
        self.window = state.get("dual_window", [])
        self.errors = state.get("dual_errors", [0.0, 0.0])

    def make_selector(self):
        """``algo.select=feasible``: validated steps judged against the reference's validation samples."""
        if not self.val_prompts:
            return None
        from rad.algos.selection import ValidationSelector

        algo = self.cfg.algo
        return ValidationSelector(self.validation_reference(), self.weighting, algo.delta, algo.violation_tolerance,
                                  algo.val_confidence)

    def compare(self, policy: dict[str, Any], reference: dict[str, Any]) -> dict[str, float]:
        """Held-out comparison of the trained policy against the reference (SFT)."""
        from rad.risk import empirical_gain_violation

        gain, viol = empirical_gain_violation(torch.tensor(policy["costs"]), torch.tensor(reference["costs"]),
                                              self.weighting)
        return {"gain": float(gain), "violation": float(viol), "delta": self.cfg.algo.delta,
                **self.common_comparison(policy, reference)}

    def progress(self, last: dict[str, float]) -> dict[str, str]:
        return {"cost": f"{last['objective/cost']:.2f}", "gain": f"{last['rad/gain']:.3f}", "lam": f"{self.lam:.2f}"}

    def summary_extra(self) -> dict[str, Any]:
        return {"lambda": self.lam}


def run_rad(cfg: RADConfig) -> dict[str, Any]:
    return run_trainer(RADTrainer, cfg)
