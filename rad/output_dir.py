"""Check, before any work starts, that a command can write its output directory.

A read-only directory (or a path through a file) would otherwise surface as an
``OSError`` traceback from whichever write comes first, possibly after minutes
of work; here it is one :class:`~rad.errors.ConfigError` naming the key and the
directory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from rad.errors import ConfigError


def check_output_dir(path: str | os.PathLike, key: str = "output_dir") -> Path:
    """Create ``path`` (with its parents) and write and remove a probe file in it; the path."""
    out = Path(path).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".rad-write-check-"):
            pass
    except OSError as exc:
        where = exc.filename or out
        raise ConfigError(f"{key}: cannot write to {str(where)!r} ({exc.strerror or exc}); give a writable "
                          "directory") from None
    return out
