"""Generation overlapping the learner update (``algo.overlap``): RAD's step time with and without it.

    python -m bench.overlap [--run-dir runs/tiny | --size small] [--steps 4] [--prompts 16] [--k 2]
                            [--max-new-tokens 48] [--out FILE]

The same RAD run twice in one Ray cluster, one after the other, with every setting equal but
``algo.overlap``: ``serial`` generates each step's batch at the start of the step; ``overlap``
has the rollout engine generate the next step's batch while the learner updates on this one
(one-step off-policy, reweighted by truncated importance weights; see ``rad/algos/rad.py``),
so a step's ``generation`` phase is only the wait for a batch started during the previous
update. Measured per mode (as in ``bench.colocation``): step time (median over ``--steps``
after a warm-up; the warm-up is the step that cannot overlap) and each phase, peak PSS and
model state. The gain needs the engine and the learner to have cores of their own: on 2 cores
with the scorer and the reference also working, the two compete with everything else.
Results go to ``bench/results/overlap.json``, ratio overlap / serial.
"""

from __future__ import annotations

from bench.common import publish, ratio
from bench.rl_runs import modes_table, rl_bench_setup, run_rad_modes

NAME = "overlap"


def main(argv: list[str] | None = None) -> dict:
    args, tmp, models, report = rl_bench_setup(NAME, __doc__, argv, steps=4, k=2,
                                               steps_help="measured steps per mode (after one warm-up)")
    results = run_rad_modes(args, tmp, models, {"serial": ["algo.overlap=false"], "overlap": ["algo.overlap=true"]})
    serial, over = results["serial"], results["overlap"]
    report["results"] = results
    report["ratios"] = {
        "overlap_over_serial_step_seconds": ratio(over["step_seconds_median"] / serial["step_seconds_median"],
                                                  "overlap / serial median RAD step time (< 1: overlap faster)"),
        "overlap_over_serial_peak_pss": ratio(over["peak_pss_total_bytes"] / serial["peak_pss_total_bytes"],
                                              "overlap / serial peak PSS summed over role processes"),
    }
    return publish(report, args.out, markdown)


def markdown(report: dict) -> str:
    return modes_table(report["results"], "generation")


if __name__ == "__main__":
    main()
