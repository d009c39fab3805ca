"""``rad train``: the main job. Runs every stage whose output is missing, in order.

Stages write into one run directory::

    <output_dir>/config.yaml      resolved pipeline config
    <output_dir>/sft/             SFT run (model/, checkpoints/, metrics.jsonl, tensorboard/, samples.jsonl)
    <output_dir>/summary.json     per-stage summaries and timings

A stage is skipped when its final model already exists, so re-running the same
command resumes the pipeline; ``resume: true`` also resumes a stage that was cut
off mid-way from its newest checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rad.algos.sft import SFTConfig, SFTStage, run_sft
from rad.config import field, save_config
from rad.settings import LoggingConfig, ModelConfig, WorldConfig

log = logging.getLogger("rad.algos")


@dataclass
class PipelineConfig:
    """``rad train``: SFT, then (as they land) reward/cost models, RAD and evaluation."""

    output_dir: str = field("runs/tiny", help="run directory for all stages")
    seed: int = field(0)
    resume: bool = field(True, help="skip finished stages and resume an interrupted one")
    world: WorldConfig = field(default_factory=WorldConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    sft: SFTStage = field(default_factory=SFTStage)


def sft_config(cfg: PipelineConfig) -> SFTConfig:
    stage = {f.name: getattr(cfg.sft, f.name) for f in dataclasses.fields(SFTStage)}
    return SFTConfig(output_dir=str(Path(cfg.output_dir) / "sft"), seed=cfg.seed, resume=cfg.resume,
                     world=cfg.world, model=cfg.model, logging=cfg.logging, **stage)


def run_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    summary: dict[str, Any] = {"output_dir": str(out), "stages": {}}
    summary_path = out / "summary.json"
    if summary_path.exists():
        summary["stages"] = json.loads(summary_path.read_text()).get("stages", {})

    sft = sft_config(cfg)
    if (Path(sft.output_dir) / "model" / "config.json").exists() and "sft" in summary["stages"]:
        log.info("SFT already finished in %s; skipping", sft.output_dir)
    else:
        start = time.perf_counter()
        result = run_sft(sft)
        result["seconds"] = round(time.perf_counter() - start, 1)
        summary["stages"]["sft"] = result
        summary_path.write_text(json.dumps(summary, indent=2))
    summary_path.write_text(json.dumps(summary, indent=2))
    return summary
