"""FSD gain / violation, OT solvers, particle gradients, signal, RLOO and dual ascent."""

import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from rad.errors import ConfigError, DataError
from rad.risk.dominance import (
    dominance_signal,
    dominance_step,
    empirical_gain_violation,
    empirical_quantiles,
    exact_particle_grad,
    exact_violation_grad,
    fsd_exact,
    fsd_sinkhorn,
    kde_density,
    quantile_levels,
    silverman_bandwidth,
)
from rad.risk.spectral import as_weighting, spectral_risk

ALL_WEIGHTINGS = ["uniform", "var:0.8,0.1", "cvar:0.75", "linear", "exponential:4", "power:3", "wang:0.75"]

samples = st.lists(st.floats(-100, 100, allow_nan=False, width=64), min_size=1, max_size=40)


def _t(xs):
    return torch.tensor(xs, dtype=torch.float64)


def _generic(n, seed, shift=0.0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return shift + scale * torch.randn(n, generator=g, dtype=torch.float64)


# ---------------------------------------------------------------- quantiles


def test_levels_are_cell_midpoints():
    assert quantile_levels(4).tolist() == [0.125, 0.375, 0.625, 0.875]


@settings(max_examples=40, deadline=None)
@given(xs=samples, n=st.integers(1, 30))
def test_empirical_quantiles_match_the_left_inverse_cdf(xs, n):
    x = np.sort(np.array(xs))
    t = (np.arange(n) + 0.5) / n
    # inf{z : F(z) >= t} over the sample's support, by brute force.
    cdf = np.arange(1, len(x) + 1) / len(x)
    brute = np.array([x[np.argmax(cdf >= ti - 1e-15)] for ti in t])
    got = empirical_quantiles(_t(xs), n).numpy()
    assert np.array_equal(got, brute)


def test_particles_of_an_n_sample_are_the_sorted_sample_and_batched():
    x = _generic(12, 0)
    assert torch.equal(empirical_quantiles(x, 12), x.sort().values)
    xb = torch.stack([x, -x])
    q = empirical_quantiles(xb, 5)
    assert q.shape == (2, 5)
    assert torch.equal(q[1], empirical_quantiles(-x, 5))


# ---------------------------------------------------------------- Prop. 2 and basic facts


@settings(max_examples=40, deadline=None)
@given(data=st.data(), n=st.integers(1, 25), spec=st.sampled_from(ALL_WEIGHTINGS))
def test_prop2_for_particles(data, n, spec):
    q = _t(data.draw(st.lists(st.floats(-50, 50, allow_nan=False), min_size=n, max_size=n)))
    p = _t(data.draw(st.lists(st.floats(-50, 50, allow_nan=False), min_size=n, max_size=n)))
    gain, viol = fsd_exact(q, p, spec)
    assert gain >= 0 and viol >= 0
    lhs = spectral_risk(p, spec) - spectral_risk(q, spec)
    assert float(lhs) == pytest.approx(float(gain - viol), abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(xs=samples, ys=samples, spec=st.sampled_from(ALL_WEIGHTINGS))
def test_prop2_for_samples_of_different_sizes(xs, ys, spec):
    gain, viol = empirical_gain_violation(_t(xs), _t(ys), spec)
    lhs = spectral_risk(_t(ys), spec) - spectral_risk(_t(xs), spec)
    assert float(lhs) == pytest.approx(float(gain - viol), abs=1e-9)


def test_sample_metric_equals_particle_metric_for_equal_sizes_and_brute_force():
    x, y = _generic(30, 1), _generic(20, 2, 0.3)
    for spec in ALL_WEIGHTINGS:
        assert torch.allclose(torch.stack(empirical_gain_violation(x[:20], y, spec)),
                              torch.stack(fsd_exact(x[:20], y, spec)))
    # Brute force on a fine level grid: integral of w (Q_y - Q_x)_+ by midpoint rule.
    w = as_weighting("wang:0.75")
    t = (torch.arange(60000, dtype=torch.float64) + 0.5) / 60000
    qx = x.sort().values[torch.ceil(t * 30).long() - 1]
    qy = y.sort().values[torch.ceil(t * 20).long() - 1]
    brute = float((w(t) * torch.relu(qy - qx)).mean())
    assert float(empirical_gain_violation(x, y, w)[0]) == pytest.approx(brute, abs=2e-3)


@pytest.mark.parametrize("spec", ALL_WEIGHTINGS)
def test_shifted_up_copy_has_no_gain(spec):
    p = _generic(25, 3)
    gain, viol = fsd_exact(p + 0.5, p, spec)
    assert float(gain) == 0.0
    assert float(viol) == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("spec", ALL_WEIGHTINGS)
def test_violation_is_exactly_zero_when_policy_is_below(spec):
    p = _generic(25, 4).abs() + 1.0
    q = -_generic(25, 5).abs()
    gain, viol = fsd_exact(q, p, spec)
    assert float(viol) == 0.0 and float(gain) > 0
    # Also with ties: policy equal on the lower half, below on the upper half.
    q2 = p.sort().values.clone()
    q2[12:] -= 1.0
    assert float(fsd_exact(q2, p, spec)[1]) == 0.0


@settings(max_examples=30, deadline=None)
@given(data=st.data(), n=st.integers(1, 25))
def test_uniform_gain_is_bounded_by_w1(data, n):
    q = data.draw(st.lists(st.floats(-50, 50, allow_nan=False), min_size=n, max_size=n))
    p = data.draw(st.lists(st.floats(-50, 50, allow_nan=False), min_size=n, max_size=n))
    gain, viol = fsd_exact(_t(q), _t(p))
    w1 = ot.wasserstein_1d(np.array(q), np.array(p), p=1)
    assert float(gain) <= w1 + 1e-9
    assert float(gain + viol) == pytest.approx(w1, abs=1e-9)


# ---------------------------------------------------------------- OT formulations


@pytest.mark.parametrize("spec", ALL_WEIGHTINGS)
def test_emd_with_weighted_marginals_equals_sorted_formula(spec):
    w = as_weighting(spec)
    q, p = _generic(30, 6), _generic(30, 7, 0.4, 1.3)  # unsorted on purpose
    m = w.cell_masses(30).numpy()
    qs, ps = np.sort(q.numpy()), np.sort(p.numpy())
    cost = np.maximum(ps[None, :] - qs[:, None], 0.0)
    emd = ot.emd2(m, m, cost)
    assert emd == pytest.approx(float(fsd_exact(q, p, spec)[0]), abs=1e-10)


def test_row_weighted_uniform_marginal_ot_is_not_the_weighted_gain():
    # The counterexample from dominance.py's docstring: why weights go into the marginals.
    q, p, wts = np.array([0.0, 0.1]), np.array([0.2, 1.0]), np.array([0.5, 1.5])
    cost = wts[:, None] * np.maximum(p[None, :] - q[:, None], 0.0)
    row_weighted = ot.emd2(np.full(2, 0.5), np.full(2, 0.5), cost)
    quantile_gain = float(np.mean(wts * np.maximum(p - q, 0)))
    assert row_weighted == pytest.approx(0.325)
    assert quantile_gain == pytest.approx(0.725)


@pytest.mark.parametrize("spec", ["uniform", "cvar:0.7", "wang:0.75"])
def test_sinkhorn_converges_to_exact_as_eps_shrinks(spec):
    q, p = _generic(24, 8), _generic(24, 9, 0.3, 1.4)
    exact_gain, exact_viol = (float(v) for v in fsd_exact(q, p, spec))
    errors = []
    for eps in (0.1, 0.03, 0.01, 0.003):
        res = fsd_sinkhorn(q, p, spec, eps=eps, max_iter=20000, tol=1e-12)
        assert res.gain >= exact_gain - 1e-9  # a coupling is never below the optimum
        errors.append(res.gain - exact_gain)
        # Prop. 2 under the entropic plan, up to the marginal error: gain - viol = b'.p - a'.q
        # with a', b' the plan's marginals.
        slack = res.marginal_error * float(torch.cat([q, p]).abs().max()) + 1e-12
        rho_gap = float(spectral_risk(p, spec) - spectral_risk(q, spec))
        assert res.gain - res.violation == pytest.approx(rho_gap, abs=slack)
    assert all(a > b for a, b in zip(errors, errors[1:]))
    assert errors[-1] < 0.02 * (float(torch.cat([q, p]).max() - torch.cat([q, p]).min()))
    assert res.violation == pytest.approx(exact_viol, abs=errors[-1] + 2 * slack)


def test_sinkhorn_gain_agrees_with_pot_emd_on_the_same_problem():
    q, p = _generic(20, 10), _generic(20, 11, 0.2)
    res = fsd_sinkhorn(q, p, "exponential:4", eps=1e-3, max_iter=20000, tol=1e-12)
    m = as_weighting("exponential:4").cell_masses(20).numpy()
    cost = np.maximum(np.sort(p.numpy())[None, :] - np.sort(q.numpy())[:, None], 0)
    assert res.gain == pytest.approx(ot.emd2(m, m, cost), abs=5e-3)


@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e4])
def test_sinkhorn_is_finite_for_small_relative_eps(scale):
    q, p = scale * _generic(64, 12), scale * _generic(64, 13, 0.5)
    for grad in ("envelope", "autograd"):
        res = fsd_sinkhorn(q, p, "cvar:0.5", eps=1e-3, max_iter=50, grad=grad)
        assert np.isfinite([res.gain, res.violation, res.entropic_objective, res.marginal_error]).all()
        assert torch.isfinite(res.particle_grad).all() and torch.isfinite(res.plan).all()
        # The scale is the spread of the particles that carry mass (upper half for CVaR_0.5).
        kept = torch.cat([q.sort().values[32:], p.sort().values[32:]])
        assert res.eps_abs == pytest.approx(1e-3 * float(kept.max() - kept.min()), rel=1e-12)


@pytest.mark.parametrize("spec", ["uniform", "cvar:0.9", "wang:0.75"])
def test_entropic_plan_is_the_same_by_newton_semi_dual_scaling_and_log_domain(spec):
    # Tied, discrete costs as a learned cost model gives them: the degenerate case where
    # Sinkhorn converges slowly.  The two Sinkhorn domains take the same iterates; the
    # semi-dual solvers solve the same problem to their stopping rule: Newton's row-marginal
    # L1 error <= tol (1e-9), L-BFGS to float64's limit for it (~1e-8).
    g = torch.Generator().manual_seed(31)
    q = empirical_quantiles(torch.randint(-6, 4, (128,), generator=g).double() / 2, 64)
    p = empirical_quantiles(torch.randint(-5, 5, (96,), generator=g).double() / 2, 64)
    log = fsd_sinkhorn(q, p, spec, eps=0.01, method="log", max_iter=20000, tol=1e-12)
    scaling = fsd_sinkhorn(q, p, spec, eps=0.01, method="scaling", max_iter=20000, tol=1e-12)
    semi = fsd_sinkhorn(q, p, spec, eps=0.01, method="semi_dual")
    newton = fsd_sinkhorn(q, p, spec, eps=0.01)
    assert (newton.method, semi.method, scaling.method, log.method) == ("newton", "semi_dual", "scaling", "log")
    assert abs(scaling.n_iter - log.n_iter) <= 10  # POT checks convergence every 10 iterations
    for res, atol in ((scaling, 1e-10), (newton, 1e-8), (semi, 1e-7)):
        assert res.marginal_error < atol
        assert torch.allclose(res.plan, log.plan, atol=atol, rtol=0)
        assert torch.allclose(res.particle_grad, log.particle_grad, atol=atol, rtol=0)
        assert res.gain == pytest.approx(log.gain, abs=atol)
        assert res.violation == pytest.approx(log.violation, abs=atol)
        assert res.entropic_objective == pytest.approx(log.entropic_objective, abs=atol)


def _learned_like(n, seed):
    """Costs as a learned cost model gives them: a few clusters, rounded (tied) within each."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.tensor([-3.4, -1.2, 0.4, 3.5], dtype=torch.float64)[torch.randint(0, 4, (n,), generator=g)]
    return ((centre + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)) * 8).round() / 8


# (Tied uniform problems, where log-domain Sinkhorn needs 10^4 iterations, are in the test above.)
@pytest.mark.parametrize(("kind", "n", "spec"), [("learned", 64, "cvar:0.9"), ("learned", 32, "cvar:0.5"),
                                                 ("learned", 8, "cvar:0.5"), ("gaussian", 64, "uniform"),
                                                 ("gaussian", 64, "cvar:0.9"), ("gaussian", 32, "cvar:0.5")])
def test_newton_semi_dual_equals_pots_semi_dual_and_log_sinkhorn(kind, n, spec):
    seed = 40 + n
    draw = _learned_like if kind == "learned" else _generic
    q, p = empirical_quantiles(draw(2 * n, seed), n), empirical_quantiles(draw(2 * n, seed + 1) + 0.3, n)
    newton = fsd_sinkhorn(q, p, spec, eps=0.01, method="newton")
    assert newton.method == "newton" and newton.marginal_error <= 1e-9
    # POT's own solvers of the same problem on the particles that carry mass
    m = as_weighting(spec).cell_masses(n).numpy()
    kept = m > 0
    a = m[kept] / m[kept].sum()
    cost = np.maximum(np.sort(p.numpy())[kept][None, :] - np.sort(q.numpy())[kept][:, None], 0)
    plan = newton.plan.numpy()[np.ix_(kept, kept)]
    pot_semi = ot.smooth.smooth_ot_semi_dual(a, a, cost, newton.eps_abs, reg_type="kl", stopThr=1e-9)
    pot_log = ot.sinkhorn(a, a, cost, newton.eps_abs, method="sinkhorn_log", numItermax=50000, stopThr=1e-12)
    # POT's semi-dual stops with a marginal error up to ~2e-6 (its L-BFGS rule), its plan that close to
    # the solution; the log-domain Sinkhorn reaches 1e-11 on these inputs.
    def marginal_error(plan):
        return np.abs(plan.sum(1) - a).sum() + np.abs(plan.sum(0) - a).sum()

    assert marginal_error(pot_log) < 1e-10
    for ref in (pot_semi, pot_log):
        atol = max(1e-8, marginal_error(ref))
        assert np.abs(plan - ref).max() <= atol
        assert newton.gain == pytest.approx(float((ref * cost).sum()), abs=atol)
        ent = float((ref * cost).sum() + newton.eps_abs * (ref * np.log(ref)).sum())
        assert newton.entropic_objective == pytest.approx(ent, abs=atol)


def test_newton_hands_an_unreachable_tolerance_to_pots_semi_dual():
    from rad.risk.dominance import _entropic_newton

    q, p = _generic(16, 36), _generic(16, 37, 0.5)
    a = np.full(16, 1 / 16)
    cost = np.maximum(np.sort(p.numpy())[None, :] - np.sort(q.numpy())[:, None], 0)
    assert _entropic_newton(a, cost, 0.02, 10**6, 1e-30) is None  # below float64's reach: gives up, no endless loop
    plan, evals = _entropic_newton(a, cost, 0.02, 1000, 1e-9)
    assert np.abs(plan.sum(1) - a).sum() <= 1e-9 and evals >= 2
    assert _entropic_newton(a, cost, 0.02, 1, 1e-9) is None  # one step is not enough
    assert fsd_sinkhorn(q, p, eps=0.02, max_iter=1, tol=1e-9, method="newton").method == "semi_dual"


def test_sinkhorn_auto_method_picks_by_support_size_and_kernel_range():
    small, small_ref = _generic(32, 32), _generic(32, 33, 0.5)
    mid, mid_ref = _generic(128, 36), _generic(128, 37, 0.5)
    large, large_ref = _generic(300, 34), _generic(300, 35, 0.5)
    assert fsd_sinkhorn(small, small_ref, eps=1e-3).method == "newton"
    assert fsd_sinkhorn(small, small_ref, eps=0.01, grad="autograd").method == "log"
    assert fsd_sinkhorn(mid, mid_ref, eps=0.01, max_iter=5).method == "semi_dual"
    assert fsd_sinkhorn(mid, mid_ref, "cvar:0.5", eps=0.01).method == "newton"  # 64 particles carry mass
    assert fsd_sinkhorn(large, large_ref, eps=0.01, max_iter=50).method == "scaling"
    # max C / eps up to 1000: e^-1000 underflows, so Sinkhorn stays in the log domain
    assert fsd_sinkhorn(large, large_ref, eps=1e-3, max_iter=5).method == "log"
    # 240 of 300 particles carry mass under CVaR_0.2: the support decides, not N
    assert fsd_sinkhorn(large, large_ref, "cvar:0.2", eps=0.01).method == "semi_dual"
    with pytest.raises(ConfigError, match="underflows"):
        fsd_sinkhorn(small, small_ref, eps=1e-3, method="scaling")
    for method in ("newton", "scaling", "semi_dual"):
        with pytest.raises(ConfigError, match="autograd"):
            fsd_sinkhorn(small, small_ref, eps=0.01, method=method, grad="autograd")
    with pytest.raises(ConfigError, match="sinkhorn method"):
        fsd_sinkhorn(small, small_ref, method="fast")


def test_sinkhorn_scaling_reports_failure_instead_of_returning_stale_scalings():
    from rad.risk.dominance import _sinkhorn_scaling

    q, p = _generic(16, 34), _generic(16, 35, 3.0)
    a = torch.full((16,), 1 / 16, dtype=torch.float64)
    # eps so small that exp(-C/eps) is 0 in float64: POT stops at its previous scalings.
    cost = (p.sort().values[None, :] - q.sort().values[:, None]).clamp(min=0).numpy()
    assert _sinkhorn_scaling(a.numpy(), cost, 1e-6, 100, 1e-9) is None
    plan, _ = _sinkhorn_scaling(a.numpy(), cost, 0.05, 1000, 1e-9)
    assert float(plan.sum()) == pytest.approx(1.0, abs=1e-8) and plan.shape == (16, 16)


def test_sinkhorn_plan_is_zero_on_zero_mass_levels():
    q, p = _generic(20, 14), _generic(20, 15, 1.0)
    res = fsd_sinkhorn(q, p, "cvar:0.5", eps=0.01)
    assert float(res.plan[:10].abs().sum()) == 0.0 and float(res.plan[:, :10].abs().sum()) == 0.0
    assert float(res.plan.sum()) == pytest.approx(1.0, abs=1e-8)


# ---------------------------------------------------------------- particle gradients


def _central_diff(fn, x, h):
    out = torch.empty_like(x)
    for i in range(x.numel()):
        e = torch.zeros_like(x)
        e[i] = h
        out[i] = (fn(x + e) - fn(x - e)) / (2 * h)
    return out


@pytest.mark.parametrize("spec", ALL_WEIGHTINGS)
def test_exact_particle_grad_matches_autograd_and_finite_differences(spec):
    q, p = _generic(15, 16), _generic(15, 17, 0.2)
    g = exact_particle_grad(q, p, spec)
    assert (g <= 0).all()
    qv = q.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(fsd_exact(qv, p, spec)[0], qv)
    assert torch.allclose(g, auto, atol=1e-14)
    fd = _central_diff(lambda x: fsd_exact(x, p, spec)[0], q, 1e-7)
    assert torch.allclose(g, fd, atol=1e-7)


@pytest.mark.parametrize("spec", ALL_WEIGHTINGS)
def test_exact_violation_grad_matches_autograd_and_finite_differences(spec):
    q, p = _generic(15, 16), _generic(15, 17, 0.2)
    v = exact_violation_grad(q, p, spec)
    assert (v >= 0).all()
    qv = q.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(fsd_exact(qv, p, spec)[1], qv)
    assert torch.allclose(v, auto, atol=1e-14)
    fd = _central_diff(lambda x: fsd_exact(x, p, spec)[1], q, 1e-7)
    assert torch.allclose(v, fd, atol=1e-7)
    # gain + violation = W1-type total: the two subgradients never overlap and sum to -m_i sign(p - q).
    g = exact_particle_grad(q, p, spec)
    assert ((g != 0) & (v != 0)).sum() == 0


def test_violation_signal_is_the_only_push_when_the_policy_trails_everywhere():
    ref = torch.linspace(-2.0, 1.0, 64, dtype=torch.float64)
    costs = (ref + 3.0).reshape(16, 4)  # every policy quantile above the reference's
    res = dominance_step(costs, ref, "cvar:0.9", solver="exact", n_particles=32)
    assert res.gain_exact == 0.0 and (res.signal == 0).all()
    assert res.violation_exact == pytest.approx(3.0)
    assert (res.violation_signal > 0).any() and (res.violation_signal >= 0).all()
    order = costs.reshape(-1).argsort()  # cheaper samples get more of it
    assert (res.violation_signal.reshape(-1)[order].diff() <= 1e-12).all()


def test_sinkhorn_autograd_gradient_matches_finite_differences():
    q, p = _generic(10, 18), _generic(10, 19, 0.3)
    kw = dict(max_iter=20000, tol=1e-13, method="log")  # finite differences need marginals far below 1e-8
    res = fsd_sinkhorn(q, p, "wang:0.75", eps=0.05, grad="autograd", **kw)

    def gain(x):  # eps_abs held fixed: the cost scale is a constant, not differentiated
        eps_rel = res.eps_abs / float(torch.cat([x, p]).max() - torch.cat([x, p]).min())
        return fsd_sinkhorn(x, p, "wang:0.75", eps=eps_rel, **kw).gain

    fd = _central_diff(gain, q, 1e-5)
    assert torch.allclose(res.particle_grad, fd, atol=1e-6)


def test_sinkhorn_envelope_gradient_is_the_gradient_of_the_entropic_objective():
    q, p = _generic(10, 20), _generic(10, 21, 0.3)
    # The relative eps is rescaled in every call so that eps_abs stays fixed
    # while the finite difference moves the particles (and their spread).
    kw = dict(max_iter=20000, tol=1e-13, method="log")  # finite differences need marginals far below 1e-8
    res = fsd_sinkhorn(q, p, "linear", eps=0.05, **kw)

    def objective(x):
        eps_rel = res.eps_abs / float(torch.cat([x, p]).max() - torch.cat([x, p]).min())
        return fsd_sinkhorn(x, p, "linear", eps=eps_rel, **kw).entropic_objective

    fd = _central_diff(objective, q, 1e-6)
    assert torch.allclose(res.particle_grad, fd, atol=1e-6)
    assert (res.particle_grad <= 0).all()


@pytest.mark.parametrize("grad", ["envelope", "autograd"])
def test_sinkhorn_gradient_approaches_the_exact_subgradient(grad):
    q, p = _generic(16, 22), _generic(16, 23, 0.4, 1.5)
    exact = exact_particle_grad(q, p, "exponential:3")
    errs = [
        float((fsd_sinkhorn(q, p, "exponential:3", eps=eps, max_iter=3000, tol=1e-9, grad=grad).particle_grad
               - exact).abs().sum())
        for eps in (0.1, 0.01, 0.003)
    ]
    # L1 distance; the exact subgradient itself has L1 norm <= 1.
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.05


# ---------------------------------------------------------------- density, signal


def test_silverman_bandwidth_and_kde_match_scipy():
    x = _generic(300, 24, 1.0, 2.0)
    xn = x.numpy()
    iqr = np.subtract(*np.percentile(xn, [75, 25]))
    expected = 0.9 * min(xn.std(ddof=1), iqr / 1.34) * 300 ** (-0.2)
    h = silverman_bandwidth(x)
    assert h == pytest.approx(expected, rel=1e-12)
    pts = torch.linspace(-3, 5, 11, dtype=torch.float64)
    ref = stats.gaussian_kde(xn, bw_method=h / xn.std(ddof=1))(pts.numpy())
    assert np.allclose(kde_density(pts, x).numpy(), ref, rtol=1e-10)
    assert silverman_bandwidth(torch.full((10,), 3.0)) > 0


def test_hard_and_smoothed_signal_match_brute_force():
    costs = _generic(40, 25).reshape(8, 5)
    q = _generic(12, 26).sort().values
    g = -torch.rand(12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    f = 0.5 + torch.rand(12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    s = dominance_signal(costs, q, g, f)
    brute = ((-g / f)[None, :] * (costs.reshape(-1, 1) <= q[None, :])).sum(1).reshape(8, 5)
    assert s.shape == (8, 5) and torch.allclose(s, brute, atol=1e-14)
    # Ties: a cost exactly at a particle counts (1{c <= q}).
    s_tie = dominance_signal(q[3:4], q, g, f)
    assert float(s_tie) == pytest.approx(float((-g / f)[3:].sum()))
    h = 0.3
    smooth = dominance_signal(costs, q, g, f, indicator_bandwidth=h)
    brute_s = ((-g / f).numpy()[None, :] * stats.norm.cdf((q[None, :] - costs.reshape(-1, 1)).numpy() / h)).sum(1)
    assert np.allclose(smooth.reshape(-1).numpy(), brute_s, atol=1e-12)
    near_hard = dominance_signal(costs, q, g, f, indicator_bandwidth=1e-9)
    assert torch.allclose(near_hard, s, atol=1e-9)


# ---------------------------------------------------------------- the step


@pytest.mark.parametrize("solver", ["exact", "sinkhorn"])
@pytest.mark.parametrize("density", ["kde", "constant"])
def test_dominance_step_is_consistent(solver, density):
    costs = _generic(64, 27).reshape(32, 2)
    ref_costs = _generic(100, 28, 0.5)
    res = dominance_step(costs, ref_costs, "cvar:0.5", solver=solver, n_particles=16, density=density, eps=0.01)
    assert (res.policy_particles.shape == (16,)
            and torch.equal(res.policy_particles, empirical_quantiles(costs.reshape(-1), 16)))
    assert torch.equal(res.ref_particles, empirical_quantiles(ref_costs, 16))
    assert res.rho_ref - res.rho_policy == pytest.approx(res.gain_exact - res.violation_exact, abs=1e-12)
    assert res.signal.shape == costs.shape and (res.signal >= 0).all()
    # s is non-increasing in the cost: cheaper samples are pushed up more.
    order = costs.reshape(-1).argsort()
    assert (res.signal.reshape(-1)[order].diff() <= 1e-12).all()
    if solver == "exact":
        assert res.gain == res.gain_exact and res.n_iter == 0
        assert torch.equal(res.particle_grad, exact_particle_grad(res.policy_particles, res.ref_particles, "cvar:0.5"))
    else:
        assert res.n_iter > 0 and res.eps_abs > 0 and res.gain >= res.gain_exact - 1e-9
    if density == "constant":
        assert res.bandwidth is None and torch.equal(res.density, torch.ones(16, dtype=torch.float64))
    else:
        assert res.bandwidth == pytest.approx(silverman_bandwidth(costs))


@pytest.mark.parametrize("spec", ["cvar:0.9", "uniform"])
def test_dominance_step_by_newton_equals_pots_semi_dual(spec):
    # The tiny preset's per-step call: 32 prompts x 4 learned-like costs against 64 reference particles.
    costs, ref = _learned_like(128, 50).reshape(32, 4), empirical_quantiles(_learned_like(128, 51), 64)
    new = dominance_step(costs, ref, spec, n_particles=64)
    old = dominance_step(costs, ref, spec, n_particles=64, sinkhorn_method="semi_dual")
    assert (new.sinkhorn_method, old.sinkhorn_method) == ("newton", "semi_dual")
    assert new.marginal_error <= 1e-9 and old.marginal_error <= 1e-6
    assert (new.gain_exact, new.violation_exact) == (old.gain_exact, old.violation_exact)
    assert new.gain == pytest.approx(old.gain, abs=1e-7) and new.violation == pytest.approx(old.violation, abs=1e-7)
    assert torch.allclose(new.particle_grad, old.particle_grad, atol=1e-7, rtol=0)
    # the signal divides by the KDE density at the particles: compare relative to its scale
    for a, b in ((new.signal, old.signal), (new.violation_signal, old.violation_signal)):
        assert torch.allclose(a, b, atol=1e-7 * float(b.abs().max()), rtol=0)


def test_dominance_step_without_n_particles_uses_reference_size():
    res = dominance_step(_generic(50, 29), _generic(10, 30), solver="exact")
    assert res.policy_particles.shape == (10,)
    assert torch.equal(res.ref_particles, _generic(10, 30).sort().values)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"solver": "lp"}, "solver='lp'"),
        ({"density": "gamma"}, "density='gamma'"),
        ({"sinkhorn_grad": "fd"}, "sinkhorn grad"),
        ({"eps": 0.0}, "eps"),
        ({"max_iter": 0}, "max_iter"),
        ({"bandwidth": -1.0}, "bandwidth"),
        ({"indicator_bandwidth": 0.0}, "indicator_bandwidth"),
        ({"n_particles": 0}, "n_particles"),
        ({"weighting": "cvar:2"}, "alpha"),
    ],
)
def test_dominance_step_rejects_bad_settings(kwargs, needle):
    with pytest.raises(ConfigError) as info:
        dominance_step(_generic(20, 31), _generic(20, 32), **kwargs)
    assert needle in str(info.value)


def test_dominance_step_rejects_non_finite_costs():
    costs = _generic(20, 33)
    costs[3] = float("nan")
    with pytest.raises(DataError, match="policy costs .* 1 of them NaN"):
        dominance_step(costs, _generic(20, 34))
    with pytest.raises(DataError, match="reference particles"):
        dominance_step(_generic(20, 33), torch.tensor([0.0, float("inf")]))
