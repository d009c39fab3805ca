"""The Lagrange multiplier of Safe RLHF: ``lambda = exp(log_lambda)``, SGD on ``-(Jc - d) * lambda``.

``Jc`` is the mean of a sliding window of the most recent episode costs (raw
cost-model scores of whole responses, no KL). Each update step takes one SGD step
on ``log_lambda`` for the loss ``-(Jc - threshold) * exp(log_lambda)``, whose
gradient is ``-(Jc - d) * lambda``, so

    log_lambda <- log_lambda + lr * (Jc - d) * lambda,

i.e. lambda grows while the expected cost is above the threshold and shrinks
below it; it is then clamped to ``lambda <= lambda_max``. Being an exponential,
lambda stays positive without a lower clamp. Updates start after
``delay_steps`` update steps (the reference's ``lambda_update_delay_steps``,
counted in PPO updates, as the reference counts its ``global_step``).

Reading chosen for several workers: the reference keeps one window per GPU of
``episode_cost_window_size`` costs and averages the per-GPU means. Here the
controller sees every rollout, so there is one window over all of them; to
reproduce an N-GPU reference run, set the window to N times the reference's.

The step itself is :func:`rad.algos.dual.log_lambda_step`, which RAD's ``log_sgd`` dual
controller uses too.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Iterable

from rad.algos.dual import log_lambda_step


class LagrangeMultiplier:
    """The multiplier's state: ``log_lambda``, the window of episode costs, the update counter."""

    def __init__(self, lambda_init: float = 1.0, lr: float = 0.1, lambda_max: float = 5.0,
                 threshold: float = 0.0, window: int = 128, delay_steps: int = 0):
        if lambda_init <= 0:
            raise ValueError(f"lambda_init must be > 0 (lambda = exp(log_lambda)), got {lambda_init}")
        self.log_lambda = math.log(lambda_init)
        self.lr = lr
        self.log_lambda_max = math.log(lambda_max) if lambda_max > 0 else None
        self.threshold = threshold
        self.delay_steps = delay_steps
        self.costs: deque[float] = deque(maxlen=window)
        self.updates = 0  # update steps seen, applied or delayed

    @property
    def value(self) -> float:
        return math.exp(self.log_lambda)

    def observe(self, costs: Iterable[float]) -> None:
        """Add the episode costs of new rollouts to the window."""
        self.costs.extend(float(c) for c in costs)

    def episode_cost(self) -> float:
        """``Jc``: the mean of the window."""
        if not self.costs:
            raise ValueError("no episode costs observed yet")
        return sum(self.costs) / len(self.costs)

    def step(self) -> float:
        """One update step (a no-op during the delay); returns the ``Jc`` it used."""
        jc = self.episode_cost()
        if self.updates >= self.delay_steps:
            self.log_lambda = log_lambda_step(self.log_lambda, jc - self.threshold, self.lr, self.log_lambda_max)
        self.updates += 1
        return jc

    def state_dict(self) -> dict[str, Any]:
        return {"log_lambda": self.log_lambda, "costs": list(self.costs), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.log_lambda = float(state["log_lambda"])
        self.costs.clear()
        self.costs.extend(state["costs"])
        self.updates = int(state["updates"])
