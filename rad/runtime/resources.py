"""How the roles of an online RL run map to Ray resources (the cluster is joined or started by
:func:`rad.runtime.local_ray.ensure_ray`).

One :class:`ResourcesConfig` (the ``resources:`` section of ``rad rl`` and ``rad baseline
ppo-lag``) says how many actors each role has and what each reserves. The device of every
role follows from it: an actor that reserved a GPU runs on it
(:func:`rad.runtime.distributed.role_device`), one that did not runs on the CPU, through the
same code.
"""

from __future__ import annotations

from dataclasses import dataclass

from rad.config import field
from rad.errors import ConfigError


@dataclass
class ResourcesConfig:
    """How roles map to Ray resources (CPUs/GPUs per actor; fractions share a GPU)."""

    num_learners: int = field(1, min=1, help="data-parallel DeepSpeed ranks (one Ray actor each)")
    cpus_per_learner: float = field(1.0, gt=0, help="Ray CPUs of each learner rank's actor")
    gpus_per_learner: float = field(0.0, min=0, help="GPU share of each learner rank's actor (0 = CPU)")
    cpus_per_reference: float = field(1.0, gt=0, help="Ray CPUs of the reference-policy actor")
    gpus_per_reference: float = field(0.0, min=0, help="GPU share of the reference-policy actor (0 = CPU)")
    num_scorers: int = field(1, min=1, help="scorer actors (each holds the reward and cost models); batches are "
                                           "split across them")
    cpus_per_scorer: float = field(1.0, gt=0, help="Ray CPUs of each scorer actor")
    gpus_per_scorer: float = field(0.0, min=0, help="GPU share of each scorer actor (0 = CPU)")
    scorer_dtype: str = field("auto", choices=("auto", "float32", "bfloat16", "float16"),
                              help="reward/cost model dtype in the scorers; auto = bf16 on a GPU that supports it")
    scorer_micro_batch_size: int = field(32, min=1, help="(prompt, response) pairs per scorer forward pass")
    threads_per_actor: int = field(1, min=1, help="torch/OpenMP threads of every role's actor (OMP_NUM_THREADS)")
    ray_address: str = field("", help="'' = start a local Ray cluster, 'auto' = connect to a running one")
    placement: str = field("none", choices=("none", "pack", "spread", "strict_pack", "strict_spread"),
                           help="reserve all roles in one Ray placement group with this strategy (none = "
                                "plain per-actor resources)")
    colocate_rollout: bool = field(False, help="rollout engine i shares learner rank i's bundle (GPU)")
    colocate_models: bool = field(False, help="the reference and the scorers share learner rank 0's bundle "
                                              "(its GPU, with gpus_per_reference / gpus_per_scorer as their "
                                              "shares); needs placement")
    placement_timeout_s: float = field(120.0, gt=0, help="seconds to wait for the placement group's bundles "
                                                         "before failing with what the cluster lacks")
    ray_num_cpus: int = field(0, min=0, help="logical CPUs of a local cluster (0 = enough for all actors)")

    def validate(self) -> None:
        if self.colocate_models and self.placement == "none":
            raise ConfigError("resources.colocate_models needs resources.placement (e.g. pack): the reference "
                              "and the scorers join learner rank 0's placement bundle")
