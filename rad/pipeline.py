"""``rad train``: the main job. Runs every stage whose output is missing, in order.

This is the top (CLI) layer: it is the one place in ``rad`` that reaches into the
sibling package ``reward_cost_models``, lazily, as the CLI does. Stages write into
one run directory::

    <output_dir>/config.yaml      resolved pipeline config
    <output_dir>/sft/             SFT (model/, checkpoints/, metrics.jsonl, tensorboard/, samples.jsonl)
    <output_dir>/reward/          reward model (model/, metrics, score histogram)
    <output_dir>/cost/            cost model
    <output_dir>/rad/             RAD policy (model/, checkpoints/, metrics, held-out comparison)
    <output_dir>/summary.json     per-stage summaries and timings

A stage is skipped when its summary is recorded and its model exists, so
re-running the same command resumes the pipeline; with ``resume: true`` an
interrupted stage continues from its newest checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rad.algos.rad import RADConfig, RADStage, run_rad
from rad.algos.sft import SFTConfig, SFTStage, run_sft
from rad.config import field, from_dict, save_config, to_dict
from rad.settings import LoggingConfig, ModelConfig, WorldConfig
from reward_cost_models.config import ScoreModelConfig, ScoreModelStage

log = logging.getLogger("rad")

STAGES = ("sft", "reward", "cost", "rad")


@dataclass
class PipelineConfig:
    """``rad train``: SFT -> reward model -> cost model -> RAD."""

    output_dir: str = field("runs/tiny", help="run directory for all stages")
    seed: int = field(0)
    resume: bool = field(True, help="skip finished stages and resume an interrupted one")
    stages: list[str] = field(default_factory=lambda: list(STAGES), help=f"stages to run, in order, of {STAGES}")
    world: WorldConfig = field(default_factory=WorldConfig)
    model: ModelConfig = field(default_factory=ModelConfig, help="the base model SFT starts from")
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    sft: SFTStage = field(default_factory=SFTStage)
    reward: ScoreModelStage = field(default_factory=ScoreModelStage)
    cost: ScoreModelStage = field(default_factory=ScoreModelStage)
    rad: RADStage = field(default_factory=RADStage)

    def validate(self) -> None:
        from rad.errors import ConfigError

        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ConfigError(f"stages: unknown stage {unknown[0]!r}; choose from {list(STAGES)}")


def _fields(obj: Any, cls: type) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(cls)}


def stage_configs(cfg: PipelineConfig) -> dict[str, Any]:
    """The stand-alone config of every stage, wired to the previous stages' outputs."""
    out = Path(cfg.output_dir)
    common = dict(seed=cfg.seed, resume=cfg.resume, world=cfg.world, logging=cfg.logging)
    sft_model = out / "sft" / "model"
    backbone = dataclasses.replace(cfg.model, name_or_path=str(sft_model), tokenizer="")
    return {
        "sft": SFTConfig(output_dir=str(out / "sft"), model=cfg.model, **common, **_fields(cfg.sft, SFTStage)),
        "reward": ScoreModelConfig(kind="reward", output_dir=str(out / "reward"), model=backbone, **common,
                                   **_fields(cfg.reward, ScoreModelStage)),
        "cost": ScoreModelConfig(kind="cost", output_dir=str(out / "cost"), model=backbone, **common,
                                 **_fields(cfg.cost, ScoreModelStage)),
        "rad": RADConfig(output_dir=str(out / "rad"), policy=backbone, reward_model=str(out / "reward" / "model"),
                         cost_model=str(out / "cost" / "model"), **common, **_fields(cfg.rad, RADStage)),
    }


def _runner(name: str) -> Callable[[Any], dict[str, Any]]:
    if name == "sft":
        return run_sft
    if name in ("reward", "cost"):
        from reward_cost_models.train import run_score_model

        return run_score_model
    return run_rad


def run_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    summary_path = out / "summary.json"
    summary: dict[str, Any] = {"output_dir": str(out), "stages": {}}
    if summary_path.exists() and cfg.resume:
        summary["stages"] = json.loads(summary_path.read_text()).get("stages", {})
    # Validate every stage's resolved config before any work starts.
    configs = {name: from_dict(type(c), to_dict(c), prefix=name) for name, c in stage_configs(cfg).items()}
    for name in cfg.stages:
        stage_cfg = configs[name]
        done = name in summary["stages"] and (Path(stage_cfg.output_dir) / "model").exists()
        if done:
            log.info("stage %s already finished in %s; skipping", name, stage_cfg.output_dir)
            continue
        log.info("stage %s -> %s", name, stage_cfg.output_dir)
        start = time.perf_counter()
        result = _runner(name)(stage_cfg)
        result["seconds"] = round(time.perf_counter() - start, 1)
        summary["stages"][name] = result
        tmp = summary_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary, indent=2, default=str))
        tmp.replace(summary_path)
    summary["total_seconds"] = round(sum(s.get("seconds", 0) for s in summary["stages"].values()), 1)
    summary_path.write_text(json.dumps(summary, indent=2, default=str))
    return summary
