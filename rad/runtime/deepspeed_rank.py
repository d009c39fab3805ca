"""``DeepSpeedRank``: one data-parallel rank of any model trained on DeepSpeed, run as a Ray actor.

What every trained role shares, whatever its model: the rendezvous (rank 0's
:meth:`~DeepSpeedRank.address`, then :meth:`~DeepSpeedRank.init` on every rank),
seeding, the DeepSpeed engine, micro batches that match the engine's gradient
accumulation, full weights and checkpoints. A subclass says which model to
train (:meth:`~DeepSpeedRank.build_model`) and what one step computes.
"""

from __future__ import annotations

from typing import Any

import torch

from rad.runtime.distributed import rendezvous_address, set_rendezvous
from rad.runtime.profiling import RoleDiagnostics
from rad.settings import LearnerConfig


class DeepSpeedRank(RoleDiagnostics):
    """A rank's config and DeepSpeed engine (``self.learner``, built by :meth:`init`)."""

    def __init__(self, cfg: LearnerConfig, total_steps: int, dtype: str = "float32",
                 trust_remote_code: bool = False):
        self.cfg = cfg
        self.total_steps = total_steps
        self.dtype = dtype
        self.trust_remote_code = trust_remote_code
        self.learner = None
        self.rank = -1

    def address(self) -> tuple[str, int]:
        """This node's IP and a free port: the rendezvous of a group, asked of its rank 0."""
        return rendezvous_address()

    def build_model(self) -> torch.nn.Module:
        """The model this rank trains (called once, by :meth:`init`, after seeding)."""
        raise NotImplementedError(f"{type(self).__name__} must define build_model()")

    def init(self, rank: int, world_size: int, master_addr: str, master_port: int, seed: int = 0) -> None:
        """Join the process group at ``master_addr:master_port`` and build the DeepSpeed engine."""
        from rad.runtime.learner import DeepSpeedLearner, set_seed

        set_rendezvous(rank, world_size, master_addr, master_port)
        set_seed(seed)
        self.learner = DeepSpeedLearner(self.build_model(), self.cfg, total_steps=self.total_steps)
        self.rank = rank

    def step_micro_batches(self, batch, who: str) -> list:
        """A :class:`~rad.runtime.batch.TokenBatch` cut into the micro batches of one optimizer step (in arrival
        order, or with ``learner.group_by_length`` grouped by length: weigh their losses by :meth:`micro_weight`).

        DeepSpeed steps the optimizer after ``grad_accum`` micro batches; any other
        count would desynchronise it, so that is an error.
        """
        micro, _ = batch.cut_micro_batches(self.cfg.micro_batch_size, self.cfg.group_by_length)
        if len(micro) != self.cfg.grad_accum:
            raise ValueError(f"{who} rank {self.rank}: {len(batch)} samples make {len(micro)} micro batches, "
                             f"but learner.grad_accum={self.cfg.grad_accum}")
        return micro

    def micro_weight(self, micro_batch, batch) -> float:
        """The factor on a micro batch's loss (a mean over its samples) that makes the step's gradient that of the
        mean over ``batch``'s samples, as DeepSpeed averages the ``grad_accum`` micro batches: 1 for the equal
        micro batches of arrival order, ``len(micro_batch) * grad_accum / len(batch)`` for the unequal ones of
        ``learner.group_by_length``."""
        if not self.cfg.group_by_length:
            return 1.0
        return len(micro_batch) * self.cfg.grad_accum / len(batch)

    def info(self) -> dict[str, Any]:
        return {"rank": self.rank, "device": str(self.learner.device) if self.learner else "unset"}

    def diagnostics_device(self):
        return self.learner.device if self.learner else "cpu"

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Full weights (all ranks must call it under ZeRO-3; only rank 0's result is used)."""
        return self.learner.full_state_dict()

    def save_checkpoint(self, ckpt_dir: str) -> None:
        self.learner.save_checkpoint(ckpt_dir)

    def load_checkpoint(self, ckpt_dir: str) -> None:
        self.learner.load_checkpoint(ckpt_dir)
