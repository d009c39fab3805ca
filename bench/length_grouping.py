"""Padding and learner time that grouping micro batches by length saves: a RAD learner step, group_by_length off vs on.

    python -m bench.length_grouping [--sizes tiny small] [--response-length 256] [--samples 32] [--micro-batch 4] ...

For each tiny-model size (``model.tiny_size``), one shard of ``--samples`` samples
(prompts of ``--prompt-length`` tokens, response lengths drawn uniformly from
``[length/8, length]`` in random order, as sampled responses come) is trained on by two
single-rank :class:`~rad.runtime.policy_workers.PolicyLearner` ranks built alike, side by
side in one process: ``off`` cuts the shard's micro batches in arrival order
(``learner.group_by_length=false``), ``on`` groups samples of similar lengths
(``learner.group_by_length=true``); both make ``samples / micro-batch`` micro batches, one
optimizer step (``grad_accum`` = that count), float32, DeepSpeed ZeRO 0.

Padded tokens are the micro batches' ``rows x width`` summed (each trimmed to its longest
sequence), the largest one is what the biggest micro batch holds; the learner time is
the median of ``--steps`` train steps per configuration, the two alternating (so a load
change hits both). Both ranks start from the same weights and take the same gradient, so
their first-step losses agree (a check, in the table).

Writes ``bench/results/length_grouping.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import args_settings, default_out, new_report, publish, ratio
from rad.settings import TINY_SIZES

NAME = "length_grouping"
CONFIGS = ("off", "on")


def make_batch(vocab: int, samples: int, prompt_length: int, response_length: int, seed: int):
    """A :class:`~rad.runtime.batch.TokenBatch` of ``samples`` with response lengths uniform over
    ``[response_length / 8, response_length]`` and a random advantage each."""
    from rad.runtime.batch import TokenBatch

    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(max(1, response_length // 8), response_length + 1, (samples,), generator=g).tolist()
    prompts = [torch.randint(3, vocab, (prompt_length,), generator=g).tolist() for _ in lengths]
    responses = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths]
    batch = TokenBatch.from_ids(prompts, responses, pad_id=0)
    return batch.with_fields(advantages=torch.randn(samples, generator=g, dtype=torch.float64))


def padding(micro: list) -> dict[str, int]:
    """Padded tokens of micro batches (each trimmed to its longest sequence): in all and in the largest."""
    sizes = [mb.input_ids.numel() for mb in micro]
    return {"micro_batches": len(micro), "padded_tokens": sum(sizes), "largest_micro_batch": max(sizes)}


def learner(model_dir: str, cfg, group_by_length: bool, total_steps: int):
    import dataclasses

    from rad.runtime.distributed import free_port
    from rad.runtime.policy_workers import PolicyLearner

    rank = PolicyLearner(model_dir, dataclasses.replace(cfg, group_by_length=group_by_length), total_steps)
    rank.init(0, 1, "127.0.0.1", free_port(), seed=0)
    return rank


def run_case(size: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Both configurations on one model size."""
    from rad.algos.assets import tiny_model_dir
    from rad.settings import LearnerConfig, WorldConfig

    model_dir = str(tiny_model_dir(WorldConfig(), size=size))
    cfg = LearnerConfig(micro_batch_size=args.micro_batch, grad_accum=-(-args.samples // args.micro_batch), lr=1e-4,
                        scheduler="constant", warmup_ratio=0.0)
    ranks = {c: learner(model_dir, cfg, c == "on", total_steps=args.steps + 1) for c in CONFIGS}
    batch = make_batch(ranks["off"].learner.module.config.vocab_size, args.samples, args.prompt_length,
                       args.response_length, seed=0)
    shape = {"size": size, "samples": args.samples, "micro_batch": args.micro_batch,
             "response_length": args.response_length, "tokens": int(batch.attention_mask.sum())}
    cut = {"off": padding(batch.micro_batches(args.micro_batch)),
           "on": padding(batch.grouped_micro_batches(args.micro_batch)[0])}
    seconds: dict[str, list[float]] = {c: [] for c in CONFIGS}
    first_loss = {c: ranks[c].train_step(batch)["loss"] for c in CONFIGS}  # warm-up, and the same-gradient check
    for _ in range(args.steps):
        for c in CONFIGS:
            start = time.perf_counter()
            ranks[c].train_step(batch)
            seconds[c].append(time.perf_counter() - start)
    return [{**shape, "config": c, **cut[c], "seconds_per_step": statistics.median(seconds[c]),
             "seconds": seconds[c], "first_loss": first_loss[c]} for c in CONFIGS]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"], choices=TINY_SIZES)
    parser.add_argument("--response-length", type=int, default=256, help="the longest response")
    parser.add_argument("--prompt-length", type=int, default=16)
    parser.add_argument("--samples", type=int, default=32, help="samples in the shard (one optimizer step)")
    parser.add_argument("--micro-batch", type=int, default=4, help="learner.micro_batch_size")
    parser.add_argument("--steps", type=int, default=3, help="timed train steps per configuration")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=default_out(NAME))
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    report = new_report(NAME, argv, args_settings(args))
    rows = [row for size in args.sizes for row in run_case(size, args)]
    report["results"] = {"rows": rows}
    for size in args.sizes:
        by = {r["config"]: r for r in rows if r["size"] == size}
        what = f"(tiny:{size}, {args.samples} samples in micro batches of {args.micro_batch}, responses of " \
               f"{max(1, args.response_length // 8)}-{args.response_length} tokens"
        report["ratios"][f"padded_tokens_{size}"] = ratio(
            by["off"]["padded_tokens"] / by["on"]["padded_tokens"],
            f"padded tokens of a train step's micro batches, arrival order / grouped by length {what}; > 1: fewer)")
        report["ratios"][f"step_time_{size}"] = ratio(
            by["off"]["seconds_per_step"] / by["on"]["seconds_per_step"],
            f"learner train-step time, arrival order / grouped by length {what}; > 1: faster)")
    return publish(report, args.out, markdown)


def markdown(report: dict) -> str:
    lines = ["| model | samples / micro batch | response length | tokens | group_by_length | padded tokens | "
             "largest micro batch | s / step | x faster | first-step loss |",
             "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    rows = report["results"]["rows"]
    off = {r["size"]: r["seconds_per_step"] for r in rows if r["config"] == "off"}
    for r in rows:
        lines.append(f"| {r['size']} | {r['samples']} / {r['micro_batch']} | {r['response_length']} | {r['tokens']} "
                     f"| {r['config']} | {r['padded_tokens']} | {r['largest_micro_batch']} "
                     f"| {r['seconds_per_step']:.2f} | {off[r['size']] / r['seconds_per_step']:.2f} "
                     f"| {r['first_loss']:.5g} |")
    lines.append("\nPadded tokens: rows x width of each micro batch, summed; the largest micro batch bounds the "
                 "activation memory. The first-step losses agree: grouping changes which samples share a micro batch, "
                 "not the gradient.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
