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
from typing import Any, Mapping

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


def rendezvous_address() -> tuple[str, int]:
    """This node's IP (as Ray sees it, else the host's) and a free port: a group's rendezvous, asked of rank 0."""
    try:
        import ray

        ip = ray.util.get_node_ip_address()
    except Exception:  # outside Ray
        ip = socket.gethostbyname(socket.gethostname())
    return ip, free_port()


def set_rendezvous(rank: int, world_size: int, master_addr: str, master_port: int) -> None:
    """Write the rendezvous variables :func:`init_distributed` joins with (one process per rank)."""
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": "0",
                       "MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port)})


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


def rank_and_world(backend: str = "auto") -> tuple[int, int]:
    """This process's rank and the group's size, initialising the group first if needed."""
    init_distributed(backend)
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def world_size() -> int:
    """Ranks in the process group (1 without one)."""
    initialized = torch.distributed.is_available() and torch.distributed.is_initialized()
    return torch.distributed.get_world_size() if initialized else 1


def barrier() -> None:
    """Wait for every rank (nothing to wait for on one rank)."""
    if world_size() > 1:
        torch.distributed.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself on one rank)."""
    if world_size() == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(sums: Mapping[str, float], count: float) -> tuple[dict[str, float], float]:
    """Per-key sums and a count added over ranks (unchanged on one rank).

    Keys may differ between ranks (a rank whose shard was empty has none); the
    result has every key any rank had. Ranks are added in rank order, so every
    rank gets the same floats.
    """
    if world_size() == 1:
        return dict(sums), count
    parts: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(parts, (dict(sums), count))
    total: dict[str, float] = {}
    for part_sums, _ in parts:
        for k, v in part_sums.items():
            total[k] = total.get(k, 0.0) + v
    return total, sum(c for _, c in parts)
