"""Padding-free packing: several right-padded samples concatenated into fewer rows, attention kept inside each.

A micro batch of ``B`` samples padded to width ``W`` is laid out again as ``R <= B``
rows of the same width: first-fit decreasing by length, so no row is wider than
the padded batch and the tokens a forward pass computes shrink from ``B * W`` to
``R * W``. In a row, each sample keeps its own position ids (restarting at 0) and
attends only to itself, causally; so every token's hidden state is what it is in
the padded batch (within float tolerance).

Two ways to tell the model where samples start (:func:`packed_model_inputs`):

* ``mask``: a 4-D additive block-diagonal causal mask ``[R, 1, W, W]`` (0 where a
  query may attend, the dtype's minimum elsewhere), which transformers passes to the
  attention as-is; eager and SDPA attention take it.
* ``position_ids``: no mask, only the restarting position ids, from which
  transformers finds the sample boundaries itself (its packed-sequence support,
  which needs ``use_cache=False``; flash-attention kernels take no 4-D mask, so
  this is their way).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class PackedLayout:
    """Where each sample of a right-padded batch lies in the packed rows.

    ``rows[b]`` and ``offsets[b]`` are the row and first column of sample ``b``
    (``lengths[b]`` tokens); ``input_ids``, ``position_ids`` and ``segment_ids``
    are ``[R, W]``. ``segment_ids`` is the sample index of each token, and for the
    padding at a row's end a distinct negative number per position, so that a pad
    token attends only to itself.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    segment_ids: torch.Tensor
    rows: torch.Tensor
    offsets: torch.Tensor
    lengths: torch.Tensor


def first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Sample indices per row: longest first, each into the first row it fits (no row over ``capacity``)."""
    if any(n > capacity for n in lengths):
        raise ValueError(f"a sample of {max(lengths)} tokens does not fit a row of {capacity}")
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for r, room in enumerate(free):
            if lengths[i] <= room:
                rows[r].append(i)
                free[r] -= lengths[i]
                break
        else:
            rows.append([i])
            free.append(capacity - lengths[i])
    return rows


def sample_lengths(attention_mask: torch.Tensor) -> torch.Tensor:
    """Tokens per sample of a right-padded batch (each mask row: ones, then zeros)."""
    lengths = attention_mask.long().sum(-1)
    cols = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    if not torch.equal(attention_mask.bool(), cols[None, :] < lengths[:, None]):
        raise ValueError("packing needs a right-padded batch: each attention-mask row must be ones, then zeros")
    return lengths


def pack(input_ids: torch.Tensor, attention_mask: torch.Tensor, pad_id: int = 0) -> PackedLayout:
    """The packed layout of a right-padded batch, rows as wide as the batch."""
    lengths = sample_lengths(attention_mask)
    width = input_ids.shape[1]
    groups = first_fit_decreasing(lengths.tolist(), width)
    dev = input_ids.device
    ids = torch.full((len(groups), width), pad_id, dtype=input_ids.dtype, device=dev)
    pos = torch.zeros((len(groups), width), dtype=torch.long, device=dev)
    seg = -1 - torch.arange(width, device=dev).repeat(len(groups), 1)
    rows = torch.zeros(len(lengths), dtype=torch.long)
    offsets = torch.zeros(len(lengths), dtype=torch.long)
    for r, members in enumerate(groups):
        col = 0
        for b in members:
            n = int(lengths[b])
            ids[r, col: col + n] = input_ids[b, :n]
            pos[r, col: col + n] = torch.arange(n, device=dev)
            seg[r, col: col + n] = b
            rows[b], offsets[b] = r, col
            col += n
    return PackedLayout(input_ids=ids, position_ids=pos, segment_ids=seg, rows=rows.to(dev),
                        offsets=offsets.to(dev), lengths=lengths)


def block_causal_mask(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask ``[R, 1, W, W]``: 0 where key ``k <= q`` lies in query ``q``'s sample, dtype-min elsewhere."""
    width = segment_ids.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=segment_ids.device).tril()
    allowed = (segment_ids[:, :, None] == segment_ids[:, None, :]) & causal
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min).unsqueeze(1)


#: How the sample boundaries reach the attention (see the module docstring).
PACKING_MODES = ("mask", "position_ids")


def packing_mode(config: Any) -> str:
    """``position_ids`` for flash-attention implementations (no 4-D masks), ``mask`` for the rest."""
    return "position_ids" if "flash" in str(getattr(config, "_attn_implementation", "")) else "mask"


def packed_model_inputs(layout: PackedLayout, mode: str, dtype: torch.dtype) -> dict[str, torch.Tensor | None]:
    """Keyword arguments of a transformers base model's forward for the packed rows."""
    if mode not in PACKING_MODES:
        raise ValueError(f"packing mode {mode!r}: expected one of {PACKING_MODES}")
    mask = block_causal_mask(layout.segment_ids, dtype) if mode == "mask" else None
    return {"input_ids": layout.input_ids, "attention_mask": mask, "position_ids": layout.position_ids,
            "use_cache": False}
