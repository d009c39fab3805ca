"""The rollout-engine interface shared by the HF ``generate`` and vLLM engines.

An engine turns prompts into :class:`Rollout` records (token ids are the source of
truth; text is decoded from them) and accepts new weights from the learner after
every update. Both engines see exactly the same prompt token ids: prompts go
through :func:`rad.data.encode.encode_prompt` (template + the tokenizer's special
tokens), the same function SFT, scoring and the learner use.

Conventions every engine follows (so the learner can treat rollouts alike):

* ``generate`` returns ``len(prompts) * n`` rollouts, prompt-major: all samples of
  prompt 0, then prompt 1, ...
* A response that ended on EOS keeps the EOS as its last token id (the policy chose
  to stop; its log-prob belongs in the policy gradient, as in
  :func:`rad.data.encode.encode_pair`), ``finish_reason == "stop"``. A response cut
  by ``max_new_tokens`` has ``finish_reason == "length"``. Nothing after the first
  EOS is kept, so padding never leaks into a response, even when pad == eos.
* ``logprobs`` are the sampler's log-probabilities of the chosen tokens under the
  distribution it actually sampled from: logits / temperature, then top-k / top-p
  (masked tokens get probability 0). With the RL defaults (temperature 1, top-p 1,
  top-k off) this is the policy's own log-prob. Greedy decoding reports the plain
  log-softmax of the logits.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Sequence, Union

import numpy as np
import torch

from rad.config import field
from rad.data.encode import encode_prompt
from rad.errors import ConfigError

# What ``update_weights`` accepts: a state dict, or (name, tensor) pairs in HF naming.
Weights = Union[Mapping[str, torch.Tensor], Iterable[tuple[str, torch.Tensor]]]


@dataclass
class SamplingConfig:
    """How responses are sampled; identical meaning in every engine."""

    temperature: float = field(1.0, min=0, help="softmax temperature; 0 = greedy decoding")
    top_p: float = field(1.0, gt=0, max=1, help="nucleus sampling mass (1 = off)")
    top_k: int = field(0, min=0, help="keep the k most likely tokens (0 = off)")
    max_new_tokens: int = field(64, min=1, help="longest response in tokens")
    seed: int = field(0, help="sampling seed; the same seed and inputs give the same samples")
    stop_on_eos: bool = field(True, help="end a response at the first EOS token")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Rollout:
    """One sampled response and everything the learner needs about it."""

    prompt: str
    prompt_token_ids: list[int]
    response_token_ids: list[int]
    response_text: str
    logprobs: list[float] | None  # one per response token, or None if the engine gives none
    finish_reason: str  # "stop" (ended on EOS) or "length" (hit max_new_tokens)
    prompt_index: int
    sample_index: int


class RolloutEngine(abc.ABC):
    """A policy copy that generates rollouts and receives weight updates."""

    kind: str = ""

    @abc.abstractmethod
    def generate(self, prompts: Sequence[str], n: int = 1, sampling: SamplingConfig | None = None) -> list[Rollout]:
        """``n`` samples for each prompt, prompt-major (see module docstring)."""

    @abc.abstractmethod
    def update_weights(self, weights: Weights) -> float:
        """Load new weights (HF parameter names); return the seconds it took."""

    @abc.abstractmethod
    def get_weights(self) -> dict[str, torch.Tensor]:
        """The engine's parameters as far as the backend keeps them readable (copies, CPU)."""

    @abc.abstractmethod
    def token_logprobs(self, sequences: Sequence[Sequence[int]]) -> list[list[float]]:
        """``log p(x_t | x_<t)`` for t = 1..len-1 of each token sequence under the current weights.

        A behavioural fingerprint of the weights: comparing it with the learner's
        log-probs of the same sequences checks that a weight update arrived, on
        backends whose kernels repack weights so they cannot be read back.
        """

    # -- the receiving side of the weight transports (rad.runtime.rollout.weight_sync) -----------

    @abc.abstractmethod
    def num_workers(self) -> int:
        """Processes that hold a copy of the weights (members of a weight-broadcast group)."""

    @abc.abstractmethod
    def join_weight_group(self, address: str, port: int, rank_offset: int, world_size: int, timeout_s: float) -> None:
        """Join learner rank 0's weight process group as ranks ``rank_offset`` .. + num_workers - 1."""

    @abc.abstractmethod
    def receive_broadcast(self, layout) -> float:
        """Receive and load one round of broadcast buckets (a transport ``Layout``); seconds taken."""

    @abc.abstractmethod
    def load_bucket(self, specs, flat) -> float:
        """Take one object-store bucket (its specs and its bytes as a numpy array)."""

    @abc.abstractmethod
    def finish_weights(self) -> float:
        """End an object-store round: every parameter must have arrived; seconds spent on the round."""

    @abc.abstractmethod
    def load_ipc(self, handles: bytes, names: list[str]) -> float:
        """Load tensors shared by a learner on the same GPU through CUDA IPC handles."""

    def close(self) -> None:
        """Release the engine's resources (model, KV cache, worker processes)."""


# ---------------------------------------------------------------------------
# Helpers shared by the engines


def encode_prompts(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    """Prompt token ids exactly as every other stage builds them."""
    if isinstance(prompts, str):
        raise ConfigError("generate: expected a list of prompts, got a single string")
    return [encode_prompt(tokenizer, p) for p in prompts]


def check_n(n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"generate: n (samples per prompt) must be a positive integer, got {n!r}")


def cut_at_eos(token_ids: Sequence[int], eos_id: int | None, stop_on_eos: bool) -> tuple[list[int], str]:
    """Response ids up to and including the first EOS, and the finish reason."""
    ids = list(token_ids)
    if stop_on_eos and eos_id is not None and eos_id in ids:
        return ids[: ids.index(eos_id) + 1], "stop"
    return ids, "length"


def derived_seed(*parts: int) -> int:
    """A 31-bit seed mixed from integers; nearby inputs give unrelated seeds.

    ``seed + index`` would make micro-batch 1 of seed s reuse the random stream of
    micro-batch 0 of seed s + 1; hashing the tuple avoids that correlation.
    """
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


def named_tensors(weights: Weights) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs from a state dict or an iterable of pairs."""
    items = weights.items() if isinstance(weights, Mapping) else weights
    for name, tensor in items:
        if not isinstance(tensor, torch.Tensor):
            raise ConfigError(f"update_weights: {name!r} is a {type(tensor).__name__}, expected a torch.Tensor")
        yield name, tensor


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds``."""

    def __enter__(self) -> "Stopwatch":
        self._start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._start
