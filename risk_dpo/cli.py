"""Subcommands ``rad dpo`` and ``rad rsa`` (registered by :func:`add_cli`).

    rad dpo [--config FILE] [key.sub=value ...]   e.g. loss.name=ra_dpo2 loss.mu=0.95 data.pairs=safety
    rad rsa [--config FILE] [key.sub=value ...]   helpfulness stage, safety stage, RSA(P) weight average
"""

from __future__ import annotations

import argparse


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``dpo`` and ``rsa`` on ``rad``'s subparsers (config commands, like ``rad sft``)."""
    from rad.commands import add_config_args, config_command
    from risk_dpo.rsa import RSAConfig, run_rsa
    from risk_dpo.trainer import DPOConfig, run_dpo

    p = subparsers.add_parser("dpo", help="offline preference optimisation: dpo, tdpo1/2, ra_dpo1/2, kldpo, wdpo")
    add_config_args(p)
    p.set_defaults(func=config_command(DPOConfig, run_dpo))

    p = subparsers.add_parser("rsa", help="risk-aware stepwise alignment: helpfulness, then safety, then RSA(P)")
    add_config_args(p)
    p.set_defaults(func=config_command(RSAConfig, run_rsa))
