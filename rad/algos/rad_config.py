"""RAD's configuration: the objective and constraint, and its parts by concern.

``algo`` holds what RAD optimises (batch geometry, KL, the spectral weighting, ``delta`` and
the violation tolerance); ``algo.ot`` the dominance step's optimal transport,
``algo.dual`` the multipliers (:mod:`rad.algos.dual`), ``algo.ref_costs`` the reference
side of the constraint, ``algo.selection`` which iterate the run returns
(:mod:`rad.algos.selection`). Keys of earlier releases (``algo.lambda_lr``,
``algo.select``, ...) fail with a message naming their new place.
"""

from __future__ import annotations

from dataclasses import dataclass

from rad.algos.dual import DualConfig
from rad.algos.online_config import OnlineRunConfig
from rad.algos.selection import SelectionConfig
from rad.config import field
from rad.data.sources import SPECS_HELP, DataSpecs
from rad.errors import ConfigError
from rad.runtime.resources import ResourcesConfig
from rad.runtime.rollout.config import RolloutConfig
from rad.settings import (LearnerConfig, PolicyLora)


@dataclass
class OTConfig:
    """The dominance step's optimal transport and quantile gradient (``algo.ot``)."""

    solver: str = field("sinkhorn", choices=("sinkhorn", "exact"), help="OT solver for the particle gradient")
    eps: float = field(0.01, gt=0, help="Sinkhorn regularisation, relative to the particles' spread")
    max_iter: int = field(1000, min=1, help="iteration cap of the entropic OT solve")
    method: str = field("auto", choices=("auto", "newton", "semi_dual", "scaling", "log"),
                        help="how the entropic plan is computed: newton or semi_dual (Newton or POT's L-BFGS on its "
                             "smooth-OT semi-dual), scaling or log (Sinkhorn), auto picks; see rad/risk/dominance.py")
    n_particles: int = field(64, min=2, help="quantile particles N")
    density: str = field("kde", choices=("kde", "constant"), help="f(q_i) in the quantile gradient")
    bandwidth: float = field(0.0, min=0, help="KDE bandwidth (0 = Silverman)")
    indicator_bandwidth: float = field(0.0, min=0, help="smooth 1{c<=q} with Phi((q-c)/h) (0 = hard)")


@dataclass
class RefCostsConfig:
    """The reference policy's costs that the dominance constraint compares with (``algo.ref_costs``)."""

    pairing: str = field("pooled", choices=("pooled", "matched"),
                         help="pooled: particles from `prompts` prompts, fixed for the run (the paper); matched: "
                              "reference costs of every training prompt, and each step's particles from the "
                              "reference costs of that step's prompts (a paired estimate that removes the "
                              "prompt-mix noise from the gain)")
    prompts: int = field(128, min=1, help="prompts whose reference samples make the pooled particles")
    samples_per_prompt: int = field(4, min=1, help="reference samples per prompt")


@dataclass
class RADAlgoConfig:
    """The RAD objective and constraint (top level), and its parts by concern: ``ot`` (the dominance
    step), ``dual`` (the multipliers), ``ref_costs`` (the reference side), ``selection`` (the
    returned policy)."""

    MOVED = {"solver": "ot.solver", "eps": "ot.eps", "sinkhorn_iters": "ot.max_iter", "sinkhorn_method": "ot.method",
             "n_particles": "ot.n_particles", "density": "ot.density", "bandwidth": "ot.bandwidth",
             "indicator_bandwidth": "ot.indicator_bandwidth", "lambda_init": "dual.lambda_init",
             "lambda_lr": "dual.lambda_lr", "lambda_max": "dual.max", "mu_init": "dual.mu_init",
             "mu_lr": "dual.mu_lr", "dual_kp": "dual.kp (with dual.controller=pi)", "dual_window": "dual.window",
             "reference": "ref_costs.pairing", "ref_prompts": "ref_costs.prompts",
             "ref_samples_per_prompt": "ref_costs.samples_per_prompt", "select": "selection.rule",
             "val_prompts": "selection.prompts", "val_every": "selection.every",
             "val_confidence": "selection.confidence", "val_samples_per_prompt": "selection.samples_per_prompt"}

    k: int = field(4, min=1, help="responses per prompt (RLOO needs >= 2; the paper uses 2)")
    prompts_per_step: int = field(16, min=1, help="prompts per RL step (batch = prompts_per_step * k)")
    steps: int = field(40, min=1, help="RL steps")
    beta: float = field(0.05, min=0, help="KL coefficient folded into the reward")
    kl_estimator: str = field("k1", choices=("k1", "k3"), help="per-token KL estimator")
    loss_aggregation: str = field("sequence_sum", choices=("sequence_sum", "token_mean"),
                                  help="REINFORCE on sum_t log pi (unbiased) or its per-token mean")
    reward_whiten: bool = field(False, help="normalise the RLOO advantages by their batch std")
    weighting: str = field("cvar:0.9", help="spectral weighting spec: uniform, cvar:0.9, var:0.9,0.05, "
                                            "linear, exponential:5, power:3, wang:0.75")
    delta: float = field(0.0, min=0, help="required gain: gain_w(pi) >= delta")
    overlap: bool = field(False, help="generate the next step's batch on the rollout engines while the learners "
                                      "update on this one (one-step off-policy, as OpenRLHF's and verl's async "
                                      "modes): every step after the first learns from samples of the policy one "
                                      "update older, reweighted by truncated importance weights (overlap_is_cap)")
    overlap_is_cap: float = field(2.0, gt=0, help="with overlap: cap of the per-response importance weight "
                                                  "pi(y|x) / mu(y|x) (truncated importance sampling)")
    overlap_scoring: bool = field(False, help="with overlap: as soon as the next batch is generated, start its "
                                              "reward, cost and reference log-prob passes too, so they run during "
                                              "the rest of the update (the same numbers; more processes share the "
                                              "cores while the learners update)")
    policy_logprobs: str = field("learner", choices=("learner", "rollout"),
                                 help="the policy log-probs of the KL term: the learners' own forward pass (learner) "
                                      "or the rollout engine's log-probs of the tokens it sampled (rollout: one "
                                      "forward pass fewer per step; needs on-policy sampling; with overlap the KL "
                                      "is the sampling policy's, one update older)")
    violation_tolerance: float = field(0.0, min=0, help="allowed viol_w (the constraint of dual.mu)")
    ot: OTConfig = field(default_factory=OTConfig)
    dual: DualConfig = field(default_factory=DualConfig)
    ref_costs: RefCostsConfig = field(default_factory=RefCostsConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)

    def validate(self) -> None:
        if self.k < 2:
            raise ConfigError(f"algo.k: RLOO needs at least 2 responses per prompt, got {self.k}")
        from rad.risk import weighting_from_spec

        weighting_from_spec(self.weighting)  # raises ConfigError naming the allowed weightings


@dataclass
class RADDataConfig:
    prompts: DataSpecs = field(default_factory=lambda: ["embedded/prompts-train"], help="RL prompt specs" + SPECS_HELP)
    eval_prompts: DataSpecs = field(default_factory=lambda: ["embedded/prompts-test"],
                                    help="held-out prompts" + SPECS_HELP)


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
    keep_checkpoints: int = field(2, min=0, help="newest checkpoints kept (0 = all)")
    eval_samples_per_prompt: int = field(4, min=1, help="samples per held-out prompt in the final evaluation")
    reference_micro_batch_size: int = field(16, min=1, help="samples per forward pass of the reference policy's "
                                                            "log-probs (it takes learner.logprob_chunk_size and "
                                                            "learner.group_by_length too)")
    lora: PolicyLora = field(default_factory=PolicyLora, help="LoRA adapters on the policy: only they train; "
                                                                "the engines and model/ get the merged weights")


@dataclass
class RADConfig(RADStage, OnlineRunConfig):
    """``rad rad``: RAD online RL from an SFT policy with trained reward and cost models."""

    output_dir: str = field("runs/rad", help="run directory")

    def validate(self) -> None:
        OnlineRunConfig.validate(self)
        self.lora.check_rl(self.learner, self.rollout)
        if self.algo.overlap and self.rollout.hybrid:
            raise ConfigError("algo.overlap needs rollout engines of their own: with rollout.hybrid the learners "
                              "generate, so generation cannot overlap their update")
        if self.algo.overlap_scoring and not self.algo.overlap:
            raise ConfigError("algo.overlap_scoring scores the batch generated ahead during the update: it needs "
                              "algo.overlap=true")
        if self.algo.overlap and self.rollout.vllm_sleep_level:
            raise ConfigError("algo.overlap keeps the engines generating during the update; it cannot be combined "
                              "with rollout.vllm_sleep_level (engines asleep between generations)")
        if self.algo.policy_logprobs == "rollout" and self.rollout.off_policy_sampling:
            raise ConfigError("algo.policy_logprobs=rollout reads the engine's log-probs as the policy's, but "
                              "rollout.off_policy_sampling=true lets the engine sample from another distribution")
        n = self.resources.num_learners
        batch = self.algo.prompts_per_step * self.algo.k
        if batch % n:
            raise ConfigError(f"algo.prompts_per_step * algo.k = {batch} must divide evenly over "
                              f"resources.num_learners = {n}")
