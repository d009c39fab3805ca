"""vLLM rollout engine against HF ``generate``, weight updates through the worker extension.

The vLLM engine runs in-process in its host (see ``rad.runtime.rollout.vllm_engine``:
it initialises a ``torch.distributed`` group and patches ``torch.set_num_threads``
there), so these tests host it in a Ray actor, never in the pytest process: one
engine for the module, started once (~15-40 s on this machine).

Weights reach the engine from a real policy learner rank (gloo broadcast and the object
store on CPU; the same broadcast on NCCL and CUDA IPC are ``gpu``-marked and skipped
without CUDA).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

pytest.importorskip("vllm")

from rad.runtime.rollout.actors import make_rollout_pool  # noqa: E402
from rad.runtime.rollout.base import SamplingConfig  # noqa: E402
from rad.runtime.rollout.config import RolloutConfig  # noqa: E402
from rad.runtime.rollout.hf_engine import HFEngine  # noqa: E402
from test_rollout_hf import GREEDY, PROMPTS, SAMPLERS, expected_logprobs, perturbed  # noqa: E402
from test_weight_sync import _learners, _train_once  # noqa: E402


@pytest.fixture(scope="module")
def hf(sft_model_dir):
    return HFEngine(sft_model_dir, micro_batch_size=8)


@pytest.fixture(scope="module")
def vllm_pool(ray_cluster, sft_model_dir):
    pool = make_rollout_pool(RolloutConfig(engine="vllm"), sft_model_dir)
    info = ray_cluster.get(pool.actors[0].info.remote())
    assert info["kind"] == "vllm" and info["start_seconds"] > 0
    yield pool
    ray_cluster.get(pool.actors[0].close.remote())  # shuts the in-process engine core down cleanly
    pool.shutdown()


@pytest.fixture(scope="module")
def vllm_actor(vllm_pool):
    return vllm_pool.actors[0]


def _ids(rollouts):
    return [r.response_token_ids for r in rollouts]


def test_greedy_matches_hf_token_for_token(ray_cluster, vllm_actor, hf):
    out = ray_cluster.get(vllm_actor.generate.remote(PROMPTS, 2, GREEDY))
    ref = hf.generate(PROMPTS, n=2, sampling=GREEDY)
    assert _ids(out) == _ids(ref)
    assert [r.finish_reason for r in out] == [r.finish_reason for r in ref]
    assert "stop" in {r.finish_reason for r in out}
    for a, b in zip(out, ref):
        assert a.prompt_token_ids == b.prompt_token_ids
        assert a.response_text == b.response_text
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
    eos = hf.tokenizer.eos_token_id
    no_stop = replace(GREEDY, stop_on_eos=False, max_new_tokens=24)
    out = ray_cluster.get(vllm_actor.generate.remote(PROMPTS, 1, no_stop))
    assert _ids(out) == _ids(hf.generate(PROMPTS, n=1, sampling=no_stop))
    assert any(eos in ids[:-1] for ids in _ids(out)) and all(len(ids) == 24 for ids in _ids(out))


@pytest.mark.parametrize("temperature,top_k,top_p", SAMPLERS)
def test_sampler_logprobs_match_hf_forward(ray_cluster, vllm_actor, hf, temperature, top_k, top_p):
    cfg = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=12, seed=5)
    for r in ray_cluster.get(vllm_actor.generate.remote(PROMPTS[:3], 2, cfg)):
        assert r.logprobs == pytest.approx(expected_logprobs(hf.model, r, cfg), abs=2e-4)


def test_seeded_sampling_is_reproducible(ray_cluster, vllm_actor):
    cfg = SamplingConfig(temperature=1.0, max_new_tokens=16, seed=11)
    a, b, c = ray_cluster.get([vllm_actor.generate.remote(PROMPTS, 3, s) for s in (cfg, cfg, replace(cfg, seed=12))])
    assert _ids(a) == _ids(b) and _ids(a) != _ids(c)
    assert [(r.prompt_index, r.sample_index) for r in a] == [(i, j) for i in range(5) for j in range(3)]
    assert len({tuple(r.response_token_ids) for r in a if r.prompt_index == 0}) > 1


def test_weight_update_through_worker_extension(ray_cluster, vllm_actor, hf, sft_model_dir):
    ray = ray_cluster
    original = hf.get_weights()
    before = ray.get(vllm_actor.generate.remote(PROMPTS, 1, GREEDY))
    new = perturbed(original, seed=1)
    reference = HFEngine(sft_model_dir, micro_batch_size=8)
    reference.update_weights(new)

    assert ray.get(vllm_actor.update_weights.remote(new)) > 0

    after = ray.get(vllm_actor.generate.remote(PROMPTS, 1, GREEDY))
    assert _ids(after) != _ids(before)
    assert _ids(after) == _ids(reference.generate(PROMPTS, n=1, sampling=GREEDY))
    probe = [r.prompt_token_ids + r.response_token_ids for r in after]
    for got, want in zip(ray.get(vllm_actor.token_logprobs.remote(probe)), reference.token_logprobs(probe)):
        assert got == pytest.approx(want, abs=1e-4)
    readable = ray.get(vllm_actor.get_weights.remote())
    assert torch.equal(readable["model.embed_tokens.weight"], new["model.embed_tokens.weight"])
    assert torch.equal(readable["model.norm.weight"], new["model.norm.weight"])

    # Back to the original weights: the same prompts must give the original answers,
    # so no KV computed with the perturbed weights survives in the prefix cache.
    ray.get(vllm_actor.update_weights.remote(original))
    assert _ids(ray.get(vllm_actor.generate.remote(PROMPTS, 1, GREEDY))) == _ids(before)


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["broadcast", "object_store"])
def test_learner_rank0_syncs_the_vllm_engine(ray_cluster, vllm_pool, sft_model_dir, transport):
    """A real learner rank sends its weights (gloo broadcast into the vLLM worker, or the object store):
    the engine's readable tensors equal the learner's bit for bit, and its log-probs match the learner's."""
    ray = ray_cluster
    learners = _learners(ray, sft_model_dir, ranks=1, zero_stage=0)
    try:
        assert vllm_pool.connect(learners, RolloutConfig(weight_sync=transport)) == transport
        _train_once(learners, HFEngine(sft_model_dir).tokenizer, seed=7)
        stats = learners.broadcast("sync_weights")[0]
        assert stats.engine_seconds[0] > 0
        want = learners.broadcast("state_dict")[0]
        readable = ray.get(vllm_pool.actors[0].get_weights.remote())
        for name in ("model.embed_tokens.weight", "model.norm.weight"):
            assert torch.equal(readable[name], want[name]), name
        out = ray.get(vllm_pool.actors[0].generate.remote(PROMPTS, 1, GREEDY))
        probe = [r.prompt_token_ids + r.response_token_ids for r in out]
        batch = _batch_of(out)
        engine_lp = ray.get(vllm_pool.actors[0].token_logprobs.remote(probe))
        for got, learner, r in zip(engine_lp, batch.response_values(learners.rank0("logprobs", batch)), out):
            assert got[len(r.prompt_token_ids) - 1:] == pytest.approx(learner.tolist(), abs=1e-4)
    finally:
        learners.shutdown()


def test_sleep_mode_is_refused_on_cpu_with_the_key_named(sft_model_dir):
    from rad.errors import ConfigError
    from rad.runtime.rollout.vllm_engine import VLLMEngine

    with pytest.raises(ConfigError, match="rollout.vllm_sleep_level.*no CPU implementation"):
        VLLMEngine(sft_model_dir, device="cpu", sleep_level=1)


@pytest.mark.gpu
def test_sleeping_engine_wakes_for_the_sync_and_for_generation(ray_cluster, sft_model_dir):
    """rollout.vllm_sleep_level=1: the engine sleeps after generating, the sync wakes its weights, generation
    wakes the rest; the served weights are the learner's."""
    from rad.runtime.policy_workers import PolicyLearner
    from rad.runtime.worker_group import WorkerGroup
    from rad.settings import LearnerConfig

    learners = WorkerGroup(PolicyLearner, 1, str(sft_model_dir), LearnerConfig(lr=5e-3, bf16="false"), 10,
                           "float32", num_cpus=1, num_gpus=0.5, name="learner")
    addr, port = learners.rank0("address")
    ray_cluster.get(learners.actors[0].init.remote(0, 1, addr, port, 0))
    pool = make_rollout_pool(RolloutConfig(engine="vllm", num_gpus_per_engine=0.5, dtype="float32",
                                           vllm_gpu_memory_utilization=0.3, vllm_sleep_level=1), sft_model_dir,
                             device="cuda")
    try:
        pool.connect(learners, RolloutConfig(weight_sync="broadcast"))
        pool.generate(PROMPTS, 1, GREEDY)  # sleeps afterwards
        _train_once(learners, HFEngine(sft_model_dir).tokenizer, seed=11)
        pool.group.broadcast("wake_up", ["weights"])
        learners.broadcast("sync_weights")
        out = pool.generate(PROMPTS, 1, GREEDY)
        batch = _batch_of(out)
        for r, learner in zip(out, batch.response_values(learners.rank0("logprobs", batch))):
            assert r.logprobs == pytest.approx(learner.tolist(), abs=1e-3)
    finally:
        learners.shutdown()
        pool.shutdown()


def _batch_of(rollouts):
    from rad.runtime.batch import TokenBatch

    return TokenBatch.from_ids([r.prompt_token_ids for r in rollouts], [r.response_token_ids for r in rollouts], 0)


def _gpu_learners_and_pool(ray, sft_model_dir, engine_gpus: float):
    """One learner rank and one vLLM engine, each with the GPU share Ray gives them (as in a run)."""
    from rad.runtime.policy_workers import PolicyLearner
    from rad.runtime.worker_group import WorkerGroup
    from rad.settings import LearnerConfig

    cfg = LearnerConfig(lr=5e-3, micro_batch_size=4, warmup_ratio=0.0, scheduler="constant", bf16="false")
    learners = WorkerGroup(PolicyLearner, 1, str(sft_model_dir), cfg, 10, "float32", num_cpus=1,
                           num_gpus=1 - engine_gpus if engine_gpus < 1 else 1, name="learner")
    addr, port = learners.rank0("address")
    ray.get(learners.actors[0].init.remote(0, 1, addr, port, 0))
    pool = make_rollout_pool(RolloutConfig(engine="vllm", num_gpus_per_engine=engine_gpus, dtype="float32",
                                           vllm_gpu_memory_utilization=0.3), sft_model_dir, device="cuda")
    return learners, pool


@pytest.mark.gpu
@pytest.mark.parametrize("transport,engine_gpus", [("broadcast", 1.0), ("ipc", 0.5)])
def test_gpu_transports_from_the_learner(ray_cluster, sft_model_dir, transport, engine_gpus):
    """NCCL broadcast (engine on its own GPU) and CUDA IPC (engine on the learner's GPU), learner-driven."""
    if transport == "broadcast" and torch.cuda.device_count() < 2:
        pytest.skip("NCCL between learner and engine needs two GPUs")
    learners, pool = _gpu_learners_and_pool(ray_cluster, sft_model_dir, engine_gpus)
    try:
        assert pool.connect(learners, RolloutConfig(weight_sync=transport)) == transport
        _train_once(learners, HFEngine(sft_model_dir).tokenizer, seed=9)
        assert learners.broadcast("sync_weights")[0].seconds > 0
        want = learners.broadcast("state_dict")[0]
        readable = ray_cluster.get(pool.actors[0].get_weights.remote())
        assert torch.equal(readable["model.embed_tokens.weight"].cpu(), want["model.embed_tokens.weight"])
    finally:
        learners.shutdown()
        pool.shutdown()
