"""``rad sweep``: one ``rad train`` config over seeds x settings, resumable, aggregated.

    rad sweep --config launch/configs/tiny_compare.yaml --seeds 0-4 \\
        --grid rad.algo.delta=0.25,0.5,1.0 [--grid KEY=V1,V2 ...] [--output-dir D] [key=value ...]

Each *cell* (one seed, one value of every ``--grid`` key) is a run of the
config's pipeline with ``seed=<seed>``, the cell's grid values and the trailing
overrides, in its own directory::

    D/cells/<setting>-seed<s>/      the pipeline's run directory (config.yaml, summary.json, rad/, ...)
    D/upstream/<group>/             SFT, reward and cost models shared by cells (see below)
    D/sweep.json, D/sweep.md        aggregates: mean and 95 % t-interval of every held-out metric
    D/figures/pareto.png            reward win rate vs hidden-harm / cost-model CVaR-0.9, per algorithm

Upstream stages (``sft``, ``reward``, ``cost``) are trained once per distinct
assignment of the grid keys that can change them (every key outside ``rad.*``,
``ppo_lag.*``, ``eval.*``, ``logging.*``), with the config's own seed
(``--upstream shared``, the default) or once per seed as well (``--upstream
per-seed``); a cell finds them as finished stages of its run (its ``<stage>/model``
links to the group's model and its summary records the group's stage summary
with ``upstream`` naming the directory). ``--upstream none`` trains every stage
in every cell.

Cells run one after another in this process (Ray actors of the RL stages on the
local or configured cluster); a cell whose ``summary.json`` records every
selected stage is skipped, so re-running the command resumes the sweep.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rad.config import load_config
from rad.errors import ConfigError
from rad.pipeline import PipelineConfig, run_pipeline

log = logging.getLogger("rad")

UPSTREAM_STAGES = ("sft", "reward", "cost")
#: Key prefixes that only change stages after the upstream ones.
DOWNSTREAM_PREFIXES = ("rad.", "ppo_lag.", "eval.", "logging.")
#: Keys the sweep sets itself.
RESERVED = ("seed", "output_dir", "resume", "stages")
UPSTREAM_MODES = ("shared", "per-seed", "none")


@dataclass(frozen=True)
class Cell:
    seed: int
    assignment: tuple[tuple[str, str], ...]  # (key, raw value) per grid key

    @property
    def setting(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.assignment) or "base"

    @property
    def name(self) -> str:
        return f"{_safe(self.setting)}-seed{self.seed}"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", text)


def parse_seeds(text: str) -> list[int]:
    """``3``, ``0-4`` (inclusive) or ``0,2,5`` -> distinct seeds in order."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            first, last = int(lo), int(hi) if sep else int(lo)
            if last < first:
                raise ValueError
            seeds += [s for s in range(first, last + 1) if s not in seeds]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected N, A-B (A <= B) or N,M,... of non-negative integers") from None
    return seeds


def _split_values(raw: str) -> list[str]:
    """Comma-separated values; commas inside [...] belong to a list value."""
    values, depth, current = [], 0, ""
    for ch in raw:
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += ch
    values.append(current.strip())
    return values


def parse_grid(texts: list[str]) -> list[tuple[str, list[str]]]:
    """``KEY=V1,V2`` per ``--grid`` -> [(key, [raw values])], checked for form (not yet against the config)."""
    grid: list[tuple[str, list[str]]] = []
    for text in texts:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key or any(not p for p in key.split(".")):
            raise ConfigError(f"--grid {text!r}: expected KEY=V1,V2,... with a dotted config key, "
                              f"e.g. rad.algo.delta=0.25,0.5")
        values = _split_values(raw)
        if any(not v for v in values):
            raise ConfigError(f"--grid {text!r}: empty value; expected KEY=V1,V2,...")
        if len(set(values)) != len(values):
            raise ConfigError(f"--grid {text!r}: a value is listed twice")
        if key in RESERVED:
            hint = " (use --seeds)" if key == "seed" else ""
            raise ConfigError(f"--grid {text!r}: {key} is set by the sweep itself{hint}")
        if key in (k for k, _ in grid):
            raise ConfigError(f"--grid {text!r}: {key} is swept twice; list all its values in one --grid")
        grid.append((key, values))
    return grid


def expand(seeds: list[int], grid: list[tuple[str, list[str]]]) -> list[Cell]:
    """Every (setting, seed) cell, settings in grid order, seeds innermost."""
    keys = [k for k, _ in grid]
    return [Cell(seed, tuple(zip(keys, combo)))
            for combo in itertools.product(*(values for _, values in grid)) for seed in seeds]


def _overrides(pairs) -> list[str]:
    return [f"{k}={v}" for k, v in pairs]


def _is_upstream_key(key: str) -> bool:
    return not key.startswith(DOWNSTREAM_PREFIXES)


@dataclass
class Sweep:
    config: str
    seeds: list[int]
    grid: list[tuple[str, list[str]]]
    overrides: list[str]
    output_dir: Path
    upstream: str = "shared"

    def load(self, extra: list[str]) -> PipelineConfig:
        return load_config(PipelineConfig, self.config, [*self.overrides, *extra])

    def validate(self) -> PipelineConfig:
        """The base config; every grid value is loaded once so a bad one fails before any work, named."""
        if self.upstream not in UPSTREAM_MODES:
            raise ConfigError(f"--upstream {self.upstream!r}: choose from {list(UPSTREAM_MODES)}")
        base = self.load([])
        for key, values in self.grid:
            for value in values:
                try:
                    self.load([f"{key}={value}"])
                except ConfigError as exc:
                    raise ConfigError(f"--grid {key}={value}: {exc}") from None
        if not any(s not in UPSTREAM_STAGES for s in base.selected()):
            raise ConfigError(f"stages: a sweep needs a stage after {list(UPSTREAM_STAGES)}, got {base.stages}")
        return base

    def shared_stages(self, base: PipelineConfig) -> list[str]:
        return [] if self.upstream == "none" else [s for s in base.selected() if s in UPSTREAM_STAGES]

    def upstream_dir(self, cell: Cell) -> tuple[Path, list[str]]:
        """(directory, overrides) of the upstream group a cell reads its SFT / reward / cost models from."""
        pairs = [(k, v) for k, v in cell.assignment if _is_upstream_key(k)]
        extra = _overrides(pairs)
        label = _safe(",".join(extra)) or "base"
        if self.upstream == "per-seed":
            label += f"-seed{cell.seed}"
            extra.append(f"seed={cell.seed}")
        return self.output_dir / "upstream" / label, extra

    def run(self) -> dict[str, Any]:
        from rad.eval.sweep_report import cell_metrics, write_sweep_report  # matplotlib, scipy: only when run

        base = self.validate()
        cells = expand(self.seeds, self.grid)
        shared = self.shared_stages(base)
        selected = base.selected()
        records, ran, skipped = [], [], []
        for i, cell in enumerate(cells):
            cell_dir = self.output_dir / "cells" / cell.name
            summary = _read_summary(cell_dir)
            if summary is None or not set(selected) <= set(summary.get("stages", {})):
                log.info("sweep cell %d/%d: %s", i + 1, len(cells), cell.name)
                if shared:
                    self._link_upstream(cell, cell_dir, shared)
                stages = "[" + ",".join(selected) + "]"
                cfg = self.load([*_overrides(cell.assignment), f"seed={cell.seed}", f"output_dir={cell_dir}",
                                 "resume=true", f"stages={stages}"])
                summary = run_pipeline(cfg)
                ran.append(cell.name)
            else:
                skipped.append(cell.name)
            records.append({"name": cell.name, "setting": cell.setting, "seed": cell.seed,
                            "assignment": dict(cell.assignment), "dir": str(cell_dir),
                            "metrics": cell_metrics(summary)})
        spec = {"config": self.config, "seeds": self.seeds, "grid": {k: v for k, v in self.grid},
                "overrides": self.overrides, "upstream": self.upstream, "ran": ran, "skipped": skipped}
        result = write_sweep_report(self.output_dir, spec, records)
        return {"output_dir": str(self.output_dir), "cells": len(cells), "ran": ran, "skipped": skipped,
                "settings": len(result["settings"]), "figure": result["figure"],
                "table": str(self.output_dir / "sweep.md")}

    def _link_upstream(self, cell: Cell, cell_dir: Path, shared: list[str]) -> None:
        """Train (or find) the cell's upstream group and record its stages as finished in the cell."""
        up_dir, extra = self.upstream_dir(cell)
        stages = "[" + ",".join(shared) + "]"
        up = run_pipeline(self.load([*extra, f"output_dir={up_dir}", "resume=true", f"stages={stages}"]))
        summary = _read_summary(cell_dir) or {"output_dir": str(cell_dir), "stages": {}}
        for stage in shared:
            link = cell_dir / stage / "model"
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to((up_dir / stage / "model").resolve(), target_is_directory=True)
            summary["stages"][stage] = {**up["stages"][stage], "upstream": str(up_dir)}
        (cell_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))


def _read_summary(cell_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((cell_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def _run(args: argparse.Namespace) -> int:
    from rad.config import describe

    if args.help_config:
        print("\n".join(describe(PipelineConfig)))
        return 0
    if not args.config:
        raise ConfigError("--config: a sweep needs the rad train config it sweeps")
    if not args.seeds:
        raise ConfigError("--seeds: expected N, A-B or N,M,... (e.g. --seeds 0-4)")
    out = Path(args.output_dir or f"runs/sweep-{Path(args.config).stem}")
    sweep = Sweep(config=args.config, seeds=parse_seeds(args.seeds), grid=parse_grid(args.grid or []),
                  overrides=list(args.overrides), output_dir=out, upstream=args.upstream)
    if args.print_config:  # the config every cell starts from (each cell then sets its seed and grid values)
        from rad.commands import resolved_yaml

        print(resolved_yaml(sweep.validate()), end="")
        return 0
    print(json.dumps(sweep.run(), indent=2, default=str))
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``rad sweep``."""
    p = subparsers.add_parser("sweep", help="one rad train config over seeds x settings: resumable, aggregated "
                                            "(mean and 95%% CI), with a Pareto figure")
    p.add_argument("--config", help="the rad train YAML config every cell runs")
    p.add_argument("--help-config", action="store_true", help="list every config key and exit")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config every cell starts from (YAML) and exit")
    p.add_argument("--seeds", help="seeds: N, A-B (inclusive) or N,M,...")
    p.add_argument("--grid", action="append", metavar="KEY=V1,V2", help="a swept key and its values; repeat for a "
                                                                         "product")
    p.add_argument("--output-dir", help="sweep directory (default runs/sweep-<config name>)")
    p.add_argument("--upstream", default="shared", choices=UPSTREAM_MODES,
                   help="SFT/reward/cost: shared across seeds (default), per seed, or none (every cell trains all)")
    p.add_argument("overrides", nargs="*", help="dotted overrides applied to every cell, e.g. rad.algo.steps=30")
    p.set_defaults(func=_run, config_class=PipelineConfig)
