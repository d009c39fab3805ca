"""Configuration of score-model training (``rad rm train``, ``rad cm train``).

``ScoreModelStage`` holds the keys a pipeline config repeats for its reward and
cost sections; ``ScoreModelConfig`` adds what a stand-alone run needs (kind,
output directory, seed, world, backbone, logging). ``RewardModelConfig`` and
``CostModelConfig`` only change the defaults of ``kind`` and ``output_dir``.
"""

from __future__ import annotations

from dataclasses import dataclass

from rad.algos.supervised import ScheduleConfig
from rad.config import field
from rad.data.sources import SPECS_HELP, DataSpecs
from rad.runtime.run_dir import resume_field
from rad.models.score_model import KINDS, NORMALIZE_MODES
from rad.settings import LearnerConfig, LearnerResources, LoggingConfig, LoraSettings, ModelConfig, WorldConfig


@dataclass
class ScoreDataConfig:
    train: DataSpecs = field(default_factory=lambda: ["embedded/pref-train"],
                             help="preference dataset specs NAME[:PROPORTION] (registry names or local files)"
                                  + SPECS_HELP)
    eval: DataSpecs = field(default_factory=lambda: ["embedded/pref-test"],
                            help="held-out preference specs" + SPECS_HELP)
    max_length: int = field(160, min=8, help="prompt + response tokens; longer pairs lose the prompt's start first")
    max_eval_rows: int = field(0, min=0, help="cap on held-out rows (0 = all)")


@dataclass
class ScoreModelStage:
    """Keys shared by the reward and cost sections of a pipeline."""

    data: ScoreDataConfig = field(default_factory=ScoreDataConfig)
    learner: LearnerConfig = field(default_factory=lambda: LearnerConfig(
        lr=2e-3, micro_batch_size=16, weight_decay=0.0, warmup_ratio=0.05))
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(epochs=2, eval_batch_size=64))
    resources: LearnerResources = field(default_factory=LearnerResources)
    regularization: float = field(0.0, min=0, help="weight of mean(score^2) in the loss")
    normalize: str = field("none", choices=NORMALIZE_MODES,
                           help="normalisation the saved model applies when scoring: none (raw), scale (s/std, "
                                "keeps the sign), standard ((s-mean)/std); mean/std come from held-out scores")
    lora: LoraSettings = field(default_factory=LoraSettings, help="LoRA adapters on the backbone (the head trains "
                                                                  "fully); merged into the saved model")

    def validate(self) -> None:
        self.learner.check_arrival_order("score-model training")


@dataclass
class ScoreModelConfig(ScoreModelStage):
    """Train a reward (helpfulness) or cost (harmfulness) model on preference pairs."""

    kind: str = field("reward", choices=KINDS, help="reward: Bradley-Terry on better_response_id; "
                                                     "cost: Bradley-Terry on safer_response_id + safe/unsafe signs")
    output_dir: str = field("", help="run directory ('' = runs/<kind>_model)")
    seed: int = field(0, help="random seed of data order, sub-sampling, initialisation and sampling")
    resume: bool = resume_field()
    world: WorldConfig = field(default_factory=WorldConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def validate(self) -> None:
        ScoreModelStage.validate(self)
        self.lora.check_learner(self.learner)
        if not self.output_dir:
            self.output_dir = f"runs/{self.kind}_model"


@dataclass
class RewardModelConfig(ScoreModelConfig):
    """``rad rm train``: a reward model."""

    kind: str = field("reward", choices=("reward",), help="fixed by the command")


@dataclass
class CostModelConfig(ScoreModelConfig):
    """``rad cm train``: a cost model (cost > 0 means unsafe)."""

    kind: str = field("cost", choices=("cost",), help="fixed by the command")
