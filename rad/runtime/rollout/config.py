"""The ``rollout`` config section: which engine, how many, how weights reach them, how to sample."""

from __future__ import annotations

from dataclasses import dataclass

from rad.config import field
from rad.runtime.rollout.base import SamplingConfig


@dataclass
class RolloutConfig:
    """Rollout engines (Ray actors) and the learner -> engine weight sync."""

    engine: str = field("auto", choices=("auto", "hf", "vllm"),
                        help="generation backend; auto = vllm on GPU, hf on CPU (measured, see "
                             "rad.runtime.rollout.actors)")
    hybrid: bool = field(False, help="generate with the policy learner ranks' own module (hf engine, learner "
                                     "ZeRO <= 2): no engine actors, no second copy of the weights, no sync")
    num_engines: int = field(1, min=1, help="rollout actors; prompts are split between them")
    num_cpus_per_engine: float = field(1.0, gt=0, help="Ray CPUs reserved by each rollout actor")
    num_gpus_per_engine: float = field(1.0, min=0,
                                       help="Ray GPUs per rollout actor on GPU clusters (< 1 to colocate)")
    weight_sync: str = field("auto", choices=("auto", "broadcast", "object_store", "ipc"),
                             help="learner -> engine transport, driven by learner rank 0: broadcast (a process "
                                  "group: gloo on CPU, NCCL on GPU), object_store (Ray), ipc (CUDA, engines on the "
                                  "learner's GPU); auto = ipc when the engines share learner rank 0's GPU, "
                                  "object_store across device types, else broadcast "
                                  "(see rad/runtime/rollout/weight_sync.py)")
    sync_timeout_s: float = field(300.0, gt=0, help="a weight sync that has not finished by then fails with an "
                                                    "error naming the engine (a dead engine never hangs the run)")
    sync_bucket_mb: float = field(256.0, gt=0, help="weights travel in buckets of at most this size (ZeRO-3 "
                                                    "gathers one bucket at a time)")
    dtype: str = field("auto", choices=("auto", "float32", "bfloat16", "float16"),
                       help="engine dtype; auto = float32 on CPU, the checkpoint's dtype on GPU")
    micro_batch_size: int = field(64, min=1, help="hf engine: sequences per generate call (larger is faster "
                                                  "on CPU, see bench/results/generation.json; lower it if memory "
                                                  "is short)")
    hf_kv_cache: str = field("dynamic", choices=("dynamic", "static"),
                             help="hf engine: the KV cache of generate; static preallocates prompt + max_new_tokens "
                                  "per sequence instead of growing the cache by a copy per token (the same samples; "
                                  "on CPU 1.1-1.6x faster at the medium size, slower at small: "
                                  "bench/results/medium/PROFILE.md)")
    vllm_gpu_memory_utilization: float = field(0.5, gt=0, max=1,
                                               help="vllm on GPU: fraction of GPU memory for weights + KV cache")
    vllm_kv_cache_gib: float = field(0.25, gt=0, help="vllm on CPU: KV cache size in GiB")
    vllm_tensor_parallel_size: int = field(1, min=1, help="vllm: GPUs per engine (tensor parallel)")
    vllm_max_model_len: int = field(0, min=0, help="vllm: context length (0 = the model's)")
    vllm_sleep_level: int = field(0, min=0, max=2, help="vllm on GPU: after each generation the engine sleeps so the "
                                                        "learner can use its memory (1: weights offloaded to CPU, KV "
                                                        "cache freed; 2: both freed, the next sync refills the "
                                                        "weights); 0 = never sleeps")
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    off_policy_sampling: bool = field(False, help="allow sampling settings under which the rollouts are not the "
                                                  "policy's own samples (temperature != 1, top_p < 1, top_k > 0): "
                                                  "the learner's log-probs and the policy gradient assume the "
                                                  "policy's distribution")

    def validate(self) -> None:
        from rad.errors import ConfigError

        if not self.off_policy_sampling:
            sampling = self.sampling
            for key, value, on_policy in (("temperature", sampling.temperature, sampling.temperature == 1.0),
                                          ("top_p", sampling.top_p, sampling.top_p == 1.0),
                                          ("top_k", sampling.top_k, sampling.top_k == 0)):
                if not on_policy:
                    raise ConfigError(f"rollout.sampling.{key}={value} samples from another distribution than the "
                                      f"policy's, so the learner's log-probs are off-policy (on-policy: temperature "
                                      f"1, top_p 1, top_k 0); set rollout.off_policy_sampling=true to allow it")

        if self.vllm_sleep_level and self.engine != "vllm":
            raise ConfigError("rollout.vllm_sleep_level needs rollout.engine=vllm (the hf engine keeps no KV cache "
                              "between calls; for it, rollout.hybrid shares the learner's weights instead)")
        if self.hybrid and self.engine == "vllm":
            raise ConfigError("rollout.hybrid generates with the learner's HF module; use rollout.engine=hf or auto "
                              "(vLLM on GPU colocates with resources.colocate_rollout and weight_sync=ipc)")
