"""The dual controllers on a small constrained problem with a known optimum, and their single steps.

The problem: a softmax policy over three actions with rewards (1, 0.6, 0) and costs (1, 0.3, 0),
maximise E[r] subject to E[c] <= 0.2, by exact policy-gradient steps on the logits with the
multiplier the controller applies. Its optimum is a linear programme's: mix actions 2 and 3
(p = (0, 2/3, 1/3)), E[r] = 0.4, E[c] = 0.2, with multiplier 2 (at lambda = 2 actions 2 and 3 tie:
0.6 - 0.3 * 2 = 0). The Lagrangian is linear in the action probabilities, the case where plain
descent-ascent circles the saddle.
"""

import math

import pytest
import torch

from rad.algos.dual import (AugmentedLagrangian, DualConfig, LogBarrier, LogLambdaSGD, OptimisticAscent,
                            PIController, ProjectedAscent, log_lambda_step, make_controller, projected_ascent,
                            rad_controller)
from rad.algos.rad_config import RADConfig
from rad.config import load_config

REWARD = torch.tensor([1.0, 0.6, 0.0], dtype=torch.float64)
COST = torch.tensor([1.0, 0.3, 0.0], dtype=torch.float64)
BUDGET, OPT_REWARD, OPT_LAMBDA = 0.2, 0.4, 2.0


def solve(controller, steps=6000, step_size=0.5):
    """(reward, cost, multiplier applied) at every step of exact policy-gradient ascent on r - lambda c."""
    theta = torch.zeros(3, dtype=torch.float64)
    trace = []
    for _ in range(steps):
        p = torch.softmax(theta, 0)
        r, c = float(p @ REWARD), float(p @ COST)
        (lam,) = controller.observe([c - BUDGET])
        u = REWARD - lam * COST
        theta = theta + step_size * p * (u - p @ u)  # the softmax policy gradient of E_p[u]
        trace.append((r, c, lam))
    return trace


def spread(trace, last=1000):
    costs = [c for _, c, _ in trace[-last:]]
    return max(costs) - min(costs)


@pytest.mark.parametrize("name, controller", [
    ("projected", ProjectedAscent([0.0], [0.5], 20.0)),
    ("log_sgd", LogLambdaSGD([1.0], [0.5], 20.0)),
    ("optimistic a=1", OptimisticAscent([0.0], [0.5], 20.0, optimism=1.0)),
])
def test_plain_and_log_ascent_circle_the_saddle(name, controller):
    trace = solve(controller)
    assert spread(trace) > 0.15, name  # the cost still swings over most of [0, 0.3] after 5000 steps
    r, c, _ = trace[-1]
    assert abs(r - OPT_REWARD) > 0.01 or abs(c - BUDGET) > 0.01  # the last iterate is not the optimum


@pytest.mark.parametrize("name, controller, tol", [
    ("pi", PIController([0.0], [0.5], 20.0, kp=2.0), 1e-3),
    ("augmented", AugmentedLagrangian([0.0], [0.5], 20.0, rho=2.0), 1e-3),
    ("optimistic a=5", OptimisticAscent([0.0], [0.5], 20.0, optimism=5.0), 1e-3),
    ("barrier", LogBarrier(1, 20.0, mu0=1.0, decay=0.99, mu_min=0.01, floor=0.001), 0.015),
])
def test_damped_controllers_reach_the_optimum_at_the_last_iterate(name, controller, tol):
    trace = solve(controller)
    r, c, lam = trace[-1]
    assert spread(trace) < tol, name
    assert r == pytest.approx(OPT_REWARD, abs=tol) and c <= BUDGET + 1e-3, name
    assert lam == pytest.approx(OPT_LAMBDA, abs=0.05), name


def test_the_augmented_lagrangian_is_pi_with_kp_rho():
    g = [[math.sin(0.3 * t) - 0.1] for t in range(50)]
    pi, aug = PIController([1.0], [0.5], 10.0, kp=3.0), AugmentedLagrangian([1.0], [0.5], 10.0, rho=3.0)
    assert [pi.observe(x) for x in g] == [aug.observe(x) for x in g]


def test_barrier_keeps_the_iterates_feasible_once_inside():
    trace = solve(LogBarrier(1, 20.0, mu0=1.0, decay=0.99, mu_min=0.01, floor=0.001))
    first_inside = next(i for i, (_, c, _) in enumerate(trace) if c < BUDGET)
    assert all(c <= BUDGET + 1e-9 for _, c, _ in trace[first_inside:])


def test_single_steps_by_hand():
    assert projected_ascent(1.0, 0.5, lr=0.1, cap=10) == pytest.approx(1.05)
    assert projected_ascent(0.01, -5.0, lr=1.0, cap=10) == 0.0
    assert projected_ascent(9.9, 5.0, lr=1.0, cap=10) == 10.0
    assert log_lambda_step(0.0, 2.0, lr=0.1) == pytest.approx(0.2)
    assert log_lambda_step(0.0, 2.0, lr=0.1, log_cap=0.1) == pytest.approx(0.1)
    # The augmented Lagrangian pushes before the constraint is violated: g = -0.1, lambda 1, rho 2 -> 0.8.
    aug = AugmentedLagrangian([1.0], [0.5], 10.0, rho=2.0)
    assert aug.observe([-0.1]) == pytest.approx([0.8]) and aug.multipliers == pytest.approx([0.95])
    assert AugmentedLagrangian([0.0], [0.5], 10.0, rho=2.0).observe([-0.1]) == [0.0]
    pi = PIController([3.0, 1.0], [1.0, 1.0], 10.0, kp=5.0)
    assert pi.observe([0.4, -0.6]) == pytest.approx([5.0, 0.0]) and pi.multipliers == pytest.approx([3.4, 0.4])
    opt = OptimisticAscent([1.0], [0.1], 10.0, optimism=1.0)
    opt.observe([0.5])  # no previous estimate: a plain step
    assert opt.multipliers == pytest.approx([1.05])
    opt.observe([0.2])  # 2 * 0.2 - 0.5 = -0.1
    assert opt.multipliers == pytest.approx([1.04])
    bar = LogBarrier(2, 10.0, mu0=1.0, decay=0.5, mu_min=0.1, floor=0.01)
    assert bar.observe([-0.5, 0.0]) == pytest.approx([2.0, 10.0])  # mu 1 / slack 0.5; infeasible -> the cap
    assert bar.observe([-0.5, -0.001]) == pytest.approx([1.0, 10.0])  # mu 0.5; slack floored at 0.01 -> 50 -> cap


@pytest.mark.parametrize("controller", ["projected", "log_sgd", "pi", "augmented", "optimistic", "barrier"])
def test_state_dict_resumes_exactly(controller):
    cfg = DualConfig(controller=controller, lambda_init=1.0, mu_init=0.5, mu_lr=0.3, kp=1.0)
    g = [[math.sin(t), math.cos(0.7 * t) - 0.2] for t in range(40)]
    whole = rad_controller(cfg)
    first = [whole.observe(x) for x in g]
    half = rad_controller(cfg)
    for x in g[:17]:
        half.observe(x)
    resumed = rad_controller(cfg)
    resumed.load_state_dict(half.state_dict())
    assert [resumed.observe(x) for x in g[17:]] == first[17:]


def test_rad_config_builds_one_multiplier_per_constraint():
    base = ["reward_model=r", "cost_model=c"]
    gain_only = rad_controller(load_config(RADConfig, None, base).algo.dual)
    assert isinstance(gain_only, ProjectedAscent) and gain_only.multipliers == [1.0]
    both = rad_controller(load_config(RADConfig, None, base + ["algo.dual.controller=augmented", "algo.dual.mu_lr=2",
                                                              "algo.dual.lambda_init=3"]).algo.dual)
    assert isinstance(both, AugmentedLagrangian) and both.multipliers == [3.0, 0.0] and both.lrs == [0.5, 2.0]
    with pytest.raises(ValueError, match="2 constraint estimates for 1 multipliers"):
        gain_only.observe([0.1, 0.2])
    assert isinstance(make_controller(DualConfig(controller="barrier"), [1.0], [0.5]), LogBarrier)
