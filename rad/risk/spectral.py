"""Spectral weightings w(t) on [0, 1] and the spectral risk measures they define.

A spectral weighting is a density on the quantile levels: w >= 0, integral 1,
and (for a proper spectral risk measure) non-decreasing, so high-cost quantiles
weigh at least as much as low ones.  The spectral risk of a cost X is

    rho_w(X) = integral_0^1 w(t) Q_X(t) dt .

Every weighting here also provides its primitive W(t) = integral_0^t w(s) ds in
closed form (a distortion function, W(0) = 0, W(1) = 1).  Discrete objects use
it instead of point evaluations of w:

* an atom sitting on quantile cell ((i-1)/N, i/N] gets the *cell mass*
  m_i = W(i/N) - W((i-1)/N), i.e. the exact integral of w over the cell;
* the *particle weight* is w_i = N m_i (the cell average of w, mean exactly 1).

Why cell masses and not w(t_i): the quantile function of an N-atom measure is
constant on each cell, so with cell masses rho_w of an empirical distribution
(and the FSD gain / violation between particle sets, see ``dominance.py``) are
computed *exactly* — Prop. 2 of the RAD paper then holds to rounding error.
Point evaluation at the cell midpoint would be a midpoint-rule approximation
that, for CVaR, puts all or nothing on the cell containing alpha, and for Wang
or exponential weights misses mass in the steep upper cell.

Parameter defaults (the paper's values were lost in extraction) are chosen here
and exposed: var(alpha=0.9, bandwidth=0.05), cvar(alpha=0.9), exponential(k=5),
power(g=3), wang(eta=0.75).

Config selects a weighting by name and parameters, e.g. ``"cvar:0.95"``,
``"var:0.9,0.02"``, ``"wang:eta=0.5"`` or ``get_weighting("power", g=2)``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

from rad.errors import ConfigError

__all__ = [
    "SpectralWeighting",
    "Uniform",
    "VaR",
    "CVaR",
    "Linear",
    "Exponential",
    "Power",
    "Wang",
    "WEIGHTINGS",
    "get_weighting",
    "weighting_from_spec",
    "as_weighting",
    "spectral_risk",
]


class SpectralWeighting(ABC):
    """A weighting w on [0, 1] with its closed-form primitive W.

    Subclasses declare ``name``, ``defaults`` (ordered parameter names with their
    default values, the order used by positional spec strings) and implement
    ``density`` and ``cumulative``.  Parameters are validated on construction.
    """

    name: ClassVar[str]
    defaults: ClassVar[dict[str, float]] = {}
    #: False only for the VaR bump, which is not a proper spectral weight.
    monotone: ClassVar[bool] = True

    def __init__(self, **params: float) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            allowed = ", ".join(self.defaults) or "none"
            raise ConfigError(
                f"weighting {self.name!r}: unknown parameter(s) {', '.join(unknown)}; "
                f"allowed: {allowed}"
            )
        values: dict[str, float] = {}
        for key, default in self.defaults.items():
            value = params.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(
                    f"weighting {self.name!r}: parameter {key} must be a number, got {value!r}"
                )
            if not math.isfinite(float(value)):
                raise ConfigError(
                    f"weighting {self.name!r}: parameter {key} must be finite, got {value!r}"
                )
            values[key] = float(value)
        self._params = values
        self._validate()

    def _validate(self) -> None:
        """Raise ConfigError when the parameters give no valid weighting."""

    def _require(self, ok: bool, key: str, expected: str) -> None:
        if not ok:
            raise ConfigError(
                f"weighting {self.name!r}: parameter {key}={self._params[key]!r}, expected {expected}"
            )

    @property
    def params(self) -> dict[str, float]:
        """The validated parameters (a copy)."""
        return dict(self._params)

    @property
    def spec(self) -> str:
        """Spec string that ``weighting_from_spec`` turns back into this weighting."""
        if not self._params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v!r}" for k, v in self._params.items())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SpectralWeighting) and self.spec == other.spec

    def __hash__(self) -> int:
        return hash(self.spec)

    @abstractmethod
    def density(self, t: Tensor) -> Tensor:
        """w(t), elementwise."""

    @abstractmethod
    def cumulative(self, t: Tensor) -> Tensor:
        """W(t) = integral_0^t w(s) ds, elementwise, with W(0) = 0 and W(1) = 1."""

    def __call__(self, t: Tensor) -> Tensor:
        return self.density(t)

    def cell_masses(
        self, n: int, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
    ) -> Tensor:
        """Exact integrals of w over the cells ((i-1)/n, i/n], i = 1..n (they sum to 1)."""
        if n < 1:
            raise ValueError(f"need at least one cell, got n={n}")
        edges = torch.arange(n + 1, dtype=torch.float64, device=device) / n
        cum = self.cumulative(edges)
        # The closed forms are exact at 0 and 1 in exact arithmetic; pin them so
        # the masses sum to one up to the rounding of the differences only.
        cum[0], cum[-1] = 0.0, 1.0
        return (cum[1:] - cum[:-1]).clamp_min(0.0).to(dtype)

    def particle_weights(
        self, n: int, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
    ) -> Tensor:
        """Cell averages w_i = n * cell mass of w (mean exactly 1): the w_i of the paper."""
        return n * self.cell_masses(n, dtype=dtype, device=device)


class Uniform(SpectralWeighting):
    """w(t) = 1: the mean."""

    name = "uniform"

    def density(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def cumulative(self, t: Tensor) -> Tensor:
        return t.clamp(0.0, 1.0)


class VaR(SpectralWeighting):
    """Smoothed Dirac at alpha: a Gaussian bump (sd ``bandwidth``) truncated to [0, 1] and renormalised.

    The exception to monotonicity: a bump decreases past alpha, so rho_w is not
    a coherent spectral risk measure (VaR itself is not one either).  It stays
    non-negative with unit integral, so Prop. 2 and the dominance machinery
    hold unchanged; rho_w -> VaR_alpha as the bandwidth -> 0.
    """

    name = "var"
    defaults = {"alpha": 0.9, "bandwidth": 0.05}
    monotone = False

    def _validate(self) -> None:
        self._require(0.0 <= self._params["alpha"] <= 1.0, "alpha", "a level in [0, 1]")
        self._require(self._params["bandwidth"] > 0.0, "bandwidth", "> 0")

    def _norm(self) -> tuple[float, float, float]:
        a, s = self._params["alpha"], self._params["bandwidth"]
        lo = 0.5 * math.erfc(a / s / math.sqrt(2.0))  # Phi(-a/s)
        hi = 0.5 * math.erfc(-(1.0 - a) / s / math.sqrt(2.0))  # Phi((1-a)/s)
        return a, s, hi - lo

    def density(self, t: Tensor) -> Tensor:
        a, s, z = self._norm()
        inside = (t >= 0) & (t <= 1)
        bump = torch.exp(-0.5 * ((t - a) / s) ** 2) / (s * math.sqrt(2.0 * math.pi) * z)
        return torch.where(inside, bump, torch.zeros_like(t))

    def cumulative(self, t: Tensor) -> Tensor:
        a, s, z = self._norm()
        tc = t.clamp(0.0, 1.0)
        return (torch.special.ndtr((tc - a) / s) - torch.special.ndtr(torch.full_like(tc, -a / s))) / z


class CVaR(SpectralWeighting):
    """w(t) = 1[t >= alpha] / (1 - alpha): mean of the worst (1 - alpha) fraction."""

    name = "cvar"
    defaults = {"alpha": 0.9}

    def _validate(self) -> None:
        self._require(0.0 <= self._params["alpha"] < 1.0, "alpha", "a level in [0, 1)")

    def density(self, t: Tensor) -> Tensor:
        a = self._params["alpha"]
        inside = (t >= a) & (t <= 1)
        return torch.where(inside, torch.full_like(t, 1.0 / (1.0 - a)), torch.zeros_like(t))

    def cumulative(self, t: Tensor) -> Tensor:
        a = self._params["alpha"]
        return (t.clamp(0.0, 1.0) - a).clamp_min(0.0) / (1.0 - a)


class Linear(SpectralWeighting):
    """w(t) = 2t."""

    name = "linear"

    def density(self, t: Tensor) -> Tensor:
        return torch.where((t >= 0) & (t <= 1), 2.0 * t, torch.zeros_like(t))

    def cumulative(self, t: Tensor) -> Tensor:
        return t.clamp(0.0, 1.0) ** 2


class Exponential(SpectralWeighting):
    """w(t) = k e^{kt} / (e^k - 1), k > 0 (exponential risk aversion)."""

    name = "exponential"
    defaults = {"k": 5.0}

    def _validate(self) -> None:
        self._require(self._params["k"] > 0.0, "k", "> 0 (k <= 0 is not increasing)")

    def density(self, t: Tensor) -> Tensor:
        k = self._params["k"]
        # Written with e^{k(t-1)} and expm1 so large k neither overflows nor cancels.
        w = k * torch.exp(k * (t - 1.0)) / -math.expm1(-k)
        return torch.where((t >= 0) & (t <= 1), w, torch.zeros_like(t))

    def cumulative(self, t: Tensor) -> Tensor:
        k = self._params["k"]
        tc = t.clamp(0.0, 1.0)
        return torch.exp(k * (tc - 1.0)) * -torch.expm1(-k * tc) / -math.expm1(-k)


class Power(SpectralWeighting):
    """w(t) = g t^{g-1}, g >= 1 (g = 1 is the mean, g = 2 the linear weighting)."""

    name = "power"
    defaults = {"g": 3.0}

    def _validate(self) -> None:
        self._require(self._params["g"] >= 1.0, "g", ">= 1 (g < 1 is decreasing)")

    def density(self, t: Tensor) -> Tensor:
        g = self._params["g"]
        return torch.where((t >= 0) & (t <= 1), g * t.clamp(0.0, 1.0) ** (g - 1.0), torch.zeros_like(t))

    def cumulative(self, t: Tensor) -> Tensor:
        return t.clamp(0.0, 1.0) ** self._params["g"]


class Wang(SpectralWeighting):
    """Wang transform: w(t) = exp(eta Phi^{-1}(t) - eta^2/2), eta > 0; W(t) = Phi(Phi^{-1}(t) - eta)."""

    name = "wang"
    defaults = {"eta": 0.75}

    def _validate(self) -> None:
        self._require(self._params["eta"] > 0.0, "eta", "> 0")

    def density(self, t: Tensor) -> Tensor:
        eta = self._params["eta"]
        w = torch.exp(eta * torch.special.ndtri(t.clamp(0.0, 1.0)) - 0.5 * eta * eta)
        return torch.where((t >= 0) & (t <= 1), w, torch.zeros_like(t))

    def cumulative(self, t: Tensor) -> Tensor:
        return torch.special.ndtr(torch.special.ndtri(t.clamp(0.0, 1.0)) - self._params["eta"])


#: Weightings selectable by name; "mean" is an alias of "uniform".
WEIGHTINGS: dict[str, type[SpectralWeighting]] = {
    cls.name: cls for cls in (Uniform, VaR, CVaR, Linear, Exponential, Power, Wang)
}
_ALIASES = {"mean": "uniform"}


def get_weighting(name: str, **params: float) -> SpectralWeighting:
    """The weighting called ``name`` (see ``WEIGHTINGS``) with keyword parameters."""
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in WEIGHTINGS:
        allowed = ", ".join([*WEIGHTINGS, *_ALIASES])
        raise ConfigError(f"unknown spectral weighting {name!r}; allowed: {allowed}")
    return WEIGHTINGS[key](**params)


def _parse_number(spec: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"weighting spec {spec!r}: {text!r} is not a number") from None


def weighting_from_spec(spec: str) -> SpectralWeighting:
    """Parse ``"name"``, ``"name:v1,v2"`` (positional, in ``defaults`` order) or ``"name:key=v,..."``."""
    name, _, rest = spec.partition(":")
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in WEIGHTINGS:
        allowed = ", ".join([*WEIGHTINGS, *_ALIASES])
        raise ConfigError(f"unknown spectral weighting {name.strip()!r} in spec {spec!r}; allowed: {allowed}")
    order = list(WEIGHTINGS[key].defaults)
    params: dict[str, float] = {}
    parts = [p.strip() for p in rest.split(",")] if rest.strip() else []
    for pos, part in enumerate(parts):
        if "=" in part:
            k, _, v = part.partition("=")
            params[k.strip()] = _parse_number(spec, v.strip())
        elif pos < len(order):
            params[order[pos]] = _parse_number(spec, part)
        else:
            raise ConfigError(
                f"weighting spec {spec!r}: too many values; {key} takes {', '.join(order) or 'none'}"
            )
    return get_weighting(key, **params)


def as_weighting(weighting: SpectralWeighting | str | None) -> SpectralWeighting:
    """Accept a weighting object, a spec string, or None (uniform)."""
    if weighting is None:
        return Uniform()
    if isinstance(weighting, SpectralWeighting):
        return weighting
    if isinstance(weighting, str):
        return weighting_from_spec(weighting)
    raise ConfigError(f"expected a spectral weighting or a spec string, got {type(weighting).__name__}")


def spectral_risk(values: Tensor, weighting: SpectralWeighting | str | None = None, dim: int = -1) -> Tensor:
    """rho_w of the equally weighted atoms ``values`` along ``dim`` (a sample or a particle set).

    The i-th smallest atom carries the cell mass of w over ((i-1)/M, i/M], so
    the result is the exact spectral risk of the empirical distribution.
    Computed in float64; batched over the other dimensions.
    """
    w = as_weighting(weighting)
    x = values.movedim(dim, -1).to(torch.float64)
    if x.shape[-1] == 0:
        raise ValueError("spectral risk of an empty sample is undefined")
    masses = w.cell_masses(x.shape[-1], device=x.device)
    return (x.sort(dim=-1).values * masses).sum(-1)

