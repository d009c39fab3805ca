"""PPO-Lag (Safe RLHF) vs RAD: peak memory and step time on the same model, batch and hardware, in one run.

    python -m bench.ppo_lag_vs_rad [--run-dir runs/tiny | --size small] [--steps 5] [--prompts 16] [--k 2]
                                   [--max-new-tokens 48] [--out FILE]

Both controllers run one after the other in the same Ray cluster, on the same
policy and score models, with the same rollout batch (``--prompts`` prompts x
``--k`` samples), the same rollout engine, the same learner settings (ZeRO stage,
micro batch) and the same sampling seeds. Responses never stop at EOS, so every
step generates exactly ``prompts * k * max_new_tokens`` tokens whatever the
policy has learnt. PPO-Lag does one PPO update per rollout step (train batch =
rollout batch, ``update_iters`` 1), like RAD's one optimizer step.

Without ``--run-dir`` / ``--policy`` the tiny model of ``--size`` is used with seeded,
untrained reward / cost heads on its backbone (time and memory do not depend on
what the score models learnt).

Measured per algorithm:

* step time: median and best of ``timing/step`` over ``--steps`` steps after one
  warm-up step, and the mean of each phase (generation, scoring, logprobs,
  learner, weight sync); RAD's one-off reference particles are timed separately;
* peak memory: the sum over the role processes of their proportional set size
  (PSS: shared library pages split between the processes mapping them), sampled
  every 0.2 s by the driver during the steps; and each role's own peak RSS
  (``ru_maxrss``); CUDA memory is not measured (this benchmark runs on CPU);
* model state: bytes of every tensor each role holds in its models and
  optimizers (weights, gradients, Adam moments), deduplicated by storage. This is
  what scales with model size and decides how many GPUs a method needs.

Results go to ``bench/results/ppo_lag_vs_rad.json`` with ratios PPO-Lag / RAD.
"""

from __future__ import annotations

from bench.common import publish, ratio, ray_init
from bench.rl_runs import common_overrides, ppo_lag_overrides, rad_overrides, rl_bench_setup, run_trainer

NAME = "ppo_lag_vs_rad"
_MIB = 2 ** 20


def main(argv: list[str] | None = None) -> dict:
    import ray

    args, tmp, models, report = rl_bench_setup(NAME, __doc__, argv, steps=5, k=2,
                                               steps_help="measured steps per algorithm (after one warm-up)")
    common = common_overrides(models, args.max_new_tokens, rollout_micro_batch=args.prompts * args.k)
    ray_init(args.num_cpus)
    try:
        results = {
            "rad": run_trainer("rad", common + rad_overrides(args.prompts, args.k, args.micro_batch),
                               args.steps, tmp / "rad", memory=True),
            "ppo_lag": run_trainer("ppo_lag", common + ppo_lag_overrides(args.prompts, args.k, args.micro_batch),
                                   args.steps, tmp / "ppo_lag", memory=True),
        }
    finally:
        ray.shutdown()
    for r in results.values():
        r.pop("prompts_by_step")
    rad, lag = results["rad"], results["ppo_lag"]
    report["results"] = results
    report["ratios"] = {
        "ppo_lag_over_rad_step_seconds": ratio(lag["step_seconds_median"] / rad["step_seconds_median"],
                                               "PPO-Lag / RAD median step time (> 1: RAD faster)"),
        "ppo_lag_over_rad_step_seconds_best": ratio(lag["step_seconds_best"] / rad["step_seconds_best"],
                                                    "PPO-Lag / RAD best step time"),
        "ppo_lag_over_rad_learner_seconds": ratio(lag["phase_seconds_mean"]["learner"]
                                                  / rad["phase_seconds_mean"]["learner"],
                                                  "PPO-Lag / RAD learner phase (actor + 2 critics vs one policy)"),
        "ppo_lag_over_rad_peak_pss": ratio(lag["peak_pss_total_bytes"] / rad["peak_pss_total_bytes"],
                                           "PPO-Lag / RAD peak PSS summed over role processes"),
        "ppo_lag_over_rad_peak_rss": ratio(lag["peak_rss_total_bytes"] / rad["peak_rss_total_bytes"],
                                           "PPO-Lag / RAD summed per-process peak RSS"),
        "ppo_lag_over_rad_model_state": ratio(lag["model_state_total_bytes"] / rad["model_state_total_bytes"],
                                              "PPO-Lag / RAD bytes of weights + grads + optimizer state, all roles"),
        "ppo_lag_over_rad_trained_state": ratio(lag["trained_model_state_bytes"] / rad["trained_model_state_bytes"],
                                                "PPO-Lag / RAD bytes of the trained models' state"),
    }
    return publish(report, args.out, markdown)


def markdown(report: dict) -> str:
    lines = ["| algorithm | roles | step s (median) | step s (best) | generation | scoring | logprobs | learner | "
             "weight sync | peak PSS MiB | peak RSS MiB | model state MiB |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in report["results"].items():
        ph = r["phase_seconds_mean"]
        roles = ", ".join(f"{k} x{v}" for k, v in r["roles"].items())
        lines.append(f"| {name} | {roles} | {r['step_seconds_median']:.2f} | {r['step_seconds_best']:.2f} | "
                     + " | ".join(f"{ph.get(p, 0.0):.2f}" for p in ("generation", "scoring", "logprobs", "learner",
                                                                     "weight_sync"))
                     + f" | {r['peak_pss_total_bytes'] / _MIB:.0f} | {r['peak_rss_total_bytes'] / _MIB:.0f} | "
                       f"{r['model_state_total_bytes'] / _MIB:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
