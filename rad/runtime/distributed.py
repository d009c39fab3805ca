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


def backend_name(requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_distributed(backend: str = "auto", rank: int | None = None, world_size: int | None = None,
                     master_addr: str | None = None, master_port: int | None = None) -> None:
    """Initialise torch.distributed through DeepSpeed once per process.

    Without arguments and without rendezvous variables this makes a one-rank group,
    which is what a single-process ``rad sft`` needs.
    """
    ensure_torch_extensions_cache()
    import deepspeed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return
    env = os.environ
    env.setdefault("RANK", str(rank if rank is not None else 0))
    env.setdefault("WORLD_SIZE", str(world_size if world_size is not None else 1))
    env.setdefault("LOCAL_RANK", env["RANK"] if world_size is None else str(rank or 0))
    env.setdefault("MASTER_ADDR", master_addr or "127.0.0.1")
    env.setdefault("MASTER_PORT", str(master_port or free_port()))
    deepspeed.init_distributed(dist_backend=backend_name(backend), auto_mpi_discovery=False)
