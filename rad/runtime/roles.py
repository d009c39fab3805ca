"""The roles of an online RL run, built from config and owned by one object (composition, not inheritance).

:class:`RLRoles` starts (or joins) Ray, reserves the placement group when asked, and builds:

* the **policy learner** ranks (``PolicyLearner`` or an algorithm's subclass of it, e.g. PPO's
  actor) and any further **trained** groups (PPO-Lag's two critics), each ``num_learners``
  DeepSpeed ranks with their own process group;
* the frozen **reference** policy and the **scorers** (reward and cost models), on the device
  Ray assigned them, with their own dtype and micro batches;
* the **rollout** engines (a worker group of HF or vLLM engines), or, with ``rollout.hybrid``,
  the policy learner ranks themselves generating with their own module (no second copy of
  the weights, nothing to sync);
* the learner -> engine **weight sync** (:mod:`rad.runtime.rollout.weight_sync`), driven by
  the learner ranks.

RAD and PPO-Lag each hold one (``self.roles``) and use the same methods to sample, score and
sync. Every role uses the accelerator Ray gave it, or the CPU: there is no GPU-only path.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import torch

from rad.errors import ConfigError
from rad.runtime.local_ray import ensure_ray
from rad.runtime.resources import ResourcesConfig
from rad.runtime.rollout.config import RolloutConfig


@dataclass
class TrainedRole:
    """A role trained on DeepSpeed: its actor class (a ``DeepSpeedRank``) and constructor arguments."""

    cls: type
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def role_resources(res: ResourcesConfig, rollout: RolloutConfig, trained: list[str], gpu: bool) -> dict:
    """What each role reserves, for :func:`rad.runtime.placement.place_roles` (``gpu``: the cluster has GPUs).

    Trained groups (the policy learner, critics) get ``num_learners`` bundles each;
    ``colocate_models`` puts the reference and the scorers into learner rank 0's bundle,
    ``colocate_rollout`` engine i into learner rank i's; a hybrid rollout has no actors.
    """
    from rad.runtime.placement import RoleResources

    models_host = "learner" if res.colocate_models else ""
    learner = RoleResources(res.num_learners, res.cpus_per_learner, res.gpus_per_learner)
    roles = {"learner": learner, **{role: learner for role in trained},
             "reference": RoleResources(1, res.cpus_per_reference, res.gpus_per_reference, colocate_with=models_host),
             "scorer": RoleResources(res.num_scorers, res.cpus_per_scorer, res.gpus_per_scorer,
                                     colocate_with=models_host)}
    if not rollout.hybrid:
        gpus = rollout.num_gpus_per_engine * rollout.vllm_tensor_parallel_size if gpu else 0.0
        roles["rollout"] = RoleResources(rollout.num_engines, rollout.num_cpus_per_engine, gpus,
                                         colocate_with="learner" if res.colocate_rollout else "")
    return roles


class RLRoles:
    """Every actor of an online RL run (see the module docstring)."""

    def __init__(self, *, name: str, res: ResourcesConfig, rollout: RolloutConfig, seed: int, policy_dir: str,
                 reference_dir: str, policy: TrainedRole, trained: dict[str, TrainedRole] | None = None,
                 reward_model: str, cost_model: str, dtype: str = "auto", trust_remote_code: bool = False,
                 allow_pickle: bool = False, reference_micro_batch_size: int = 16,
                 logprob_chunk_size: int = 0, group_by_length: bool = False, prompt_format: str = "",
                 reward_scorer: Any = None,
                 cost_scorer: Any = None, actor_logs: bool = False) -> None:
        import ray

        from rad.models.loading import check_weights
        from rad.runtime.policy_workers import ReferenceWorker
        from rad.runtime.rollout.actors import make_rollout_pool
        from rad.runtime.scorer import Scorer
        from rad.runtime.worker_group import WorkerGroup

        trained = dict(trained or {})
        if rollout.hybrid and res.colocate_rollout:
            raise ConfigError("rollout.hybrid generates with the learner's own module; resources.colocate_rollout "
                              "(a separate engine on the learner's bundle) does not apply: set one of them")
        self.res, self.rollout_cfg = res, rollout
        for what, path in (("policy", policy_dir), ("reference", reference_dir)):
            check_weights(path, allow_pickle, what)  # here, not as a traceback from inside an actor
        n = res.num_learners
        engines = 0 if rollout.hybrid else rollout.num_engines
        needed = ((1 + len(trained)) * n * res.cpus_per_learner + res.cpus_per_reference
                  + res.num_scorers * res.cpus_per_scorer + engines * rollout.num_cpus_per_engine + 1)
        ensure_ray(res, needed, threads=res.threads_per_actor, actor_logs=actor_logs)
        start = time.perf_counter()
        self.placement = self._place(name, trained)
        strategies = (lambda role: self.placement.strategies(role)) if self.placement else (lambda role: None)
        learner_res = dict(num_cpus=res.cpus_per_learner, num_gpus=res.gpus_per_learner)
        self.learners = WorkerGroup(policy.cls, n, *policy.args, **policy.kwargs, **learner_res, name="learner",
                                    scheduling_strategies=strategies("learner"))
        self.trained = {role: WorkerGroup(spec.cls, n, *spec.args, **spec.kwargs, **learner_res, name=role,
                                          scheduling_strategies=strategies(role))
                        for role, spec in trained.items()}
        inits = []
        for group in (self.learners, *self.trained.values()):  # one process group each, formed concurrently
            addr, port = group.rank0("address")
            inits += [a.init.remote(rank, n, addr, port, seed) for rank, a in enumerate(group.actors)]
        self.reference_policy = WorkerGroup(ReferenceWorker, 1, reference_dir, dtype,
                                            micro_batch_size=reference_micro_batch_size,
                                            trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
                                            logprob_chunk_size=logprob_chunk_size, group_by_length=group_by_length,
                                            num_cpus=res.cpus_per_reference, num_gpus=res.gpus_per_reference,
                                            name="reference", scheduling_strategies=strategies("reference"))
        # RL policies do emit empty answers (EOS first): every algorithm scores them as the placeholder
        self.scorers = WorkerGroup(Scorer, res.num_scorers, reward_model, cost_model, empty_response="placeholder",
                                   reward_scorer=reward_scorer, cost_scorer=cost_scorer,
                                   dtype=res.scorer_dtype, batch_size=res.scorer_micro_batch_size,
                                   num_cpus=res.cpus_per_scorer, num_gpus=res.gpus_per_scorer, name="scorer",
                                   scheduling_strategies=strategies("scorer"))
        ray.get(inits)
        if rollout.hybrid:
            from rad.runtime.rollout.actors import RolloutPool

            self.learners.broadcast("enable_generation", rollout.micro_batch_size, rollout.hf_kv_cache)
            device = self.learners.rank0("info")["device"]
            self.rollout = RolloutPool(self.learners, "hf", torch.device(device).type, hybrid=True)
        else:
            self.rollout = make_rollout_pool(rollout, policy_dir, seed=seed,
                                             scheduling_strategies=strategies("rollout"),
                                             trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
                                             prompt_format=prompt_format)
        self.transport = self.rollout.connect(self.learners, rollout)
        self.startup_seconds = time.perf_counter() - start

    def _place(self, name: str, trained: dict[str, TrainedRole]):
        """One placement group for every role when ``resources.placement`` asks for it."""
        res = self.res
        if res.placement == "none":
            return None
        from rad.runtime.placement import place_roles
        from rad.runtime.rollout.actors import cluster_device

        roles = role_resources(res, self.rollout_cfg, list(trained), gpu=cluster_device() == "cuda")
        return place_roles(roles, strategy=res.placement.upper(), timeout_s=res.placement_timeout_s,
                           name=f"rad-{name}-{uuid.uuid4().hex[:8]}")  # unique: runs share a cluster

    # -- what every algorithm does with the roles ---------------------------------------------------
    def sample(self, prompts: list[str], n: int, sampling):
        """``n`` rollouts per prompt from the current policy (prompt-major)."""
        return self.rollout.generate(prompts, n, sampling)

    def score_async(self, prompts: list[str], responses: list[str]) -> list:
        """The scorers' calls on contiguous shards, not waited for (see :meth:`gather_scores`)."""
        from rad.runtime.worker_group import split_evenly

        p_shards = split_evenly(prompts, len(self.scorers))
        r_shards = split_evenly(responses, len(self.scorers))
        return [a.score.remote(p, r) for a, p, r in zip(self.scorers.actors, p_shards, r_shards) if p]

    @staticmethod
    def gather_scores(refs: list) -> tuple[torch.Tensor, torch.Tensor]:
        """(rewards, costs) of :meth:`score_async`'s calls, float64 ``[B]`` each, in sample order."""
        import ray

        rewards, costs = [], []
        for out in ray.get(refs):
            rewards.append(torch.tensor(out["rewards"], dtype=torch.float64).reshape(-1))  # copies the read-only array
            costs.append(torch.tensor(out["costs"], dtype=torch.float64).reshape(-1))
        return torch.cat(rewards), torch.cat(costs)

    def score(self, prompts: list[str], responses: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gather_scores(self.score_async(prompts, responses))

    def sync_weights(self):
        """Learner ranks -> engines (rank 0 sends; ZeRO-3 ranks gather bucket by bucket); rank 0's SyncStats.

        Engines sleeping between generations (``rollout.vllm_sleep_level``) get their weight
        memory back first; their KV cache stays released until they next generate.
        """
        if self.rollout_cfg.vllm_sleep_level and not self.rollout.hybrid:
            self.rollout.group.broadcast("wake_up", ["weights"])
        return self.learners.broadcast("sync_weights")[0]

    def groups(self) -> dict[str, Any]:
        """Every role's worker group by role name (no rollout group when the learners generate)."""
        groups = {"learner": self.learners, **self.trained, "reference": self.reference_policy, "scorer": self.scorers}
        if not self.rollout.hybrid:
            groups["rollout"] = self.rollout.group
        return groups

    def memory(self) -> dict[str, Any]:
        """Peak memory of every role's actors (accelerator bytes where they have one, else the process's RSS)."""
        return {role: group.broadcast("memory_stats") for role, group in self.groups().items()}

    def profile_start(self) -> None:
        """Start the PyTorch profiler in every actor (:mod:`rad.runtime.profiling`)."""
        import ray

        ray.get([ref for group in self.groups().values() for ref in group.broadcast_async("profile_start")])

    def profile_stop(self, out_dir, trace: bool = False, row_limit: int = 20) -> dict[str, dict[str, Any]]:
        """Stop every actor's profiler; its summary by ``<role>-<rank>`` (Chrome traces into ``out_dir``)."""
        import ray

        names, refs = [], []
        for role, group in self.groups().items():
            group_names = [f"{role}-{rank}" for rank in range(len(group))]
            paths = [str(out_dir / f"{name}.trace.json") if trace else None for name in group_names]
            names += group_names
            refs += group.scatter_async("profile_stop", paths, row_limit=row_limit)
        return dict(zip(names, ray.get(refs)))

    def shutdown(self) -> None:
        self.rollout.shutdown()
        for group in (self.learners, *self.trained.values(), self.reference_policy, self.scorers):
            group.shutdown()
        if self.placement is not None:
            self.placement.remove()
