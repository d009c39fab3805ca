"""One-GPU check: RAD and PPO-Lag steps of a ~0.5B Qwen2 policy with every role on one device.

    python -m bench.gpu_check [--device cuda|cpu] [--size 0.5b|tiny] [--steps 2] [--budget-s 480] [--out FILE]

Ready to run on a single GPU without network (``bench/GPU.md``: bringing Ray, DeepSpeed
and POT to a machine that lacks them). The same code runs on CPU with a tiny size as a
smoke test (``--device cpu --size tiny --steps 1``, in ``tests/bench/test_bench_smoke.py``);
only the device, the GPU shares and the weight transport differ, and they are config values.

What it does:

* builds the models locally, randomly initialised (nothing is downloaded): a Qwen2-architecture
  policy of ``--size`` (``0.5b``: Qwen2-0.5B's layer shape, hidden 896, 14 heads, 2 KV heads,
  intermediate 4864, with 33 layers instead of 24 so that the project's 2k-token vocabulary,
  which has almost no embedding share, still makes ~0.5B parameters) and small Qwen2 reward
  and cost score models (seeded heads), all on the tiny world's tokenizer
  (:func:`rad.algos.assets.tiny_model_dir`);
* starts Ray with ``num_gpus=1`` (0 on CPU) and places every role on the device with
  fractional GPUs (:data:`GPU_SHARES`): the learner ranks and PPO-Lag's critics
  (``resources.gpus_per_learner``), the reference (``resources.gpus_per_reference``), the
  scorer (``resources.gpus_per_scorer``) and the HF rollout engine (``rollout.num_gpus_per_engine``);
* runs ``--steps`` RAD steps and ``--steps`` PPO-Lag steps through the trainers the CLI uses
  (:class:`~rad.algos.rad.RADTrainer`, :class:`~safe_rlhf_baseline.trainer.PPOLagTrainer`),
  once with separate engines and once with ``rollout.hybrid=true`` (the learner's own module
  generates: no engine copy, nothing to sync); ``--runs`` picks a subset;
* after every step (whose last phase is the weight sync) compares each engine's weights with
  learner rank 0's bit for bit, and checks that the policy moved;
* reads every role's peak memory (:meth:`rad.runtime.roles.RLRoles.memory`: torch's peak
  allocated / reserved CUDA memory of each actor, its peak RSS on CPU) and prints the per-phase
  times (``timing/*``), tokens/s, memory per role, and one ``gpu_check PASS`` / ``gpu_check FAIL``
  line; exits 1 on FAIL.

The JSON (``bench/results/gpu_check.json`` by default) is rewritten after every run, so a run
killed by a time limit still leaves what it measured.

Weight transport: the product's ``auto``. On one GPU the learner and the engine share the device
and NCCL cannot join two processes on one device, so ``auto`` resolves to ``ipc`` there (the
engine opens CUDA IPC handles of the learner's parameters, see
:func:`rad.runtime.rollout.weight_sync.resolve_transport`); on CPU to ``broadcast`` (gloo). The
resolved transport is recorded per run; ``--weight-sync`` forces another.
"""

from __future__ import annotations

import argparse
import dataclasses
import faulthandler
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import default_out, finish_report, new_report, publish, ratio, ray_init, seeded_score_models
from bench.rl_runs import (PHASES, build_trainer, common_overrides, phase_cell, ppo_lag_overrides, rad_overrides,
                           summarize_steps)

NAME = "gpu_check"
#: The runs: each algorithm with separate engines, then with the learner generating itself (rollout.hybrid).
RUNS = ("rad_separate", "ppo_lag_separate", "rad_hybrid", "ppo_lag_hybrid")


@dataclass(frozen=True)
class Qwen2Shape:
    """The transformer shape of a Qwen2 model (head dimension = hidden / heads)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int


#: ``--size`` -> (policy, score-model backbone). 0.5b: 33 x 14.9M per layer + 1.8M embedding = 0.49B,
#: Qwen2-0.5B's count (whose 24 layers hold 0.36B and its 152k-token embedding the rest).
SIZES: dict[str, tuple[Qwen2Shape, Qwen2Shape]] = {
    "0.5b": (Qwen2Shape(896, 4864, 33, 14, 2), Qwen2Shape(256, 1024, 4, 4, 2)),
    "tiny": (Qwen2Shape(64, 128, 2, 4, 2), Qwen2Shape(32, 64, 1, 2, 1)),
}
#: ``--size`` -> the batch of one step (prompts x k samples of max_new_tokens) and the learner micro batch.
BATCHES: dict[str, dict[str, int]] = {
    "0.5b": {"prompts": 16, "k": 4, "max_new_tokens": 128, "micro_batch": 16},
    "tiny": {"prompts": 2, "k": 2, "max_new_tokens": 8, "micro_batch": 4},
}
#: Fractions of the one GPU each role's actor reserves. PPO-Lag holds the most: actor and two critics at
#: the learner share, the reference, a scorer and an engine: 3 x 0.15 + 0.1 + 0.1 + 0.2 = 0.85 <= 1.
GPU_SHARES = {"learner": 0.15, "reference": 0.1, "scorer": 0.1, "engine": 0.2}
#: Default weight transport per device (see the module docstring).
TRANSPORT = "auto"  # resolved by the product: ipc on one shared GPU, the gloo broadcast on CPU


# -- models ---------------------------------------------------------------------------------------


def build_qwen2(tokenizer, shape: Qwen2Shape, seed: int):
    """A randomly initialised (seeded) Qwen2 causal LM of ``shape`` on ``tokenizer``'s vocabulary, bfloat16.

    Saved in bfloat16 (what a GPU role runs; a CPU role loads it as float32), tied embeddings as in
    Qwen2-0.5B.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=len(tokenizer), **dataclasses.asdict(shape),
                         max_position_embeddings=tokenizer.model_max_length, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    return model.to(torch.bfloat16).eval()


def build_models(size: str, out_dir: Path, seed: int = 0) -> dict[str, Any]:
    """The policy and the reward / cost score models of ``size`` under ``out_dir``; their paths and sizes."""
    from rad.algos.assets import tiny_model_dir
    from rad.models.loading import load_tokenizer, save_pretrained_atomic
    from rad.settings import WorldConfig

    tokenizer = load_tokenizer(tiny_model_dir(WorldConfig(), size="small"))
    policy_shape, score_shape = SIZES[size]
    out: dict[str, Any] = {"source": f"Qwen2 {size}, random init, tiny world tokenizer ({len(tokenizer)} tokens)"}
    for role, shape, role_seed in (("policy", policy_shape, seed), ("score_backbone", score_shape, seed + 1)):
        model = build_qwen2(tokenizer, shape, role_seed)
        out[f"{role}_parameters"] = sum(p.numel() for p in model.parameters())
        out[role] = str(save_pretrained_atomic(model, tokenizer, out_dir / role))
        del model
    out.update(seeded_score_models(out["score_backbone"], out_dir))
    return out


# -- one run ----------------------------------------------------------------------------------------


def run_overrides(args: argparse.Namespace, models: dict[str, Any], algo: str, hybrid: bool) -> list[str]:
    """Config overrides of one run: the benchmarks' shared ones plus this device's placement and transport."""
    batch = BATCHES[args.size]
    on_gpu = args.device == "cuda"
    shares = {k: (v if on_gpu else 0.0) for k, v in GPU_SHARES.items()}
    per_algo = (rad_overrides(batch["prompts"], batch["k"], batch["micro_batch"]) if algo == "rad"
                else ppo_lag_overrides(batch["prompts"], batch["k"], batch["micro_batch"]))
    return [*common_overrides(models, batch["max_new_tokens"], rollout_micro_batch=batch["prompts"] * batch["k"]),
            *per_algo,
            f"resources.gpus_per_learner={shares['learner']}", f"resources.gpus_per_reference={shares['reference']}",
            f"resources.gpus_per_scorer={shares['scorer']}",
            f"rollout.num_gpus_per_engine={shares['engine']}",
            f"rollout.weight_sync={args.weight_sync or TRANSPORT}", "rollout.sync_timeout_s=120",
            *(["rollout.hybrid=true"] if hybrid else [])]


def engine_actors(trainer) -> list:
    """The rollout actors that hold a model copy of their own (none when the learner generates itself)."""
    return [] if trainer.rollout.hybrid else trainer.rollout.actors


def sync_check(trainer, initial: dict) -> dict[str, Any]:
    """Learner rank 0's weights against each engine's, bit for bit, and how many tensors moved since ``initial``."""
    import ray
    import torch

    want = trainer.learners.broadcast("state_dict")[0]
    engines = []
    for weights in ray.get([a.get_weights.remote() for a in engine_actors(trainer)]):
        names = [n for n in want if n in weights]
        differ = [n for n in names if not torch.equal(weights[n].to(want[n].dtype), want[n])]
        engines.append({"tensors_compared": len(names), "learner_tensors": len(want), "differ": differ[:5],
                        "equal": len(names) == len(want) and not differ})
    return {"engines": engines, "tensors_changed": sum(not torch.equal(want[n], initial[n]) for n in want)}


def run_one(algo: str, overrides: list[str], steps: int, out_dir: Path) -> dict[str, Any]:
    """``steps`` steps of ``algo`` ("rad" or "ppo_lag"): step metrics, a sync check after each, role memory."""
    trainer, startup = build_trainer(algo, overrides, steps, out_dir)
    try:
        out: dict[str, Any] = {"startup_seconds": startup, "transport": trainer.roles.transport,
                               "engine": trainer.rollout.kind, "hybrid": trainer.rollout.hybrid}
        step_args, extra = trainer.before_loop()
        out.update(extra)
        initial = trainer.learners.broadcast("state_dict")[0]
        rows, checks = [], []
        for _ in range(steps):
            rows.append(trainer.train_step(*step_args))
            checks.append(sync_check(trainer, initial))
        memory = trainer.roles.memory()
    finally:
        trainer.shutdown()
    return {**out, **summarize_steps(rows), "steps_metrics": [{k: v for k, v in r.items()
                                                                if k.startswith(("timing/", "throughput/"))}
                                                               for r in rows],
            "sync_checks": checks, "memory": memory}


def run_problems(run: dict[str, Any], device: str, steps: int) -> list[str]:
    """What is wrong with one run's result (empty: it passed)."""
    if "error" in run:
        return [f"failed: {run['error']}"]
    problems = []
    if run["steps"] != steps:
        problems.append(f"{run['steps']} of {steps} steps")
    for step, check in enumerate(run["sync_checks"], 1):
        bad = [e for e in check["engines"] if not e["equal"]]
        if bad:
            problems.append(f"step {step}: engine weights differ from the learner's ({bad[0]['differ']}, "
                            f"{bad[0]['tensors_compared']} of {bad[0]['learner_tensors']} tensors compared)")
    if run["sync_checks"] and not run["sync_checks"][-1]["tensors_changed"]:
        problems.append("the policy's weights did not change")
    off = [f"{role} on {m['device']}" for role, ms in run["memory"].items() for m in ms
           if not m["device"].startswith(device)]
    if off:
        problems.append(f"roles not on {device}: {', '.join(off)}")
    return problems


# -- the check -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--size", default="0.5b", choices=tuple(SIZES))
    p.add_argument("--steps", type=int, default=2, help="steps per run (each followed by a weight-sync check)")
    p.add_argument("--weight-sync", choices=("broadcast", "object_store", "ipc"),
                   help="learner -> engine transport (default: the product's auto)")
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS,
                   help="which of the four runs (algorithm x rollout mode), in this order")
    p.add_argument("--budget-s", type=float, default=480.0, help="wall-time budget; over it is a FAIL (0 = none)")
    p.add_argument("--num-cpus", type=int, default=8, help="logical CPUs of the local Ray cluster")
    p.add_argument("--out", default=str(default_out(NAME)))
    args = p.parse_args(argv)
    return check(args, argv)


def check(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    import ray
    import torch

    start = time.perf_counter()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check FAIL: --device cuda, but torch sees no CUDA device (use --device cpu)")
    if args.budget_s > 0:  # a hang prints where the driver waits, while the run goes on
        faulthandler.dump_traceback_later(args.budget_s, exit=False)
    tmp = Path(tempfile.mkdtemp(prefix="bench-gpu-check-"))
    models = build_models(args.size, tmp / "models")
    settings = {k: v for k, v in vars(args).items() if k != "out"} | {
        "batch": BATCHES[args.size], "gpu_shares": GPU_SHARES if args.device == "cuda" else {},
        "weight_sync": args.weight_sync or TRANSPORT, "models": models,
        "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None}
    report = new_report(NAME, argv, settings)
    report["results"] = {"model_build_seconds": time.perf_counter() - start, "runs": {}}
    runs = [key.rsplit("_", 1) for key in RUNS if key in args.runs]
    ray_init(args.num_cpus, num_gpus=1 if args.device == "cuda" else 0)
    try:
        for algo, mode in runs:
            key = f"{algo}_{mode}"
            print(f"gpu_check: {key} ({args.steps} steps)", flush=True)
            try:
                result = run_one(algo, run_overrides(args, models, algo, mode == "hybrid"), args.steps, tmp / key)
            except Exception as exc:  # recorded; the other runs still go
                traceback.print_exc()
                result = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            report["results"]["runs"][key] = result
            finish_report(report, args.out)  # what is measured so far survives a kill
    finally:
        ray.shutdown()
        faulthandler.cancel_dump_traceback_later()
    results = report["results"]
    results["wall_seconds"] = time.perf_counter() - start
    problems = [f"{key}: {problem}" for key, run in results["runs"].items()
                for problem in run_problems(run, args.device, args.steps)]
    if args.budget_s > 0 and results["wall_seconds"] > args.budget_s:
        problems.append(f"took {results['wall_seconds']:.0f} s, over the {args.budget_s:.0f} s budget")
    results["passed"], results["problems"] = not problems, problems
    rad, lag = results["runs"].get("rad_separate", {}), results["runs"].get("ppo_lag_separate", {})
    if "step_seconds_mean" in rad and "step_seconds_mean" in lag:
        report["ratios"]["ppo_lag_over_rad_step_seconds"] = ratio(
            lag["step_seconds_mean"] / rad["step_seconds_mean"], "PPO-Lag / RAD mean step time, separate engines")
    hyb = results["runs"].get("rad_hybrid", {})
    if "step_seconds_mean" in rad and "step_seconds_mean" in hyb:
        report["ratios"]["rad_hybrid_over_separate_step_seconds"] = ratio(
            hyb["step_seconds_mean"] / rad["step_seconds_mean"], "RAD step time, hybrid / separate engines")
    publish(report, args.out, markdown)
    print(summary_line(report))
    return report


def role_peak_gib(stats: list[dict[str, Any]], device: str) -> float:
    """A role's peak memory in GiB, summed over its actors: CUDA memory torch reserved on a GPU, else RSS."""
    key = "peak_reserved_mb" if device == "cuda" else "peak_rss_mb"
    return sum(m.get(key, 0.0) for m in stats) / 1024


def summary_line(report: dict[str, Any]) -> str:
    """The one-line verdict."""
    res, st = report["results"], report["settings"]
    syncs = sum(len(c["engines"]) for r in res["runs"].values() for c in r.get("sync_checks", []))
    peak = max((sum(role_peak_gib(ms, st["device"]) for ms in r["memory"].values())
                for r in res["runs"].values() if "memory" in r), default=0.0)
    what = "GPU memory reserved" if st["device"] == "cuda" else "RSS"
    head = (f"gpu_check PASS: {len(res['runs'])} runs x {st['steps']} steps on {st['device']} ({st['size']}), "
            f"engines == learner after all {syncs} engine syncs" if res["passed"]
            else f"gpu_check FAIL: {'; '.join(res['problems'])}")
    return f"{head}; peak {what} of all roles {peak:.1f} GiB; {res['wall_seconds']:.0f} s " \
           f"(budget {st['budget_s']:.0f} s)"


def markdown(report: dict[str, Any]) -> str:
    """Per run: step time, tokens/s, the phases' mean seconds and each role's peak memory."""
    device = report["settings"]["device"]
    what = "peak GPU memory reserved, GiB" if device == "cuda" else "peak RSS, GiB"
    lines = ["| run | steps | step s (mean) | tokens/s | " + " | ".join(PHASES) + f" | startup s | {what} |",
             "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in PHASES) + " | ---: | --- |"]
    for key, r in report["results"]["runs"].items():
        if "error" in r:
            lines.append(f"| {key} | failed: {r['error'][:120]} |")
            continue
        mem = ", ".join(f"{role} {role_peak_gib(ms, device):.2f}" for role, ms in r["memory"].items())
        lines.append(f"| {key} | {r['steps']} | {r['step_seconds_mean']:.2f} | {r['tokens_per_s']:.0f} | "
                     + " | ".join(phase_cell(r["phase_seconds_mean"], ph) for ph in PHASES)
                     + f" | {r['startup_seconds']:.0f} | {mem} |")
    res = report["results"]
    verdict = "PASS" if res.get("passed") else "FAIL: " + "; ".join(res.get("problems", []))
    return "\n".join(lines) + (f"\n\nModels: {report['settings']['models']['source']}, policy "
                               f"{report['settings']['models']['policy_parameters'] / 1e6:.3g}M parameters; "
                               f"{verdict}; wall {res.get('wall_seconds', 0):.0f} s.")


if __name__ == "__main__":
    raise SystemExit(0 if main()["results"]["passed"] else 1)
