"""Train a reward or cost model on preference pairs (``rad rm train`` / ``rad cm train``).

One example is one preference pair. A micro batch of B pairs becomes one forward
of 2B sequences: the first B are the response that should score higher for a
reward model (the better one) or lower for a cost model (the safer one), the
last B the other response. Losses are in :mod:`reward_cost_models.losses`.

The backbone starts from ``model.name_or_path`` (normally the SFT policy, as
Safe RLHF does). The run directory gets ``model/`` (see
:mod:`rad.models.score_model`), ``metrics.jsonl``, TensorBoard logs,
checkpoints, ``score_hist.png`` and ``summary.json``. The normalisation
statistics stored with the model are the mean/std of the held-out scores (of
the first 512 training pairs when there is no held-out set).

``resources.num_learners`` ranks train data-parallel (:func:`score_model_program`
on each, see :mod:`rad.runtime.rank_program`); every rank scores the held-out
pairs for the statistics (ZeRO-3 needs every rank in every forward) and rank 0
writes the files.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from rad.algos.assets import load_data, model_dir, resolve_dtype
from rad.algos.supervised import SupervisedTrainer, run_supervised
from rad.errors import DataError
from rad.data.prompt_format import tokenizer_prompt_format
from rad.models.loading import load_tokenizer
from rad.models.score_model import ScoreModel, build_score_model, encode_for_scoring, pad_right
from reward_cost_models.config import ScoreModelConfig
from reward_cost_models.losses import cost_loss, pair_accuracy, reward_loss, safety_sign, sign_accuracy
from reward_cost_models.report import pair_metrics, plot_histogram, score_pairs

log = logging.getLogger("rad.algos")

_STATS_ROWS = 512


@dataclass
class PairExample:
    """Token ids of the response that should score higher (reward) / lower (cost) first, then the other."""

    first: list[int]
    second: list[int]
    first_safe: bool
    second_safe: bool


def check_pairs(records: Sequence[dict[str, Any]], origins: Sequence[str]) -> None:
    """Reject rows with an empty response, naming the file and its row (a score needs response tokens)."""
    for record, origin in zip(records, origins):
        for i in (0, 1):
            text = record[f"response_{i}"]
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{origin}: response_{i} is empty; a score model needs response text")


class ScoreModelTrainer(SupervisedTrainer):
    stage = "train"

    def __init__(self, model: ScoreModel, tokenizer, train_records, eval_records, cfg: ScoreModelConfig):
        self.kind = cfg.kind
        self.tokenizer = tokenizer
        self.max_length = cfg.data.max_length
        self.template = model.score_config.template
        self.reg = cfg.regularization
        super().__init__(model, train_records, eval_records, cfg.learner, cfg.schedule, cfg.logging,
                         cfg.output_dir, seed=cfg.seed, config=cfg)

    def _ids(self, record: dict[str, Any], i: int) -> list[int]:
        return encode_for_scoring(self.tokenizer, record["prompt"], record[f"response_{i}"], self.max_length,
                                  self.template)

    def encode(self, record: dict[str, Any]) -> PairExample:
        key = "better_response_id" if self.kind == "reward" else "safer_response_id"
        first = int(record[key])
        second = 1 - first
        return PairExample(self._ids(record, first), self._ids(record, second),
                           bool(record[f"is_response_{first}_safe"]), bool(record[f"is_response_{second}_safe"]))

    def collate(self, examples: Sequence[PairExample]) -> dict[str, torch.Tensor]:
        batch = pad_right([e.first for e in examples] + [e.second for e in examples], self.tokenizer.pad_token_id)
        batch["is_safe"] = torch.tensor([e.first_safe for e in examples] + [e.second_safe for e in examples])
        return batch

    def compute_loss(self, batch: dict[str, torch.Tensor], train: bool) -> tuple[torch.Tensor, dict[str, float]]:
        scores = self.learner(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        first, second = scores.chunk(2)
        safe_first, safe_second = batch["is_safe"].chunk(2)
        metrics = {"score_mean": scores.mean().item(), "score_std": scores.std(unbiased=False).item()}
        if self.kind == "reward":
            loss = reward_loss(first, second, self.reg)
            metrics["accuracy"] = pair_accuracy(first, second).item()
        else:
            loss = cost_loss(first, second, safety_sign(safe_first), safety_sign(safe_second), self.reg)
            metrics["accuracy"] = pair_accuracy(second, first).item()
            metrics["sign_accuracy"] = sign_accuracy(scores.detach(), batch["is_safe"]).item()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"score-model loss is {loss.item()} at step {self.step}; "
                                     "lower learner.lr or add regularization")
        metrics["loss"] = loss.item()
        return loss, metrics


def run_score_model(cfg: ScoreModelConfig) -> dict[str, Any]:
    """Train on ``cfg.resources.num_learners`` ranks, evaluate, save ``<output_dir>/model``; the summary."""
    cfg.validate()  # fills the default output_dir also for configs built in code
    return run_supervised(score_model_program, cfg, name=f"{cfg.kind} model")


def score_model_program(cfg: ScoreModelConfig) -> dict[str, Any]:
    """:func:`run_score_model` on one rank; rank 0 writes the files."""
    started = time.perf_counter()
    out = Path(cfg.output_dir)
    # The registry drops contradictory rows as it reads each source, and counts them.
    train_data = load_data(cfg.data.train, "preference", cfg.world, cfg.seed)
    held_data = load_data(cfg.data.eval, "preference", cfg.world, cfg.seed)
    if cfg.data.max_eval_rows:
        held_data = held_data.head(cfg.data.max_eval_rows)
    check_pairs(train_data.records, train_data.origins)
    check_pairs(held_data.records, held_data.origins)
    train, held = train_data.records, held_data.records

    path = model_dir(cfg.model, cfg.world, cfg.seed)
    tokenizer = load_tokenizer(cfg.model.tokenizer or path, trust_remote_code=cfg.model.trust_remote_code,
                               padding_side="right", prompt_format=cfg.model.prompt_format,
                               format_key="model.prompt_format")
    model = build_score_model(path, kind=cfg.kind, dtype=resolve_dtype(cfg.model.dtype), tokenizer=tokenizer,
                              template=tokenizer_prompt_format(tokenizer).spec,
                              trust_remote_code=cfg.model.trust_remote_code,
                              allow_pickle=cfg.model.allow_pickle_weights, normalize=cfg.normalize, seed=cfg.seed)
    if cfg.lora.enabled:
        model.add_lora(cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules)
    trainer = ScoreModelTrainer(model, tokenizer, train, held, cfg)
    if trainer.rank == 0:
        log.info("%s model from %s on %d pairs (%d held out), %d learner rank(s)", cfg.kind, path, len(train),
                 len(held), trainer.world_size)
    final = trainer.train(resume=cfg.resume)
    trained_at = time.perf_counter()

    module: ScoreModel = trainer.learner.module
    stats_records = held if held else train[:_STATS_ROWS]
    pairs = score_pairs(module, tokenizer, stats_records, cfg.data.max_length, cfg.schedule.eval_batch_size)
    heldout = pair_metrics(cfg.kind, stats_records, pairs)
    module.score_config.mean = heldout["score_mean"]
    module.score_config.std = max(heldout["score_std"], 1e-6)
    model_out = trainer.learner.save_pretrained(out / "model", tokenizer)
    hist = out / "score_hist.png"
    if trainer.rank == 0:
        plot_histogram(cfg.kind, stats_records, pairs, hist)

    summary: dict[str, Any] = {
        "kind": cfg.kind, "model_dir": str(model_out), "backbone": str(path), "lora": cfg.lora.enabled,
        "steps": trainer.step, "learner_ranks": trainer.world_size, "train_rows": len(train), "eval_rows": len(held),
        "skipped_rows": {"train": dict(train_data.skipped), "eval": dict(held_data.skipped)},
        "heldout_on": "eval" if held else f"train[:{_STATS_ROWS}]",
        "initial_eval": trainer.initial_eval, "final_eval": final,
        "heldout": heldout, "normalization": {"mode": cfg.normalize, "mean": module.score_config.mean,
                                              "std": module.score_config.std},
        "histogram": str(hist),
        "timing": {"train_s": trained_at - started, "total_s": time.perf_counter() - started},
    }
    if trainer.rank == 0:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        log.info("%s model: held-out %s", cfg.kind, {k: round(v, 4) for k, v in heldout.items()})
    return summary
