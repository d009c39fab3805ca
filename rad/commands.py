"""What every config-driven sub-command shares: its arguments and how it runs.

``rad/cli.py`` assembles the ``rad`` command from these; the sibling packages
(``reward_cost_models``, ``risk_dpo``, ``safe_rlhf_baseline``, ``rad.eval``) register
their sub-commands with them too, so no sub-command CLI imports ``rad.cli``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable


def resolved_yaml(cfg: Any) -> str:
    """The resolved config as the YAML a run records in ``config.yaml`` (``--print-config``)."""
    import yaml

    from rad.config import to_dict

    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def config_command(cfg_cls: type, runner: Callable[[Any], dict], report: Callable[[dict], str] | None = None):
    """The ``func`` of a sub-command that loads ``cfg_cls`` and runs ``runner`` on it.

    The result is printed as JSON, or, when ``report`` is given, as ``report(result)`` unless ``--json``
    asks for the JSON (see :func:`add_config_args`).
    """
    def run(args: argparse.Namespace) -> int:
        from rad.config import describe, load_config

        if args.help_config:
            print("\n".join(describe(cfg_cls)))
            return 0
        cfg = load_config(cfg_cls, args.config, args.overrides)
        if args.print_config:
            print(resolved_yaml(cfg), end="")
            return 0
        result = runner(cfg)  # every runner first takes its output_dir (rad.runtime.run_dir.run_lock)
        if report is not None and not getattr(args, "json", False):
            print(report(result))
        else:
            print(json.dumps(result, indent=2, default=str))
        return 0

    run.config_class = cfg_cls  # what the command reads (rad.config_reference documents it)
    return run


def add_config_args(p: argparse.ArgumentParser, json_flag: bool = False) -> None:
    """``--config``, ``--help-config``, ``--print-config`` and the overrides; ``json_flag`` adds ``--json`` (for a
    command whose result is printed as a readable summary by default)."""
    p.add_argument("--config", help="YAML config file (e.g. launch/configs/tiny.yaml)")
    p.add_argument("--help-config", action="store_true", help="list every config key and exit")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (YAML: file, bases and overrides merged, defaults filled) and exit")
    if json_flag:
        p.add_argument("--json", action="store_true", help="print the result as JSON instead of the summary")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. learner.lr=1e-4")
