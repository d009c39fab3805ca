"""Per-token lists <-> padded tensors, in the two layouts the baseline uses.

Per-sample quantities travel between Ray actors as lists with one float per
response token (log-probs, values, advantages, returns). The controller pads them
into *response coordinates* ``[B, T_max]`` for GAE; the learners place them into
the *shifted sequence coordinates* of :func:`rad.runtime.logprobs.token_logprobs`
(``[B, L - 1]``, position ``p`` scores input token ``p + 1``), where response
token ``t`` of a sample with prompt length ``P`` sits at ``P - 1 + t``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch


def pad_lists(lists: Sequence[Sequence[float]], dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``[B, T_max]`` values and their boolean mask."""
    width = max(len(x) for x in lists)
    out = torch.zeros((len(lists), width), dtype=dtype)
    mask = torch.zeros((len(lists), width), dtype=torch.bool)
    for i, x in enumerate(lists):
        out[i, : len(x)] = torch.as_tensor(list(x), dtype=dtype)
        mask[i, : len(x)] = True
    return out, mask


def unpad(tensor: torch.Tensor, mask: torch.Tensor) -> list[list[float]]:
    """The masked entries of every row, as lists (inverse of :func:`pad_lists`)."""
    return [row[m].tolist() for row, m in zip(tensor, mask)]


def response_slice(sample: dict[str, Any]) -> slice:
    """Where a sample's response tokens sit in shifted sequence coordinates."""
    start = len(sample["prompt_ids"]) - 1
    return slice(start, start + len(sample["response_ids"]))


def place(samples: Sequence[dict[str, Any]], key: str, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[B, width]`` float32 tensor with each sample's per-token list ``key`` at its response positions."""
    out = torch.zeros((len(samples), width), dtype=torch.float32)
    for i, s in enumerate(samples):
        values = s[key]
        if len(values) != len(s["response_ids"]):
            raise ValueError(f"sample {i}: {key} has {len(values)} entries for {len(s['response_ids'])} "
                             "response tokens")
        out[i, response_slice(s)] = torch.as_tensor(values, dtype=torch.float32)
    return out.to(device)


def gather_responses(tensor: torch.Tensor, samples: Sequence[dict[str, Any]]) -> list[list[float]]:
    """Each sample's response positions of a ``[B, *]`` shifted-coordinate tensor, as lists."""
    return [tensor[i, response_slice(s)].tolist() for i, s in enumerate(samples)]
