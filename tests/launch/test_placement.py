"""rad.runtime.placement: bundle planning (pure) and real placement groups on the session Ray cluster."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rad.errors import ConfigError, RadError
from rad.runtime.placement import RoleResources, place_roles, plan_bundles, total_resources


def test_colocated_role_shares_the_host_bundles():
    bundles, assignment = plan_bundles({
        "learner": RoleResources(2, num_cpus=4, num_gpus=0.5),
        "scorer": RoleResources(1, num_cpus=2, num_gpus=0.25),
        "rollout": RoleResources(2, num_cpus=1, num_gpus=0.5, colocate_with="learner"),
    })
    assert assignment == {"learner": [0, 1], "scorer": [2], "rollout": [0, 1]}
    assert bundles == [{"CPU": 5.0, "GPU": 1.0}, {"CPU": 5.0, "GPU": 1.0}, {"CPU": 2.0, "GPU": 0.25}]


def test_fewer_guests_than_hosts_use_the_first_bundles_and_zero_gpus_are_dropped():
    bundles, assignment = plan_bundles({"learner": RoleResources(3, num_cpus=1),
                                        "reference": RoleResources(1, num_cpus=1, colocate_with="learner")})
    assert assignment["reference"] == [0]
    assert bundles == [{"CPU": 2.0}, {"CPU": 1.0}, {"CPU": 1.0}]


role_lists = st.lists(
    st.tuples(st.integers(0, 3), st.sampled_from([0.0, 0.5, 1.0, 2.0]), st.sampled_from([0.0, 0.25, 1.0]),
              st.booleans()),
    min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(role_lists)
def test_bundles_reserve_exactly_what_the_roles_ask_for(specs):
    # Role r0 is never colocated; others may share r0's bundles when they fit under it.
    roles = {}
    for i, (count, cpus, gpus, colocate) in enumerate(specs):
        if cpus == 0 and gpus == 0:
            cpus = 1.0
        host = "r0" if colocate and i > 0 and count <= specs[0][0] else ""
        roles[f"r{i}"] = RoleResources(count, cpus, gpus, colocate_with=host)
    bundles, assignment = plan_bundles(roles)
    expected_cpu = sum(r.count * r.num_cpus for r in roles.values())
    expected_gpu = sum(r.count * r.num_gpus for r in roles.values())
    total = total_resources(bundles)
    assert total.get("CPU", 0.0) == pytest.approx(expected_cpu)
    assert total.get("GPU", 0.0) == pytest.approx(expected_gpu)
    assert len(bundles) == sum(r.count for r in roles.values() if not r.colocate_with)
    for name, role in roles.items():
        assert len(assignment[name]) == role.count
        if role.colocate_with:
            assert assignment[name] == assignment[role.colocate_with][: role.count]
        else:
            assert len(set(assignment[name])) == role.count


@pytest.mark.parametrize("roles, message", [
    ({"rollout": RoleResources(1, colocate_with="learner")}, "is not a role"),
    ({"learner": RoleResources(1), "rollout": RoleResources(2, colocate_with="learner")}, "cannot share"),
    ({"a": RoleResources(1), "b": RoleResources(1, colocate_with="a"), "c": RoleResources(1, colocate_with="b")},
     "is itself colocated"),
    ({"learner": RoleResources(1, num_cpus=0, num_gpus=0)}, "needs CPUs or GPUs"),
])
def test_invalid_plans_name_the_role(roles, message):
    with pytest.raises(ConfigError, match=message):
        plan_bundles(roles)


def _wait_for_free(ray, group_hex: str, expected: list[float], timeout_s: float = 60.0) -> None:
    """Poll Ray's per-bundle resources (``CPU_group_<i>_<pg id>``) until bundle i has expected[i] CPUs free."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        free = ray.available_resources()
        seen = [free.get(f"CPU_group_{i}_{group_hex}", 0.0) for i in range(len(expected))]
        if seen == pytest.approx(expected):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"bundles free {seen}, expected {expected}")
        time.sleep(0.2)


def test_actors_land_in_their_bundles(ray_cluster):
    ray = ray_cluster

    class Probe:  # defined here so Ray ships it by value (the test module is not importable in workers)
        def group(self) -> str:
            import ray

            return ray.get_runtime_context().get_placement_group_id()

    roles = {"learner": RoleResources(2, num_cpus=1),
             "scorer": RoleResources(1, num_cpus=1),
             "rollout": RoleResources(2, num_cpus=0.5, colocate_with="learner")}
    placement = place_roles(roles, strategy="PACK", timeout_s=60, name="rad-test-placement")
    remote = ray.remote(Probe)
    group_hex = placement.group.id.hex()
    actors = []

    def start(role: str, rank: int) -> None:
        actor = remote.options(num_cpus=roles[role].num_cpus,
                               scheduling_strategy=placement.strategy(role, rank)).remote()
        assert ray.get(actor.group.remote()) == group_hex
        actors.append(actor)

    try:
        assert placement.bundles == [{"CPU": 1.5}, {"CPU": 1.5}, {"CPU": 1.0}]
        _wait_for_free(ray, group_hex, [1.5, 1.5, 1.0])
        # Each actor takes its CPUs out of exactly the bundle the plan gave it.
        start("learner", 1)
        _wait_for_free(ray, group_hex, [1.5, 0.5, 1.0])
        start("rollout", 1)  # engine 1 shares learner 1's bundle
        _wait_for_free(ray, group_hex, [1.5, 0.0, 1.0])
        start("scorer", 0)
        _wait_for_free(ray, group_hex, [1.5, 0.0, 0.0])
        start("rollout", 0)
        _wait_for_free(ray, group_hex, [1.0, 0.0, 0.0])
        assert [len(placement.strategies(r)) for r in roles] == [2, 1, 2]
        with pytest.raises(KeyError, match="no role 'critic'"):
            placement.strategy("critic", 0)
    finally:
        placement.remove()
    assert ray.util.placement_group_table(placement.group)["state"] == "REMOVED"


def test_unplaceable_group_is_removed_and_explained(ray_cluster):
    ray = ray_cluster
    before = {pg_id for pg_id, row in ray.util.placement_group_table().items() if row["state"] != "REMOVED"}
    with pytest.raises(RadError, match=r"not placed within 2 s: it needs \{'CPU': 1.0, 'GPU': 1.0\}"):
        place_roles({"learner": RoleResources(1, num_cpus=1, num_gpus=1)}, timeout_s=2, name="rad-test-gpu")
    after = {pg_id for pg_id, row in ray.util.placement_group_table().items() if row["state"] != "REMOVED"}
    assert after <= before


def test_unknown_strategy_is_a_config_error(ray_cluster):
    with pytest.raises(ConfigError, match="placement strategy"):
        place_roles({"learner": RoleResources(1)}, strategy="BEST")


def test_roles_of_a_run_colocate_models_and_engines_on_the_learners_bundles():
    from rad.runtime.resources import ResourcesConfig
    from rad.runtime.roles import role_resources
    from rad.runtime.rollout.config import RolloutConfig

    res = ResourcesConfig(num_learners=2, gpus_per_learner=0.5, gpus_per_reference=0.25, gpus_per_scorer=0.25,
                          colocate_models=True, colocate_rollout=True, placement="pack")
    rollout = RolloutConfig(num_engines=2, num_gpus_per_engine=0.25)
    bundles, assignment = plan_bundles(role_resources(res, rollout, ["reward_critic"], gpu=True))
    # learner ranks 0, 1, then the critic's two ranks; reference, scorer and engine 0 join learner rank 0
    assert assignment["reference"] == assignment["scorer"] == [0] and assignment["rollout"] == [0, 1]
    assert assignment["reward_critic"] == [2, 3] and len(bundles) == 4
    assert bundles[0]["GPU"] == 0.5 + 0.25 + 0.25 + 0.25 and bundles[1]["GPU"] == 0.75
    hybrid = role_resources(res, RolloutConfig(hybrid=True), [], gpu=True)
    assert "rollout" not in hybrid  # the learners generate themselves
    assert role_resources(res, rollout, [], gpu=False)["rollout"].num_gpus == 0.0
