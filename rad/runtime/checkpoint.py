"""Atomic checkpoint directories and trainer state.

A checkpoint is a directory ``<run>/checkpoints/step-<N>`` written first under a
temporary name in the same parent and renamed into place, so a run killed while
saving never leaves a half-written checkpoint that ``--resume`` would pick up.
The trainer state (step, epoch, data position, RNG states, algorithm scalars such
as lambda) lives in ``trainer_state.json`` + ``rng.pt`` inside it; with several
data-parallel ranks (:func:`shared_atomic_dir`) each rank also keeps its own RNG
state (``rng-rank<r>.pt``).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

_STEP_DIR = re.compile(r"^step-(\d+)$")


@contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``final`` only if the block succeeds.

    An existing ``final`` is replaced (moved aside, then deleted) so the swap is
    a pair of renames on the same filesystem.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def shared_atomic_dir(final: str | Path) -> Iterator[Path]:
    """:func:`atomic_dir` for every rank of the process group at once (a collective).

    Rank 0 makes the temporary directory and tells the others its name; every rank
    writes into it; once all are done, rank 0 renames it into place. On one rank it
    is :func:`atomic_dir`.
    """
    from rad.runtime.distributed import barrier, broadcast_object, world_size

    if world_size() == 1:
        with atomic_dir(final) as tmp:
            yield tmp
        return
    if torch.distributed.get_rank() == 0:
        with atomic_dir(final) as tmp:
            broadcast_object(str(tmp))
            yield tmp
            barrier()
    else:
        yield Path(broadcast_object(None))
        barrier()
    barrier()  # the rename is done before any rank goes on


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _rng_file(ckpt_dir: Path, rank: int) -> Path:
    return ckpt_dir / ("rng.pt" if rank == 0 else f"rng-rank{rank}.pt")


def write_trainer_state(ckpt_dir: str | Path, state: dict[str, Any], rank: int = 0) -> None:
    """Rank 0 writes ``state`` and its RNG state; another rank only its own RNG state."""
    ckpt_dir = Path(ckpt_dir)
    if rank == 0:
        (ckpt_dir / "trainer_state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
    torch.save(rng_state(), _rng_file(ckpt_dir, rank))


def read_trainer_state(ckpt_dir: str | Path, restore_rng: bool = True, rank: int = 0) -> dict[str, Any]:
    """The state rank 0 wrote; restores ``rank``'s own RNG state when asked."""
    ckpt_dir = Path(ckpt_dir)
    state = json.loads((ckpt_dir / "trainer_state.json").read_text())
    rng = _rng_file(ckpt_dir, rank)
    if restore_rng and rng.exists():
        # Our own file, written by write_trainer_state: it holds numpy RNG tuples, not tensors only.
        set_rng_state(torch.load(rng, weights_only=False))
    return state


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first (temporary dirs are ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = _STEP_DIR.match(child.name)
        if m and (child / "trainer_state.json").exists():
            found.append((int(m.group(1)), child))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1][1] if ckpts else None


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step}"


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints (0 = keep all)."""
    if keep <= 0:
        return
    for _, path in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
