"""RAD vs TRL's ``RLOOTrainer``: RL step throughput on the same model, prompts, k, batch and reward, in one run.

    python -m bench.rloo_vs_trl [--run-dir runs/tiny] [--prompts 16] [--k 4] [--max-new-tokens 48]
                                [--micro-batch 16] [--steps 6] [--rad-set KEY=VALUE ...] [--out FILE]

Needs TRL (``pip install -c constraints/cpu.txt -e '.[bench]'``). Both trainers run on
the CPU and are alive in this one process; their steps alternate, TRL step i then RAD
step i (ABAB), one warm-up step each and then ``--steps`` measured pairs, so a change in
the machine's load hits both alike (the machine may be shared: the load average before
and after is recorded). Ratios are medians over the pairs of the per-pair ratio.

* **RAD** (``RADTrainer``, as ``rad rl`` runs it): roles in Ray actors (HF rollout
  engine, scorer, reference, one DeepSpeed learner rank, one CPU and one intra-op
  thread each, at this process's niceness); the scorer, reference and learner work at
  the same time on each batch; its own ``timing/*`` metrics give the breakdown (its
  ``scoring`` is the wait for the scores, ``logprobs`` the further wait for the log-probs).
  RAD's steps run from a TRL callback, between TRL's steps.
* **TRL** ``RLOOTrainer``: everything in this process with one intra-op thread
  (``--trl-threads``; 0 keeps torch's default of one per core). One thread is TRL's
  fastest setting on the shared 2-core machine: with two, generation and scoring ran
  30-50x slower while other jobs loaded the machine (OpenMP threads waiting for a
  descheduled sibling) and 0-25% faster when it was idle. HF ``generate``, no vLLM. The breakdown is
  timed around TRL's own methods: generation (``_generate_single_turn``), scoring
  (``_calculate_rewards``), log-probs (the rest of ``_generate_and_score_completions``:
  decoding, current and reference policy log-probs, KL, advantages), learner (the rest
  of the optimizer step: forward + backward + Adam). TRL has no weight sync (the policy
  generates itself).

What is the same: the policy (``--run-dir``'s SFT model, or the tiny model),
the prompts of every step (RAD's, fed to TRL in order with ``shuffle_dataset=False``),
prompt tokens (the rad template + the tokenizer's special tokens), k
(``num_generations``), the batch (``prompts * k`` completions per optimizer step,
learner micro batch = ``per_device_train_batch_size``), responses of exactly
``max_new_tokens`` tokens (RAD: ``stop_on_eos=false``; TRL: ``min_new_tokens``),
sampling at temperature 1, beta = 0.05 with the k1 KL summed over the sequence and
folded into the reward, the RLOO leave-one-out baseline, sequence-sum log-prob loss,
one optimizer step per batch (AdamW, lr 1e-4 constant, betas 0.9/0.95, clip 1.0,
fp32). Both score with rad's ``Scorer`` (reward and cost model, batch 32).

What differs: RAD's reward is ``r + lambda * s`` with ``s`` its dominance signal from the
costs (lambda = 1 at the start); TRL's reward function is ``r - --cost-weight * c``, the
usual fixed penalty. TRL's loss is the clipped-ratio form (ratio = 1 with one
iteration, so the same gradient) and it also computes the entropy; RAD pays for the
Ray round trips, a DeepSpeed engine and a weight push to the rollout actor.

Results go to ``bench/results/rloo_vs_trl.json`` with ratios RAD / TRL.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from bench.common import (add_model_args, args_settings, default_out, new_report, publish, ratio, ray_init,
                          resolve_models)
from bench.rl_runs import (PHASES, PssSampler, actor_peak_rss, actor_pid, add_rl_batch_args, build_trainer, call_all,
                           common_overrides, phase_cell, rad_overrides, rl_roles, summarize_steps)

NAME = "rloo_vs_trl"
BETA = 0.05
LR = 1e-4


def _timed_rloo_trainer():
    """``RLOOTrainer`` with phase timers around its generation, scoring and rollout methods."""
    from trl import RLOOTrainer

    from rad.runtime.metrics import PhaseTimer

    class TimedRLOOTrainer(RLOOTrainer):
        timer = PhaseTimer()

        def _generate_single_turn(self, *args, **kwargs):
            with self.timer.phase("generation"):
                return super()._generate_single_turn(*args, **kwargs)

        def _calculate_rewards(self, *args, **kwargs):
            with self.timer.phase("scoring"):
                return super()._calculate_rewards(*args, **kwargs)

        def _generate_and_score_completions(self, *args, **kwargs):
            with self.timer.phase("rollout"):
                return super()._generate_and_score_completions(*args, **kwargs)

    return TimedRLOOTrainer


def run_trl(models: dict[str, str], prompts_by_step: list[list[str]], args: argparse.Namespace,
            out_dir: Path, after_step: Callable[[], None], gradient_checkpointing: bool = False,
            threads_by_step: list[int] | None = None) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """TRL RLOO on the given prompts, ``after_step()`` after each of its steps (outside its step clock).

    ``threads_by_step``: torch intra-op threads of each step (set before it starts), instead of
    ``args.trl_threads`` throughout. Returns the summary of the measured steps (all but the first)
    and every step's row (with the ``torch_threads`` it ran on).
    """
    import datasets
    import torch
    from transformers import TrainerCallback
    from trl import RLOOConfig

    from rad.data.template import format_prompt
    from rad.models.loading import load_tokenizer
    from rad.runtime.scorer import Scorer

    if args.trl_threads:
        torch.set_num_threads(args.trl_threads)
    flat = [p for step in prompts_by_step for p in step]
    dataset = datasets.Dataset.from_dict({"prompt": [format_prompt(p) for p in flat], "raw_prompt": flat})
    batch = args.prompts * args.k
    t0 = time.perf_counter()
    scorer = Scorer(models["reward"], models["cost"], batch_size=32, empty_response="placeholder")
    seen: dict[str, list] = {"prompts": [], "tokens": []}

    def reward_minus_cost(prompts, completions, completion_ids, raw_prompt, **_):
        seen["prompts"].append(list(raw_prompt))
        seen["tokens"].append(sum(len(ids) for ids in completion_ids))
        scores = scorer.score(raw_prompt, completions)
        return (scores["rewards"] - args.cost_weight * scores["costs"]).tolist()

    config = RLOOConfig(
        output_dir=str(out_dir), use_cpu=True, bf16=False, gradient_checkpointing=gradient_checkpointing, seed=0,
        per_device_train_batch_size=args.micro_batch, gradient_accumulation_steps=batch // args.micro_batch,
        num_generations=args.k, max_completion_length=args.max_new_tokens,
        generation_kwargs={"min_new_tokens": args.max_new_tokens}, temperature=1.0, top_p=1.0, top_k=0,
        beta=BETA, num_iterations=1, learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
        adam_beta1=0.9, adam_beta2=0.95, weight_decay=0.0, max_grad_norm=1.0,
        max_steps=len(prompts_by_step), shuffle_dataset=False, remove_unused_columns=False,
        save_strategy="no", report_to="none", logging_steps=10 ** 6, disable_tqdm=True, dataloader_num_workers=0,
    )
    trainer_cls = _timed_rloo_trainer()
    rows: list[dict[str, float]] = []

    class StepClock(TrainerCallback):
        def on_step_begin(self, *_, **__):
            if threads_by_step:
                torch.set_num_threads(threads_by_step[len(rows)])
            trainer_cls.timer.metrics()  # drop anything timed between steps
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__):
            elapsed = time.perf_counter() - self.start
            t = trainer_cls.timer.metrics()
            gen, score, rollout = (t.get(f"timing/{p}", 0.0) for p in ("generation", "scoring", "rollout"))
            rows.append({"timing/step": elapsed, "timing/generation": gen, "timing/scoring": score,
                         "timing/logprobs": rollout - gen - score, "timing/learner": elapsed - rollout,
                         "throughput/samples_per_s": batch / elapsed,
                         "throughput/tokens_per_s": seen["tokens"][-1] / elapsed,
                         "torch_threads": torch.get_num_threads()})
            after_step()

    tokenizer = load_tokenizer(models["policy"], padding_side="left")
    trainer = trainer_cls(model=models["policy"], reward_funcs=reward_minus_cost, args=config, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[StepClock()])
    startup = time.perf_counter() - t0
    trainer.train()
    if seen["prompts"] != [[p for p in step for _ in range(args.k)] for step in prompts_by_step]:
        raise RuntimeError("TRL did not see RAD's prompts step by step; the comparison would not be like for like")
    out = {"startup_seconds": startup, "warmup_step_seconds": rows[0]["timing/step"],
           "torch_threads": torch.get_num_threads(), **summarize_steps(rows[1:])}
    return out, rows


def rad_rloo_overrides(models: dict[str, str], args: argparse.Namespace) -> list[str]:
    """RAD's config overrides for the comparison: the shared batch and TRL's RLOO settings (beta, k1, sums, LR)."""
    return (common_overrides(models, args.max_new_tokens, rollout_micro_batch=args.prompts * args.k)
            + rad_overrides(args.prompts, args.k, args.micro_batch, lr=LR)
            + [f"algo.beta={BETA}", "algo.kl_estimator=k1", "algo.loss_aggregation=sequence_sum",
               "learner.scheduler=constant", "learner.grad_clip=1.0", "learner.weight_decay=0.0"])


def run_pair(models: dict[str, str], args: argparse.Namespace, out_dir: Path, rad_extra: list[str] = (),
             trl_gradient_checkpointing: bool = False, memory: bool = False) -> dict[str, Any]:
    """RAD and TRL ``RLOOTrainer`` interleaved (TRL step i, then RAD step i) in the running Ray cluster.

    ``rad_extra``: further RAD config overrides (e.g. memory options). Returns ``{"rad", "trl"}``
    summaries of the measured steps (RAD's with ``pair_speed_ratios``, TRL step / RAD step time
    per pair) and ``rows``, every step's metrics of both. With ``memory``: each RAD role's peak
    RSS (``ru_maxrss``, the actors are fresh) and peak PSS, and this process's peak PSS during the
    steps (TRL's models, optimizer and activations, plus RAD's driver), sampled every 0.2 s.
    """
    trainer, startup = build_trainer("rad", rad_rloo_overrides(models, args) + list(rad_extra), args.steps + 1,
                                     out_dir / "rad")
    try:
        step_args, extra = trainer.before_loop()
        prompts_by_step = [trainer.step_prompts(s) for s in range(args.steps + 1)]
        rad_rows: list[dict[str, float]] = []

        def trl_run():
            return run_trl(models, prompts_by_step, args, out_dir / "trl",
                           after_step=lambda: rad_rows.append(trainer.train_step(*step_args)),
                           gradient_checkpointing=trl_gradient_checkpointing)

        if memory:
            trl, trl_rows, mem = measure_memory(trainer, trl_run)
        else:
            trl, trl_rows = trl_run()
    finally:
        trainer.shutdown()
    rad = {"startup_seconds": startup, **extra, "warmup_step_seconds": rad_rows[0]["timing/step"],
           **summarize_steps(rad_rows[1:])}
    if trl["tokens_per_step"] != rad["tokens_per_step"]:
        raise RuntimeError(f"unequal work: RAD generated {rad['tokens_per_step']} tokens per step, "
                           f"TRL {trl['tokens_per_step']}")
    rad["pair_speed_ratios"] = [t["timing/step"] / r["timing/step"] for r, t in zip(rad_rows[1:], trl_rows[1:])]
    if memory:
        rad["memory"], trl["memory"] = mem["rad"], mem["trl"]
    return {"rad": rad, "trl": trl, "rows": {"rad": rad_rows, "trl": trl_rows}}


def measure_memory(trainer, fn: Callable[[], Any]) -> tuple:
    """``fn()``'s result followed by the memory of RAD's roles and of this process (TRL) while it ran."""
    import os

    roles = rl_roles(trainer, "rad")
    pids = call_all(roles, actor_pid)
    me = os.getpid()
    with PssSampler([me, *(p for ps in pids.values() for p in ps)]) as sampler:
        result = fn()
    rss = call_all(roles, actor_peak_rss)
    rad = {"peak_rss_bytes": {name: sum(v) for name, v in rss.items()},
           "peak_pss_bytes": {name: sum(sampler.peak_by_pid[p] for p in ps) for name, ps in pids.items()},
           "roles": {name: len(ps) for name, ps in pids.items()}}
    rad["peak_rss_total_bytes"] = sum(rad["peak_rss_bytes"].values())
    rad["peak_pss_total_bytes"] = sum(rad["peak_pss_bytes"].values())
    trl = {"peak_pss_bytes": {"driver": sampler.peak_by_pid[me]}, "peak_pss_total_bytes": sampler.peak_by_pid[me]}
    return (*result, {"rad": rad, "trl": trl})


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(p)
    add_rl_batch_args(p, steps=6, k=4, steps_help="measured step pairs, TRL then RAD (after one warm-up each)")
    p.add_argument("--cost-weight", type=float, default=1.0, help="TRL reward = reward - cost_weight * cost")
    p.add_argument("--trl-threads", type=int, default=1, help="torch threads for TRL (0 = torch's default)")
    p.add_argument("--rad-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a further RAD config override, e.g. algo.overlap=true (repeatable)")
    p.add_argument("--out", default=str(default_out(NAME)))
    args = p.parse_args(argv)
    if (args.prompts * args.k) % args.micro_batch:
        p.error(f"--micro-batch {args.micro_batch} must divide prompts * k = {args.prompts * args.k}")

    import ray

    tmp = Path(tempfile.mkdtemp(prefix="bench-rloo-trl-"))
    models = resolve_models(args, tmp)
    report = new_report(NAME, argv, args_settings(args) | {"models": models})
    ray_init(args.num_cpus)
    try:
        pair = run_pair(models, args, tmp, rad_extra=args.rad_set)
    finally:
        ray.shutdown()
    rad, trl = pair["rad"], pair["trl"]
    pairs = list(zip(pair["rows"]["rad"][1:], pair["rows"]["trl"][1:]))

    def median_ratio(num: Callable[[dict], float], den: Callable[[dict], float]) -> float:
        return statistics.median(num(r) / den(t) for r, t in pairs)

    def secs(*phases: str) -> Callable[[dict], float]:
        return lambda row: sum(row.get(f"timing/{p}", 0.0) for p in phases)

    report["results"] = {"rad": rad, "trl": trl}
    report["ratios"] = {
        "rad_over_trl_samples_per_s": ratio(statistics.median(rad["pair_speed_ratios"]),
                                            "RAD / TRL RLOOTrainer samples/s, median over interleaved step pairs "
                                            "(> 1: RAD faster)"),
        "rad_over_trl_samples_per_s_best": ratio(rad["samples_per_s_best"] / trl["samples_per_s_best"],
                                                 "RAD / TRL samples/s of each one's fastest step"),
        "rad_over_trl_samples_per_s_total": ratio(rad["samples_per_s"] / trl["samples_per_s"],
                                                  "RAD / TRL samples/s over all measured steps"),
        "rad_dominance_share_of_step": ratio(statistics.median(r["timing/dominance"] / r["timing/step"]
                                                               for r, _ in pairs),
                                             "RAD's dominance phase (entropic OT with its default solver, in the "
                                             "loop) / its whole step, median; goal < 0.01"),
    }
    for phase in ("generation", "scoring", "logprobs", "learner"):
        report["ratios"][f"rad_over_trl_{phase}_seconds"] = ratio(
            median_ratio(secs(phase), secs(phase)), f"RAD / TRL {phase} phase time, median over step pairs "
                                                    "(< 1: RAD faster)")
    report["ratios"]["rad_over_trl_scoring_logprobs_seconds"] = ratio(
        median_ratio(secs("scoring", "logprobs"), secs("scoring", "logprobs")),
        "RAD / TRL scoring + log-probs time (RAD overlaps the two), median over step pairs (< 1: RAD faster)")
    return publish(report, args.out, markdown)


def markdown(report: dict) -> str:
    lines = ["| trainer | samples/s | tokens/s | step s (mean) | step s (median) | " + " | ".join(PHASES)
             + " | startup s |",
             "| --- | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in PHASES) + " | ---: |"]
    for name, r in report["results"].items():
        ph = r["phase_seconds_mean"]
        lines.append(f"| {name} | {r['samples_per_s']:.1f} | {r['tokens_per_s']:.0f} | {r['step_seconds_mean']:.2f} | "
                     f"{r['step_seconds_median']:.2f} | " + " | ".join(phase_cell(ph, p) for p in PHASES)
                     + f" | {r['startup_seconds']:.1f} |")
    lines.append("\nPhase columns: mean seconds per step; - = the trainer has no such phase.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
