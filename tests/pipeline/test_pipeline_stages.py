"""``rad train`` stage selection and wiring: which stages run, from which configs, into which directories."""

import json
import re
from pathlib import Path

import pytest

from rad.config import load_config
from rad.errors import ConfigError
from rad.pipeline import PipelineConfig, stage_configs
from safe_rlhf_baseline.config import PPOLagConfig, PPOLagStage

CONFIGS = Path(__file__).resolve().parents[2] / "launch" / "configs"


@pytest.mark.parametrize("stages, needle", [
    ("[sft, reward, rlhf]", r"stages: unknown stage 'rlhf'; choose from \['sft', 'reward', 'cost', 'rad', "
                            r"'ppo_lag', 'eval'\]"),
    ("[sft, sft]", r"stages: each stage once"),
])
def test_bad_stage_lists_fail_naming_the_key(stages, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(PipelineConfig, None, [f"stages={stages}"])


def test_an_unknown_stage_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("base: " + str(CONFIGS / "tiny.yaml") + "\nstages: [sft, ppo-lag]\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: stages: unknown stage 'ppo-lag'"):
        load_config(PipelineConfig, path)


def test_the_main_job_keeps_its_four_stages():
    cfg = load_config(PipelineConfig, CONFIGS / "tiny.yaml")
    assert list(stage_configs(cfg)) == ["sft", "reward", "cost", "rad"]


def test_stages_run_in_pipeline_order_and_eval_needs_two_policies(tmp_path):
    cfg = load_config(PipelineConfig, None, [f"output_dir={tmp_path}", "stages=[eval, rad, sft, reward, cost]"])
    assert list(stage_configs(cfg)) == ["sft", "reward", "cost", "rad", "eval"]
    assert stage_configs(cfg)["eval"].competitions() == [("sft", "rad")]
    cfg = load_config(PipelineConfig, None, [f"output_dir={tmp_path}", "stages=[sft, eval]"])
    with pytest.raises(ConfigError, match=r"stages: eval compares at least two policies of the run, found \['sft'\]"):
        stage_configs(cfg)
    # A policy an earlier run left in the directory takes part without its stage being selected.
    (tmp_path / "ppo_lag" / "model").mkdir(parents=True)
    (tmp_path / "ppo_lag" / "model" / "config.json").write_text("{}")
    assert stage_configs(cfg)["eval"].competitions() == [("sft", "ppo-lag")]


@pytest.mark.parametrize("override, needle", [
    ("rad.data.prompts=[embedded/prompts-train, embeded/prompts-test]",
     r"^rad\.data\.prompts\[1\]: unknown dataset 'embeded/prompts-test'; registered datasets: "),
    ("ppo_lag.data.ptx=[{missing}:0.5]", r"^ppo_lag\.data\.ptx\[0\]: '.*missing\.jsonl:0\.5': no such data file "),
    ("eval.redteam=[embedded/redteam:1.5]", r"^eval\.redteam\[0\]: dataset spec 'embedded/redteam:1\.5': proportion"),
])
def test_every_stages_data_specs_are_checked_before_the_first_stage_starts(tmp_path, override, needle):
    from rad.pipeline import run_pipeline

    cfg = load_config(PipelineConfig, None, [f"output_dir={tmp_path / 'run'}", "stages=[sft, rad, ppo_lag, eval]",
                                             override.format(missing=tmp_path / "missing.jsonl")])
    with pytest.raises(ConfigError, match=needle):
        run_pipeline(cfg)
    assert not (tmp_path / "run" / "sft").exists()


def test_tiny_compare_is_tiny_plus_ppo_lag_and_eval_from_the_one_tuned_preset():
    tiny = load_config(PipelineConfig, CONFIGS / "tiny.yaml")
    cfg = load_config(PipelineConfig, CONFIGS / "tiny_compare.yaml")
    for key in ("output_dir", "seed", "world", "model", "logging", "sft", "reward", "cost", "rad"):
        assert getattr(cfg, key) == getattr(tiny, key), key
    assert cfg.stages == ["sft", "reward", "cost", "rad", "ppo_lag", "eval"]
    # The baseline's keys are exactly those `rad baseline ppo-lag --config ppo_lag_tiny.yaml` runs with.
    preset = load_config(PPOLagConfig, CONFIGS / "ppo_lag_tiny.yaml")
    for f in PPOLagStage.__dataclass_fields__:
        assert getattr(cfg.ppo_lag, f) == getattr(preset, f), f
    assert cfg.ppo_lag != PPOLagStage()  # the preset is not the reference defaults
    stages = stage_configs(cfg)
    out = Path(cfg.output_dir)
    ppo = stages["ppo_lag"]
    assert ppo.output_dir == str(out / "ppo_lag") and ppo.policy.name_or_path == str(out / "sft" / "model")
    assert (ppo.reward_model, ppo.cost_model) == (str(out / "reward" / "model"), str(out / "cost" / "model"))
    ev = stages["eval"]
    assert ev.output_dir == str(out / "eval") and (ev.reward_model, ev.cost_model) == (ppo.reward_model,
                                                                                        ppo.cost_model)
    assert ev.competitions() == [("sft", "rad"), ("sft", "ppo-lag"), ("ppo-lag", "rad")]
    assert ev.model_paths()["ppo-lag"] == str(out / "ppo_lag" / "model")


def test_a_stage_that_joins_a_cluster_without_its_token_fails_before_any_stage_runs(tmp_path, monkeypatch):
    from rad.pipeline import run_pipeline

    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(key, raising=False)  # unset mode: clusters are token-authenticated
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token
    out = tmp_path / "run"
    cfg = load_config(PipelineConfig, CONFIGS / "smoke.yaml", [f"output_dir={out}", "rad.resources.ray_address=auto"])
    with pytest.raises(ConfigError, match=r"rad\.resources\.ray_address=auto: the cluster needs Ray's auth token and "
                                          r"none was found; set RAY_AUTH_TOKEN"):
        run_pipeline(cfg)
    assert not out.exists()  # SFT, reward and cost did not run first


def test_a_finished_stage_refuses_a_changed_key_and_keeps_its_record(tmp_path, tiny_model_dir, capsys):
    """``rad train ... sft.learner.lr=1e-3`` on a finished run: refused, naming the key; nothing rewritten."""
    import yaml

    from rad.cli import main

    command = ["train", f"output_dir={tmp_path}", "stages=[sft]", f"model.name_or_path={tiny_model_dir}",
               "sft.data.train=[embedded/sft-train:32]", "sft.data.eval=[embedded/sft-test:8]",
               "sft.schedule.max_steps=2", "sft.num_samples=0", "sft.learner.zero_stage=0",
               "logging.tensorboard=false", "logging.progress=false"]
    assert main(command) == 0
    records = {p: p.read_text() for p in (tmp_path / "config.yaml", tmp_path / "sft" / "config.yaml")}
    summary = (tmp_path / "summary.json").read_text()
    # The job ends with a readable summary: each stage, its key numbers, where its outputs are.
    lines = capsys.readouterr().out.splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("rad train: ")):]  # after DeepSpeed's
    assert lines[0].startswith(f"rad train: 1 stage(s) in {tmp_path}, ")
    sft = json.loads(summary)["stages"]["sft"]
    assert lines[1].startswith(f"  sft  steps 2, eval loss {sft['initial_eval_loss']:.3f} -> "
                               f"{sft['final_eval_loss']:.3f} [")
    assert lines[2] == f"       -> {tmp_path / 'sft' / 'model'}"
    assert lines[-1] == f"Every number and path: {tmp_path}/summary.json (or rad train --json)"
    assert yaml.safe_load(records[tmp_path / "config.yaml"])["sft"]["learner"]["lr"] == 0.003

    capsys.readouterr()
    assert main([*command, "sft.learner.lr=1e-3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rad train: error: sft.learner.lr: ") and "(sft.learner.lr: 0.003 -> 0.001)" in err
    assert main([*command, "resume=false"]) == 2
    assert "resume: false asks for a new run" in capsys.readouterr().err
    # The same command (or one changing only how it logs) skips the finished stage and rewrites nothing.
    assert main([command[0], "--json", *command[1:], "logging.log_every=3"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{\n"):])["stages"] == json.loads(summary)["stages"]
    assert {p: p.read_text() for p in records} == records
    assert json.loads((tmp_path / "summary.json").read_text())["stages"] == json.loads(summary)["stages"]
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 2  # the two runs that went ahead


def test_a_given_reward_model_replaces_the_reward_stage(score_dirs):
    cfg = load_config(PipelineConfig, None, [f"reward_model={score_dirs['reward']}", "reward_scorer.sign=-1",
                                             "stages=[sft, reward, cost, rad, eval]"])
    stages = stage_configs(cfg)
    assert list(stages) == ["sft", "cost", "rad", "eval"]
    for name in ("rad", "eval"):
        assert stages[name].reward_model == score_dirs["reward"] and stages[name].reward_scorer.sign == -1
        assert stages[name].cost_model.endswith("cost/model") and stages[name].cost_scorer.sign == 1
    with pytest.raises(ConfigError, match="cost_model: .*cost_scorer.format is 'http'"):
        load_config(PipelineConfig, None, ["cost_model=/models/x", "cost_scorer.format=http"])


def test_the_summary_states_rads_constraint_against_sft_and_leaves_out_what_a_stage_did_not_report():
    from rad.pipeline_summary import format_summary

    text = format_summary({"output_dir": "runs/x", "total_seconds": 12.0, "stages": {"rad": {
        "model_dir": "runs/x/rad/model", "steps": 60, "seconds": 12.0,
        "heldout": {"gain": 1.2, "delta": 0.5, "violation": 0.0, "cost_cvar_0.9_policy": 3.16,
                    "cost_cvar_0.9_reference": 4.18}}}})
    assert text.splitlines()[1:3] == [
        "  rad  steps 60, held-out gain 1.200, delta 0.500, violation 0.000, cost CVaR-0.9 3.160 (SFT 4.180) [12 s]",
        "       -> runs/x/rad/model"]
    assert "win rate" not in text


def test_a_given_policy_model_replaces_sft(tmp_path, sft_model_dir, score_dirs, capsys):
    """policy_model: RL starts from it and the score models train on it, no SFT; eval compares it as 'init'. A
    missing path or a checkpoint that is no causal LM is one line naming the key."""
    from rad.cli import main

    cfg = load_config(PipelineConfig, None, [f"policy_model={sft_model_dir}", f"output_dir={tmp_path}",
                                             "stages=[sft, reward, cost, rad, eval]"])
    stages = stage_configs(cfg)
    assert list(stages) == ["reward", "cost", "rad", "eval"]
    assert {stages[s].model.name_or_path for s in ("reward", "cost")} == {str(sft_model_dir)}
    assert stages["rad"].policy.name_or_path == str(sft_model_dir)
    assert stages["eval"].models[0] == f"init={sft_model_dir}" and stages["eval"].red == ["init"]
    # a real run: the cost stage trains on the given policy; SFT never runs
    assert main(["train", f"policy_model={sft_model_dir}", f"output_dir={tmp_path / 'run'}", "stages=[sft, cost]",
                 "cost.data.train=[embedded/pref-train:16]", "cost.data.eval=[embedded/pref-test:8]",
                 "cost.schedule.max_steps=1", "logging.tensorboard=false", "logging.progress=false"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert list(summary["stages"]) == ["cost"] and summary["stages"]["cost"]["backbone"] == str(sft_model_dir)
    assert not (tmp_path / "run" / "sft").exists()
    capsys.readouterr()
    for path, needle in ((tmp_path / "nowhere", "policy_model: directory '.*nowhere' does not exist"),
                         (score_dirs["reward"], "policy_model: '.*' is not a causal language model")):
        assert main(["train", f"policy_model={path}", f"output_dir={tmp_path / 'x'}"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("rad train: error: ") and len(err.strip().splitlines()) == 1
        assert re.search(needle, err), err
