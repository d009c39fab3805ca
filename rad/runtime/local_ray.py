"""Starting a local Ray cluster that survives a busy machine, or joining a running one (:func:`ensure_ray`).

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
import math
import os
import time
from typing import Any, Protocol

from rad.runtime.ray_auth import require_token

log = logging.getLogger("rad.runtime")

_STARTUP_TIMEOUT = "timed out during startup"
#: Environment every Ray worker of a run gets (the cache and data roots follow the driver's).
_FORWARDED_ENV = ("RAD_CACHE", "RAD_DATA_ROOT")


class RayResources(Protocol):
    """The keys :func:`ensure_ray` reads (``rad.settings.LearnerResources``, RL's ``resources``)."""

    ray_address: str
    ray_num_cpus: int


def worker_env(threads: int = 1) -> dict[str, str]:
    """Environment variables a run's Ray workers need from the driver (``threads``: each actor's OpenMP threads)."""
    env = {"TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(threads)}
    env.update({k: os.environ[k] for k in _FORWARDED_ENV if k in os.environ})
    return env


def ensure_ray(res: RayResources, needed_cpus: float, threads: int = 1, actor_logs: bool = False) -> bool:
    """Connect to ``res.ray_address`` or start a local cluster, unless Ray is already up.

    Joining a cluster needs its auth token (:func:`rad.runtime.ray_auth.require_token`).

    A local cluster gets ``res.ray_num_cpus`` logical CPUs, or enough for ``needed_cpus``
    (at least 2); every actor gets ``OMP_NUM_THREADS=threads``, so roles sharing a machine
    do not oversubscribe its cores. ``actor_logs`` (``logging.actor_logs``) prints the actors'
    stdout and stderr in this process (``log_to_driver``); otherwise they stay in Ray's session
    logs. Returns True when this call started or joined Ray (the caller then owns ``ray.shutdown()``).
    """
    import ray

    if ray.is_initialized():
        return False
    runtime_env = {"env_vars": worker_env(threads)}
    if res.ray_address:
        require_token(res.ray_address)
        ray.init(address=res.ray_address, runtime_env=runtime_env, log_to_driver=actor_logs)
    else:
        init_local_ray(num_cpus=res.ray_num_cpus or max(2, int(math.ceil(needed_cpus))), include_dashboard=False,
                       runtime_env=runtime_env, log_to_driver=actor_logs)
    return True


def init_local_ray(attempts: int = 3, **kwargs: Any) -> None:
    """``ray.init(**kwargs)`` for a new local cluster, retried when the node misses Ray's startup window.

    Workers run at this process's niceness unless ``_system_config`` sets ``worker_niceness``.
    """
    import ray

    # A worker adds worker_niceness to the niceness it inherits from the raylet, which has this
    # process's: 0 keeps it there (os.nice(0) would double it under `nice`).
    kwargs["_system_config"] = {"worker_niceness": 0, **kwargs.get("_system_config", {})}
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
