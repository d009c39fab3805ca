"""The typed batch that travels between the roles of an online RL step: token tensors with fixed shapes.

The controller builds one :class:`TokenBatch` from a step's rollouts; every role that reads
token ids (the reference, the policy learner ranks, PPO-Lag's critics) takes it, or its
contiguous shards (:meth:`TokenBatch.split`, one per rank), and cuts its own micro batches
(:meth:`TokenBatch.micro_batches`, each trimmed to its longest sequence), in arrival order
or, with ``learner.group_by_length``, samples of similar lengths together so that less is
padding (:func:`length_grouped_partition`, :meth:`TokenBatch.grouped_micro_batches`).
What a role computes per token comes back as one ``[B, T-1]`` tensor in the same coordinates,
in the batch's row order, so the controller concatenates the shards and never handles lists
of Python floats.

Shapes (B samples, prompt-major as the rollout engines return them; T = the longest
prompt + response of the batch):

================  =========  ============================================================
``input_ids``     int64      ``[B, T]``   prompt then response token ids, right-padded
``attention_mask`` int64     ``[B, T]``   1 on prompt and response tokens
``response_mask`` bool       ``[B, T]``   True on response tokens (the ones scored and trained)
``sample_fields`` float      ``[B]`` each: per-sample values, e.g. ``advantages``
``token_fields``  float      ``[B, T-1]`` each: per-token values in log-prob coordinates
                             (position ``t`` holds the value for input token ``t+1``, as
                             :func:`rad.runtime.logprobs.token_logprobs` outputs; 0 off the
                             response), e.g. ``old_logprobs``, ``reward_advantages``
================  =========  ============================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import torch


@dataclass
class TokenBatch:
    """Samples as padded token tensors plus named per-sample and per-token fields (see the module doc)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    sample_fields: dict[str, torch.Tensor] = field(default_factory=dict)
    token_fields: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def from_ids(cls, prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]],
                 pad_id: int) -> "TokenBatch":
        """Right-padded prompt + response ids of ``len(prompt_ids)`` samples."""
        if len(prompt_ids) != len(response_ids) or not prompt_ids:
            raise ValueError(f"TokenBatch: {len(prompt_ids)} prompts and {len(response_ids)} responses")
        width = max(len(p) + len(r) for p, r in zip(prompt_ids, response_ids))
        ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long)
        attn = torch.zeros((len(prompt_ids), width), dtype=torch.long)
        resp = torch.zeros((len(prompt_ids), width), dtype=torch.bool)
        for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
            n = len(p) + len(r)
            ids[i, :n] = torch.tensor(list(p) + list(r), dtype=torch.long)
            attn[i, :n] = 1
            resp[i, len(p): n] = True
        return cls(ids, attn, resp)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def width(self) -> int:
        return self.input_ids.shape[1]

    @property
    def token_mask(self) -> torch.Tensor:
        """``[B, T-1]`` bool: the response positions in log-prob coordinates."""
        return self.response_mask[:, 1:]

    @property
    def response_lengths(self) -> torch.Tensor:
        """``[B]`` int64."""
        return self.response_mask.sum(-1)

    @property
    def prompt_lengths(self) -> torch.Tensor:
        """``[B]`` int64."""
        return self.attention_mask.sum(-1) - self.response_lengths

    def with_fields(self, **fields: torch.Tensor) -> "TokenBatch":
        """A copy with more fields: ``[B]`` tensors are per sample, ``[B, T-1]`` per token."""
        samples, tokens = dict(self.sample_fields), dict(self.token_fields)
        for name, value in fields.items():
            if tuple(value.shape) == (len(self),):
                samples[name] = value
            elif tuple(value.shape) == (len(self), self.width - 1):
                tokens[name] = value
            else:
                raise ValueError(f"TokenBatch field {name!r}: shape {tuple(value.shape)}, expected ({len(self)},) or "
                                 f"({len(self)}, {self.width - 1})")
        return replace(self, sample_fields=samples, token_fields=tokens)

    def rows(self, start: int, stop: int, width: int | None = None) -> "TokenBatch":
        """Samples ``start:stop``, cut to ``width`` columns (default: all)."""
        w = self.width if width is None else width
        return TokenBatch(self.input_ids[start:stop, :w], self.attention_mask[start:stop, :w],
                          self.response_mask[start:stop, :w],
                          {k: v[start:stop] for k, v in self.sample_fields.items()},
                          {k: v[start:stop, : w - 1] for k, v in self.token_fields.items()})

    def split(self, parts: int) -> list["TokenBatch"]:
        """Contiguous shards whose sizes differ by at most one, at the batch's full width (one per rank);
        empty shards are left out."""
        base, extra = divmod(len(self), parts)
        out, start = [], 0
        for i in range(parts):
            size = base + (1 if i < extra else 0)
            if size:
                out.append(self.rows(start, start + size))
            start += size
        return out

    def take(self, index: Sequence[int], width: int | None = None) -> "TokenBatch":
        """Samples ``index`` (in that order), cut to ``width`` columns (default: all); a copy."""
        w = self.width if width is None else width
        idx = torch.as_tensor(list(index), dtype=torch.long)
        return TokenBatch(self.input_ids[idx, :w], self.attention_mask[idx, :w], self.response_mask[idx, :w],
                          {k: v[idx] for k, v in self.sample_fields.items()},
                          {k: v[idx, : w - 1] for k, v in self.token_fields.items()})

    def micro_batches(self, size: int) -> list["TokenBatch"]:
        """Consecutive rows in chunks of at most ``size``, each trimmed to its own longest sequence."""
        out = []
        for start in range(0, len(self), size):
            stop = min(start + size, len(self))
            width = int(self.attention_mask[start:stop].sum(-1).max())
            out.append(self.rows(start, stop, max(width, 2)))
        return out

    def grouped_micro_batches(self, size: int) -> tuple[list["TokenBatch"], torch.Tensor]:
        """As many micro batches as :meth:`micro_batches` makes, of :func:`length_grouped_partition` of the sequence
        lengths (similar lengths together, less padding), each trimmed to its own longest sequence; and ``order``
        (``[B]`` int64), the batch row of each row of their concatenation (see :meth:`in_order`)."""
        lengths = self.attention_mask.sum(-1).tolist()
        parts = length_grouped_partition(lengths, size)
        micro = [self.take(part, max(max(lengths[i] for i in part), 2)) for part in parts]
        return micro, torch.tensor([i for part in parts for i in part], dtype=torch.long)

    def cut_micro_batches(self, size: int, group_by_length: bool) -> tuple[list["TokenBatch"], torch.Tensor | None]:
        """:meth:`micro_batches` (order None: they are in row order), or with ``group_by_length``
        :meth:`grouped_micro_batches`."""
        return self.grouped_micro_batches(size) if group_by_length else (self.micro_batches(size), None)

    def in_order(self, outputs: Sequence[torch.Tensor], order: torch.Tensor | None = None) -> torch.Tensor:
        """The micro batches' ``[b_i, t_i-1]`` per-token outputs as one ``[B, T-1]`` tensor in this batch's row order
        (``order``: that of :meth:`grouped_micro_batches`; None = the micro batches are in row order already)."""
        out = torch.cat([self.pad_tokens(values) for values in outputs])
        if order is None:
            return out
        restored = torch.empty_like(out)
        restored[order] = out
        return restored

    def model_inputs(self, device: torch.device | str) -> dict[str, torch.Tensor]:
        """What :func:`rad.runtime.logprobs.token_logprobs` and the critics take, on ``device``."""
        return {"input_ids": self.input_ids.to(device), "attention_mask": self.attention_mask.to(device),
                "response_mask": self.response_mask.to(device)}

    def token(self, name: str, device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Per-token field ``name`` as ``[B, T-1]`` on ``device``."""
        return self.token_fields[name].to(device=device, dtype=dtype)

    def sample(self, name: str, device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Per-sample field ``name`` as ``[B]`` on ``device``."""
        return self.sample_fields[name].to(device=device, dtype=dtype)

    def pad_tokens(self, values: torch.Tensor) -> torch.Tensor:
        """A micro batch's ``[b, t-1]`` per-token output padded (with 0) to this batch's ``[B, T-1]`` width."""
        return torch.nn.functional.pad(values, (0, self.width - 1 - values.shape[1]))

    def response_aligned(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, T-1]`` per-token values moved to start at column 0 of each row: ``([B, L], mask [B, L])``,
        L = the longest response (what GAE and the PPO losses read)."""
        lengths = self.response_lengths
        starts = self.prompt_lengths - 1
        width = int(lengths.max())
        out = torch.zeros((len(self), width), dtype=values.dtype)
        mask = torch.zeros((len(self), width), dtype=torch.bool)
        for i, (s, n) in enumerate(zip(starts.tolist(), lengths.tolist())):
            out[i, :n] = values[i, s: s + n]
            mask[i, :n] = True
        return out, mask

    def from_response_aligned(self, values: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`response_aligned`: ``[B, L]`` back to ``[B, T-1]`` (0 off the response)."""
        out = torch.zeros((len(self), self.width - 1), dtype=values.dtype)
        for i, (s, n) in enumerate(zip((self.prompt_lengths - 1).tolist(), self.response_lengths.tolist())):
            out[i, s: s + n] = values[i, :n]
        return out

    def response_values(self, values: torch.Tensor) -> list[torch.Tensor]:
        """Each sample's response slice of ``[B, T-1]`` per-token values (1-D, its response length)."""
        return [values[i, s: s + n] for i, (s, n) in
                enumerate(zip((self.prompt_lengths - 1).tolist(), self.response_lengths.tolist()))]


def length_grouped_partition(lengths: Sequence[int], size: int) -> list[list[int]]:
    """Indices ``0..B-1`` in as many micro batches as ``size`` samples each make (``ceil(B / size)``), with the
    fewest padded tokens in all and none padded beyond ``size`` samples at the longest length; deterministic.

    A micro batch pads to its longest sequence (samples x longest tokens). The cut of
    :meth:`TokenBatch.micro_batches` (arrival order) is one such partition; grouping similar lengths pads less.
    Samples are ordered longest first (ties by index) and cut into runs by dynamic programming; runs lose
    nothing, since giving runs, longest first, the sizes of any partition's micro batches (ordered by their
    longest sample) makes none longer. Micro batches come longest first, each listing its indices in ascending
    order.
    """
    if size < 1 or not lengths:
        raise ValueError(f"length_grouped_partition: {len(lengths)} samples in micro batches of {size}")
    order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
    longest = torch.tensor([max(int(lengths[i]), 1) for i in order], dtype=torch.long)  # of each run start
    b, n = len(order), -(-len(order) // size)
    start, stop = torch.arange(b + 1).unsqueeze(1), torch.arange(b + 1).unsqueeze(0)
    padded = (stop - start) * torch.cat([longest, longest[-1:]]).unsqueeze(1)  # run start:stop of the sorted samples
    never = 1 << 60
    padded = torch.where((stop > start) & (padded <= size * int(longest[0])), padded, never)
    best = torch.full((b + 1,), never, dtype=torch.long)  # fewest padded tokens of the first j samples in k runs
    best[0] = 0
    cuts = []
    for _ in range(n):
        best, cut = (best.unsqueeze(1) + padded).min(dim=0)  # the first of equal minima: deterministic
        cuts.append(cut)
    bounds, j = [], b
    for cut in reversed(cuts):
        bounds.append((int(cut[j]), j))
        j = int(cut[j])
    return [sorted(order[s:e]) for s, e in reversed(bounds)]


def cat_tokens(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate the shards' ``[b_i, T-1]`` per-token outputs along the batch (same width by construction)."""
    return torch.cat(list(parts), dim=0)
