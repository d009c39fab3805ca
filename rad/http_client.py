"""JSON over HTTP with retries, backoff and a deadline: the one client of the remote judge and remote scorers.

:func:`post_json` sends one request. What a retry may fix raises :class:`Retryable`: connection errors
(refused, reset, closed mid-reply, a reply that is not HTTP), timeouts, HTTP 429 and 5xx (with the wait a
``Retry-After`` header asks for) and, from the caller's reply check, malformed replies. Other HTTP 4xx (bad
key, wrong URL) raise :class:`Rejected`: every further request would fail the same way.

:func:`with_retries` runs a request until it succeeds, its retries are spent, or a :class:`Deadline` passes
(exponential backoff from ``backoff`` seconds, at least as long as ``Retry-After`` asks); it returns an
:class:`Attempt` saying which, never raises for a retryable failure, and leaves what a failure means to the
caller (the judge counts an ``error`` verdict, a scorer fails the step).
"""

from __future__ import annotations

import email.utils
import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class Retryable(Exception):
    """A failure another attempt may not meet; ``retry_after`` is the wait the server asked for (seconds)."""

    def __init__(self, message: str, retry_after: float = 0.0):
        super().__init__(message)
        self.retry_after = retry_after


class Rejected(Exception):
    """The server refused the request (HTTP 4xx other than 429): ``code`` and the start of its reply."""

    def __init__(self, code: int, detail: str):
        super().__init__(f"HTTP {code}: {detail}")
        self.code = code
        self.detail = detail


def retry_after_seconds(value: str | None, now: float | None = None) -> float:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date); 0 when absent or unreadable."""
    if not value:
        return 0.0
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0.0
    return max(0.0, when - (time.time() if now is None else now))


def post_json(url: str, body: Any, timeout: float, api_key: str | None = None) -> bytes:
    """POST ``body`` as JSON to ``url``; the raw reply body. Raises :class:`Retryable` or :class:`Rejected`."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.read()
    except urllib.error.HTTPError as exc:
        try:
            detail = exc.read()[:300].decode(errors="replace")
        except (http.client.HTTPException, OSError):
            detail = ""
        if exc.code == 429 or exc.code >= 500:
            raise Retryable(f"HTTP {exc.code}: {detail}", retry_after_seconds(exc.headers.get("Retry-After"))
                            ) from None
        raise Rejected(exc.code, detail) from None
    except (http.client.HTTPException, OSError) as exc:
        # OSError: refused, reset, timed out (URLError, ConnectionError, TimeoutError); HTTPException: the
        # server closed mid-reply (IncompleteRead, RemoteDisconnected) or did not speak HTTP (BadStatusLine).
        raise Retryable(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None


class Deadline:
    """``seconds`` (None = no limit) for every request of one client together; the clock starts at the first
    :meth:`remaining` call. ``key`` names the config key in messages. Thread-safe."""

    def __init__(self, seconds: float | None, key: str):
        self.seconds = seconds
        self.key = key
        self._ends_at: float | None = None
        self._lock = threading.Lock()

    def remaining(self) -> float:
        if self.seconds is None:
            return float("inf")
        with self._lock:
            if self._ends_at is None:
                self._ends_at = time.monotonic() + self.seconds
            return self._ends_at - time.monotonic()


@dataclass
class Attempt(Generic[T]):
    """The outcome of :func:`with_retries`: ``value`` on success, else ``error`` (the last failure);
    ``attempts`` requests were sent; ``cut``: the deadline passed before a (re)try."""

    value: T | None = None
    error: str = ""
    attempts: int = 0
    cut: bool = False

    @property
    def ok(self) -> bool:
        return not self.error


def with_retries(send: Callable[[float], T], timeout: float, retries: int, backoff: float,
                 deadline: Deadline) -> Attempt[T]:
    """``send(timeout_s)`` until it returns, ``retries`` retries are spent or ``deadline`` passes (see the module
    docstring). :class:`Rejected` and any other exception propagate."""
    last, wait = "", 0.0
    for attempt in range(retries + 1):
        if attempt:
            wait = max(wait, backoff * 2 ** (attempt - 1))
            if wait >= deadline.remaining():
                return Attempt(error=f"{last}; {deadline.key} ({deadline.seconds:g} s) passed before retry "
                                     f"{attempt}", attempts=attempt, cut=True)
            time.sleep(wait)
        remaining = deadline.remaining()
        if remaining <= 0:
            return Attempt(error=(f"{last}; " if last else "") + f"not sent: {deadline.key} "
                                 f"({deadline.seconds:g} s) passed", attempts=attempt, cut=True)
        try:
            return Attempt(value=send(min(timeout, remaining)), attempts=attempt + 1)
        except Retryable as exc:
            last, wait = str(exc), exc.retry_after
    return Attempt(error=last, attempts=retries + 1)
