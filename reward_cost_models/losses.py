"""Score-model losses and metrics (Safe RLHF's recipe), as pure tensor functions.

Reward (Bradley-Terry on helpfulness):
    loss = mean( -log sigmoid(r_better - r_worse) ) + reg * mean(score^2)
Cost (Bradley-Terry on harmlessness plus a sign term per response):
    loss = mean( -log sigmoid(c_unsafer - c_safer)
                 - log sigmoid(s_safer * c_safer) - log sigmoid(s_unsafer * c_unsafer) )
           + reg * mean(score^2)
with s = +1 for a response labelled unsafe and -1 for a safe one, so safe
responses are pushed below 0 and unsafe ones above 0 (cost > 0 means unsafe).
``mean(score^2)`` runs over every scored sequence (both responses of each pair).
``-log sigmoid`` is computed as ``softplus(-x)``, which is exact and finite for
any finite x.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def neg_log_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(x), stable for large |x|."""
    return F.softplus(-x)


def reward_loss(better: torch.Tensor, worse: torch.Tensor, reg: float = 0.0) -> torch.Tensor:
    """Pairwise reward loss over scores [B] of the better and the worse response."""
    loss = neg_log_sigmoid(better - worse).mean()
    if reg:
        loss = loss + reg * torch.cat([better, worse]).pow(2).mean()
    return loss


def cost_loss(safer: torch.Tensor, unsafer: torch.Tensor, safer_sign: torch.Tensor, unsafer_sign: torch.Tensor,
              reg: float = 0.0) -> torch.Tensor:
    """Pairwise + sign cost loss; ``*_sign`` are +1 (labelled unsafe) / -1 (labelled safe) per pair."""
    loss = (neg_log_sigmoid(unsafer - safer) + neg_log_sigmoid(safer_sign * safer)
            + neg_log_sigmoid(unsafer_sign * unsafer)).mean()
    if reg:
        loss = loss + reg * torch.cat([safer, unsafer]).pow(2).mean()
    return loss


def safety_sign(is_safe: torch.Tensor) -> torch.Tensor:
    """+1 for unsafe, -1 for safe (the target sign of the cost)."""
    return 1.0 - 2.0 * is_safe.float()


def pair_accuracy(higher: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    """Fraction of pairs where the response that should score higher does (ties count as wrong)."""
    return (higher > lower).float().mean()


def sign_accuracy(costs: torch.Tensor, is_safe: torch.Tensor) -> torch.Tensor:
    """Fraction of responses whose cost sign matches the label (safe: cost <= 0, unsafe: cost > 0)."""
    return ((costs > 0) == ~is_safe.bool()).float().mean()
