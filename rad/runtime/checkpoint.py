"""Atomic checkpoint directories and trainer state.

A checkpoint is a directory ``<run>/checkpoints/step-<N>`` written first under a
temporary name in the same parent and renamed into place, so a run killed while
saving never leaves a half-written checkpoint that ``--resume`` would pick up.
The trainer state (step, epoch, data position, RNG states, algorithm scalars such
as lambda) lives in ``trainer_state.json`` + ``rng.pt`` inside it.
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


def write_trainer_state(ckpt_dir: str | Path, state: dict[str, Any]) -> None:
    ckpt_dir = Path(ckpt_dir)
    (ckpt_dir / "trainer_state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
    torch.save(rng_state(), ckpt_dir / "rng.pt")


def read_trainer_state(ckpt_dir: str | Path, restore_rng: bool = True) -> dict[str, Any]:
    ckpt_dir = Path(ckpt_dir)
    state = json.loads((ckpt_dir / "trainer_state.json").read_text())
    if restore_rng and (ckpt_dir / "rng.pt").exists():
        # Our own file, written by write_trainer_state: it holds numpy RNG tuples, not tensors only.
        set_rng_state(torch.load(ckpt_dir / "rng.pt", weights_only=False))
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
