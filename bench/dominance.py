"""Micro-benchmark of the per-step RAD dominance computation (``rad.risk.dominance_step``), exact vs Sinkhorn.

    python -m bench.dominance [--sizes 64 256 1024] [--run-dir runs/tiny] [--rl-step-from FILE] ...

Two measurements:

* **RL step shape**: the call RAD makes every step with its default settings
  (``RADAlgoConfig``: weighting, eps, iteration cap, N) on ``--rl-batch`` policy
  costs against the particles of as many reference costs, over ``--replicates``
  disjoint pairs of cost blocks.  The costs are a learned cost model's: the
  reference costs RAD cached in ``--run-dir`` (``rad/reference_particles.pt`` of a
  ``rad train`` output, or ``reference_particles.pt`` of a ``rad rl`` one).  They
  matter: such costs are tied and discrete, and there Sinkhorn needs hundreds to
  1000+ iterations where Gaussian costs need one.  Without a run directory the
  costs are Gaussian rounded to 0.25 (tied, labelled "synthetic").  Every pair is
  solved exactly and with each entropic method (``newton``, the default for the
  small supports a CVaR weighting leaves; ``semi_dual``, POT's L-BFGS on the same
  semi-dual, the previous default and the reference; Sinkhorn in the ``scaling``
  and ``log`` domains), interleaved, so old and new solver see the same load; the
  largest gap between their gains / particle gradients is reported.  Divided by a
  RAD step time (``--rl-step-from``: a ``bench.rloo_vs_trl`` result, or the
  ``metrics.jsonl`` of a RAD run, e.g. one made under load), this is the dominance
  step's share of the whole RL step (goal < 1%); the source's in-loop
  ``timing/dominance`` share is reported next to it.  Record the machine's load
  (the report does): on a loaded machine the share is what matters.
* **sweep**: for each particle count N the policy batch holds ``batch_factor * N``
  costs (N(0, 1)) and the reference particles are quantiles of as many
  N(0.3, 1.2^2) costs, one timed call per method.  Sinkhorn is capped at
  ``--max-iter-large`` iterations for N >= 4096; the table reports iterations used
  and the marginal error, so an unconverged run is visible.

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
from rad.risk.dominance import DEFAULT_EPS, SEMI_DUAL_MAX_SIZE, dominance_step, empirical_quantiles

NAME = "dominance"


METHODS = ("exact", "newton", "semi_dual", "scaling", "log")


def _call(costs, ref, method: str, **kwargs):
    """One timed dominance step; ``method`` is "exact" or an entropic ``sinkhorn_method``."""
    solver = dict(solver="exact") if method == "exact" else dict(solver="sinkhorn", sinkhorn_method=method)
    start, cpu = time.perf_counter(), time.process_time()
    result = dominance_step(costs, ref, **solver, **kwargs)
    return time.perf_counter() - start, result, time.process_time() - cpu


def _row(n: int, m: int, method: str, runs: list[tuple[float, object]]) -> dict:
    """Summary of ``_call`` results (seconds, DominanceResult, CPU seconds) for one method.

    The CPU time is the process's, all threads: on a loaded machine wall time minus CPU time is the wait for a core.
    """
    times, iters = [t for t, _, _ in runs], [r.n_iter for _, r, _ in runs]
    last = runs[-1][1]
    return {"n_particles": n, "batch": m, "method": method, "repeats": len(times),
            "median_s": statistics.median(times), "mean_s": statistics.mean(times), "max_s": max(times),
            "cpu_mean_s": statistics.mean(c for _, _, c in runs),
            "n_iter_median": statistics.median(iters), "n_iter_max": max(iters),
            "marginal_error_max": max(r.marginal_error for _, r, _ in runs),
            "gain": last.gain, "gain_exact": last.gain_exact}


def sweep(args: argparse.Namespace, gen: torch.Generator) -> list[dict]:
    rows = []
    for n in args.sizes:
        m = args.batch_factor * n
        costs = torch.randn(m, generator=gen, dtype=torch.float64)
        ref = empirical_quantiles(0.3 + 1.2 * torch.randn(m, generator=gen, dtype=torch.float64), n)
        max_iter = args.max_iter if n < 4096 else args.max_iter_large
        for method in METHODS:
            if method == "newton" and n > SEMI_DUAL_MAX_SIZE:  # O(N^3) steps: never picked there
                continue
            repeats = args.repeats if (method == "exact" or n <= 256) else 1
            _call(costs[:64], ref[:16], method, weighting=args.weighting)  # warm-up
            runs = [_call(costs, ref, method, weighting=args.weighting, eps=args.eps, max_iter=max_iter)
                    for _ in range(repeats)]
            row = _row(n, m, method, runs)
            rows.append({**row, "max_iter": max_iter})
            print(f"N={n:5d} {method:9s} {row['median_s']:.4f}s ({repeats}x, iters {row['n_iter_max']})",
                  file=sys.stderr)
    return rows


def _cost_blocks(args: argparse.Namespace, gen: torch.Generator) -> tuple[list[tuple], str]:
    """``--replicates`` (policy costs, reference costs) pairs of ``--rl-batch`` costs each, and where they came from."""
    if args.run_dir:
        run = Path(args.run_dir)
        path = next((f for f in (run / "rad" / "reference_particles.pt", run / "reference_particles.pt")
                     if f.is_file()), None)
        if path is None:
            raise SystemExit(f"--run-dir {run}: no rad/reference_particles.pt or reference_particles.pt in it")
        flat = torch.load(path, map_location="cpu", weights_only=True)["costs"].reshape(-1).double()
        source = f"learned cost model: {path}"
    else:
        flat = (torch.randn(2 * args.rl_batch * args.replicates, generator=gen, dtype=torch.float64) * 4).round() / 4
        source = "synthetic: N(0, 1) rounded to 0.25"
    if flat.numel() < 2 * args.rl_batch:
        raise SystemExit(f"{source}: {flat.numel()} costs, need at least 2 x --rl-batch = {2 * args.rl_batch}")
    # Disjoint blocks while they last, then shuffled pairs of them (reference caches are a few hundred costs).
    blocks = flat[: flat.numel() // args.rl_batch * args.rl_batch].view(-1, args.rl_batch)
    pairs = []
    for i in range(args.replicates):
        a, b = (i % len(blocks), (i + 1) % len(blocks)) if i < len(blocks) else \
            tuple(torch.randperm(len(blocks), generator=gen)[:2].tolist())
        pairs.append((blocks[a], blocks[b]))
    return pairs, source


def rl_shape(args: argparse.Namespace, gen: torch.Generator) -> tuple[list[dict], str]:
    """The per-step call with RAD's default algorithm settings, on pairs of learned-cost blocks."""
    from rad.algos.rad_config import RADAlgoConfig

    algo = RADAlgoConfig()
    pairs, source = _cost_blocks(args, gen)
    kwargs = dict(weighting=algo.weighting, eps=algo.ot.eps, max_iter=algo.ot.max_iter,
                  n_particles=algo.ot.n_particles, density=algo.ot.density)
    for method in ("newton", "semi_dual"):  # warm-up (imports scipy's optimiser)
        _call(pairs[0][0], pairs[0][1], method, **kwargs)
    runs: dict[str, list] = {m: [] for m in METHODS}
    for policy, ref in pairs:
        particles = empirical_quantiles(ref, algo.ot.n_particles)
        for method in METHODS:  # interleaved, so a change in the machine's load hits every method alike
            runs[method].append(_call(policy, particles, method, **kwargs))
    rows = [{**_row(algo.ot.n_particles, args.rl_batch, m, r),
             "max_iter": algo.ot.max_iter, "weighting": algo.weighting,
             "methods_used": sorted({res.sinkhorn_method or "exact" for _, res, _ in r})} for m, r in runs.items()]
    return rows, source, _largest_gaps(runs["newton"], runs["semi_dual"])


def _largest_gaps(new: list[tuple], old: list[tuple]) -> dict:
    """The largest differences between two solvers' results on the same calls (gain, violation, gradient, signal)."""
    pairs = [(a, b) for (_, a, _), (_, b, _) in zip(new, old, strict=True)]
    return {"gain": max(abs(a.gain - b.gain) for a, b in pairs),
            "violation": max(abs(a.violation - b.violation) for a, b in pairs),
            "particle_grad": max(float((a.particle_grad - b.particle_grad).abs().max()) for a, b in pairs),
            "signal_relative": max(float((a.signal - b.signal).abs().max() / b.signal.abs().max().clamp_min(1e-300))
                                   for a, b in pairs)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--batch-factor", type=int, default=4, help="policy batch = factor * N costs")
    parser.add_argument("--weighting", default="uniform")
    parser.add_argument("--eps", type=float, default=DEFAULT_EPS, help="Sinkhorn eps relative to the cost scale")
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--max-iter-large", type=int, default=50, help="Sinkhorn iteration cap for N >= 4096")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--run-dir", help="a `rad train` (or `rad rl`) output whose cached reference costs feed "
                                          "the RL-shape call (default: tied synthetic costs)")
    parser.add_argument("--rl-batch", type=int, default=64, help="costs per RL step (prompts x k)")
    parser.add_argument("--replicates", type=int, default=24, help="cost-block pairs in the RL-shape measurement")
    parser.add_argument("--rl-step-from", type=Path, default=default_out("rloo_vs_trl"),
                        help="a bench.rloo_vs_trl result, or a RAD run's metrics.jsonl, whose RAD step time the "
                             "RL-shape call is compared with")
    parser.add_argument("--out", type=Path, default=default_out(NAME))
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"}
    report = new_report(NAME, argv, settings | {"sinkhorn_grad": "envelope", "density": "kde"})
    gen = torch.Generator().manual_seed(0)
    rl_rows, source, gaps = rl_shape(args, gen)
    report["results"] = {"rl_shape": rl_rows, "rl_costs": source, "newton_vs_semi_dual_max_gap": gaps,
                         "sweep": sweep(args, gen)}
    by = {(r["n_particles"], r["method"]): r for r in report["results"]["sweep"]}
    rl = {r["method"]: r for r in rl_rows}
    shape = f"batch {args.rl_batch}, N {rl['exact']['n_particles']}, {args.replicates} cost pairs"
    report["ratios"] = {
        "sinkhorn_over_exact_rl_shape": ratio(rl["newton"]["mean_s"] / rl["exact"]["mean_s"],
                                              f"default entropic (Newton semi-dual) / exact mean time of RAD's "
                                              f"per-step call ({shape})"),
        "semi_dual_over_newton_rl_shape": ratio(rl["semi_dual"]["mean_s"] / rl["newton"]["mean_s"],
                                                f"old / new default: POT's L-BFGS semi-dual / Newton semi-dual mean "
                                                f"time of the same calls, interleaved ({shape})"),
        "log_over_semi_dual_rl_shape": ratio(rl["log"]["mean_s"] / rl["semi_dual"]["mean_s"],
                                             f"log-domain Sinkhorn / semi-dual mean time, same calls ({shape})"),
        "scaling_over_semi_dual_rl_shape": ratio(rl["scaling"]["mean_s"] / rl["semi_dual"]["mean_s"],
                                                 f"scaling-domain Sinkhorn / semi-dual mean time ({shape})"),
    }
    largest = max(n for n, _ in by)
    report["ratios"][f"log_over_scaling_n{largest}"] = ratio(
        by[(largest, "log")]["median_s"] / by[(largest, "scaling")]["median_s"],
        f"log-domain / scaling-domain Sinkhorn time at N={largest}, batch {largest * args.batch_factor}")
    step = _rad_step_seconds(args.rl_step_from, args.rl_batch)
    if step is not None:
        report["results"]["rad_step"] = step
        for method in ("exact", "newton", "semi_dual", "log"):
            report["ratios"][f"{method}_share_of_rl_step"] = ratio(
                rl[method]["mean_s"] / step["seconds"],
                f"{method} dominance call (mean over {shape}) / mean RAD RL step ({step['source']}); goal < 0.01")
        if step.get("in_loop_dominance_seconds") is not None:
            report["ratios"]["in_loop_share_of_rl_step"] = ratio(
                step["in_loop_dominance_seconds"] / step["seconds"],
                f"RAD's own timing/dominance / its step in {step['source']} (default settings); goal < 0.01")
    return publish(report, args.out, markdown)


def _rad_step_seconds(path: Path, batch: int) -> dict | None:
    """Mean RAD step time from a ``bench.rloo_vs_trl`` result or a RAD run's ``metrics.jsonl``, if it used ``batch``."""
    if not path.is_file():
        return None
    if path.suffix == ".jsonl":
        return _run_step_seconds(path, batch)
    other = json.loads(path.read_text())
    rad = other["results"]["rad"]
    if rad["samples_per_step"] != batch:
        print(f"{path}: RAD ran {rad['samples_per_step']} samples per step, not {batch}; no step share",
              file=sys.stderr)
        return None
    return {"seconds": rad["step_seconds_mean"], "batch": batch, "source": f"{path.name} of {other['date']}",
            "in_loop_dominance_seconds": rad.get("phase_seconds_mean", {}).get("dominance"),
            "in_loop_sinkhorn_iters": rad.get("sinkhorn_iters")}


def _run_step_seconds(path: Path, batch: int) -> dict | None:
    """Mean step and ``timing/dominance`` seconds of a RAD run's metrics (the training steps' rows)."""
    rows = [row for row in map(json.loads, path.read_text().splitlines()) if "timing/dominance" in row]
    if not rows:
        raise SystemExit(f"--rl-step-from {path}: no RAD training step (a row with timing/dominance) in it")
    samples = round(statistics.median(r["throughput/samples_per_s"] * r["timing/step"] for r in rows))
    if samples != batch:
        print(f"{path}: RAD ran {samples} samples per step, not {batch}; no step share", file=sys.stderr)
        return None
    iters = [r["rad/sinkhorn_iters"] for r in rows]
    written = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(path.stat().st_mtime))
    return {"seconds": statistics.mean(r["timing/step"] for r in rows), "batch": batch,
            "source": f"{path} ({len(rows)} steps, written {written})",
            "in_loop_dominance_seconds": statistics.mean(r["timing/dominance"] for r in rows),
            "in_loop_sinkhorn_iters": [statistics.median(iters), max(iters)]}


def markdown(report: dict) -> str:
    lines = [
        "| where | N | batch | method | median s | mean s | max s | CPU s (mean) | calls | iters median (max) "
        "| marginal err max |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for where in ("rl_shape", "sweep"):
        for r in report["results"][where]:
            iters = f"{r['n_iter_median']:g} ({r['n_iter_max']})" if r["method"] != "exact" else "-"
            label = f"RL step ({r['weighting']})" if where == "rl_shape" else "sweep"
            lines.append(
                f"| {label} | {r['n_particles']} | {r['batch']} | {r['method']} | {r['median_s']:.4f} | "
                f"{r['mean_s']:.4f} | {r['max_s']:.4f} | {r.get('cpu_mean_s', float('nan')):.4f} | {r['repeats']} | "
                f"{iters} | {r['marginal_error_max']:.1e} |")
    lines.append(f"\nRL-step costs: {report['results']['rl_costs']}. Iterations: Sinkhorn iterations, or objective "
                 "evaluations for the semi-dual solvers (newton, semi_dual).")
    gaps = report["results"].get("newton_vs_semi_dual_max_gap")
    if gaps:
        lines.append("Newton vs POT's L-BFGS semi-dual on the same RL-step calls, largest gap: "
                     + ", ".join(f"{k} {v:.1e}" for k, v in gaps.items()) + ".")
    step = report["results"].get("rad_step")
    if step and step.get("in_loop_dominance_seconds") is not None:
        lines.append(f"In the RL loop ({step['source']}): dominance {step['in_loop_dominance_seconds']:.4f} s of a "
                     f"{step['seconds']:.3f} s step; iterations per step {step.get('in_loop_sinkhorn_iters')}.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
