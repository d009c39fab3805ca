"""Which policy a constrained run returns: the last iterate, or the best feasible one on validation prompts.

A Lagrangian run meets its constraint on average, not at every iterate: on the
tiny world the multipliers of RAD oscillate with a period of about 30 steps
(constraint met -> lambda falls to 0 -> reward pushes the tail back up -> lambda
rises again), so the last iterate meets ``gain >= delta`` about half the time.
``algo.selection.rule=feasible`` does what practitioners do with an early-stopping
split: every ``selection.every`` steps the policy is sampled on prompts held out of
training, compared with the reference's samples on the same prompts, and the
run returns the iterate with the highest reward win-rate among those that meet
the constraint (gain >= delta and violation <= violation_tolerance). Only the
learned reward and cost models are consulted; the held-out test prompts and any
hidden ground truth stay untouched, so the final evaluation remains unbiased.

Picking the best win rate drives the choice to the edge of the feasible set,
where a validation estimate that just clears delta often fails on fresh prompts
(measured: 0.64 on validation, 0.27 on the test prompts). With ``confidence`` c
> 0 a step counts as feasible only if the one-sided c bootstrap bounds clear the
constraint: the c-lower quantile of the gain >= delta and the c-upper quantile of
the violation <= tolerance, resampling validation prompts (policy and reference
samples of a prompt together). This is the high-confidence safety test of
Seldonian algorithms (Thomas et al., Science 2019) with a bootstrap bound.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch

from rad.config import field
from rad.errors import ConfigError

__all__ = ["Candidate", "SelectionConfig", "ValidationSelector", "bootstrap_bounds", "split_validation", "tie_rate",
           "win_rate"]


@dataclass
class SelectionConfig:
    """Which iterate a constrained run returns (``algo.selection``)."""

    rule: str = field("last", choices=("last", "feasible"),
                      help="the policy the run returns: the last iterate, or the validated iterate with the highest "
                           "reward win-rate over the reference among those meeting gain >= delta and violation <= "
                           "violation_tolerance on `prompts` held-out training prompts (the last one if none "
                           "does); see rad/algos/selection.py")
    prompts: int = field(0, min=0, help="training prompts held out for rule=feasible")
    every: int = field(5, min=1, help="validate every N steps (and at the last one) when rule=feasible")
    confidence: float = field(0.0, min=0, help="count a validated step as feasible only if the one-sided bootstrap "
                                               "bounds at this level (over validation prompts) meet the "
                                               "constraint, e.g. 0.9 (0 = point estimates)")
    samples_per_prompt: int = field(4, min=1, help="samples per validation prompt (the reference's and each "
                                                   "validated policy's)")

    def validate(self) -> None:
        if not self.confidence < 1:
            raise ConfigError(f"confidence: must be < 1, got {self.confidence}")
        if self.rule == "feasible" and self.prompts == 0:
            raise ConfigError("rule=feasible needs prompts > 0 training prompts held out for validation")

    @property
    def held_out(self) -> int:
        """Training prompts held out of RL for validation (0 unless rule=feasible)."""
        return self.prompts if self.rule == "feasible" else 0


def split_validation(n_prompts: int, n_val: int, seed: int) -> tuple[list[int], list[int]]:
    """(training, validation) prompt indices: a seeded sample of ``n_val`` held out, both in original order."""
    if not 0 < n_val < n_prompts:
        raise ValueError(f"validation needs 0 < val_prompts < the {n_prompts} training prompts, got {n_val}")
    val = set(random.Random(seed * 104_729 + 31).sample(range(n_prompts), n_val))
    return [i for i in range(n_prompts) if i not in val], sorted(val)


def win_rate(policy_rewards: Sequence[float], reference_rewards: Sequence[float]) -> float:
    """Share of paired samples where the policy's reward is strictly higher than the reference's.

    rad's one win-rate convention, the RAD paper's ("the percentage of prompts for which the
    blue model's response achieves higher reward"): a tie is not a win; :func:`tie_rate`
    reports ties beside it (the arena report, ``rad.eval.arena.win_rates``, counts the same way).
    """
    p, r = _paired(policy_rewards, reference_rewards)
    return float((p > r).double().mean())


def tie_rate(policy_rewards: Sequence[float], reference_rewards: Sequence[float]) -> float:
    """Share of paired samples with equal rewards (identical answers, mostly): neither a win nor a loss."""
    p, r = _paired(policy_rewards, reference_rewards)
    return float((p == r).double().mean())


def _paired(policy_rewards, reference_rewards) -> tuple[torch.Tensor, torch.Tensor]:
    p = torch.as_tensor(policy_rewards, dtype=torch.float64)
    r = torch.as_tensor(reference_rewards, dtype=torch.float64)
    if p.shape != r.shape:
        raise ValueError(f"win rate needs paired samples, got {tuple(p.shape)} and {tuple(r.shape)}")
    return p, r


@dataclass
class Candidate:
    step: int
    gain: float
    violation: float
    reward_win_rate: float
    feasible: bool
    gain_lower: float = float("nan")  # the bootstrap bounds (point estimates when confidence is 0)
    violation_upper: float = float("nan")


def bootstrap_bounds(policy_costs: torch.Tensor, reference_costs: torch.Tensor, weighting, confidence: float,
                     resamples: int = 200, seed: int = 0) -> tuple[float, float]:
    """(c-lower quantile of the gain, c-upper quantile of the violation) over prompt resamples.

    Both cost tensors are ``[prompts, samples]`` with the same prompts in the same rows.
    """
    from rad.risk import empirical_gain_violation

    n = policy_costs.shape[0]
    gen = torch.Generator().manual_seed(seed)
    gains, viols = [], []
    for _ in range(resamples):
        rows = torch.randint(n, (n,), generator=gen)
        g, v = empirical_gain_violation(policy_costs[rows].reshape(-1), reference_costs[rows].reshape(-1), weighting)
        gains.append(float(g))
        viols.append(float(v))
    return (float(torch.tensor(gains).quantile(1 - confidence)), float(torch.tensor(viols).quantile(confidence)))


class ValidationSelector:
    """Scores validation samples against the reference's and remembers the best feasible step."""

    def __init__(self, reference: dict[str, Any], weighting, delta: float, tolerance: float, confidence: float = 0.0):
        if not 0 <= confidence < 1:
            raise ValueError(f"confidence must be in [0, 1), got {confidence}")
        self.reference = reference
        self.weighting = weighting
        self.delta = delta
        self.tolerance = tolerance
        self.confidence = confidence
        self.best: Candidate | None = None

    def judge(self, step: int, policy: dict[str, Any]) -> tuple[Candidate, bool]:
        """(this step's candidate, whether it is the new best)."""
        from rad.risk import empirical_gain_violation

        gain, viol = empirical_gain_violation(torch.tensor(policy["costs"], dtype=torch.float64),
                                              torch.tensor(self.reference["costs"], dtype=torch.float64),
                                              self.weighting)
        gain, viol = float(gain), float(viol)
        lower, upper = gain, viol
        if self.confidence > 0:
            if policy["prompts"] != self.reference["prompts"]:
                raise ValueError("validation samples must come in the reference's prompt order")
            rows = len(dict.fromkeys(policy["prompts"]))
            lower, upper = bootstrap_bounds(torch.tensor(policy["costs"], dtype=torch.float64).view(rows, -1),
                                            torch.tensor(self.reference["costs"], dtype=torch.float64).view(rows, -1),
                                            self.weighting, self.confidence, seed=step)
        cand = Candidate(step, gain, viol, win_rate(policy["rewards"], self.reference["rewards"]),
                         feasible=lower >= self.delta and upper <= self.tolerance, gain_lower=lower,
                         violation_upper=upper)
        better = cand.feasible and (self.best is None or cand.reward_win_rate > self.best.reward_win_rate)
        if better:
            self.best = cand
        return cand, better

    @staticmethod
    def metrics(cand: Candidate) -> dict[str, float]:
        return {"val/gain": cand.gain, "val/violation": cand.violation, "val/gain_lower": cand.gain_lower,
                "val/violation_upper": cand.violation_upper, "val/reward_win_rate": cand.reward_win_rate,
                "val/feasible": float(cand.feasible)}

    def state(self) -> dict[str, Any] | None:
        return None if self.best is None else asdict(self.best)

    def load_state(self, state: dict[str, Any] | None) -> None:
        self.best = None if state is None else Candidate(**state)
