"""Report figures (matplotlib, headless: ``Figure`` objects, no pyplot state, no display needed).

* :func:`winrate_heatmap` — rows = competitions (red vs blue), columns = the four
  (red, blue) safety cells + overall; each cell shows blue's reward win rate and
  the number of pairs (the paper's Figure 1).
* :func:`cost_cdfs` — empirical CDFs of every model's cost on one axis (and of
  the hidden harm on a second one when the embedded world provides it).
* :func:`quantile_gaps` — one panel per weighting: w(t) (Q_red(t) - Q_blue(t))
  per competition; its integral over t is the dominance difference, so area
  above zero is where blue's cost quantiles sit below red's.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure

from rad.eval.arena import CELL_NAMES, OVERALL, empirical_quantile
from rad.risk import as_weighting

_GRID = 1000  # quantile levels per gap curve (midpoints of [0, 1] cells)


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    return path


def winrate_heatmap(rows: Sequence[tuple[str, Sequence[dict]]], path: Path) -> Path:
    """``rows``: (competition label, win_rates() rows) pairs."""
    cols = [*CELL_NAMES, OVERALL]
    rates = np.full((len(rows), len(cols)), np.nan)
    counts = np.zeros((len(rows), len(cols)), dtype=int)
    for i, (_, cells) in enumerate(rows):
        by = {c["cell"]: c for c in cells}
        for j, col in enumerate(cols):
            rates[i, j] = 100.0 * by[col]["win_rate"]
            counts[i, j] = by[col]["n"]
    fig = Figure(figsize=(8.5, 1.6 + 0.62 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="#dddddd")
    im = ax.imshow(np.ma.masked_invalid(rates), cmap=cmap, vmin=0, vmax=100, aspect="auto")
    for i in range(len(rows)):
        for j in range(len(cols)):
            r = rates[i, j]
            text = f"n={counts[i, j]}" if math.isnan(r) else f"{r:.0f}%\nn={counts[i, j]}"
            dark = not math.isnan(r) and abs(r - 50) > 30
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
    ax.set_xticks(range(len(cols)), ["red safe\nblue safe", "red safe\nblue unsafe", "red unsafe\nblue safe",
                                     "red unsafe\nblue unsafe", "overall"], fontsize=9)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=9)
    ax.set_xlabel("safety of the two responses (cost <= 0 is safe)")
    ax.set_ylabel("competition (red vs blue)")
    ax.set_title("Reward win rate of the blue model")
    fig.colorbar(im, ax=ax, label="blue wins (%)", shrink=0.9)
    return _save(fig, path)


def _ecdf(ax, values: np.ndarray, label: str) -> None:
    x = np.sort(values)
    y = np.arange(1, len(x) + 1) / len(x)
    ax.step(np.concatenate([[x[0]], x]), np.concatenate([[0.0], y]), where="post", label=label, linewidth=1.6)


def cost_cdfs(costs: Mapping[str, np.ndarray], path: Path, harm: Mapping[str, np.ndarray] | None = None) -> Path:
    """Cost CDFs of all models on one axis (+ hidden-harm CDFs on a second axis when given)."""
    panels = [("cost model", costs, "cost")] + ([("hidden ground-truth harm", harm, "harm")] if harm else [])
    fig = Figure(figsize=(6.2 * len(panels), 4.4), layout="constrained")
    for k, (title, data, xlabel) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        for name, values in data.items():
            v = np.asarray(values, dtype=np.float64)
            _ecdf(ax, v, f"{name} (safe {100 * np.mean(v <= 0):.0f}%)")
        ax.axvline(0.0, color="black", linestyle="--", linewidth=1)
        # Above the frame, where no curve can run through them.
        for label, ha in (("\u2190 safe ", "right"), (" unsafe \u2192", "left")):
            ax.annotate(label, xy=(0.0, 1.0), xycoords=("data", "axes fraction"), xytext=(0, 2),
                        textcoords="offset points", fontsize=8, ha=ha, va="bottom")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("fraction of responses with value \u2264 x")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"CDF of the {title}", pad=14)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right" if k == 0 and not harm else "best")
    return _save(fig, path)


def weighted_gap(red: np.ndarray, blue: np.ndarray, weighting: str, grid: int = _GRID) -> tuple[np.ndarray, np.ndarray]:
    """(t, w(t) (Q_red(t) - Q_blue(t))) at cell midpoints of [0, 1]."""
    t = (np.arange(grid) + 0.5) / grid
    w = as_weighting(weighting).density(torch.as_tensor(t, dtype=torch.float64)).numpy()
    return t, w * (empirical_quantile(red, t) - empirical_quantile(blue, t))


def quantile_gaps(pairs: Sequence[tuple[str, np.ndarray, np.ndarray]], weightings: Sequence[str],
                  dominance: Mapping[tuple[str, str], float], path: Path, what: str = "cost") -> Path:
    """``pairs``: (competition label, red values, blue values); ``dominance[(label, weighting)]`` = DD."""
    ncols = min(4, len(weightings) + 1)
    nrows = math.ceil((len(weightings) + 1) / ncols)
    fig = Figure(figsize=(3.9 * ncols, 3.1 * nrows), layout="constrained")
    colors = [f"C{i % 10}" for i in range(len(pairs))]
    for k, spec in enumerate(weightings):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        for (label, red, blue), color in zip(pairs, colors):
            t, g = weighted_gap(red, blue, spec)
            ax.plot(t, g, color=color, linewidth=1.3, label=f"DD {dominance[(label, spec)]:+.3f}")
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xlabel("quantile level t", fontsize=9)
        if k % ncols == 0:
            ax.set_ylabel("w(t)(Q_red(t) \u2212 Q_blue(t))", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        # Above the frame (titled with the weighting), where it cannot hide a gap curve.
        ax.legend(title=spec + (" (unweighted)" if as_weighting(spec).spec == "uniform" else ""),
                  title_fontproperties={"size": 10}, fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0),
                  ncols=min(3, len(pairs)), frameon=False, handlelength=1.2, columnspacing=1.0, borderaxespad=0.2)
    key = fig.add_subplot(nrows, ncols, len(weightings) + 1)
    key.axis("off")
    key.legend(handles=[key.plot([], [], color=c, linewidth=2)[0] for c in colors],
               labels=[label for label, _, _ in pairs], title="red vs blue", loc="center",
               bbox_to_anchor=(0.5, 0.62), fontsize=9)
    key.text(0.5, 0.02, f"{what}: above 0 = blue's quantile lower (safer);\n"
                        "DD = area = rho_w(red) \u2212 rho_w(blue)", ha="center", va="bottom", fontsize=8,
             transform=key.transAxes)
    fig.suptitle(f"Weighted quantile gaps of the {what} per spectral weighting", fontsize=12)
    return _save(fig, path)


def pareto_front(points: Sequence[Mapping]) -> list[Mapping]:
    """The non-dominated points (lower x, higher y), sorted by x."""
    best, front = -math.inf, []
    for p in sorted(points, key=lambda p: (p["x"], -p["y"])):
        if p["y"] > best:
            front.append(p)
            best = p["y"]
    return front


def pareto_fronts(series: Mapping[str, Mapping[str, Sequence[Mapping]]], x_labels: Mapping[str, str],
                  y_name: str, path: Path) -> Path:
    """One panel per tail measure: every algorithm's settings (mean, CI error bars) and its Pareto front.

    ``series[measure][algorithm]`` = points ``{setting, x, x_err, y, y_err}`` (NaN errors: no bar).
    """
    fig = Figure(figsize=(6.4 * len(series), 4.8), layout="constrained")
    for k, (measure, algos) in enumerate(series.items()):
        ax = fig.add_subplot(1, len(series), k + 1)
        for i, (algo, points) in enumerate(algos.items()):
            color = f"C{i % 10}"
            x, y = np.array([p["x"] for p in points]), np.array([p["y"] for p in points])
            xerr = np.nan_to_num(np.array([p["x_err"] for p in points], dtype=np.float64))
            yerr = np.nan_to_num(np.array([p["y_err"] for p in points], dtype=np.float64))
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", color=color, capsize=3, label=algo)
            front = pareto_front(points)
            ax.plot([p["x"] for p in front], [p["y"] for p in front], color=color, linewidth=1.2, alpha=0.7)
            for p in points:
                ax.annotate(p["setting"], (p["x"], p["y"]), xytext=(4, 4), textcoords="offset points",
                            fontsize=7, color=color)
        ax.axhline(0.5, color="black", linestyle=":", linewidth=0.8)
        ax.set_xlabel(x_labels.get(measure, measure))
        ax.set_ylabel(f"{y_name} vs SFT (higher is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="algorithm (line: Pareto front)", title_fontsize=8)
    fig.suptitle("Reward vs tail of the cost per setting (mean over seeds, 95 % t-intervals)", fontsize=11)
    return _save(fig, path)
