"""What every config-driven sub-command shares: its arguments and how it runs.

``rad/cli.py`` assembles the ``rad`` command from these; the sibling packages
(``reward_cost_models``, ``risk_dpo``, ``safe_rlhf_baseline``, ``rad.eval``) register
their sub-commands with them too, so no sub-command CLI imports ``rad.cli``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable


def config_command(cfg_cls: type, runner: Callable[[Any], dict]):
    def run(args: argparse.Namespace) -> int:
        from rad.config import describe, load_config

        if args.help_config:
            print("\n".join(describe(cfg_cls)))
            return 0
        cfg = load_config(cfg_cls, args.config, args.overrides)
        result = runner(cfg)  # every runner first takes its output_dir (rad.runtime.run_dir.run_lock)
        print(json.dumps(result, indent=2, default=str))
        return 0

    return run


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file (e.g. launch/configs/tiny.yaml)")
    p.add_argument("--help-config", action="store_true", help="list every config key and exit")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. learner.lr=1e-4")
