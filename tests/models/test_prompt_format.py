"""Prompt formats (safe_rlhf / chat / custom): one format per model, saved with it, used by every stage."""

from __future__ import annotations

import logging

import pytest

from rad.config import from_dict
from rad.data.encode import encode_pair
from rad.data.prompt_format import (
    PromptFormat,
    saved_prompt_format,
    tokenizer_prompt_format,
    use_prompt_format,
    warn_on_mismatch,
)
from rad.data.template import PROMPT_TEMPLATE
from rad.errors import ConfigError
from rad.models.loading import load_causal_lm, load_tokenizer, save_pretrained_atomic
from rad.models.score_model import (
    build_score_model,
    encode_many_for_scoring,
    load_score_model,
    save_score_model,
)
from rad.runtime.rollout.base import SamplingConfig
from rad.runtime.rollout.hf_engine import HFEngine
from rad.settings import ModelConfig

# A small chat template with visible markers (an instruct model's template does the same with its own tokens).
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
PROMPT = "How does the cat handle the river?"


@pytest.fixture(scope="module")
def chat_dir(tiny_dir, tmp_path_factory):
    """The tiny model saved with a chat template and the chat prompt format."""
    tokenizer = load_tokenizer(tiny_dir)
    tokenizer.chat_template = CHAT_TEMPLATE
    use_prompt_format(tokenizer, "chat")
    model = load_causal_lm(tiny_dir, tokenizer=tokenizer)
    return save_pretrained_atomic(model, tokenizer, tmp_path_factory.mktemp("chat") / "model")


def test_chat_format_is_saved_and_drives_training_text_and_rollouts(chat_dir):
    tokenizer = load_tokenizer(chat_dir)
    assert tokenizer_prompt_format(tokenizer).spec == "chat"
    assert saved_prompt_format(chat_dir) == "chat"
    # SFT / DPO training text: the chat template's markers, no extra BOS, the response right after the cue.
    enc = encode_pair(tokenizer, PROMPT, " Carefully. ", 64)
    assert tokenizer.decode(enc.prompt_ids) == f"<|user|>{PROMPT}<|assistant|>"
    assert tokenizer.decode(enc.response_ids) == "Carefully.<|eos|>"
    # RL / eval rollouts: a real engine loading the saved model builds the same prompt.
    engine = HFEngine(chat_dir)
    (rollout,) = engine.generate([PROMPT], 1, SamplingConfig(max_new_tokens=2))
    assert rollout.prompt_token_ids == enc.prompt_ids
    # The Safe RLHF default for a tokenizer saved without a format.
    plain = encode_pair(load_tokenizer(chat_dir, prompt_format="safe_rlhf"), PROMPT, "Carefully.", 64)
    assert tokenizer.decode(plain.prompt_ids) == "<|bos|>" + PROMPT_TEMPLATE.format(prompt=PROMPT)


def test_override_is_logged_and_saved_with_the_next_model(chat_dir, tmp_path, caplog):
    custom = "Question: {prompt}\nAnswer:"
    with caplog.at_level(logging.WARNING, logger="rad.data"):
        tokenizer = load_tokenizer(chat_dir, prompt_format=custom, format_key="model.prompt_format")
    assert "replaces the format 'chat'" in caplog.text
    assert tokenizer.decode(encode_pair(tokenizer, PROMPT, "x", 64).prompt_ids).endswith(f"{PROMPT}\nAnswer:")
    out = save_pretrained_atomic(load_causal_lm(chat_dir, tokenizer=tokenizer), tokenizer, tmp_path / "m")
    assert tokenizer_prompt_format(load_tokenizer(out)).spec == custom


def test_score_model_records_and_uses_its_format(chat_dir, tmp_path):
    tokenizer = load_tokenizer(chat_dir, padding_side="right")
    model = build_score_model(chat_dir, tokenizer=tokenizer, template=tokenizer_prompt_format(tokenizer).spec)
    reloaded = load_score_model(save_score_model(model, tmp_path / "rm", tokenizer))
    assert reloaded.score_config.template == "chat"
    (ids,) = encode_many_for_scoring(tokenizer, [PROMPT], ["Carefully."], 64, reloaded.score_config.template)
    assert tokenizer.decode(ids) == f"<|user|>{PROMPT}<|assistant|>Carefully.<|eos|>"
    # An older score model records the Safe RLHF template itself: the same format as 'safe_rlhf'.
    assert warn_on_mismatch("safe_rlhf", {"reward": PROMPT_TEMPLATE}) == []
    assert warn_on_mismatch("chat", {"reward": PROMPT_TEMPLATE, "cost": "chat"}) == [
        f"prompt formats differ: policy generates with 'chat', the reward model scores with {PROMPT_TEMPLATE!r}"]


def test_bad_formats_are_one_line_config_errors(tiny_dir):
    with pytest.raises(ConfigError, match="has no chat template"):
        load_tokenizer(tiny_dir, prompt_format="chat")
    with pytest.raises(ConfigError, match=r"model: prompt_format: custom template 'Q: \{prompt\} \{x\}' may use only"):
        from_dict(ModelConfig, {"prompt_format": "Q: {prompt} {x}"}, prefix="model")
    with pytest.raises(ConfigError, match="exactly once"):
        PromptFormat.parse("no placeholder", "model.prompt_format")
    tokenizer = load_tokenizer(tiny_dir)
    tokenizer.chat_template = "{{ raise_exception('a system message is required') }}"
    with pytest.raises(ConfigError,
                       match=r"the chat template of .* fails on one user message \(.*a system message is "):
        PromptFormat.parse("chat").text(tokenizer, "hi")
