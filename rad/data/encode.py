"""Turning (prompt, response) text into token tensors the same way for every stage.

The prompt is tokenized on its own in the tokenizer's prompt format
(:mod:`rad.data.prompt_format`: the Safe RLHF template with the tokenizer's special
tokens, the chat template, or a custom template) and the response separately (no special
tokens, then EOS). Generation sees exactly the prompt tokens, so training on the same
split keeps SFT, score models, RL log-probs and DPO consistent with what the rollout
engines produce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from rad.data.prompt_format import tokenizer_prompt_format

IGNORE_INDEX = -100


@dataclass
class Encoded:
    prompt_ids: list[int]
    response_ids: list[int]

    @property
    def input_ids(self) -> list[int]:
        return self.prompt_ids + self.response_ids


def encode_prompt(tokenizer, prompt: str, max_prompt_tokens: int | None = None, template: bool = True) -> list[int]:
    """Ids of ``prompt`` in the tokenizer's prompt format (``template=False``: the text as it is, with special
    tokens), the last ``max_prompt_tokens`` kept (the format's closing cue, e.g. "ASSISTANT:", must survive)."""
    if template:
        ids = tokenizer_prompt_format(tokenizer).ids(tokenizer, [prompt])[0]
    else:
        ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    if max_prompt_tokens is not None and len(ids) > max_prompt_tokens:
        ids = ids[-max_prompt_tokens:]
    return ids


def encode_pair(tokenizer, prompt: str, response: str, max_length: int, template: bool = True,
                add_eos: bool = True) -> Encoded:
    """Tokens of one prompt/response pair, truncated to ``max_length`` (response cut first)."""
    prompt_ids = encode_prompt(tokenizer, prompt, template=template)
    text = tokenizer_prompt_format(tokenizer).response_text(response) if template else " " + response.strip()
    response_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if add_eos and tokenizer.eos_token_id is not None:
        response_ids = response_ids + [tokenizer.eos_token_id]
    budget = max_length - len(prompt_ids)
    if budget < 1:
        # Keep at least one response token so the pair still carries a training signal.
        prompt_ids = prompt_ids[-(max_length - 1):]
        budget = 1
    return Encoded(prompt_ids, response_ids[:budget])


def collate_lm(batch: Sequence[Encoded], pad_id: int, mask_prompt: bool = True) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (prompt and pad = -100).

    Training pads on the right so positions start at 0 for every row; generation
    pads on the left. Both give the same positions for real tokens.
    """
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    for row, enc in enumerate(batch):
        seq = enc.input_ids
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        start = len(enc.prompt_ids) if mask_prompt else 0
        labels[row, start: len(seq)] = torch.tensor(seq[start:])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded prompt batch for ``generate``."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = torch.tensor(list(p))
        mask[row, width - len(p):] = 1
    return {"input_ids": ids, "attention_mask": mask}


def token_mean_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy summed over non-ignored positions, and their count."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, (shift_labels != IGNORE_INDEX).sum()
