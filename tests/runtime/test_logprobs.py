"""Chunked and packed log-probs give the plain pass's numbers and gradients, on the tiny model and other
architectures."""

import pytest
import torch
import transformers

from rad.models.loading import load_causal_lm
from rad.runtime.batch import TokenBatch
from rad.runtime.logprobs import collate_samples, logit_transform, token_logprobs
from rad.runtime.packing import block_causal_mask, first_fit_decreasing, pack, packed_model_inputs

OPTIONS = [dict(chunk_size=1), dict(chunk_size=7), dict(chunk_size=10_000), dict(packing=True),
           dict(chunk_size=4, packing=True)]


def logprobs_and_grads(model, batch, **options):
    """token_logprobs and the gradient of an advantage-weighted sum of them w.r.t. every parameter."""
    model.zero_grad()
    lp = token_logprobs(model, batch, **options)
    weights = torch.linspace(-1, 1, lp.shape[0])[:, None]
    (weights * lp).sum().backward()
    return lp.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_as_plain(model, batch, **options):
    plain_lp, plain_grads = logprobs_and_grads(model, batch)
    lp, grads = logprobs_and_grads(model, batch, **options)
    torch.testing.assert_close(lp, plain_lp, rtol=1e-5, atol=1e-5)
    assert torch.equal(lp == 0, plain_lp == 0)  # zero exactly off the response
    assert set(grads) == set(plain_grads)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_causal_lm(tiny_model_dir, dtype=torch.float32).train()


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_options_match_the_plain_pass_on_the_tiny_model(tiny, options, make_samples):
    batch = collate_samples(make_samples(tiny.config.vocab_size), pad_id=0)
    assert_same_as_plain(tiny, batch, **options)


def test_no_grad_reads_match_and_response_lists(tiny, make_samples):
    samples = make_samples(tiny.config.vocab_size, n=5, seed=3)
    typed = TokenBatch.from_ids([s["prompt_ids"] for s in samples], [s["response_ids"] for s in samples], pad_id=0)
    batch = typed.model_inputs("cpu")

    def response_lists(lp):
        return [v.tolist() for v in typed.response_values(lp)]

    with torch.no_grad():
        plain = response_lists(token_logprobs(tiny, batch))
        chunked = response_lists(token_logprobs(tiny, batch, chunk_size=3, packing=True))
    assert [len(x) for x in plain] == [len(s["response_ids"]) for s in samples]
    torch.testing.assert_close(torch.tensor(sum(chunked, [])), torch.tensor(sum(plain, [])), rtol=1e-5, atol=1e-5)


def _tiny_config(kind: str):
    common = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=2, max_position_embeddings=64)
    if kind == "gpt2":
        return transformers.GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=2, n_positions=64, resid_pdrop=0.0,
                                       embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=2)
    if kind == "qwen2":
        return transformers.Qwen2Config(**common)
    if kind == "gemma2":
        return transformers.Gemma2Config(**common, head_dim=16, final_logit_softcapping=2.0)
    if kind == "cohere":
        return transformers.CohereConfig(**common, logit_scale=0.5)
    return transformers.GraniteConfig(**common, logits_scaling=4.0)


@pytest.mark.parametrize("kind", ["gpt2", "qwen2", "gemma2", "cohere", "granite"])
def test_options_match_the_plain_pass_on_other_architectures(kind, make_samples):
    """Other backbones and heads; Gemma 2 soft-caps, Cohere and Granite scale their logits."""
    config = _tiny_config(kind)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).train()
    assert (logit_transform(config) is None) == (kind in ("gpt2", "qwen2"))
    batch = collate_samples(make_samples(config.vocab_size, seed=1), pad_id=0)
    assert_same_as_plain(model, batch, chunk_size=5, packing=True)


def test_packing_layout_restarts_positions_and_keeps_attention_inside_samples():
    lengths = [5, 2, 3, 4, 1]
    rows = first_fit_decreasing(lengths, capacity=6)
    assert rows == [[0, 4], [3, 1], [2]]
    attention = torch.tensor([[1] * n + [0] * (6 - n) for n in lengths])
    ids = torch.arange(30).view(5, 6) + 100
    layout = pack(ids, attention)
    assert layout.rows.tolist() == [0, 1, 2, 1, 0] and layout.offsets.tolist() == [0, 4, 0, 0, 5]
    assert layout.input_ids[0].tolist() == [100, 101, 102, 103, 104, 124]
    assert layout.position_ids[1].tolist() == [0, 1, 2, 3, 0, 1]
    mask = block_causal_mask(layout.segment_ids, torch.float32)
    allowed = mask[1, 0] == 0
    assert allowed[5].tolist() == [False, False, False, False, True, True]  # sample 1's 2nd token: itself, its 1st
    assert allowed[3].tolist() == [True, True, True, True, False, False]
    assert allowed[2, 3:].tolist() == [False] * 3  # causal
    pads = mask[2, 0, 3:] == 0  # row 2 has 3 padding columns: each attends only to itself
    assert pads[:, 3:].equal(torch.eye(3, dtype=torch.bool)) and not pads[:, :3].any()
    with pytest.raises(ValueError, match="does not fit a row of 4"):
        first_fit_decreasing(lengths, capacity=4)


def test_packing_refuses_left_padding():
    attention = torch.tensor([[0, 1, 1], [1, 1, 1]])
    with pytest.raises(ValueError, match="right-padded batch"):
        pack(torch.ones(2, 3, dtype=torch.long), attention)


def test_position_ids_mode_matches_the_mask_mode(tiny, make_samples):
    """Without a mask transformers finds the samples from the restarting position ids (the flash-attention way)."""
    batch = collate_samples(make_samples(tiny.config.vocab_size, seed=2), pad_id=0)
    layout = pack(batch["input_ids"], batch["attention_mask"])
    assert layout.input_ids.shape[0] < batch["input_ids"].shape[0]  # something was packed
    with torch.no_grad():
        by_mask = tiny.model(**packed_model_inputs(layout, "mask", torch.float32)).last_hidden_state
        by_positions = tiny.model(**packed_model_inputs(layout, "position_ids", torch.float32)).last_hidden_state
    real = layout.segment_ids >= 0
    torch.testing.assert_close(by_positions[real], by_mask[real], rtol=1e-5, atol=1e-5)


def test_bad_chunk_size_and_headless_models_are_refused(tiny, make_samples):
    batch = collate_samples(make_samples(tiny.config.vocab_size, n=2), pad_id=0)
    with pytest.raises(ValueError, match="chunk_size must be >= 0"):
        token_logprobs(tiny, batch, chunk_size=-1)
    with pytest.raises(ValueError, match="has no output embeddings"):
        token_logprobs(tiny.model, batch, chunk_size=4)


def test_a_batch_without_response_tokens_gives_zeros_that_backpropagate(tiny):
    batch = collate_samples([{"prompt_ids": [5, 6, 7], "response_ids": []}, {"prompt_ids": [8], "response_ids": []}],
                            pad_id=0)
    lp = token_logprobs(tiny, batch, chunk_size=2, packing=True)
    assert lp.shape == (2, 2) and not lp.any()
    lp.sum().backward()  # a step on such a micro batch is a zero gradient, not an error
