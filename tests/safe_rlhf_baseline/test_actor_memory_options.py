"""The PPO-Lag actor's update with the learner's memory options and length grouping equals the plain one (real
DeepSpeed, one rank)."""

import dataclasses

import pytest
import torch

from rad.runtime.distributed import free_port
from rad.settings import LearnerConfig
from safe_rlhf_baseline.workers import PPOActor

BASE = LearnerConfig(micro_batch_size=2, grad_accum=2, lr=1e-2, scheduler="constant", warmup_ratio=0.0)


def ppo_samples(actor, batch, seed):
    """The batch with old log-probs near the actor's own and per-token reward / cost advantages."""
    g = torch.Generator().manual_seed(seed)
    mask = batch.token_mask.float()

    def noise():
        return torch.randn(mask.shape, generator=g) * mask

    return batch.with_fields(old_logprobs=actor.logprobs(batch) + 0.3 * noise(), reward_advantages=noise(),
                             cost_advantages=noise())


def update(model_dir, samples, ptx, with_gradients, **options):
    actor = PPOActor(str(model_dir), dataclasses.replace(BASE, **options), total_steps=1)
    actor.init(0, 1, "127.0.0.1", free_port(), seed=0)
    batch = ppo_samples(actor, samples, seed=1)
    return with_gradients(actor, lambda: actor.ppo_step(batch, lam=0.7, clip_range_ratio=0.2, ptx=ptx,
                                                        ptx_coeff=0.5))


@pytest.mark.parametrize("stage", [0, 2])
def test_ppo_step_with_all_options_equals_the_plain_step(tiny_model_dir, make_batch, single_rank_env,
                                                         with_gradients, stage):
    from rad.models.loading import load_tokenizer

    vocab = len(load_tokenizer(tiny_model_dir))
    samples, ptx = make_batch(vocab, n=4, seed=8), make_batch(vocab, n=4, seed=7)
    assert sorted(len(mb) for mb in samples.grouped_micro_batches(2)[0]) == [1, 3]  # unequal micro batches
    plain, plain_grads = update(tiny_model_dir, samples, ptx, with_gradients, zero_stage=stage)
    got, grads = update(tiny_model_dir, samples, ptx, with_gradients, zero_stage=stage, gradient_checkpointing=True,
                        logprob_chunk_size=3, packing=True, group_by_length=True)
    assert plain["clip_fraction"] > 0 and plain["ptx_loss"] > 0  # the clip and the PTX term are in play
    assert set(got) == set(plain)
    for key, value in plain.items():
        assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    for name, grad in plain_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
