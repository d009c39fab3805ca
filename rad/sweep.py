"""``rad sweep``: one ``rad train`` config over seeds x settings, resumable, aggregated.

    rad sweep --config launch/configs/tiny_compare.yaml --seeds 0-4 \\
        --grid rad.algo.delta=0.25,0.5,1.0 [--grid KEY=V1,V2 ...] [--zip] [--output-dir D] [key=value ...]

Several ``--grid`` keys make their product, or with ``--zip`` move together (one
setting per position: ``--grid rad.algo.delta=0.25,0.5 --grid ppo_lag.algo.threshold=-3,-3.3
--zip`` is two settings, each running both algorithms at one constraint level).

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

Cells run one after another in this process (``--executor local``, the default;
Ray actors of the RL stages on the local or configured cluster), or as Ray tasks
on that cluster, ``--max-parallel`` at a time (``--executor ray``; see
:func:`run_cells_on_ray`: parallel cells need ``<stage>.resources.placement`` so
each reserves its roles at once, and a cell whose placement group waits longer
than ``placement_timeout_s`` fails). Upstream groups train first, in this process.
A cell whose ``summary.json`` records every selected stage is skipped, so
re-running the command resumes the sweep.
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
from rad.errors import ConfigError, RadError
from rad.pipeline import PipelineConfig, run_pipeline, stage_configs

log = logging.getLogger("rad")

UPSTREAM_STAGES = ("sft", "reward", "cost")
#: Key prefixes that only change stages after the upstream ones.
DOWNSTREAM_PREFIXES = ("rad.", "ppo_lag.", "eval.", "logging.")
#: Keys the sweep sets itself.
RESERVED = ("seed", "output_dir", "resume", "stages")
UPSTREAM_MODES = ("shared", "per-seed", "none")
#: Where cells run: one after another in this process, or as Ray tasks (``--max-parallel`` at a time).
EXECUTORS = ("local", "ray")
#: Logical CPUs a local Ray cluster gets per parallel cell when the sweep starts it (roles of one RL stage).
CPUS_PER_CELL = 6


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


def expand(seeds: list[int], grid: list[tuple[str, list[str]]], paired: bool = False) -> list[Cell]:
    """Every (setting, seed) cell, settings in grid order, seeds innermost.

    ``paired`` (``--zip``): the grid keys move together, the i-th value of every key in the
    i-th setting (e.g. RAD's delta and PPO-Lag's threshold, one constraint level per setting),
    instead of their product.
    """
    keys = [k for k, _ in grid]
    if paired:
        lengths = {key: len(values) for key, values in grid}
        if len(set(lengths.values())) > 1:
            raise ConfigError(f"--zip: every --grid needs the same number of values, got {lengths}")
        combos = list(zip(*(values for _, values in grid)))
    else:
        combos = list(itertools.product(*(values for _, values in grid)))
    return [Cell(seed, tuple(zip(keys, combo))) for combo in combos for seed in seeds]


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
    paired: bool = False
    executor: str = "local"
    max_parallel: int = 2

    def load(self, extra: list[str]) -> PipelineConfig:
        return load_config(PipelineConfig, self.config, [*self.overrides, *extra])

    def validate(self) -> PipelineConfig:
        """The base config; every grid value is loaded once so a bad one fails before any work, named."""
        if self.upstream not in UPSTREAM_MODES:
            raise ConfigError(f"--upstream {self.upstream!r}: choose from {list(UPSTREAM_MODES)}")
        if self.executor not in EXECUTORS:
            raise ConfigError(f"--executor {self.executor!r}: choose from {list(EXECUTORS)}")
        if self.max_parallel < 1:
            raise ConfigError(f"--max-parallel {self.max_parallel}: expected a positive number of cells")
        base = self.load([])
        for key, values in self.grid:
            for value in values:
                try:
                    self.load([f"{key}={value}"])
                except ConfigError as exc:
                    raise ConfigError(f"--grid {key}={value}: {exc}") from None
        if not any(s not in UPSTREAM_STAGES for s in base.selected()):
            raise ConfigError(f"stages: a sweep needs a stage after {list(UPSTREAM_STAGES)}, got {base.stages}")
        if self.executor == "ray" and self.max_parallel > 1:
            # Cells in parallel must reserve their roles all at once, or two half-placed cells wait on each other.
            for name, stage_cfg in stage_configs(base).items():
                if getattr(getattr(stage_cfg, "resources", None), "placement", None) == "none":
                    raise ConfigError(f"--executor ray --max-parallel {self.max_parallel}: {name}.resources.placement "
                                      f"is none; set it to pack (each cell reserves its roles at once) or run "
                                      f"--max-parallel 1")
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
        cells = expand(self.seeds, self.grid, self.paired)
        shared = self.shared_stages(base)
        selected = base.selected()
        stages = "[" + ",".join(selected) + "]"
        summaries: dict[str, dict[str, Any]] = {}
        todo: list[tuple[Cell, PipelineConfig]] = []
        for cell in cells:
            cell_dir = self.output_dir / "cells" / cell.name
            summary = _read_summary(cell_dir)
            if summary is not None and set(selected) <= set(summary.get("stages", {})):
                summaries[cell.name] = summary
                continue
            if shared:  # each upstream group trains once, here, before any cell runs
                self._link_upstream(cell, cell_dir, shared)
            todo.append((cell, self.load([*_overrides(cell.assignment), f"seed={cell.seed}",
                                          f"output_dir={cell_dir}", "resume=true", f"stages={stages}"])))
        ran = [cell.name for cell, _ in todo]
        skipped = [cell.name for cell in cells if cell.name in summaries]
        if self.executor == "ray":
            summaries.update(run_cells_on_ray(todo, self.max_parallel, _ray_resources(base)))
        else:
            for i, (cell, cfg) in enumerate(todo):
                log.info("sweep cell %d/%d: %s", i + 1, len(todo), cell.name)
                summaries[cell.name] = run_pipeline(cfg)
        records = [{"name": cell.name, "setting": cell.setting, "seed": cell.seed,
                    "assignment": dict(cell.assignment), "dir": str(self.output_dir / "cells" / cell.name),
                    "metrics": cell_metrics(summaries[cell.name])} for cell in cells]
        spec = {"config": self.config, "seeds": self.seeds, "grid": {k: v for k, v in self.grid},
                "overrides": self.overrides, "upstream": self.upstream, "paired": self.paired,
                "executor": self.executor, "ran": ran, "skipped": skipped}
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


def _ray_resources(base: PipelineConfig) -> Any:
    """The ``resources`` of the first selected stage that has them (the cluster the cells' RL stages use)."""
    for stage_cfg in stage_configs(base).values():
        if hasattr(stage_cfg, "resources") and hasattr(stage_cfg.resources, "ray_address"):
            return stage_cfg.resources
    raise ConfigError(f"--executor ray: none of the stages {base.stages} runs on Ray")


def run_cells_on_ray(todo: list[tuple[Cell, PipelineConfig]], max_parallel: int,
                     resources: Any) -> dict[str, dict[str, Any]]:
    """Run each cell's pipeline as a Ray task, at most ``max_parallel`` at once; their summaries by cell name.

    A cell task holds no CPU of its own (``num_cpus=0``): it is the driver of its cell, and
    its stages' actors reserve what they use through their placement groups, so cells that
    do not fit wait for resources instead of oversubscribing them. The cells' run
    directories must be on storage every node sees. When a cell fails, the cells in flight
    finish (their results are kept; re-running the sweep skips them) and the first failure
    is raised, naming its cell.
    """
    import ray

    from rad.runtime.local_ray import ensure_ray

    started = ensure_ray(resources, needed_cpus=CPUS_PER_CELL * max_parallel)
    task = ray.remote(num_cpus=0)(run_pipeline)
    queue, pending, results, failures = list(todo), {}, {}, []
    try:
        while queue or pending:
            while queue and not failures and len(pending) < max_parallel:
                cell, cfg = queue.pop(0)
                log.info("sweep cell %s: submitted as a Ray task", cell.name)
                pending[task.remote(cfg)] = cell
            if not pending:
                break
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(ref)
            try:
                results[cell.name] = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                failures.append((cell, getattr(exc, "cause", None) or exc))
    finally:
        if started:
            ray.shutdown()
    if failures:
        cell, cause = failures[0]
        if isinstance(cause, RadError):
            raise type(cause)(f"sweep cell {cell.name}: {cause}") from None
        raise cause
    return results


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
                  overrides=list(args.overrides), output_dir=out, upstream=args.upstream, paired=args.zip,
                  executor=args.executor, max_parallel=args.max_parallel)
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
    p.add_argument("--zip", action="store_true",
                   help="pair the --grid keys (the i-th value of each in the i-th setting) instead of their product")
    p.add_argument("--executor", default="local", choices=EXECUTORS,
                   help="run cells one after another here (local, default) or as Ray tasks on the local or "
                        "configured cluster (ray)")
    p.add_argument("--max-parallel", type=int, default=2, help="with --executor ray: cells running at once")
    p.add_argument("--output-dir", help="sweep directory (default runs/sweep-<config name>)")
    p.add_argument("--upstream", default="shared", choices=UPSTREAM_MODES,
                   help="SFT/reward/cost: shared across seeds (default), per seed, or none (every cell trains all)")
    p.add_argument("overrides", nargs="*", help="dotted overrides applied to every cell, e.g. rad.algo.steps=30")
    p.set_defaults(func=_run, config_class=PipelineConfig)
