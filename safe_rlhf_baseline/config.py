"""``PPOLagConfig``: the Safe RLHF PPO-Lagrangian baseline's keys, defaults from the reference scripts.

Defaults follow safe-rlhf's ``scripts/ppo-lag.sh`` (one GPU's share of the batch):
16 prompts and 16 samples per PPO update, 1 update iteration, actor lr 1e-5
(cosine, warmup 0.03, weight decay 0.01), critic lr 5e-6 (constant; the reference
passes warmup 0.03 but its ``constant`` schedule ignores it, so warmup 0 here),
kl 0.01, score clip 50, ratio clip 0.2, value clip 5, gamma 1, GAE lambda 0.95,
threshold 0, lambda_init 1, lambda_lr 0.1, lambda_max 5, no delay, cost window
128, ptx coefficient 16. Two deliberate differences: the PTX dataset is empty by
default (the reference's is Alpaca, which has nothing to do with a given world;
set ``data.ptx`` to enable the term), and the seed is 0 like every rad command.
``launch/configs/ppo_lag_tiny.yaml`` raises the learning rates so the tiny CPU
model moves in minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

from rad.algos.online_config import OnlineRunConfig
from rad.config import field
from rad.data.sources import SPECS_HELP, DataSpecs
from rad.errors import ConfigError
from rad.runtime.resources import ResourcesConfig
from rad.runtime.rollout.config import RolloutConfig
from rad.settings import (LearnerConfig, PolicyLora, is_url)


@dataclass
class PPOLagAlgoConfig:
    """PPO, GAE, KL shaping and the Lagrange multiplier (names as in the reference's arguments)."""

    steps: int = field(40, min=1, help="rollout iterations (each: generate, score, update_iters PPO passes)")
    prompts_per_step: int = field(16, min=1, help="prompts per rollout batch (reference: per_device_prompt_batch_size)")
    samples_per_prompt: int = field(1, min=1, help="responses per prompt (reference: num_return_sequences)")
    train_batch_size: int = field(16, min=1, help="samples per PPO optimizer update over all ranks "
                                                  "(reference: per_device_train_batch_size)")
    update_iters: int = field(1, min=1, help="passes over each rollout batch")
    kl_coeff: float = field(0.01, min=0, help="per-token KL penalty folded into the reward and cost streams")
    clip_range_ratio: float = field(0.2, gt=0, help="PPO ratio clip epsilon")
    clip_range_score: float = field(50.0, gt=0, help="clip the shaped per-token rewards / costs to +-this")
    clip_range_value: float = field(5.0, gt=0, help="value clip around the old values")
    gamma: float = field(1.0, min=0, max=1, help="discount")
    gae_lambda: float = field(0.95, min=0, max=1, help="GAE lambda")
    ptx_coeff: float = field(16.0, min=0, help="weight of the PTX (supervised) loss when data.ptx is set")
    threshold: float = field(0.0, help="cost limit d: the constraint is E[cost] <= d")
    lambda_init: float = field(1.0, gt=0, help="initial Lagrange multiplier")
    lambda_lr: float = field(0.1, min=0, help="SGD step size on log lambda")
    lambda_max: float = field(5.0, min=0, help="upper clamp of lambda (0 = none)")
    lambda_update_delay_steps: int = field(0, min=0, help="PPO updates before lambda starts moving")
    episode_cost_window_size: int = field(128, min=1, help="recent episode costs averaged into Jc")


@dataclass
class PPOLagDataConfig:
    prompts: DataSpecs = field(default_factory=lambda: ["embedded/prompts-train"], help="RL prompt specs" + SPECS_HELP)
    eval_prompts: DataSpecs = field(default_factory=lambda: ["embedded/prompts-test"],
                                    help="held-out prompts" + SPECS_HELP)
    ptx: DataSpecs = field(default_factory=list,
                           help="supervised (sft-kind) specs for the PTX term ([] = off)" + SPECS_HELP)
    ptx_max_length: int = field(512, min=2, help="token budget of a PTX prompt + response")


@dataclass
class PPOLagStage:
    """The PPO-Lag-specific keys."""

    algo: PPOLagAlgoConfig = field(default_factory=PPOLagAlgoConfig)
    data: PPOLagDataConfig = field(default_factory=PPOLagDataConfig)
    actor_learner: LearnerConfig = field(default_factory=lambda: LearnerConfig(
        lr=1e-5, scheduler="cosine", warmup_ratio=0.03, weight_decay=0.01, micro_batch_size=16))
    critic_learner: LearnerConfig = field(default_factory=lambda: LearnerConfig(
        lr=5e-6, scheduler="constant", warmup_ratio=0.0, weight_decay=0.0, micro_batch_size=16))
    rollout: RolloutConfig = field(default_factory=lambda: RolloutConfig(num_gpus_per_engine=0.0))
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    save_every: int = field(10, min=0, help="checkpoint every N rollout steps (0 = only at the end)")
    keep_checkpoints: int = field(2, min=0, help="newest checkpoints kept (0 = all)")
    eval_samples_per_prompt: int = field(4, min=1, help="samples per held-out prompt in the final evaluation")
    reference_micro_batch_size: int = field(16, min=1, help="samples per forward pass of the reference policy's "
                                                            "log-probs (it takes actor_learner.logprob_chunk_size "
                                                            "and actor_learner.group_by_length too)")
    lora: PolicyLora = field(default_factory=PolicyLora, help="LoRA adapters on the actor (the policy): only "
                                                                "they train; the engines and model/ get the merged "
                                                                "weights (the critics train fully)")


@dataclass
class PPOLagConfig(PPOLagStage, OnlineRunConfig):
    """``rad baseline ppo-lag``: Safe RLHF PPO-Lagrangian from an SFT policy and trained reward / cost models."""

    output_dir: str = field("runs/ppo_lag", help="run directory")
    reward_critic_model: str = field("", help="reward critic initialisation ('' = the reward model)")
    cost_critic_model: str = field("", help="cost critic initialisation ('' = the cost model)")

    def validate(self) -> None:
        OnlineRunConfig.validate(self)
        self.lora.check_rl(self.actor_learner, self.rollout, "actor_learner")
        for kind in ("reward", "cost"):
            if is_url(getattr(self, f"{kind}_model")) and not getattr(self, f"{kind}_critic_model"):
                raise ConfigError(f"{kind}_critic_model: {kind}_model is a remote scorer, so the {kind} critic "
                                  "needs a model directory to start from")
        algo, n = self.algo, self.resources.num_learners
        batch = algo.prompts_per_step * algo.samples_per_prompt
        if batch % algo.train_batch_size:
            raise ConfigError(f"algo.train_batch_size = {algo.train_batch_size} must divide the rollout batch "
                              f"algo.prompts_per_step * algo.samples_per_prompt = {batch}")
        if algo.train_batch_size % n:
            raise ConfigError(f"algo.train_batch_size = {algo.train_batch_size} must divide evenly over "
                              f"resources.num_learners = {n}")
