"""The generated config reference (docs/reference/config.md) and ``--print-config`` of every config command."""

import argparse
from pathlib import Path

import pytest
import yaml

from rad.cli import build_parser, main
from rad.config import from_dict, load_config, to_dict
from rad.config_reference import REFERENCE, config_commands, keys_without_help, render
from rad.pipeline import PipelineConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "launch" / "configs" / "tiny.yaml"
#: What a command needs besides --print-config to resolve its config.
NEEDS = {"rad rl": ["reward_model=r", "cost_model=c"], "rad baseline ppo-lag": ["reward_model=r", "cost_model=c"],
         "rad score-model train": ["--kind", "cost"],
         "rad eval": ["--models", "a=x", "b=y", "reward_model=r", "cost_model=c"],
         "rad sweep": ["--config", str(TINY), "--seeds", "0"]}


def _commands_taking_config(parser: argparse.ArgumentParser, prefix: str = "rad") -> list[str]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if "--config" in sub._option_string_actions:
                    out.append(f"{prefix} {name}")
                out.extend(_commands_taking_config(sub, f"{prefix} {name}"))
    return out


def test_every_config_key_has_help_text():
    assert keys_without_help() == []


def test_the_committed_reference_is_up_to_date():
    assert (ROOT / REFERENCE).read_text() == render(), \
        "docs/reference/config.md is out of date: python -m rad.config_reference > docs/reference/config.md"


def test_every_command_that_takes_a_config_is_in_the_reference():
    documented = [command for command, _ in config_commands()]
    assert documented == _commands_taking_config(build_parser())
    assert {"rad train", "rad rl", "rad eval", "rad baseline ppo-lag"} <= set(documented)


@pytest.mark.parametrize("command", [command for command, _ in config_commands()])
def test_print_config_prints_the_resolved_config_without_running(command, tmp_path, capsys):
    cls = dict(config_commands())[command]
    args = [*command.split()[1:], "--print-config", *NEEDS.get(command, []), f"output_dir={tmp_path / 'run'}"]
    assert main(args) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert to_dict(from_dict(cls, printed)) == printed  # a complete config of the command, every default filled
    assert printed["output_dir"] == str(tmp_path / "run") and not (tmp_path / "run").exists()


def test_print_config_merges_bases_and_overrides_and_refuses_a_bad_key(tmp_path, capsys):
    compare = ROOT / "launch" / "configs" / "tiny_compare.yaml"
    assert main(["train", "--print-config", "--config", str(compare), "sft.learner.lr=0.5"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = to_dict(load_config(PipelineConfig, compare, ["sft.learner.lr=0.5"]))
    assert printed == expected and printed["sft"]["learner"]["lr"] == 0.5
    assert printed["ppo_lag"]["algo"]["threshold"] == -3.3  # from ppo_lag_tiny.yaml, the base of its section
    assert main(["sft", "--print-config", "learner.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rad sft: error: unknown config key learner.lrr") and len(err.splitlines()) == 1
