"""Placement of roles (learner, reference, scorer, rollout) onto a Ray placement group.

A role is ``count`` actors, each needing ``num_cpus`` / ``num_gpus``. Every actor of
a role gets one bundle of the placement group, except for a role *colocated* with
another (``colocate_with="learner"``): its actor ``i`` shares bundle ``i`` of the
host role, and that bundle reserves the sum of both actors' resources. That is how
a rollout engine and a learner rank share one GPU (``num_gpus=0.5`` each) or one
node (``num_gpus=1`` each, bundle of 2 GPUs on the same node).

    placement = place_roles({"learner": RoleResources(2, num_cpus=4, num_gpus=1),
                             "rollout": RoleResources(2, num_cpus=2, num_gpus=0.5, colocate_with="learner")})
    actor_cls.options(num_cpus=4, num_gpus=1, scheduling_strategy=placement.strategy("learner", 0))

Reserving everything in one group up front means a job either gets all its
resources or fails with a clear message before any model is loaded, instead of
leaving half of its actors pending.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from rad.errors import ConfigError, RadError

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass(frozen=True)
class RoleResources:
    """What one role needs: ``count`` actors of ``num_cpus`` CPUs and ``num_gpus`` GPUs each."""

    count: int
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    colocate_with: str = ""  # name of the role whose bundles this role's actors share


def plan_bundles(roles: Mapping[str, RoleResources]) -> tuple[list[dict[str, float]], dict[str, list[int]]]:
    """The placement-group bundles and, per role, the bundle index of each of its actors.

    Roles that are not colocated get their own bundles, in the mapping's order; a
    colocated role's actor ``i`` goes to the host role's bundle ``i``. Raises
    :class:`ConfigError` naming the role for unknown hosts, chains of colocation,
    more guests than host actors, or a role that needs no resources at all.
    """
    bundles: list[dict[str, float]] = []
    assignment: dict[str, list[int]] = {}
    for name, role in roles.items():
        if role.count < 0 or role.num_cpus < 0 or role.num_gpus < 0:
            raise ConfigError(f"placement role {name!r}: count and resources must be >= 0, got {role}")
        if role.count and role.num_cpus == 0 and role.num_gpus == 0:
            raise ConfigError(f"placement role {name!r}: needs CPUs or GPUs to be placed, got neither")
        if role.colocate_with:
            continue
        assignment[name] = list(range(len(bundles), len(bundles) + role.count))
        bundles.extend({"CPU": float(role.num_cpus), "GPU": float(role.num_gpus)} for _ in range(role.count))
    for name, role in roles.items():
        if not role.colocate_with:
            continue
        host = roles.get(role.colocate_with)
        if host is None:
            raise ConfigError(f"placement role {name!r}: colocate_with={role.colocate_with!r} is not a role; "
                              f"roles are {sorted(roles)}")
        if host.colocate_with:
            raise ConfigError(f"placement role {name!r}: host {role.colocate_with!r} is itself colocated with "
                              f"{host.colocate_with!r}; colocate both with {host.colocate_with!r}")
        if role.count > host.count:
            raise ConfigError(f"placement role {name!r}: {role.count} actors cannot share the bundles of "
                              f"{role.colocate_with!r}, which has {host.count}")
        assignment[name] = assignment[role.colocate_with][: role.count]
        for index in assignment[name]:
            bundles[index]["CPU"] += role.num_cpus
            bundles[index]["GPU"] += role.num_gpus
    # Ray rejects zero-valued entries only when a bundle is all zeros; dropping zeros keeps bundles readable.
    return [{k: v for k, v in b.items() if v > 0} for b in bundles], assignment


def total_resources(bundles: list[dict[str, float]]) -> dict[str, float]:
    """Sum of the bundles' resources (what the cluster must have free)."""
    total: dict[str, float] = {}
    for bundle in bundles:
        for key, value in bundle.items():
            total[key] = total.get(key, 0.0) + value
    return total


class Placement:
    """A ready placement group and the bundle of every role's actors."""

    def __init__(self, group: Any, bundles: list[dict[str, float]], assignment: dict[str, list[int]]):
        self.group = group
        self.bundles = bundles
        self.assignment = assignment

    def strategy(self, role: str, rank: int):
        """The ``scheduling_strategy`` for actor ``rank`` of ``role`` (pass it to ``.options``)."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        if role not in self.assignment:
            raise KeyError(f"placement has no role {role!r}; roles are {sorted(self.assignment)}")
        return PlacementGroupSchedulingStrategy(placement_group=self.group,
                                                placement_group_bundle_index=self.assignment[role][rank],
                                                placement_group_capture_child_tasks=True)

    def strategies(self, role: str) -> list:
        """One scheduling strategy per actor of ``role``, in rank order."""
        return [self.strategy(role, rank) for rank in range(len(self.assignment[role]))]

    def remove(self) -> None:
        """Release the reserved resources (actors still in the group are killed by Ray)."""
        from ray.util import remove_placement_group

        remove_placement_group(self.group)


def place_roles(roles: Mapping[str, RoleResources], strategy: str = "PACK", timeout_s: float = 120.0,
                name: str = "") -> Placement:
    """Reserve a placement group for ``roles`` on the connected Ray cluster and wait until it is ready.

    ``strategy`` is Ray's: PACK (as few nodes as possible), SPREAD, STRICT_PACK (one
    node), STRICT_SPREAD (one node per bundle). If the group cannot be placed within
    ``timeout_s`` it is removed and :class:`RadError` says what was asked and what the
    cluster has.
    """
    import ray
    from ray.util import placement_group, remove_placement_group

    if strategy not in STRATEGIES:
        raise ConfigError(f"placement strategy: expected one of {STRATEGIES}, got {strategy!r}")
    bundles, assignment = plan_bundles(roles)
    if not bundles:
        raise ConfigError(f"placement: no actors to place in roles {sorted(roles)}")
    group = placement_group(bundles, strategy=strategy, name=name)
    if not group.wait(timeout_seconds=timeout_s):
        remove_placement_group(group)
        total = {k: ray.cluster_resources().get(k, 0.0) for k in ("CPU", "GPU")}
        free = {k: ray.available_resources().get(k, 0.0) for k in ("CPU", "GPU")}
        raise RadError(f"placement group {name or '(unnamed)'} with strategy {strategy} was not placed within "
                       f"{timeout_s:g} s: it needs {total_resources(bundles)} as bundles {bundles}; the cluster "
                       f"has {total} in total and {free} free")
    return Placement(group, bundles, assignment)
