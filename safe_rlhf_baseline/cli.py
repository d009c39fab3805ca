"""``rad baseline ppo-lag [--config FILE] [key.sub=value ...]``: the Safe RLHF PPO-Lagrangian baseline.

Wire into the ``rad`` parser with ``add_cli(subparsers)``.
"""

from __future__ import annotations

import argparse


def _run(cfg) -> dict:
    from safe_rlhf_baseline.trainer import run_ppo_lag

    return run_ppo_lag(cfg)


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    from rad.commands import add_config_args, config_command
    from safe_rlhf_baseline.config import PPOLagConfig

    p = subparsers.add_parser("baseline", help="baselines on the same runtime (Safe RLHF PPO-Lagrangian)")
    group = p.add_subparsers(dest="baseline", required=True)
    q = group.add_parser("ppo-lag", help="Safe RLHF PPO-Lagrangian: reward & cost critics, GAE, clipped PPO, "
                                         "Lagrange multiplier on the mean cost")
    add_config_args(q)
    q.set_defaults(func=config_command(PPOLagConfig, _run))
