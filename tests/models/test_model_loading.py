"""Loading and saving: safety refusals, clear errors, pad-token fallback, atomic saves."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from rad.errors import ConfigError
from rad.models.loading import (
    ADDED_PAD_TOKEN,
    check_weights,
    ensure_pad_token,
    load_causal_lm,
    load_config,
    load_tokenizer,
    save_pretrained_atomic,
)
from rad.models.tiny import SIZES, build_model


def _logits(model, tokenizer, texts):
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


def _dot_entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("loader", [load_causal_lm, load_tokenizer, load_config])
def test_missing_directory_is_named(tmp_path, loader):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigError, match="no-such-model.*does not exist"):
        loader(missing)
    with pytest.raises(ConfigError, match="does not exist"):
        loader("./no-such-relative-dir")


def test_directory_without_config_or_weights(tmp_path, tiny_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"empty.*no config\.json"):
        load_causal_lm(empty)
    with pytest.raises(ConfigError, match=r"empty.*none of the tokenizer files"):
        load_tokenizer(empty)
    shutil.copy(tiny_dir / "config.json", empty / "config.json")
    with pytest.raises(ConfigError, match=r"empty.*no weights"):
        load_causal_lm(empty)
    with pytest.raises(ConfigError, match="is a file"):
        load_causal_lm(empty / "config.json")


def test_truncated_weights_are_named_not_a_safetensors_traceback(tmp_path, tiny_dir):
    from rad.models.score_model import _load_backbone

    cut = tmp_path / "cut"
    shutil.copytree(tiny_dir, cut)
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ConfigError, match=r"model: the safetensors weights in '.*cut' are unreadable .*truncated"):
        load_causal_lm(cut)
    with pytest.raises(ConfigError, match=r"score-model backbone: cannot load '.*cut'"):
        _load_backbone(str(cut), torch.float32, trust_remote_code=False, allow_pickle=False)


def test_pickled_weights_need_explicit_permission(tmp_path, tiny_dir, tiny_model, tiny_tokenizer):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for name in ("config.json", "generation_config.json"):
        shutil.copy(tiny_dir / name, pickled / name)
    torch.save(tiny_model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(ConfigError, match=r"pickled.*pytorch_model\.bin.*policy\.allow_pickle_weights.*"
                                          r"model\.allow_pickle_weights"):
        load_causal_lm(pickled)
    with pytest.raises(ConfigError, match=r"^reference: directory .* holds only pickled weights"):
        check_weights(pickled, allow_pickle=False, what="reference")
    check_weights(pickled, allow_pickle=True)
    allowed = load_causal_lm(pickled, allow_pickle=True)
    texts = ["The cat likes the river.", "Hi"]
    assert torch.equal(_logits(allowed, tiny_tokenizer, texts), _logits(tiny_model, tiny_tokenizer, texts))


def test_dtype_and_padding_side_options(tiny_dir):
    assert next(load_causal_lm(tiny_dir, dtype="bfloat16").parameters()).dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="dtype 'float8'"):
        load_causal_lm(tiny_dir, dtype="float8")
    assert load_tokenizer(tiny_dir, padding_side="right").padding_side == "right"
    with pytest.raises(ConfigError, match="padding_side"):
        load_tokenizer(tiny_dir, padding_side="middle")
    assert load_config(tiny_dir).model_type == "llama"


def test_missing_pad_reuses_eos(tmp_path, tiny_dir):
    """A saved tokenizer with eos but no pad loads with pad = eos and an unchanged vocabulary."""
    no_pad = PreTrainedTokenizerFast(
        tokenizer_file=str(tiny_dir / "tokenizer.json"), bos_token="<|bos|>", eos_token="<|eos|>"
    )
    assert no_pad.pad_token is None
    no_pad.save_pretrained(tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    assert loaded.pad_token == "<|eos|>" and loaded.pad_token_id == loaded.eos_token_id
    assert len(loaded) == len(no_pad)
    assert loaded.padding_side == "left"


def _bare_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with no special tokens at all."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator(["the cat likes the river"] * 20, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def test_missing_pad_and_eos_adds_pad_and_resizes(tmp_path):
    bare = _bare_tokenizer()
    assert bare.pad_token is None and bare.eos_token is None
    n = len(bare)
    model = build_model(bare, SIZES["tiny"], seed=0)
    directory = save_pretrained_atomic(model, bare, tmp_path / "bare")

    tokenizer = load_tokenizer(directory)
    assert tokenizer.pad_token == ADDED_PAD_TOKEN and tokenizer.pad_token_id == n
    assert len(tokenizer) == n + 1
    assert not ensure_pad_token(tokenizer)  # already has one now

    resized = load_causal_lm(directory, tokenizer=tokenizer)
    assert resized.get_input_embeddings().weight.shape[0] == n + 1
    assert resized.config.pad_token_id == n == resized.generation_config.pad_token_id
    # The old rows are untouched: an unpadded input scores as before.
    ids = torch.tensor([bare("the cat")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(resized(ids).logits[..., :n], model(ids).logits, rtol=0, atol=1e-6)
        batch = tokenizer(["the cat likes the river", "the"], return_tensors="pt", padding=True)
        out = resized.generate(**batch, max_new_tokens=3, do_sample=False)
    assert (batch["input_ids"][1, 0] == n) and out.shape == (2, batch["input_ids"].shape[1] + 3)


def test_atomic_save_replaces_and_leaves_no_temp_dirs(tmp_path, tiny_model, tiny_tokenizer, corpus):
    target = tmp_path / "ckpt"
    save_pretrained_atomic(tiny_model, tiny_tokenizer, target)
    first = (target / "model.safetensors").read_bytes()

    other = build_model(tiny_tokenizer, SIZES["tiny"], seed=5)
    with pytest.raises(ConfigError, match="ckpt.*overwrite=False"):
        save_pretrained_atomic(other, tiny_tokenizer, target, overwrite=False)
    assert (target / "model.safetensors").read_bytes() == first

    # A save that fails half-way leaves the old checkpoint and no temp directory.
    with pytest.raises(AttributeError):
        save_pretrained_atomic(other, object(), target)
    assert (target / "model.safetensors").read_bytes() == first
    assert _dot_entries(tmp_path) == []

    save_pretrained_atomic(other, tiny_tokenizer, target)
    assert (target / "model.safetensors").read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    reloaded = load_causal_lm(target)
    texts = corpus[:2]
    assert torch.equal(_logits(reloaded, tiny_tokenizer, texts), _logits(other, tiny_tokenizer, texts))
