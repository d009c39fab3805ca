"""Peak memory the learner's memory options save on CPU: a policy log-prob + backward pass, each option off vs on.

    python -m bench.memory [--sizes tiny small] [--response-lengths 64 256] [--batch 8] [--chunk-size 64] ...

For each tiny-model size (``model.tiny_size``) and response length, one micro batch
of ``--batch`` samples (prompts of ``--prompt-length`` tokens, response lengths
spread evenly over ``[length/4, length]``, as sampled responses vary) goes
through :func:`rad.runtime.logprobs.token_logprobs` and a backward pass of an
advantage-weighted sum of the log-probs, float32, in training mode, once per
configuration, side by side in one process:

* ``plain``: every option off (the ``[batch, length, vocab]`` float32 log-softmax);
* ``chunked``: ``learner.logprob_chunk_size=--chunk-size``;
* ``packing``: ``learner.packing=true``;
* ``checkpointing``: ``learner.gradient_checkpointing=true``;
* ``all``: the three together.

The peak is of the memory torch allocates during the pass above what was live
before it (parameters and inputs): the PyTorch profiler's record of every CPU
allocation and free (``profile_memory``), summed in time order. Memory, unlike
time, does not depend on the machine's load; the ratios ``plain / option`` say
how many times less memory the pass takes with the option. Parameter gradients
are part of every configuration's peak alike.

Writes ``bench/results/memory.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable

import torch

from bench.common import args_settings, default_out, new_report, publish, ratio
from rad.settings import TINY_SIZES

NAME = "memory"
#: Configuration name -> keyword arguments of token_logprobs (checkpointing is a model setting).
CONFIGS = ("plain", "chunked", "packing", "checkpointing", "all")


def peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak of CPU memory torch allocates while ``fn()`` runs, above what was allocated before (profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def make_samples(vocab: int, batch: int, prompt_length: int, response_length: int, seed: int) -> list[dict]:
    """``batch`` samples, response lengths evenly spread over ``[response_length / 4, response_length]``."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.linspace(max(1, response_length // 4), response_length, batch).round().long().tolist()
    return [{"prompt_ids": torch.randint(3, vocab, (prompt_length,), generator=g).tolist(),
             "response_ids": torch.randint(3, vocab, (n,), generator=g).tolist()} for n in lengths]


def options(config: str, chunk_size: int) -> dict[str, Any]:
    """token_logprobs keyword arguments of a configuration."""
    return {"chunked": {"chunk_size": chunk_size}, "packing": {"packing": True},
            "all": {"chunk_size": chunk_size, "packing": True}}.get(config, {})


def measure(model: torch.nn.Module, batch: dict[str, torch.Tensor], config: str, chunk_size: int) -> dict[str, Any]:
    """One log-prob + backward pass of ``config``: peak bytes, seconds, and the summed log-prob (a sanity check)."""
    from rad.runtime.learner import enable_gradient_checkpointing
    from rad.runtime.logprobs import token_logprobs

    if config in ("checkpointing", "all"):
        enable_gradient_checkpointing(model)
    weights = torch.linspace(-1, 1, batch["input_ids"].shape[0])[:, None]
    out: dict[str, float] = {}

    def step() -> None:
        model.zero_grad(set_to_none=True)
        lp = token_logprobs(model, batch, **options(config, chunk_size))
        (weights * lp).sum().backward()
        out["logprob_sum"] = float(lp.detach().sum())

    try:
        start = time.perf_counter()
        peak = peak_bytes(step)
        seconds = time.perf_counter() - start
    finally:
        model.gradient_checkpointing_disable()
        model.zero_grad(set_to_none=True)
    return {"config": config, "peak_mib": peak / 2**20, "seconds_profiled": seconds, **out}


def run_case(size: str, response_length: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every configuration on one model size and response length."""
    from rad.algos.assets import tiny_model_dir
    from rad.models.loading import load_causal_lm
    from rad.runtime.logprobs import collate_samples
    from rad.settings import WorldConfig

    model = load_causal_lm(tiny_model_dir(WorldConfig(), size=size), dtype=torch.float32).train()
    samples = make_samples(model.config.vocab_size, args.batch, args.prompt_length, response_length, seed=0)
    batch = collate_samples(samples, pad_id=0)
    shape = {"size": size, "vocab": model.config.vocab_size, "response_length": response_length,
             "batch": args.batch, "tokens": int(batch["attention_mask"].sum()),
             "padded_tokens": int(batch["attention_mask"].numel())}
    measure(model, batch, "plain", args.chunk_size)  # warm-up: lazy initialisation stays out of the peaks
    return [{**shape, **measure(model, batch, config, args.chunk_size)} for config in CONFIGS]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"], choices=TINY_SIZES)
    parser.add_argument("--response-lengths", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--prompt-length", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8, help="samples in the micro batch")
    parser.add_argument("--chunk-size", type=int, default=64, help="learner.logprob_chunk_size of chunked / all")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=default_out(NAME))
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    report = new_report(NAME, argv, args_settings(args))
    rows = [row for size in args.sizes for length in args.response_lengths for row in run_case(size, length, args)]
    report["results"] = {"rows": rows}
    longest = max(args.response_lengths)
    for size in args.sizes:
        by = {r["config"]: r for r in rows if r["size"] == size and r["response_length"] == longest}
        for config in CONFIGS[1:]:
            report["ratios"][f"{config}_{size}_r{longest}"] = ratio(
                by["plain"]["peak_mib"] / by[config]["peak_mib"],
                f"peak memory of a log-prob + backward pass, plain / {config} (tiny:{size}, batch {args.batch}, "
                f"responses up to {longest} tokens; > 1: the option saves)")
    return publish(report, args.out, markdown)


def markdown(report: dict) -> str:
    lines = ["| model | vocab | response length | tokens / padded | config | peak MiB | x less than plain | "
             "profiled s |", "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    rows = report["results"]["rows"]
    plain = {(r["size"], r["response_length"]): r["peak_mib"] for r in rows if r["config"] == "plain"}
    for r in rows:
        lines.append(f"| {r['size']} | {r['vocab']} | {r['response_length']} | {r['tokens']} / {r['padded_tokens']} "
                     f"| {r['config']} | {r['peak_mib']:.2f} "
                     f"| {plain[(r['size'], r['response_length'])] / r['peak_mib']:.2f} "
                     f"| {r['seconds_profiled']:.2f} |")
    lines.append("\nPeak: torch's CPU allocations during the pass above what was live before it (profiler). The tiny "
                 "models' vocabularies are 8-16x their hidden size, so attention and MLP activations weigh as much as "
                 "the logits; with a 150k vocabulary and hidden size 1-4k the logits (and `chunked`) dominate.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
