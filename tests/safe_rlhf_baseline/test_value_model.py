"""The per-token value head and the token-coordinate plumbing, on the tiny model (no Ray, no DeepSpeed)."""

import pytest
import torch

from rad.models.loading import load_tokenizer
from rad.models.score_model import build_score_model
from rad.runtime.policy_workers import collate_samples
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


def test_same_tokenizer_passes(tiny_model_dir, sft_model_dir):
    check_same_vocab(str(sft_model_dir), str(tiny_model_dir))
