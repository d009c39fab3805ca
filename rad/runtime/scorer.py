"""Batched scoring service: (prompt, response) text in, rewards and costs out.

The scorer only ever takes text. Each score model re-tokenizes with its own
tokenizer and template (:func:`rad.models.score_model.encode_many_for_scoring`), so
the policy's tokenizer never has to match the reward's or the cost's, and the
two score models need not share one either.

Input rules, so that a bad input is never a silent NaN:

* ``prompts`` and ``responses`` must be lists of strings of equal length;
* an empty or whitespace-only response raises :class:`DataError` naming its index;
* a pair longer than ``max_length`` tokens (for that model's tokenizer) is
  truncated, cutting the prompt from the left first and keeping the response's
  end, where the score is read; with ``truncate=False`` it raises instead;
* a non-finite score raises :class:`RadError` naming the indices.

Work is batched by sorted length (less padding). ``Scorer`` runs in-process;
:func:`remote_scorer` returns the same class as a Ray actor.

Each model may be in any format :func:`rad.models.score_formats.open_score_model` reads (rad's,
``AutoModelForSequenceClassification``, safe-rlhf's) or an http(s):// endpoint
(:class:`rad.runtime.http_scorer.HTTPScorer`), as its :class:`rad.settings.ScorerConfig` says; the scores
come out in rad's conventions (the config's ``sign`` applied): rewards higher-is-better, costs > 0 unsafe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from rad.errors import ConfigError, DataError, RadError
from rad.models.loading import load_tokenizer
from rad.models.score_formats import open_score_model
from rad.models.score_model import ScoreModel, encode_many_for_scoring
from rad.runtime.http_scorer import HTTPScorer
from rad.runtime.profiling import RoleDiagnostics
from rad.settings import ScorerConfig, is_url


#: What an empty response is scored as when ``empty_response="placeholder"``.
EMPTY_RESPONSE = "(no response)"


class Scorer(RoleDiagnostics):
    """Reward and/or cost model behind one ``score(prompts, responses)`` call.

    ``max_length`` is capped by each backbone's ``max_position_embeddings``.
    ``normalize=True`` applies the normalisation stored with each model
    (``score_config.json``; raw scores when its mode is ``none``).
    ``num_threads`` > 0 sets torch's intra-op threads (useful inside a Ray actor).
    ``device="auto"`` is the accelerator Ray assigned the actor, else the CPU
    (:func:`rad.runtime.distributed.role_device`); ``dtype="auto"`` is bf16 on such a GPU.
    ``reward_scorer`` / ``cost_scorer`` say how to read each model (format, sign, template, HTTP settings).
    """

    def __init__(self, reward_dir: str | Path | None = None, cost_dir: str | Path | None = None,
                 batch_size: int = 32, max_length: int = 512, device: str = "auto", dtype: str = "auto",
                 truncate: bool = True, normalize: bool = True, num_threads: int = 0,
                 empty_response: str = "error", reward_scorer: ScorerConfig | None = None,
                 cost_scorer: ScorerConfig | None = None):
        if reward_dir is None and cost_dir is None:
            raise ConfigError("scorer: give reward_dir, cost_dir or both")
        if batch_size < 1 or max_length < 2:
            raise ConfigError(f"scorer: batch_size must be >= 1 and max_length >= 2, got {batch_size}, {max_length}")
        if num_threads > 0:
            torch.set_num_threads(num_threads)
        if empty_response not in ("error", "placeholder"):
            raise ConfigError(f"scorer: empty_response must be 'error' or 'placeholder', got {empty_response!r}")
        # RL policies do emit empty answers (EOS first); they must be scored, not crash the run.
        self.empty_response = empty_response
        self.batch_size = batch_size
        self.truncate = truncate
        self.normalize = normalize
        from rad.runtime.distributed import resolve_dtype, role_device

        self.device = role_device(device)
        self.models: dict[str, tuple[ScoreModel, Any, int]] = {}
        self.remote: dict[str, HTTPScorer] = {}
        for name, path, kind, source in (("rewards", reward_dir, "reward", reward_scorer),
                                         ("costs", cost_dir, "cost", cost_scorer)):
            if path is None:
                continue
            source = source or ScorerConfig()
            key = f"{kind}_model"
            if source.format == "http" or (source.format == "auto" and is_url(str(path))):
                self.remote[name] = HTTPScorer(str(path), kind, source, key=f"{kind}_scorer")
                continue
            model = open_score_model(path, kind, source, dtype=resolve_dtype(dtype, self.device),
                                     key=key).to(self.device).eval()
            tokenizer = load_tokenizer(path, padding_side="right")
            limit = getattr(model.config, "max_position_embeddings", None) or max_length
            self.models[name] = (model, tokenizer, min(max_length, int(limit)))

    def info(self) -> dict[str, Any]:
        models = {name: {"kind": m.kind, "max_length": limit, "vocab_size": len(tok),
                         "normalize": m.score_config.normalize if self.normalize else "none",
                         "dtype": str(m.head.weight.dtype).removeprefix("torch.")}
                  for name, (m, tok, limit) in self.models.items()}
        remote = {name: {"kind": r.kind, "url": r.url, **r.stats()} for name, r in self.remote.items()}
        return {"device": str(self.device), **models, **remote}

    def diagnostics_device(self):
        return self.device

    def _check(self, prompts: Sequence[str], responses: Sequence[str]) -> None:
        if len(prompts) != len(responses):
            raise DataError(f"scorer: {len(prompts)} prompts but {len(responses)} responses")
        for i, (p, r) in enumerate(zip(prompts, responses)):
            if not isinstance(p, str) or not isinstance(r, str):
                raise DataError(f"scorer: item {i}: prompt and response must be strings, "
                                f"got {type(p).__name__} and {type(r).__name__}")
            if not r.strip() and self.empty_response == "error":
                raise DataError(f"scorer: item {i}: the response is empty; a score needs response text")

    def _encode(self, tokenizer, template: str, limit: int, prompts: Sequence[str],
                responses: Sequence[str]) -> list[list[int]]:
        try:
            return encode_many_for_scoring(tokenizer, prompts, responses, limit, template, truncate=self.truncate)
        except DataError as exc:
            raise DataError(f"scorer: {exc}") from None

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> dict[str, np.ndarray]:
        """``{"rewards": float32 [N], "costs": float32 [N]}`` (only the models this scorer holds)."""
        prompts, responses = list(prompts), list(responses)
        self._check(prompts, responses)
        responses = [r if r.strip() else EMPTY_RESPONSE for r in responses]
        result: dict[str, np.ndarray] = {}
        for name, remote in self.remote.items():
            result[name] = remote.score(prompts, responses)
        for name, (model, tokenizer, limit) in self.models.items():
            if not prompts:
                result[name] = np.zeros(0, dtype=np.float32)
                continue
            seqs = self._encode(tokenizer, model.score_config.template, limit, prompts, responses)
            scores = model.score_sequences(seqs, tokenizer.pad_token_id, self.batch_size)
            if self.normalize:
                scores = model.normalize(scores)
            bad = (~torch.isfinite(scores)).nonzero().flatten().tolist()
            if bad:
                raise RadError(f"scorer: the {model.kind} model gave non-finite scores for items {bad[:10]}")
            result[name] = scores.numpy().astype(np.float32)
        return {name: result[name] for name in ("rewards", "costs") if name in result}


def remote_scorer(num_cpus: float = 1, **ray_options: Any):
    """:class:`Scorer` as a Ray actor class: ``remote_scorer().remote(reward_dir, cost_dir, ...)``.

    Built on call, so importing this module needs neither Ray nor a running cluster.
    ``actor.score.remote(prompts, responses)`` returns the same dict as in-process.
    """
    import ray

    return ray.remote(num_cpus=num_cpus, **ray_options)(Scorer)
