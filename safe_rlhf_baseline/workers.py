"""The PPO-Lagrangian learner roles, built on rad's runtime pieces (run as Ray actors via ``WorkerGroup``).

* :class:`PPOActor` is rad's :class:`~rad.runtime.policy_workers.PolicyLearner`
  (rendezvous, DeepSpeed engine, no-grad log-probs, weights, checkpoints) plus a
  PPO update: clipped surrogate on the Lagrangian advantage against the old
  log-probs, and the optional PTX (supervised) term.
* :class:`ValueModel` turns a saved score model (backbone + scalar head) into a
  per-token value head: the head applied to the hidden state at *every* position.
* :class:`CriticLearner` trains one ValueModel (reward critic or cost critic) with
  the clipped value loss; like the actor it is a
  :class:`~rad.runtime.deepspeed_rank.DeepSpeedRank` (rendezvous, engine, checkpoints).

Samples are dicts with ``prompt_ids`` and ``response_ids`` (the rollout's token
ids) plus per-response-token lists, placed into the shifted sequence coordinates
of :func:`rad.runtime.logprobs.token_logprobs` (see
:mod:`safe_rlhf_baseline.batching`): the value at position ``p`` is the critic's
value of the state whose next token is input token ``p + 1``, the log-prob at
``p`` is that token's.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from rad.errors import ConfigError
from rad.runtime.deepspeed_rank import DeepSpeedRank, micro_batches
from rad.runtime.logprobs import collate_samples
from rad.runtime.policy_workers import PolicyLearner
from rad.settings import LearnerConfig
from safe_rlhf_baseline.batching import gather_responses, place
from safe_rlhf_baseline.ppo_math import actor_loss, clip_fraction, critic_loss, masked_mean


class PPOActor(PolicyLearner):
    """One data-parallel rank of the actor: :class:`PolicyLearner` + :meth:`ppo_step`."""

    def ppo_step(self, samples: Sequence[dict[str, Any]], lam: float, clip_range_ratio: float,
                 ptx: Sequence[dict[str, Any]] | None = None, ptx_coeff: float = 0.0) -> dict[str, float]:
        """One optimizer step of the PPO-Lagrangian actor loss on this rank's samples.

        Each sample carries ``old_logprobs``, ``reward_advantages`` and
        ``cost_advantages`` (one float per response token). With ``ptx`` (SFT
        samples, same count, ``prompt_ids``/``response_ids``) the loss of each micro
        batch is ``actor_loss + ptx_coeff * nll``, nll the token-mean negative
        log-likelihood of the PTX responses. The reference runs PTX as a second
        micro batch accumulated into the same optimizer step, which averages the
        two gradients; the sum here differs only by that factor 1/2, which Adam
        absorbs (up to gradient clipping).
        """
        self.learner.train()
        micro = self.step_micro_batches(samples, "actor")
        ptx_micro = micro_batches(ptx, self.cfg.micro_batch_size) if ptx else [None] * len(micro)
        if len(ptx_micro) != len(micro):
            raise ValueError(f"actor rank {self.rank}: {len(ptx)} PTX samples for {len(samples)} RL samples")
        pad = self.tokenizer.pad_token_id
        dev = self.learner.device
        totals = {"actor_loss": 0.0, "ptx_loss": 0.0, "clip_fraction": 0.0, "approx_kl": 0.0}
        for chunk, ptx_chunk in zip(micro, ptx_micro):
            batch = {k: v.to(dev) for k, v in collate_samples(chunk, pad).items()}
            width = batch["input_ids"].shape[1] - 1
            mask = batch["response_mask"][:, 1:]
            old = place(chunk, "old_logprobs", width, dev)
            adv_r = place(chunk, "reward_advantages", width, dev)
            adv_c = place(chunk, "cost_advantages", width, dev)
            logp = self.token_logprobs(batch)
            loss = actor_loss(logp, old, adv_r, adv_c, lam, mask, clip_range_ratio)
            totals["actor_loss"] += loss.item() / len(micro)
            totals["clip_fraction"] += clip_fraction(logp, old, mask, clip_range_ratio).item() / len(micro)
            totals["approx_kl"] += masked_mean((old - logp.detach()), mask).item() / len(micro)
            if ptx_chunk is not None and ptx_coeff > 0:
                pbatch = {k: v.to(dev) for k, v in collate_samples(ptx_chunk, pad).items()}
                plp = self.token_logprobs(pbatch)
                nll = -plp.sum() / pbatch["response_mask"][:, 1:].sum().clamp(min=1)
                loss = loss + ptx_coeff * nll
                totals["ptx_loss"] += nll.item() / len(micro)
            self.learner.backward(loss)
            self.learner.step()
        norm = self.learner.grad_norm()
        return {**totals, "lr": self.learner.lr(), **({"grad_norm": norm} if norm is not None else {})}


class ValueModel(nn.Module):
    """A score model's backbone and head, read at every position: ``V [B, L]`` (float32).

    Parameter names (``backbone.*``, ``head.*``) are those of
    :class:`rad.models.score_model.ScoreModel`, so a critic starts from the
    reward / cost model's weights, as in the reference.
    """

    def __init__(self, score_model: nn.Module):
        super().__init__()
        self.backbone = score_model.backbone
        self.head = score_model.head
        self.config = score_model.config
        self._takes_position_ids = score_model._takes_position_ids

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.long()
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask}
        if self._takes_position_ids:
            kwargs["position_ids"] = (mask.cumsum(dim=1) - 1).clamp(min=0)
        hidden = self.backbone(**kwargs).last_hidden_state
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1).float()


def check_same_vocab(critic_dir: str, policy_dir: str, trust_remote_code: bool = False) -> None:
    """The critic reads the actor's token ids, so both tokenizers must map ids to the same strings."""
    from rad.models.loading import load_tokenizer

    critic_vocab = load_tokenizer(critic_dir, trust_remote_code=trust_remote_code).get_vocab()
    policy_vocab = load_tokenizer(policy_dir, trust_remote_code=trust_remote_code).get_vocab()
    if critic_vocab != policy_vocab:
        raise ConfigError(f"critic {critic_dir!r}: its tokenizer differs from the policy's ({policy_dir!r}); a critic "
                          "scores the actor's token ids, so give a critic on the policy's tokenizer "
                          "(reward_critic_model / cost_critic_model)")


class CriticLearner(DeepSpeedRank):
    """One data-parallel rank of a critic (per-token value head on a score-model backbone) on DeepSpeed."""

    def __init__(self, critic_dir: str, policy_dir: str, cfg: LearnerConfig, total_steps: int,
                 dtype: str = "float32", trust_remote_code: bool = False):
        super().__init__(cfg, total_steps, dtype, trust_remote_code)
        self.critic_dir = critic_dir
        self.policy_dir = policy_dir

    def build_model(self) -> nn.Module:
        from rad.algos.assets import resolve_dtype
        from rad.models.loading import load_tokenizer
        from rad.models.score_model import load_score_model

        check_same_vocab(self.critic_dir, self.policy_dir, self.trust_remote_code)
        self.pad_id = load_tokenizer(self.policy_dir, trust_remote_code=self.trust_remote_code).pad_token_id
        score_model = load_score_model(self.critic_dir, dtype=resolve_dtype(self.dtype),
                                       trust_remote_code=self.trust_remote_code)
        return ValueModel(score_model).train()

    def _batch(self, chunk: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.learner.device) for k, v in collate_samples(chunk, self.pad_id).items()}

    @torch.no_grad()
    def values(self, samples: Sequence[dict[str, Any]]) -> list[list[float]]:
        """The value of the state before each response token, per sample."""
        self.learner.eval()
        out: list[list[float]] = []
        for chunk in micro_batches(samples, self.cfg.micro_batch_size):
            batch = self._batch(chunk)
            v = self.learner(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[:, :-1]
            out.extend(gather_responses(v, chunk))
        self.learner.train()
        return out

    def train_step(self, samples: Sequence[dict[str, Any]], clip_range_value: float) -> dict[str, float]:
        """One optimizer step of the clipped value loss; samples carry ``old_values`` and ``returns``."""
        self.learner.train()
        micro = self.step_micro_batches(samples, "critic")
        total_loss, total_value = 0.0, 0.0
        for chunk in micro:
            batch = self._batch(chunk)
            width = batch["input_ids"].shape[1] - 1
            mask = batch["response_mask"][:, 1:]
            values = self.learner(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[:, :-1]
            loss = critic_loss(values, place(chunk, "old_values", width, values.device),
                               place(chunk, "returns", width, values.device), mask, clip_range_value)
            self.learner.backward(loss)
            self.learner.step()
            total_loss += loss.item() / len(micro)
            total_value += masked_mean(values.detach(), mask).item() / len(micro)
        return {"loss": total_loss, "value": total_value, "lr": self.learner.lr()}
