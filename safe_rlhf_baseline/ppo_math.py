"""The PPO-Lagrangian mathematics of the Safe RLHF reference, as pure tensor functions.

Every tensor here is ``[B, T]`` in *response coordinates* or any layout where
``mask`` marks the scored positions of each row contiguously (the learners use
prompt+response coordinates with the prompt masked out; both work because masked
positions contribute nothing). Position ``t`` holds, for the token chosen at step
``t``: its log-prob under the policy / reference, the critic's value of the state
before it, its shaped reward and cost.

Reference behaviour reproduced (safe-rlhf ``PPOLagTrainer`` / ``RLTrainer``):

* shaping: ``r_t = -kl_coeff * (log pi - log pi_ref)``; the reward stream is
  ``r_t`` plus the scalar reward on the last scored token, the cost stream is
  ``-r_t`` plus the scalar cost there; both clipped to ``+-clip_range_score``;
* GAE per stream with the value after the last token taken as 0;
  returns = advantages + values;
* actor loss on ``(A_r - lambda A_c) / (1 + lambda)``, clipped ratio surrogate;
* critic loss ``0.5 * max((V - R)^2, (clip(V, V_old +- c) - R)^2)``;
* means are *per-row* masked means averaged over rows (their ``masked_mean``), so
  every response weighs the same whatever its length.
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each row's masked positions, then over rows (rows with an empty mask count as 0)."""
    m = mask.to(x.dtype)
    return ((x * m).sum(-1) / m.sum(-1).clamp(min=1)).mean()


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last True position of every row; a row with no True position is an error."""
    if bool((mask.sum(-1) == 0).any()):
        rows = (mask.sum(-1) == 0).nonzero().flatten().tolist()
        raise ValueError(f"rows {rows} have no scored position")
    positions = torch.arange(mask.shape[-1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, -1).max(dim=-1).values


def shape_rewards(reward: torch.Tensor, cost: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor,
                  mask: torch.Tensor, kl_coeff: float, clip_range_score: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token reward and cost streams with the KL penalty and the end scores, clipped.

    ``reward`` / ``cost`` are the scalar scores ``[B]``; the result is ``[B, T]``
    (zero where ``mask`` is False, apart from clipping which leaves 0 at 0).
    """
    kl_reward = -kl_coeff * (logp - ref_logp) * mask
    end = last_index(mask).unsqueeze(-1)
    rewards = kl_reward.scatter_add(-1, end, reward.to(kl_reward.dtype).unsqueeze(-1))
    costs = (-kl_reward).scatter_add(-1, end, cost.to(kl_reward.dtype).unsqueeze(-1))
    return rewards.clamp(-clip_range_score, clip_range_score), costs.clamp(-clip_range_score, clip_range_score)


def gae(values: torch.Tensor, rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation per row: ``(advantages, returns)``, both ``[B, T]``.

    ``delta_t = r_t + gamma V_{t+1} - V_t`` with ``V`` zeroed outside the mask (so
    the state after the last scored token is terminal, value 0) and
    ``A_t = delta_t + gamma lam A_{t+1}``. Masked positions after a row's end give
    ``delta = 0`` and carry nothing back. Returns are ``A + V``.
    """
    m = mask.to(values.dtype)
    values = values * m
    rewards = rewards * m
    length = rewards.shape[-1]
    last = torch.zeros_like(rewards[:, 0])
    out = []
    for t in reversed(range(length)):
        next_values = values[:, t + 1] if t < length - 1 else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_values - values[:, t]
        last = delta + gamma * lam * last
        out.append(last)
    advantages = torch.stack(out[::-1], dim=-1)
    return advantages.detach(), (advantages + values).detach()


def lagrangian_advantages(reward_adv: torch.Tensor, cost_adv: torch.Tensor, lam: float) -> torch.Tensor:
    """``(A_r - lambda A_c) / (1 + lambda)``: the advantage of the Lagrangian, rescaled to stay bounded."""
    return (reward_adv - lam * cost_adv) / (1.0 + lam)


def actor_loss(logp: torch.Tensor, old_logp: torch.Tensor, reward_adv: torch.Tensor, cost_adv: torch.Tensor,
               lam: float, mask: torch.Tensor, clip_range_ratio: float = 0.2) -> torch.Tensor:
    """PPO clipped surrogate (negated, to minimise) on the Lagrangian advantage."""
    adv = lagrangian_advantages(reward_adv, cost_adv, lam)
    ratio = torch.exp(logp - old_logp)
    surrogate = torch.minimum(adv * ratio, adv * ratio.clamp(1.0 - clip_range_ratio, 1.0 + clip_range_ratio))
    return -masked_mean(surrogate, mask)


def clip_fraction(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor,
                  clip_range_ratio: float) -> torch.Tensor:
    """Share of scored tokens whose ratio left ``[1 - eps, 1 + eps]`` (a diagnostic, no gradient)."""
    ratio = torch.exp(logp.detach() - old_logp)
    return masked_mean(((ratio - 1.0).abs() > clip_range_ratio).to(logp.dtype), mask)


def critic_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                clip_range_value: float = 5.0) -> torch.Tensor:
    """Clipped value loss ``0.5 * masked_mean(max((V - R)^2, (clip(V, V_old +- c) - R)^2))``."""
    clipped = torch.maximum(torch.minimum(values, old_values + clip_range_value), old_values - clip_range_value)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)
