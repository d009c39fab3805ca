"""``rad rm train`` / ``rad cm train`` / ``rad score-model train --kind``: train reward and cost models.

    rad rm train [--config FILE] [key.sub=value ...]          reward model (kind fixed to reward)
    rad cm train [--config FILE] [key.sub=value ...]          cost model (kind fixed to cost)
    rad score-model train --kind reward|cost [--config FILE] [key.sub=value ...]
    rad rm export --model DIR --out DIR [--overwrite]        as transformers AutoModelForSequenceClassification
    rad cm export --model DIR --out DIR [--overwrite]

Wire into the ``rad`` parser with ``add_cli(subparsers)``.
"""

from __future__ import annotations

import argparse
from typing import Any


def _train(cfg: Any) -> dict:
    from reward_cost_models.train import run_score_model

    return run_score_model(cfg)


def _add_train(group: argparse._SubParsersAction, cfg_cls: type, help_text: str,
               kind_flag: bool = False) -> argparse.ArgumentParser:
    from rad.commands import add_config_args, config_command

    p = group.add_parser("train", help=help_text)
    add_config_args(p)
    if not kind_flag:
        p.set_defaults(func=config_command(cfg_cls, _train))
        return p
    p.add_argument("--kind", choices=("reward", "cost"), required=True, help="which score model to train")
    run = config_command(cfg_cls, _train)

    def with_kind(args: argparse.Namespace) -> int:
        args.overrides = [*args.overrides, f"kind={args.kind}"]
        return run(args)

    p.set_defaults(func=with_kind, config_class=cfg_cls)
    return p


def _export(args: argparse.Namespace) -> int:
    import json

    from rad.models.score_export import export_seq_cls

    info = export_seq_cls(args.model, args.out, overwrite=args.overwrite)
    if info["kind"] != args.kind:
        print(f"note: {args.model} holds a {info['kind']} model (exported as it is)")
    print(json.dumps(info, indent=2))
    return 0


def _add_export(group: argparse._SubParsersAction, kind: str) -> None:
    p = group.add_parser("export", help=f"write a rad {kind} model as a transformers "
                                        "AutoModelForSequenceClassification checkpoint (one label)")
    p.add_argument("--model", required=True, help="rad score-model directory (rad rm/cm train output)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=_export, kind=kind)


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``rm``, ``cm`` (``train``, ``export``) and ``score-model`` (``train``)."""
    from reward_cost_models.config import CostModelConfig, RewardModelConfig, ScoreModelConfig

    for name, cfg_cls, what in (("rm", RewardModelConfig, "reward model (helpfulness)"),
                                ("cm", CostModelConfig, "cost model (harmfulness; cost > 0 = unsafe)")):
        p = subparsers.add_parser(name, help=f"{what}: train on preference pairs")
        group = p.add_subparsers(dest=f"{name}_command", required=True)
        _add_train(group, cfg_cls, f"train a {what} with the DeepSpeed learner")
        _add_export(group, "reward" if name == "rm" else "cost")
    p = subparsers.add_parser("score-model", help="reward or cost model, chosen with --kind")
    group = p.add_subparsers(dest="score_model_command", required=True)
    _add_train(group, ScoreModelConfig, "train a reward or cost model", kind_flag=True)
