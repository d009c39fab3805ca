"""One entry point for every benchmark, and the Markdown table of their results.

    python -m bench all    [--run-dir runs/tiny] [--vllm-python PATH] [--quick] [--out-dir DIR]
    python -m bench NAME   [same options] [-- extra arguments for that benchmark]
    python -m bench report [--out-dir DIR]

NAME is one of rloo_vs_trl, dominance, ppo_lag_vs_rad, scaling, generation, memory, length_grouping,
colocation, overlap, growth. Each benchmark runs in its own process (its own Ray cluster and memory) with the sizes
below, sized so that ``all`` without ``growth`` takes under about 20 minutes on a 2-core machine (``growth``
adds about 25 minutes: it runs the tiny and small presets; the medium one is opt-in, hours on 2 cores); it
writes ``<out-dir>/<name>.json`` and then ``<out-dir>/README.md`` is regenerated from
every JSON there. ``--quick`` runs tiny sizes as a smoke test (seconds for the micro
benchmarks, a minute or two for the Ray ones: actor start-up dominates) and writes to
a temporary directory unless ``--out-dir`` is given, so it never replaces real results.

``--run-dir`` points the RL benchmarks at a ``rad train`` output (its SFT policy and
trained reward / cost models); without it they use the tiny model with seeded score
heads. ``--vllm-python`` runs the generation benchmark with another interpreter (one
with vLLM installed); without vLLM it measures the HF engine only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS_DIR, ROOT, pythonpath_with_root
from bench.report import BENCHMARKS, RUN_RECORD, write

#: Arguments of each benchmark in a full run (``all`` under ~20 min on 2 cores).
FULL = {
    "rloo_vs_trl": ["--prompts", "16", "--k", "4", "--max-new-tokens", "48", "--micro-batch", "16", "--steps", "6"],
    "dominance": ["--sizes", "64", "256", "1024", "--repeats", "5", "--rl-batch", "64"],
    "ppo_lag_vs_rad": ["--prompts", "16", "--k", "2", "--max-new-tokens", "48", "--micro-batch", "16",
                       "--steps", "3"],
    "scaling": ["--engines", "1", "2", "--learners", "1", "2", "--prompts", "16", "--k", "4",
                "--max-new-tokens", "32", "--micro-batch", "16", "--steps", "2"],
    "generation": ["--sizes", "tiny", "small", "--prompts", "32", "--n", "4", "--max-new-tokens", "64",
                   "--repeats", "3"],
    "memory": ["--sizes", "tiny", "small", "--response-lengths", "64", "256", "--batch", "8", "--chunk-size", "64"],
    "length_grouping": ["--sizes", "tiny", "small", "--response-length", "256", "--samples", "32", "--micro-batch",
                        "4", "--steps", "5"],
    "colocation": ["--prompts", "16", "--k", "2", "--max-new-tokens", "48", "--micro-batch", "16", "--steps", "3"],
    "overlap": ["--prompts", "16", "--k", "2", "--max-new-tokens", "48", "--micro-batch", "16", "--steps", "4"],
    # tiny and small; medium (~35M parameters) adds ~50 min on 2 quiet cores at --steps 2 (2026-12-02; hours under
    # load): `python -m bench growth -- --sizes medium`
    "growth": ["--sizes", "tiny", "small", "--lengths", "48", "128", "256", "--options", "off", "on",
               "--trl-threads", "1", "2", "--prompts", "8",
               "--k", "4", "--micro-batch", "16", "--steps", "3"],
}
#: Smoke sizes (``--quick``).
QUICK = {
    "rloo_vs_trl": ["--prompts", "2", "--k", "2", "--max-new-tokens", "8", "--micro-batch", "4", "--steps", "1"],
    "dominance": ["--sizes", "16", "64", "--repeats", "1", "--max-iter", "200", "--rl-batch", "4", "--replicates", "2"],
    "ppo_lag_vs_rad": ["--size", "tiny", "--prompts", "2", "--k", "2", "--max-new-tokens", "8", "--micro-batch", "4",
                       "--steps", "1"],
    "scaling": ["--engines", "1", "2", "--learners", "1", "--prompts", "2", "--k", "2", "--max-new-tokens", "8",
                "--micro-batch", "4", "--steps", "1"],
    "generation": ["--sizes", "tiny", "--engines", "hf", "--prompts", "4", "--n", "2", "--max-new-tokens", "8",
                   "--repeats", "1"],
    "memory": ["--sizes", "tiny", "--response-lengths", "32", "--prompt-length", "8", "--batch", "4", "--chunk-size",
               "8"],
    "length_grouping": ["--sizes", "tiny", "--response-length", "32", "--samples", "8", "--micro-batch", "2",
                        "--steps", "1"],
    "colocation": ["--size", "tiny", "--prompts", "2", "--k", "2", "--max-new-tokens", "8", "--micro-batch", "4",
                   "--steps", "1"],
    "overlap": ["--size", "tiny", "--prompts", "2", "--k", "2", "--max-new-tokens", "8", "--micro-batch", "4",
                "--steps", "2"],
    "growth": ["--sizes", "tiny", "--lengths", "8", "16", "--prompts", "2", "--k", "2", "--micro-batch", "4",
               "--steps", "1"],
}
#: Benchmarks that run RL steps on a policy and score models (they take ``--run-dir``).
RL_BENCHMARKS = ("rloo_vs_trl", "ppo_lag_vs_rad", "scaling", "colocation", "overlap")


def _path(path: Path) -> str:
    """``path`` relative to the repository root (where the benchmarks run) when it lies inside it."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def benchmark_args(name: str, quick: bool, out_dir: Path, run_dir: str | None, extra: list[str]) -> list[str]:
    args = [*(QUICK if quick else FULL)[name], "--out", _path(out_dir / f"{name}.json")]
    if (name in RL_BENCHMARKS or name == "dominance") and run_dir:  # dominance: the run's cached reference costs
        args += ["--run-dir", run_dir]
    if name == "dominance":  # its step share is measured against the RAD step of this run's rloo_vs_trl
        args += ["--rl-step-from", _path(out_dir / "rloo_vs_trl.json")]
    return args + extra


def run_benchmark(python: str, name: str, args: list[str]) -> float:
    """Run ``python -m bench.<name> args`` from the repository root; its wall time in seconds."""
    env = dict(os.environ)
    env["PYTHONPATH"] = pythonpath_with_root(env)
    cmd = [python, "-m", f"bench.{name}", *args]
    print(f"\n=== {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        argv, extra = argv[: argv.index("--")], argv[argv.index("--") + 1:]
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("all", "report", *BENCHMARKS))
    p.add_argument("--quick", action="store_true", help="smoke sizes, written to a temporary directory")
    p.add_argument("--out-dir", type=Path, help="where the JSONs and README.md go (default: bench/results, "
                                                "or a temporary directory with --quick)")
    p.add_argument("--run-dir", help="a `rad train` output directory for the RL benchmarks (e.g. runs/tiny)")
    p.add_argument("--vllm-python", default=sys.executable, help="interpreter for the generation benchmark")
    args = p.parse_args(argv)
    if extra and args.what in ("all", "report"):
        p.error("extra benchmark arguments after -- need a single benchmark name")
    out_dir = args.out_dir or (Path(tempfile.gettempdir()) / "rad-bench-quick" if args.quick else RESULTS_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.what == "report":
        print(f"written {write(out_dir)}")
        return 0

    names = list(BENCHMARKS) if args.what == "all" else [args.what]
    load_before, start = list(os.getloadavg()), time.perf_counter()
    seconds: dict[str, float] = {}
    failed: list[str] = []
    for name in names:
        python = args.vllm_python if name == "generation" else sys.executable
        try:
            seconds[name] = run_benchmark(python, name, benchmark_args(name, args.quick, out_dir, args.run_dir,
                                                                       extra))
        except subprocess.CalledProcessError as exc:
            print(f"bench {name} failed (exit {exc.returncode}); continuing", file=sys.stderr)
            failed.append(name)
        write(out_dir)
    if args.what == "all":
        record = {"command": " ".join(["python", "-m", "bench", *argv]),
                  "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "wall_seconds": time.perf_counter() - start, "benchmark_seconds": seconds, "failed": failed,
                  "cpu_cores": os.cpu_count(), "load_average_before": load_before,
                  "load_average_after": list(os.getloadavg())}
        (out_dir / RUN_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        print(f"\nall benchmarks: {record['wall_seconds'] / 60:.1f} min; " + ", ".join(
            f"{n} {s:.0f}s" for n, s in seconds.items()) + (f"; FAILED: {failed}" if failed else ""))
    print(f"written {write(out_dir)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
