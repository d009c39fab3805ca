"""Learner -> rollout-engine weight sync, run by the learner ranks (the driver never holds weights).

The driver asks every policy learner rank to ``sync_weights()``
(:class:`rad.runtime.policy_workers.PolicyLearner`); each rank walks the model in buckets
(:func:`weight_buckets`; under ZeRO-3 every rank takes part in gathering one bucket at a
time, so the full model is never materialised on any rank), and rank 0 alone hands each
bucket to a :class:`WeightSender`, which delivers it straight to every engine actor.

Transports (``rollout.weight_sync``), one interface (``begin`` / ``send`` / ``finish``):

* ``broadcast`` (:class:`BroadcastSender`): a standalone process group holding learner rank 0
  and every engine worker (:mod:`rad.runtime.rollout.transport`); one broadcast per bucket.
  The same code runs on gloo with CPU tensors and on NCCL with CUDA tensors. ``auto``.
* ``object_store`` (:class:`ObjectStoreSender`): each bucket is ``ray.put`` once by learner
  rank 0 and every engine reads it from Ray's object store (shared memory on the same node).
  Works across device types (e.g. a GPU learner and CPU engines).
* ``ipc`` (:class:`IpcSender`, CUDA only): engines on the learner's GPU open CUDA IPC handles
  of the learner's own parameters; nothing is copied between processes.

vLLM (0.32/0.33) ships its own weight-transfer engines, but only for NCCL and CUDA IPC: on
CPU it has none, so rad uses this module on both, and CI runs the very code a GPU run does.

Every wait carries ``timeout_s``: an engine that died or hangs turns into a
:class:`~rad.errors.RadError` naming the engine, never a hang.
"""

from __future__ import annotations

import abc
import pickle
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from rad.errors import ConfigError, RadError
from rad.runtime.rollout.transport import Layout, TensorSpec, pack_bucket, plan_layout

TRANSPORTS = ("auto", "broadcast", "object_store", "ipc")


@dataclass
class SyncStats:
    """Timing of one weight sync, as seen by learner rank 0 and by each engine."""

    seconds: float  # rank 0's wall time from the first gather until every engine has loaded
    engine_seconds: list[float] = field(default_factory=list)  # each engine's own receive + load time
    stage_seconds: float = 0.0  # rank 0's gather + pack time (inside ``seconds``)
    megabytes: float = 0.0
    buckets: int = 0

    def metrics(self, prefix: str = "timing/weight_sync") -> dict[str, float]:
        return {prefix: self.seconds, f"{prefix}_stage": self.stage_seconds,
                f"{prefix}_engine_max": max(self.engine_seconds, default=0.0),
                f"{prefix}_megabytes": self.megabytes, f"{prefix}_buckets": float(self.buckets)}


# ---------------------------------------------------------------------------------------------
# The learner side: which tensors, in which buckets


def named_weights(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The tensors an engine needs, in HF naming: parameters (tied ones once) and persistent buffers."""
    seen: set[int] = set()
    out: list[tuple[str, torch.Tensor]] = []
    for name, p in module.named_parameters():
        if id(p) not in seen:
            seen.add(id(p))
            out.append((name, p))
    params = {n for n, _ in module.named_parameters(remove_duplicate=False)}
    state_keys = set(module.state_dict(keep_vars=True))
    for name, b in module.named_buffers():
        if name in state_keys and name not in params:  # persistent buffers only (what a checkpoint holds)
            out.append((name, b))
    return out


def _full_shape(t: torch.Tensor) -> tuple[int, ...]:
    """The unpartitioned shape (ZeRO-3 keeps it in ``ds_shape``; the local tensor is a flat shard)."""
    return tuple(getattr(t, "ds_shape", t.shape))


def weight_layout(tensors: dict[str, torch.Tensor], bucket_bytes: int) -> Layout:
    """The buckets of :func:`named_weights` (same on every rank; ZeRO-3 aware)."""
    return plan_layout(((n, t.dtype, _full_shape(t)) for n, t in tensors.items()), bucket_bytes)


def weight_buckets(tensors: dict[str, torch.Tensor], layout: Layout, zero3: bool) -> Iterator[list[torch.Tensor]]:
    """The full tensors of each bucket of ``layout``, one bucket at a time, on every rank.

    ``tensors`` is :func:`named_weights` of the module, resolved once when the sync is set up.
    Under ZeRO-3 every rank must consume this generator in step (each bucket is a
    collective gather, released when the next one is asked for).
    """
    for specs in layout:
        bucket = [tensors[s.name] for s in specs]
        if zero3:
            import deepspeed

            params = [t for t in bucket if hasattr(t, "ds_id")]
            with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                yield [t.data for t in bucket]
        else:
            yield [t.data for t in bucket]


# ---------------------------------------------------------------------------------------------
# Senders (learner rank 0)


def _wait(refs: list, engines: Sequence, what: str, timeout_s: float) -> list:
    """``ray.get`` of one call per engine, turning deaths and time-outs into a RadError naming the engine."""
    import ray

    try:
        return ray.get(refs, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        slow = [i for i, r in enumerate(refs) if r not in ready]
        raise RadError(f"weight sync ({what}): engine(s) {slow} did not finish within {timeout_s:g} s "
                       f"(rollout.sync_timeout_s)") from None
    except ray.exceptions.RayActorError as exc:
        raise RadError(f"weight sync ({what}): rollout engine(s) {dead_engines(engines) or '?'} died: "
                       f"{str(exc).splitlines()[0]}") from None


def dead_engines(engines: Sequence, timeout_s: float = 5.0) -> list[int]:
    """Indices of the engine actors that no longer answer."""
    import ray

    dead = []
    for i, engine in enumerate(engines):
        try:
            ray.get(engine.info.remote(), timeout=timeout_s)
        except Exception:
            dead.append(i)
    return dead


class WeightSender(abc.ABC):
    """Delivers buckets from learner rank 0 to every engine actor."""

    kind = ""

    def __init__(self, engines: Sequence, device: torch.device, timeout_s: float) -> None:
        self.engines = list(engines)
        self.device = device
        self.timeout_s = timeout_s

    @abc.abstractmethod
    def begin(self, layout: Layout) -> None:
        """A round starts: the engines learn the layout (and start receiving, for a broadcast)."""

    @abc.abstractmethod
    def send(self, specs: list[TensorSpec], tensors: list[torch.Tensor]) -> None:
        """One bucket's full tensors (on the learner's device)."""

    @abc.abstractmethod
    def finish(self) -> list[float]:
        """Wait until every engine has loaded the round; each engine's seconds."""

    def close(self) -> None:
        """Release the transport (process group, references)."""


class ObjectStoreSender(WeightSender):
    """Each bucket packed into one CPU byte array, ``ray.put`` once, read by every engine."""

    kind = "object_store"

    def begin(self, layout: Layout) -> None:
        self._calls: list = []
        self._objects: list = []  # kept alive until every engine has read them

    def send(self, specs, tensors) -> None:
        import ray

        flat = pack_bucket(specs, tensors, "cpu").numpy()
        ref = ray.put(flat)
        self._objects.append(ref)
        self._calls.append([e.load_bucket.remote(specs, ref) for e in self.engines])

    def finish(self) -> list[float]:
        loads = [ref for calls in self._calls for ref in calls]
        _wait(loads, self.engines, self.kind, self.timeout_s)
        seconds = _wait([e.finish_weights.remote() for e in self.engines], self.engines, self.kind, self.timeout_s)
        self._calls, self._objects = [], []
        return seconds


class BroadcastSender(WeightSender):
    """One process group over learner rank 0 and every engine worker; one broadcast per bucket."""

    kind = "broadcast"

    def __init__(self, engines: Sequence, device: torch.device, timeout_s: float, address: str, port: int) -> None:
        from rad.runtime.rollout.transport import join_group

        super().__init__(engines, device, timeout_s)
        sizes = _wait([e.num_workers.remote() for e in self.engines], self.engines, self.kind, timeout_s)
        world = 1 + sum(sizes)
        offsets = [1 + sum(sizes[:k]) for k in range(len(sizes))]
        # every member blocks in the rendezvous: start the engines' side, then join as rank 0
        joining = [e.join_weight_group.remote(address, port, off, world, timeout_s)
                   for e, off in zip(self.engines, offsets)]
        try:
            self.group = join_group(address, port, 0, world, device, timeout_s)
        except Exception as exc:
            raise RadError(f"weight sync (broadcast): the process group did not form within {timeout_s:g} s "
                           f"(dead engines: {dead_engines(self.engines)}): {str(exc).splitlines()[0]}") from None
        _wait(joining, self.engines, self.kind, timeout_s)
        self.world_size = world

    def begin(self, layout: Layout) -> None:
        self._receiving = [e.receive_broadcast.remote(layout) for e in self.engines]

    def send(self, specs, tensors) -> None:
        from rad.runtime.rollout.transport import broadcast_bucket

        try:
            broadcast_bucket(self.group, pack_bucket(specs, tensors, self.device))
        except RuntimeError as exc:  # gloo / NCCL: a member is gone, or the group's timeout passed
            raise RadError(f"weight sync (broadcast): engine(s) {dead_engines(self.engines) or '?'} did not take "
                           f"the weights (dead, or slower than rollout.sync_timeout_s): "
                           f"{str(exc).splitlines()[0]}") from None

    def finish(self) -> list[float]:
        return _wait(self._receiving, self.engines, self.kind, self.timeout_s)

    def close(self) -> None:
        self.group = None


class IpcSender(WeightSender):
    """CUDA IPC handles of the learner's own tensors, opened in place by engines on the same GPU."""

    kind = "ipc"

    def begin(self, layout: Layout) -> None:
        self._handles: list = []
        self._names: list[str] = []

    def send(self, specs, tensors) -> None:
        from torch.multiprocessing.reductions import reduce_tensor

        # the learner's parameters themselves (ZeRO <= 2): they outlive the round, so the handles stay valid
        self._handles += [(s.name, reduce_tensor(t.detach())) for s, t in zip(specs, tensors)]

    def finish(self) -> list[float]:
        torch.cuda.synchronize()
        handles = pickle.dumps(self._handles)
        names = [name for name, _ in self._handles]
        self._handles = []
        return _wait([e.load_ipc.remote(handles, names) for e in self.engines], self.engines, self.kind,
                     self.timeout_s)


def resolve_transport(kind: str, learner_device: str, engine_device: str, engines_on_learner_gpu: int = 0,
                      engines: int = 1) -> str:
    """``rollout.weight_sync`` with ``auto`` resolved: broadcast when learner and engines share a device
    type (gloo on CPU, NCCL on GPU), else the object store; on a GPU that the learner shares with
    engines (``engines_on_learner_gpu`` of ``engines``), CUDA IPC when all of them are there, since
    NCCL cannot join two processes on one device."""
    if kind not in TRANSPORTS:
        raise ConfigError(f"rollout.weight_sync: unknown transport {kind!r}; expected one of {list(TRANSPORTS)}")
    same = torch.device(learner_device).type == torch.device(engine_device).type
    if kind == "auto":
        if not same:
            return "object_store"
        if engines_on_learner_gpu:
            return "ipc" if engines_on_learner_gpu == engines else "object_store"
        return "broadcast"
    if kind == "broadcast" and engines_on_learner_gpu and torch.device(learner_device).type == "cuda":
        raise ConfigError(f"rollout.weight_sync=broadcast: {engines_on_learner_gpu} engine(s) share learner rank 0's "
                          "GPU, and NCCL cannot join two processes on one device; use ipc (or auto)")
    if kind == "broadcast" and not same:
        raise ConfigError(f"rollout.weight_sync=broadcast needs the learner and the engines on one device type; "
                          f"the learner is on {learner_device}, the engines on {engine_device} (use object_store)")
    if kind == "ipc" and torch.device(learner_device).type != "cuda":
        raise ConfigError("rollout.weight_sync=ipc needs CUDA (engines colocated on the learner's GPU); "
                          "use broadcast or object_store on CPU")
    return kind


def make_weight_sender(kind: str, engines: Sequence, device: torch.device, timeout_s: float,
                       address: str = "127.0.0.1", port: int = 0) -> WeightSender:
    """The sender of a resolved transport (see :func:`resolve_transport`), built on learner rank 0."""
    if kind == "broadcast":
        from rad.runtime.distributed import free_port

        return BroadcastSender(engines, device, timeout_s, address, port or free_port())
    if kind == "object_store":
        return ObjectStoreSender(engines, device, timeout_s)
    if kind == "ipc":
        return IpcSender(engines, device, timeout_s)
    raise ConfigError(f"rollout.weight_sync: unresolved transport {kind!r}")


def sync_round(tensors: dict[str, torch.Tensor], layout: Layout, zero3: bool,
               sender: WeightSender | None) -> SyncStats | None:
    """One sync on one learner rank: every rank walks the buckets, rank 0 (``sender`` given) sends them."""
    start = time.perf_counter()
    stage = 0.0
    if sender is not None:
        sender.begin(layout)
    megabytes = 0.0
    t0 = time.perf_counter()
    for specs, bucket in zip(layout, weight_buckets(tensors, layout, zero3)):
        if sender is not None:
            stage += time.perf_counter() - t0
            sender.send(specs, bucket)
            megabytes += sum(s.nbytes for s in specs) / 1e6
        t0 = time.perf_counter()
    if sender is None:
        return None
    engine_seconds = sender.finish()
    return SyncStats(time.perf_counter() - start, list(engine_seconds), stage, megabytes, len(layout))

