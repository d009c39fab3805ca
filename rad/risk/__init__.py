"""Risk mathematics: spectral weightings and first-order stochastic dominance (no models, no Ray)."""

from rad.risk.dominance import (
    DEFAULT_EPS,
    DominanceResult,
    SinkhornFSD,
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
from rad.risk.spectral import (
    WEIGHTINGS,
    SpectralWeighting,
    as_weighting,
    get_weighting,
    spectral_risk,
    weighting_from_spec,
)

__all__ = [
    "DEFAULT_EPS",
    "DominanceResult",
    "SinkhornFSD",
    "SpectralWeighting",
    "WEIGHTINGS",
    "as_weighting",
    "dominance_signal",
    "dominance_step",
    "empirical_gain_violation",
    "empirical_quantiles",
    "exact_particle_grad",
    "exact_violation_grad",
    "fsd_exact",
    "fsd_sinkhorn",
    "get_weighting",
    "kde_density",
    "quantile_levels",
    "silverman_bandwidth",
    "spectral_risk",
    "weighting_from_spec",
]
