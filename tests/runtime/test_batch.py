"""The typed batch every role takes: shapes, shards, micro batches and the two per-token layouts."""

import itertools

import pytest
import torch

from rad.models.loading import load_causal_lm
from rad.runtime.batch import TokenBatch, length_grouped_partition
from rad.runtime.logprobs import token_logprobs

PROMPTS = [[1, 5, 6, 7], [1, 5], [3]]
RESPONSES = [[8, 9, 2], [10, 11, 12, 13, 2], [4]]


@pytest.fixture
def batch():
    return TokenBatch.from_ids(PROMPTS, RESPONSES, pad_id=0)


def test_from_ids_right_pads_and_marks_the_responses(batch):
    assert batch.input_ids.shape == (3, 7) and len(batch) == 3
    assert batch.input_ids[1].tolist() == [1, 5, 10, 11, 12, 13, 2] and batch.input_ids[2].tolist() == [3, 4] + [0] * 5
    assert batch.response_mask[0].tolist() == [False] * 4 + [True] * 3
    assert batch.prompt_lengths.tolist() == [4, 2, 1] and batch.response_lengths.tolist() == [3, 5, 1]
    assert batch.token_mask.shape == (3, 6)  # log-prob coordinates: position t scores token t + 1
    with pytest.raises(ValueError, match="2 prompts and 1 responses"):
        TokenBatch.from_ids(PROMPTS[:2], RESPONSES[:1], 0)


def test_fields_are_checked_and_follow_shards_and_micro_batches(batch):
    per_token = torch.arange(18, dtype=torch.float32).view(3, 6)
    full = batch.with_fields(advantages=torch.tensor([1.0, 2.0, 3.0]), old_logprobs=per_token)
    with pytest.raises(ValueError, match="field 'x': shape \\(2,\\)"):
        batch.with_fields(x=torch.zeros(2))
    shards = full.split(2)
    assert [len(s) for s in shards] == [2, 1] and all(s.width == 7 for s in shards)  # full width: outputs concat
    assert shards[1].sample_fields["advantages"].tolist() == [3.0]
    assert len(full.split(5)) == 3  # empty shards are left out
    micro = full.micro_batches(2)
    assert [mb.width for mb in micro] == [7, 2]  # trimmed to each chunk's longest sequence
    assert micro[1].token_fields["old_logprobs"].tolist() == [[12.0]]
    assert torch.equal(full.pad_tokens(torch.ones(1, 1)), torch.tensor([[1.0] + [0.0] * 5]))  # back to full width


def test_response_aligned_round_trip_and_the_log_prob_positions(batch, tiny_model_dir):
    values = torch.zeros(3, 6)
    for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES)):
        values[i, len(p) - 1: len(p) - 1 + len(r)] = torch.arange(1, len(r) + 1, dtype=torch.float32)
    aligned, mask = batch.response_aligned(values)
    assert aligned.shape == (3, 5) and mask.sum(-1).tolist() == [3, 5, 1]
    assert aligned[0].tolist() == [1.0, 2.0, 3.0, 0.0, 0.0]
    assert torch.equal(batch.from_response_aligned(aligned), values)
    assert [v.tolist() for v in batch.response_values(values)] == [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0, 5.0], [1.0]]
    # the model's log-probs are non-zero exactly at the batch's response positions
    model = load_causal_lm(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        lp = token_logprobs(model, batch.model_inputs("cpu"))
    assert torch.equal(lp != 0, batch.token_mask)


SKEWED = [[3] * 40, [3] * 2, [3] * 38, [3] * 3, [3] * 1, [3] * 36, [3] * 2, [3] * 4]  # long and short interleaved


def padded_tokens(micro):
    return sum(mb.input_ids.numel() for mb in micro)


def test_length_grouping_takes_every_sample_once_in_as_many_micro_batches_with_less_padding():
    batch = TokenBatch.from_ids([[1, 5]] * len(SKEWED), SKEWED, pad_id=0)
    arrival = batch.micro_batches(2)
    grouped, order = batch.grouped_micro_batches(2)
    assert len(grouped) == len(arrival) == 4
    assert sorted(order.tolist()) == list(range(8)) and sum(len(mb) for mb in grouped) == 8
    # lengths 42 | 40 38 | 6 5 | 4 4 3 (146 padded tokens) instead of a long and a short sample in three (252)
    assert padded_tokens(grouped) < 0.6 * padded_tokens(arrival)
    budget = 2 * batch.width  # none padded beyond micro_batch_size samples at the longest
    assert max(mb.input_ids.numel() for mb in grouped) <= budget
    assert length_grouped_partition(batch.attention_mask.sum(-1).tolist(), 2) == \
        length_grouped_partition(batch.attention_mask.sum(-1).tolist(), 2)  # deterministic
    with pytest.raises(ValueError, match="0 samples in micro batches of 2"):
        length_grouped_partition([], 2)


@pytest.mark.parametrize("lengths,size", [([9, 2, 8, 3, 3, 7, 1], 3), ([5, 5, 5, 5, 1], 2), ([4, 1, 1, 1, 1, 1], 4)])
def test_length_grouping_is_the_least_padding_within_the_budget(lengths, size):
    """Against every assignment of the samples to as many non-empty micro batches (exhaustive)."""
    parts = length_grouped_partition(lengths, size)
    n, budget = -(-len(lengths) // size), size * max(lengths)

    def cost(bins):
        return [len(b) * max(lengths[i] for i in b) for b in bins]

    assert len(parts) == n and all(parts) and sorted(i for p in parts for i in p) == list(range(len(lengths)))
    best = min(sum(cost(bins)) for labels in itertools.product(range(n), repeat=len(lengths))
               if all(bins := [[i for i, k in enumerate(labels) if k == j] for j in range(n)])
               and max(cost(bins)) <= budget)
    assert max(cost(parts)) <= budget and sum(cost(parts)) == best


def test_grouped_micro_batches_carry_their_fields_and_outputs_come_back_in_row_order(tiny_model_dir, make_batch):
    model = load_causal_lm(tiny_model_dir, dtype=torch.float32)
    batch = make_batch(model.config.vocab_size, n=7, seed=3)
    batch = batch.with_fields(row=torch.arange(7, dtype=torch.float64))
    grouped, order = batch.grouped_micro_batches(3)
    assert order.tolist() != list(range(7))  # grouping reorders these samples
    assert torch.equal(torch.cat([mb.sample_fields["row"] for mb in grouped]).long(), order)
    with torch.no_grad():
        plain = batch.in_order([token_logprobs(model, mb.model_inputs("cpu")) for mb in batch.micro_batches(3)])
        got = batch.in_order([token_logprobs(model, mb.model_inputs("cpu")) for mb in grouped], order)
    assert got.shape == (7, batch.width - 1) and torch.equal(got != 0, batch.token_mask)
    torch.testing.assert_close(got, plain, rtol=1e-5, atol=1e-5)
    assert batch.cut_micro_batches(3, group_by_length=False)[1] is None
