"""The Lagrange multiplier: direction, clamp, delay, window, and agreement with torch's SGD."""

import math

import pytest
import torch

from rad.algos.dual import log_lambda_step
from safe_rlhf_baseline.lagrange import LagrangeMultiplier


def torch_sgd_step(log_lambda: float, jc: float, threshold: float, lr: float) -> float:
    """The reference's update, independently: autograd + torch.optim.SGD on -(Jc - d) * exp(log_lambda)."""
    p = torch.nn.Parameter(torch.tensor(log_lambda, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=lr)
    loss = -(jc - threshold) * p.exp()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(p.detach())


@pytest.mark.parametrize("log_lambda,jc,threshold,lr", [(0.0, 2.0, 0.0, 0.1), (0.3, -1.0, 0.5, 0.1),
                                                        (-1.0, 0.2, 0.2, 0.5), (1.2, 3.0, -2.0, 0.01)])
def test_step_matches_torch_sgd(log_lambda, jc, threshold, lr):
    assert log_lambda_step(log_lambda, jc - threshold, lr) == pytest.approx(
        torch_sgd_step(log_lambda, jc, threshold, lr))


def test_lambda_rises_above_the_threshold_and_falls_below():
    up = LagrangeMultiplier(lambda_init=1.0, lr=0.1, lambda_max=5.0, threshold=0.0)
    up.observe([1.0, 3.0])  # Jc = 2 > 0
    assert up.step() == pytest.approx(2.0)
    assert up.value == pytest.approx(math.exp(0.1 * 2.0 * 1.0))
    down = LagrangeMultiplier(lambda_init=1.0, lr=0.1, lambda_max=5.0, threshold=0.5)
    down.observe([-1.0, 0.0])  # Jc = -0.5 < 0.5
    down.step()
    assert down.value == pytest.approx(math.exp(-0.1 * 1.0 * 1.0))
    assert 0 < down.value < 1 < up.value


def test_lambda_is_clamped_to_lambda_max_and_stays_positive():
    m = LagrangeMultiplier(lambda_init=1.0, lr=1.0, lambda_max=5.0, threshold=0.0)
    m.observe([10.0])
    for _ in range(5):
        m.step()
    assert m.value == pytest.approx(5.0)
    m.observe([-1.0] * 128)  # Jc = -1: log lambda drops by lambda each step
    for _ in range(3):
        m.step()
    assert 0 < m.value < 0.05


def test_lambda_max_zero_means_no_cap():
    m = LagrangeMultiplier(lambda_init=1.0, lr=1.0, lambda_max=0.0)
    m.observe([3.0])
    m.step()
    m.step()
    assert m.value > 5.0


def test_delay_and_window():
    m = LagrangeMultiplier(lambda_init=2.0, lr=0.1, lambda_max=5.0, threshold=0.0, window=3, delay_steps=2)
    m.observe([100.0, 1.0, 2.0, 3.0])  # the window keeps the last three
    assert m.episode_cost() == pytest.approx(2.0)
    m.step()
    m.step()
    assert m.value == pytest.approx(2.0)  # delayed
    m.step()
    assert m.value == pytest.approx(math.exp(math.log(2.0) + 0.1 * 2.0 * 2.0))


def test_state_round_trip():
    a = LagrangeMultiplier(lambda_init=1.5, lr=0.2, window=4)
    a.observe([0.5, 1.5, 2.5])
    a.step()
    b = LagrangeMultiplier(lambda_init=1.5, lr=0.2, window=4)
    b.load_state_dict(a.state_dict())
    a.observe([4.0])
    b.observe([4.0])
    a.step()
    b.step()
    assert b.value == a.value and b.state_dict() == a.state_dict()


def test_invalid_init_and_empty_window():
    with pytest.raises(ValueError, match="lambda_init"):
        LagrangeMultiplier(lambda_init=0.0)
    with pytest.raises(ValueError, match="no episode costs"):
        LagrangeMultiplier().step()
