"""Worker groups on real Ray actors: split dispatch, overlapping roles, and the actors' priority."""

from __future__ import annotations

import os
import time
from pathlib import Path


def echo_class() -> type:
    """Defined in a function so Ray ships the class by value (the test module is not importable in workers)."""

    class Echo:
        """``label``: the shard tagged with the group; ``touch_then_wait_for``: creates its file, waits for the
        other."""

        def __init__(self, tag: str):
            self.tag = tag

        def label(self, items: list[int]) -> list[str]:
            return [f"{self.tag}:{i}" for i in items]

        def touch_then_wait_for(self, items: list[str]) -> list[bool]:
            mine, other = (Path(p) for p in items[0].split("|"))
            mine.touch()
            deadline = time.monotonic() + 120
            while not other.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            return [other.exists()]

        def niceness(self) -> int:
            return os.nice(0)

    return Echo


def test_split_async_then_concat_is_split(ray_cluster):
    from rad.runtime.worker_group import WorkerGroup

    group = WorkerGroup(echo_class(), 2, "g", num_cpus=0.1)
    try:
        items = list(range(5))
        assert group.concat(group.split_async("label", items)) == group.split("label", items)
        assert group.split("label", items) == ["g:0", "g:1", "g:2", "g:3", "g:4"]
    finally:
        group.shutdown()


def test_split_async_lets_two_roles_work_at_once(ray_cluster, tmp_path):
    """Each call waits for the other's file: both finish only if the second starts before the first ends."""
    from rad.runtime.worker_group import WorkerGroup

    a, b = WorkerGroup(echo_class(), 1, "a", num_cpus=0.1), WorkerGroup(echo_class(), 1, "b", num_cpus=0.1)
    try:
        fa, fb = tmp_path / "a", tmp_path / "b"
        refs_a = a.split_async("touch_then_wait_for", [f"{fa}|{fb}"])
        refs_b = b.split_async("touch_then_wait_for", [f"{fb}|{fa}"])
        assert a.concat(refs_a) == [True] and b.concat(refs_b) == [True]
    finally:
        a.shutdown()
        b.shutdown()


def test_local_cluster_actors_run_at_the_drivers_niceness(ray_cluster):
    """``init_local_ray`` overrides Ray's default worker niceness (15) with the starting process's."""
    from rad.runtime.worker_group import WorkerGroup

    group = WorkerGroup(echo_class(), 1, "n", num_cpus=0.1)
    try:
        assert group.broadcast("niceness") == [os.nice(0)]
    finally:
        group.shutdown()
