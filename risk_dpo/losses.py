"""The offline preference losses, registered by name.

Every loss maps the per-sequence statistics of the chosen (``w``) and rejected
(``l``) responses of a batch of pairs to per-pair losses whose **mean** is the
training objective, plus metrics under the names practitioners know
(``rewards/chosen|rejected|accuracies|margins``, ``logps/*``, ``kl/*``,
``risk_ratio/*``; per-pair tensors, or scalars, averaged by the trainer).
With ``u = beta * (logratio(y_w) - logratio(y_l))``:

* ``dpo``:     ``-log sigmoid(u)``
* ``tdpo1``:   ``-log sigmoid(u - beta (D_SeqKL(y_l) - D_SeqKL(y_w)))``
* ``tdpo2``:   ``-log sigmoid(u - alpha beta (D_SeqKL(y_l) - sg(D_SeqKL(y_w))))``
* ``ra_dpo1`` / ``ra_dpo2``: TDPO1 / TDPO2 with ``D_SeqKL`` replaced by the
  sequential risk ratio ``D_SeqRR`` (CVaR_mu or ERM_mu; see :mod:`risk_dpo.token_stats`)
* ``kldpo``:   DPO losses ``l_i`` re-weighted by detached exponential tilting
  ``w_i = exp((l_i - mean l) / tau)`` over the batch gathered from every worker
  (optionally capped at ``max_weight``), normalised: objective ``sum w l / sum w``
* ``wdpo``:    ``l_i + rho ||d l_i / d e_i||^2``, ``e_i`` the input embeddings of
  pair i's two sequences (gradient penalty, ``create_graph`` in training)

Add a loss with ``@register_loss("name", needs_kl=..., needs_risk=...)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from rad.errors import ConfigError
from risk_dpo.token_stats import SequenceStats

Metrics = dict[str, torch.Tensor]


@dataclass
class LossParams:
    beta: float = 0.1
    alpha: float = 0.5
    risk: str = "cvar"
    mu: float = 0.95
    tau: float = 1.0
    max_weight: float = 0.0
    rho: float = 0.01


@dataclass
class PairBatch:
    """Inputs of a loss: chosen and rejected statistics of the same B pairs.

    ``inputs_embeds`` (2B, L, H), chosen rows first, is given to losses that
    differentiate through the input embeddings (WDPO); ``create_graph`` says
    whether that derivative must itself be differentiable (training).
    """

    chosen: SequenceStats
    rejected: SequenceStats
    inputs_embeds: torch.Tensor | None = None
    create_graph: bool = False


LossFn = Callable[[PairBatch, LossParams], tuple[torch.Tensor, Metrics]]


@dataclass(frozen=True)
class LossSpec:
    name: str
    fn: LossFn
    needs_kl: bool = False
    needs_risk: bool = False
    needs_embeds: bool = False
    doc: str = field(default="", compare=False)


_LOSSES: dict[str, LossSpec] = {}


def register_loss(name: str, *, needs_kl: bool = False, needs_risk: bool = False, needs_embeds: bool = False):
    """Decorator registering ``fn(batch, params) -> (per_pair_losses, metrics)`` under ``name``."""

    def decorator(fn: LossFn) -> LossFn:
        if name in _LOSSES:
            raise ConfigError(f"loss {name!r} is already registered")
        _LOSSES[name] = LossSpec(name, fn, needs_kl, needs_risk, needs_embeds, (fn.__doc__ or "").strip())
        return fn

    return decorator


def loss_names() -> list[str]:
    return sorted(_LOSSES)


def get_loss(name: str) -> LossSpec:
    try:
        return _LOSSES[name]
    except KeyError:
        raise ConfigError(f"loss.name: unknown loss {name!r}; registered losses: {', '.join(loss_names())}") from None


# ---------------------------------------------------------------------------
# Shared pieces


def implicit_margin(batch: PairBatch, beta: float) -> torch.Tensor:
    """``u = beta * (logratio(y_w) - logratio(y_l))`` per pair."""
    return beta * (batch.chosen.logratio - batch.rejected.logratio)


def pair_metrics(batch: PairBatch, beta: float) -> Metrics:
    """The DPO-family metrics of a batch (detached, per pair)."""
    c, r = batch.chosen, batch.rejected
    rc, rr = beta * c.logratio.detach(), beta * r.logratio.detach()
    out: Metrics = {
        "rewards/chosen": rc, "rewards/rejected": rr,
        "rewards/accuracies": (rc > rr).float(), "rewards/margins": rc - rr,
        "logps/chosen": c.logps.detach(), "logps/rejected": r.logps.detach(),
        "logps/ref_chosen": c.ref_logps.detach(), "logps/ref_rejected": r.ref_logps.detach(),
    }
    if c.kl is not None and r.kl is not None:
        out["kl/chosen"], out["kl/rejected"] = c.kl.detach(), r.kl.detach()
    if c.risk is not None and r.risk is not None:
        out["risk_ratio/chosen"], out["risk_ratio/rejected"] = c.risk.detach(), r.risk.detach()
    return out


def _token_level(batch: PairBatch, p: LossParams, div_w: torch.Tensor, div_l: torch.Tensor,
                 second_version: bool) -> tuple[torch.Tensor, Metrics]:
    """TDPO / Ra-DPO given the per-sequence divergences of chosen and rejected."""
    u = implicit_margin(batch, p.beta)
    if second_version:
        delta = p.alpha * p.beta * (div_l - div_w.detach())
    else:
        delta = p.beta * (div_l - div_w)
    return -F.logsigmoid(u - delta), pair_metrics(batch, p.beta)


def _require(t: torch.Tensor | None, what: str) -> torch.Tensor:
    if t is None:
        raise ValueError(f"this loss needs {what}; compute it in sequence_stats")
    return t


# ---------------------------------------------------------------------------
# The losses


@register_loss("dpo")
def dpo(batch: PairBatch, p: LossParams) -> tuple[torch.Tensor, Metrics]:
    """Direct preference optimisation: -log sigmoid(u)."""
    return -F.logsigmoid(implicit_margin(batch, p.beta)), pair_metrics(batch, p.beta)


@register_loss("tdpo1", needs_kl=True)
def tdpo1(batch: PairBatch, p: LossParams) -> tuple[torch.Tensor, Metrics]:
    """Token-level DPO with the sequential KL of both responses."""
    return _token_level(batch, p, _require(batch.chosen.kl, "kl"), _require(batch.rejected.kl, "kl"), False)


@register_loss("tdpo2", needs_kl=True)
def tdpo2(batch: PairBatch, p: LossParams) -> tuple[torch.Tensor, Metrics]:
    """TDPO with weight alpha and a stop-gradient on the chosen response's sequential KL."""
    return _token_level(batch, p, _require(batch.chosen.kl, "kl"), _require(batch.rejected.kl, "kl"), True)


@register_loss("ra_dpo1", needs_kl=True, needs_risk=True)
def ra_dpo1(batch: PairBatch, p: LossParams) -> tuple[torch.Tensor, Metrics]:
    """Risk-aware DPO: TDPO1 with the sequential risk ratio (CVaR_mu / ERM_mu)."""
    return _token_level(batch, p, _require(batch.chosen.risk, "risk"), _require(batch.rejected.risk, "risk"),
                        False)


@register_loss("ra_dpo2", needs_kl=True, needs_risk=True)
def ra_dpo2(batch: PairBatch, p: LossParams) -> tuple[torch.Tensor, Metrics]:
    """Risk-aware DPO, second version: alpha and a stop-gradient on the chosen response's risk ratio."""
    return _token_level(batch, p, _require(batch.chosen.risk, "risk"), _require(batch.rejected.risk, "risk"),
                        True)


def gather_detached(x: torch.Tensor) -> torch.Tensor:
    """``x`` (1-D) of every rank concatenated in rank order, detached.

    Sizes may differ between ranks (e.g. the last evaluation batch), so sizes are
    exchanged first and tensors padded to the largest.
    """
    x = x.detach()
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    world = dist.get_world_size()
    size = torch.tensor([x.numel()], device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    width = int(max(s.item() for s in sizes))
    padded = torch.zeros(width, dtype=x.dtype, device=x.device)
    padded[: x.numel()] = x
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(s.item())] for part, s in zip(parts, sizes)])


def tilting_weights(losses: torch.Tensor, all_losses: torch.Tensor, tau: float, max_weight: float = 0.0
                    ) -> torch.Tensor:
    """KLDPO weights of ``losses`` (this rank's pairs), normalised to mean 1 over ``all_losses``.

    ``w = exp((l - mean l) / tau)``, capped at ``max_weight`` when > 0, divided by
    the mean weight over every rank's pairs; detached. A softmax-style shift
    keeps small ``tau`` from overflowing.
    """
    losses, all_losses = losses.detach(), all_losses.detach()
    centre = all_losses.mean()
    z_all = (all_losses - centre) / tau
    z = (losses - centre) / tau
    if max_weight > 0:
        cap = math.log(max_weight)
        z_all, z = z_all.clamp(max=cap), z.clamp(max=cap)
    shift = z_all.max()
    return torch.exp(z - shift) / torch.exp(z_all - shift).mean()


@register_loss("kldpo")
def kldpo(batch: PairBatch, p: LossParams) -> tuple[torch.Tensor, Metrics]:
    """KL distributionally robust DPO: detached exponential tilting of the DPO losses over the batch."""
    base, metrics = dpo(batch, p)
    weights = tilting_weights(base, gather_detached(base), p.tau, p.max_weight)
    metrics["kldpo/dpo_loss"] = base.detach()
    metrics["kldpo/weight_max"] = weights.max()
    # The mean over all ranks' pairs of w_i l_i (w of mean 1) is sum w l / sum w.
    return weights * base, metrics


@register_loss("wdpo", needs_embeds=True)
def wdpo(batch: PairBatch, p: LossParams) -> tuple[torch.Tensor, Metrics]:
    """Wasserstein robust DPO: DPO loss plus rho times the squared input-embedding gradient norm per pair."""
    base, metrics = dpo(batch, p)
    embeds = batch.inputs_embeds
    if embeds is None or not embeds.requires_grad:
        raise ValueError("wdpo needs the input embeddings of the batch (requires_grad=True)")
    # Pairs do not interact, so the gradient of the summed loss restricted to a
    # pair's rows is that pair's own gradient.
    (grad,) = torch.autograd.grad(base.sum(), embeds, create_graph=batch.create_graph)
    grad = grad if grad.dtype == torch.float64 else grad.float()
    per_row = grad.pow(2).flatten(1).sum(-1)
    n = base.shape[0]
    penalty = per_row[:n] + per_row[n:]
    metrics["wdpo/dpo_loss"] = base.detach()
    metrics["wdpo/grad_penalty"] = penalty.detach()
    return base + p.rho * penalty, metrics
