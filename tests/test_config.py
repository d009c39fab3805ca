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
    ("sft.learner.group_by_length=true", r"sft: learner\.group_by_length applies to the RL learners .*; SFT cuts"),
    ("cost.learner.group_by_length=true", r"cost: learner\.group_by_length .*; score-model training cuts"),
])
def test_bad_values_fail_fast_with_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(PipelineConfig, None, [override])


def test_group_by_length_is_taken_by_the_rl_learners_and_refused_by_dpo():
    from risk_dpo.rsa import RSAConfig
    from risk_dpo.trainer import DPOConfig

    assert load_config(PipelineConfig, None, ["rad.learner.group_by_length=true"]).rad.learner.group_by_length
    with pytest.raises(ConfigError, match=r"^learner\.group_by_length applies to the RL learners .*; DPO cuts"):
        load_config(DPOConfig, None, ["learner.group_by_length=true"])
    with pytest.raises(ConfigError, match=r"^safety: learner\.group_by_length .*; RSA cuts"):
        load_config(RSAConfig, None, ["safety.learner.group_by_length=true"])


def test_override_parsing():
    assert parse_override("a.b=1e-3") == (["a", "b"], pytest.approx(1e-3))
    assert parse_override("a=[x, y]") == (["a"], ["x", "y"])
    assert parse_override("a=true") == (["a"], True)
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("novalue")
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"a": 1}, ["a.b=2"])


def test_documented_true_false_choices_take_yaml_booleans(tmp_path):
    # `learner.bf16` is a string key with choices auto/true/false: YAML's booleans mean those strings
    assert load_config(SFTConfig, None, ["learner.bf16=true"]).learner.bf16 == "true"
    path = tmp_path / "c.yaml"
    path.write_text("learner:\n  bf16: false\n")
    assert load_config(SFTConfig, path).learner.bf16 == "false"
    with pytest.raises(ConfigError, match=r"learner\.scheduler: 'true' is not allowed"):  # not a choice there
        load_config(SFTConfig, None, ["learner.scheduler=true"])


def test_yaml_scientific_notation_is_a_number(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learner:\n  lr: 1e-5\n")  # YAML 1.1 reads this as a string
    assert load_config(SFTConfig, path).learner.lr == pytest.approx(1e-5)


def test_a_key_given_twice_is_refused_naming_the_key_file_and_lines(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learner:\n  lr: 1e-3\n  micro_batch_size: 4\n  lr: 3e-3\nseed: 1\n")
    with pytest.raises(ConfigError, match=rf"^{path}: line 4: key 'lr' is given twice in one section \(first at "
                                          r"line 2\)"):
        load_config(SFTConfig, path)
    path.write_text("learner: {lr: 1e-3, lr: 2e-3}\n")
    with pytest.raises(ConfigError, match="key 'lr' is given twice"):
        load_config(SFTConfig, path)
    # the same key in two sections, and YAML merge keys, are fine
    path.write_text("common: &c {lr: 1e-3}\nlearner:\n  <<: *c\n  lr: 2e-3\n")
    from rad.config import read_yaml

    assert read_yaml(path)["learner"] == {"lr": 2e-3}
    path.write_text("learner:\n  lr: 1e-3\nlogging:\n  lr: 1\n")
    assert read_yaml(path)["logging"] == {"lr": 1}


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


# -- base: inheritance between config files ---------------------------------------------------------


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_base_file_is_deep_merged_under_the_file_and_overrides(tmp_path):
    _write(tmp_path / "presets" / "root.yaml", "seed: 3\nsft:\n  learner:\n    lr: 1e-3\n    zero_stage: 2\n"
                                               "  data:\n    train: [embedded/sft-train, x.jsonl]\n")
    # A chain: child -> mid (relative to child's directory) -> root (relative to mid's).
    _write(tmp_path / "presets" / "mid.yaml", "base: root.yaml\noutput_dir: runs/mid\n")
    child = _write(tmp_path / "child.yaml", "base: presets/mid.yaml\nsft:\n  learner:\n    lr: 2e-3\n"
                                            "  data:\n    train: [embedded/sft-train:10]\n")
    cfg = load_config(PipelineConfig, child, ["seed=5"])
    assert cfg.output_dir == "runs/mid"                       # from the grandparent chain
    assert cfg.sft.learner.lr == pytest.approx(2e-3)          # the child's key wins
    assert cfg.sft.learner.zero_stage == 2                    # a sibling key of the base survives the merge
    assert cfg.sft.data.train == ["embedded/sft-train:10"]    # lists replace, not concatenate
    assert cfg.seed == 5                                      # overrides win over every file
    saved = save_config(cfg, tmp_path / "resolved.yaml")
    assert "base" not in saved.read_text() and load_config(PipelineConfig, saved) == cfg


def test_base_errors_name_the_key_and_the_file(tmp_path):
    a = _write(tmp_path / "a.yaml", "base: b.yaml\n")
    _write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"base: .*a\.yaml -> .*b\.yaml -> .*a\.yaml includes itself"):
        load_config(PipelineConfig, a)
    missing = _write(tmp_path / "m.yaml", "sft:\n  learner:\n    base: nope.yaml\n")
    with pytest.raises(ConfigError, match=r"sft\.learner\.base: config file .*nope\.yaml does not exist"):
        load_config(PipelineConfig, missing)
    with pytest.raises(ConfigError, match=r"base: expected a config file path"):
        load_config(PipelineConfig, None, ["base=[]"])
    # A base's keys are validated like the file's own, with the dotted key.
    _write(tmp_path / "typo.yaml", "learner:\n  lrr: 1\n")
    with pytest.raises(ConfigError, match=r"unknown config key sft\.learner\.lrr"):
        load_config(PipelineConfig, _write(tmp_path / "t.yaml", "sft:\n  base: typo.yaml\n"))


def test_section_base_may_be_a_whole_command_config(tmp_path):
    """A pipeline stage's base may be that command's own config: its run wiring is dropped, the rest kept."""
    _write(tmp_path / "rl.yaml", "output_dir: elsewhere\nreward_model: r\npolicy:\n  name_or_path: p\n"
                                 "algo:\n  steps: 7\n  k: 3\nlearner:\n  lr: 5e-5\n")
    run = _write(tmp_path / "run.yaml", "rad:\n  base: rl.yaml\n  algo:\n    k: 2\n")
    cfg = load_config(PipelineConfig, run, ["rad.learner.zero_stage=2"])
    assert (cfg.rad.algo.steps, cfg.rad.algo.k) == (7, 2)     # the base's key; the section's own key wins
    assert cfg.rad.learner.lr == pytest.approx(5e-5) and cfg.rad.learner.zero_stage == 2
    assert cfg.rad.learner.scheduler == "constant"            # keys neither sets keep the stage's default
    assert cfg.output_dir == PipelineConfig().output_dir      # the base's output_dir is not the pipeline's
    # Keys that belong to neither the stage nor its command still fail.
    _write(tmp_path / "bad.yaml", "algo:\n  steps: 7\noutptu_dir: x\n")
    with pytest.raises(ConfigError, match=r"unknown config key rad\.outptu_dir"):
        load_config(PipelineConfig, None, [f"rad.base={tmp_path / 'bad.yaml'}"])
