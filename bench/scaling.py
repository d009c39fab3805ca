"""RAD throughput with 1 and 2 rollout actors x 1 and 2 learner ranks on a local Ray cluster.

    python -m bench.scaling [--run-dir runs/tiny] [--engines 1 2] [--learners 1 2] [--steps 2]
                            [--prompts 16] [--k 4] [--max-new-tokens 32] [--out FILE]

Every configuration runs the same RL batch (``--prompts`` x ``--k`` fixed-length
responses per step; rollout prompts are split between the engines, the batch between
the DeepSpeed ranks) in one local Ray cluster, one after the other, with one warm-up
step left out of the means. Each actor gets one Ray CPU and one intra-op thread, so a
machine with fewer cores than actors shows contention, not scaling: the JSON records
the core count next to the numbers. Results go to ``bench/results/scaling.json`` with
each configuration's throughput relative to 1 engine x 1 learner.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.common import (add_model_args, args_settings, default_out, new_report, publish, ratio, ray_init,
                          resolve_models)
from bench.rl_runs import PHASES, common_overrides, phase_cell, rad_overrides, run_trainer

NAME = "scaling"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(p)
    p.add_argument("--engines", type=int, nargs="+", default=[1, 2], help="rollout actors to try")
    p.add_argument("--learners", type=int, nargs="+", default=[1, 2], help="learner ranks to try")
    p.add_argument("--steps", type=int, default=2, help="measured steps per configuration (after one warm-up)")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--micro-batch", type=int, default=16, help="learner micro batch per rank")
    p.add_argument("--out", default=str(default_out(NAME)))
    args = p.parse_args(argv)
    for n in args.learners:
        if (args.prompts * args.k) % n:
            p.error(f"prompts * k = {args.prompts * args.k} must divide over {n} learner ranks")

    import ray

    tmp = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    models = resolve_models(args, tmp)
    report = new_report(NAME, argv, args_settings(args) | {"models": models})
    # room for the largest configuration: learners + engines + reference + scorer actors
    num_cpus = max(args.learners) + max(args.engines) + 2
    report["settings"]["ray_num_cpus"] = num_cpus
    ray_init(num_cpus)
    runs = []
    try:
        for engines in args.engines:
            for learners in args.learners:
                overrides = (common_overrides(models, args.max_new_tokens,
                                              rollout_micro_batch=args.prompts * args.k)
                             + rad_overrides(args.prompts, args.k, args.micro_batch)
                             + [f"rollout.num_engines={engines}", f"resources.num_learners={learners}"])
                run = run_trainer("rad", overrides, args.steps, tmp / f"e{engines}-l{learners}")
                run.pop("prompts_by_step")
                runs.append({"engines": engines, "learners": learners, **run})
                print(f"engines={engines} learners={learners}: {run['samples_per_s']:.1f} samples/s "
                      f"(startup {run['startup_seconds']:.0f}s)", flush=True)
    finally:
        ray.shutdown()
    report["results"] = {"runs": runs}
    base = next((r for r in runs if r["engines"] == 1 and r["learners"] == 1), None)
    if base is not None:
        for r in runs:
            if r is base:
                continue
            key = f"e{r['engines']}_l{r['learners']}_over_e1_l1_samples_per_s"
            report["ratios"][key] = ratio(r["samples_per_s"] / base["samples_per_s"],
                                          f"{r['engines']} rollout actors x {r['learners']} learner ranks vs 1 x 1: "
                                          f"samples/s on {report['cpu_cores']} cores (> 1: faster)")
    return publish(report, args.out, markdown)


def markdown(report: dict) -> str:
    lines = ["| rollout actors | learner ranks | samples/s | tokens/s | step s (mean) | " + " | ".join(PHASES)
             + " | startup s |",
             "| ---: | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in PHASES) + " | ---: |"]
    for r in report["results"]["runs"]:
        ph = r["phase_seconds_mean"]
        lines.append(f"| {r['engines']} | {r['learners']} | {r['samples_per_s']:.1f} | {r['tokens_per_s']:.0f} | "
                     f"{r['step_seconds_mean']:.2f} | " + " | ".join(phase_cell(ph, p) for p in PHASES)
                     + f" | {r['startup_seconds']:.0f} |")
    lines.append(f"\n{report['cpu_cores']} cores ({report['cpu_model']}), Ray cluster of "
                 f"{report['settings']['ray_num_cpus']} logical CPUs, one intra-op thread per actor; "
                 "phase columns: mean seconds per step.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
