"""Token statistics: CVaR / ERM over the vocabulary against brute force, sums against naive loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rad.data.encode import IGNORE_INDEX
from rad.errors import ConfigError
from risk_dpo.token_stats import (cvar_upper, entropic_risk, reference_stats, response_positions,
                                  sequence_stats)


def cvar_by_quantile_integral(values: np.ndarray, probs: np.ndarray, mu: float) -> float:
    """(1/mu) * integral of the quantile function over [1 - mu, 1], interval by interval."""
    order = np.argsort(values, kind="stable")
    v, p = values[order], probs[order] / probs.sum()
    lo = 1.0 - mu
    total, left = 0.0, 0.0
    for value, mass in zip(v, p):
        right = left + mass
        total += value * max(0.0, min(right, 1.0) - max(left, lo))
        left = right
    return total / mu


def cvar_by_rockafellar_uryasev(values: np.ndarray, probs: np.ndarray, mu: float) -> float:
    """min over eta of eta + E[(X - eta)+] / mu; the minimum is attained at an atom."""
    p = probs / probs.sum()
    return min(eta + (p * np.maximum(values - eta, 0.0)).sum() / mu for eta in values)


@st.composite
def distributions(draw):
    n = draw(st.integers(1, 9))
    values = draw(st.lists(st.sampled_from([-2.0, -0.5, 0.0, 0.25, 1.0, 3.0]) | st.floats(-5, 5),
                           min_size=n, max_size=n))
    weights = draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n))
    if sum(weights) <= 1e-3:
        weights[0] = 1.0
    mu = draw(st.floats(0.01, 1.0))
    return np.array(values, dtype=np.float64), np.array(weights, dtype=np.float64), mu


@settings(max_examples=150, deadline=None)
@given(distributions())
def test_cvar_matches_brute_force(case):
    values, weights, mu = case
    probs = weights / weights.sum()
    got = float(cvar_upper(torch.tensor(values), torch.tensor(probs), mu))
    assert got == pytest.approx(cvar_by_quantile_integral(values, probs, mu), abs=1e-9)
    assert got == pytest.approx(cvar_by_rockafellar_uryasev(values, probs, mu), abs=1e-9)


def test_cvar_limits_and_batching():
    torch.manual_seed(0)
    values = torch.randn(5, 7, dtype=torch.float64)
    probs = torch.softmax(torch.randn(5, 7, dtype=torch.float64), -1)
    mean = (values * probs).sum(-1)
    torch.testing.assert_close(cvar_upper(values, probs, 1.0), mean)
    # A tiny tail is the largest value; the tail mean decreases as the tail grows.
    torch.testing.assert_close(cvar_upper(values, probs, 1e-9), values.max(-1).values)
    levels = [cvar_upper(values, probs, m) for m in (0.1, 0.5, 0.9, 1.0)]
    for hi, lo in zip(levels, levels[1:]):
        assert torch.all(hi >= lo - 1e-12)
    rows = torch.stack([cvar_upper(values[i], probs[i], 0.3) for i in range(5)])
    torch.testing.assert_close(cvar_upper(values, probs, 0.3), rows)
    with pytest.raises(ConfigError):
        cvar_upper(values, probs, 1.5)


def test_entropic_risk_brute_force_and_limits():
    torch.manual_seed(1)
    d = torch.randn(4, 6, dtype=torch.float64)
    logp = torch.log_softmax(torch.randn(4, 6, dtype=torch.float64), -1)
    for mu in (0.5, 2.0, 7.0):
        brute = [math.log(sum(math.exp(lp + mu * x) for lp, x in zip(logp[i].tolist(), d[i].tolist()))) / mu
                 for i in range(4)]
        torch.testing.assert_close(entropic_risk(d, logp, mu), torch.tensor(brute, dtype=torch.float64))
    mean = (logp.exp() * d).sum(-1)
    torch.testing.assert_close(entropic_risk(d, logp, 1e-7), mean, atol=1e-6, rtol=0)
    assert torch.all(entropic_risk(d, logp, 3.0) >= mean)
    with pytest.raises(ConfigError):
        entropic_risk(d, logp, 0.0)


def _batch(n=3, length=9, vocab=11, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    pol = torch.randn(n, length, vocab, generator=g, dtype=dtype)
    ref = torch.randn(n, length, vocab, generator=g, dtype=dtype)
    ids = torch.randint(0, vocab, (n, length), generator=g)
    labels = torch.full((n, length), IGNORE_INDEX)
    spans = [(2, 9), (4, 7), (1, 5)][:n]  # response [start, end): prompt before, right padding after
    for row, (a, b) in enumerate(spans):
        labels[row, a:b] = ids[row, a:b]
    return pol, ref, labels, spans


def test_sequence_stats_match_naive_loops():
    pol, ref, labels, spans = _batch()
    mu = 0.7
    stats = sequence_stats(pol, labels, ref_logits=ref, need_kl=True, need_risk=True, risk="cvar", mu=mu)
    for row, (a, b) in enumerate(spans):
        logp = torch.log_softmax(pol[row], -1)
        logr = torch.log_softmax(ref[row], -1)
        lp = lr = kl = rr = 0.0
        for t in range(a, b):  # token t is predicted at position t - 1
            y = labels[row, t]
            lp += float(logp[t - 1, y])
            lr += float(logr[t - 1, y])
            p = logr[t - 1].exp().numpy()
            d = (logr[t - 1] - logp[t - 1]).numpy()
            kl += float((p * d).sum())
            rr += cvar_by_quantile_integral(d, p, mu)
        assert float(stats.logps[row]) == pytest.approx(lp, abs=1e-9)
        assert float(stats.ref_logps[row]) == pytest.approx(lr, abs=1e-9)
        assert float(stats.kl[row]) == pytest.approx(kl, abs=1e-9)
        assert float(stats.risk[row]) == pytest.approx(rr, abs=1e-9)
        assert float(stats.tokens[row]) == b - a
        assert rr >= kl - 1e-12  # the upper tail is at least the mean


def test_full_mass_cvar_and_vanishing_erm_recover_the_kl():
    pol, ref, labels, _ = _batch(seed=3)
    full = sequence_stats(pol, labels, ref_logits=ref, need_risk=True, risk="cvar", mu=1.0)
    torch.testing.assert_close(full.risk, full.kl)
    erm = sequence_stats(pol, labels, ref_logits=ref, need_risk=True, risk="erm", mu=1e-7)
    torch.testing.assert_close(erm.risk, erm.kl, atol=1e-5, rtol=0)


def test_precomputed_reference_equals_on_the_fly():
    pol, ref, labels, _ = _batch(seed=4, dtype=torch.float32)
    live = sequence_stats(pol, labels, ref_logits=ref, need_risk=True, risk="erm", mu=2.0)
    sums, packed = reference_stats(ref, labels, keep_distribution=True)
    pre = sequence_stats(pol, labels, ref_logps=sums, ref_packed_logprobs=packed, need_risk=True, risk="erm",
                         mu=2.0)
    for name in ("logps", "ref_logps", "kl", "risk", "tokens"):
        torch.testing.assert_close(getattr(pre, name), getattr(live, name))
    sums_only, none = reference_stats(ref, labels, keep_distribution=False)
    assert none is None
    dpo_only = sequence_stats(pol, labels, ref_logps=sums_only, need_kl=False)
    torch.testing.assert_close(dpo_only.ref_logps, live.ref_logps)
    assert dpo_only.kl is None and dpo_only.risk is None
    with pytest.raises(ValueError):
        sequence_stats(pol, labels, ref_logps=sums_only, need_kl=True)


def test_risk_ratio_gradient_matches_finite_differences():
    pol, ref, labels, _ = _batch(n=2, length=6, vocab=5, seed=5)
    pol = pol.clone().requires_grad_(True)

    def total(x):
        s = sequence_stats(x, labels, ref_logits=ref, need_risk=True, risk="cvar", mu=0.6)
        return s.risk.sum() + s.logps.sum()

    assert torch.autograd.gradcheck(total, (pol,), eps=1e-6, atol=1e-5)


def test_response_positions_are_row_major_and_contiguous():
    _, _, labels, spans = _batch()
    mask, targets, rows = response_positions(labels)
    assert rows.tolist() == sum(([r] * (b - a) for r, (a, b) in enumerate(spans)), [])
    assert targets.tolist() == sum((labels[r, a:b].tolist() for r, (a, b) in enumerate(spans)), [])
    assert int(mask.sum()) == len(rows)
