"""PPO-Lagrangian mathematics against hand computations and a brute-force GAE."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from safe_rlhf_baseline.ppo_math import (actor_loss, clip_fraction, critic_loss, gae, lagrangian_advantages,
                                         masked_mean, shape_rewards)


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_gae_hand_computed():
    # row 0: three tokens; row 1: two tokens + one pad (garbage that must be ignored)
    values = t([[1.0, 2.0, 3.0], [0.5, -1.0, 9.0]])
    rewards = t([[0.0, 0.5, 4.0], [0.2, 1.0, 7.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    adv, ret = gae(values, rewards, mask, gamma=1.0, lam=0.95)
    # row 0: deltas (back to front) 4-3=1, 0.5+3-2=1.5, 0+2-1=1 ; A = 1, 1.5+.95, 1+.95*2.45
    torch.testing.assert_close(adv[0], t([3.3275, 2.45, 1.0]))
    torch.testing.assert_close(ret[0], t([4.3275, 4.45, 4.0]))
    # row 1: delta_1 = 1 + 0 - (-1) = 2 (terminal value 0), delta_0 = 0.2 - 1 - 0.5 = -1.3 ; A_0 = -1.3 + .95*2
    torch.testing.assert_close(adv[1], t([0.6, 2.0, 0.0]))
    torch.testing.assert_close(ret[1], t([1.1, 1.0, 0.0]))


def _padded(lists):
    """Right-padded float64 rows and their mask (test input; the product pads in TokenBatch)."""
    out = torch.zeros((len(lists), max(len(x) for x in lists)), dtype=torch.float64)
    mask = torch.zeros(out.shape, dtype=torch.bool)
    for i, x in enumerate(lists):
        out[i, : len(x)] = torch.tensor(x, dtype=torch.float64)
        mask[i, : len(x)] = True
    return out, mask


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4), gamma=st.floats(0.5, 1.0),
       lam=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
def test_gae_matches_the_discounted_sum_of_deltas(lengths, gamma, lam, seed):
    g = torch.Generator().manual_seed(seed)
    vals = [torch.randn(n, generator=g, dtype=torch.float64).tolist() for n in lengths]
    rews = [torch.randn(n, generator=g, dtype=torch.float64).tolist() for n in lengths]
    values, mask = _padded(vals)
    rewards, _ = _padded(rews)
    adv, ret = gae(values, rewards, mask, gamma, lam)
    for row, (v, r) in enumerate(zip(vals, rews)):
        n = len(v)
        deltas = [r[k] + gamma * (v[k + 1] if k + 1 < n else 0.0) - v[k] for k in range(n)]
        brute = [sum((gamma * lam) ** (k - s) * deltas[k] for k in range(s, n)) for s in range(n)]
        assert adv[row][mask[row]].tolist() == pytest.approx(brute, abs=1e-9)
        assert ret[row][mask[row]].tolist() == pytest.approx([a + b for a, b in zip(brute, v)], abs=1e-9)
    assert float(adv[~mask].abs().sum()) == 0.0


def test_gae_with_lambda_one_and_gamma_one_is_the_return_to_go_minus_value():
    values, mask = _padded([[0.3, -0.2, 0.7]])
    rewards, _ = _padded([[1.0, 2.0, 3.0]])
    adv, ret = gae(values, rewards, mask, 1.0, 1.0)
    torch.testing.assert_close(ret, t([[6.0, 5.0, 3.0]]))
    torch.testing.assert_close(adv, t([[5.7, 5.2, 2.3]]))


def test_kl_shaping_puts_scores_on_the_last_token_and_clips():
    logp = t([[-1.0, -2.0, -3.0], [-1.0, -1.0, 0.0]])
    ref = t([[-1.5, -1.0, -3.0], [-1.0, -2.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    rewards, costs = shape_rewards(t([2.0, 100.0]), t([-1.0, 3.0]), logp, ref, mask, kl_coeff=0.1,
                                   clip_range_score=50.0)
    # kl per token (log pi - log ref): row 0 [0.5, -1, 0], row 1 [0, 1, -]; r_kl = -0.1 * kl
    torch.testing.assert_close(rewards, t([[-0.05, 0.1, 2.0], [0.0, 50.0, 0.0]]))  # 100 - 0.1 clipped to 50
    torch.testing.assert_close(costs, t([[0.05, -0.1, -1.0], [0.0, 3.1, 0.0]]))


def test_shaping_rejects_an_empty_response():
    with pytest.raises(ValueError, match="rows \\[1\\]"):
        shape_rewards(t([1.0, 1.0]), t([0.0, 0.0]), t([[0.0], [0.0]]), t([[0.0], [0.0]]),
                      torch.tensor([[True], [False]]), 0.1, 50.0)


def test_masked_mean_weights_rows_equally():
    x = t([[1.0, 3.0, 100.0], [10.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert float(masked_mean(x, mask)) == pytest.approx((2.0 + 10.0) / 2)


def test_actor_loss_hand_built_batch():
    # row 0: A = (A_r - 1*A_c)/2 = [1, -1]; ratios 1.5 and 0.5, clipped to 1.2 / 0.8
    #   surrogates min(1.5, 1.2) = 1.2 and min(-0.5, -0.8) = -0.8 -> row mean 0.2
    # row 1: A = (3 - 1)/2 = 1, ratio 1 -> 1 ; batch mean (0.2 + 1)/2 = 0.6
    old = t([[0.0, 0.0], [-0.7, 0.0]])
    logp = (old + t([[math.log(1.5), math.log(0.5)], [0.0, 0.0]])).requires_grad_(True)
    adv_r, adv_c = t([[2.0, -1.0], [3.0, 0.0]]), t([[0.0, 1.0], [1.0, 0.0]])
    mask = torch.tensor([[True, True], [True, False]])
    loss = actor_loss(logp, old, adv_r, adv_c, 1.0, mask, 0.2)
    assert float(loss.detach()) == pytest.approx(-0.6)
    loss.backward()
    # clipped tokens carry no gradient; the unclipped one: d(-A r / (2 rows * 1 token))/d logp = -A r / 2
    torch.testing.assert_close(logp.grad, t([[0.0, 0.0], [-0.5, 0.0]]))
    assert float(clip_fraction(logp, old, mask, 0.2)) == pytest.approx((1.0 + 0.0) / 2)


def test_lagrangian_advantage_and_lambda_zero_is_plain_ppo():
    assert float(lagrangian_advantages(t(2.0), t(1.0), 3.0)) == pytest.approx((2 - 3) / 4)
    old = t([[0.1, 0.2]])
    logp = old + 0.05
    mask = torch.ones(1, 2, dtype=torch.bool)
    adv = t([[1.0, -2.0]])
    with_zero = actor_loss(logp, old, adv, t([[5.0, 5.0]]), 0.0, mask, 0.2)
    ratio = math.exp(0.05)
    assert float(with_zero) == pytest.approx(-(1.0 * ratio + -2.0 * ratio) / 2)


def test_critic_loss_hand_built_batch():
    # token 0: (1-2)^2 = 1 either way; token 1: unclipped (8-10)^2 = 4, clipped to 5 -> (5-10)^2 = 25 wins
    values = t([[1.0, 8.0]]).requires_grad_(True)
    loss = critic_loss(values, t([[0.0, 0.0]]), t([[2.0, 10.0]]), torch.ones(1, 2, dtype=torch.bool), 5.0)
    assert float(loss.detach()) == pytest.approx(0.5 * (1 + 25) / 2)
    loss.backward()
    # token 1's loss is the clipped branch: constant in V -> zero gradient; token 0: 0.5 * 2 (V - R) / 2
    torch.testing.assert_close(values.grad, t([[-0.5, 0.0]]))
