"""Hybrid engine vs separate engines: RAD's step time and peak memory with generation by the learner's module.

    python -m bench.colocation [--run-dir runs/tiny | --size small] [--steps 3] [--prompts 16] [--k 2]
                               [--max-new-tokens 48] [--out FILE]

The same RAD run twice in one Ray cluster, one after the other, with every setting equal
but the rollout: ``separate`` has one HF engine actor holding its own copy of the policy,
fed by the learner after every step (``rollout.weight_sync=auto``: the gloo broadcast);
``hybrid`` (``rollout.hybrid=true``) generates with the learner rank's own module, so there
is no second copy and nothing to sync. Measured per mode (as in ``bench.ppo_lag_vs_rad``):
step time (median over ``--steps`` after a warm-up) and each phase, peak PSS summed over
the role processes, each role's peak RSS, and the bytes of model state.

On one machine the hybrid mode trades the engine process (its interpreter, libraries and
weights) and the weight sync for generation that can no longer overlap anything: on a GPU
that is what lets a policy that fits once but not twice train at all. Results go to
``bench/results/colocation.json``, ratios hybrid / separate.
"""

from __future__ import annotations

from bench.common import publish, ratio
from bench.rl_runs import modes_table, rl_bench_setup, run_rad_modes

NAME = "colocation"


def main(argv: list[str] | None = None) -> dict:
    args, tmp, models, report = rl_bench_setup(NAME, __doc__, argv, steps=3, k=2,
                                               steps_help="measured steps per mode (after one warm-up)")
    modes = {"separate": ["rollout.hybrid=false"], "hybrid": ["rollout.hybrid=true"]}
    results = run_rad_modes(args, tmp, models, modes)
    sep, hyb = results["separate"], results["hybrid"]
    report["results"] = results
    report["ratios"] = {
        "hybrid_over_separate_step_seconds": ratio(hyb["step_seconds_median"] / sep["step_seconds_median"],
                                                   "hybrid / separate median RAD step time (< 1: hybrid faster)"),
        "hybrid_over_separate_peak_pss": ratio(hyb["peak_pss_total_bytes"] / sep["peak_pss_total_bytes"],
                                               "hybrid / separate peak PSS summed over role processes"),
        "hybrid_over_separate_model_state": ratio(hyb["model_state_total_bytes"] / sep["model_state_total_bytes"],
                                                  "hybrid / separate bytes of model state over all roles"),
    }
    return publish(report, args.out, markdown)


def markdown(report: dict) -> str:
    return modes_table(report["results"], "rollout")


if __name__ == "__main__":
    main()
