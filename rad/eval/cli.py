"""``rad eval``: the evaluation arena from the command line.

    rad eval --models sft=runs/tiny/sft rad=runs/tiny/rad ppo-lag=runs/tiny/ppo-lag --red sft,ppo-lag \\
        reward_model=runs/tiny/reward/model cost_model=runs/tiny/cost/model [--config FILE] [key=value ...]

``--models`` and ``--red`` set the config keys ``models`` and ``red`` (they win
over the same keys in ``--config`` or overrides). Because ``--models`` takes
several values, an override written after it (``--models a=X b=Y
reward_model=Z``) would look like a model entry; entries whose name is a config
key or contains a dot are therefore taken as overrides. Wire into the ``rad``
parser with ``add_cli(subparsers)``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json


def _split_models(entries: list[str]) -> tuple[list[str], list[str]]:
    """(model entries, overrides that were swallowed by ``--models``)."""
    from rad.eval.config import EvalConfig

    keys = {f.name for f in dataclasses.fields(EvalConfig)}
    models, overrides = [], []
    for entry in entries:
        name = entry.partition("=")[0].strip()
        (overrides if name in keys or "." in name else models).append(entry)
    return models, overrides


def load_eval_config(args: argparse.Namespace):
    """The validated :class:`EvalConfig` from ``--config``, overrides, ``--models`` and ``--red``."""
    from rad.config import apply_overrides, from_dict, read_yaml
    from rad.eval.config import EvalConfig

    models, extra = _split_models(args.models or [])
    data = read_yaml(args.config) if args.config else {}
    data = apply_overrides(data, [*args.overrides, *extra])
    if models:
        data["models"] = models
    if args.red:
        data["red"] = [r.strip() for r in args.red.split(",") if r.strip()]
    return from_dict(EvalConfig, data)


def _run(args: argparse.Namespace) -> int:
    from rad.config import describe
    from rad.eval.config import EvalConfig
    from rad.eval.run import run_eval

    if args.help_config:
        print("\n".join(describe(EvalConfig)))
        return 0
    cfg = load_eval_config(args)
    if args.print_config:
        from rad.commands import resolved_yaml

        print(resolved_yaml(cfg), end="")
        return 0
    print(json.dumps(run_eval(cfg), indent=2, default=str))
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``rad eval``."""
    from rad.commands import add_config_args
    from rad.eval.config import EvalConfig

    p = subparsers.add_parser("eval", help="blue-vs-red arena: safety, dominance, win rates, OOD judge, report")
    add_config_args(p)
    p.add_argument("--models", nargs="+", metavar="NAME=PATH",
                   help="models to compare: a saved policy directory or a run directory holding model/")
    p.add_argument("--red", metavar="A,B", help="comma-separated red (baseline) model names (default: the first)")
    p.set_defaults(func=_run, config_class=EvalConfig)
