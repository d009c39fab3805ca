"""Spectral weightings: shape properties, closed-form spectral risks, config parsing."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from rad.errors import ConfigError
from rad.risk.spectral import (
    WEIGHTINGS,
    CVaR,
    get_weighting,
    spectral_risk,
    weighting_from_spec,
)

SPECS = [
    "uniform",
    "var:0.9,0.05",
    "var:0.02,0.1",
    "cvar:0.9",
    "cvar:0",
    "linear",
    "exponential:5",
    "exponential:60",
    "power:1",
    "power:3.5",
    "wang:0.75",
    "wang:2",
]


def _grid(n: int = 20001) -> torch.Tensor:
    return torch.linspace(0.0, 1.0, n, dtype=torch.float64)


@pytest.mark.parametrize("spec", SPECS)
def test_weighting_is_a_density_on_levels(spec):
    w = weighting_from_spec(spec)
    t = _grid()
    vals = w(t)
    assert torch.isfinite(vals[:-1]).all()
    assert (vals >= 0).all()
    if w.monotone:
        assert (vals[1:] - vals[:-1] >= -1e-12).all()
    # Integral by adaptive quadrature, independent of the closed-form primitive;
    # the CVaR jump is handed to quad as a breakpoint.
    brk = [w.params["alpha"]] if w.name == "cvar" else None
    total, _ = integrate.quad(lambda x: float(w(torch.tensor([x], dtype=torch.float64))), 0, 1, points=brk, limit=200)
    assert total == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("spec", SPECS)
def test_cumulative_is_the_primitive(spec):
    w = weighting_from_spec(spec)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    assert w.cumulative(t).tolist() == pytest.approx([0.0, 1.0], abs=1e-12)
    for x in (0.13, 0.5, 0.77, 0.95):
        exact, _ = integrate.quad(lambda s: float(w(torch.tensor([s], dtype=torch.float64))), 0, x, limit=200)
        assert float(w.cumulative(torch.tensor([x], dtype=torch.float64))) == pytest.approx(exact, abs=1e-7)


@pytest.mark.parametrize("spec", SPECS)
def test_cell_masses_and_particle_weights(spec):
    w = weighting_from_spec(spec)
    m = w.cell_masses(37)
    assert (m >= 0).all()
    assert float(m.sum()) == pytest.approx(1.0, abs=1e-12)
    pw = w.particle_weights(37)
    assert float(pw.mean()) == pytest.approx(1.0, abs=1e-12)
    if w.monotone:
        assert (m[1:] - m[:-1] >= -1e-14).all()


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(["cvar", "exponential", "power", "wang"]),
    u=st.floats(0.0, 0.95),
)
def test_random_parameters_keep_weighting_properties(name, u):
    params = {"cvar": {"alpha": u}, "exponential": {"k": 0.01 + 40 * u}, "power": {"g": 1 + 10 * u},
              "wang": {"eta": 0.01 + 3 * u}}[name]
    w = get_weighting(name, **params)
    m = w.cell_masses(64)
    assert (m >= 0).all() and float(m.sum()) == pytest.approx(1.0, abs=1e-12)
    assert (m[1:] - m[:-1] >= -1e-14).all()


def _exact_quantile_particles(ppf, n=200_000):
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return torch.from_numpy(ppf(t.numpy()))


def test_mean_is_uniform_weighting():
    x = torch.randn(101, dtype=torch.float64)
    assert float(spectral_risk(x, "uniform")) == pytest.approx(float(x.mean()), abs=1e-12)
    assert float(spectral_risk(x, "mean")) == pytest.approx(float(x.mean()), abs=1e-12)


def test_cvar_of_a_sample_is_the_mean_of_its_worst_tail():
    x = torch.randn(200, dtype=torch.float64)
    top = x.sort().values[-20:]
    assert float(spectral_risk(x, CVaR(alpha=0.9))) == pytest.approx(float(top.mean()), abs=1e-12)


def test_spectral_risk_is_batched_along_dim():
    x = torch.randn(3, 50, dtype=torch.float64)
    batched = spectral_risk(x.T, "wang:0.5", dim=0)
    single = torch.stack([spectral_risk(row, "wang:0.5") for row in x])
    assert torch.allclose(batched, single, atol=1e-14)


@pytest.mark.parametrize("alpha", [0.5, 0.9, 0.99])
def test_closed_forms_cvar(alpha):
    unif = _exact_quantile_particles(stats.uniform.ppf)
    assert float(spectral_risk(unif, CVaR(alpha=alpha))) == pytest.approx((1 + alpha) / 2, abs=1e-6)
    mu, s = 0.7, 2.0
    normal = mu + s * _exact_quantile_particles(stats.norm.ppf)
    expected = mu + s * stats.norm.pdf(stats.norm.ppf(alpha)) / (1 - alpha)
    assert float(spectral_risk(normal, CVaR(alpha=alpha))) == pytest.approx(expected,
                                                                           abs=2e-3 if alpha == 0.99 else 5e-4)


def test_closed_forms_other_weightings():
    unif = _exact_quantile_particles(stats.uniform.ppf)
    for g in (1.0, 2.0, 4.5):
        assert float(spectral_risk(unif, get_weighting("power", g=g))) == pytest.approx(g / (g + 1), abs=1e-8)
    assert float(spectral_risk(unif, "linear")) == pytest.approx(2 / 3, abs=1e-8)
    k = 3.0
    expected = (k * math.exp(k) - math.exp(k) + 1) / (k * (math.exp(k) - 1))
    assert float(spectral_risk(unif, get_weighting("exponential", k=k))) == pytest.approx(expected, abs=1e-8)
    # Wang's transform shifts a normal by eta * sd.
    mu, s, eta = -0.3, 1.5, 0.6
    normal = mu + s * _exact_quantile_particles(stats.norm.ppf)
    assert float(spectral_risk(normal, get_weighting("wang", eta=eta))) == pytest.approx(mu + s * eta, abs=1e-3)


def test_var_bump_approaches_the_quantile():
    # Linear quantile function: a symmetric bump inside [0, 1] gives exactly alpha.
    unif = _exact_quantile_particles(stats.uniform.ppf)
    assert float(spectral_risk(unif, "var:0.5,0.05")) == pytest.approx(0.5, abs=1e-8)
    normal = _exact_quantile_particles(stats.norm.ppf)
    for bw, tol in ((0.02, 0.02), (0.005, 2e-3)):
        rho = float(spectral_risk(normal, get_weighting("var", alpha=0.9, bandwidth=bw)))
        assert rho == pytest.approx(stats.norm.ppf(0.9), abs=tol)


def test_registry_and_spec_round_trip():
    assert set(WEIGHTINGS) == {"uniform", "var", "cvar", "linear", "exponential", "power", "wang"}
    for spec in SPECS:
        w = weighting_from_spec(spec)
        assert weighting_from_spec(w.spec) == w
    w = weighting_from_spec("var: alpha=0.95, bandwidth=0.01")
    assert w.params == {"alpha": 0.95, "bandwidth": 0.01}
    assert weighting_from_spec("var:0.8").params == {"alpha": 0.8, "bandwidth": 0.05}
    assert get_weighting("Wang").params == {"eta": 0.75}


@pytest.mark.parametrize(
    "call, needle",
    [
        (lambda: get_weighting("gaussian"), "allowed: uniform, var, cvar"),
        (lambda: weighting_from_spec("nope:1"), "allowed"),
        (lambda: get_weighting("cvar", beta=0.5), "allowed: alpha"),
        (lambda: get_weighting("cvar", alpha=1.0), "[0, 1)"),
        (lambda: get_weighting("power", g=0.5), ">= 1"),
        (lambda: get_weighting("wang", eta=0.0), "> 0"),
        (lambda: get_weighting("exponential", k=-1.0), "> 0"),
        (lambda: get_weighting("var", bandwidth=0.0), "> 0"),
        (lambda: get_weighting("var", alpha=1.5), "[0, 1]"),
        (lambda: get_weighting("cvar", alpha=float("nan")), "finite"),
        (lambda: get_weighting("cvar", alpha=True), "number"),
        (lambda: weighting_from_spec("cvar:abc"), "not a number"),
        (lambda: weighting_from_spec("cvar:0.9,0.1"), "too many"),
        (lambda: weighting_from_spec("linear:2"), "too many"),
    ],
)
def test_bad_weightings_raise_config_error(call, needle):
    with pytest.raises(ConfigError, match=None) as info:
        call()
    assert needle in str(info.value)


def test_densities_match_numpy_references():
    t = np.linspace(0.01, 0.99, 7)
    tt = torch.from_numpy(t)
    eta = 0.75
    assert np.allclose(get_weighting("wang", eta=eta)(tt).numpy(), np.exp(eta * stats.norm.ppf(t) - eta**2 / 2))
    k = 5.0
    assert np.allclose(get_weighting("exponential", k=k)(tt).numpy(), k * np.exp(k * t) / (np.exp(k) - 1))
    a, s = 0.9, 0.05
    z = stats.norm.cdf((1 - a) / s) - stats.norm.cdf(-a / s)
    assert np.allclose(get_weighting("var", alpha=a, bandwidth=s)(tt).numpy(), stats.norm.pdf(t, a, s) / z)
