"""One base trainer for every supervised stage (SFT, reward/cost models, offline preference losses).

Subclasses say how a record becomes an example, how examples batch, and what the
loss is; the base owns the rest: deterministic epoch order from the seed, the
DeepSpeed learner, gradient accumulation, evaluation, metrics, progress,
atomic checkpoints and ``--resume`` (which continues from the exact batch where
the last checkpoint stopped).

The same trainer runs on every rank of a data-parallel group (see
:mod:`rad.runtime.rank_program`): each rank trains on its shard of every optimizer
step's global batch (``micro_batch_size * grad_accum * ranks``,
:mod:`rad.runtime.sharding`), evaluates its share of the held-out batches, and the
metrics are summed over ranks before rank 0 alone logs them. Rank 0 alone writes
metrics and the trainer state; every rank writes its DeepSpeed
shards and RNG state into the same checkpoint directory. The command that runs a
trainer holds its run directory (:func:`rad.runtime.run_dir.open_run`: lock, recorded
``config.yaml``); a resumed trainer cuts the metrics logged after its checkpoint. On one rank every step
sees exactly the batches it saw before ranks existed.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from rad.config import field, to_dict
from rad.errors import ConfigError, DataError
from rad.runtime.checkpoint import (checkpoint_dir, latest_checkpoint, prune_checkpoints, read_trainer_state,
                                    shared_atomic_dir, write_trainer_state)
from rad.runtime.distributed import all_sum, barrier, rank_and_world
from rad.runtime.learner import DeepSpeedLearner, set_seed
from rad.runtime.metrics import MetricsLogger
from rad.runtime.rank_program import run_on_learners
from rad.runtime.run_dir import open_run
from rad.runtime.sharding import eval_batches, micro_batch_indices, steps_per_epoch
from rad.settings import LearnerConfig, LoggingConfig

log = logging.getLogger("rad.algos")


@dataclass
class ScheduleConfig:
    """How long to train and how often to evaluate / checkpoint."""

    epochs: int = field(1, min=1, help="passes over the training set")
    max_steps: int = field(0, min=0, help="stop after this many optimizer steps (0 = no limit)")
    eval_every: int = field(0, min=0, help="evaluate every N optimizer steps (0 = at the end of each epoch)")
    save_every: int = field(0, min=0, help="checkpoint every N optimizer steps (0 = at the end of each epoch)")
    keep_checkpoints: int = field(2, min=0, help="newest checkpoints kept (0 = all)")
    eval_batch_size: int = field(32, min=1, help="rows per forward pass of the held-out evaluation")


def run_supervised(program: Callable[[Any], dict[str, Any]], cfg: Any, name: str) -> dict[str, Any]:
    """The command of a supervised stage: hold ``cfg.output_dir`` (:func:`rad.runtime.run_dir.open_run`: lock,
    recorded config), then ``program(cfg)`` on ``cfg.resources.num_learners`` ranks; or a finished run's summary."""
    with open_run(cfg) as finished:
        if finished is not None:
            return finished
        return run_on_learners(program, cfg, resources=cfg.resources, name=name, actor_logs=cfg.logging.actor_logs)


class SupervisedTrainer:
    """Base class: subclass and implement :meth:`encode`, :meth:`collate`, :meth:`compute_loss`."""

    #: metric namespace, e.g. ``train/loss``
    stage = "train"

    def __init__(self, model: torch.nn.Module, train_records: Sequence[Any], eval_records: Sequence[Any],
                 learner_cfg: LearnerConfig, schedule: ScheduleConfig, logging_cfg: LoggingConfig,
                 output_dir: str | Path, seed: int = 0, config: Any = None):
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.seed = seed
        self.schedule = schedule
        self.learner_cfg = learner_cfg
        self.logging_cfg = logging_cfg
        self.config = config
        set_seed(seed)
        self.train_examples = [self.encode(r) for r in train_records]
        self.eval_examples = [self.encode(r) for r in eval_records]
        if not self.train_examples:
            raise DataError("the training set is empty after filtering; check the data specs")
        self.micro = learner_cfg.micro_batch_size
        self.rank, self.world_size = rank_and_world(learner_cfg.backend)
        # Whole optimizer steps only, so every checkpoint falls on an accumulation boundary.
        self.steps_per_epoch = steps_per_epoch(len(self.train_examples), self.micro, learner_cfg.grad_accum,
                                               self.world_size)
        #: micro batches per epoch on this rank
        self.batches_per_epoch = self.steps_per_epoch * learner_cfg.grad_accum
        total = self.steps_per_epoch * schedule.epochs
        self.total_steps = min(total, schedule.max_steps) if schedule.max_steps else total
        self.learner = DeepSpeedLearner(model, learner_cfg, total_steps=self.total_steps)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self._eval_step = -1
        self.initial_eval: dict[str, float] = {}
        self._logger: MetricsLogger | None = None
        #: (step, metrics.jsonl bytes) of the checkpoint a resumed run continues (see MetricsLogger)
        self._metrics_resume: tuple[int, int | None] | None = None

    # -- subclass hooks ----------------------------------------------------------
    def encode(self, record: Any) -> Any:
        raise NotImplementedError

    def collate(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def compute_loss(self, batch: dict[str, torch.Tensor], train: bool) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss for a micro batch and metrics to average (weighted by batch size)."""
        raise NotImplementedError

    def on_eval_end(self, metrics: dict[str, float]) -> dict[str, float]:
        """Add stage-specific eval metrics (e.g. accuracy plots); default: unchanged."""
        return metrics

    # -- data order --------------------------------------------------------------
    def epoch_order(self, epoch: int) -> list[int]:
        """A permutation fixed by (seed, epoch): the same on resume and on every rank."""
        order = list(range(len(self.train_examples)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.learner.device) if torch.is_tensor(v) else v for k, v in batch.items()}

    # -- evaluation --------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out metrics (averaged over examples), each rank scoring its share of the batches."""
        if not self.eval_examples:
            return {}
        self.learner.eval()
        sums: dict[str, float] = {}
        count = 0
        for rows, counted in eval_batches(len(self.eval_examples), self.schedule.eval_batch_size, self.rank,
                                          self.world_size):
            chunk = self.eval_examples[rows.start: rows.stop]
            _, metrics = self.compute_loss(self._to_device(self.collate(chunk)), train=False)
            if not counted:
                continue
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(chunk)
            count += len(chunk)
        sums, count = all_sum(sums, count)
        self.learner.train()
        return self.on_eval_end({f"eval/{k}": v / count for k, v in sums.items()})

    # -- checkpoints -------------------------------------------------------------
    def trainer_state(self) -> dict[str, Any]:
        """What resume needs besides the engine; ``batch_in_epoch`` counts this rank's micro batches."""
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "seed": self.seed,
                "world_size": self.world_size,
                "metrics_offset": self._logger.position() if self._logger is not None else None}

    def save_checkpoint(self) -> Path:
        """A checkpoint of every rank (a collective: all ranks call it at the same step)."""
        final = checkpoint_dir(self.output_dir, self.step)
        with shared_atomic_dir(final) as tmp:
            self.learner.save_checkpoint(tmp)
            write_trainer_state(tmp, self.trainer_state(), rank=self.rank)
        if self.rank == 0:
            prune_checkpoints(self.output_dir, self.schedule.keep_checkpoints)
        barrier()
        return final

    def resume(self) -> bool:
        ckpt = latest_checkpoint(self.output_dir)
        if ckpt is None:
            log.info("no checkpoint in %s; starting from scratch", self.output_dir)
            self._metrics_resume = (0, 0)  # the rows of an attempt cut before its first checkpoint are redone
            return False
        state = read_trainer_state(ckpt, restore_rng=False)
        saved_world = state.get("world_size", 1)
        if saved_world != self.world_size:
            raise ConfigError(f"resources.num_learners: {ckpt} was written by {saved_world} learner rank(s) and "
                              f"this run has {self.world_size}; resume with resources.num_learners={saved_world} "
                              "(the data position and the optimizer's shards depend on it)")
        self.learner.load_checkpoint(ckpt)
        state = read_trainer_state(ckpt, rank=self.rank)
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self._metrics_resume = (self.step, state.get("metrics_offset"))
        log.info("resumed from %s (step %d, epoch %d, batch %d)", ckpt, self.step, self.epoch, self.batch_in_epoch)
        return True

    # -- the loop ----------------------------------------------------------------
    def _micro_batch(self, order: list[int], index: int) -> dict[str, torch.Tensor]:
        """This rank's micro batch ``index`` of the epoch (cyclic, so every micro batch is full)."""
        idx = micro_batch_indices(order, index, self.micro, self.learner_cfg.grad_accum, self.rank, self.world_size)
        return self._to_device(self.collate([self.train_examples[i] for i in idx]))

    def _log_eval(self, logger: MetricsLogger) -> dict[str, float]:
        self._eval_step = self.step
        return logger.log(self.evaluate(), step=self.step)

    def _logging(self) -> LoggingConfig:
        """The run's sinks on rank 0; none on the other ranks (their metrics reach rank 0 through all_sum)."""
        if self.rank == 0:
            return self.logging_cfg
        return dataclasses.replace(self.logging_cfg, tensorboard=False, jsonl=False, wandb=False, mlflow=False,
                                   progress=False)

    def train(self, resume: bool = False) -> dict[str, float]:
        """Run to ``total_steps``; returns the final evaluation metrics."""
        from tqdm.auto import tqdm

        if resume:
            self.resume()
        sched = self.schedule
        last_eval: dict[str, float] = {}
        metrics_cfg = to_dict(self.config) if self.config is not None else None
        logging_cfg = self._logging()
        with MetricsLogger(self.output_dir, logging_cfg, config=metrics_cfg, resume=self._metrics_resume) as logger:
            self._logger = logger
            if self.step == 0:
                last_eval = self.initial_eval = self._log_eval(logger)
            bar = tqdm(total=self.total_steps, initial=self.step, desc=self.stage, unit="step",
                       disable=not logging_cfg.progress, dynamic_ncols=True)
            self.learner.train()
            accum: dict[str, float] = {}
            accum_n = 0
            tick = time.perf_counter()
            while self.step < self.total_steps and self.epoch < sched.epochs:
                order = self.epoch_order(self.epoch)
                while self.batch_in_epoch < self.batches_per_epoch and self.step < self.total_steps:
                    loss, metrics = self.compute_loss(self._micro_batch(order, self.batch_in_epoch), train=True)
                    self.learner.backward(loss)
                    stepped = self.learner.step()
                    self.batch_in_epoch += 1
                    for k, v in metrics.items():
                        accum[k] = accum.get(k, 0.0) + float(v)
                    accum_n += 1
                    if not stepped:
                        continue
                    self.step += 1
                    bar.update(1)
                    if self.step % self.logging_cfg.log_every == 0:
                        now = time.perf_counter()
                        sums, n = all_sum(accum, accum_n)
                        row = {f"{self.stage}/{k}": v / n for k, v in sums.items()}
                        row[f"{self.stage}/lr"] = self.learner.lr()
                        norm = self.learner.grad_norm()
                        if norm is not None:
                            row[f"{self.stage}/grad_norm"] = norm
                        row[f"{self.stage}/epoch"] = self.epoch + self.batch_in_epoch / self.batches_per_epoch
                        row["timing/step"] = (now - tick) / self.logging_cfg.log_every
                        tick = now
                        logger.log(row, step=self.step)
                        bar.set_postfix(loss=f"{row.get(f'{self.stage}/loss', float('nan')):.3f}")
                        accum, accum_n = {}, 0
                    if sched.eval_every and self.step % sched.eval_every == 0:
                        last_eval = self._log_eval(logger)
                    if sched.save_every and self.step % sched.save_every == 0:
                        self.save_checkpoint()
                if self.batch_in_epoch >= self.batches_per_epoch:
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    if not sched.eval_every:
                        last_eval = self._log_eval(logger)
                    if not sched.save_every:
                        self.save_checkpoint()
            bar.close()
            if checkpoint_dir(self.output_dir, self.step) != latest_checkpoint(self.output_dir):
                self.save_checkpoint()
            if self._eval_step != self.step:
                last_eval = self._log_eval(logger)
        self._logger = None
        return last_eval
