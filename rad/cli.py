"""The ``rad`` command.

    rad train [--config FILE] [key.sub=value ...]    the main job (SFT -> ... on the embedded world by default)
    rad sft   [--config FILE] [key.sub=value ...]    supervised fine-tuning
    rad rm train / rad cm train [...]                reward / cost model (Bradley-Terry)
    rad rm export --model DIR --out DIR              a score model as transformers AutoModelForSequenceClassification
    rad rl    [--config FILE] [key.sub=value ...]    RAD online RL from trained SFT / reward / cost models
    rad baseline ppo-lag [--config FILE] [...]       Safe RLHF PPO-Lagrangian baseline
    rad dpo / rad rsa [...]                          offline risk-aware preference optimisation
    rad eval --models a=PATH b=PATH --red a [...]   evaluation arena and report
    rad sweep --config FILE --seeds 0-4 --grid KEY=V1,V2 [...]   seeds x settings of rad train, aggregated
    rad world [--out DIR] [--seed N] [--harm-profile P]   write the embedded world's files
    rad <cmd> --help-config                          every config key with type, default and help
    rad <cmd> --print-config [--config FILE] [...]   the resolved config (YAML), without running

Configuration errors are reported in one line before any work starts. Rerunning a
command continues the run in its output directory (a finished run returns its summary,
an interrupted one continues from its newest checkpoint); a changed key that alters
results is refused, and a directory another command is running in is refused too
(``rad/runtime/run_dir.py``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from rad.commands import add_config_args, config_command
from rad.errors import RadError


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # Third-party chatter that buries our progress lines.
    for name in ("DeepSpeed", "deepspeed", "torch.distributed", "datasets", "filelock", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _cmd_world(args: argparse.Namespace) -> int:
    from rad.data.world import build_world

    world = build_world(seed=args.seed, harm_profile=args.harm_profile)
    path = world.write(args.out)
    print(json.dumps({"world_dir": str(path), **world.stats()}, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from rad.algos.rad import RADConfig, run_rad
    from rad.data.world_oracle import DEFAULT_HARM_PROFILE, HARM_PROFILES
    from rad.algos.sft import SFTConfig, run_sft
    from rad.pipeline import PipelineConfig, run_pipeline
    from rad.pipeline_summary import format_summary

    parser = argparse.ArgumentParser(prog="rad", description="Risk-sensitive alignment via stochastic dominance")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="the main job: every missing stage of the pipeline; ends with a summary of "
                                     "each stage (--json: the JSON of summary.json)")
    add_config_args(p, json_flag=True)
    p.set_defaults(func=config_command(PipelineConfig, run_pipeline, report=format_summary))

    p = sub.add_parser("sft", help="supervised fine-tuning (prompt tokens masked)")
    add_config_args(p)
    p.set_defaults(func=config_command(SFTConfig, run_sft))

    p = sub.add_parser("rl", help="RAD online RL (REINFORCE-RLOO + stochastic-dominance constraint) on Ray")
    add_config_args(p)
    p.set_defaults(func=config_command(RADConfig, run_rad))

    # Sibling packages register their own commands; imported here, at the top layer, only.
    from rad.eval.cli import add_cli as add_eval_cli
    from rad.sweep import add_cli as add_sweep_cli
    from reward_cost_models.cli import add_cli as add_score_model_cli
    from risk_dpo.cli import add_cli as add_dpo_cli
    from safe_rlhf_baseline.cli import add_cli as add_baseline_cli

    add_score_model_cli(sub)
    add_baseline_cli(sub)
    add_dpo_cli(sub)
    add_eval_cli(sub)
    add_sweep_cli(sub)

    p = sub.add_parser("world", help="write the embedded world (PKU-SafeRLHF schema) to a directory")
    p.add_argument("--out", default="world", help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--harm-profile", default=DEFAULT_HARM_PROFILE, choices=HARM_PROFILES,
                   help="world.harm_profile: binary (default) or heavy_tail (mean and tail of harm disagree)")
    p.set_defaults(func=_cmd_world)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except RadError as exc:
        # An error raised inside a Ray actor arrives as a RayTaskError that is also the original class; its
        # message is the original's (the remote traceback is in the actor's log).
        cause = getattr(exc, "cause", None)
        print(f"rad {args.command}: error: {cause if isinstance(cause, RadError) else exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rad {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
