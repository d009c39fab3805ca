"""The keys every online RL run has, whatever its algorithm (RAD, PPO-Lag): where it writes, its seed,
the models it starts from and is scored by, and its logging.

An algorithm's config is its own stage keys (``algo``, ``data``, learners, rollout, resources) plus
these, e.g. ``class RADConfig(RADStage, OnlineRunConfig)``; its ``output_dir`` default names it.
"""

from __future__ import annotations

from dataclasses import dataclass

from rad.config import field
from rad.runtime.profiling import ProfileConfig
from rad.runtime.run_dir import resume_field
from rad.settings import (LoggingConfig, ModelConfig, ScorerConfig, WorldConfig, check_score_models,
                          score_model_field, scorer_field)


@dataclass
class OnlineRunConfig:
    """Run-level keys of an online RL command (see the module docstring)."""

    MOVED = {"reference": "reference_model"}

    seed: int = field(0, help="random seed of data order, sub-sampling, initialisation and sampling")
    resume: bool = resume_field()
    world: WorldConfig = field(default_factory=WorldConfig)
    policy: ModelConfig = field(default_factory=ModelConfig, help="policy (actor) initialisation (the SFT model)")
    reference_model: str = field("", help="reference policy directory ('' = the policy initialisation)")
    reward_model: str = score_model_field("reward")
    cost_model: str = score_model_field("cost")
    reward_scorer: ScorerConfig = scorer_field("reward")
    cost_scorer: ScorerConfig = scorer_field("cost")
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig,
                                   help="PyTorch profiler in every role's actor for chosen steps (off by default)")

    def validate(self) -> None:
        check_score_models(self)
