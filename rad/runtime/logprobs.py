"""Per-token log-probs of sampled responses under a causal LM: the plain pass and its memory-saving forms.

:func:`token_logprobs` is the one function every role uses (the policy learners of
RAD and PPO-Lag, the frozen reference). Its contract: ``log pi(y_t | x, y_<t)`` at
every response position of a right-padded batch (:func:`collate_samples`), 0
elsewhere, shape ``[B, T-1]``, float32; position ``t`` scores input token ``t+1``.

With both options off it is the plain pass: the model's logits at every position,
``log_softmax`` over the vocabulary in float32, a ``[B, T, V]`` tensor in the
model's dtype and two in float32. The options compute the same numbers (within
float tolerance) with less memory:

* ``chunk_size > 0``: the backbone runs once (``model.get_decoder()``, else
  ``model.base_model``), its hidden states are taken at the response positions
  only, and the LM head (``model.get_output_embeddings()``) plus a float32
  ``logsumexp`` run over ``chunk_size`` of those positions at a time. Under
  autograd each chunk is recomputed in backward (``torch.utils.checkpoint``), so
  one chunk's ``[chunk_size, V]`` logits are alive at a time, never
  ``[B, T, V]``.
* ``packing``: samples are packed into fewer rows (:mod:`rad.runtime.packing`)
  before the backbone runs; the LM head then runs on the response positions as
  above (in one chunk when ``chunk_size`` is 0).

Both read the logits as the LM head's output, transformed as the model's forward
does for the config keys transformers uses: ``final_logit_softcapping`` (Gemma 2
and later: ``cap * tanh(logits / cap)``), ``logit_scale`` (Cohere: times) and
``logits_scaling`` (Granite: divided by). A model whose forward changes its logits
in any other way needs the plain pass.

``model`` is an HF causal LM, or a :class:`~rad.runtime.learner.DeepSpeedLearner`
(anything with ``forward_loss``): then the plain pass goes through the engine's
forward, and the options through :meth:`DeepSpeedLearner.forward_loss`, which puts
the engine's backward hooks (ZeRO bookkeeping, gradient-accumulation scaling) on
the log-probs as the engine's forward puts them on the logits.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch.utils.checkpoint import checkpoint

from rad.runtime.packing import pack, packed_model_inputs, packing_mode


def collate_samples(samples: Sequence[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded prompt+response ids with a mask over response tokens (the ones scored), from
    ``{"prompt_ids", "response_ids"}`` dicts: :class:`~rad.runtime.batch.TokenBatch`'s model inputs."""
    from rad.runtime.batch import TokenBatch

    batch = TokenBatch.from_ids([s["prompt_ids"] for s in samples], [s["response_ids"] for s in samples], pad_id)
    return batch.model_inputs("cpu")


def hf_model(model: Any) -> torch.nn.Module:
    """The transformers model inside ``model`` (a DeepSpeedLearner or engine has it as ``module``)."""
    while not hasattr(model, "get_output_embeddings") and hasattr(model, "module"):
        model = model.module
    return model


def logit_transform(config: Any) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """What the model's forward does to the LM head's output, from its config (None: nothing)."""
    cap = getattr(config, "final_logit_softcapping", None)
    scale = getattr(config, "logit_scale", None)
    divisor = getattr(config, "logits_scaling", None)
    steps = []
    if scale is not None:
        steps.append(lambda x: x * scale)
    if divisor is not None:
        steps.append(lambda x: x / divisor)
    if cap is not None:
        steps.append(lambda x: torch.tanh(x / cap) * cap)
    if not steps:
        return None

    def transform(logits: torch.Tensor) -> torch.Tensor:
        for step in steps:
            logits = step(logits)
        return logits

    return transform


def _chunk_logprobs(head: torch.nn.Module, transform: Callable | None, hidden: torch.Tensor,
                    targets: torch.Tensor) -> torch.Tensor:
    """log-softmax of the head's logits at ``targets``: ``logit[y] - logsumexp(logits)``, float32."""
    logits = head(hidden).float()
    if transform is not None:
        logits = transform(logits)
    return logits.gather(-1, targets[:, None]).squeeze(-1) - logits.logsumexp(-1)


def head_logprobs(head: torch.nn.Module, transform: Callable | None, hidden: torch.Tensor, targets: torch.Tensor,
                  chunk_size: int) -> torch.Tensor:
    """Log-probs of ``targets [N]`` from final hidden states ``hidden [N, D]``, ``chunk_size`` rows at a time.

    ``head`` is the LM head and ``transform`` what the model does to its output
    (:func:`logit_transform`). ``chunk_size`` 0 is one chunk. Under autograd every
    chunk is checkpointed: its logits are freed after the forward and recomputed
    in backward.
    """
    size = chunk_size or max(1, len(targets))
    parts = []
    for i in range(0, len(targets), size):
        h, t = hidden[i: i + size], targets[i: i + size]
        if torch.is_grad_enabled():
            parts.append(checkpoint(_chunk_logprobs, head, transform, h, t, use_reentrant=False))
        else:
            parts.append(_chunk_logprobs(head, transform, h, t))
    return torch.cat(parts) if parts else hidden.sum(-1).float() * 0  # no positions: empty, still in the graph


def _head(model: torch.nn.Module) -> torch.nn.Module:
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embeddings (LM head); use the plain log-prob pass")
    return head


def _backbone(model: torch.nn.Module) -> torch.nn.Module:
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None or decoder is model:
        decoder = model.base_model
    if decoder is model:
        raise ValueError(f"{type(model).__name__}: no backbone (get_decoder / base_model) to run without the LM head")
    return decoder


def selected_logprobs(model: torch.nn.Module, batch: dict[str, torch.Tensor], chunk_size: int,
                      packing: bool) -> torch.Tensor:
    """:func:`token_logprobs` with the options on, on a bare transformers model."""
    ids, resp = batch["input_ids"], batch["response_mask"][:, 1:]
    b_idx, t_idx = resp.nonzero(as_tuple=True)
    targets = ids[:, 1:][b_idx, t_idx]
    head, backbone = _head(model), _backbone(model)
    if packing:
        layout = pack(ids, batch["attention_mask"])
        dtype = model.get_input_embeddings().weight.dtype
        hidden = backbone(**packed_model_inputs(layout, packing_mode(model.config), dtype)).last_hidden_state
        hidden = hidden[layout.rows[b_idx], layout.offsets[b_idx] + t_idx]
    else:
        hidden = backbone(input_ids=ids, attention_mask=batch["attention_mask"],
                          use_cache=False).last_hidden_state[b_idx, t_idx]
    lp = head_logprobs(head, logit_transform(model.config), hidden, targets, chunk_size)
    out = torch.zeros(resp.shape, dtype=torch.float32, device=ids.device)
    return out.index_put((b_idx, t_idx), lp)


def plain_logprobs(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """:func:`token_logprobs` with the options off: the full ``[B, T, V]`` logits, float32 log-softmax."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   use_cache=False).logits[:, :-1].float()
    targets = batch["input_ids"][:, 1:]
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return logp * batch["response_mask"][:, 1:]


def token_logprobs(model: Any, batch: dict[str, torch.Tensor], chunk_size: int = 0,
                   packing: bool = False) -> torch.Tensor:
    """log pi(y_t | x, y_<t) at every position of the response (0 elsewhere), shape [B, T-1], float32.

    Position t of the output scores token t+1 of the input. ``chunk_size`` and
    ``packing`` save memory (see the module docstring); with both off this is the
    plain pass.
    """
    if chunk_size < 0:
        raise ValueError(f"chunk_size must be >= 0, got {chunk_size}")
    if not chunk_size and not packing:
        return plain_logprobs(model, batch)
    module = hf_model(model)

    def compute(bare: torch.nn.Module) -> tuple[torch.Tensor, None]:
        return selected_logprobs(hf_model(bare), batch, chunk_size, packing), None

    if hasattr(model, "forward_loss") and torch.is_grad_enabled():
        return model.forward_loss(compute)[0]
    return compute(module)[0]


def truncated_importance_weights(target_logp: torch.Tensor, behaviour_logp: torch.Tensor, cap: float) -> torch.Tensor:
    """Per-sample importance weights ``min(pi(y|x) / mu(y|x), cap)`` of whole responses, from their summed
    log-probs under the policy being trained (``target_logp``) and the policy that sampled them
    (``behaviour_logp``): truncated importance sampling (Ionides 2008; the "TIS" of off-policy RLHF
    trainers). The REINFORCE gradient of samples from ``mu`` is ``E_mu[w A grad log pi]``; truncation
    trades a little bias for bounded variance."""
    return torch.exp(target_logp - behaviour_logp).clamp(max=cap)
