"""``rad dpo``: offline preference optimisation (DPO, TDPO, Ra-DPO, KLDPO, WDPO) on the DeepSpeed learner.

A micro batch of B pairs is one forward of 2B sequences (chosen rows first) through
the policy, and one through the frozen reference, or the reference's statistics
precomputed once before training (``precompute_reference``; the reference model is
then freed). :func:`risk_dpo.token_stats.sequence_stats` turns the logits into
per-sequence sums and the registered loss (:mod:`risk_dpo.losses`) into per-pair
losses and metrics. The base :class:`~rad.algos.supervised.SupervisedTrainer`
does the rest (epochs, accumulation, ZeRO stage from ``learner.zero_stage``,
evaluation, checkpoints, resume). The final policy is written in HF format to
``<output_dir>/model``, with metrics (JSONL / TensorBoard) and ``summary.json``.
``resources.num_learners`` ranks train data-parallel (:func:`dpo_program` on each,
see :mod:`rad.runtime.rank_program`), each with its own reference; rank 0 writes
the files.

Memory note for ``precompute_reference``: DPO / KLDPO / WDPO store two numbers
per pair; TDPO / Ra-DPO need the reference's distribution at every response
token and store ``(response tokens) x vocabulary`` float32 values per sequence in
host memory (the size is logged).
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from rad.algos.assets import load_policy, resolve_dtype
from rad.algos.supervised import ScheduleConfig, SupervisedTrainer, run_supervised
from rad.config import field
from rad.data.sources import SPECS_HELP, DataSpecs
from rad.runtime.run_dir import resume_field
from rad.data.encode import Encoded, collate_lm, encode_pair
from rad.errors import ConfigError
from rad.settings import LearnerConfig, LearnerResources, LoggingConfig, PolicyLora, ModelConfig, WorldConfig
from risk_dpo.losses import LossParams, PairBatch, get_loss
from risk_dpo.pairs import PAIR_KINDS, load_pairs
from risk_dpo.token_stats import RISKS, reference_stats, sequence_stats

log = logging.getLogger("risk_dpo")


@dataclass
class DPODataConfig:
    train: DataSpecs = field(default_factory=lambda: ["embedded/pref-train"],
                             help="dataset specs NAME[:PROPORTION] (registry names or local files)" + SPECS_HELP)
    eval: DataSpecs = field(default_factory=lambda: ["embedded/pref-test"], help="held-out specs" + SPECS_HELP)
    pairs: str = field("helpfulness", choices=PAIR_KINDS,
                       help="chosen response: better_response_id (helpfulness), safer_response_id (safety), "
                            "or the data's own prompt/chosen/rejected columns (given)")
    max_length: int = field(160, min=8, help="prompt + response tokens; longer responses are cut")
    max_eval_rows: int = field(256, min=0, help="cap on held-out pairs (0 = all)")


@dataclass
class LossConfig:
    name: str = field("dpo", help="registered loss: dpo, tdpo1, tdpo2, ra_dpo1, ra_dpo2, kldpo, wdpo")
    beta: float = field(0.1, gt=0, help="inverse temperature of the implicit reward")
    alpha: float = field(0.5, min=0, help="weight of the divergence term in tdpo2 / ra_dpo2")
    risk: str = field("cvar", choices=RISKS, help="risk functional of ra_dpo1/2 over the reference's next token")
    mu: float = field(0.95, gt=0, help="CVaR: tail mass in (0, 1] (1 = KL, i.e. TDPO); ERM: coefficient > 0")
    tau: float = field(1.0, gt=0, help="kldpo: temperature of the exponential tilting (large = DPO)")
    max_weight: float = field(0.0, min=0, help="kldpo: cap on exp((l - mean l)/tau) before normalising (0 = none)")
    rho: float = field(0.01, min=0, help="wdpo: weight of the input-embedding gradient penalty (0 = DPO)")

    def validate(self) -> None:
        get_loss(self.name)
        if self.risk == "cvar" and self.mu > 1:
            raise ConfigError(f"loss.mu: the CVaR tail mass must be in (0, 1], got {self.mu}")

    def params(self) -> LossParams:
        return LossParams(beta=self.beta, alpha=self.alpha, risk=self.risk, mu=self.mu, tau=self.tau,
                          max_weight=self.max_weight, rho=self.rho)


@dataclass
class DPOConfig:
    """``rad dpo``: offline (risk-aware) preference optimisation from a policy init against a frozen reference."""

    output_dir: str = field("runs/dpo", help="run directory (config, checkpoints, metrics, model/)")
    seed: int = field(0, help="random seed of data order, sub-sampling, initialisation and sampling")
    resume: bool = resume_field()
    world: WorldConfig = field(default_factory=WorldConfig)
    model: ModelConfig = field(default_factory=ModelConfig, help="the policy's initialisation (e.g. the SFT model)")
    reference: str = field("", help="reference model directory ('' = the policy's initialisation)")
    precompute_reference: bool = field(False, help="score the data with the reference once before training, "
                                                   "then free it")
    data: DPODataConfig = field(default_factory=DPODataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    learner: LearnerConfig = field(default_factory=lambda: LearnerConfig(lr=5e-4, micro_batch_size=8))
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(epochs=1))
    resources: LearnerResources = field(default_factory=LearnerResources)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    lora: PolicyLora = field(default_factory=PolicyLora, help="LoRA adapters on the policy: only they train; "
                                                                "model/ is saved with them merged")

    def validate(self) -> None:
        self.learner.check_arrival_order("DPO")
        self.lora.check_learner(self.learner)
        if get_loss(self.loss.name).needs_embeds and self.learner.zero_stage == 3:
            raise ConfigError(f"loss.name={self.loss.name} needs learner.zero_stage <= 2: its gradient penalty is "
                              "differentiated twice, and ZeRO-3 re-partitions the parameters after the first pass")


@dataclass
class PairExample:
    """Encoded chosen / rejected sequences and, with a precomputed reference, its statistics."""

    chosen: Encoded
    rejected: Encoded
    ref_logps: torch.Tensor | None = None          # (2,): chosen, rejected
    ref_dist: tuple[torch.Tensor, torch.Tensor] | None = None  # packed (T, V) each


class DPOTrainer(SupervisedTrainer):
    """Pairs -> 2B sequences per micro batch -> token statistics -> registered loss."""

    stage = "train"

    def __init__(self, model: torch.nn.Module, reference: torch.nn.Module, tokenizer: Any,
                 train_pairs: Sequence[dict[str, str]], eval_pairs: Sequence[dict[str, str]], cfg: DPOConfig):
        self.tokenizer = tokenizer
        self.max_length = cfg.data.max_length
        self.spec = get_loss(cfg.loss.name)
        self.params = cfg.loss.params()
        self.precomputed = cfg.precompute_reference
        # The KL is a cheap metric whenever the reference's distribution is at hand.
        self.need_kl = self.spec.needs_kl or self.spec.needs_risk or not self.precomputed
        self.need_risk = self.spec.needs_risk
        if self.spec.needs_embeds and hasattr(model, "set_attn_implementation"):
            # The gradient penalty differentiates twice through attention; fused SDPA
            # kernels have no double backward, the eager implementation does.
            model.set_attn_implementation("eager")
        super().__init__(model, train_pairs, eval_pairs, cfg.learner, cfg.schedule, cfg.logging,
                         cfg.output_dir, seed=cfg.seed, config=cfg)
        self.reference: torch.nn.Module | None = reference.to(self.learner.device).eval().requires_grad_(False)
        if self.precomputed:
            self._precompute()
            self.reference = None  # the point of precomputing: no reference model while training

    # -- data ------------------------------------------------------------------------
    def encode(self, record: dict[str, str]) -> PairExample:
        return PairExample(encode_pair(self.tokenizer, record["prompt"], record["chosen"], self.max_length),
                           encode_pair(self.tokenizer, record["prompt"], record["rejected"], self.max_length))

    def _sequences(self, examples: Sequence[PairExample]) -> dict[str, torch.Tensor]:
        """The 2B sequences of B pairs, chosen rows first."""
        return collate_lm([e.chosen for e in examples] + [e.rejected for e in examples], self.tokenizer.pad_token_id)

    def collate(self, examples: Sequence[PairExample]) -> dict[str, torch.Tensor]:
        batch = self._sequences(examples)
        if self.precomputed and examples[0].ref_logps is not None:
            batch["ref_logps"] = torch.cat([torch.stack([e.ref_logps[k] for e in examples]) for k in (0, 1)])
            if self.need_kl:
                batch["ref_logprobs"] = torch.cat([e.ref_dist[k] for k in (0, 1) for e in examples])
        return batch

    @torch.no_grad()
    def _precompute(self) -> None:
        """Attach the reference's statistics to every example (same numbers as on the fly)."""
        floats = 0
        bs = self.schedule.eval_batch_size
        for examples in (self.train_examples, self.eval_examples):
            for start in range(0, len(examples), bs):
                chunk = examples[start: start + bs]
                batch = self._to_device(self._sequences(chunk))
                logits = self.reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                sums, packed = reference_stats(logits, batch["labels"], keep_distribution=self.need_kl)
                sums = sums.cpu()
                rows = None
                if packed is not None:
                    counts = [len(e.chosen.response_ids) for e in chunk] + [len(e.rejected.response_ids) for e in chunk]
                    rows = torch.split(packed.cpu(), counts)
                    floats += packed.numel()
                n = len(chunk)
                for i, e in enumerate(chunk):
                    e.ref_logps = torch.stack([sums[i], sums[n + i]])
                    if rows is not None:
                        e.ref_dist = (rows[i], rows[n + i])
        if floats:
            log.info("precomputed reference distributions: %.2f GiB of host memory", floats * 4 / 2**30)

    # -- loss ------------------------------------------------------------------------
    def compute_loss(self, batch: dict[str, torch.Tensor], train: bool) -> tuple[torch.Tensor, dict[str, float]]:
        if self.spec.needs_embeds:
            # The gradient penalty differentiates the model before the real backward (see
            # DeepSpeedLearner.forward_loss), also in evaluation, which runs under no_grad.
            with torch.enable_grad():
                loss, metrics = self.learner.forward_loss(lambda module: self._pair_loss(module, batch, train))
        else:
            loss, metrics = self._pair_loss(self.learner, batch, train)
        out = {"loss": float(loss.detach())}
        out.update({k: float(v.float().mean()) for k, v in metrics.items()})
        return (loss if train else loss.detach()), out

    def _pair_loss(self, model: Any, batch: dict[str, torch.Tensor], train: bool
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean per-pair loss and metrics of ``batch`` through ``model`` (the learner, or its bare module)."""
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        embeds = None
        if self.spec.needs_embeds:
            embeds = model.get_input_embeddings()(ids)
            logits = model(inputs_embeds=embeds, attention_mask=mask).logits
        else:
            logits = model(input_ids=ids, attention_mask=mask).logits
        if "ref_logps" in batch:
            ref = {"ref_logps": batch["ref_logps"], "ref_packed_logprobs": batch.get("ref_logprobs")}
        else:
            with torch.no_grad():
                ref = {"ref_logits": self.reference(input_ids=ids, attention_mask=mask).logits}
        stats = sequence_stats(logits, labels, need_kl=self.need_kl, need_risk=self.need_risk,
                               risk=self.params.risk, mu=self.params.mu, **ref)
        b = ids.shape[0] // 2
        pairs = PairBatch(stats.select(slice(0, b)), stats.select(slice(b, None)), inputs_embeds=embeds,
                          create_graph=train)
        per_pair, metrics = self.spec.fn(pairs, self.params)
        return per_pair.mean(), metrics


def load_reference(cfg: DPOConfig, policy: torch.nn.Module, tokenizer: Any) -> torch.nn.Module:
    """The frozen reference: ``cfg.reference`` or a copy of the policy's initial weights."""
    if not cfg.reference:
        return copy.deepcopy(policy)
    from rad.models.loading import load_causal_lm

    ref = load_causal_lm(cfg.reference, dtype=resolve_dtype(cfg.model.dtype),
                         trust_remote_code=cfg.model.trust_remote_code,
                         allow_pickle=cfg.model.allow_pickle_weights, tokenizer=tokenizer)
    n_ref, n_pol = ref.get_output_embeddings().weight.shape[0], policy.get_output_embeddings().weight.shape[0]
    if n_ref != n_pol:
        raise ConfigError(f"reference: {cfg.reference!r} has {n_ref} output tokens but the policy has {n_pol}; "
                          "policy and reference must share a vocabulary")
    return ref


def run_dpo(cfg: DPOConfig) -> dict[str, Any]:
    """Train on ``cfg.resources.num_learners`` ranks, save ``<output_dir>/model`` and ``summary.json``; the
    summary."""
    return run_supervised(dpo_program, cfg, name=cfg.loss.name)


def dpo_program(cfg: DPOConfig) -> dict[str, Any]:
    """:func:`run_dpo` on one rank; rank 0 writes the files."""
    out = Path(cfg.output_dir)
    train, skipped_train = load_pairs(cfg.data.train, cfg.data.pairs, cfg.world, cfg.seed)
    held, skipped_eval = load_pairs(cfg.data.eval, cfg.data.pairs, cfg.world, cfg.seed)
    if cfg.data.max_eval_rows:
        held = held[: cfg.data.max_eval_rows]
    model, tokenizer, path = load_policy(cfg.model, cfg.world, cfg.seed)
    reference = load_reference(cfg, model, tokenizer)  # before the adapters: the reference is the plain init
    if cfg.lora.enabled:
        from rad.models.lora import add_lora

        model = add_lora(model, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules)
    trainer = DPOTrainer(model, reference, tokenizer, train, held, cfg)
    del reference
    if trainer.rank == 0:
        log.info("%s from %s on %d %s pairs (%d held out); reference %s%s; %d learner rank(s)", cfg.loss.name,
                 path, len(train), cfg.data.pairs, len(held), cfg.reference or "= policy init",
                 " (precomputed)" if cfg.precompute_reference else "", trainer.world_size)
    final = trainer.train(resume=cfg.resume)
    model_out = trainer.learner.save_pretrained(out / "model", tokenizer, adapter=cfg.lora.save_adapter)
    summary: dict[str, Any] = {
        "model_dir": str(model_out), "loss": cfg.loss.name, "lora": cfg.lora.enabled, "pairs": cfg.data.pairs,
        "steps": trainer.step,
        "learner_ranks": trainer.world_size,
        "train_pairs": len(train), "eval_pairs": len(held), "skipped_identical_pairs": skipped_train + skipped_eval,
        "initial_eval": trainer.initial_eval, "final_eval": final,
    }
    if trainer.rank == 0:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
