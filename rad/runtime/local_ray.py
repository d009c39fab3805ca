"""Starting a local Ray cluster that survives a busy machine.

Ray waits a fixed 30 s for its raylet to register (``ray/_private/node.py``, not
configurable); on a 2-core machine under load the start can miss that window. A
missed start leaves nothing behind after ``ray.shutdown()``, so it is retried.

Ray also lowers every worker to niceness 15 (its ``worker_niceness``), to keep its
own control processes responsive on a shared cluster. A local cluster exists only to
run the caller's roles, and those actors are the work, so they run at the niceness of
the process that starts the cluster instead (run it under ``nice`` to lower them all).
At 15 they yield the CPU to every ordinary process on the machine, and a
niceness-0 trainer on the same machine (``bench/rloo_vs_trl.py``) would get the cores first.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

log = logging.getLogger("rad.runtime")

_STARTUP_TIMEOUT = "timed out during startup"


def init_local_ray(attempts: int = 3, **kwargs: Any) -> None:
    """``ray.init(**kwargs)`` for a new local cluster, retried when the node misses Ray's startup window.

    Workers run at this process's niceness unless ``_system_config`` sets ``worker_niceness``.
    """
    import ray

    kwargs["_system_config"] = {"worker_niceness": os.nice(0), **kwargs.get("_system_config", {})}
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
