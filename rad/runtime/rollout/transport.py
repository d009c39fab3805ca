"""The wire format of a weight sync and the process group it travels on (no Ray, no vLLM here).

Both ends of every transport use this module: learner rank 0 (the sender, see
:mod:`rad.runtime.rollout.weight_sync`) and the engines (the HF engine in its actor, the
vLLM worker extension in each vLLM worker), so a CPU run exercises exactly the code a GPU
run does.

**Buckets.** The weights travel in buckets of at most ``bucket_bytes``: each bucket is one
flat ``uint8`` tensor holding its tensors' raw bytes back to back, every tensor starting at
a multiple of :data:`ALIGN` bytes (so a byte slice can be viewed as any dtype). A
:class:`TensorSpec` says where a tensor sits in its bucket; the list of buckets' specs (the
*layout*) is computed once from the model and sent ahead of the bytes, so the receiver
knows what to allocate and how to cut it.

**Process group.** :func:`join_group` makes a standalone process group (its own
``TCPStore`` rendezvous, outside ``torch.distributed``'s default group, which DeepSpeed
and vLLM each own in their processes): learner rank 0 is rank 0, the engines' workers are
ranks 1..N. The backend follows the device: gloo for CPU tensors, NCCL for CUDA tensors.
One broadcast per bucket moves the weights; every collective carries the group's timeout,
so a dead engine turns into an error instead of a hang.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch

#: Byte alignment of every tensor inside a bucket (covers every dtype's element size).
ALIGN = 16


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a bucket: HF name, dtype name (``"bfloat16"``), full shape, byte offset and size."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int

    def view(self, flat: torch.Tensor) -> torch.Tensor:
        """This tensor, viewed (no copy) in the bucket's flat byte tensor."""
        raw = flat[self.offset: self.offset + self.nbytes]
        return raw.view(getattr(torch, self.dtype)).reshape(self.shape)


#: The buckets of one sync, each a list of specs in bucket order.
Layout = list[list[TensorSpec]]


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def plan_layout(tensors: Iterable[tuple[str, torch.dtype, Sequence[int]]], bucket_bytes: int) -> Layout:
    """Cut ``(name, dtype, shape)`` tensors, in order, into buckets of at most ``bucket_bytes``.

    A tensor larger than ``bucket_bytes`` gets a bucket of its own.
    """
    layout: Layout = []
    current: list[TensorSpec] = []
    offset = 0
    for name, dtype, shape in tensors:
        shape = tuple(int(s) for s in shape)
        numel = 1
        for s in shape:
            numel *= s
        nbytes = numel * torch.empty((), dtype=dtype).element_size()
        if current and offset + nbytes > bucket_bytes:
            layout.append(current)
            current, offset = [], 0
        current.append(TensorSpec(name, str(dtype).removeprefix("torch."), shape, offset, nbytes))
        offset = _aligned(offset + nbytes)
    if current:
        layout.append(current)
    return layout


def bucket_size(specs: Sequence[TensorSpec]) -> int:
    """Bytes of the flat tensor that holds ``specs``."""
    return _aligned(specs[-1].offset + specs[-1].nbytes) if specs else 0


def pack_bucket(specs: Sequence[TensorSpec], tensors: Sequence[torch.Tensor], device: torch.device | str
                ) -> torch.Tensor:
    """The flat ``uint8`` tensor of one bucket on ``device`` (``tensors`` in the order of ``specs``)."""
    flat = torch.empty(bucket_size(specs), dtype=torch.uint8, device=device)
    for spec, tensor in zip(specs, tensors, strict=True):
        if tuple(tensor.shape) != spec.shape or str(tensor.dtype).removeprefix("torch.") != spec.dtype:
            raise ValueError(f"weight sync: {spec.name} is {tuple(tensor.shape)} {tensor.dtype}, the layout says "
                             f"{spec.shape} {spec.dtype}")
        spec.view(flat).copy_(tensor.detach())
    return flat


def unpack_bucket(specs: Sequence[TensorSpec], flat: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` views of one bucket's flat tensor."""
    for spec in specs:
        yield spec.name, spec.view(flat)


def backend_for(device: torch.device | str) -> str:
    """The collective backend of a device type: gloo for CPU, NCCL for CUDA."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def join_group(address: str, port: int, rank: int, world_size: int, device: torch.device | str,
               timeout_s: float):
    """A standalone process group for weight broadcasts (rank 0 hosts the rendezvous store).

    Every member calls this with the same address, port and world size; the call returns
    once all have joined (or raises after ``timeout_s``).
    """
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=timeout_s)
    store = dist.TCPStore(address, port, world_size, is_master=rank == 0, timeout=timeout,
                          wait_for_workers=False)
    store = dist.PrefixStore("rad-weight-sync", store)
    if backend_for(device) == "gloo":
        group = dist.ProcessGroupGloo(store, rank, world_size, timeout)
    else:
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = timeout
        group = dist.ProcessGroupNCCL(store, rank, world_size, options)
    # the handshake: a first collective that every member must reach
    probe = torch.zeros(1, device=device)
    group.broadcast([probe], dist.BroadcastOptions()).wait()
    return group


def broadcast_bucket(group, flat: torch.Tensor) -> None:
    """Broadcast one bucket from rank 0 (sender: the packed bucket; receiver: an empty one)."""
    import torch.distributed as dist

    options = dist.BroadcastOptions()
    options.rootRank = 0
    group.broadcast([flat], options).wait()
    if flat.is_cuda:
        torch.cuda.current_stream(flat.device).synchronize()


def receive_buckets(group, layout: Layout, device: torch.device | str) -> Iterator[tuple[str, torch.Tensor]]:
    """Receive every bucket of ``layout`` in order and yield its ``(name, tensor)`` views.

    Each bucket's buffer lives until the consumer has moved on to the next bucket.
    """
    for specs in layout:
        flat = torch.empty(bucket_size(specs), dtype=torch.uint8, device=device)
        broadcast_bucket(group, flat)
        yield from unpack_bucket(specs, flat)
