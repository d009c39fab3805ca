"""Which policy a constrained run returns: the last iterate, or the best feasible one on validation prompts.

A Lagrangian run meets its constraint on average, not at every iterate: on the
tiny world the multipliers of RAD oscillate with a period of about 30 steps
(constraint met -> lambda falls to 0 -> reward pushes the tail back up -> lambda
rises again), so the last iterate meets ``gain >= delta`` about half the time.
``algo.select=feasible`` does what practitioners do with an early-stopping
split: every ``val_every`` steps the policy is sampled on prompts held out of
training, compared with the reference's samples on the same prompts, and the
run returns the iterate with the highest reward win-rate among those that meet
the constraint (gain >= delta and violation <= violation_tolerance). Only the
learned reward and cost models are consulted; the held-out test prompts and any
hidden ground truth stay untouched, so the final evaluation remains unbiased.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch

__all__ = ["Candidate", "ValidationSelector", "split_validation", "win_rate"]


def split_validation(n_prompts: int, n_val: int, seed: int) -> tuple[list[int], list[int]]:
    """(training, validation) prompt indices: a seeded sample of ``n_val`` held out, both in original order."""
    if not 0 < n_val < n_prompts:
        raise ValueError(f"validation needs 0 < val_prompts < the {n_prompts} training prompts, got {n_val}")
    val = set(random.Random(seed * 104_729 + 31).sample(range(n_prompts), n_val))
    return [i for i in range(n_prompts) if i not in val], sorted(val)


def win_rate(policy_rewards: Sequence[float], reference_rewards: Sequence[float]) -> float:
    """Share of paired samples where the policy's reward beats the reference's (ties count half)."""
    p = torch.as_tensor(policy_rewards, dtype=torch.float64)
    r = torch.as_tensor(reference_rewards, dtype=torch.float64)
    if p.shape != r.shape:
        raise ValueError(f"win rate needs paired samples, got {tuple(p.shape)} and {tuple(r.shape)}")
    return float(((p > r).double() + 0.5 * (p == r).double()).mean())


@dataclass
class Candidate:
    step: int
    gain: float
    violation: float
    reward_win_rate: float
    feasible: bool


class ValidationSelector:
    """Scores validation samples against the reference's and remembers the best feasible step."""

    def __init__(self, reference: dict[str, Any], weighting, delta: float, tolerance: float):
        self.reference = reference
        self.weighting = weighting
        self.delta = delta
        self.tolerance = tolerance
        self.best: Candidate | None = None

    def judge(self, step: int, policy: dict[str, Any]) -> tuple[Candidate, bool]:
        """(this step's candidate, whether it is the new best)."""
        from rad.risk import empirical_gain_violation

        gain, viol = empirical_gain_violation(torch.tensor(policy["costs"], dtype=torch.float64),
                                              torch.tensor(self.reference["costs"], dtype=torch.float64),
                                              self.weighting)
        gain, viol = float(gain), float(viol)
        cand = Candidate(step, gain, viol, win_rate(policy["rewards"], self.reference["rewards"]),
                         feasible=gain >= self.delta and viol <= self.tolerance)
        better = cand.feasible and (self.best is None or cand.reward_win_rate > self.best.reward_win_rate)
        if better:
            self.best = cand
        return cand, better

    @staticmethod
    def metrics(cand: Candidate) -> dict[str, float]:
        return {"val/gain": cand.gain, "val/violation": cand.violation,
                "val/reward_win_rate": cand.reward_win_rate, "val/feasible": float(cand.feasible)}

    def state(self) -> dict[str, Any] | None:
        return None if self.best is None else asdict(self.best)

    def load_state(self, state: dict[str, Any] | None) -> None:
        self.best = None if state is None else Candidate(**state)
