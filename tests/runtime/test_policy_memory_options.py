"""The learner's memory options on a real single-rank DeepSpeed engine: same log-probs, losses, gradients and weights.

``learner.gradient_checkpointing``, ``learner.logprob_chunk_size`` and
``learner.packing`` change only what is kept in memory, ``learner.group_by_length`` only
which samples share a micro batch (and so the padding); two optimizer steps of
:class:`PolicyLearner` (gradient accumulation 2, so the engine's 1/2 scaling is in
play) must agree with the plain learner's to float tolerance, at ZeRO 0, 2 and 3.
"""

import dataclasses
import math

import pytest
import torch

from rad.errors import ConfigError
from rad.runtime.distributed import free_port
from rad.runtime.learner import enable_gradient_checkpointing
from rad.runtime.policy_workers import PolicyLearner, ReferenceWorker
from rad.settings import LearnerConfig

BASE = LearnerConfig(micro_batch_size=3, grad_accum=2, lr=1e-2, scheduler="constant", warmup_ratio=0.0)
ALL = dict(gradient_checkpointing=True, logprob_chunk_size=4, packing=True, group_by_length=True)


def run(model_dir, samples, with_gradients, **options):
    """Log-probs before training, the gradients of the first train step, and the metrics of two train steps."""
    cfg = dataclasses.replace(BASE, **options)
    rank = PolicyLearner(str(model_dir), cfg, total_steps=2)
    rank.init(0, 1, "127.0.0.1", free_port(), seed=0)
    assert rank.learner.module.is_gradient_checkpointing == cfg.gradient_checkpointing
    logprobs = rank.logprobs(samples)
    first, grads = with_gradients(rank, lambda: rank.train_step(samples))
    return logprobs, grads, [first, rank.train_step(samples)]


@pytest.fixture(scope="module")
def samples(tiny_model_dir, make_batch):
    from rad.models.loading import load_tokenizer

    return make_batch(len(load_tokenizer(tiny_model_dir)), n=6, seed=5)  # groups into 2 + 4 samples


@pytest.fixture(scope="module")
def plain(tiny_model_dir, samples, with_gradients):
    with pytest.MonkeyPatch.context() as mp:  # as single_rank_env, for the module
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            mp.setenv(key, "0")
        return {stage: run(tiny_model_dir, samples, with_gradients, zero_stage=stage) for stage in (0, 2, 3)}


@pytest.mark.parametrize("stage,options", [
    (0, dict(gradient_checkpointing=True)), (0, dict(logprob_chunk_size=4)), (0, dict(packing=True)),
    (0, dict(group_by_length=True)), (0, ALL), (2, ALL), (3, ALL)],
    ids=lambda x: str(x) if isinstance(x, int) else ",".join(x))
def test_options_train_like_the_plain_learner(tiny_model_dir, samples, plain, single_rank_env, with_gradients, stage,
                                              options):
    logprobs, grads, metrics = run(tiny_model_dir, samples, with_gradients, zero_stage=stage, **options)
    plain_logprobs, plain_grads, plain_metrics = plain[stage]
    torch.testing.assert_close(logprobs, plain_logprobs, rtol=1e-5, atol=1e-5)
    assert set(grads) == set(plain_grads)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    # the step metrics: the second step's loss and log-prob are of the weights after the first
    assert plain_metrics[1]["loss"] != plain_metrics[0]["loss"]
    for got, want in zip(metrics, plain_metrics):
        assert set(got) == set(want)
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_the_samples_group_into_micro_batches_of_unequal_sizes(samples):
    """So group_by_length's cases above reorder the samples and weigh unequal micro batches."""
    grouped, order = samples.grouped_micro_batches(BASE.micro_batch_size)
    assert len(grouped) == BASE.grad_accum and order.tolist() != list(range(len(samples)))
    assert sorted(len(mb) for mb in grouped) != [BASE.micro_batch_size] * BASE.grad_accum


def test_plain_gradients_are_the_same_at_every_zero_stage(plain):
    """The gradient probe reads real gradients at each stage (not zeros), the same ones."""
    grads = plain[0][1]
    assert all(g.abs().max() > 0 for g in grads.values())
    for stage in (2, 3):
        for name, grad in grads.items():
            torch.testing.assert_close(plain[stage][1][name], grad, rtol=1e-4, atol=1e-6, msg=(stage, name))


def test_reference_worker_chunked_matches_plain(sft_model_dir, make_batch):
    plain_ref = ReferenceWorker(str(sft_model_dir), micro_batch_size=4)
    chunked_ref = ReferenceWorker(str(sft_model_dir), micro_batch_size=2, logprob_chunk_size=3)
    grouped_ref = ReferenceWorker(str(sft_model_dir), micro_batch_size=2, group_by_length=True)
    batch = make_batch(len(plain_ref.tokenizer), n=5, seed=5)
    assert batch.grouped_micro_batches(2)[1].tolist() != list(range(5))
    want = plain_ref.logprobs(batch)
    for got in (chunked_ref.logprobs(batch), grouped_ref.logprobs(batch)):
        assert got.shape == (5, batch.width - 1) and torch.equal(want != 0, batch.token_mask)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_gradient_checkpointing_reaches_a_wrapped_backbone_and_refuses_a_plain_module(tiny_model_dir):
    from rad.models.loading import load_tokenizer
    from rad.models.score_model import build_score_model

    tok = load_tokenizer(tiny_model_dir, padding_side="right")
    score_model = build_score_model(tiny_model_dir, kind="reward", tokenizer=tok, seed=3)
    (enabled,) = enable_gradient_checkpointing(score_model)
    assert enabled is score_model.backbone and enabled.is_gradient_checkpointing
    with pytest.raises(ConfigError, match="learner.gradient_checkpointing: Linear holds no transformers model"):
        enable_gradient_checkpointing(torch.nn.Linear(2, 2))


def test_importance_weights_scale_the_gradient_and_are_truncated(tiny_model_dir, samples, plain, single_rank_env,
                                                                 with_gradients):
    """With ``behaviour_logp`` (mu) in the batch, each sample's term is weighted by min(pi / mu, cap), pi from
    the rank's own forward pass: mu = 2 pi halves the plain gradient; mu = pi / 4 under cap 2 doubles it, every
    weight counted as capped. Without a cap the rank refuses the batch."""
    cfg = dataclasses.replace(BASE, zero_stage=0)
    plain_grads = plain[0][1]
    for shift, cap, factor, capped in ((math.log(2.0), 3.0, 0.5, 0), (-math.log(4.0), 2.0, 2.0, len(samples))):
        rank = PolicyLearner(str(tiny_model_dir), cfg, total_steps=2)
        rank.init(0, 1, "127.0.0.1", free_port(), seed=0)
        pi = rank.logprobs(samples).sum(-1).double()  # the same weights as the plain run's first step
        off_policy = samples.with_fields(behaviour_logp=pi + shift)
        if cap == 3.0:
            with pytest.raises(ValueError, match="behaviour_logp, so is_cap must be a number > 0"):
                rank.train_step(off_policy)
        metrics, grads = with_gradients(rank, lambda: rank.train_step(off_policy, is_cap=cap))
        for name, grad in plain_grads.items():
            torch.testing.assert_close(grads[name], factor * grad, rtol=1e-4, atol=1e-6, msg=name)
        assert metrics["samples"] == len(samples) and metrics["is_weight_capped"] == capped
        assert metrics["is_weight_sum"] == pytest.approx(factor * len(samples), rel=1e-4)
        assert metrics["log_ratio_abs_sum"] == pytest.approx(abs(shift) * len(samples), rel=1e-4)
