"""Micro-benchmark of the per-step RAD dominance computation (``rad.risk.dominance_step``).

For each particle count N the policy batch holds ``batch_factor * N`` costs
(N(0, 1)) and the reference particles are quantiles of as many N(0.3, 1.2^2)
costs.  One timed call covers particles, OT (exact sort or log-domain
Sinkhorn), particle gradient, KDE density and the per-sample signal.

    python -m bench.dominance [--sizes 64 256 1024 4096] [--threads 1] ...

Writes ``bench/results/dominance.json`` (timings + machine/versions) and prints
a Markdown table.  Sinkhorn iterations are capped at ``--max-iter-large`` for
N >= 4096 (each log-domain iteration is two passes over an N x N matrix);
the table reports iterations used and the marginal error, so an unconverged
run is visible.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from bench.common import cpu_model

import numpy
import ot
import torch

from rad.risk.dominance import DEFAULT_EPS, dominance_step, empirical_quantiles

RESULTS = Path(__file__).resolve().parent / "results" / "dominance.json"




def _time_step(costs, ref, *, repeats: int, **kwargs) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = dominance_step(costs, ref, **kwargs)
        times.append(time.perf_counter() - start)
    return times, result


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for n in args.sizes:
        m = args.batch_factor * n
        costs = torch.randn(m, generator=gen, dtype=torch.float64)
        ref = empirical_quantiles(0.3 + 1.2 * torch.randn(m, generator=gen, dtype=torch.float64), n)
        for solver in ("exact", "sinkhorn"):
            max_iter = args.max_iter if n < 4096 else args.max_iter_large
            repeats = args.repeats if (solver == "exact" or n <= 256) else 1
            dominance_step(costs[: 4 * 16], ref[:16], args.weighting, solver=solver)  # warm-up
            times, res = _time_step(
                costs, ref, repeats=repeats, weighting=args.weighting, solver=solver, eps=args.eps, max_iter=max_iter
            )
            rows.append(
                {
                    "n_particles": n,
                    "batch": m,
                    "solver": solver,
                    "repeats": repeats,
                    "median_s": statistics.median(times),
                    "min_s": min(times),
                    "max_iter": max_iter if solver == "sinkhorn" else None,
                    "n_iter": res.n_iter,
                    "marginal_error": res.marginal_error,
                    "gain": res.gain,
                    "gain_exact": res.gain_exact,
                }
            )
            print(f"N={n:5d} {solver:8s} {statistics.median(times):.4f}s ({repeats}x, iters {res.n_iter})", file=sys.stderr)
    return {
        "command": " ".join([Path(sys.executable).name, "-m", "bench.dominance", *sys.argv[1:]]),
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "torch_threads": args.threads,
            "loadavg_at_start": os.getloadavg(),
            "platform": platform.platform(),
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "pot": ot.__version__,
            "numpy": numpy.__version__,
        },
        "settings": {
            "weighting": args.weighting,
            "eps_relative": args.eps,
            "sinkhorn_grad": "envelope",
            "density": "kde",
            "batch_factor": args.batch_factor,
        },
        "rows": rows,
    }


def markdown(report: dict) -> str:
    lines = [
        "| N | batch | solver | median s | repeats | Sinkhorn iters (cap) | marginal err | gain | exact gain |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["rows"]:
        iters = f"{r['n_iter']} ({r['max_iter']})" if r["solver"] == "sinkhorn" else "-"
        lines.append(
            f"| {r['n_particles']} | {r['batch']} | {r['solver']} | {r['median_s']:.4f} | {r['repeats']} | "
            f"{iters} | {r['marginal_error']:.1e} | {r['gain']:.4f} | {r['gain_exact']:.4f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024, 4096])
    parser.add_argument("--batch-factor", type=int, default=4, help="policy batch = factor * N costs")
    parser.add_argument("--weighting", default="uniform")
    parser.add_argument("--eps", type=float, default=DEFAULT_EPS, help="Sinkhorn eps relative to the cost scale")
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--max-iter-large", type=int, default=50, help="Sinkhorn iteration cap for N >= 4096")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
