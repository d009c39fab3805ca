"""The generic score model: read position, architectures, save/load, truncation, LoRA."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from rad.data.encode import left_pad
from rad.errors import ConfigError, DataError
from rad.models.loading import load_tokenizer
from rad.models.score_model import (ScoreModel, build_score_model, encode_for_scoring, encode_many_for_scoring,
                                    load_score_model, pad_right, save_score_model)
from reward_cost_models.losses import reward_loss

PAIRS = [("how do i bake bread?", "mix flour and water, then bake it."),
         ("tell me a joke", "no"),
         ("how can i pick a lock?", "i can't help with that, it could hurt someone and break the law.")]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir, padding_side="right")


@pytest.fixture(scope="module")
def llama_scorer(tiny_model_dir, tokenizer) -> ScoreModel:
    return build_score_model(tiny_model_dir, kind="cost", tokenizer=tokenizer, seed=3).eval()


def _other_backbone(arch: str, vocab: int, directory):
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

    torch.manual_seed(0)
    if arch == "gpt2":
        model = GPT2Model(GPT2Config(vocab_size=vocab, n_positions=128, n_embd=32, n_layer=2, n_head=2))
    else:
        model = BertModel(BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=128))
    model.save_pretrained(directory)
    return directory


def _seqs(tokenizer, max_length=96):
    return [encode_for_scoring(tokenizer, p, r, max_length) for p, r in PAIRS]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bert"])
def test_score_read_at_last_real_token_for_left_and_right_padding(arch, tiny_model_dir, tokenizer, tmp_path,
                                                                   llama_scorer):
    if arch == "llama":
        model = llama_scorer
    else:
        path = _other_backbone(arch, len(tokenizer), tmp_path / arch)
        model = build_score_model(path, tokenizer=tokenizer, seed=1).eval()
    seqs = _seqs(tokenizer)
    assert len({len(s) for s in seqs}) == len(seqs)  # the batch really is padded
    with torch.no_grad():
        # Independent computation: backbone on each unpadded sequence, head on its final hidden state.
        expected = torch.stack([
            model.head(model.backbone(input_ids=torch.tensor([s])).last_hidden_state[0, -1]).squeeze()
            for s in seqs])
        right = model(**pad_right(seqs, tokenizer.pad_token_id))
        left = model(**left_pad(seqs, tokenizer.pad_token_id))
        # pad == eos (what real tokenizers without a pad token get): the mask still decides "last".
        eos_padded = model(**pad_right(seqs, tokenizer.eos_token_id))
    torch.testing.assert_close(right, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(left, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(eos_padded, expected, atol=1e-5, rtol=1e-5)
    assert model.score_config.backbone_class == {"llama": "LlamaModel", "gpt2": "GPT2Model", "bert": "BertModel"}[arch]


def test_save_load_round_trip_is_exact(llama_scorer, tokenizer, tmp_path):
    llama_scorer.score_config.normalize = "standard"
    llama_scorer.score_config.mean, llama_scorer.score_config.std = 0.25, 2.0
    try:
        out = save_score_model(llama_scorer, tmp_path / "cost", tokenizer)
    finally:
        llama_scorer.score_config.normalize = "none"
    loaded = load_score_model(out)
    batch = pad_right(_seqs(tokenizer), tokenizer.pad_token_id)
    with torch.no_grad():
        assert torch.equal(loaded(**batch), llama_scorer(**batch))
        raw = loaded(**batch)
    cfg = json.loads((out / "score_config.json").read_text())
    assert (cfg["kind"], cfg["normalize"], cfg["mean"], cfg["std"]) == ("cost", "standard", 0.25, 2.0)
    torch.testing.assert_close(loaded.normalize(raw), (raw - 0.25) / 2.0)
    # The backbone alone is a plain HF directory.
    from transformers import AutoModel

    assert type(AutoModel.from_pretrained(out)).__name__ == "LlamaModel"
    assert len(load_tokenizer(out)) == len(tokenizer)


def test_load_rejects_a_plain_model_directory(tiny_model_dir):
    with pytest.raises(ConfigError, match="score_config.json"):
        load_score_model(tiny_model_dir)


def test_encode_many_is_encode_each_pair(tokenizer):
    """The batched encoder (prompts repeated, as k samples per prompt, and pairs to truncate) = one call per pair."""
    long_prompt = "please explain " * 40 + "how to grow tomatoes"
    prompts = [p for p, _ in PAIRS for _ in range(2)] + [long_prompt, "hi"]
    responses = [r for _, r in PAIRS for r in (r, r + " really.")] + ["water them every day", "water them " * 100]
    for max_length in (10_000, 40, 32):
        assert encode_many_for_scoring(tokenizer, prompts, responses, max_length) == \
            [encode_for_scoring(tokenizer, p, r, max_length) for p, r in zip(prompts, responses)]
    with pytest.raises(DataError, match=f"item {len(prompts) - 2}: .*over max_length=40"):
        encode_many_for_scoring(tokenizer, prompts, responses, 40, truncate=False)
    with pytest.raises(DataError, match="item 1: empty response"):
        encode_many_for_scoring(tokenizer, prompts[:2], ["ok", " "], 40)


def test_encode_truncates_prompt_from_the_left_and_keeps_response_end(tokenizer):
    prompt = "please explain " * 40 + "how to grow tomatoes"
    response = "water them every day"
    full = encode_for_scoring(tokenizer, prompt, response, 10_000)
    cut = encode_for_scoring(tokenizer, prompt, response, 40)
    assert len(cut) == 40
    assert cut[0] == tokenizer.bos_token_id and cut[-1] == tokenizer.eos_token_id
    assert cut[1:] == full[-39:]  # prompt lost its start; template end and whole response kept
    assert tokenizer.decode(cut).rstrip().endswith("ASSISTANT: water them every day<|eos|>")
    long_response = "water them " * 100
    cut = encode_for_scoring(tokenizer, "hi", long_response, 32)
    full = encode_for_scoring(tokenizer, "hi", long_response, 10_000)
    assert len(cut) == 32 and cut[-20:] == full[-20:]  # the response's end survives
    with pytest.raises(DataError, match="over max_length=40"):
        encode_for_scoring(tokenizer, prompt, response, 40, truncate=False)
    with pytest.raises(DataError, match="empty response"):
        encode_for_scoring(tokenizer, prompt, "  ", 40)


def test_lora_trains_only_adapters_and_head_and_saves_merged(tiny_model_dir, tokenizer, tmp_path):
    from rad.runtime.learner import DeepSpeedLearner
    from rad.settings import LearnerConfig

    model = build_score_model(tiny_model_dir, tokenizer=tokenizer, seed=0)
    model.add_lora(r=4, alpha=8, target_modules=["q_proj", "v_proj"])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    learner = DeepSpeedLearner(model, LearnerConfig(lr=1e-2, micro_batch_size=len(PAIRS), warmup_ratio=0),
                               total_steps=3)
    batch = pad_right(_seqs(tokenizer) + [encode_for_scoring(tokenizer, p, "ok", 96) for p, _ in PAIRS],
                      tokenizer.pad_token_id)
    for _ in range(3):
        scores = learner(**batch)
        learner.backward(reward_loss(*scores.chunk(2)))
        learner.step()
    changed = {n for n, p in learner.module.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed, "nothing trained"
    assert all("lora_" in n or n.startswith("head.") for n in changed), sorted(changed)
    # the Bradley-Terry loss sees only score differences, so head.bias gets no gradient (it may move by
    # round-off or not at all); head.weight and the adapters must train
    assert any("lora_B" in n for n in changed) and "head.weight" in changed

    module = learner.module.eval()
    out = save_score_model(module, tmp_path / "lora", tokenizer)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert not any("lora" in k for k in f.keys())
    loaded = load_score_model(out)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch), module(**batch), atol=1e-5, rtol=1e-5)
    assert any("lora_" in n for n, _ in module.named_parameters())  # merging worked on a copy
