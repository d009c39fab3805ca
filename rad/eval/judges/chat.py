"""An OpenAI-compatible ``/chat/completions`` endpoint as a judge asks it: one chat, one answer text.

Requests, retries, backoff and the deadline are :mod:`rad.http_client`'s: connection errors, timeouts, HTTP
429/5xx and malformed replies are retried with exponential backoff (at least as long as ``Retry-After``
asks) and, after the last retry, come back as a failed :class:`rad.http_client.Attempt` (the judge counts
it as ``error``); other HTTP 4xx (bad key, wrong URL or model) stop the run with the server's message,
since every further request would fail the same way. ``deadline`` bounds every request of one endpoint
together, from its first request.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

from rad.errors import RadError
from rad.http_client import Attempt, Deadline, Rejected, Retryable, post_json, with_retries

T = TypeVar("T")


class ChatEndpoint:
    """Sends chats to ``url`` (a base …/v1 URL or the full …/chat/completions URL) at temperature 0."""

    def __init__(self, url: str, model: str, api_key: str | None = None, timeout: float = 60.0, retries: int = 3,
                 backoff: float = 1.0, max_tokens: int = 16, concurrency: int = 4, deadline: float | None = None):
        base = url.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_tokens = max_tokens
        self.concurrency = concurrency
        self.deadline = deadline  # seconds for every request of this endpoint together, from its first request
        self._deadline = Deadline(deadline, "judge.deadline")

    @classmethod
    def from_config(cls, cfg, max_tokens: int) -> "ChatEndpoint":
        """From a :class:`rad.eval.config.JudgeConfig`; the key is read from ``cfg.api_key_env`` now."""
        return cls(cfg.url, cfg.model, os.environ.get(cfg.api_key_env) or None, cfg.timeout, cfg.retries,
                   cfg.backoff, max_tokens, cfg.concurrency, cfg.deadline)

    def _post(self, messages: list[dict[str, str]], timeout: float) -> str:
        body = {"model": self.model, "temperature": 0, "max_tokens": self.max_tokens, "messages": messages}
        try:
            payload = post_json(self.url, body, timeout, self.api_key)
        except Rejected as exc:
            raise RadError(f"judge: {self.url} answered HTTP {exc.code} (check judge.url, judge.model and the "
                           f"key in judge.api_key_env): {exc.detail}") from None
        try:
            content = json.loads(payload)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise Retryable(f"malformed reply: {payload[:200]!r}") from None
        if not isinstance(content, str):
            raise Retryable(f"malformed reply: content is {type(content).__name__}")
        return content

    def ask(self, system: str, user: str) -> Attempt[str]:
        """The answer to one chat (a system and a user message), or the failure after every retry."""
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        return with_retries(lambda timeout: self._post(messages, timeout), self.timeout, self.retries,
                            self.backoff, self._deadline)

    def map(self, fn: Callable[..., T], *items: Iterable) -> list[T]:
        """``fn`` over ``items`` with ``concurrency`` requests in flight; results in input order."""
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(fn, *items))
