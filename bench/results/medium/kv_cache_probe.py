"""HF ``generate`` with a dynamic vs a static KV cache (``rollout.hf_kv_cache``), interleaved in one process.

    python bench/results/medium/kv_cache_probe.py [--sizes tiny small medium] [--lengths 64 128] [--repeats 2]

One torch thread (as a rollout actor with one Ray CPU), 32 left-padded prompts of 24 random tokens, sampling
exactly ``length`` new tokens; the two caches alternate, and each keeps its fastest call. Prints one JSON line
per (size, length) with both times and dynamic / static (> 1: static faster).
"""
import argparse
import json
import os
import time

import torch

from rad.algos.assets import tiny_model_dir
from rad.models.loading import load_causal_lm
from rad.settings import TINY_SIZES, WorldConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["tiny", "small", "medium"], choices=TINY_SIZES)
    p.add_argument("--lengths", nargs="+", type=int, default=[64, 128])
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1)
    for size in args.sizes:
        model = load_causal_lm(str(tiny_model_dir(WorldConfig(seed=0), size=size, seed=0))).eval()
        ids = torch.randint(10, 1000, (32, 24), generator=torch.Generator().manual_seed(0))
        for length in args.lengths:
            best = {"dynamic": float("inf"), "static": float("inf")}
            for _ in range(args.repeats):
                for cache in best:
                    extra = {"cache_implementation": "static"} if cache == "static" else {}
                    start = time.perf_counter()
                    with torch.no_grad():
                        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                       max_new_tokens=length, min_new_tokens=length, pad_token_id=0, **extra)
                    best[cache] = min(best[cache], time.perf_counter() - start)
            print(json.dumps({"size": size, "length": length, "dynamic_s": round(best["dynamic"], 3),
                              "static_s": round(best["static"], 3),
                              "dynamic_over_static": round(best["dynamic"] / best["static"], 3),
                              "load": [round(x, 1) for x in os.getloadavg()]}), flush=True)


if __name__ == "__main__":
    main()
