"""Run one program on every data-parallel learner rank: SPMD, as ``torchrun`` would, but placed by Ray.

A supervised stage is one function (e.g. :func:`rad.algos.sft.sft_program`) that
every rank runs whole: it loads the data, builds its
:class:`~rad.algos.supervised.SupervisedTrainer` (whose DeepSpeed engine joins the
group), trains on its shard and, on rank 0 only, writes the run's files. The
function is the same on one rank and on many; :func:`run_on_learners` only says
where its copies run:

* one rank without ``ray_address``: in this process. Nothing to place, and Ray
  would cost more than the work of a small stage: on 2 CPU cores a 4-step tiny SFT
  took 0.2 s in process, 7.2 s as one Ray actor (which imports torch, transformers
  and DeepSpeed afresh) plus 5.4 s to start a local cluster.
* otherwise: one :class:`RankProgram` Ray actor per rank with
  ``cpus_per_learner`` / ``gpus_per_learner``; each joins the group at rank 0's
  address and runs on the device Ray gave it (gloo on CPU, NCCL on GPU).

The result is rank 0's. When a rank fails, the others may wait in a collective
forever, so the first failure kills the group and is raised.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, TypeVar

from rad.settings import LearnerResources

log = logging.getLogger("rad.runtime")

T = TypeVar("T")


class RankProgram:
    """A Ray actor that runs a program as one rank of a data-parallel group."""

    def address(self) -> tuple[str, int]:
        """This node's IP and a free port (asked of rank 0: the group's rendezvous)."""
        from rad.runtime.distributed import rendezvous_address

        return rendezvous_address()

    def run(self, rank: int, world_size: int, master_addr: str, master_port: int, cwd: str, threads: int,
            program: Callable[..., T], *args: Any) -> T:
        """``program(*args)`` as rank ``rank`` of ``world_size``, in the driver's working directory when it exists
        here (relative paths in configs then mean the same on every rank of a one-machine cluster)."""
        import torch

        from rad.runtime.distributed import set_rendezvous

        set_rendezvous(rank, world_size, master_addr, master_port)
        if os.path.isdir(cwd):
            os.chdir(cwd)
        torch.set_num_threads(threads)
        return program(*args)


def in_process(res: LearnerResources) -> bool:
    """Whether :func:`run_on_learners` runs the program in this process (one rank, no Ray cluster named)."""
    return res.num_learners == 1 and not res.ray_address


def run_on_learners(program: Callable[..., T], *args: Any, resources: LearnerResources, name: str,
                    actor_logs: bool = False) -> T:
    """``program(*args)`` on ``resources.num_learners`` ranks; rank 0's result (``actor_logs``: the ranks'
    output in this terminal, :func:`rad.runtime.local_ray.ensure_ray`).

    ``program`` must be importable by module and name (a top-level function) so Ray
    workers can load it. A local Ray cluster started here is shut down at the end.
    """
    if in_process(resources):
        return program(*args)
    import ray

    from rad.runtime.local_ray import ensure_ray
    from rad.runtime.worker_group import WorkerGroup

    n = resources.num_learners
    started = ensure_ray(resources, n * resources.cpus_per_learner, actor_logs=actor_logs)
    group = None
    try:
        group = WorkerGroup(RankProgram, n, num_cpus=resources.cpus_per_learner,
                            num_gpus=resources.gpus_per_learner, name=f"{name}-learner")
        addr, port = group.rank0("address")
        threads = max(1, int(resources.cpus_per_learner))
        log.info("%s on %d learner ranks (rendezvous %s:%d)", name, n, addr, port)
        refs = [actor.run.remote(rank, n, addr, port, os.getcwd(), threads, program, *args)
                for rank, actor in enumerate(group.actors)]
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            ray.get(done)  # a failed rank raises here, before the others are waited for
        return ray.get(refs[0])
    finally:
        if group is not None:
            group.shutdown()
        if started:
            ray.shutdown()
