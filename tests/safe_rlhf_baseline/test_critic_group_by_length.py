"""A critic with ``learner.group_by_length`` computes the same values and takes the same step (real DeepSpeed, one
rank): its micro batches group samples of similar lengths, in unequal numbers, each loss weighed by its share."""

import dataclasses

import pytest
import torch

from rad.runtime.distributed import free_port
from rad.settings import LearnerConfig
from safe_rlhf_baseline.workers import CriticLearner

BASE = LearnerConfig(micro_batch_size=2, grad_accum=2, lr=1e-2, scheduler="constant", warmup_ratio=0.0)


def critic_step(score_dirs, policy_dir, batch, with_gradients, **options):
    """Values before training, then one train step's metrics and gradients."""
    critic = CriticLearner(score_dirs["reward"], str(policy_dir), dataclasses.replace(BASE, **options), total_steps=1)
    critic.init(0, 1, "127.0.0.1", free_port(), seed=0)
    values = critic.values(batch)
    g = torch.Generator().manual_seed(2)
    mask = batch.token_mask.float()
    targets = batch.with_fields(old_values=values + 0.1 * torch.randn(mask.shape, generator=g) * mask,
                                returns=torch.randn(mask.shape, generator=g) * mask)
    metrics, grads = with_gradients(critic, lambda: critic.train_step(targets, clip_range_value=0.2))
    return values, metrics, grads


def test_critic_grouped_by_length_equals_the_arrival_order_critic(score_dirs, sft_model_dir, make_batch,
                                                                   single_rank_env, with_gradients):
    from rad.models.loading import load_tokenizer

    batch = make_batch(len(load_tokenizer(sft_model_dir)), n=4, seed=8)
    assert sorted(len(mb) for mb in batch.grouped_micro_batches(2)[0]) == [1, 3]  # unequal micro batches
    values, metrics, grads = critic_step(score_dirs, sft_model_dir, batch, with_gradients)
    got_values, got_metrics, got_grads = critic_step(score_dirs, sft_model_dir, batch, with_gradients,
                                                     group_by_length=True)
    assert torch.equal(values != 0, batch.token_mask)
    torch.testing.assert_close(got_values, values, rtol=1e-5, atol=1e-5)
    assert set(got_metrics) == set(metrics)
    for key, value in metrics.items():
        assert got_metrics[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert any(g.abs().max() > 0 for g in grads.values())
    for name, grad in grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
