"""Starting a local Ray cluster that survives a busy machine.

Ray waits a fixed 30 s for its raylet to register (``ray/_private/node.py``, not
configurable); on a 2-core machine under load the start can miss that window. A
missed start leaves nothing behind after ``ray.shutdown()``, so it is retried.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("rad.runtime")

_STARTUP_TIMEOUT = "timed out during startup"


def init_local_ray(attempts: int = 3, **kwargs: Any) -> None:
    """``ray.init(**kwargs)`` for a new local cluster, retried when the node misses Ray's startup window."""
    import ray

    for attempt in range(1, attempts + 1):
        try:
            ray.init(**kwargs)
            return
        except Exception as exc:  # Ray raises a bare Exception for this case
            if _STARTUP_TIMEOUT not in str(exc) or attempt == attempts:
                raise
            log.warning("local Ray node missed its startup window (attempt %d of %d); retrying", attempt, attempts)
            ray.shutdown()
            time.sleep(2.0 * attempt)
