"""HF ``generate`` rollout engine: sampling, EOS handling, log-probs, weight updates, Ray actors."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch

from rad.data.encode import encode_prompt
from rad.errors import ConfigError
from rad.runtime.rollout.base import SamplingConfig, cut_at_eos
from rad.runtime.rollout.hf_engine import HFEngine

PROMPTS = [
    "how do i write a file parser in python?",
    "please explain how to write a chat bot in python step by step.",
    "give me step by step instructions to hide cuts from my parents.",
    "what is a good recipe for soup?",
    "hi",
]
GREEDY = SamplingConfig(temperature=0.0, max_new_tokens=32)


@pytest.fixture(scope="module")
def engine(sft_model_dir):
    return HFEngine(sft_model_dir, micro_batch_size=8)


def test_rollouts_are_prompt_major_with_template_ids(engine):
    out = engine.generate(PROMPTS[:3], n=2, sampling=SamplingConfig(max_new_tokens=8))
    assert [(r.prompt_index, r.sample_index) for r in out] == [(i, j) for i in range(3) for j in range(2)]
    for r in out:
        assert r.prompt == PROMPTS[r.prompt_index]
        assert r.prompt_token_ids == encode_prompt(engine.tokenizer, r.prompt)
        assert r.response_text == engine.tokenizer.decode(r.response_token_ids, skip_special_tokens=True)
        assert len(r.logprobs) == len(r.response_token_ids) <= 8


def test_seeded_sampling_is_reproducible(engine):
    cfg = SamplingConfig(temperature=1.0, max_new_tokens=16, seed=7)
    before = torch.random.get_rng_state()
    a = engine.generate(PROMPTS, n=3, sampling=cfg)
    assert torch.equal(torch.random.get_rng_state(), before), "generate must not consume the caller's RNG"
    b = engine.generate(PROMPTS, n=3, sampling=cfg)
    c = engine.generate(PROMPTS, n=3, sampling=replace(cfg, seed=8))
    ids = lambda rs: [r.response_token_ids for r in rs]  # noqa: E731
    assert ids(a) == ids(b)
    assert ids(a) != ids(c)
    # the n samples of one prompt are different draws
    assert len({tuple(r.response_token_ids) for r in a if r.prompt_index == 0}) > 1


def test_batched_greedy_equals_unbatched(engine):
    batched = engine.generate(PROMPTS, n=2, sampling=GREEDY)
    for i, prompt in enumerate(PROMPTS):
        alone = engine.generate([prompt], n=1, sampling=GREEDY)[0]
        for r in batched[2 * i: 2 * i + 2]:
            assert r.response_token_ids == alone.response_token_ids
            assert r.logprobs == pytest.approx(alone.logprobs, abs=1e-4)
    # direct generate on the unpadded prompt, independent of the engine's batching
    ids = torch.tensor([encode_prompt(engine.tokenizer, PROMPTS[1])])
    ref = engine.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                max_new_tokens=GREEDY.max_new_tokens, pad_token_id=engine.tokenizer.pad_token_id,
                                eos_token_id=engine.tokenizer.eos_token_id)[0, ids.shape[1]:].tolist()
    assert batched[2].response_token_ids == cut_at_eos(ref, engine.tokenizer.eos_token_id, True)[0]


def test_static_kv_cache_gives_the_same_samples(engine):
    """rollout.hf_kv_cache=static: generate preallocates its cache; the samples and their log-probs are the
    dynamic cache's (seeded sampling and greedy, left-padded prompts of different lengths)."""
    from rad.runtime.rollout.actors import engine_kwargs
    from rad.runtime.rollout.config import RolloutConfig

    kwargs, _ = engine_kwargs(RolloutConfig(engine="hf", hf_kv_cache="static"), "hf", "cpu", None, 0)
    static = HFEngine.around(engine.model, engine.tokenizer, micro_batch_size=8, kv_cache=kwargs["kv_cache"])
    assert static._generate_kwargs(GREEDY)[0]["cache_implementation"] == "static"
    assert "cache_implementation" not in engine._generate_kwargs(GREEDY)[0]
    for cfg in (SamplingConfig(temperature=1.0, max_new_tokens=24, seed=3), GREEDY):
        a, b = engine.generate(PROMPTS, n=2, sampling=cfg), static.generate(PROMPTS, n=2, sampling=cfg)
        assert [r.response_token_ids for r in a] == [r.response_token_ids for r in b]
        for x, y in zip(a, b):
            assert y.logprobs == pytest.approx(x.logprobs, abs=1e-4)
    with pytest.raises(ConfigError, match="rollout.hf_kv_cache"):
        HFEngine.around(engine.model, engine.tokenizer, kv_cache="paged")


def _check_eos(rollouts, eos: int, pad: int, max_new: int):
    stopped = [r for r in rollouts if r.finish_reason == "stop"]
    assert stopped, "the SFT model should end some greedy answers with EOS"
    for r in rollouts:
        ids = r.response_token_ids
        assert 1 <= len(ids) <= max_new
        assert eos not in ids[:-1]
        if r.finish_reason == "stop":
            assert ids[-1] == eos
        else:
            assert len(ids) == max_new and ids[-1] != eos
        if pad != eos:
            assert pad not in ids


def test_eos_ends_responses_and_is_kept(engine):
    tok = engine.tokenizer
    out = engine.generate(PROMPTS, n=1, sampling=GREEDY)
    _check_eos(out, tok.eos_token_id, tok.pad_token_id, GREEDY.max_new_tokens)
    assert all(tok.eos_token not in r.response_text for r in out)


def test_without_stop_on_eos_every_response_is_full_length(engine):
    cfg = replace(GREEDY, stop_on_eos=False, max_new_tokens=24)
    out = engine.generate(PROMPTS, n=1, sampling=cfg)
    assert all(len(r.response_token_ids) == 24 and r.finish_reason == "length" for r in out)
    # greedy answers that stopped before now run through their EOS
    stopped = engine.generate(PROMPTS, n=1, sampling=replace(cfg, stop_on_eos=True))
    eos = engine.tokenizer.eos_token_id
    for full, short in zip(out, stopped):
        assert full.response_token_ids[: len(short.response_token_ids)] == short.response_token_ids
    assert any(eos in r.response_token_ids for r in out)


def test_pad_equal_to_eos(engine, sft_model_dir, tmp_path):
    """A tokenizer whose pad is its eos (as for most real LLMs) gives the same rollouts."""
    copy = tmp_path / "pad-is-eos"
    shutil.copytree(sft_model_dir, copy)
    cfg_path = copy / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["pad_token"] = cfg["eos_token"]
    cfg_path.write_text(json.dumps(cfg))
    other = HFEngine(copy, micro_batch_size=4)
    assert other.tokenizer.pad_token_id == other.tokenizer.eos_token_id
    a = other.generate(PROMPTS, n=2, sampling=GREEDY)
    b = engine.generate(PROMPTS, n=2, sampling=GREEDY)
    assert [r.response_token_ids for r in a] == [r.response_token_ids for r in b]
    assert [r.finish_reason for r in a] == [r.finish_reason for r in b]
    _check_eos(a, other.tokenizer.eos_token_id, other.tokenizer.pad_token_id, GREEDY.max_new_tokens)


def expected_logprobs(model, rollout, cfg: SamplingConfig) -> list[float]:
    """Log-probs of ``rollout``'s tokens under temperature / top-k / top-p, from a forward pass (float64)."""
    ids = torch.tensor([rollout.prompt_token_ids + rollout.response_token_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(rollout.prompt_token_ids) - 1: -1].double()
    if cfg.temperature > 0:
        logits = logits / cfg.temperature
    if cfg.top_k:
        kth = logits.topk(cfg.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1:
        probs = logits.softmax(-1)
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the token crossing it included)
        drop_sorted = (sorted_p.cumsum(-1) - sorted_p) >= cfg.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits.log_softmax(-1).gather(-1, ids[0, len(rollout.prompt_token_ids):, None]).squeeze(-1).tolist()


SAMPLERS = [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8), (0.0, 0, 1.0)]


@pytest.mark.parametrize("temperature,top_k,top_p", SAMPLERS)
def test_sampler_logprobs_match_a_forward_pass(engine, temperature, top_k, top_p):
    cfg = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=12, seed=3)
    for r in engine.generate(PROMPTS[:3], n=2, sampling=cfg):
        assert r.logprobs == pytest.approx(expected_logprobs(engine.model, r, cfg), abs=2e-4)
        if temperature == 1.0 and not top_k and top_p == 1:
            teacher = engine.token_logprobs([r.prompt_token_ids + r.response_token_ids])[0]
            assert r.logprobs == pytest.approx(teacher[len(r.prompt_token_ids) - 1:], abs=2e-4)


def test_picked_tokens_follow_the_processed_distribution():
    """The engine's own sampler (inverse CDF): frequencies of the softmax, masked tokens never, log-probs kept."""
    from rad.runtime.rollout.hf_engine import _PickToken

    n = 20000
    scores = torch.tensor([[0.0, 1.0, float("-inf"), 2.0, -1.0]]).repeat(n, 1)
    expected = scores[0].double().softmax(-1)
    torch.manual_seed(0)
    picker = _PickToken(sample=True)
    out = picker(None, scores)
    assert out.isfinite().sum(-1).eq(1).all(), "generate must be left exactly one token per row"
    tokens = out.argmax(-1)
    freq = torch.bincount(tokens, minlength=5).double() / n
    assert freq[2] == 0
    assert torch.allclose(freq, expected, atol=0.012)  # binomial std <= 0.0036 at n = 20000
    assert torch.allclose(picker.logprobs()[:, 0].double(), expected.log()[tokens], atol=1e-6)
    greedy = _PickToken(sample=False)
    assert greedy(None, scores[:2]).argmax(-1).tolist() == [3, 3]
    assert greedy.logprobs()[:, 0].tolist() == pytest.approx([float(expected[3].log())] * 2)


def test_update_weights_rejects_bad_state_dicts(engine):
    sd = engine.get_weights()
    with pytest.raises(ConfigError, match="not a parameter of the model"):
        engine.update_weights({**sd, "model.extra.weight": torch.zeros(1)})
    with pytest.raises(ConfigError, match="lacks parameters"):
        engine.update_weights({k: v for k, v in sd.items() if "layers.1." not in k})
    name = "model.norm.weight"
    with pytest.raises(ConfigError, match="shape"):
        engine.update_weights({**sd, name: torch.zeros(3)})
    with pytest.raises(ConfigError, match="list of prompts"):
        engine.generate("a single string")
    with pytest.raises(ConfigError, match="positive integer"):
        engine.generate(PROMPTS, n=0)


def test_packed_bytes_round_trip_any_dtype():
    from rad.runtime.rollout.vllm_worker_ext import pack_tensor, unpack_tensor

    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.int64):
        t = (torch.randn(3, 5, generator=g) * 100).to(dtype)
        name, back = unpack_tensor(pack_tensor("w", t[:, 1:4]))  # a non-contiguous view
        assert name == "w" and back.dtype == dtype and torch.equal(back, t[:, 1:4])
    assert unpack_tensor(pack_tensor("e", torch.empty(0, 4)))[1].shape == (0, 4)


def perturbed(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {k: v + 0.3 * v.std() * torch.randn(v.shape, generator=g) if v.dim() > 1 else v.clone()
           for k, v in state.items() if k != "lm_head.weight"}
    return out  # tied lm_head travels as the embedding


def test_pool_generates_like_one_engine_and_loads_saved_weights(ray_cluster, sft_model_dir, engine, tmp_path):
    """The rollout pool (a worker group of engine actors) splits prompts and loads a saved model from disk itself
    (how a run's selected policy reaches the engines; learner -> engine syncs are in test_weight_sync.py)."""
    from rad.models.loading import load_causal_lm
    from rad.runtime.rollout.actors import make_rollout_pool
    from rad.runtime.rollout.config import RolloutConfig

    ray = ray_cluster
    pool = make_rollout_pool(RolloutConfig(num_engines=2, micro_batch_size=4), sft_model_dir)
    assert pool.kind == "hf" and pool.device == "cpu" and len(pool.actors) == 2  # engine: auto on CPU
    try:
        before = pool.generate(PROMPTS, n=2, sampling=GREEDY)
        assert [(r.prompt_index, r.sample_index) for r in before] == [(i, j) for i in range(5) for j in range(2)]
        local = engine.generate(PROMPTS, n=2, sampling=GREEDY)
        assert [r.response_token_ids for r in before] == [r.response_token_ids for r in local]

        new = perturbed(engine.get_weights(), seed=0)
        model = load_causal_lm(sft_model_dir)
        model.load_state_dict(new, strict=False)
        model.save_pretrained(tmp_path / "saved", safe_serialization=True)
        pool.load_weights_from(str(tmp_path / "saved"))
        for weights in ray.get([a.get_weights.remote() for a in pool.actors]):
            for name, tensor in new.items():
                assert torch.equal(weights[name], tensor), name
            assert torch.equal(weights["lm_head.weight"], new["model.embed_tokens.weight"])

        after = pool.generate(PROMPTS, n=2, sampling=GREEDY)
        assert [r.response_token_ids for r in after] != [r.response_token_ids for r in before]
        reference = HFEngine(sft_model_dir, micro_batch_size=4)
        reference.update_weights(new)
        assert [r.response_token_ids for r in after] == \
            [r.response_token_ids for r in reference.generate(PROMPTS, n=2, sampling=GREEDY)]
    finally:
        pool.shutdown()
