"""Per-token statistics of policy and reference on (prompt, response) sequences.

One forward of the policy (with grad) and of the reference (no grad, or
precomputed) gives, for every response token position ``t`` (state
``s_t = [x, y_<t]``):

* the taken-token log-probabilities ``log pi_theta(y_t|s_t)`` and ``log pi_ref(y_t|s_t)``;
* the per-position divergence over the vocabulary ``KL(pi_ref(.|s_t) || pi_theta(.|s_t))``;
* the per-position risk ``Phi^mu_{z ~ pi_ref(.|s_t)}[d(z)]`` of the log-ratio
  ``d(z) = log pi_ref(z|s_t) - log pi_theta(z|s_t)``.

Summed over the response they are TDPO's sequential KL ``D_SeqKL`` and Ra-DPO's
sequential risk ratio ``D_SeqRR`` (Ra-DPO paper, Theorem 3.6).

Which tail, and what "mu -> full mass" means (our reading of the paper)
----------------------------------------------------------------------
The paper writes CVaR as ``Phi^mu(Z) = (1/mu) int_0^mu F_Z^{-1}(xi) dxi``, the
lower tail of mass ``mu`` of a *reward-like* variable. In its derivation
(Appendix B.6) the term enters as ``-Phi^mu(log pi_theta/pi_ref)`` and is then
rewritten as ``+Phi^mu(log pi_ref/pi_theta)``; for CVaR the identity that makes
this exact is ``-CVaR_lower(X) = CVaR_upper(-X)``. So on the divergence-like
variable ``d = log pi_ref - log pi_theta`` the risk functional is the **upper**
tail: the mean of ``d`` over the largest-``d`` tokens that carry reference mass
``mu``,

    CVaR_mu(d) = (1/mu) int_{1-mu}^1 F_d^{-1}(xi) dxi      (z ~ pi_ref),

the risk-averse choice that penalises the tokens where the policy has moved
furthest below the reference. This matches the paper's experiments: mu in
{0.95 ... 0.99} and "the risk ratio value is slightly larger than the KL
divergence value when selecting CVaR". ``mu = 1`` (full mass) is the plain
expectation ``E_ref[d] = KL(pi_ref || pi_theta)``, so Ra-DPO at mu = 1 is TDPO;
smaller mu moves towards the worst token (mu -> 0: the largest ``d`` on the
reference's support). A token carrying more mass than is left in the tail is
split (the standard CVaR of a discrete distribution).

ERM uses the same orientation: ``ERM_mu(d) = (1/mu) log E_ref[exp(mu d)]`` with
mu > 0 (the Renyi divergence of order 1 + mu); it is >= KL by Jensen and tends
to KL as mu -> 0.

Both are computed over the vocabulary axis with ``sort`` / ``logsumexp``
(``torch.quantile`` fails beyond ~16M elements). The gradient flows through
``d`` (the policy); the CVaR tail weights depend on the reference masses and the
sort order only, which is the a.e. gradient of CVaR.

Only positions whose label is not ignored (response tokens) are evaluated: the
vocabulary-sized work is ``(#response tokens) x V``, packed row-major, so a
precomputed reference is the same packed tensor. Memory: the CVaR keeps a handful
of such ``M x V`` tensors for backward (log-probs of both models, the log-ratio,
its sorted copy and sort indices), a few times what TDPO's KL needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rad.data.encode import IGNORE_INDEX
from rad.errors import ConfigError

RISKS = ("cvar", "erm")


@dataclass
class SequenceStats:
    """Per-sequence sums over response tokens (shape ``(N,)`` each).

    ``kl`` / ``risk`` are None when they were not requested (or the reference's
    full distribution is not available, e.g. a precomputed reference of sums).
    """

    logps: torch.Tensor
    ref_logps: torch.Tensor
    tokens: torch.Tensor
    kl: torch.Tensor | None = None
    risk: torch.Tensor | None = None

    @property
    def logratio(self) -> torch.Tensor:
        """``log pi_theta(y|x) - log pi_ref(y|x)`` of the whole response."""
        return self.logps - self.ref_logps

    def select(self, rows: slice) -> "SequenceStats":
        """The statistics of a subset of the sequences (e.g. the chosen half of a batch)."""
        return SequenceStats(self.logps[rows], self.ref_logps[rows], self.tokens[rows],
                             None if self.kl is None else self.kl[rows],
                             None if self.risk is None else self.risk[rows])


# ---------------------------------------------------------------------------
# Risk functionals over the last (vocabulary) axis


def cvar_upper(values: torch.Tensor, probs: torch.Tensor, mu: float) -> torch.Tensor:
    """Upper-tail CVaR at mass ``mu`` of ``values`` distributed as ``probs`` (last axis).

    The mean of the largest values that together carry probability ``mu``; the
    boundary atom contributes the fraction of its mass that fits. ``mu = 1`` is
    the expectation.
    """
    if not 0.0 < mu <= 1.0:
        raise ConfigError(f"CVaR level mu must be in (0, 1], got {mu}")
    ordered, index = values.sort(dim=-1, descending=True)
    p = probs.gather(-1, index)
    before = p.cumsum(-1) - p
    weight = torch.minimum(p, (mu - before).clamp(min=0.0))
    return (weight * ordered).sum(-1) / mu


def entropic_risk(values: torch.Tensor, log_probs: torch.Tensor, mu: float) -> torch.Tensor:
    """Entropic risk ``(1/mu) log E[exp(mu * values)]`` under ``exp(log_probs)`` (last axis)."""
    if mu <= 0.0:
        raise ConfigError(f"ERM coefficient mu must be > 0, got {mu}")
    return torch.logsumexp(log_probs + mu * values, dim=-1) / mu


def risk_functional(d: torch.Tensor, ref_logp: torch.Tensor, risk: str, mu: float) -> torch.Tensor:
    """``Phi^mu_{z ~ exp(ref_logp)}[d(z)]`` per row (see the module docstring for the orientation)."""
    if risk == "cvar":
        return cvar_upper(d, ref_logp.exp(), mu)
    if risk == "erm":
        return entropic_risk(d, ref_logp, mu)
    raise ConfigError(f"unknown risk functional {risk!r}; choose one of {list(RISKS)}")


# ---------------------------------------------------------------------------
# Packing response positions


def response_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where the next-token predictions of response tokens are.

    Returns ``(mask, targets, rows)``: ``mask`` (N, L-1) marks logits positions
    predicting a response token, ``targets`` (M,) are those tokens, ``rows`` (M,)
    their sequence index. Selection is row-major, so each sequence's positions
    are contiguous and in order.
    """
    shifted = labels[:, 1:]
    mask = shifted != IGNORE_INDEX
    rows = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(shifted)[mask]
    return mask, shifted[mask], rows


def packed_logprobs(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Log-softmax of the logits at the masked positions, shape (M, V), in float32 (or float64)."""
    picked = logits[:, :-1][mask]
    return torch.log_softmax(picked if picked.dtype == torch.float64 else picked.float(), dim=-1)


def reference_stats(ref_logits: torch.Tensor, labels: torch.Tensor, keep_distribution: bool
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What a precomputed reference stores: per-sequence ``log pi_ref(y|x)`` and
    (optionally) the packed per-position log-probs over the vocabulary."""
    mask, targets, rows = response_positions(labels)
    ref_lp = packed_logprobs(ref_logits, mask)
    taken = ref_lp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    sums = torch.zeros(labels.shape[0], dtype=ref_lp.dtype, device=ref_lp.device).index_add_(0, rows, taken)
    return sums, (ref_lp if keep_distribution else None)


# ---------------------------------------------------------------------------
# The statistics


def sequence_stats(policy_logits: torch.Tensor, labels: torch.Tensor, *,
                   ref_logits: torch.Tensor | None = None,
                   ref_logps: torch.Tensor | None = None,
                   ref_packed_logprobs: torch.Tensor | None = None,
                   need_kl: bool = True, need_risk: bool = False,
                   risk: str = "cvar", mu: float = 1.0) -> SequenceStats:
    """Per-sequence sums of taken-token log-probs, sequential KL and sequential risk ratio.

    The reference is given either as logits from the same batch (``ref_logits``)
    or precomputed: ``ref_logps`` (N,) plus, for KL / risk, the packed
    per-position log-probs ``ref_packed_logprobs`` (M, V) in
    :func:`response_positions` order. KL (also computed whenever the risk is)
    and risk need the reference's full distribution; asking for them with a
    reference of sums only is an error.
    """
    n = labels.shape[0]
    mask, targets, rows = response_positions(labels)
    pol_lp = packed_logprobs(policy_logits, mask)
    if ref_logits is not None:
        with torch.no_grad():
            ref_lp = packed_logprobs(ref_logits.detach(), mask)
    else:
        ref_lp = ref_packed_logprobs
    if ref_lp is not None and ref_lp.shape != pol_lp.shape:
        raise ValueError(f"reference log-probs have shape {tuple(ref_lp.shape)}, expected {tuple(pol_lp.shape)}")

    def per_sequence(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, rows, values)

    logps = per_sequence(pol_lp.gather(-1, targets.unsqueeze(-1)).squeeze(-1))
    if ref_lp is not None:
        ref_sums = per_sequence(ref_lp.gather(-1, targets.unsqueeze(-1)).squeeze(-1))
    elif ref_logps is not None:
        ref_sums = ref_logps.to(logps)
    else:
        raise ValueError("sequence_stats needs ref_logits, ref_logps or ref_packed_logprobs")
    tokens = per_sequence(torch.ones_like(targets, dtype=logps.dtype))
    stats = SequenceStats(logps=logps, ref_logps=ref_sums, tokens=tokens)
    if not (need_kl or need_risk):
        return stats
    if ref_lp is None:
        raise ValueError("the sequential KL / risk ratio needs the reference's full distribution")
    d = ref_lp - pol_lp  # log pi_ref(z) - log pi_theta(z), over the vocabulary
    stats.kl = per_sequence((ref_lp.exp() * d).sum(-1))
    if need_risk:
        stats.risk = per_sequence(risk_functional(d, ref_lp, risk, mu))
    return stats
