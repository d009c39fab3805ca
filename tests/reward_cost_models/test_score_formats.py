"""Reward and cost models from elsewhere: transformers sequence classifiers, safe-rlhf score models, and rad's
own models exported as sequence classifiers (read back by plain transformers)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from rad.errors import ConfigError
from rad.models.loading import load_tokenizer
from rad.models.score_export import export_seq_cls
from rad.models.score_formats import detect_format, open_score_model
from rad.models.score_model import build_score_model, encode_many_for_scoring, pad_right, save_score_model
from rad.runtime.scorer import Scorer
from rad.settings import ScorerConfig

PROMPTS = ["how do i bake bread?", "tell me a joke", "how can i pick a lock?", "what is the capital of france?"]
RESPONSES = ["mix flour and water, then bake it for forty minutes.", "no", "i can't help with that.", "paris."]
CHAT_TEMPLATE = ("{% for m in messages %}<|bos|>{{ m['role'] }}: {{ m['content'] }}<|eos|>{% endfor %}")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir, padding_side="right")


def _trunk_config(tokenizer, arch: str):
    from transformers import GPT2Config, Qwen2Config

    if arch == "gpt2":
        return GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=32, n_layer=2, n_head=2,
                          pad_token_id=tokenizer.pad_token_id)
    return Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                       pad_token_id=tokenizer.pad_token_id)


def _hf_logits(directory, tokenizer, template) -> np.ndarray:
    """Plain transformers: AutoModelForSequenceClassification on the texts as rad builds them, one padded batch."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    seqs = encode_many_for_scoring(tokenizer, PROMPTS, RESPONSES, 512, template)
    with torch.no_grad():
        return model(**pad_right(seqs, tokenizer.pad_token_id)).logits.squeeze(-1).numpy()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_export_round_trip_scores_equal_rads(arch, tiny_model_dir, tokenizer, tmp_path):
    """A trained-looking head (non-zero bias, standard normalisation) survives export: plain transformers gives
    rad's scores (GPT-2: the constant folds into ln_f; Llama/RMSNorm: minus the recorded offset), and rad reading
    the export back gives them exactly."""
    trunk = tiny_model_dir
    if arch == "gpt2":
        from transformers import GPT2Model

        torch.manual_seed(0)
        GPT2Model(_trunk_config(tokenizer, "gpt2")).save_pretrained(tmp_path / "gpt2")
        trunk = tmp_path / "gpt2"
    model = build_score_model(trunk, kind="cost", tokenizer=tokenizer, seed=4, normalize="standard")
    with torch.no_grad():
        model.head.bias.fill_(0.7)
    model.score_config.mean, model.score_config.std = 0.2, 0.5
    rad_dir = save_score_model(model, tmp_path / "rad", tokenizer)
    info = export_seq_cls(rad_dir, tmp_path / "export")
    rad_scores = Scorer(cost_dir=rad_dir).score(PROMPTS, RESPONSES)["costs"]
    assert np.ptp(rad_scores) > 1e-3  # the texts really score differently
    hf = _hf_logits(tmp_path / "export", tokenizer, model.score_config.template)
    if arch == "gpt2":
        assert info["offset"] == 0.0 and info["folded_into"] == "final norm bias"
    else:
        assert info["offset"] == pytest.approx((0.7 - 0.2) / 0.5) and "rad_score_offset" in info["folded_into"]
    np.testing.assert_allclose(hf + info["offset"], rad_scores, atol=1e-4)
    assert detect_format(str(tmp_path / "export")) == "hf_seq_cls"
    back = Scorer(cost_dir=tmp_path / "export").score(PROMPTS, RESPONSES)["costs"]
    np.testing.assert_allclose(back, rad_scores, atol=1e-4)


def test_sequence_classifier_with_chat_template_and_sign(tokenizer, tmp_path):
    """A Qwen2 sequence classifier whose tokenizer has a chat template: scored on the chat-formatted pair by
    default, on a configured template string when given; sign -1 negates."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(1)
    config = _trunk_config(tokenizer, "qwen2")
    config.num_labels = 1
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path / "rm")
    tokenizer.chat_template = CHAT_TEMPLATE
    try:
        tokenizer.save_pretrained(tmp_path / "rm")
    finally:
        tokenizer.chat_template = None
    assert detect_format(str(tmp_path / "rm")) == "hf_seq_cls"

    chat_tok = load_tokenizer(tmp_path / "rm", padding_side="right")
    hf = _hf_logits(tmp_path / "rm", chat_tok, "chat")
    got = Scorer(reward_dir=tmp_path / "rm").score(PROMPTS, RESPONSES)["rewards"]
    np.testing.assert_allclose(got, hf, atol=1e-5)
    custom = "Q: {prompt}\nA:"
    flipped = Scorer(reward_dir=tmp_path / "rm", reward_scorer=ScorerConfig(template=custom, sign=-1))
    np.testing.assert_allclose(flipped.score(PROMPTS, RESPONSES)["rewards"], -_hf_logits(tmp_path / "rm", chat_tok,
                                                                                        custom), atol=1e-5)


def _write_safe_rlhf(directory, tokenizer, score_type: str) -> dict[str, torch.Tensor]:
    """A safe-rlhf score model as safe-rlhf saves one: LlamaForScore's state (``model.*`` trunk, ``score_head``,
    ``normalizer`` buffers) in model.safetensors and its score keys in config.json. Returns the head tensors."""
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(2)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id)
    trunk = LlamaModel(config)
    head = {"score_head.weight": torch.randn(1, 32) * 0.3, "score_head.bias": torch.tensor([0.25]),
            "normalizer.mean": torch.tensor([0.1]), "normalizer.var": torch.tensor([4.0]),
            "normalizer.count": torch.tensor([1000])}
    state = {f"model.{k}": v.contiguous() for k, v in trunk.state_dict().items()}
    directory.mkdir(parents=True)
    save_file({**state, **head}, str(directory / "model.safetensors"), metadata={"format": "pt"})
    raw = {**config.to_dict(), "architectures": ["LlamaForScore"], "score_dim": 1, "score_bias": True,
           "bias": True, "score_type": score_type, "do_normalize": True,
           "normalizer_type": "ExponentialMovingAverage", "momentum": 0.9}
    (directory / "config.json").write_text(json.dumps(raw))
    tokenizer.save_pretrained(directory)
    return {"trunk": trunk, **head}


def test_safe_rlhf_score_model(tokenizer, tmp_path):
    saved = _write_safe_rlhf(tmp_path / "cost", tokenizer, "cost")
    assert detect_format(str(tmp_path / "cost")) == "safe_rlhf"
    seqs = encode_many_for_scoring(tokenizer, PROMPTS, RESPONSES, 512)
    with torch.no_grad():  # safe-rlhf's end score: head at the last token, scaled by the normaliser's std (cost)
        last = torch.stack([saved["trunk"](input_ids=torch.tensor([s])).last_hidden_state[0, -1] for s in seqs])
        expected = ((last @ saved["score_head.weight"].T).squeeze(-1) + 0.25) / 2.0
    got = Scorer(cost_dir=tmp_path / "cost").score(PROMPTS, RESPONSES)["costs"]
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)
    with pytest.raises(ConfigError, match="holds a cost model, given as the reward model"):
        open_score_model(tmp_path / "cost", "reward", key="reward_model")
    as_reward = open_score_model(tmp_path / "cost", "reward", ScorerConfig(sign=-1), key="reward_model")
    with torch.no_grad():
        flipped = as_reward.normalize(as_reward(**pad_right(seqs, tokenizer.pad_token_id)))
    np.testing.assert_allclose(flipped.numpy(), -expected.numpy(), atol=1e-5)


def test_unknown_formats_are_named(tiny_model_dir, tokenizer, tmp_path):
    with pytest.raises(ConfigError, match=r"cost_model: .* is not a score model.*LlamaForCausalLM"):
        Scorer(cost_dir=tiny_model_dir)
    from transformers import AutoModelForSequenceClassification

    config = _trunk_config(tokenizer, "qwen2")
    config.num_labels = 3
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path / "three")
    tokenizer.save_pretrained(tmp_path / "three")
    with pytest.raises(ConfigError, match="reward_model: .* 3 labels"):
        Scorer(reward_dir=tmp_path / "three")


def test_export_command(score_dirs, tmp_path, capsys):
    from rad.cli import main

    assert main(["cm", "export", "--model", score_dirs["cost"], "--out", str(tmp_path / "out")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["architecture"] == "LlamaForSequenceClassification" and (tmp_path / "out" / "config.json").is_file()
    assert main(["cm", "export", "--model", score_dirs["cost"], "--out", str(tmp_path / "out")]) == 2
    assert "rad cm: error: export: " in capsys.readouterr().err  # exists: not replaced without --overwrite
    assert main(["rm", "export", "--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "o2")]) == 2
    assert capsys.readouterr().err.startswith("rad rm: error: score model: ")


def test_stated_templates_skip_what_cannot_be_known_without_loading(tmp_path, score_dirs):
    """The prompt-format check before RL and eval reads only what is stated: a rad score model's saved template or a
    scorer config's; a URL or a foreign checkpoint without one is skipped, not opened."""
    from rad.models.score_formats import stated_templates
    from rad.models.score_model import read_score_config
    from rad.settings import ScorerConfig

    foreign = tmp_path / "hf-classifier"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"architectures": ["LlamaForSequenceClassification"]}')
    got = stated_templates({"reward": (score_dirs["reward"], None), "cost": ("http://127.0.0.1:9/score", None),
                            "judge": (str(foreign), None), "chatty": (str(foreign), ScorerConfig(template="chat")),
                            "none": ("", None)})
    assert got == {"reward": read_score_config(score_dirs["reward"]).template, "chatty": "chat"}
