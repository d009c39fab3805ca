"""What a cached result was computed from, recorded next to it and checked before it is reused.

Every cache a run keeps (the reference particles and reference evaluations of an RL run, the
evaluation arena's generations and scores) stores the *inputs* it was computed from — model
directories' fingerprints, seeds, prompt digests, sampling settings — in a side file
``<cache>.inputs.json``. A later reader passes the inputs it would compute from; the cache is
reused only when they are equal, and :func:`stale_reason` says which ones differ otherwise.

A model directory's fingerprint (:func:`dir_fingerprint`) hashes its files' relative names,
sizes and modification times: cheap (no content is read), changed by retraining or
overwriting, unchanged by moving the directory.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping


def dir_fingerprint(path: str | os.PathLike) -> str:
    """Hash of a directory's files' relative names, sizes and mtimes; a non-directory (a hub id) by its name."""
    root = Path(path)
    if not root.is_dir():
        return "name:" + str(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"\0{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def digest(obj: Any) -> str:
    """A short stable hash of a JSON-able value (e.g. a prompt list)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:24]


def inputs_file(path: str | os.PathLike) -> Path:
    """The side file that records what ``path`` was computed from."""
    path = Path(path)
    return path.with_name(path.name + ".inputs.json")


def _plain(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``inputs`` as they read back from JSON (tuples become lists, ...)."""
    return json.loads(json.dumps(dict(inputs), sort_keys=True, default=str))


def record_inputs(path: str | os.PathLike, inputs: Mapping[str, Any]) -> None:
    """Record that ``path`` (already written) was computed from ``inputs`` (atomic; written after the cache, so a
    cache killed half-way has no record and is recomputed)."""
    side = inputs_file(path)
    tmp = side.with_name(f".{side.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_plain(inputs), indent=1, sort_keys=True))
    os.replace(tmp, side)


def stale_reason(path: str | os.PathLike, inputs: Mapping[str, Any]) -> str | None:
    """None when ``path`` exists and was computed from ``inputs``; else why it cannot be reused."""
    path = Path(path)
    if not path.exists():
        return "is missing"
    try:
        recorded = json.loads(inputs_file(path).read_text())
    except (OSError, ValueError):
        return "records no inputs (written by an older rad, or cut short)"
    want = _plain(inputs)
    changed = sorted(k for k in set(recorded) | set(want) if recorded.get(k) != want.get(k))
    if changed:
        return "was computed from different inputs (" + ", ".join(
            f"{k}: {recorded.get(k)!r} -> {want.get(k)!r}" for k in changed) + ")"
    return None
