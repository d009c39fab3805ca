"""The tiny model builder: determinism, shape, tokenizer behaviour, generation, cache."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rad.data.template import PROMPT_TEMPLATE, format_prompt
from rad.models.loading import load_causal_lm, load_tokenizer
from rad.models.tiny import (
    SIZES,
    build_model,
    build_tiny,
    get_tiny_model_dir,
    tiny_cache_key,
    train_tokenizer,
)
from rad.settings import TINY_SIZES, ModelConfig


def _bytes(directory: Path, name: str) -> bytes:
    return (directory / name).read_bytes()


@pytest.fixture(scope="module")
def rebuilt_dirs(tmp_path_factory, corpus):
    """A second seed-0 build, a seed-1 build, and a build on a different corpus."""
    root = tmp_path_factory.mktemp("rebuilds")
    return {
        "seed0": build_tiny(corpus, root / "again", seed=0),
        "seed1": build_tiny(corpus, root / "seed1", seed=1),
        "other_corpus": build_tiny([t.upper() for t in corpus], root / "upper", seed=0),
    }


def test_same_seed_gives_identical_files(tiny_dir, rebuilt_dirs):
    again = rebuilt_dirs["seed0"]
    for name in ("tokenizer.json", "tokenizer_config.json", "model.safetensors", "config.json"):
        assert _bytes(tiny_dir, name) == _bytes(again, name), name


def test_seed_changes_weights_not_tokenizer(tiny_dir, rebuilt_dirs):
    other = rebuilt_dirs["seed1"]
    # The tokenizer depends only on the texts; the seed only drives weight init.
    assert _bytes(tiny_dir, "tokenizer.json") == _bytes(other, "tokenizer.json")
    assert _bytes(tiny_dir, "model.safetensors") != _bytes(other, "model.safetensors")


def test_corpus_changes_tokenizer(tiny_dir, rebuilt_dirs):
    assert _bytes(tiny_dir, "tokenizer.json") != _bytes(rebuilt_dirs["other_corpus"], "tokenizer.json")


def test_saved_files_are_safetensors_llama(tiny_dir, tiny_model, tiny_tokenizer):
    assert (tiny_dir / "model.safetensors").is_file()
    assert not list(tiny_dir.glob("*.bin"))
    config = json.loads((tiny_dir / "config.json").read_text())
    spec = SIZES["tiny"]
    assert config["model_type"] == "llama"
    assert config["hidden_size"] == spec.hidden_size
    assert config["num_hidden_layers"] == spec.num_hidden_layers
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    assert head_dim == config["head_dim"] >= 32
    assert config["vocab_size"] == len(tiny_tokenizer)
    assert tiny_model.get_input_embeddings().weight.shape == (len(tiny_tokenizer), spec.hidden_size)
    assert tiny_model.config.pad_token_id == tiny_tokenizer.pad_token_id
    assert tiny_model.generation_config.eos_token_id == tiny_tokenizer.eos_token_id


def test_reload_gives_identical_logits(corpus, tiny_model, tiny_tokenizer):
    """The in-memory build and the model loaded back from disk compute the same logits."""
    fresh = build_model(train_tokenizer(corpus), SIZES["tiny"], seed=0)
    batch = tiny_tokenizer(corpus[:4], return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = fresh(**batch).logits
        got = tiny_model(**batch).logits
    assert torch.equal(expected, got)


def test_build_does_not_touch_global_rng(corpus):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model(train_tokenizer(corpus[:50]), SIZES["tiny"], seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_tokenizer_special_tokens_and_padding(tiny_tokenizer):
    tok = tiny_tokenizer
    ids = {tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id}
    assert None not in ids and len(ids) == 4
    assert tok.padding_side == "left"
    assert tok.model_max_length == SIZES["tiny"].max_position_embeddings
    batch = tok(["a", "the cat likes the river"], padding=True)
    short, long = batch["input_ids"]
    assert len(short) == len(long)
    n_pad = batch["attention_mask"][0].count(0)
    assert n_pad > 0
    assert short[:n_pad] == [tok.pad_token_id] * n_pad
    assert short[n_pad] == tok.bos_token_id
    assert long[0] == tok.bos_token_id


def test_template_words_are_whole_tokens(tiny_tokenizer):
    tokens = tiny_tokenizer.tokenize(format_prompt("hello"))
    for word in ("BEGINNING", "OF", "CONVERSATION", "USER", "ASSISTANT"):
        assert any(t.lstrip("Ġ") == word for t in tokens), (word, tokens)
    # Template plus a five-letter prompt: 5 words, 3 colons, the prompt in a few pieces.
    assert len(tokens) <= 12


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=60))
def test_tokenizer_round_trips_any_text(tiny_tokenizer, text):
    if "<|" in text:  # special-token spellings are parsed as special tokens by design
        return
    ids = tiny_tokenizer(text)["input_ids"]
    assert ids[0] == tiny_tokenizer.bos_token_id
    assert tiny_tokenizer.decode(ids, skip_special_tokens=True) == text


def test_left_padded_batch_generates_like_single_prompts(tiny_model, tiny_tokenizer):
    prompts = [
        format_prompt("How does the cat handle the river?"),
        format_prompt("Hi"),
        format_prompt("What does a doctor write about an old book on a long rainy day?"),
    ]
    new = 8
    batch = tiny_tokenizer(prompts, return_tensors="pt", padding=True)
    width = batch["input_ids"].shape[1]
    with torch.no_grad():
        batched = tiny_model.generate(**batch, max_new_tokens=new, do_sample=False)
        batch_logits = tiny_model(**batch).logits[:, -1]
    for i, prompt in enumerate(prompts):
        single = tiny_tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            alone = tiny_model.generate(**single, max_new_tokens=new, do_sample=False)
            alone_logits = tiny_model(**single).logits[0, -1]
        continuation = alone[0, single["input_ids"].shape[1]:]
        got = batched[i, width:width + len(continuation)]
        assert torch.equal(got, continuation), i
        # After an early eos the batch pads that row; the single run just stops.
        assert (batched[i, width + len(continuation):] == tiny_tokenizer.pad_token_id).all()
        torch.testing.assert_close(batch_logits[i], alone_logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("size", "low", "high"), [("small", 1e6, 2e6), ("medium", 30e6, 50e6)])
def test_size_presets_build_their_shape_and_tokenizer(tmp_path, corpus, size, low, high):
    directory = build_tiny(corpus, tmp_path / size, size=size)
    model = load_causal_lm(directory)
    spec = SIZES[size]
    assert model.config.num_hidden_layers == spec.num_hidden_layers
    assert model.config.hidden_size == spec.hidden_size
    assert model.config.hidden_size // model.config.num_attention_heads >= 32
    # The preset's own tokenizer, trained with its vocabulary target, sizes the embeddings.
    tokenizer = load_tokenizer(directory)
    assert tokenizer.model_max_length == spec.max_position_embeddings
    assert len(tokenizer) == model.config.vocab_size <= spec.vocab_size
    assert low <= model.num_parameters() <= high
    # Each preset gets its own cache entry.
    assert len({tiny_cache_key(corpus, 0, other) for other in SIZES}) == len(SIZES)


def test_config_offers_every_size_preset():
    assert TINY_SIZES == tuple(SIZES)
    assert ModelConfig(tiny_size="medium").tiny_size == "medium"


def test_cache_builds_once_and_keys_on_inputs(tmp_path, corpus):
    calls = []

    def texts():
        calls.append(1)
        return corpus

    first = get_tiny_model_dir(tmp_path, texts, seed=0)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    second = get_tiny_model_dir(tmp_path, texts, seed=0)
    assert second == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp  # not rebuilt
    assert len(calls) == 2
    assert get_tiny_model_dir(tmp_path, texts, seed=1) != first
    assert tiny_cache_key(corpus, 0, "tiny") != tiny_cache_key(corpus[:-1], 0, "tiny")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_concurrent_builders_share_one_complete_build(tmp_path, corpus):
    """Builders racing for one cache entry all get the same, complete, correct build."""
    cache = tmp_path / "cache"
    barrier = threading.Barrier(3)
    results: list[Path] = []

    def race():
        barrier.wait()  # all miss the cache together, build, then race to publish
        results.append(get_tiny_model_dir(cache, lambda: corpus, seed=3))

    threads = [threading.Thread(target=race) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 3 and len(set(results)) == 1
    assert sorted(p.name for p in cache.iterdir()) == [results[0].name]  # no temp dirs left
    reference = build_tiny(corpus, tmp_path / "reference", seed=3)
    for name in ("tokenizer.json", "model.safetensors"):
        assert _bytes(results[0], name) == _bytes(reference, name)


def test_builds_from_the_embedded_world(tmp_path):
    world = pytest.importorskip(
        "rad.data.world", reason="rad.data.world (the embedded world generator) is not written yet"
    )
    texts = list(world.build_world(0).corpus_texts())
    directory = build_tiny(texts, tmp_path / "world", seed=0)
    tokenizer = load_tokenizer(directory)
    model = load_causal_lm(directory, tokenizer=tokenizer)
    assert len(tokenizer) == model.config.vocab_size
    for text in texts[:50]:
        assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text
    assert len(tokenizer.tokenize(PROMPT_TEMPLATE.format(prompt=""))) <= 10
