"""Growth curves: RAD vs TRL's ``RLOOTrainer`` as the model and the response length grow, memory options off and on.

    python -m bench.growth [--sizes tiny small] [--lengths 48 128 256] [--options off on] [--trl-threads 1 2]
                           [--prompts 8] [--k 4] [--micro-batch 16] [--steps 3] [--with EARLIER.json] [--out FILE]

For each model preset of ``--sizes`` (``rad.settings.TINY_SIZES``, by default every one, smallest
first; seeded, untrained reward / cost heads on its backbone) and each response length of
``--lengths``, RAD and TRL's ``RLOOTrainer`` run interleaved in one process and one local Ray
cluster, exactly as ``bench.rloo_vs_trl`` runs them (:func:`bench.rloo_vs_trl.run_pair`: the same
prompts, k, batch, fixed-length responses, RLOO settings and score models; one warm-up pair,
then ``--steps`` measured pairs). Each cell records samples/s and tokens/s of both trainers, the
RAD / TRL ratio (median over the interleaved pairs), each phase's share of the step, and peak
memory: every RAD role's peak RSS and peak PSS, and the PSS of this process, which holds TRL
(its policy, reference, score models, optimizer and activations) and RAD's model-less driver.

Memory options (``--options``):

* ``off``: every option off on both trainers;
* ``on``: RAD with ``learner.gradient_checkpointing``, ``learner.logprob_chunk_size=--chunk-size``,
  ``learner.packing`` and ``rollout.hybrid`` (colocation: the learner's module generates, no engine
  copy and no weight sync); TRL with ``gradient_checkpointing`` (``RLOOTrainer`` has neither
  chunked log-probs nor packing, and always generates with its own policy).

Fair settings, recorded in the JSON: both trainers generate with HF ``generate`` (RAD
``rollout.engine=hf``, TRL without vLLM) in float32 on the CPU. RAD runs one intra-op thread
per Ray actor (its roles work in parallel). TRL's thread count is chosen per size by a probe
before the cells: TRL alone at ``--probe-length`` (default: the middle of ``--lengths``), options
off, its steps cycling through the ``--trl-threads`` settings (so a change in load hits each alike;
one warm-up round, then ``--probe-steps`` rounds); the setting with more samples/s runs every cell
of that size, and the probe's steps stay in the JSON.

Writes ``bench/results/growth.json`` and, next to it, ``growth.png``: seconds per sample against
parameters and against response length, for both trainers (options off).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.common import default_out, new_report, publish, ratio, ray_init, resolve_models
from rad.settings import TINY_SIZES
from bench.rl_runs import PHASES, summarize_steps
from bench.rloo_vs_trl import rad_rloo_overrides, run_pair, run_trl

NAME = "growth"
_MIB = 2 ** 20
#: Short names of the phases in the share columns, in :data:`bench.rl_runs.PHASES` order.
_SHORT = {"generation": "gen", "scoring": "score", "logprobs": "logp", "dominance": "dom", "learner": "learn",
          "weight_sync": "sync"}


def memory_options(option: str, chunk_size: int) -> tuple[list[str], bool]:
    """RAD's config overrides and TRL's ``gradient_checkpointing`` for memory option ``off`` or ``on``."""
    if option == "off":
        return [], False
    return ["learner.gradient_checkpointing=true", f"learner.logprob_chunk_size={chunk_size}",
            "learner.packing=true", "rollout.hybrid=true"], True


def parameter_count(model_dir: str) -> int:
    """Distinct parameters of the model saved in ``model_dir`` (tied embeddings counted once)."""
    from rad.models.loading import load_causal_lm

    return sum(p.numel() for p in load_causal_lm(model_dir).parameters())


def phase_shares(summary: dict[str, Any]) -> dict[str, float]:
    """Each phase's mean seconds over the mean step (RAD's scoring / log-prob phases are waits, so shares add to ~1)."""
    return {p: s / summary["step_seconds_mean"] for p, s in summary["phase_seconds_mean"].items()}


def run_cell(models: dict[str, str], args: argparse.Namespace, tmp: Path, size: str, length: int, option: str,
             trl_threads: int) -> dict[str, Any]:
    """One interleaved RAD / TRL run at a model size, response length, memory option and TRL thread count."""
    cell_args = argparse.Namespace(**{**vars(args), "max_new_tokens": length, "trl_threads": trl_threads})
    rad_extra, trl_checkpointing = memory_options(option, args.chunk_size)
    name = f"{size}-r{length}-{option}-t{trl_threads}"
    print(f"\n=== {name}", flush=True)
    pair = run_pair(models, cell_args, tmp / name, rad_extra=rad_extra,
                    trl_gradient_checkpointing=trl_checkpointing, memory=True)
    rad, trl = pair["rad"], pair["trl"]
    for r in (rad, trl):
        r["phase_shares"] = phase_shares(r)
    cell = {"size": size, "response_length": length, "options": option, "trl_threads": trl_threads,
            "rad_overrides": rad_extra, "trl_gradient_checkpointing": trl_checkpointing,
            "rad_over_trl_samples_per_s": statistics.median(rad["pair_speed_ratios"]),
            "rad": rad, "trl": trl, "rows": pair["rows"]}
    print(f"{name}: RAD {rad['samples_per_s']:.2f} samples/s, TRL {trl['samples_per_s']:.2f}, "
          f"RAD / TRL {cell['rad_over_trl_samples_per_s']:.2f}", flush=True)
    return cell


def probe_trl_threads(models: dict[str, str], args: argparse.Namespace, tmp: Path, size: str) -> dict[str, Any]:
    """TRL alone at ``--probe-length``, options off, its steps cycling through ``--trl-threads``: one warm-up round,
    then ``--probe-steps`` measured rounds; the setting with the most samples/s over its measured steps is kept."""
    from rad.algos.assets import load_records
    from rad.algos.rad import RADConfig
    from rad.config import load_config

    tries = list(dict.fromkeys(args.trl_threads))
    order = tries * (args.probe_steps + 1)
    probe_args = argparse.Namespace(**{**vars(args), "max_new_tokens": args.probe_length, "trl_threads": tries[0]})
    cfg = load_config(RADConfig, None, rad_rloo_overrides(models, probe_args) + [f"output_dir={tmp / 'unused'}"])
    prompts = [r["prompt"] for r in load_records(cfg.data.prompts, "prompt", cfg.world, cfg.seed)]
    prompts_by_step = [[prompts[(i * args.prompts + j) % len(prompts)] for j in range(args.prompts)]
                       for i in range(len(order))]
    print(f"\n=== {size}: TRL thread probe, steps on {order} threads", flush=True)
    _, rows = run_trl(models, prompts_by_step, probe_args, tmp / f"{size}-thread-probe", after_step=lambda: None,
                      threads_by_step=order)
    measured = rows[len(tries):]
    by = {t: summarize_steps([r for r in measured if r["torch_threads"] == t]) for t in tries}
    best = max(tries, key=lambda t: by[t]["samples_per_s"])
    print(f"{size}: TRL samples/s by threads " + ", ".join(f"{t}: {by[t]['samples_per_s']:.2f}" for t in tries)
          + f"; keeping {best}", flush=True)
    return {"response_length": args.probe_length, "kept": best,
            "by_threads": [{"trl_threads": t, "samples_per_s": by[t]["samples_per_s"],
                            "step_seconds_all": by[t]["step_seconds_all"]} for t in tries], "rows": rows}


def run_size(size: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Every cell of one model size, after the TRL thread probe picks TRL's thread count."""
    models = resolve_models(argparse.Namespace(run_dir=None, policy=None, reward_model=None, cost_model=None,
                                               size=size), tmp / size)
    probe = probe_trl_threads(models, args, tmp, size)
    cells = [run_cell(models, args, tmp, size, length, option, probe["kept"])
             for length in args.lengths for option in args.options]
    return {"size": size, "parameters": parameter_count(models["policy"]), "models": models,
            "trl_threads": probe["kept"], "thread_probe": probe, "cells": cells}


def measured_by(report: dict[str, Any]) -> dict[str, Any]:
    """When, how and under what load a size's cells were measured (kept with each size, as sizes may be merged)."""
    return {"date": report["date"], "command": report["command"], "load_average_before": report["load_average_before"],
            "steps": report["settings"]["steps"]}


def earlier_sizes(path: Path, measuring: list[str]) -> list[dict[str, Any]]:
    """The sizes of an earlier growth report at ``path`` that ``measuring`` leaves out, each with its ``measured``."""
    import json

    try:
        earlier = json.loads(path.read_text())
        sizes = earlier["results"]["sizes"]
        by = measured_by(earlier)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"--with {path}: expected a growth JSON written by bench.growth ({exc.__class__.__name__}: "
                         f"{exc})") from None
    return [{"measured": by, **s} for s in sizes if s["size"] not in measuring]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", choices=TINY_SIZES, default=list(TINY_SIZES),
                   help="model presets (rad.settings.TINY_SIZES, shapes in rad/models/tiny.py; default: every one)")
    p.add_argument("--lengths", type=int, nargs="+", default=[48, 128, 256], help="response lengths in tokens")
    p.add_argument("--options", nargs="+", choices=("off", "on"), default=["off", "on"], help="memory options")
    p.add_argument("--trl-threads", type=int, nargs="+", default=[1, 2],
                   help="TRL intra-op thread counts to try at each size (the faster is kept)")
    p.add_argument("--probe-length", type=int, help="response length of the thread probe (default: the middle "
                                                    "of --lengths)")
    p.add_argument("--probe-steps", type=int, default=1, help="measured TRL steps per thread count in the probe "
                                                              "(after one warm-up round)")
    p.add_argument("--chunk-size", type=int, default=64, help="learner.logprob_chunk_size with options on")
    p.add_argument("--steps", type=int, default=3, help="measured step pairs per cell (after one warm-up each)")
    p.add_argument("--prompts", type=int, default=8, help="prompts per step")
    p.add_argument("--k", type=int, default=4, help="samples per prompt")
    p.add_argument("--micro-batch", type=int, default=16, help="learner micro batch")
    p.add_argument("--cost-weight", type=float, default=1.0, help="TRL reward = reward - cost_weight * cost")
    p.add_argument("--num-cpus", type=int, default=8, help="logical CPUs of the local Ray cluster")
    p.add_argument("--with", dest="with_report", type=Path,
                   help="an earlier growth JSON: its sizes that this run does not measure join the JSON, table and "
                        "plot, each with the date, command and load it was measured under")
    p.add_argument("--out", type=Path, default=default_out(NAME))
    args = p.parse_args(argv)
    earlier = earlier_sizes(args.with_report, args.sizes) if args.with_report else []
    if (args.prompts * args.k) % args.micro_batch:
        p.error(f"--micro-batch {args.micro_batch} must divide prompts * k = {args.prompts * args.k}")
    lengths = sorted(args.lengths)
    args.probe_length = args.probe_length or lengths[len(lengths) // 2]
    sizes = sorted(args.sizes, key=TINY_SIZES.index)

    import ray

    tmp = Path(tempfile.mkdtemp(prefix="bench-growth-"))
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"}
    report = new_report(NAME, argv, settings | {
        "generation_engine": "HF generate on both (RAD rollout.engine=hf; TRL use_vllm=False)",
        "precision": "float32 on both (RAD learner.bf16=auto is off on CPU; TRL bf16=False)",
        "rad_threads": "one intra-op thread per Ray actor (OMP_NUM_THREADS=1), one Ray CPU each",
        "trl_threads": "per size, the faster of --trl-threads: TRL alone at --probe-length, options off, its steps "
                       "cycling through the thread counts (one warm-up round, then --probe-steps rounds)",
        "memory_options_on": {"rad": memory_options("on", args.chunk_size)[0],
                              "trl": ["gradient_checkpointing=True"]},
        "trl_memory": "peak PSS of this process: TRL's models, optimizer and activations, plus RAD's driver "
                      "(no models), sampled every 0.2 s during the interleaved steps"})
    ray_init(args.num_cpus)
    try:
        by_size = [run_size(size, args, tmp) for size in sizes]
    finally:
        ray.shutdown()
    for s in by_size:
        s["measured"] = measured_by(report)
    by_size = sorted(by_size + earlier, key=lambda s: TINY_SIZES.index(s["size"]))
    report["results"] = {"sizes": by_size, "plot": args.out.with_suffix(".png").name}
    for s in by_size:
        for c in s["cells"]:
            suffix = "" if c["options"] == "off" else "_options_on"
            report["ratios"][f"rad_over_trl_samples_per_s_{s['size']}_r{c['response_length']}{suffix}"] = ratio(
                c["rad_over_trl_samples_per_s"],
                f"RAD / TRL RLOOTrainer samples/s at {s['size']} ({s['parameters'] / 1e6:.2f}M parameters), "
                f"{c['response_length']}-token responses, memory options {c['options']}, TRL on "
                f"{c['trl_threads']} thread(s); median over interleaved step pairs (> 1: RAD faster)")
    plot(report, args.out.with_suffix(".png"))
    return publish(report, args.out, markdown)


def plot(report: dict, path: Path) -> Path:
    """Seconds per sample against parameters (one line per trainer and length) and against response length
    (one line per trainer and size), memory options off."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = report["results"]["sizes"]
    cells = [(s, c) for s in sizes for c in s["cells"] if c["options"] == "off"]
    lengths = sorted({c["response_length"] for _, c in cells})
    fig, (by_params, by_length) = plt.subplots(1, 2, figsize=(11, 4.2))
    for trainer, colour in (("rad", "tab:blue"), ("trl", "tab:orange")):
        label = "RAD" if trainer == "rad" else "TRL RLOOTrainer"
        for i, length in enumerate(lengths):
            pts = sorted((s["parameters"], 1 / c[trainer]["samples_per_s"]) for s, c in cells
                         if c["response_length"] == length)
            by_params.plot(*zip(*pts), marker="os^dv"[i % 5], color=colour, alpha=0.4 + 0.6 * (i + 1) / len(lengths),
                           label=f"{label}, {length} tokens")
        for i, s in enumerate(sizes):
            pts = sorted((c["response_length"], 1 / c[trainer]["samples_per_s"]) for s2, c in cells if s2 is s)
            by_length.plot(*zip(*pts), marker="os^dv"[i % 5], color=colour, alpha=0.4 + 0.6 * (i + 1) / len(sizes),
                           label=f"{label}, {s['size']} ({s['parameters'] / 1e6:.1f}M)")
    by_params.set(xscale="log", xlabel="policy parameters", ylabel="seconds per sample (RL step / samples)",
                  title="by model size")
    by_length.set(xlabel="response tokens", ylabel="seconds per sample", title="by response length")
    for ax in (by_params, by_length):
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    loads = ", ".join(f"{s['size']} load {s['measured']['load_average_before'][0]:.1f} on {s['measured']['date'][:10]}"
                      for s in sizes if "measured" in s)
    loads = loads or f"load {report['load_average_before'][0]:.1f} at start, {report['date'][:10]}"
    fig.suptitle(f"RAD vs TRL RLOOTrainer, memory options off; {report['cpu_cores']} cores; {loads}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pss(memory: dict[str, Any]) -> str:
    return " / ".join(f"{name} {b / _MIB:.0f}" for name, b in memory["peak_pss_bytes"].items())


def markdown(report: dict) -> str:
    shares = "/".join(_SHORT[p] for p in PHASES)
    lines = [f"![seconds per sample against parameters and response length]({report['results']['plot']})", "",
             f"| model | parameters | response tokens | memory options | TRL threads | RAD samples/s | TRL samples/s "
             f"| RAD / TRL | RAD tokens/s | TRL tokens/s | RAD % of step ({shares}) | TRL % of step ({shares}) "
             f"| RAD peak PSS MiB per role | TRL process peak PSS MiB |",
             "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | ---: |"]
    for s in report["results"]["sizes"]:
        for c in s["cells"]:
            rad, trl = c["rad"], c["trl"]
            cols = [s["size"], f"{s['parameters'] / 1e6:.2f}M", c["response_length"], c["options"], c["trl_threads"],
                    f"{rad['samples_per_s']:.2f}", f"{trl['samples_per_s']:.2f}",
                    f"{c['rad_over_trl_samples_per_s']:.2f}", f"{rad['tokens_per_s']:.0f}",
                    f"{trl['tokens_per_s']:.0f}",
                    *("/".join(f"{100 * r['phase_shares'][p]:.0f}" if p in r["phase_shares"] else "-"
                               for p in PHASES) for r in (rad, trl)),
                    _pss(rad["memory"]), f"{trl['memory']['peak_pss_total_bytes'] / _MIB:.0f}"]
            lines.append("| " + " | ".join(str(x) for x in cols) + " |")
    probes = "; ".join(f"{s['size']}: " + ", ".join(
        f"{p['trl_threads']} thread(s) {p['samples_per_s']:.2f}" + (" (kept)" if p["trl_threads"] == s["trl_threads"]
                                                                     else "") for p in s["thread_probe"]["by_threads"])
        for s in report["results"]["sizes"])
    st = report["settings"]
    dates = {s["size"]: s.get("measured", {}) for s in report["results"]["sizes"]}
    if len({m.get("date") for m in dates.values()}) > 1:
        lines += ["", "Sizes measured in different runs: " + "; ".join(
            f"{size} on {m['date'][:16]} (load {m['load_average_before'][0]:.1f}, {m['steps']} pairs per cell, "
            f"`{m['command']}`)" for size, m in dates.items()) + "."]
    lines += ["", f"TRL alone, samples/s by intra-op threads at {st['probe_length']}-token responses, options off "
              f"(steps alternating the settings): {probes}. "
              f"{st['generation_engine']}; {st['precision']}; RAD: {st['rad_threads']}. Memory options on: RAD "
              f"{', '.join(f'`{o}`' for o in st['memory_options_on']['rad'])}; TRL "
              f"`{st['memory_options_on']['trl'][0]}` (no chunked log-probs or packing in RLOOTrainer, which "
              f"always generates with its own policy). RAD / TRL: median over {st['steps']} interleaved step pairs "
              f"of {st['prompts']} prompts x {st['k']} samples. Shares: phase mean / step mean (RAD's scoring and "
              f"logp are waits while its roles work in parallel). RAD PSS per role process; TRL's column: "
              f"{st['trl_memory']}."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
