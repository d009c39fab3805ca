"""SFT on the embedded world with the real DeepSpeed engine: loss goes down, outputs load, resume is exact."""

import json

import pytest
import torch

from rad.algos.sft import SFTConfig, SFTTrainer, run_sft
from rad.algos.assets import load_policy, load_records
from rad.data.encode import IGNORE_INDEX, collate_lm, encode_pair
from rad.models.loading import load_causal_lm
from rad.runtime.metrics import read_metrics
from rad.settings import LearnerConfig, LoggingConfig


def _cfg(tmp_path, name, **schedule):
    cfg = SFTConfig(output_dir=str(tmp_path / name), learner=LearnerConfig(lr=3e-3, micro_batch_size=8),
                    logging=LoggingConfig(tensorboard=False, progress=False), num_samples=2, max_new_tokens=12)
    cfg.data.train = ["embedded/sft-train:200"]
    cfg.data.eval = ["embedded/sft-test:48"]
    for k, v in schedule.items():
        setattr(cfg.schedule, k, v)
    return cfg


def test_prompt_tokens_are_masked(tiny_model_dir):
    from rad.models.loading import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    a = encode_pair(tok, "how do i bake bread?", "first mix flour and water.", max_length=64)
    b = encode_pair(tok, "hi", "ok.", max_length=64)
    batch = collate_lm([a, b], tok.pad_token_id)
    labels = batch["labels"]
    assert labels[0, : len(a.prompt_ids)].eq(IGNORE_INDEX).all()
    assert labels[0, len(a.prompt_ids): len(a.input_ids)].tolist() == a.response_ids
    assert a.response_ids[-1] == tok.eos_token_id
    assert labels[1, len(b.input_ids):].eq(IGNORE_INDEX).all() and batch["attention_mask"][1].sum() == len(b.input_ids)
    # Truncation cuts the response, never the prompt's end.
    short = encode_pair(tok, "how do i bake bread?", "word " * 100, max_length=len(a.prompt_ids) + 3)
    assert short.prompt_ids == a.prompt_ids and len(short.response_ids) == 3


def test_sft_lowers_held_out_loss_and_writes_a_loadable_model(tmp_path, world_dir):
    cfg = _cfg(tmp_path, "sft", epochs=2, eval_every=0)
    cfg.data.train = ["embedded/sft-train:800"]
    cfg.learner.micro_batch_size, cfg.learner.lr = 16, 5e-3
    summary = run_sft(cfg)
    assert summary["final_eval_loss"] < 0.6 * summary["initial_eval_loss"], summary
    out = tmp_path / "sft"
    rows = read_metrics(out)
    assert any("train/loss" in r for r in rows) and sum("eval/loss" in r for r in rows) == 3  # start + 2 epochs
    assert (out / "config.yaml").is_file()
    model = load_causal_lm(out / "model")
    assert any(p.endswith(".safetensors") for p in map(str, (out / "model").iterdir()))
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 and all(s["greedy"].strip() for s in samples)
    # The saved weights are the trained ones: held-out loss of the reloaded model matches the summary.
    tok_model, tok, _ = load_policy(cfg.model, cfg.world)
    held = load_records(cfg.data.eval, "sft", cfg.world, cfg.seed)
    batch = collate_lm([encode_pair(tok, r["prompt"], r["response"], cfg.data.max_length) for r in held],
                       tok.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    from rad.data.encode import token_mean_loss

    total, count = token_mean_loss(logits, batch["labels"])
    assert (total / count).item() < 0.6 * summary["initial_eval_loss"]


class _Crash(RuntimeError):
    pass


class _CrashingSFT(SFTTrainer):
    crash_at_step = 5

    def compute_loss(self, batch, train):
        if train and self.step == self.crash_at_step:
            raise _Crash("simulated kill")
        return super().compute_loss(batch, train)


def _trainer(cfg, cls=SFTTrainer):
    model, tok, _ = load_policy(cfg.model, cfg.world, cfg.seed)
    train = load_records(cfg.data.train, "sft", cfg.world, cfg.seed)
    held = load_records(cfg.data.eval, "sft", cfg.world, cfg.seed)
    return cls(model, tok, train, held, cfg)


@pytest.mark.parametrize("zero_stage", [2])
def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path, world_dir, zero_stage):
    full_cfg = _cfg(tmp_path, "full", epochs=1, max_steps=9, save_every=3)
    full_cfg.learner.zero_stage = zero_stage
    full = _trainer(full_cfg)
    full.train()
    expected = full.learner.full_state_dict()

    cut_cfg = _cfg(tmp_path, "cut", epochs=1, max_steps=9, save_every=3)
    cut_cfg.learner.zero_stage = zero_stage
    crashing = _trainer(cut_cfg, _CrashingSFT)
    with pytest.raises(_Crash):
        crashing.train()
    assert crashing.step == 5  # died after checkpoint step-3, two steps lost
    resumed = _trainer(cut_cfg)
    resumed.train(resume=True)
    assert resumed.step == 9
    got = resumed.learner.full_state_dict()
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=1e-6, msg=name)
    # Metrics of the resumed run continue the same file, without the rows the crashed run logged after step 3.
    steps = [r["step"] for r in read_metrics(tmp_path / "cut") if "train/loss" in r]
    assert steps == list(range(1, 10))
