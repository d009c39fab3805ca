"""The machine-wide cache: built ops, the tiny model, the embedded world, dataset downloads."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$RAD_CACHE``, else ``~/.cache/rad``."""
    return Path(os.environ.get("RAD_CACHE") or Path.home() / ".cache" / "rad")
