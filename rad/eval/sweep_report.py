"""A sweep's results: every cell's held-out metrics aggregated over seeds, as JSON, a table and a Pareto figure.

A *cell* is one ``rad train`` run of a sweep (``rad sweep``): one seed and one
*setting* (an assignment of the swept keys). Its metrics are the numeric leaves
of its ``summary.json`` that were measured on held-out data:

* ``<stage>/<key>`` for every key of a stage's ``heldout`` record (RAD and
  PPO-Lag: reward win rate, cost and hidden-harm risks, ...; the reward and
  cost models: held-out accuracies), booleans as 0/1;
* ``eval/<competition>/<key>...`` for the eval stage's headline numbers.

Per setting and metric: the mean over seeds and its 95 % t-interval
(``mean +- t_{0.975, n-1} * s / sqrt(n)``, ``s`` the sample standard deviation;
no interval from one seed), with every seed's value kept. The Pareto figure
plots, per algorithm (``rad``, ``ppo_lag``) and setting, the reward win rate
against the hidden-harm CVaR-0.9 and against the cost-model CVaR-0.9.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from rad.eval.plots import pareto_fronts
from rad.eval.report import Report, num

CONFIDENCE = 0.95
#: Policy stages whose held-out record makes a Pareto point, and the record's axes.
ALGORITHMS = ("rad", "ppo_lag")
WIN_RATE = "reward_win_rate"
TAIL_AXES = {"true_harm_cvar_0.9_policy": "hidden-harm CVaR-0.9 (lower is safer)",
             "cost_cvar_0.9_policy": "cost-model CVaR-0.9 (lower is safer)"}
SWEEP_JSON, SWEEP_MD, PARETO_PNG = "sweep.json", "sweep.md", "figures/pareto.png"


def _leaves(record: Mapping[str, Any], prefix: str) -> Iterable[tuple[str, float]]:
    for key, value in record.items():
        name = f"{prefix}/{key}"
        if isinstance(value, Mapping):
            yield from _leaves(value, name)
        elif isinstance(value, (bool, int, float)) and not isinstance(value, str):
            yield name, float(value)


def cell_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The held-out metrics of one cell's ``summary.json`` (see the module docstring)."""
    out: dict[str, float] = {}
    for stage, record in summary.get("stages", {}).items():
        if not isinstance(record, Mapping):
            continue
        if isinstance(record.get("heldout"), Mapping):
            out.update(_leaves(record["heldout"], stage))
        if stage == "eval" and isinstance(record.get("competitions"), Mapping):
            out.update(_leaves(record["competitions"], stage))
    return out


def t_interval(values: Iterable[float], confidence: float = CONFIDENCE) -> dict[str, float]:
    """Mean and two-sided t-interval of independent draws; NaN bounds for fewer than two finite values."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    if n < 2:
        return {"mean": mean, "ci_low": math.nan, "ci_high": math.nan, "half_width": math.nan, "n": n}
    half = float(student_t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "half_width": half, "n": n}


def aggregate(cells: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per setting (in first-seen order): every metric's t-interval over the cells' seeds.

    ``cells``: ``{"setting": label, "seed": int, "metrics": {name: value}}``. A metric
    missing from some cells is aggregated over the cells that have it.
    """
    settings: dict[str, list[Mapping[str, Any]]] = {}
    for cell in cells:
        settings.setdefault(cell["setting"], []).append(cell)
    out = []
    for label, group in settings.items():
        names = sorted({m for c in group for m in c["metrics"]})
        metrics = {}
        for name in names:
            seeds = {c["seed"]: c["metrics"][name] for c in group if name in c["metrics"]}
            metrics[name] = {**t_interval(seeds.values()), "values": seeds}
        out.append({"setting": label, "seeds": sorted(c["seed"] for c in group), "metrics": metrics})
    return out


def _cell(stats: Mapping[str, Any] | None) -> str:
    if stats is None:
        return ""
    if math.isnan(stats["half_width"]):
        return num(stats["mean"])
    return f"{num(stats['mean'])} \u00b1 {num(stats['half_width'])}"


def metrics_table(settings: list[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows = metrics, columns = settings; each entry 'mean +- 95 % half-width' over seeds."""
    names = sorted({m for s in settings for m in s["metrics"]})
    return pd.DataFrame({"metric": names, **{s["setting"]: [_cell(s["metrics"].get(m)) for m in names]
                                             for s in settings}})


def pareto_series(settings: list[Mapping[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """{tail metric: {algorithm: [{setting, x, x_err, y, y_err}]}} of the settings that have both axes."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for axis in TAIL_AXES:
        for algo in ALGORITHMS:
            points = []
            for s in settings:
                x, y = s["metrics"].get(f"{algo}/{axis}"), s["metrics"].get(f"{algo}/{WIN_RATE}")
                if x is not None and y is not None:
                    points.append({"setting": s["setting"], "x": x["mean"], "x_err": x["half_width"],
                                   "y": y["mean"], "y_err": y["half_width"]})
            if points:
                out.setdefault(axis, {})[algo] = points
    return out


def write_sweep_report(out: Path, spec: Mapping[str, Any], cells: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Write sweep.json (spec, cells, aggregates), sweep.md (the table) and the Pareto figure under ``out``."""
    settings = aggregate(c for c in cells if c.get("metrics"))
    series = pareto_series(settings)
    figure = pareto_fronts(series, TAIL_AXES, WIN_RATE, out / PARETO_PNG) if series else None
    result = {**spec, "confidence": CONFIDENCE, "cells": cells, "settings": settings,
              "figure": str(figure) if figure else None}
    (out / SWEEP_JSON).write_text(json.dumps(result, indent=2, default=str, allow_nan=True) + "\n")
    doc = sweep_section(Report(title=f"Sweep of {spec.get('config', '')}"), result, out, out)
    (out / SWEEP_MD).write_text(doc.markdown())
    return result


def sweep_section(doc: Report, result: Mapping[str, Any], sweep_dir: Path, report_dir: Path) -> Report:
    """Add a sweep's table and Pareto figure (linked relative to ``report_dir``) to ``doc``."""
    seeds = sorted({c["seed"] for c in result["cells"]})
    doc.heading(f"Sweep: {len(result['settings'])} settings x {len(seeds)} seeds")
    doc.text(f"Each entry: mean over seeds {seeds} \u00b1 half-width of the {100 * result['confidence']:.0f} % "
             f"t-interval (none from one seed). Cells: {sweep_dir}.")
    doc.table(metrics_table(result["settings"]))
    if result.get("figure"):
        doc.figure(os.path.relpath(result["figure"], report_dir),
                   "Reward win rate vs the tail of the cost, per algorithm and setting "
                   "(error bars: 95 % t-intervals over seeds)")
    return doc


def read_sweep(sweep_dir: Path) -> dict[str, Any]:
    """The ``sweep.json`` of a sweep directory."""
    return json.loads((Path(sweep_dir) / SWEEP_JSON).read_text())
