"""The per-token value head and the token-coordinate plumbing, on the tiny model (no Ray, no DeepSpeed)."""

import pytest
import torch

from rad.models.loading import load_causal_lm, load_tokenizer
from rad.models.score_model import build_score_model
from rad.runtime.policy_workers import collate_samples, token_logprobs
from safe_rlhf_baseline.batching import gather_responses, pad_lists, place, unpad
from safe_rlhf_baseline.workers import ValueModel, check_same_vocab

SAMPLES = [{"prompt_ids": [1, 5, 6, 7], "response_ids": [8, 9, 2]},
           {"prompt_ids": [1, 5], "response_ids": [10, 11, 12, 13, 2]}]


@pytest.fixture(scope="module")
def score_model(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir, padding_side="right")
    return build_score_model(tiny_model_dir, kind="reward", tokenizer=tok, seed=3).eval()


def test_value_at_the_last_token_is_the_score_model_score(score_model):
    batch = collate_samples(SAMPLES, pad_id=0)
    with torch.no_grad():
        values = ValueModel(score_model)(batch["input_ids"], batch["attention_mask"])
        scores = score_model(batch["input_ids"], batch["attention_mask"])
    last = batch["attention_mask"].sum(-1) - 1
    torch.testing.assert_close(values[torch.arange(2), last], scores)
    # padding after a row does not change its values (causal backbone, mask-derived positions)
    with torch.no_grad():
        alone = ValueModel(score_model)(**{k: v[:1, :7] for k, v in batch.items() if k != "response_mask"})
    torch.testing.assert_close(alone[0], values[0, :7], atol=1e-5, rtol=1e-5)


def test_value_model_shares_the_score_model_parameters(score_model):
    names = {n for n, _ in ValueModel(score_model).named_parameters()}
    assert names == {n for n, _ in score_model.named_parameters()}


def test_place_and_gather_use_the_log_prob_coordinates(tiny_model_dir):
    batch = collate_samples(SAMPLES, pad_id=0)
    width = batch["input_ids"].shape[1] - 1
    per_token = [{**s, "x": [float(i + 1) for i in range(len(s["response_ids"]))]} for s in SAMPLES]
    placed = place(per_token, "x", width)
    assert torch.equal(placed != 0, batch["response_mask"][:, 1:])
    assert gather_responses(placed, per_token) == [s["x"] for s in per_token]
    # token_logprobs is non-zero exactly where place() writes
    model = load_causal_lm(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        lp = token_logprobs(model, batch)
    assert torch.equal(lp != 0, batch["response_mask"][:, 1:])
    assert [len(x) for x in gather_responses(lp, SAMPLES)] == [3, 5]


def test_place_rejects_a_length_mismatch():
    with pytest.raises(ValueError, match="sample 0: x has 2 entries for 3"):
        place([{**SAMPLES[0], "x": [1.0, 2.0]}], "x", 10)


def test_pad_unpad_round_trip():
    lists = [[1.0], [2.0, 3.0, 4.0], [5.0, 6.0]]
    padded, mask = pad_lists(lists)
    assert padded.shape == (3, 3) and mask.sum().item() == 6
    assert unpad(padded, mask) == lists


def test_same_tokenizer_passes(tiny_model_dir, sft_model_dir):
    check_same_vocab(str(sft_model_dir), str(tiny_model_dir))
