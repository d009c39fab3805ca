"""Running a few RL steps of RAD or PPO-Lag for a benchmark: per-step metrics, optionally memory.

Shared by ``ppo_lag_vs_rad``, ``rloo_vs_trl`` and ``scaling``. One warm-up step
(first-call allocations, lazy inits) is run and left out of every summary.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

#: The RL step phases a RAD / PPO-Lag step reports (``timing/<phase>``), in step order.
PHASES = ("generation", "scoring", "logprobs", "dominance", "learner", "weight_sync")


def add_rl_batch_args(parser, steps: int, k: int, steps_help: str) -> None:
    """The RL batch arguments the RL benchmarks share: measured steps, prompts x k samples of
    ``--max-new-tokens``, the learner micro batch and the local cluster's logical CPUs."""
    parser.add_argument("--steps", type=int, default=steps, help=steps_help)
    parser.add_argument("--prompts", type=int, default=16, help="prompts per step")
    parser.add_argument("--k", type=int, default=k, help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--micro-batch", type=int, default=16, help="learner micro batch")
    parser.add_argument("--num-cpus", type=int, default=8, help="logical CPUs of the local Ray cluster")


def rl_bench_setup(name: str, doc: str, argv: list[str] | None, steps: int, k: int, steps_help: str):
    """A two-run RL benchmark's arguments (models, batch, ``--out``), its temp dir, models and new report."""
    import argparse
    import tempfile

    from bench.common import add_model_args, args_settings, default_out, new_report, resolve_models

    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    add_model_args(p, default_size="small")
    add_rl_batch_args(p, steps=steps, k=k, steps_help=steps_help)
    p.add_argument("--out", default=str(default_out(name)))
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    models = resolve_models(args, tmp)
    report = new_report(name, argv, args_settings(args) | {"models": models})
    return args, tmp, models, report


def common_overrides(models: dict[str, str], max_new_tokens: int, rollout_micro_batch: int) -> list[str]:
    """Config overrides every benchmarked RL run shares: models, HF engine, fixed-length responses, no I/O."""
    return [f"policy.name_or_path={models['policy']}", f"reward_model={models['reward']}",
            f"cost_model={models['cost']}", "rollout.engine=hf",
            f"rollout.micro_batch_size={rollout_micro_batch}",
            f"rollout.sampling.max_new_tokens={max_new_tokens}",
            # never stop at EOS: every step generates exactly prompts * k * max_new_tokens tokens
            "rollout.sampling.stop_on_eos=false", "data.eval_prompts=embedded/prompts-test:2",
            "eval_samples_per_prompt=1", "save_every=0", "logging.tensorboard=false", "logging.jsonl=false",
            "logging.progress=false"]


def rad_overrides(prompts: int, k: int, micro_batch: int, lr: float = 1e-4) -> list[str]:
    """RAD with a small one-off reference sample (it is not part of the timed step)."""
    return [f"algo.k={k}", f"algo.prompts_per_step={prompts}", "algo.ref_costs.prompts=16",
            "algo.ref_costs.samples_per_prompt=2", f"learner.lr={lr}", f"learner.micro_batch_size={micro_batch}",
            "learner.zero_stage=0"]


def ppo_lag_overrides(prompts: int, k: int, micro_batch: int) -> list[str]:
    """PPO-Lag with one PPO update per rollout step (train batch = rollout batch), like RAD's one optimizer step."""
    return [f"algo.samples_per_prompt={k}", f"algo.prompts_per_step={prompts}",
            f"algo.train_batch_size={prompts * k}", "algo.update_iters=1", "actor_learner.lr=1e-4",
            f"actor_learner.micro_batch_size={micro_batch}", "actor_learner.zero_stage=0",
            f"critic_learner.micro_batch_size={micro_batch}", "critic_learner.zero_stage=0"]


# -- memory ---------------------------------------------------------------------------------------


def actor_pid(self) -> int:
    return os.getpid()


def actor_peak_rss(self) -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _state_bytes(self) -> dict[str, int]:
    """Bytes of the tensors held by the actor's modules and optimizers (params, grads, buffers, Adam state)."""
    import torch

    seen: set[int] = set()
    totals = {"parameters": 0, "gradients": 0, "optimizer": 0}

    def add(t, kind):
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return
        storage = t.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() == 0:
            return
        seen.add(storage.data_ptr())
        totals[kind] += storage.nbytes()

    visited: set[int] = set()

    def walk(obj, depth):
        if depth > 4 or id(obj) in visited:
            return
        visited.add(id(obj))
        if isinstance(obj, torch.nn.Module):
            for p in obj.parameters():
                add(p, "parameters")
                add(p.grad, "gradients")
            for b in obj.buffers():
                add(b, "parameters")
        if isinstance(obj, torch.optim.Optimizer):
            for state in obj.state.values():
                for v in state.values():
                    add(v, "optimizer")
        if isinstance(obj, dict):
            items = obj.values()
        elif isinstance(obj, (list, tuple)):
            items = obj
        elif hasattr(obj, "__dict__") and not isinstance(obj, torch.nn.Module):
            items = vars(obj).values()
        elif isinstance(obj, torch.nn.Module):
            items = [v for k, v in vars(obj).items() if k not in ("_parameters", "_buffers", "_modules")]
        else:
            return
        for item in items:
            walk(item, depth + 1)

    walk(self, 0)
    return totals


class PssSampler:
    """Samples the PSS of a set of processes in a thread; ``peak`` is the largest sum seen, ``peak_by_pid``
    each process's own largest."""

    def __init__(self, pids: list[int], interval: float = 0.2):
        import psutil

        self.procs = [psutil.Process(p) for p in pids]
        self.interval = interval
        self.peak = 0
        self.peak_by_pid = {p: 0 for p in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for proc in self.procs:
                try:
                    pss = proc.memory_full_info().pss
                except Exception:  # a process that exited counts as 0
                    continue
                total += pss
                self.peak_by_pid[proc.pid] = max(self.peak_by_pid[proc.pid], pss)
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def rl_roles(trainer, algo: str) -> dict[str, list]:
    common = {"reference": trainer.reference_policy.actors, "scorer": trainer.scorers.actors}
    if not trainer.rollout.hybrid:  # a hybrid rollout's actors are the policy learners, counted once
        common["rollout"] = trainer.rollout.actors
    if algo == "rad":
        return {"policy_learner": trainer.learners.actors, **common}
    return {"actor": trainer.actor.actors, "reward_critic": trainer.reward_critic.actors,
            "cost_critic": trainer.cost_critic.actors, **common}


def call_all(roles: dict[str, list], fn) -> dict[str, list]:
    import ray

    return {name: ray.get([a.__ray_call__.remote(fn) for a in actors]) for name, actors in roles.items()}


# -- the run --------------------------------------------------------------------------------------


def summarize_steps(rows: list[dict[str, float]]) -> dict[str, Any]:
    """Throughput and phase breakdown over measured steps: totals over the steps (mean), medians, best."""
    steps = [r["timing/step"] for r in rows]
    samples = [r["throughput/samples_per_s"] * r["timing/step"] for r in rows]
    tokens = [r["throughput/tokens_per_s"] * r["timing/step"] for r in rows]
    total = sum(steps)
    return {
        "steps": len(rows),
        "samples_per_step": round(statistics.mean(samples)),
        "tokens_per_step": round(statistics.mean(tokens)),
        "samples_per_s": sum(samples) / total, "tokens_per_s": sum(tokens) / total,
        "samples_per_s_best": max(s / t for s, t in zip(samples, steps)),
        "step_seconds_mean": total / len(rows), "step_seconds_median": statistics.median(steps),
        "step_seconds_best": min(steps), "step_seconds_all": steps,
        "phase_seconds_mean": {p: statistics.mean(r.get(f"timing/{p}", 0.0) for r in rows)
                               for p in PHASES if any(f"timing/{p}" in r for r in rows)},
        **({"sinkhorn_iters": [int(r["rad/sinkhorn_iters"]) for r in rows]} if "rad/sinkhorn_iters" in rows[0] else {}),
    }


def phase_cell(phases: dict[str, float], phase: str) -> str:
    """A Markdown cell for a phase's mean seconds ("-" when the trainer has no such phase)."""
    return f"{phases[phase]:.3f}" if phase in phases else "-"


def run_rad_modes(args, tmp: Path, models: dict[str, str], modes: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """The same RAD run once per mode (its extra overrides), one after the other in one Ray cluster, memory
    measured; each mode's summary without its prompt lists (for benchmarks that compare settings of RAD)."""
    import ray

    from bench.common import ray_init

    common = (common_overrides(models, args.max_new_tokens, rollout_micro_batch=args.prompts * args.k)
              + rad_overrides(args.prompts, args.k, args.micro_batch))
    ray_init(args.num_cpus)
    try:
        results = {mode: run_trainer("rad", common + extra, args.steps, tmp / mode, memory=True)
                   for mode, extra in modes.items()}
    finally:
        ray.shutdown()
    for r in results.values():
        r.pop("prompts_by_step")
    return results


def modes_table(results: dict[str, dict[str, Any]], mode_header: str) -> str:
    """Markdown: one row per mode of a RAD run measured with ``memory=True`` (roles, median step, mean phases, peak
    PSS, model state)."""
    mib = 2 ** 20
    lines = [f"| {mode_header} | roles | step s (median) | generation | scoring | logprobs | learner | weight sync | "
             "peak PSS MiB | model state MiB |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        ph = r["phase_seconds_mean"]
        roles = ", ".join(f"{k} x{v}" for k, v in r["roles"].items())
        lines.append(f"| {name} | {roles} | {r['step_seconds_median']:.2f} | "
                     + " | ".join(f"{ph.get(p, 0.0):.3f}" for p in ("generation", "scoring", "logprobs", "learner",
                                                                      "weight_sync"))
                     + f" | {r['peak_pss_total_bytes'] / mib:.0f} | {r['model_state_total_bytes'] / mib:.1f} |")
    return "\n".join(lines)


def build_trainer(algo: str, overrides: list[str], total_steps: int, out_dir: Path) -> tuple[Any, float]:
    """The ``algo`` trainer ("rad" or "ppo_lag") for ``total_steps`` steps and its start-up seconds.

    It is configured for one step more than that, so the last step run does the work of a step in a long
    run: with ``algo.overlap`` the final step of a run generates (and scores) nothing ahead, which would make
    the last measured step cheaper than the rest."""
    from rad.config import load_config

    if algo == "rad":
        from rad.algos.rad import RADConfig as Cfg
        from rad.algos.rad import RADTrainer as Trainer
    else:
        from safe_rlhf_baseline.config import PPOLagConfig as Cfg
        from safe_rlhf_baseline.trainer import PPOLagTrainer as Trainer

    cfg = load_config(Cfg, None, overrides + [f"output_dir={out_dir}", f"algo.steps={total_steps + 1}"])
    t0 = time.perf_counter()
    trainer = Trainer(cfg)
    return trainer, time.perf_counter() - t0


def run_trainer(algo: str, overrides: list[str], steps: int, out_dir: Path, memory: bool = False) -> dict[str, Any]:
    """Build the ``algo`` trainer ("rad" or "ppo_lag"), run one warm-up and ``steps`` measured steps, shut down."""
    trainer, startup = build_trainer(algo, overrides, steps + 1, out_dir)
    out: dict[str, Any] = {"startup_seconds": startup}
    try:
        roles = rl_roles(trainer, algo)
        out["roles"] = {name: len(actors) for name, actors in roles.items()}
        step_args, extra = trainer.before_loop()
        out.update(extra)
        warmup = trainer.train_step(*step_args)
        out["warmup_step_seconds"] = warmup["timing/step"]
        rows = []
        if memory:
            pids = [p for ps in call_all(roles, actor_pid).values() for p in ps]
            with PssSampler(pids) as sampler:
                rows = [trainer.train_step(*step_args) for _ in range(steps)]
            rss = call_all(roles, actor_peak_rss)
            state = call_all(roles, _state_bytes)
        else:
            rows = [trainer.train_step(*step_args) for _ in range(steps)]
        out["prompts_by_step"] = [trainer.step_prompts(s) for s in range(steps + 1)]
    finally:
        trainer.shutdown()
    out.update(summarize_steps(rows))
    if memory:
        role_state = {name: {k: sum(s[k] for s in per) for k in per[0]} for name, per in state.items()}
        out.update({
            "peak_pss_total_bytes": sampler.peak,
            "peak_rss_bytes": {name: sum(v) for name, v in rss.items()},
            "peak_rss_total_bytes": sum(sum(v) for v in rss.values()),
            "model_state_bytes": role_state,
            "model_state_total_bytes": sum(sum(v.values()) for v in role_state.values()),
            "trained_model_state_bytes": sum(sum(v.values()) for n, v in role_state.items()
                                             if n in ("policy_learner", "actor", "reward_critic", "cost_critic")),
        })
    return out
