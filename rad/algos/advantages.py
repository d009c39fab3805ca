"""Advantage estimators of the critic-free online algorithms."""

from __future__ import annotations

import torch
from torch import Tensor

from rad.errors import ConfigError


def rloo_advantages(rewards: Tensor) -> Tensor:
    """REINFORCE leave-one-out advantages over the last dim (k samples per prompt):
    ``A_k = R_k - mean_{j != k} R_j`` (Kool et al. 2019; Ahmadian et al. 2024)."""
    k = rewards.shape[-1]
    if k < 2:
        raise ConfigError(f"RLOO needs at least 2 samples per prompt (last dim), got k={k}")
    total = rewards.sum(-1, keepdim=True)
    return rewards - (total - rewards) / (k - 1)


def truncated_importance_weights(target_logp: Tensor, behaviour_logp: Tensor, cap: float) -> Tensor:
    """Per-sample importance weights ``min(pi(y|x) / mu(y|x), cap)`` of whole responses, from their summed
    log-probs under the policy being trained (``target_logp``) and the policy that sampled them
    (``behaviour_logp``): truncated importance sampling (Ionides 2008; the "TIS" of off-policy RLHF
    trainers). The REINFORCE gradient of samples from ``mu`` is ``E_mu[w A grad log pi]``; truncation
    trades a little bias for bounded variance."""
    return torch.exp(target_logp - behaviour_logp).clamp(max=cap)
