"""A reward or cost model behind an HTTP endpoint (``reward_model`` / ``cost_model`` = an http(s):// URL).

The schema (README "Bring your own scorer"): rad POSTs JSON

    {"kind": "reward" | "cost", "items": [{"prompt": "...", "response": "..."}, ...]}

with at most ``batch_size`` items, and expects ``{"scores": [float, ...]}``: one finite number per item, in
order, in the server's own convention (rad multiplies by the scorer's ``sign``). The prompt is the raw user
prompt, without any template: the server formats it as its model expects.

Failures: connection errors, timeouts, HTTP 429/5xx and malformed replies (not JSON, no ``scores`` list, the
wrong count, a non-number or non-finite score) are retried with exponential backoff
(:mod:`rad.http_client`). A batch that still fails after the retries (or the deadline) fails the whole call
with :class:`rad.errors.RadError` naming the endpoint, the items and the last error: an RL step or an
evaluation stops rather than go on with missing scores. HTTP 4xx other than 429 fails at once. Every attempt
and failure is counted (:meth:`HTTPScorer.stats`).
"""

from __future__ import annotations

import json
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np

from rad.errors import ConfigError, RadError
from rad.http_client import Deadline, Rejected, Retryable, post_json, with_retries
from rad.settings import ScorerConfig, is_url


class HTTPScorer:
    """Scores (prompt, response) pairs with the endpoint at ``url`` as a ``kind`` (reward|cost) model."""

    def __init__(self, url: str, kind: str, cfg: ScorerConfig | None = None, key: str = "scorer"):
        cfg = cfg or ScorerConfig()
        if not is_url(url):
            raise ConfigError(f"{key}: {url!r} is not an http(s):// URL")
        self.url, self.kind, self.cfg, self.key = url, kind, cfg, key
        self.api_key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        if cfg.api_key_env and not self.api_key:
            raise ConfigError(f"{key}: api_key_env names ${cfg.api_key_env}, which is not set")
        self._lock = threading.Lock()
        self.counts = {"requests": 0, "failed_requests": 0, "failed_batches": 0, "items": 0}

    def stats(self) -> dict[str, int]:
        """Requests sent, requests that failed (each retry counts), batches that failed after every retry, items
        scored."""
        with self._lock:
            return dict(self.counts)

    def _count(self, **delta: int) -> None:
        with self._lock:
            for name, value in delta.items():
                self.counts[name] += value

    def _send(self, items: list[dict[str, str]], timeout: float) -> np.ndarray:
        self._count(requests=1)
        try:
            payload = post_json(self.url, {"kind": self.kind, "items": items}, timeout, self.api_key)
        except Rejected as exc:
            self._count(failed_requests=1)
            raise RadError(f"{self.key}: {self.url} answered HTTP {exc.code} (check the URL and the key in "
                           f"api_key_env): {exc.detail}") from None
        except Retryable:
            self._count(failed_requests=1)
            raise
        try:
            scores = json.loads(payload)["scores"]
            if not isinstance(scores, list) or not all(isinstance(s, (int, float)) and not isinstance(s, bool)
                                                       for s in scores):
                raise TypeError
            values = [float(s) for s in scores]
        except (ValueError, KeyError, TypeError):
            self._count(failed_requests=1)
            raise Retryable(f"malformed reply (expected {{\"scores\": [numbers]}}): {payload[:200]!r}") from None
        if len(values) != len(items):
            self._count(failed_requests=1)
            raise Retryable(f"malformed reply: {len(scores)} scores for {len(items)} items")
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            self._count(failed_requests=1)
            raise Retryable(f"malformed reply: non-finite scores at batch positions {bad[:10]}")
        return np.asarray(values, dtype=np.float32)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """float32 [N] in input order, times the scorer's sign; raises :class:`RadError` if any batch fails."""
        cfg = self.cfg
        items = [{"prompt": p, "response": r} for p, r in zip(prompts, responses)]
        starts = list(range(0, len(items), cfg.batch_size))
        deadline = Deadline(cfg.deadline or None, f"{self.key}.deadline")

        def run(start: int):
            batch = items[start: start + cfg.batch_size]
            return with_retries(lambda timeout: self._send(batch, timeout), cfg.timeout, cfg.retries, cfg.backoff,
                                deadline)

        with ThreadPoolExecutor(max_workers=cfg.concurrency) as pool:
            attempts = list(pool.map(run, starts))
        failed = [(s, a) for s, a in zip(starts, attempts) if not a.ok]
        if failed:
            self._count(failed_batches=len(failed))
            start, attempt = failed[0]
            end = min(start + cfg.batch_size, len(items)) - 1
            raise RadError(f"{self.key}: the {self.kind} endpoint {self.url} failed {len(failed)} of {len(starts)} "
                           f"batches; items {start}..{end} after {attempt.attempts} attempts: {attempt.error}. "
                           "No scores are used for a failed batch: the call stops here")
        self._count(items=len(items))
        out = np.concatenate([a.value for a in attempts]) if attempts else np.zeros(0, dtype=np.float32)
        return (out * cfg.sign).astype(np.float32)
