"""`rad dpo` / `rad rsa` on the DeepSpeed learner: pairs, config, precomputed reference, training, RSA(P)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from rad.config import load_config
from rad.errors import ConfigError
from rad.settings import LearnerConfig, LoggingConfig, PolicyLora, ModelConfig
from risk_dpo.losses import PairBatch
from risk_dpo.pairs import pairs_from_preferences
from risk_dpo.trainer import DPOConfig, DPOTrainer, run_dpo


def _quiet() -> LoggingConfig:
    return LoggingConfig(tensorboard=False, progress=False)


def test_pairs_follow_the_label_columns(world):
    rows = world.splits["pref-train"][:50]
    helpful, _ = pairs_from_preferences(rows, "helpfulness")
    safe, _ = pairs_from_preferences(rows, "safety")
    assert len(helpful) == len(safe) == 50
    disagree = 0
    for row, h, s in zip(rows, helpful, safe):
        assert h["chosen"] == row[f"response_{row['better_response_id']}"]
        assert s["chosen"] == row[f"response_{row['safer_response_id']}"]
        assert s["rejected"] == row[f"response_{1 - row['safer_response_id']}"]
        disagree += row["better_response_id"] != row["safer_response_id"]
    assert disagree > 0  # the two pair sets really differ on this data
    same = dict(rows[0], response_1=rows[0]["response_0"])
    assert pairs_from_preferences([same], "safety") == ([], 1)
    with pytest.raises(ConfigError):
        pairs_from_preferences(rows, "given")


def test_config_validation():
    cfg = load_config(DPOConfig, None, ["loss.name=ra_dpo2", "loss.mu=0.9", "data.pairs=safety"])
    assert cfg.loss.params().mu == 0.9 and cfg.data.pairs == "safety"
    with pytest.raises(ConfigError, match="loss.mu"):
        load_config(DPOConfig, None, ["loss.mu=1.5"])
    load_config(DPOConfig, None, ["loss.risk=erm", "loss.mu=5"])  # ERM coefficients may exceed 1
    with pytest.raises(ConfigError, match="registered losses"):
        load_config(DPOConfig, None, ["loss.name=ipo"])
    with pytest.raises(ConfigError, match="data.pairs"):
        load_config(DPOConfig, None, ["data.pairs=harmless"])


def test_cli_registers_dpo_and_rsa(capsys):
    from risk_dpo.cli import add_cli

    parser = argparse.ArgumentParser(prog="rad")
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["dpo", "--help-config"])
    assert args.func(args) == 0
    assert "loss.mu" in capsys.readouterr().out
    args = parser.parse_args(["rsa", "--help-config"])
    assert args.func(args) == 0
    assert "lagrange" in capsys.readouterr().out


def _cfg(tmp: Path, model_dir: Path, **loss) -> DPOConfig:
    cfg = DPOConfig(output_dir=str(tmp), model=ModelConfig(name_or_path=str(model_dir)), logging=_quiet(),
                    learner=LearnerConfig(lr=2e-3, micro_batch_size=4, warmup_ratio=0.0, scheduler="constant"))
    cfg.data.pairs = "safety"
    cfg.data.max_length = 64
    for k, v in loss.items():
        setattr(cfg.loss, k, v)
    return cfg


def test_precomputed_reference_equals_on_the_fly(tmp_path, reference_and_policy, tokenizer, safety_pairs):
    ref, policy = reference_and_policy
    import copy

    results = []
    for pre in (False, True):
        cfg = _cfg(tmp_path / f"pre{pre}", Path("unused"), name="ra_dpo2", mu=0.9)
        cfg.precompute_reference = pre
        cfg.learner.zero_stage = 1 if pre else 0
        trainer = DPOTrainer(copy.deepcopy(policy), copy.deepcopy(ref), tokenizer, safety_pairs[:6],
                             safety_pairs[6:9], cfg)
        assert (trainer.reference is None) == pre
        batch = trainer._to_device(trainer.collate(trainer.train_examples[:5]))
        assert ("ref_logprobs" in batch) == pre
        with torch.no_grad():
            results.append(trainer.compute_loss(batch, train=False)[1])
    live, pre = results
    assert set(live) == set(pre) and "risk_ratio/chosen" in live
    for k in live:
        assert pre[k] == pytest.approx(live[k], rel=1e-5, abs=1e-6), k


def test_short_training_run_lowers_the_loss(tmp_path, sft_model_dir):
    from rad.models.loading import load_causal_lm

    cfg = _cfg(tmp_path / "run", sft_model_dir, name="ra_dpo2", mu=0.9, beta=0.5)
    cfg.data.train = ["embedded/pref-train:16"]
    cfg.data.eval = ["embedded/pref-train:16"]  # the training pairs: the training loss must go down
    cfg.schedule.epochs = 3
    summary = run_dpo(cfg)
    assert summary["steps"] == 12 and summary["train_pairs"] == 16
    first, last = summary["initial_eval"], summary["final_eval"]
    assert first["eval/loss"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at the start
    assert last["eval/loss"] < first["eval/loss"] - 0.02
    assert last["eval/rewards/margins"] > 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    keys = set().union(*rows)
    for k in ("train/loss", "train/rewards/accuracies", "train/kl/chosen", "train/risk_ratio/rejected",
              "train/logps/chosen", "eval/rewards/chosen"):
        assert k in keys, k
    model = load_causal_lm(summary["model_dir"])
    assert model.config.vocab_size > 0


def test_rsa_weight_average(tmp_path, tiny_model_dir, reference_and_policy):
    from rad.models.loading import load_causal_lm, load_tokenizer, save_pretrained_atomic
    from risk_dpo.rsa import average_weights

    _, policy = reference_and_policy
    other = save_pretrained_atomic(policy, load_tokenizer(tiny_model_dir), tmp_path / "other")
    base = load_causal_lm(tiny_model_dir).state_dict()
    pert = load_causal_lm(other).state_dict()
    same = load_causal_lm(average_weights(tiny_model_dir, other, 1.0, tmp_path / "q1")).state_dict()
    for k in base:
        assert torch.equal(same[k], base[k]), k
    half = load_causal_lm(average_weights(tiny_model_dir, other, 0.25, tmp_path / "q25")).state_dict()
    for k in base:
        torch.testing.assert_close(half[k], 0.25 * base[k] + 0.75 * pert[k])
    assert (tmp_path / "q25" / "tokenizer.json").is_file()
    with pytest.raises(ConfigError):
        average_weights(tiny_model_dir, other, 1.5, tmp_path / "bad")


def test_rsa_stages_chain(tmp_path, tiny_model_dir):
    """Stage 2 starts from (and is referenced to) stage 1 with beta / lambda; RSA(P) q=1 is stage 1."""
    from rad.models.loading import load_causal_lm
    from risk_dpo.rsa import RSAConfig, run_rsa, stage_config

    cfg = RSAConfig(output_dir=str(tmp_path / "rsa"), model=ModelConfig(name_or_path=str(tiny_model_dir)),
                    lagrange=4.0, q=1.0, logging=_quiet())
    for stage in (cfg.helpfulness, cfg.safety):
        stage.data.train = ["embedded/pref-train:4"]
        stage.data.eval = []
        stage.data.max_length = 48
        stage.learner = LearnerConfig(micro_batch_size=4, lr=1e-3)
        stage.schedule.max_steps = 1
    s2 = stage_config(cfg, 2)
    assert s2.loss.beta == pytest.approx(cfg.loss.beta / 4.0) and s2.data.pairs == "safety"
    assert s2.model.name_or_path == str(tmp_path / "rsa" / "stage1" / "model") and s2.reference == ""
    summary = run_rsa(cfg)
    assert summary["stage1"]["pairs"] == "helpfulness" and summary["stage2"]["pairs"] == "safety"
    s1 = load_causal_lm(summary["stage1_model"]).state_dict()
    s2w = load_causal_lm(summary["stage2_model"]).state_dict()
    rp = load_causal_lm(summary["rsa_p_model"]).state_dict()
    assert all(torch.equal(rp[k], s1[k]) for k in s1)
    assert any(not torch.equal(s2w[k], s1[k]) for k in s1)  # stage 2 trained on from stage 1


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_wdpo_steps_on_the_learner_equal_plain_torch(tmp_path, reference_and_policy, tokenizer, safety_pairs,
                                                     zero_stage):
    """Two WDPO optimizer steps (grad_accum 2) through DeepSpeed match torch AdamW on the same losses.

    Checks the double backward through the engine: the inner gradient must not be
    rescaled or start a ZeRO reduction (see DeepSpeedLearner.forward_loss).
    """
    import copy

    from risk_dpo.losses import get_loss
    from risk_dpo.token_stats import sequence_stats

    ref, policy = reference_and_policy
    cfg = _cfg(tmp_path / "wdpo", Path("unused"), name="wdpo", rho=5.0)
    cfg.learner = LearnerConfig(lr=1e-3, micro_batch_size=2, grad_accum=2, grad_clip=0.0, warmup_ratio=0.0,
                                scheduler="constant", zero_stage=zero_stage)
    cfg.data.max_length = 48
    cfg.schedule.max_steps = 2
    trainer = DPOTrainer(copy.deepcopy(policy), copy.deepcopy(ref), tokenizer, safety_pairs[:8], [], cfg)
    plain = copy.deepcopy(policy)
    plain.set_attn_implementation("eager")
    plain.train()
    opt = torch.optim.AdamW(plain.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
    order = trainer.epoch_order(0)
    for i in range(4):
        b = trainer._micro_batch(order, i)
        emb = plain.get_input_embeddings()(b["input_ids"])
        logits = plain(inputs_embeds=emb, attention_mask=b["attention_mask"]).logits
        with torch.no_grad():
            ref_logits = ref(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        st = sequence_stats(logits, b["labels"], ref_logits=ref_logits, need_kl=True)
        losses, _ = get_loss("wdpo").fn(PairBatch(st.select(slice(0, 2)), st.select(slice(2, None)), emb, True),
                                        cfg.loss.params())
        (losses.mean() / 2).backward()
        if i % 2 == 1:
            opt.step()
            opt.zero_grad()
    trainer.train()
    got = trainer.learner.full_state_dict()
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=1e-6)
    assert any(not torch.equal(v, policy.state_dict()[k]) for k, v in plain.state_dict().items())
    with pytest.raises(ConfigError, match="zero_stage"):
        load_config(DPOConfig, None, ["loss.name=wdpo", "learner.zero_stage=3"])


def test_kldpo_trains_on_the_learner(tmp_path, reference_and_policy, tokenizer, safety_pairs):
    import copy

    ref, policy = reference_and_policy
    cfg = _cfg(tmp_path / "kldpo", Path("unused"), name="kldpo", tau=0.5)
    cfg.schedule.max_steps = 2
    model = copy.deepcopy(policy)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = DPOTrainer(model, copy.deepcopy(ref), tokenizer, safety_pairs[:8], safety_pairs[8:10], cfg)
    final = trainer.train()
    assert trainer.step == 2 and final["eval/kldpo/weight_max"] > 1.0
    after = list(trainer.learner.module.parameters())
    assert any(not torch.equal(a.detach(), b) for a, b in zip(after, before))


def test_dpo_with_lora_saves_a_plain_model_that_moved_only_where_adapted(tmp_path, sft_model_dir):
    from rad.models.loading import load_causal_lm, load_safetensors_state

    cfg = _cfg(tmp_path / "run", sft_model_dir, name="dpo")
    cfg.data.train = ["embedded/pref-train:8"]
    cfg.data.eval = ["embedded/pref-train:4"]
    cfg.lora = PolicyLora(enabled=True, r=4, alpha=8.0, target_modules=["q_proj", "v_proj"], save_adapter=True)
    summary = run_dpo(cfg)
    assert summary["steps"] == 2 and summary["lora"] is True
    load_causal_lm(summary["model_dir"])  # a plain transformers model: no peft needed to read it
    base, saved = load_safetensors_state(sft_model_dir), load_safetensors_state(summary["model_dir"])
    assert saved.keys() == base.keys()
    moved = {k for k in base if not torch.equal(base[k], saved[k])}
    assert moved and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in moved), sorted(moved)
    assert (Path(summary["model_dir"]) / "adapter" / "adapter_model.safetensors").is_file()
