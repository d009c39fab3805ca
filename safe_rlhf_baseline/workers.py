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

Every role takes a :class:`~rad.runtime.batch.TokenBatch` (the rollout's token ids) whose
per-token fields and outputs are ``[B, T-1]`` tensors in the shifted sequence coordinates of
:func:`rad.runtime.logprobs.token_logprobs`: the value at position ``p`` is the critic's
value of the state whose next token is input token ``p + 1``, the log-prob at ``p`` is that
token's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rad.errors import ConfigError
from rad.runtime.batch import TokenBatch
from rad.runtime.deepspeed_rank import DeepSpeedRank
from rad.runtime.policy_workers import PolicyLearner
from rad.settings import LearnerConfig
from safe_rlhf_baseline.ppo_math import actor_loss, clip_fraction, critic_loss, masked_mean


class PPOActor(PolicyLearner):
    """One data-parallel rank of the actor: :class:`PolicyLearner` + :meth:`ppo_step`."""

    def ppo_step(self, batch: TokenBatch, lam: float, clip_range_ratio: float, ptx: TokenBatch | None = None,
                 ptx_coeff: float = 0.0) -> dict[str, float]:
        """One optimizer step of the PPO-Lagrangian actor loss on this rank's shard.

        ``batch`` carries the per-token fields ``old_logprobs``, ``reward_advantages`` and
        ``cost_advantages``. With ``ptx`` (SFT samples, same count) the loss of each micro
        batch is ``actor_loss + ptx_coeff * nll``, nll the token-mean negative
        log-likelihood of the PTX responses. The reference runs PTX as a second
        micro batch accumulated into the same optimizer step, which averages the
        two gradients; the sum here differs only by that factor 1/2, which Adam
        absorbs (up to gradient clipping). With ``learner.group_by_length`` each actor loss is weighed by
        :meth:`micro_weight`; the PTX micro batches stay in arrival order.
        """
        self.learner.train()
        micro = self.step_micro_batches(batch, "actor")
        ptx_micro = ptx.micro_batches(self.cfg.micro_batch_size) if ptx else [None] * len(micro)
        if len(ptx_micro) != len(micro):
            raise ValueError(f"actor rank {self.rank}: {len(ptx)} PTX samples for {len(batch)} RL samples")
        dev = self.learner.device
        totals = {"actor_loss": 0.0, "ptx_loss": 0.0, "clip_fraction": 0.0, "approx_kl": 0.0}
        for mb, ptx_mb in zip(micro, ptx_micro):
            inputs = mb.model_inputs(dev)
            mask = inputs["response_mask"][:, 1:]
            old = mb.token("old_logprobs", dev)
            adv_r = mb.token("reward_advantages", dev)
            adv_c = mb.token("cost_advantages", dev)
            logp = self.token_logprobs(inputs)
            weight = self.micro_weight(mb, batch)
            loss = actor_loss(logp, old, adv_r, adv_c, lam, mask, clip_range_ratio) * weight
            totals["actor_loss"] += loss.item() / len(micro)
            totals["clip_fraction"] += clip_fraction(logp, old, mask, clip_range_ratio).item() * weight / len(micro)
            totals["approx_kl"] += masked_mean((old - logp.detach()), mask).item() * weight / len(micro)
            if ptx_mb is not None and ptx_coeff > 0:
                pinputs = ptx_mb.model_inputs(dev)
                plp = self.token_logprobs(pinputs)
                nll = -plp.sum() / pinputs["response_mask"][:, 1:].sum().clamp(min=1)
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
                 dtype: str = "float32", trust_remote_code: bool = False, source: Any = None):
        """``source``: the :class:`rad.settings.ScorerConfig` of the score model the critic starts from (its
        format and template; any format :func:`rad.models.score_formats.open_score_model` reads)."""
        super().__init__(cfg, total_steps, dtype, trust_remote_code)
        self.critic_dir = critic_dir
        self.policy_dir = policy_dir
        self.source = source

    def build_model(self) -> nn.Module:
        from rad.models.score_formats import open_score_model
        from rad.runtime.distributed import resolve_dtype

        check_same_vocab(self.critic_dir, self.policy_dir, self.trust_remote_code)
        score_model = open_score_model(self.critic_dir, None, self.source, dtype=resolve_dtype(self.dtype),
                                       trust_remote_code=self.trust_remote_code, key="critic")
        return ValueModel(score_model).train()

    @torch.no_grad()
    def values(self, batch: TokenBatch) -> torch.Tensor:
        """``[B, T-1]`` float32: at position ``t`` the value of the state whose next token is input token ``t+1``
        (0 off the response), on the CPU."""
        self.learner.eval()
        out = []
        micro, order = batch.cut_micro_batches(self.cfg.micro_batch_size, self.cfg.group_by_length)
        for mb in micro:
            inputs = mb.model_inputs(self.learner.device)
            v = self.learner(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])[:, :-1]
            out.append((v * inputs["response_mask"][:, 1:]).float().cpu())
        self.learner.train()
        return batch.in_order(out, order)

    def train_step(self, batch: TokenBatch, clip_range_value: float) -> dict[str, float]:
        """One optimizer step of the clipped value loss; ``batch`` carries per-token ``old_values`` and ``returns``."""
        self.learner.train()
        micro = self.step_micro_batches(batch, "critic")
        total_loss, total_value = 0.0, 0.0
        dev = self.learner.device
        for mb in micro:
            inputs = mb.model_inputs(dev)
            mask = inputs["response_mask"][:, 1:]
            values = self.learner(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])[:, :-1]
            weight = self.micro_weight(mb, batch)
            loss = critic_loss(values, mb.token("old_values", dev), mb.token("returns", dev), mask,
                               clip_range_value) * weight
            self.learner.backward(loss)
            self.learner.step()
            total_loss += loss.item() / len(micro)
            total_value += masked_mean(values.detach(), mask).item() * weight / len(micro)
        return {"loss": total_loss, "value": total_value, "lr": self.learner.lr()}
