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
from rad.errors import ConfigError
from rad.models.score_model import KINDS, NORMALIZE_MODES
from rad.settings import LearnerConfig, LearnerResources, LoggingConfig, ModelConfig, WorldConfig


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
class LoraSettings:
    """LoRA adapters on the backbone (``peft``); merged into the backbone when the model is saved."""

    enabled: bool = field(False, help="train LoRA adapters (and the score head) instead of the whole backbone")
    r: int = field(8, min=1, help="adapter rank")
    alpha: float = field(16.0, gt=0, help="scaling numerator (scale = alpha / r)")
    dropout: float = field(0.0, min=0, max=1, help="dropout on the adapters' input")
    target_modules: list[str] = field(default_factory=list, help="module names to adapt ([] = every linear layer)")


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
    lora: LoraSettings = field(default_factory=LoraSettings)


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
        if self.lora.enabled and self.learner.zero_stage == 3:
            raise ConfigError("lora.enabled with learner.zero_stage=3 is not supported: the frozen backbone "
                              "gains little from ZeRO-3 and adapters are merged from the live module at save")
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
