"""Learner -> rollout-engine weight transports, all with ``push(weights) -> SyncStats``.

* :class:`ObjectStoreSync` (CPU, and any engine): the state dict is put into Ray's
  object store once (``ray.put``) and every actor loads it from there with
  ``update_weights(ref)``; actors on the learner's node read it from shared memory.
* :class:`NcclWeightSync` (GPU, vLLM engines): learner rank 0 broadcasts each
  tensor over an NCCL group that holds it (rank 0) and every vLLM worker of every
  engine (ranks 1..); workers load tensors as they arrive (``rad_receive_nccl``).
  The group is a vLLM ``StatelessProcessGroup`` + ``PyNcclCommunicator``, so it
  leaves the learner's own ``torch.distributed`` (DeepSpeed) group alone.
* :class:`IpcWeightSync` (GPU, vLLM engine colocated on the learner's GPU): CUDA IPC
  handles of the learner's tensors; the worker copies from the learner's memory
  without a transfer.

``push`` is called on learner rank 0 with the full (gathered) state dict in HF
naming, e.g. ``DeepSpeedLearner.full_state_dict()``; its ``SyncStats.metrics()``
are meant to be logged every step.
"""

from __future__ import annotations

import pickle
import socket
from dataclasses import dataclass, field
from typing import Sequence

import torch

from rad.errors import ConfigError
from rad.runtime.rollout.base import Stopwatch, Weights, named_tensors


@dataclass
class SyncStats:
    """Timing of one weight push, as seen by the learner and by each engine."""

    seconds: float  # learner wall time from start of push until every engine has the weights
    engine_seconds: list[float] = field(default_factory=list)  # each engine's own load time
    stage_seconds: float = 0.0  # learner-side staging (object-store put / IPC handles); 0 for NCCL
    megabytes: float = 0.0

    def metrics(self, prefix: str = "timing/weight_sync") -> dict[str, float]:
        return {prefix: self.seconds, f"{prefix}_stage": self.stage_seconds,
                f"{prefix}_engine_max": max(self.engine_seconds, default=0.0),
                f"{prefix}_megabytes": self.megabytes}


def _megabytes(named: Sequence[tuple[str, torch.Tensor]]) -> float:
    return sum(t.numel() * t.element_size() for _, t in named) / 1e6


class ObjectStoreSync:
    """One ``ray.put`` of the CPU state dict, then every actor's ``update_weights(ref)``."""

    def __init__(self, actors: Sequence) -> None:
        self.actors = list(actors)

    def push(self, weights: Weights) -> SyncStats:
        import ray

        with Stopwatch() as total:
            with Stopwatch() as stage:
                cpu = {name: t.detach().to("cpu") for name, t in named_tensors(weights)}
                ref = ray.put(cpu)
            engine = ray.get([a.update_weights.remote(ref) for a in self.actors])
        return SyncStats(total.seconds, list(engine), stage.seconds, _megabytes(list(cpu.items())))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class NcclWeightSync:
    """NCCL broadcast from learner rank 0 to every worker of every vLLM engine (GPU only).

    Build it once on learner rank 0 after the engines are up; the constructor
    joins the group (a collective with all engines' workers).
    """

    def __init__(self, actors: Sequence, master_address: str | None = None, master_port: int | None = None) -> None:
        import ray

        if not torch.cuda.is_available():
            raise ConfigError("rollout.weight_sync=nccl needs CUDA on the learner; use object_store on CPU")
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.utils import StatelessProcessGroup

        self.actors = list(actors)
        sizes = ray.get([a.num_workers.remote() for a in self.actors])
        world_size = 1 + sum(sizes)
        address = master_address or ray.util.get_node_ip_address()
        port = master_port or _free_port()
        offsets = [1 + sum(sizes[:k]) for k in range(len(sizes))]
        # Every rank blocks in the rendezvous until all have joined: start the
        # engines' side first, then join as rank 0.
        joined = [a.init_nccl.remote(address, port, off, world_size) for a, off in zip(self.actors, offsets)]
        group = StatelessProcessGroup.create(host=address, port=port, rank=0, world_size=world_size)
        self.comm = PyNcclCommunicator(group, device=torch.cuda.current_device())
        ray.get(joined)

    def push(self, weights: Weights) -> SyncStats:
        import ray

        named = [(n, t.detach().contiguous()) for n, t in named_tensors(weights)]
        for name, t in named:
            if not t.is_cuda:
                raise ConfigError(f"weight_sync=nccl: {name!r} is on {t.device}, expected a CUDA tensor")
        with Stopwatch() as total:
            meta = ([n for n, _ in named], [str(t.dtype).removeprefix("torch.") for _, t in named],
                    [list(t.shape) for _, t in named])
            receiving = [a.receive_nccl.remote(*meta) for a in self.actors]
            stream = torch.cuda.current_stream()
            for _, t in named:
                self.comm.broadcast(t, src=0, stream=stream)
            stream.synchronize()
            engine = ray.get(receiving)
        return SyncStats(total.seconds, list(engine), 0.0, _megabytes(named))


class IpcWeightSync:
    """CUDA IPC handles of the learner's tensors, opened by vLLM workers on the same GPU."""

    def __init__(self, actors: Sequence) -> None:
        if not torch.cuda.is_available():
            raise ConfigError("rollout.weight_sync=ipc needs CUDA; use object_store on CPU")
        self.actors = list(actors)

    def push(self, weights: Weights) -> SyncStats:
        import ray
        from torch.multiprocessing.reductions import reduce_tensor

        with Stopwatch() as total:
            with Stopwatch() as stage:
                # Held until every engine has loaded: the handles point into these tensors.
                named = [(n, t.detach().contiguous()) for n, t in named_tensors(weights)]
                handles = pickle.dumps([(n, reduce_tensor(t)) for n, t in named])
            torch.cuda.synchronize()
            engine = ray.get([a.load_ipc.remote(handles, [n for n, _ in named]) for a in self.actors])
        return SyncStats(total.seconds, list(engine), stage.seconds, _megabytes(named))


def make_weight_sync(kind: str, actors: Sequence, device: str, engine: str):
    """The transport for ``rollout.weight_sync``; ``auto`` = nccl for vLLM on GPU, else object_store."""
    if kind == "auto":
        kind = "nccl" if device == "cuda" and engine == "vllm" else "object_store"
    if kind == "object_store":
        return ObjectStoreSync(actors)
    if kind == "nccl":
        return NcclWeightSync(actors)
    if kind == "ipc":
        return IpcWeightSync(actors)
    raise ConfigError(f"rollout.weight_sync: unknown transport {kind!r}; expected auto, object_store, nccl or ipc")
