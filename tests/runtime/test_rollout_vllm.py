"""vLLM rollout engine against HF ``generate``, weight updates through the worker extension.

The vLLM engine runs in-process in its host (see ``rad.runtime.rollout.vllm_engine``:
it initialises a ``torch.distributed`` group and patches ``torch.set_num_threads``
there), so these tests host it in a Ray actor, never in the pytest process: one
engine for the module, started once (~15-40 s on this machine).

GPU transports (NCCL broadcast, CUDA IPC) are ``gpu``-marked and skipped without CUDA.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

pytest.importorskip("vllm")

from rad.runtime.rollout.actors import RolloutPool, make_rollout_actor  # noqa: E402
from rad.runtime.rollout.base import SamplingConfig  # noqa: E402
from rad.runtime.rollout.hf_engine import HFEngine  # noqa: E402
from rad.runtime.rollout.weight_sync import ObjectStoreSync  # noqa: E402
from test_rollout_hf import GREEDY, PROMPTS, SAMPLERS, expected_logprobs, perturbed  # noqa: E402


@pytest.fixture(scope="module")
def hf(sft_model_dir):
    return HFEngine(sft_model_dir, micro_batch_size=8)


@pytest.fixture(scope="module")
def vllm_actor(ray_cluster, sft_model_dir):
    actor = make_rollout_actor("vllm", sft_model_dir, num_cpus=1)
    info = ray_cluster.get(actor.info.remote())
    assert info["kind"] == "vllm" and info["start_seconds"] > 0
    yield actor
    ray_cluster.get(actor.close.remote())  # shuts the in-process engine core down cleanly
    ray_cluster.kill(actor)


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

    stats = RolloutPool([vllm_actor], "vllm", ObjectStoreSync([vllm_actor])).push_weights(new)
    assert stats.seconds > 0 and stats.engine_seconds[0] > 0

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


@pytest.mark.gpu
def test_nccl_broadcast_from_learner(ray_cluster, sft_model_dir):
    """Learner (this process) -> a vLLM engine on another GPU over NCCL."""
    if torch.cuda.device_count() < 2:
        pytest.skip("NCCL between learner and engine needs two GPUs")
    from rad.runtime.rollout.weight_sync import NcclWeightSync

    actor = make_rollout_actor("vllm", sft_model_dir, num_cpus=1, num_gpus=1, dtype="float32",
                               gpu_memory_utilization=0.3)
    try:
        taken = {int(i) for i in ray_cluster.get(actor.info.remote())["gpu_ids"]}
        device = next(i for i in range(torch.cuda.device_count()) if i not in taken)  # NCCL: one rank per GPU
        torch.cuda.set_device(device)
        hf = HFEngine(sft_model_dir, device=f"cuda:{device}")
        sync = NcclWeightSync([actor])
        new = {k: v.to(f"cuda:{device}") for k, v in perturbed(hf.get_weights(), seed=2).items()}
        stats = sync.push(new)
        assert stats.seconds > 0
        hf.update_weights(new)
        out = ray_cluster.get(actor.generate.remote(PROMPTS, 1, GREEDY))
        assert _ids(out) == _ids(hf.generate(PROMPTS, n=1, sampling=GREEDY))
    finally:
        ray_cluster.kill(actor)


@pytest.mark.gpu
def test_cuda_ipc_when_colocated(ray_cluster, sft_model_dir):
    """Learner and engine share GPU 0; the engine reads the learner's tensors through IPC handles."""
    from rad.runtime.rollout.weight_sync import IpcWeightSync

    hf = HFEngine(sft_model_dir, device="cuda:0")
    actor = make_rollout_actor("vllm", sft_model_dir, num_cpus=1, num_gpus=0.5, dtype="float32",
                               gpu_memory_utilization=0.3)
    try:
        new = {k: v.to("cuda:0") for k, v in perturbed(hf.get_weights(), seed=3).items()}
        stats = IpcWeightSync([actor]).push(new)
        assert stats.seconds > 0
        hf.update_weights(new)
        out = ray_cluster.get(actor.generate.remote(PROMPTS, 1, GREEDY))
        assert _ids(out) == _ids(hf.generate(PROMPTS, n=1, sampling=GREEDY))
    finally:
        ray_cluster.kill(actor)
