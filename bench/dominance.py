"""Micro-benchmark of the per-step RAD dominance computation (``rad.risk.dominance_step``), exact vs Sinkhorn.

    python -m bench.dominance [--sizes 64 256 1024 4096] [--threads 1] [--rl-step-from FILE] ...

Two measurements:

* **sweep**: for each particle count N the policy batch holds ``batch_factor * N``
  costs (N(0, 1)) and the reference particles are quantiles of as many
  N(0.3, 1.2^2) costs. One timed call covers particles, OT (exact sort or
  log-domain Sinkhorn), particle gradient, KDE density and the per-sample signal.
  Sinkhorn iterations are capped at ``--max-iter-large`` for N >= 4096 (each
  log-domain iteration is two passes over an N x N matrix); the table reports
  iterations used and the marginal error, so an unconverged run is visible.
* **RL step shape**: the call RAD makes every step with its default settings
  (``RADAlgoConfig``: weighting, eps, iterations, N) on a batch of ``--rl-batch``
  costs, with both solvers. Divided by the RAD step time measured by
  ``bench.rloo_vs_trl`` (``--rl-step-from``, default its result file when present),
  this is the dominance step's share of the whole RL step (goal < 1%).

Writes ``bench/results/dominance.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from bench.common import default_out, new_report, publish, ratio
from rad.risk.dominance import DEFAULT_EPS, dominance_step, empirical_quantiles

NAME = "dominance"


def _time_step(costs, ref, *, repeats: int, **kwargs) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = dominance_step(costs, ref, **kwargs)
        times.append(time.perf_counter() - start)
    return times, result


def _row(n: int, m: int, solver: str, repeats: int, max_iter: int, times: list[float], res) -> dict:
    return {"n_particles": n, "batch": m, "solver": solver, "repeats": repeats,
            "median_s": statistics.median(times), "min_s": min(times),
            "max_iter": max_iter if solver == "sinkhorn" else None, "n_iter": res.n_iter,
            "marginal_error": res.marginal_error, "gain": res.gain, "gain_exact": res.gain_exact}


def sweep(args: argparse.Namespace, gen: torch.Generator) -> list[dict]:
    rows = []
    for n in args.sizes:
        m = args.batch_factor * n
        costs = torch.randn(m, generator=gen, dtype=torch.float64)
        ref = empirical_quantiles(0.3 + 1.2 * torch.randn(m, generator=gen, dtype=torch.float64), n)
        for solver in ("exact", "sinkhorn"):
            max_iter = args.max_iter if n < 4096 else args.max_iter_large
            repeats = args.repeats if (solver == "exact" or n <= 256) else 1
            dominance_step(costs[: 4 * 16], ref[:16], args.weighting, solver=solver)  # warm-up
            times, res = _time_step(costs, ref, repeats=repeats, weighting=args.weighting, solver=solver,
                                    eps=args.eps, max_iter=max_iter)
            rows.append(_row(n, m, solver, repeats, max_iter, times, res))
            print(f"N={n:5d} {solver:8s} {statistics.median(times):.4f}s ({repeats}x, iters {res.n_iter})",
                  file=sys.stderr)
    return rows


def rl_shape(args: argparse.Namespace, gen: torch.Generator) -> list[dict]:
    """The per-step call with RAD's default algorithm settings on an RL-sized batch."""
    from rad.algos.rad import RADAlgoConfig

    algo = RADAlgoConfig()
    costs = torch.randn(args.rl_batch, generator=gen, dtype=torch.float64)
    ref = empirical_quantiles(0.3 + 1.2 * torch.randn(4 * algo.n_particles, generator=gen, dtype=torch.float64),
                              algo.n_particles)
    rows = []
    for solver in ("exact", "sinkhorn"):
        kwargs = dict(weighting=algo.weighting, solver=solver, eps=algo.eps, max_iter=algo.sinkhorn_iters,
                      n_particles=algo.n_particles, density=algo.density)
        dominance_step(costs, ref, **kwargs)  # warm-up
        times, res = _time_step(costs, ref, repeats=args.repeats, **kwargs)
        rows.append({**_row(algo.n_particles, args.rl_batch, solver, args.repeats, algo.sinkhorn_iters, times, res),
                     "weighting": algo.weighting})
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024, 4096])
    parser.add_argument("--batch-factor", type=int, default=4, help="policy batch = factor * N costs")
    parser.add_argument("--weighting", default="uniform")
    parser.add_argument("--eps", type=float, default=DEFAULT_EPS, help="Sinkhorn eps relative to the cost scale")
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--max-iter-large", type=int, default=50, help="Sinkhorn iteration cap for N >= 4096")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rl-batch", type=int, default=64, help="costs per RL step (prompts x k)")
    parser.add_argument("--rl-step-from", type=Path, default=default_out("rloo_vs_trl"),
                        help="a bench.rloo_vs_trl result whose RAD step time the RL-shape call is compared with")
    parser.add_argument("--out", type=Path, default=default_out(NAME))
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"}
    report = new_report(NAME, argv, settings | {"sinkhorn_grad": "envelope", "density": "kde"})
    gen = torch.Generator().manual_seed(0)
    report["results"] = {"sweep": sweep(args, gen), "rl_shape": rl_shape(args, gen)}
    by = {(r["n_particles"], r["solver"]): r for r in report["results"]["sweep"]}
    # the largest N at which Sinkhorn ran uncapped (a capped run's time is not a converged solve)
    largest = max(n for n, solver in by if solver == "sinkhorn" and by[(n, solver)]["max_iter"] == args.max_iter)
    rl = {r["solver"]: r for r in report["results"]["rl_shape"]}
    report["ratios"] = {
        "sinkhorn_over_exact_rl_shape": ratio(rl["sinkhorn"]["median_s"] / rl["exact"]["median_s"],
                                              f"Sinkhorn / exact time of RAD's per-step call "
                                              f"(batch {args.rl_batch}, N {rl['exact']['n_particles']})"),
        f"sinkhorn_over_exact_n{largest}": ratio(by[(largest, "sinkhorn")]["median_s"]
                                                 / by[(largest, "exact")]["median_s"],
                                                 f"Sinkhorn / exact time at N={largest}, "
                                                 f"batch {largest * args.batch_factor}"),
    }
    step = _rad_step_seconds(args.rl_step_from, args.rl_batch)
    if step is not None:
        report["results"]["rad_step"] = step
        for solver, r in rl.items():
            report["ratios"][f"{solver}_share_of_rl_step"] = ratio(
                r["median_s"] / step["seconds"],
                f"{solver} dominance call / mean RAD RL step ({step['source']}, batch {step['batch']}); goal < 0.01")
    return publish(report, args.out, markdown)


def _rad_step_seconds(path: Path, batch: int) -> dict | None:
    """Mean RAD step time from a ``bench.rloo_vs_trl`` result, if it exists and used the same batch."""
    if not path.is_file():
        return None
    other = json.loads(path.read_text())
    rad = other["results"]["rad"]
    if rad["samples_per_step"] != batch:
        print(f"{path}: RAD ran {rad['samples_per_step']} samples per step, not {batch}; no step share",
              file=sys.stderr)
        return None
    return {"seconds": rad["step_seconds_mean"], "batch": batch, "source": f"{path.name} of {other['date']}"}


def markdown(report: dict) -> str:
    lines = [
        "| where | N | batch | solver | median s | repeats | Sinkhorn iters (cap) | marginal err | gain | exact gain |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for where in ("rl_shape", "sweep"):
        for r in report["results"][where]:
            iters = f"{r['n_iter']} ({r['max_iter']})" if r["solver"] == "sinkhorn" else "-"
            label = f"RL step ({r['weighting']})" if where == "rl_shape" else "sweep"
            lines.append(
                f"| {label} | {r['n_particles']} | {r['batch']} | {r['solver']} | {r['median_s']:.4f} | "
                f"{r['repeats']} | {iters} | {r['marginal_error']:.1e} | {r['gain']:.4f} | {r['gain_exact']:.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
