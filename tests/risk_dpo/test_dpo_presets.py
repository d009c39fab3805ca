"""launch/configs' offline presets (Ra-DPO2, RSA, their arena) load and point at each other's outputs."""

from pathlib import Path

from rad.config import load_config
from rad.eval.config import EvalConfig
from risk_dpo.rsa import RSAConfig, stage_config
from risk_dpo.trainer import DPOConfig

CONFIGS = Path(__file__).resolve().parents[2] / "launch" / "configs"


def test_offline_presets_chain_sft_to_the_arena():
    ra = load_config(DPOConfig, str(CONFIGS / "ra_dpo2_tiny.yaml"), [])
    rsa = load_config(RSAConfig, str(CONFIGS / "rsa_tiny.yaml"), [])
    arena = load_config(EvalConfig, str(CONFIGS / "eval_dpo_tiny.yaml"), [])
    sft = "runs/tiny/sft/model"  # what `rad train --config launch/configs/tiny.yaml` writes
    assert ra.model.name_or_path == sft and rsa.model.name_or_path == sft
    assert (ra.loss.name, ra.loss.risk, ra.data.pairs) == ("ra_dpo2", "cvar", "safety")
    assert [stage_config(rsa, s).data.pairs for s in (1, 2)] == ["helpfulness", "safety"]
    paths = {name: str(Path(p)) for name, p in arena.model_paths().items()}
    assert paths["sft"] == str(Path(sft).parent) and arena.red_names() == ["sft"]
    assert paths["ra_dpo2"] == ra.output_dir
    assert paths["rsa"] == stage_config(rsa, 2).output_dir and paths["rsa_stage1"] == stage_config(rsa, 1).output_dir
    assert paths["rsa_p"] == str(Path(rsa.output_dir) / "rsa_p")
    assert arena.reward_model == "runs/tiny/reward/model" and arena.cost_model == "runs/tiny/cost/model"
    assert "cvar" in arena.weightings  # CVaR-0.9 is reported
