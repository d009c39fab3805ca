"""Worker groups: one role (learner, reference, scorer, rollout) as N Ray actors with declared dispatch.

The controller (driver) never touches a model; it calls a group, and the group
says how arguments reach its actors (verl's idea):

* ``broadcast(method, *args)``   the same call on every actor, results in rank order
* ``scatter(method, shards)``    shard i goes to actor i, results in rank order
* ``split(method, items)``       a list (or a :class:`~rad.runtime.batch.TokenBatch`) cut into
  contiguous near-equal shards, results concatenated (lists, or tensors along the batch)
  (``split_async`` + ``concat``: the same without blocking, so roles can overlap)
* ``rank0(method, *args)``       only the first actor (e.g. "give me the weights")

Actors are placed by resources (``num_cpus``/``num_gpus`` per actor), optionally
into a placement group bundle each, so the same config runs on this CPU machine
and on a GPU cluster.
"""

from __future__ import annotations

from typing import Any, Sequence


def split_evenly(items: Sequence[Any], parts: int) -> list[list[Any]]:
    """Contiguous shards whose sizes differ by at most one (order preserved)."""
    n = len(items)
    base, extra = divmod(n, parts)
    shards, start = [], 0
    for i in range(parts):
        size = base + (1 if i < extra else 0)
        shards.append(list(items[start: start + size]))
        start += size
    return shards


class WorkerGroup:
    """``n`` Ray actors of ``cls`` constructed with the same arguments."""

    def __init__(self, cls: type, n: int, *args: Any, num_cpus: float = 1, num_gpus: float = 0,
                 name: str = "", env: dict[str, str] | None = None,
                 scheduling_strategies: Sequence[Any] | None = None, **kwargs: Any):
        import ray

        if n < 1:
            raise ValueError(f"worker group {name or cls.__name__}: needs at least one actor, got {n}")
        self.name = name or cls.__name__
        remote_cls = ray.remote(cls)
        options: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": num_gpus}
        if env:
            options["runtime_env"] = {"env_vars": dict(env)}
        strategies = list(scheduling_strategies or [None] * n)
        if len(strategies) != n:
            raise ValueError(f"worker group {self.name}: {len(strategies)} scheduling strategies for {n} actors")
        self.actors = [remote_cls.options(**options, **({"scheduling_strategy": st} if st is not None else {}))
                       .remote(*args, **kwargs) for st in strategies]

    def __len__(self) -> int:
        return len(self.actors)

    @staticmethod
    def _get(refs: list) -> list:
        import ray

        return ray.get(refs)

    def broadcast(self, method: str, *args: Any, **kwargs: Any) -> list:
        return self._get([getattr(a, method).remote(*args, **kwargs) for a in self.actors])

    def broadcast_async(self, method: str, *args: Any, **kwargs: Any) -> list:
        return [getattr(a, method).remote(*args, **kwargs) for a in self.actors]

    def scatter(self, method: str, shards: Sequence[Any], **kwargs: Any) -> list:
        return self._get(self.scatter_async(method, shards, **kwargs))

    def scatter_async(self, method: str, shards: Sequence[Any], **kwargs: Any) -> list:
        """:meth:`scatter` without waiting: one call per actor with its shard, the object refs."""
        if len(shards) != len(self.actors):
            raise ValueError(f"{self.name}: {len(shards)} shards for {len(self.actors)} actors")
        return [getattr(a, method).remote(s, **kwargs) for a, s in zip(self.actors, shards)]

    def split(self, method: str, items: Sequence[Any], **kwargs: Any) -> list:
        """Cut ``items`` over the actors (empty shards skipped) and concatenate the results."""
        return self.concat(self.split_async(method, items, **kwargs))

    def split_async(self, method: str, items: Sequence[Any], **kwargs: Any) -> list:
        """:meth:`split` without waiting: the shards' object refs, for :meth:`concat` (other roles can work
        meanwhile)."""
        from rad.runtime.batch import TokenBatch

        if isinstance(items, TokenBatch):
            shards = items.split(len(self.actors))  # non-empty shards only
        else:
            shards = [s for s in split_evenly(items, len(self.actors)) if s]
        return [getattr(a, method).remote(s, **kwargs) for a, s in zip(self.actors, shards)]

    @staticmethod
    def concat(refs: list):
        """The results of :meth:`split_async`'s calls, concatenated in shard order (tensors along dim 0)."""
        import ray
        import torch

        parts = ray.get(refs)
        if parts and isinstance(parts[0], torch.Tensor):
            return torch.cat(parts, dim=0)
        out: list = []
        for part in parts:
            out.extend(part)
        return out

    def rank0(self, method: str, *args: Any, **kwargs: Any) -> Any:
        import ray

        return ray.get(getattr(self.actors[0], method).remote(*args, **kwargs))

    def shutdown(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
