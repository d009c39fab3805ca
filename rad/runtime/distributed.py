"""Process-group setup shared by every DeepSpeed learner (one process or many Ray actors).

On CPU DeepSpeed runs on the gloo backend. It needs the usual rendezvous variables
(``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, ``LOCAL_RANK``); a
single-process run gets them filled in here. DeepSpeed also JIT-compiles a
shared-memory collective op on CPU the first time a backend starts (~60 s); the
build is cached in a fixed ``TORCH_EXTENSIONS_DIR`` so a machine pays it once.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import torch

from rad.cache import cache_root

log = logging.getLogger("rad.runtime")


def ensure_torch_extensions_cache() -> Path:
    """Pin torch's JIT-extension cache so DeepSpeed's CPU ops build once per machine."""
    if "TORCH_EXTENSIONS_DIR" not in os.environ:
        os.environ["TORCH_EXTENSIONS_DIR"] = str(cache_root() / "torch_extensions")
    path = Path(os.environ["TORCH_EXTENSIONS_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    if not any(path.glob("**/*.so")):
        log.warning("DeepSpeed will compile its CPU communication op once (about a minute); "
                    "it is cached in %s", path)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def role_device(requested: str = "auto") -> torch.device:
    """The device of a role's actor: the accelerator Ray assigned it, else the CPU.

    Ray narrows ``CUDA_VISIBLE_DEVICES`` to the GPUs an actor reserved (and hides them
    from actors that reserved none), so inside an actor "is CUDA available" means "did
    Ray give me a GPU", and that GPU is ``cuda:0``. Every role (learner ranks, reference,
    scorers, rollout engines) resolves its device here: one code path for CPU and GPU.
    """
    if requested != "auto":
        return torch.device(requested)
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def resolve_dtype(name: str, device: torch.device | str | None = None) -> torch.dtype:
    """A dtype name; ``auto`` = bfloat16 on a CUDA device that supports it, float32 elsewhere."""
    if name != "auto":
        return getattr(torch, name)
    on_cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    return torch.bfloat16 if on_cuda and torch.cuda.is_bf16_supported() else torch.float32


def memory_stats(device: torch.device | str) -> dict[str, float]:
    """This process's peak memory: accelerator bytes allocated/reserved on ``device`` (CUDA), and the host RSS."""
    import resource

    out = {"device": str(device), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.device(device).type == "cuda":
        out.update(peak_allocated_mb=torch.cuda.max_memory_allocated(device) / 2**20,
                   peak_reserved_mb=torch.cuda.max_memory_reserved(device) / 2**20)
    return out


def backend_name(requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_distributed(backend: str = "auto") -> None:
    """Initialise torch.distributed through DeepSpeed once per process.

    With rendezvous variables in the environment (Ray learner ranks, ``deepspeed``/
    ``torchrun`` launchers) they are used as given. Without them this makes a
    one-rank group on a free loopback port *without* writing ``RANK``/``MASTER_PORT``
    into the environment: child processes (a ``ray job``, a forked worker) would
    inherit them and try to listen on the same port.
    """
    ensure_torch_extensions_cache()
    import deepspeed

    # DeepSpeed reads it to pick the device on every engine, also when the group already exists
    os.environ.setdefault("LOCAL_RANK", "0")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return
    if "MASTER_ADDR" in os.environ and "RANK" in os.environ:
        deepspeed.init_distributed(dist_backend=backend_name(backend), auto_mpi_discovery=False)
        return
    for attempt in range(3):
        try:
            deepspeed.init_distributed(dist_backend=backend_name(backend), auto_mpi_discovery=False,
                                       init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
            return
        except torch.distributed.DistNetworkError as exc:
            # the port was free when picked but another process (a Ray worker, another run's
            # rendezvous) bound it before the store did: pick another
            if "EADDRINUSE" not in str(exc) or attempt == 2:
                raise
            log.warning("rendezvous port taken before use (%s); retrying on another", exc)
