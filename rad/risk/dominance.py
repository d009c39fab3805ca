"""First-order stochastic dominance (FSD) between cost distributions, and the RAD policy signal.

Everything the RAD learner needs once per step, as pure tensor functions:

1. quantile particles of the policy's and the reference's costs;
2. the weighted FSD gain / violation between them, exactly (sorting) or through
   entropic optimal transport (POT, log-domain Sinkhorn);
3. the particle gradient g_i = d gain / d q_i;
4. the quantile-gradient machinery (density at each particle, indicator) that
   turns g into a per-sample dominance signal s(x, y), so that
   grad gain = E[s(x, y) grad log pi(y|x)].

RLOO advantages live in ``rad/algos/advantages.py``, the multipliers' controllers in
``rad/algos/dual.py``.

Conventions (docs/math.md section 2):

* Quantile levels t_i = (i - 1/2)/N.  The particles of a sample c_1..c_M are
  q_i = Q_M(t_i) = inf{z : F_M(z) >= t_i} = c_(ceil(M t_i)), the left-continuous
  inverse of the empirical CDF, without interpolation (so with M = N the
  particles are exactly the sorted sample).
* The N particles represent the measure sum_i m_i delta_{q_(i)} restricted to
  quantile cells: level i owns the cell ((i-1)/N, i/N] and the cell mass
  m_i = integral of w over it (``SpectralWeighting.cell_masses``); the paper's
  particle weights are w_i = N m_i (mean 1).  With this discretisation
  gain_w - viol_w = rho_w(ref particles) - rho_w(policy particles) holds exactly
  (Prop. 2), for every weighting.
* Weighted OT — a deliberate choice (docs/math.md section 2).  The alternative is the
  row-weighted cost C_ij = w_i (p_j - q_i)_+ with uniform marginals.  That cost
  is not a Monge cost once w is non-constant: OT may re-pair particles and its
  value then falls *below* integral w (Q_ref - Q_pi)_+.  Example: q = (0, 0.1),
  p = (0.2, 1), w = (0.5, 1.5): the sorted pairing costs (0.1 + 1.35)/2 = 0.725,
  the crossed pairing (0.5 + 0.15)/2 = 0.325, so OT reports 0.325 instead of the
  quantile gain 0.725.  Instead the weighting goes into the marginals: both
  particle sets carry masses a = b = (m_1..m_N) and the cost stays
  C_ij = (p_j - q_i)_+.  Substituting s = W(t) shows
  integral w(t) h(Q_ref(t) - Q_pi(t)) dt is the 1-D OT cost of h between the
  re-massed measures, so for every weighting OT (``ot.emd2``) equals the sorted
  formula gain = sum_i m_i (p_(i) - q_(i))_+ = (1/N) sum_i w_i (...)_+, and the
  Sinkhorn particle gradient tends to the exact subgradient
  -(w_i/N) 1[p_(i) > q_(i)] (the paper's "extra factor w_i").  For uniform w the
  two formulations coincide.  Particles with zero mass (below alpha for CVaR)
  are left out of the OT problem; their gradient is 0.
* Entropic OT: eps is given *relative to the cost scale*, the spread
  max - min of the pooled particles that carry mass (a bound on every C_ij);
  the absolute regulariser is eps * spread.  POT's ``sinkhorn_log`` solves
  min_P <P, C> + eps_abs sum P log P; gain_eps = <P, C> (the transport part),
  viol_eps = <P, (q_i - p_j)_+> under the same plan, so
  gain_eps - viol_eps = rho_w(ref) - rho_w(pi) up to the marginal error.
* How the entropic plan is computed (``method``; "auto" picks per problem, all
  the same plan up to ``tol``):
  - ``"newton"`` (auto with the envelope gradient when at most
    ``NEWTON_MAX_SIZE`` = 64 particles carry mass, e.g. the ~7 a CVaR-0.9
    weighting leaves of 64): the same semi-dual as ``"semi_dual"`` (POT's
    smooth-OT form, negentropy regulariser) maximised by a damped Newton method
    with its exact Hessian, in vectorised float64 numpy (``_entropic_newton``).
    The semi-dual is concave, its gradient is a - P 1 and its Hessian
    -(diag(P 1) - P diag(1/a) P^T) / eps_abs (a Laplacian-like matrix whose null
    space is the constant vector: the last potential is held at 0).  Each step
    is capped at 10 eps_abs per potential and backtracked until the objective
    improves (or, at rounding level, the marginal error); it stops when the
    row-marginal L1 error is <= ``tol`` (4-30 steps on learned-cost inputs at
    eps 0.01) and hands the problem to
    ``"semi_dual"`` if it does not get there within ``max_iter`` steps.  No
    step calls a multi-threaded BLAS routine (the Hessian is an ``einsum``,
    the solve is below OpenBLAS's threading size): on a loaded machine
    OpenBLAS's threads inside scipy's L-BFGS-B made ``"semi_dual"`` up to 100x
    slower (``bench/results/README.md``).
  - ``"semi_dual"`` (auto up to ``SEMI_DUAL_MAX_SIZE`` = 256 particles with
    mass; the reference ``"newton"`` is tested against): POT's smooth-OT
    semi-dual of the same problem (Blondel et al. 2018) maximised by scipy's
    L-BFGS-B in 20-90 objective evaluations.  Costs from a learned cost model
    are tied and discrete; on such problems Sinkhorn converges linearly at a
    rate near 1 and in RL runs half the steps hit 1000 iterations with a
    marginal error of ~4e-4, while both semi-dual solvers reach 1e-9.
  - ``"scaling"`` (auto above 256 particles when max C / eps_abs <=
    ``SCALING_MAX_RATIO`` = 200, i.e. every relative eps >= 0.005): Sinkhorn with
    the kernel K = exp(-C/eps_abs) formed once (K >= e^-200 ~ 1e-87, far from
    float64 underflow), two mat-vecs per iteration instead of two log-sum-exps;
    it falls back to the log domain if POT reports a numerical failure.
  - ``"log"``: the log-domain ``sinkhorn_log`` on the inputs' device;
    the only path with ``grad="autograd"`` and the one for smaller eps.
  ``python -m bench.dominance`` measures them side by side.
* Particle gradient for Sinkhorn: ``"envelope"`` (default) is
  g_i = -sum_j P_ij 1[p_j > q_i], the exact gradient of the regularised
  objective (envelope theorem), always <= 0 and cheap; ``"autograd"``
  differentiates <P, C> through the unrolled Sinkhorn iterations (memory
  O(iterations * N^2): small N only) and may have small positive entries.
  Both tend to the exact subgradient as eps -> 0.
* Quantile gradient: grad q = -grad F(q) / f(q) with
  grad F(q) = E[1{c <= q} grad log pi].  f is a Gaussian KDE of the batch costs
  (Silverman bandwidth by default) or the constant 1 (then its scale is
  absorbed in lambda).  The indicator may be smoothed to Phi((q - c)/h).
  The per-sample signal s(c) = sum_i (-g_i) 1{c <= q_i} / f(q_i) >= 0 carries no
  gradient.

All outputs are float64 on the device of the inputs.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import ot
import torch
from torch import Tensor

from rad.errors import ConfigError, DataError
from rad.risk.spectral import SpectralWeighting, as_weighting, spectral_risk

__all__ = [
    "DEFAULT_EPS",
    "quantile_levels",
    "empirical_quantiles",
    "fsd_exact",
    "exact_particle_grad",
    "empirical_gain_violation",
    "SinkhornFSD",
    "fsd_sinkhorn",
    "silverman_bandwidth",
    "kde_density",
    "dominance_signal",
    "DominanceResult",
    "dominance_step",
]

#: Default entropic regulariser, relative to the spread of the pooled particles.
DEFAULT_EPS = 0.01

#: Largest max(C) / eps_abs at which Sinkhorn runs in the scaling domain (see the module docstring).
SCALING_MAX_RATIO = 200.0
#: Largest support (particles with mass) solved through the semi-dual by default (see the module docstring).
SEMI_DUAL_MAX_SIZE = 256
#: Largest support solved by Newton's method on the semi-dual by default (see the module docstring).
NEWTON_MAX_SIZE = 64
# Newton on the semi-dual: the largest change of one potential per step, in units of eps_abs (a longer step
# overshoots where the log-sum-exp is nearly linear), and the ridge added to the Hessian, relative to the
# largest mass (rows whose plan is one saturated entry have ~0 curvature in float64).
_NEWTON_STEP_CAP = 10.0
_NEWTON_RIDGE = 1e-9
# Steps without a new lowest marginal error after which Newton gives up (tol below what float64 reaches).
_NEWTON_PATIENCE = 30

# Elements per block when a [points x samples] matrix is formed (KDE, smoothed
# indicator): bounds memory at ~32 MiB of float64 whatever the batch size.
_BLOCK = 1 << 22

_SOLVERS = ("exact", "sinkhorn")
_SINKHORN_GRADS = ("envelope", "autograd")
_SINKHORN_METHODS = ("auto", "newton", "semi_dual", "scaling", "log")
_DENSITIES = ("kde", "constant")


def _choice(value: str, allowed: tuple[str, ...], key: str) -> str:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not supported; allowed: {', '.join(allowed)}")
    return value


def quantile_levels(n: int, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
    """t_i = (i - 1/2)/n for i = 1..n."""
    if n < 1:
        raise ConfigError(f"n_particles must be >= 1, got {n}")
    return (torch.arange(n, dtype=dtype, device=device) + 0.5) / n


def empirical_quantiles(costs: Tensor, n: int) -> Tensor:
    """Particles q_i = inf{z : F_M(z) >= t_i} of the samples along the last dim -> [..., n] (float64).

    Index arithmetic is done in integers (ceil(M (2i-1) / 2n)), so no level is
    misplaced by rounding; differentiable w.r.t. ``costs`` (a gather of a sort).
    """
    if n < 1:
        raise ConfigError(f"n_particles must be >= 1, got {n}")
    m = costs.shape[-1]
    if m == 0:
        raise ValueError("cannot take quantiles of an empty cost sample")
    i = torch.arange(1, n + 1, device=costs.device)
    idx = (m * (2 * i - 1) + 2 * n - 1) // (2 * n) - 1
    ordered = costs.to(torch.float64).sort(dim=-1).values
    return ordered.index_select(-1, idx)


def _check_pair(policy: Tensor, ref: Tensor) -> None:
    if policy.shape[-1] != ref.shape[-1]:
        raise ValueError(
            f"policy and reference particle sets must have the same size N, "
            f"got {policy.shape[-1]} and {ref.shape[-1]}"
        )
    if policy.shape[-1] == 0:
        raise ValueError("particle sets are empty")


def fsd_exact(
    policy_particles: Tensor, ref_particles: Tensor, weighting: SpectralWeighting | str | None = None
) -> tuple[Tensor, Tensor]:
    """(gain_w, viol_w) between two N-particle sets, exactly, batched over leading dims.

    gain = sum_i m_i (p_(i) - q_(i))_+, viol = sum_i m_i (q_(i) - p_(i))_+ with
    m_i the cell masses of w.  Differentiable (autograd gives the subgradient
    of ``exact_particle_grad``, with relu'(0) = 0).
    """
    _check_pair(policy_particles, ref_particles)
    w = as_weighting(weighting)
    q = policy_particles.to(torch.float64).sort(dim=-1).values
    p = ref_particles.to(torch.float64).sort(dim=-1).values
    m = w.cell_masses(q.shape[-1], device=q.device)
    d = p - q
    return (m * torch.relu(d)).sum(-1), (m * torch.relu(-d)).sum(-1)


def exact_particle_grad(
    policy_particles: Tensor, ref_particles: Tensor, weighting: SpectralWeighting | str | None = None
) -> Tensor:
    """Closed-form subgradient of the exact gain: g_i = -m_(i) 1[p_(i) > q_(i)], in the input order of q.

    m_(i) = w_i / N is the cell mass of the rank of q_i.  Ties q_i = p_(i) get 0.
    Batched over leading dims.
    """
    _check_pair(policy_particles, ref_particles)
    w = as_weighting(weighting)
    q_sorted, order = policy_particles.detach().to(torch.float64).sort(dim=-1)
    p = ref_particles.detach().to(torch.float64).sort(dim=-1).values
    m = w.cell_masses(q_sorted.shape[-1], device=q_sorted.device)
    g_sorted = -m * (p > q_sorted).to(torch.float64)
    return torch.empty_like(g_sorted).scatter_(-1, order, g_sorted)


def exact_violation_grad(
    policy_particles: Tensor, ref_particles: Tensor, weighting: SpectralWeighting | str | None = None
) -> Tensor:
    """Closed-form subgradient of the exact violation: v_i = m_(i) 1[q_(i) > p_(i)], in the input order of q.

    Non-zero exactly where the gain's subgradient is zero with the policy above the
    reference, which is where a policy that trails at every weighted quantile still
    needs a direction (the gain alone gives none there).
    """
    _check_pair(policy_particles, ref_particles)
    w = as_weighting(weighting)
    q_sorted, order = policy_particles.detach().to(torch.float64).sort(dim=-1)
    p = ref_particles.detach().to(torch.float64).sort(dim=-1).values
    m = w.cell_masses(q_sorted.shape[-1], device=q_sorted.device)
    v_sorted = m * (q_sorted > p).to(torch.float64)
    return torch.empty_like(v_sorted).scatter_(-1, order, v_sorted)


def empirical_gain_violation(
    policy_costs: Tensor, ref_costs: Tensor, weighting: SpectralWeighting | str | None = None
) -> tuple[Tensor, Tensor]:
    """Exact (gain_w, viol_w) between two 1-D samples of any sizes (no particles, no OT).

    Both empirical quantile functions are step functions; on the merged grid
    {k/M} U {l/L} both are constant, so integrating w against the gaps cell by
    cell (with W's closed form) is exact.  This is the evaluation metric of the
    paper's Table 3: gain - viol = rho_w(ref) - rho_w(policy).
    """
    w = as_weighting(weighting)
    x = policy_costs.detach().to(torch.float64).reshape(-1).sort().values
    y = ref_costs.detach().to(torch.float64).reshape(-1).sort().values
    m, n = x.numel(), y.numel()
    if m == 0 or n == 0:
        raise ValueError("policy and reference samples must be non-empty")
    # k/m and l/n are correctly rounded, so equal fractions give equal floats
    # and unique() removes them; distinct breakpoints differ by >= 1/(m n).
    edges = torch.unique(
        torch.cat([torch.arange(m + 1, dtype=torch.float64) / m, torch.arange(n + 1, dtype=torch.float64) / n])
    ).to(x.device)
    mid = 0.5 * (edges[1:] + edges[:-1])
    ix = torch.floor(mid * m).long().clamp_max(m - 1)
    iy = torch.floor(mid * n).long().clamp_max(n - 1)
    cum = w.cumulative(edges)
    cum[0], cum[-1] = 0.0, 1.0
    mass = (cum[1:] - cum[:-1]).clamp_min(0.0)
    d = y[iy] - x[ix]
    return (mass * torch.relu(d)).sum(), (mass * torch.relu(-d)).sum()


@dataclass(frozen=True)
class SinkhornFSD:
    """Entropic FSD between two particle sets.

    ``plan`` is N x N over the *sorted* particles (rows: policy ascending,
    columns: reference ascending); rows/columns of zero-mass levels are 0.
    ``particle_grad`` is in the input order of the policy particles.
    """

    gain: float
    violation: float
    #: <P, C> + eps_abs * sum P log P, the objective whose gradient the envelope form is.
    entropic_objective: float
    plan: Tensor
    particle_grad: Tensor
    eps_abs: float
    #: Sinkhorn iterations, or objective evaluations for the semi-dual.
    n_iter: int
    #: "newton", "semi_dual", "scaling" or "log": how the plan was computed (module docstring).
    method: str
    #: L1 error of the plan's row plus column marginals (convergence diagnostic).
    marginal_error: float


def fsd_sinkhorn(
    policy_particles: Tensor,
    ref_particles: Tensor,
    weighting: SpectralWeighting | str | None = None,
    *,
    eps: float = DEFAULT_EPS,
    max_iter: int = 1000,
    tol: float = 1e-9,
    grad: str = "envelope",
    method: str = "auto",
) -> SinkhornFSD:
    """Entropic-OT FSD gain / violation and particle gradient (1-D particle sets of equal size N).

    ``eps`` is relative to the spread of the pooled particles; ``max_iter`` and
    ``tol`` (column-marginal L2 error, checked every 10 iterations by POT) bound
    the log-domain Sinkhorn loop; ``grad`` is ``"envelope"`` or ``"autograd"``.
    The absolute regulariser is a constant for differentiation: no gradient
    flows through the cost scale.  Inputs are not differentiated through;
    the gradient is returned as ``particle_grad``.  ``method``: ``"auto"``,
    ``"newton"``, ``"semi_dual"``, ``"scaling"`` (raises if the kernel would underflow) or
    ``"log"`` (module docstring); ``tol`` bounds the marginal error for each.
    """
    _check_pair(policy_particles, ref_particles)
    if policy_particles.dim() != 1 or ref_particles.dim() != 1:
        raise ValueError("fsd_sinkhorn takes 1-D particle sets")
    if not (eps > 0 and math.isfinite(eps)):
        raise ConfigError(f"sinkhorn eps must be a positive number (relative to the cost scale), got {eps!r}")
    if max_iter < 1:
        raise ConfigError(f"sinkhorn max_iter must be >= 1, got {max_iter}")
    if not tol > 0:
        raise ConfigError(f"sinkhorn tol must be > 0, got {tol!r}")
    _choice(grad, _SINKHORN_GRADS, "sinkhorn grad")
    _choice(method, _SINKHORN_METHODS, "sinkhorn method")
    if method in ("newton", "scaling", "semi_dual") and grad == "autograd":
        raise ConfigError(f"sinkhorn method={method!r} has no autograd path; use grad='envelope' or method='log'")
    w = as_weighting(weighting)

    n = policy_particles.shape[0]
    q_sorted, order = policy_particles.detach().to(torch.float64).sort()
    p_sorted = ref_particles.detach().to(torch.float64).sort().values
    masses = w.cell_masses(n, device=q_sorted.device)
    support = masses > 0
    a = masses[support] / masses[support].sum()
    q_s, p_s = q_sorted[support], p_sorted[support]

    pooled = torch.cat([q_s, p_s])
    spread = float(pooled.max() - pooled.min())
    eps_abs = eps * (spread if spread > 0 else 1.0)

    ratio = float((p_s.max() - q_s.min()).clamp_min(0.0)) / eps_abs  # max C / eps_abs
    if method == "scaling" and ratio > SCALING_MAX_RATIO:
        raise ConfigError(f"sinkhorn method='scaling' needs max(cost)/eps <= {SCALING_MAX_RATIO:g} (the kernel "
                          f"underflows beyond), got {ratio:.4g}; use method='log' or a larger eps")
    if method == "auto":
        size = q_s.numel()
        method = ("log" if grad == "autograd" else "newton" if size <= NEWTON_MAX_SIZE
                  else "semi_dual" if size <= SEMI_DUAL_MAX_SIZE else "scaling" if ratio <= SCALING_MAX_RATIO
                  else "log")
    solved = None
    if method in ("newton", "semi_dual", "scaling"):  # all run on the host in float64 numpy (latency-bound, small)
        mass = a.cpu().numpy()
        diff_np = p_s.cpu().numpy()[None, :] - q_s.cpu().numpy()[:, None]
        cost_np = diff_np.clip(min=0.0)
        if method == "newton":
            solved = _entropic_newton(mass, cost_np, eps_abs, max_iter, tol)
            method = method if solved is not None else "semi_dual"  # Newton did not reach tol: POT's solver
        if method in ("semi_dual", "scaling") and solved is None:
            solve = _entropic_semi_dual if method == "semi_dual" else _sinkhorn_scaling
            solved = solve(mass, cost_np, eps_abs, max_iter, tol)
            method = method if solved is not None else "log"  # only the scaling form can fail
    if solved is not None:
        plan_np, n_iter = solved
        plan, diff = torch.from_numpy(plan_np).to(q_s.device), torch.from_numpy(diff_np).to(q_s.device)
        cost = torch.relu(diff)
        gain = (plan * cost).sum()
    else:
        with torch.enable_grad():
            q_var = q_s.clone().requires_grad_(grad == "autograd")
            diff = p_s[None, :] - q_var[:, None]
            cost = torch.relu(diff)
            plan, log = ot.sinkhorn(
                a, a, cost, eps_abs, method="sinkhorn_log", numItermax=max_iter, stopThr=tol, log=True, warn=False
            )
            gain = (plan * cost).sum()
            if grad == "autograd":
                (g_s,) = torch.autograd.grad(gain, q_var)
        plan, gain, diff, cost = plan.detach(), gain.detach(), diff.detach(), cost.detach()
        n_iter = int(log["niter"]) + 1
    if grad == "envelope":
        g_s = -(plan * (diff > 0).to(plan.dtype)).sum(1)

    violation = (plan * torch.relu(-diff)).sum()
    entropic = gain + eps_abs * torch.special.xlogy(plan, plan).sum()
    marginal_error = (plan.sum(1) - a).abs().sum() + (plan.sum(0) - a).abs().sum()

    full_plan = torch.zeros(n, n, dtype=torch.float64, device=q_sorted.device)
    kept = support.nonzero().squeeze(1)
    full_plan[kept[:, None], kept[None, :]] = plan
    g_sorted = torch.zeros(n, dtype=torch.float64, device=q_sorted.device)
    g_sorted[support] = g_s
    g = torch.empty_like(g_sorted).scatter_(0, order, g_sorted)
    return SinkhornFSD(
        gain=float(gain),
        violation=float(violation),
        entropic_objective=float(entropic),
        plan=full_plan,
        particle_grad=g,
        eps_abs=eps_abs,
        n_iter=n_iter,
        method=method,
        marginal_error=float(marginal_error),
    )


def _entropic_newton(
    mass: np.ndarray, cost: np.ndarray, eps_abs: float, max_iter: int, tol: float
) -> tuple[np.ndarray, int] | None:
    """(plan, objective evaluations) of the entropic problem by damped Newton on its semi-dual; None if stuck.

    The semi-dual of ``_entropic_semi_dual`` (POT's ``semi_dual_obj_grad`` with ``NegEntropy``) in the scaled
    potentials u = alpha / eps_abs: F(u) = eps_abs (<u, a> - sum_j a_j (logsumexp_i(u_i - C_ij / eps_abs) - log a_j)),
    plan P_ij = a_j softmax_i(u_i - C_ij / eps_abs) (columns exact), gradient eps_abs (a - P 1), Hessian
    -eps_abs (diag(P 1) - P diag(1/a) P^T).  Stops when ||a - P 1||_1 <= ``tol``; None after ``max_iter`` steps
    or when the steps stop improving (``tol`` below float64's reach), so the caller can use POT's solver.
    """
    n = mass.size
    log_mass = np.log(mass)
    neg_scaled = cost * (-1.0 / eps_abs)
    ridge = _NEWTON_RIDGE * float(mass.max())
    inner = slice(0, n - 1)  # the last potential stays 0 (F is invariant to u + c 1)

    def evaluate(u: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, float]:
        plan = neg_scaled + u[:, None]
        top = plan.max(0)
        plan -= top
        np.exp(plan, out=plan)
        col = plan.sum(0)
        plan *= mass / col
        objective = float(u @ mass - mass @ (top + np.log(col) - log_mass))  # F / eps_abs
        grad = mass - plan.sum(1)
        return objective, plan, grad, float(np.abs(grad).sum())

    u = np.zeros(n)
    objective, plan, grad, err = evaluate(u)
    evals, best, since_best = 1, err, 0
    for _ in range(max_iter):
        if err <= tol:
            return plan, evals
        best, since_best = (err, 0) if err < best else (best, since_best + 1)
        if since_best > _NEWTON_PATIENCE:
            return None
        hess = np.einsum("ij,kj->ik", plan / mass, plan)  # P diag(1/a) P^T without BLAS threads
        np.negative(hess, out=hess)
        hess[np.diag_indices(n)] += mass - grad + ridge  # diag(P 1) = a - grad
        step = np.zeros(n)
        step[inner] = np.linalg.solve(hess[inner, inner], grad[inner])
        step *= min(1.0, _NEWTON_STEP_CAP / max(float(np.abs(step).max()), 1e-300))
        slope = float(grad @ step)
        t = 1.0
        while True:
            trial = evaluate(u + t * step)
            evals += 1
            # Armijo on the objective; near the optimum its changes drown in rounding, and there a step that
            # keeps it (to rounding) and lowers the marginal error is taken.
            if trial[0] >= objective + 1e-4 * t * slope or (
                    trial[0] >= objective - 1e-13 * (1.0 + abs(objective)) and trial[3] < err):
                break
            t *= 0.5
            if t < 1e-12:
                return None
        u = u + t * step
        objective, plan, grad, err = trial
    return (plan, evals) if err <= tol else None


def _entropic_semi_dual(
    mass: np.ndarray, cost: np.ndarray, eps_abs: float, max_iter: int, tol: float
) -> tuple[np.ndarray, int]:
    """(plan, objective evaluations) of the entropic problem from its semi-dual, POT's smooth-OT form.

    POT's ``ot.smooth`` objective, gradient and plan for the negentropy regulariser
    (Blondel et al. 2018), maximised by scipy's L-BFGS-B as ``smooth_ot_semi_dual``
    does, but stopping on the gradient alone: it is a - P 1 (the row-marginal error;
    the columns are exact by construction), so ``tol`` bounds it as it bounds
    Sinkhorn's marginal error.
    """
    from ot.smooth import NegEntropy, get_plan_from_semi_dual, semi_dual_obj_grad
    from scipy.optimize import minimize

    regul = NegEntropy(gamma=eps_abs)

    def negated(alpha: np.ndarray) -> tuple[float, np.ndarray]:
        obj, grad = semi_dual_obj_grad(alpha, mass, mass, cost, regul)
        return -obj, -grad

    res = minimize(negated, np.zeros_like(mass), method="L-BFGS-B", jac=True,
                   options={"maxiter": max_iter, "ftol": 0.0, "gtol": tol})
    return get_plan_from_semi_dual(res.x, mass, cost, regul), int(res.nfev)


def _sinkhorn_scaling(
    mass: np.ndarray, cost: np.ndarray, eps_abs: float, max_iter: int, tol: float
) -> tuple[np.ndarray, int] | None:
    """(plan, iterations) from POT's scaling-domain Sinkhorn; None on a numerical failure."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan, log = ot.sinkhorn(mass, mass, cost, eps_abs, method="sinkhorn", numItermax=max_iter,
                                stopThr=tol, log=True, warn=False)
    # POT stops with the previous scalings (and warns) if they over/underflow: redo it in the log domain.
    if any("numerical errors" in str(w.message) for w in caught) or not (np.isfinite(plan).all() and plan.sum() > 0):
        return None
    return plan, int(log["niter"]) + 1


def silverman_bandwidth(samples: Tensor) -> float:
    """Silverman's rule 0.9 min(sd, IQR/1.34) M^(-1/5), with R's ``bw.nrd0`` fallbacks.

    If the minimum is 0 the non-zero one of sd / IQR is used, then |x_1|, then 1,
    so a batch of identical costs still gets a positive bandwidth.
    """
    x = samples.detach().to(torch.float64).reshape(-1)
    if x.numel() == 0:
        raise ValueError("bandwidth of an empty sample is undefined")
    sd = float(x.std()) if x.numel() > 1 else 0.0
    q75, q25 = torch.quantile(x, torch.tensor([0.75, 0.25], dtype=torch.float64, device=x.device))
    iqr = float(q75 - q25) / 1.34
    scale = min(sd, iqr) or sd or iqr or abs(float(x[0])) or 1.0
    return 0.9 * scale * x.numel() ** -0.2


def kde_density(points: Tensor, samples: Tensor, bandwidth: float | None = None) -> Tensor:
    """Gaussian KDE of ``samples`` evaluated at ``points`` (1-D); Silverman bandwidth when None."""
    x = samples.detach().to(torch.float64).reshape(-1)
    pts = points.detach().to(torch.float64).reshape(-1)
    h = silverman_bandwidth(x) if bandwidth is None else float(bandwidth)
    if not h > 0:
        raise ConfigError(f"KDE bandwidth must be > 0, got {bandwidth!r}")
    out = torch.empty_like(pts)
    step = max(1, _BLOCK // max(1, x.numel()))
    norm = 1.0 / (x.numel() * h * math.sqrt(2.0 * math.pi))
    for start in range(0, pts.numel(), step):
        kern = pts[start : start + step, None] - x[None, :]
        # In place: this block is the hot spot of a dominance step (3x faster).  Exponents below -700
        # (a kernel value < 1e-304, far below the self term 1 that every particle has) are clamped:
        # torch's exp leaves its vector path for them and tied costs give many (measured 4-10x slower).
        kern.square_().mul_(-0.5 / (h * h)).clamp_(min=-700.0).exp_()
        out[start : start + step] = kern.sum(1) * norm
    return out


def dominance_signal(
    costs: Tensor,
    particles: Tensor,
    particle_grad: Tensor,
    density: Tensor | None = None,
    indicator_bandwidth: float | None = None,
) -> Tensor:
    """s(c) = sum_i (-g_i) 1{c <= q_i} / f(q_i) for every cost, same shape as ``costs`` (float64, no grad).

    ``density`` None means f = 1.  With ``indicator_bandwidth`` h the indicator
    is smoothed to Phi((q_i - c)/h).  The hard indicator is evaluated with a
    suffix sum over sorted particles and ``searchsorted`` (O((M + N) log N)).
    """
    c = costs.detach().to(torch.float64)
    q = particles.detach().to(torch.float64).reshape(-1)
    coef = -particle_grad.detach().to(torch.float64).reshape(-1)
    if density is not None:
        f = density.detach().to(torch.float64).reshape(-1)
        if not bool((f > 0).all()):
            raise ValueError("density estimates at the particles must be positive")
        coef = coef / f
    if coef.numel() != q.numel():
        raise ValueError(f"particle_grad has {coef.numel()} entries for {q.numel()} particles")
    flat = c.reshape(-1)
    if indicator_bandwidth is None:
        q_sorted, order = q.sort()
        suffix = torch.cat([coef[order].flip(0).cumsum(0).flip(0), coef.new_zeros(1)])
        first = torch.searchsorted(q_sorted, flat, side="left")  # first i with q_i >= c
        return suffix[first].reshape(c.shape)
    h = float(indicator_bandwidth)
    if not h > 0:
        raise ConfigError(f"indicator_bandwidth must be > 0 (or None for the hard indicator), "
                          f"got {indicator_bandwidth!r}")
    out = torch.empty_like(flat)
    step = max(1, _BLOCK // max(1, q.numel()))
    for start in range(0, flat.numel(), step):
        block = flat[start : start + step]
        out[start : start + step] = torch.special.ndtr((q[None, :] - block[:, None]) / h) @ coef
    return out.reshape(c.shape)


@dataclass(frozen=True)
class DominanceResult:
    """Everything one RAD step needs from the cost batch (tensors float64, scalars float)."""

    #: gain / violation from the chosen solver (entropic values for "sinkhorn").
    gain: float
    violation: float
    #: exact sorted gain / violation of the same particles (always computed; cheap).
    gain_exact: float
    violation_exact: float
    #: rho_w of the particle sets; rho_ref - rho_policy == gain_exact - violation_exact.
    rho_policy: float
    rho_ref: float
    policy_particles: Tensor  # [N], ascending
    ref_particles: Tensor  # [N], ascending
    particle_grad: Tensor  # [N], g_i = d gain / d q_i, aligned with policy_particles
    density: Tensor  # [N], f_hat(q_i) (ones for density="constant")
    signal: Tensor  # same shape as policy_costs, s >= 0 (envelope / exact)
    #: the signal of -violation (exact subgradient ``exact_violation_grad``), same shape, >= 0
    violation_signal: Tensor
    solver: str
    bandwidth: float | None  # KDE bandwidth used (None for density="constant")
    eps_abs: float | None  # absolute Sinkhorn regulariser (None for "exact")
    n_iter: int  # Sinkhorn iterations or semi-dual evaluations (0 for "exact")
    sinkhorn_method: str | None  # "semi_dual", "scaling" or "log" (None for "exact")
    marginal_error: float  # Sinkhorn marginal L1 error (0 for "exact")


def dominance_step(
    policy_costs: Tensor,
    ref_particles: Tensor,
    weighting: SpectralWeighting | str | None = None,
    *,
    solver: str = "sinkhorn",
    eps: float = DEFAULT_EPS,
    max_iter: int = 1000,
    tol: float = 1e-9,
    sinkhorn_grad: str = "envelope",
    sinkhorn_method: str = "auto",
    n_particles: int | None = None,
    density: str = "kde",
    bandwidth: float | None = None,
    indicator_bandwidth: float | None = None,
) -> DominanceResult:
    """The whole per-step dominance computation on the gathered cost batch.

    ``policy_costs``: costs of the current rollout batch, any shape (e.g.
    [prompts, k]); the signal comes back in the same shape.  ``ref_particles``:
    the cached reference particles, or raw reference costs.  N = ``n_particles``
    or len(ref_particles); both sets go through ``empirical_quantiles(., N)``
    (the identity, up to sorting, on an N-particle set).  ``weighting``: object,
    spec string or None (uniform).  ``solver``: "sinkhorn" or "exact".
    ``density``: "kde" (Silverman unless ``bandwidth``) or "constant".
    Raises DataError on empty or non-finite costs, ConfigError on bad settings.
    """
    _choice(solver, _SOLVERS, "solver")
    _choice(density, _DENSITIES, "density")
    w = as_weighting(weighting)
    with torch.no_grad():
        costs = policy_costs.detach().to(torch.float64)
        ref = ref_particles.detach().to(torch.float64).reshape(-1)
        for label, values in (("policy costs", costs), ("reference particles", ref)):
            bad = int((~torch.isfinite(values)).sum())
            if bad or values.numel() == 0:
                raise DataError(
                    f"dominance step: {label} must be a non-empty set of finite numbers; "
                    f"got {values.numel()} values, {bad} of them NaN/inf"
                )
        n = ref.numel() if n_particles is None else int(n_particles)
        q = empirical_quantiles(costs.reshape(-1), n)
        p = empirical_quantiles(ref, n)
        gain_x, viol_x = fsd_exact(q, p, w)

        eps_abs: float | None = None
        n_iter, marg, method = 0, 0.0, None
        if solver == "exact":
            g = exact_particle_grad(q, p, w)
            gain, viol = float(gain_x), float(viol_x)
        else:
            res = fsd_sinkhorn(q, p, w, eps=eps, max_iter=max_iter, tol=tol, grad=sinkhorn_grad,
                               method=sinkhorn_method)
            g, gain, viol = res.particle_grad, res.gain, res.violation
            eps_abs, n_iter, marg, method = res.eps_abs, res.n_iter, res.marginal_error, res.method

        h: float | None = None
        if density == "kde":
            h = silverman_bandwidth(costs) if bandwidth is None else float(bandwidth)
            f = kde_density(q, costs, h)
        else:
            f = torch.ones_like(q)
        signal = dominance_signal(costs, q, g, f, indicator_bandwidth)
        violation_signal = dominance_signal(costs, q, -exact_violation_grad(q, p, w), f, indicator_bandwidth)

    return DominanceResult(
        gain=gain,
        violation=viol,
        gain_exact=float(gain_x),
        violation_exact=float(viol_x),
        rho_policy=float(spectral_risk(q, w)),
        rho_ref=float(spectral_risk(p, w)),
        policy_particles=q,
        ref_particles=p,
        particle_grad=g,
        density=f,
        signal=signal,
        violation_signal=violation_signal,
        solver=solver,
        bandwidth=h,
        eps_abs=eps_abs,
        n_iter=n_iter,
        sinkhorn_method=method,
        marginal_error=marg,
    )
