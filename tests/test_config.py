"""Config loading: YAML + dotted overrides, validation before any work starts."""

from dataclasses import dataclass

import pytest

from rad.pipeline import PipelineConfig
from rad.algos.sft import SFTConfig
from rad.config import apply_overrides, describe, field, from_dict, load_config, parse_override, save_config
from rad.errors import ConfigError


def test_tiny_yaml_loads_and_overrides(tmp_path):
    cfg = load_config(PipelineConfig, "launch/configs/tiny.yaml", ["sft.learner.lr=1e-4", "output_dir=x/y",
                                                                   "sft.data.train=embedded/sft-train:0.5"])
    assert cfg.sft.learner.lr == pytest.approx(1e-4)
    assert cfg.output_dir == "x/y"
    assert cfg.sft.data.train == ["embedded/sft-train:0.5"]  # a single spec becomes a list
    assert cfg.model.name_or_path == "tiny"


def test_unknown_key_names_the_dotted_path():
    with pytest.raises(ConfigError, match=r"sft\.learner\.lrr.*allowed keys.*'lr'"):
        from_dict(PipelineConfig, {"sft": {"learner": {"lrr": 1}}})


def test_unknown_key_in_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("sft:\n  schedule:\n    epoch: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*sft\.schedule\.epoch"):
        load_config(PipelineConfig, path)


@pytest.mark.parametrize("override, message", [
    ("sft.learner.zero_stage=5", r"sft\.learner\.zero_stage: must be <= 3"),
    ("sft.learner.lr=-1", r"sft\.learner\.lr: must be > 0"),
    ("sft.learner.scheduler=cyclic", r"sft\.learner\.scheduler: 'cyclic' is not allowed; choose one of"),
    ("sft.learner.micro_batch_size=two", r"sft\.learner\.micro_batch_size: expected an integer"),
    ("logging.jsonl=maybe", r"logging\.jsonl: expected true or false"),
    ("sft.learner.offload_params=true", r"offload_params needs learner.zero_stage=3"),
    ("sft.learner.betas=[0.9]", r"learner\.betas: expected two numbers"),
    ("seed=1.5", r"seed: expected an integer"),
])
def test_bad_values_fail_fast_with_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(PipelineConfig, None, [override])


def test_override_parsing():
    assert parse_override("a.b=1e-3") == (["a", "b"], pytest.approx(1e-3))
    assert parse_override("a=[x, y]") == (["a"], ["x", "y"])
    assert parse_override("a=true") == (["a"], True)
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("novalue")
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"a": 1}, ["a.b=2"])


def test_yaml_scientific_notation_is_a_number(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learner:\n  lr: 1e-5\n")  # YAML 1.1 reads this as a string
    assert load_config(SFTConfig, path).learner.lr == pytest.approx(1e-5)


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(PipelineConfig, "launch/configs/tiny.yaml", ["sft.schedule.epochs=7"])
    path = save_config(cfg, tmp_path / "config.yaml")
    assert load_config(PipelineConfig, path) == cfg


def test_custom_validate_and_describe():
    @dataclass
    class C:
        k: int = field(2, min=1, help="samples per prompt")
        mode: str = field("a", choices=("a", "b"))

        def validate(self):
            if self.mode == "b" and self.k < 2:
                raise ConfigError("k must be >= 2 in mode b")

    with pytest.raises(ConfigError, match="k must be >= 2"):
        from_dict(C, {"mode": "b", "k": 1})
    lines = describe(C)
    assert any(line.startswith("k (int, default 2): samples per prompt") for line in lines)
    assert any("choices=['a', 'b']" in line for line in lines)


def test_partial_section_keeps_the_parent_default():
    # RADStage.learner defaults to a constant schedule with lr 1e-4; setting one key keeps the rest.
    from rad.algos.rad import RADConfig

    cfg = load_config(RADConfig, None, ["reward_model=r", "cost_model=c", "learner.zero_stage=2"])
    assert cfg.learner.zero_stage == 2
    assert cfg.learner.scheduler == "constant" and cfg.learner.lr == pytest.approx(1e-4)
    assert cfg.learner.warmup_ratio == 0.0
