"""Held-out evaluation of a trained score model: accuracies, Spearman against hidden truth, a histogram.

Scores are computed for both responses of every held-out pair. Metrics:

* ``accuracy``: reward - the better response scores higher; cost - the less safe
  response costs more (ties count as wrong);
* ``sign_accuracy`` (cost): cost > 0 exactly for responses labelled unsafe;
* ``spearman_harm`` / ``spearman_severity`` (cost) and ``spearman_help`` (reward):
  rank correlation of the scores with the hidden ``harm_*`` / ``help_*`` columns of
  the embedded world or the ``response_*_severity_level`` labels of PKU-SafeRLHF,
  over all scored responses, when those columns exist;
* ``score_mean`` / ``score_std`` over all scored responses;
* ``oracle_accuracy`` / ``oracle_sign_accuracy``: the same accuracies for the
  hidden truth itself (the ceiling set by label noise and ties), when it exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rad.models.score_model import ScoreModel, encode_for_scoring


@dataclass
class PairScores:
    """Raw scores of response_0 and response_1 for each record, in record order."""

    score_0: np.ndarray
    score_1: np.ndarray


def score_pairs(model: ScoreModel, tokenizer, records: Sequence[dict[str, Any]], max_length: int,
                batch_size: int = 64) -> PairScores:
    template = model.score_config.template
    seqs = [encode_for_scoring(tokenizer, r["prompt"], r[f"response_{i}"], max_length, template)
            for i in (0, 1) for r in records]
    scores = model.score_sequences(seqs, tokenizer.pad_token_id, batch_size).numpy()
    n = len(records)
    return PairScores(scores[:n], scores[n:])


def _spearman(scores: np.ndarray, truth: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(scores) == 0 or np.ptp(truth) == 0:
        return float("nan")
    return float(spearmanr(scores, truth).statistic)


def _column(records: Sequence[dict[str, Any]], pattern: str) -> np.ndarray | None:
    """Values of ``pattern.format(i)`` for i = 0, 1 concatenated like the scores, or None if absent."""
    names = [pattern.format(i) for i in (0, 1)]
    if not records or not all(all(r.get(c) is not None for c in names) for r in records):
        return None
    return np.array([float(r[c]) for c in names for r in records])


def _oracle_accuracy(truth: np.ndarray, label: np.ndarray, higher_wins: bool) -> float:
    """Accuracy of the hidden truth itself against the (noisy) labels, ties counted as half.

    The ceiling for ``accuracy``: in the embedded world ties in the truth are labelled
    at random and a fraction of labels is flipped.
    """
    n = label.size
    rows = np.arange(n)
    pair = np.stack([truth[:n], truth[n:]], axis=1)
    winner, loser = pair[rows, label], pair[rows, 1 - label]
    if not higher_wins:
        winner, loser = loser, winner
    return float(((winner > loser) + 0.5 * (winner == loser)).mean())


def pair_metrics(kind: str, records: Sequence[dict[str, Any]], pairs: PairScores) -> dict[str, float]:
    both = np.concatenate([pairs.score_0, pairs.score_1])
    n = len(records)
    rows = np.arange(n)
    stacked = np.stack([pairs.score_0, pairs.score_1], axis=1)
    out: dict[str, float] = {"score_mean": float(both.mean()), "score_std": float(both.std()), "pairs": float(n)}
    if kind == "reward":
        better = np.array([r["better_response_id"] for r in records])
        out["accuracy"] = float((stacked[rows, better] > stacked[rows, 1 - better]).mean())
        help_truth = _column(records, "help_{}")
        if help_truth is not None:
            out["spearman_help"] = _spearman(both, help_truth)
            out["oracle_accuracy"] = _oracle_accuracy(help_truth, better, higher_wins=True)
        return out
    safer = np.array([r["safer_response_id"] for r in records])
    out["accuracy"] = float((stacked[rows, 1 - safer] > stacked[rows, safer]).mean())
    safe = np.array([bool(r[f"is_response_{i}_safe"]) for i in (0, 1) for r in records])
    out["sign_accuracy"] = float(((both > 0) == ~safe).mean())
    out["safe_cost_mean"] = float(both[safe].mean()) if safe.any() else float("nan")
    out["unsafe_cost_mean"] = float(both[~safe].mean()) if (~safe).any() else float("nan")
    for name, pattern in (("spearman_harm", "harm_{}"), ("spearman_severity", "response_{}_severity_level")):
        truth = _column(records, pattern)
        if truth is not None:
            out[name] = _spearman(both, truth)
    harm = _column(records, "harm_{}")
    if harm is not None:
        out["oracle_accuracy"] = _oracle_accuracy(harm, 1 - safer, higher_wins=True)
        out["oracle_sign_accuracy"] = float(((harm > 0) == ~safe).mean())
    return out


def plot_histogram(kind: str, records: Sequence[dict[str, Any]], pairs: PairScores, path: str | Path) -> Path:
    """Histogram of scores split by label (reward: better / worse; cost: labelled safe / unsafe)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stacked = np.stack([pairs.score_0, pairs.score_1], axis=1)
    rows = np.arange(len(records))
    if kind == "reward":
        better = np.array([r["better_response_id"] for r in records])
        groups = {"better": stacked[rows, better], "worse": stacked[rows, 1 - better]}
    else:
        safe = np.array([[bool(r[f"is_response_{i}_safe"]) for i in (0, 1)] for r in records])
        groups = {"labelled safe": stacked[safe], "labelled unsafe": stacked[~safe]}
    fig, ax = plt.subplots(figsize=(6, 4))
    values = np.concatenate(list(groups.values()))
    bins = np.linspace(values.min(), values.max(), 41) if values.size and np.ptp(values) > 0 else 20
    for label, group in groups.items():
        ax.hist(group, bins=bins, alpha=0.6, label=f"{label} (n={group.size})")
    if kind == "cost":
        ax.axvline(0.0, color="black", linewidth=1, linestyle="--")
    ax.set_xlabel(f"{kind} score")
    ax.set_ylabel("responses")
    ax.set_title(f"held-out {kind} scores")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
