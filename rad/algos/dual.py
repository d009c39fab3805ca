"""Dual controllers: how a constrained RL step turns constraint estimates into multipliers.

A constrained step maximises ``J(theta)`` subject to constraints ``g_i(theta) <= 0`` (RAD:
``g_1 = delta - gain_w``, ``g_2 = viol_w - tolerance``; Safe RLHF: ``g = Jc - d``). Every
controller here has one interface::

    applied = controller.observe(g)   # this step's estimates g_i  ->  the multipliers for this step's
                                      # primal gradient, sum_i applied_i * grad g_i; the state moves on
    controller.state_dict() / load_state_dict(state)          # checkpointed with the run

``observe`` is called once per step, after the step's constraint estimates are known and before
the policy update that uses the returned multipliers (RAD knows ``g`` from the step's own cost
batch before its learner step). The controllers:

``projected``  plain projected dual ascent, the RAD paper's rule:
               apply ``lambda_t``, then ``lambda_{t+1} = clip(lambda_t + lr g_t, 0, max)``.
               Gradient descent-ascent on a Lagrangian that is linear in the policy's action
               probabilities circles the saddle point instead of converging to it (the
               constraint is met -> lambda falls to 0 -> the reward pushes the constraint
               back -> lambda rises ...): the last iterate does not hold the constraint.
``log_sgd``    Safe RLHF's rule: SGD on ``log lambda`` with gradient ``-g lambda``, i.e.
               ``log lambda_{t+1} = log lambda_t + lr g_t lambda_t`` (capped at max); the same
               dynamics in log space, so it circles as well, with multiplicative swings.
``pi``         a PI controller (Stooke, Achiam and Abbeel 2020): the integral is the projected
               ascent state, and the multiplier applied adds a proportional term of this
               step's error, ``clip(I_t + kp g_t, 0, max)``. The proportional term damps the
               cycle.
``augmented``  the augmented Lagrangian in Rockafellar's form for inequalities: the primal
               objective carries ``-(1/(2 rho)) (max(0, lambda + rho g)^2 - lambda^2)``, whose
               gradient is ``max(0, lambda + rho g) grad g``; so the multiplier applied is
               ``max(0, lambda_t + rho g_t)``, which is positive *before* the constraint is
               violated (as soon as ``g > -lambda / rho``), and the dual state takes the
               method-of-multipliers step ``lambda_{t+1} = clip(lambda_t + lr g_t, 0, max)``
               (``lr = rho`` is the textbook choice; a smaller ``lr`` is the stochastic one).
               Projected onto ``[0, max]`` this is exactly ``pi`` with ``kp = rho``: the
               gradient of the augmented penalty is a proportional term (Stooke et al. make
               the same observation); the two names are kept for the two readings.
``optimistic`` optimistic (extrapolated) dual ascent: ``lambda_{t+1} = clip(lambda_t + lr (g_t +
               a (g_t - g_{t-1})), 0, max)``. With ``a = 1`` it is optimistic gradient ascent
               (Daskalakis et al. 2018), which makes descent-ascent on a bilinear saddle converge
               when *both* players extrapolate; here only the dual side does, and on the toy
               problem of the tests ``a = 1`` still circles while ``a >= 5`` converges (the
               extrapolation then acts as a derivative term on the constraint).
``barrier``    an interior-point log barrier ``mu_t log(-g)``: the multiplier applied is
               ``mu_t / max(-g_t, floor)`` (capped at max; ``max`` itself when ``g >= 0``), with
               ``mu_t = mu_0 decay^t`` shrinking towards ``mu_min``. It has no dual state beyond
               the step count: it keeps the iterate feasible and approaches the constrained
               optimum from inside as ``mu`` shrinks (to a slack of about ``mu_min / lambda*``).

Every controller keeps one multiplier per constraint and is tested on a small constrained
problem with a known optimum in ``tests/algos/test_dual_controllers.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from rad.config import field
from rad.errors import ConfigError


@dataclass
class DualConfig:
    """How the multipliers follow the constraints (``algo.dual`` in RAD's config): ``lambda`` on the gain
    constraint ``gain_w >= delta``, ``mu`` on the violation constraint ``viol_w <= tolerance`` (on when
    ``mu_init > 0`` or ``mu_lr > 0``)."""

    controller: str = field("projected", choices=("projected", "log_sgd", "pi", "augmented", "optimistic",
                                                  "barrier"),
                            help="the dual controller; see rad/algos/dual.py")
    lambda_init: float = field(1.0, min=0, help="initial lambda")
    lambda_lr: float = field(0.5, min=0, help="dual step size of lambda (projected, log_sgd, pi's integral, "
                                              "augmented, optimistic)")
    mu_init: float = field(0.0, min=0, help="initial mu (Cor. 3 asks for viol = 0 besides gain >= delta)")
    mu_lr: float = field(0.0, min=0, help="dual step size of mu (0 with mu_init 0 = the paper's Lagrangian, gain "
                                          "only; a policy that trails at every weighted quantile then gets no "
                                          "dominance gradient at all)")
    max: float = field(20.0, gt=0, help="cap of every multiplier applied")
    window: int = field(1, min=1, help="the multipliers follow gain and violation of the costs pooled over the last "
                                       "N steps (like Safe RLHF's window of episode costs): a 64-sample batch holds "
                                       "6 samples of a CVaR-0.9 tail")
    gain_margin: float = field(0.0, min=0, help="the controller aims at gain_w >= delta + gain_margin (the held-out "
                                                "check and selection still use delta): a batch estimate that "
                                                "hovers at delta lands below it on held-out prompts about half the "
                                                "time")
    kp: float = field(0.0, min=0, help="pi: proportional gain on this step's error (Stooke et al. 2020)")
    rho: float = field(1.0, gt=0, help="augmented: penalty coefficient of the augmented Lagrangian")
    optimism: float = field(1.0, min=0, help="optimistic: weight a of the extrapolation lr (g_t + a (g_t - "
                                             "g_{t-1})); 1 = optimistic gradient ascent")
    barrier_mu: float = field(1.0, gt=0, help="barrier: initial barrier weight mu_0")
    barrier_decay: float = field(0.99, gt=0, max=1, help="barrier: mu_t = mu_0 * decay^t")
    barrier_mu_min: float = field(0.01, gt=0, help="barrier: floor of mu_t")
    barrier_floor: float = field(0.001, gt=0, help="barrier: smallest slack -g the barrier divides by")

    @property
    def mu_on(self) -> bool:
        return self.mu_init > 0 or self.mu_lr > 0

    def validate(self) -> None:
        if self.controller == "log_sgd" and (self.lambda_init <= 0 or (self.mu_on and self.mu_init <= 0)):
            raise ConfigError("dual.controller=log_sgd needs dual.lambda_init > 0 (and dual.mu_init > 0 when mu is "
                              "on): lambda = exp(log_lambda)")


def _clip(value: float, cap: float) -> float:
    return float(min(max(value, 0.0), cap))


class DualController:
    """Base of the controllers: one multiplier per constraint, ``observe`` -> multipliers applied."""

    def __init__(self, inits: Sequence[float], lrs: Sequence[float], cap: float):
        if len(inits) != len(lrs):
            raise ValueError(f"{len(inits)} initial multipliers for {len(lrs)} step sizes")
        self.lam = [float(x) for x in inits]
        self.lrs = [float(x) for x in lrs]
        self.cap = float(cap)
        self.steps = 0

    def observe(self, g: Sequence[float]) -> list[float]:
        g = [float(x) for x in g]
        if len(g) != len(self.lam):
            raise ValueError(f"{type(self).__name__}: {len(g)} constraint estimates for {len(self.lam)} multipliers")
        applied = self._observe(g)
        self.steps += 1
        return applied

    def _observe(self, g: list[float]) -> list[float]:
        raise NotImplementedError

    def ascend(self, g: Sequence[float]) -> None:
        """The projected dual-ascent step of every multiplier."""
        self.lam = [projected_ascent(x, gi, lr, self.cap) for x, gi, lr in zip(self.lam, g, self.lrs)]

    @property
    def multipliers(self) -> list[float]:
        """The dual state."""
        return list(self.lam)

    def state_dict(self) -> dict[str, Any]:
        return {"lam": list(self.lam), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lam = [float(x) for x in state["lam"]]
        self.steps = int(state["steps"])


def projected_ascent(lam: float, g: float, lr: float, cap: float) -> float:
    """One projected dual-ascent step ``clip(lam + lr g, 0, cap)`` on a constraint ``g <= 0``."""
    return _clip(lam + lr * g, cap)


class ProjectedAscent(DualController):
    """Apply ``lambda_t``; then ``lambda_{t+1} = clip(lambda_t + lr g_t, 0, max)`` (the RAD paper)."""

    def _observe(self, g):
        applied = [_clip(x, self.cap) for x in self.lam]
        self.ascend(g)
        return applied


def log_lambda_step(log_lambda: float, g: float, lr: float, log_cap: float | None = None) -> float:
    """Safe RLHF's step: SGD on ``log_lambda`` for the loss ``-g exp(log_lambda)`` (gradient ``-g lambda``),
    capped at ``log_cap``. ``g`` is the constraint value, ``Jc - d`` for an expected-cost budget."""
    new = log_lambda + lr * g * math.exp(log_lambda)
    return new if log_cap is None else min(new, log_cap)


class LogLambdaSGD(DualController):
    """Safe RLHF's multiplier: ``lambda = exp(log_lambda)``, positive without a lower clamp."""

    def __init__(self, inits: Sequence[float], lrs: Sequence[float], cap: float):
        if any(x <= 0 for x in inits):
            raise ConfigError(f"log-lambda SGD needs initial multipliers > 0, got {list(inits)}")
        super().__init__(inits, lrs, cap)

    def _observe(self, g):
        applied = list(self.lam)
        log_cap = math.log(self.cap)
        self.lam = [math.exp(log_lambda_step(math.log(x), gi, lr, log_cap)) for x, gi, lr in zip(self.lam, g, self.lrs)]
        return applied


class PIController(DualController):
    """Integral = the projected-ascent state; applied = integral + ``kp`` x this step's error, clipped."""

    def __init__(self, inits: Sequence[float], lrs: Sequence[float], cap: float, kp: float):
        super().__init__(inits, lrs, cap)
        self.kp = kp

    def _observe(self, g):
        applied = [_clip(x + self.kp * gi, self.cap) for x, gi in zip(self.lam, g)]
        self.ascend(g)
        return applied


class AugmentedLagrangian(DualController):
    """Rockafellar's augmented Lagrangian: applied ``max(0, lambda + rho g)``; dual step ``lambda + lr g``."""

    def __init__(self, inits: Sequence[float], lrs: Sequence[float], cap: float, rho: float):
        super().__init__(inits, lrs, cap)
        self.rho = rho

    def _observe(self, g):
        applied = [_clip(x + self.rho * gi, self.cap) for x, gi in zip(self.lam, g)]
        self.ascend(g)
        return applied


class OptimisticAscent(DualController):
    """Optimistic dual ascent: apply ``lambda_t``; then ``lambda_t + lr (g_t + a (g_t - g_{t-1}))``, projected."""

    def __init__(self, inits: Sequence[float], lrs: Sequence[float], cap: float, optimism: float):
        super().__init__(inits, lrs, cap)
        self.optimism = optimism
        self.last_g: list[float] | None = None

    def _observe(self, g):
        applied = [_clip(x, self.cap) for x in self.lam]
        prev = self.last_g if self.last_g is not None else g
        self.ascend([gi + self.optimism * (gi - pi) for gi, pi in zip(g, prev)])
        self.last_g = g
        return applied

    def state_dict(self):
        return {**super().state_dict(), "last_g": self.last_g}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.last_g = state.get("last_g")


class LogBarrier(DualController):
    """Interior-point log barrier ``mu_t log(-g)``: applied ``mu_t / max(-g, floor)`` (the cap once infeasible)."""

    def __init__(self, n: int, cap: float, mu0: float, decay: float, mu_min: float, floor: float):
        super().__init__([0.0] * n, [0.0] * n, cap)
        self.mu0, self.decay, self.mu_min, self.floor = mu0, decay, mu_min, floor

    def barrier_weight(self) -> float:
        return max(self.mu0 * self.decay ** self.steps, self.mu_min)

    def _observe(self, g):
        mu = self.barrier_weight()
        self.lam = [self.cap if gi >= 0 else _clip(mu / max(-gi, self.floor), self.cap) for gi in g]
        return list(self.lam)


def make_controller(cfg: DualConfig, inits: Sequence[float], lrs: Sequence[float]) -> DualController:
    """The controller ``cfg.controller`` with one multiplier per entry of ``inits`` (step sizes ``lrs``)."""
    kind = cfg.controller
    if kind == "projected":
        return ProjectedAscent(inits, lrs, cfg.max)
    if kind == "log_sgd":
        return LogLambdaSGD(inits, lrs, cfg.max)
    if kind == "pi":
        return PIController(inits, lrs, cfg.max, cfg.kp)
    if kind == "augmented":
        return AugmentedLagrangian(inits, lrs, cfg.max, cfg.rho)
    if kind == "optimistic":
        return OptimisticAscent(inits, lrs, cfg.max, cfg.optimism)
    if kind == "barrier":
        return LogBarrier(len(inits), cfg.max, cfg.barrier_mu, cfg.barrier_decay, cfg.barrier_mu_min,
                          cfg.barrier_floor)
    raise ConfigError(f"dual.controller: unknown controller {kind!r}")


def rad_controller(cfg: DualConfig) -> DualController:
    """RAD's controller: lambda on ``g_1 = delta - gain``, and mu on ``g_2 = viol - tolerance`` when on."""
    if cfg.mu_on:
        return make_controller(cfg, [cfg.lambda_init, cfg.mu_init], [cfg.lambda_lr, cfg.mu_lr])
    return make_controller(cfg, [cfg.lambda_init], [cfg.lambda_lr])
