"""Supervised fine-tuning (``rad sft``): the policy initialisation and the RL reference.

The loss is next-token cross-entropy on response tokens only (prompt tokens are
masked), averaged over the response tokens of the micro batch. After training the
final model is saved in HF format (``<output_dir>/model``) and a few greedy and
sampled responses to held-out prompts are written to ``samples.jsonl``.

``resources.num_learners`` ranks train data-parallel (:func:`sft_program` on each,
see :mod:`rad.runtime.rank_program`); rank 0 writes the run's files.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from rad.algos.assets import load_policy, load_records
from rad.algos.supervised import ScheduleConfig, SupervisedTrainer, run_supervised
from rad.config import field
from rad.data.sources import SPECS_HELP, DataSpecs
from rad.runtime.run_dir import resume_field
from rad.data.encode import Encoded, collate_lm, encode_pair, encode_prompt, left_pad, token_mean_loss
from rad.settings import LearnerConfig, LearnerResources, LoggingConfig, ModelConfig, WorldConfig

log = logging.getLogger("rad.algos")


@dataclass
class SFTDataConfig:
    train: DataSpecs = field(default_factory=lambda: ["embedded/sft-train"],
                             help="dataset specs NAME[:PROPORTION] (registry names or local files)" + SPECS_HELP)
    eval: DataSpecs = field(default_factory=lambda: ["embedded/sft-test"], help="held-out specs" + SPECS_HELP)
    max_length: int = field(160, min=8, help="prompt + response tokens; longer responses are cut")
    max_eval_rows: int = field(256, min=0, help="cap on held-out rows (0 = all)")


@dataclass
class SFTStage:
    """The SFT-specific keys (the ``sft:`` section of a pipeline config)."""

    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    learner: LearnerConfig = field(default_factory=lambda: LearnerConfig(lr=3e-3, micro_batch_size=16))
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(epochs=2))
    resources: LearnerResources = field(default_factory=LearnerResources)
    num_samples: int = field(6, min=0, help="held-out prompts answered in samples.jsonl at the end")
    max_new_tokens: int = field(64, min=1, help="tokens generated per answer in samples.jsonl")

    def validate(self) -> None:
        self.learner.check_arrival_order("SFT")


@dataclass
class SFTConfig(SFTStage):
    """``rad sft``: supervised fine-tuning with prompt tokens masked out of the loss."""

    output_dir: str = field("runs/sft", help="run directory (config, checkpoints, metrics, model/)")
    seed: int = field(0, help="random seed of data order, sub-sampling, initialisation and sampling")
    resume: bool = resume_field()
    world: WorldConfig = field(default_factory=WorldConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


class SFTTrainer(SupervisedTrainer):
    stage = "train"

    def __init__(self, model, tokenizer, train_records, eval_records, cfg: SFTConfig):
        self.tokenizer = tokenizer
        self.max_length = cfg.data.max_length
        super().__init__(model, train_records, eval_records, cfg.learner, cfg.schedule, cfg.logging,
                         cfg.output_dir, seed=cfg.seed, config=cfg)

    def encode(self, record: dict[str, Any]) -> Encoded:
        return encode_pair(self.tokenizer, record["prompt"], record["response"], self.max_length)

    def collate(self, examples: Sequence[Encoded]) -> dict[str, torch.Tensor]:
        return collate_lm(examples, self.tokenizer.pad_token_id)

    def compute_loss(self, batch, train):
        logits = self.learner(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        total, count = token_mean_loss(logits, batch["labels"])
        loss = total / count.clamp(min=1)
        return loss, {"loss": loss.item(), "tokens": float(count)}


@torch.no_grad()
def generate_samples(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, seed: int,
                     do_sample: bool) -> list[str]:
    """Responses of ``model`` to ``prompts`` in the tokenizer's prompt format (left-padded batch)."""
    ids = [encode_prompt(tokenizer, p) for p in prompts]
    batch = left_pad(ids, tokenizer.pad_token_id)
    torch.manual_seed(seed)
    out = model.generate(**{k: v.to(model.device) for k, v in batch.items()}, max_new_tokens=max_new_tokens,
                         do_sample=do_sample, temperature=1.0 if do_sample else None, top_k=0 if do_sample else None,
                         top_p=1.0 if do_sample else None,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)


def run_sft(cfg: SFTConfig) -> dict[str, Any]:
    """Train on ``cfg.resources.num_learners`` ranks, save ``<output_dir>/model``, write samples; the summary."""
    return run_supervised(sft_program, cfg, name="sft")


def sft_program(cfg: SFTConfig) -> dict[str, Any]:
    """:func:`run_sft` on one rank: every rank trains and answers the sample prompts (ZeRO-3 shards the weights
    of every forward over all ranks); rank 0 writes the files."""
    out = Path(cfg.output_dir)
    train = load_records(cfg.data.train, "sft", cfg.world, cfg.seed)
    held = load_records(cfg.data.eval, "sft", cfg.world, cfg.seed)
    if cfg.data.max_eval_rows:
        held = held[: cfg.data.max_eval_rows]
    model, tokenizer, path = load_policy(cfg.model, cfg.world, cfg.seed)
    trainer = SFTTrainer(model, tokenizer, train, held, cfg)
    if trainer.rank == 0:
        log.info("SFT of %s on %d rows (%d held out), %d learner rank(s)", path, len(train), len(held),
                 trainer.world_size)
    final = trainer.train(resume=cfg.resume)
    model_out = trainer.learner.save_pretrained(out / "model", tokenizer)
    summary: dict[str, Any] = {"model_dir": str(model_out), "steps": trainer.step, "train_rows": len(train),
                               "eval_rows": len(held), "initial_eval_loss": trainer.initial_eval.get("eval/loss"),
                               "final_eval_loss": final.get("eval/loss"), "learner_ranks": trainer.world_size}
    if cfg.num_samples and held:
        prompts = [r["prompt"] for r in held[: cfg.num_samples]]
        module = trainer.learner.module
        module.eval()
        greedy = generate_samples(module, tokenizer, prompts, cfg.max_new_tokens, cfg.seed, do_sample=False)
        sampled = generate_samples(module, tokenizer, prompts, cfg.max_new_tokens, cfg.seed, do_sample=True)
        if trainer.rank == 0:
            with open(out / "samples.jsonl", "w") as f:
                for p, g, s in zip(prompts, greedy, sampled):
                    f.write(json.dumps({"prompt": p, "greedy": g, "sampled": s}) + "\n")
        summary["samples"] = str(out / "samples.jsonl")
    if trainer.rank == 0:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
