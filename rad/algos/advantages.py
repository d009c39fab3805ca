"""Advantage estimators of the critic-free online algorithms."""

from __future__ import annotations

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


