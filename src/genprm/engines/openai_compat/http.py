"""The HTTP layer: one client, a bound on requests in flight, retries with backoff and jitter.

Every exchange with the server goes through :meth:`HttpClient.call`, so that retrying, counting and
the concurrency bound are decided in one place. Connection errors, timeouts, HTTP 429 and 5xx are
retried (each retry is logged); other 4xx answers raise :class:`EngineError` at once, with the
status and the start of the body.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from genprm.engines.base import FinishReason
from genprm.engines.openai_compat.wire import Json
from genprm.errors import EngineError

# The package's logger, not this module's: retry warnings keep the name they are filtered by.
log = logging.getLogger(__package__)

API_KEY_ENV = "GENPRM_OPENAI_API_KEY"
"""The only environment variable read: the bearer token sent to the server."""

BODY_QUOTE = 300
"""Characters of a server's answer quoted in an error message."""
BODY_KEEP = 4000
"""Characters of a server's answer kept on the :class:`EngineError` (``body``)."""
_MAX_BACKOFF_S = 30.0

T = TypeVar("T")


class _Failure(Exception):
    """One failed attempt: the error to raise and whether another attempt may succeed."""

    def __init__(self, error: EngineError, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retryable = retryable
        self.retry_after = retry_after


class _EmptyStream(EngineError):
    """A stream that ended before its first event: the server failed before generating."""


@dataclass
class Streamed:
    """A streamed completion, cut here at the first stop string."""

    text: str
    finish: FinishReason
    stop: str | None
    chunks: int
    usage: dict[str, Any]


class HttpClient:
    """Requests to one server, at most ``concurrency`` in flight, retried where a retry may succeed.

    ``count(name)`` is called once per HTTP request (``http_requests``) and per retry (``retries``),
    so that the owner can keep them in its statistics.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        timeout_s: float,
        max_retries: int,
        backoff_s: float,
        concurrency: int,
        count: Callable[[str], None],
    ) -> None:
        self.base_url = base_url
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self._count = count
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2),
        )
        self.in_flight_limit = concurrency
        self._slots = threading.BoundedSemaphore(concurrency)

    def limit_in_flight(self, limit: int) -> None:
        """Lower the bound on requests in flight, for a server that serves one at a time (called before use)."""
        self.in_flight_limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    def close(self) -> None:
        self._client.close()

    def _failure(self, response: httpx.Response, what: str) -> _Failure:
        status = response.status_code
        try:
            body = response.text
        except (httpx.HTTPError, UnicodeDecodeError):
            body = ""
        quoted = body[:BODY_QUOTE]
        error = EngineError(f"{what}: {self.base_url} answered HTTP {status}: {quoted!r}", status=status,
                            body=body[:BODY_KEEP])
        retry_after = None
        header = response.headers.get("retry-after")
        if header is not None:
            try:
                retry_after = float(header)
            except ValueError:
                retry_after = None
        return _Failure(error, retryable=status == 429 or status >= 500, retry_after=retry_after)

    def call(self, what: str, attempt: Callable[[], T], *, retry: bool = True) -> T:
        """Run one HTTP exchange holding a concurrency slot; retry what may succeed next time."""
        attempts = self.max_retries + 1 if retry else 1
        for number in range(attempts):
            try:
                with self._slots:
                    self._count("http_requests")
                    return attempt()
            except _Failure as failed:
                error, retryable, retry_after = failed.error, failed.retryable, failed.retry_after
            except httpx.TransportError as exc:  # refused, reset, timed out, broken protocol
                error = EngineError(f"{what}: no answer from {self.base_url}: {type(exc).__name__}: {exc}")
                retryable, retry_after = True, None
            if not retryable or number == attempts - 1:
                if number:
                    error.args = (f"{error.args[0]} (after {number + 1} attempts)",)
                raise error
            delay = min(_MAX_BACKOFF_S, self.backoff_s * 2**number) * random.uniform(0.5, 1.5)
            if retry_after is not None:
                delay = max(delay, min(retry_after, _MAX_BACKOFF_S))
            self._count("retries")
            log.warning("%s failed (%s); retry %d of %d in %.2f s", what, error, number + 1, self.max_retries, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def json(self, method: str, path: str, body: Json | None = None, *, what: str, retry: bool = True) -> Any:
        """The decoded JSON answer to one request."""

        def attempt() -> Any:
            response = self._client.request(method, path, json=body)
            if response.status_code >= 400:
                raise self._failure(response, what)
            try:
                return response.json()
            except ValueError as exc:
                raise _Failure(
                    EngineError(f"{what}: the answer is not JSON: {response.text[:BODY_QUOTE]!r}",
                                status=response.status_code, body=response.text[:BODY_KEEP]),
                    retryable=False,
                ) from exc

        return self.call(what, attempt, retry=retry)

    def complete(self, body: Json, *, what: str, retry: bool = True) -> tuple[Json, Json]:
        """The first choice and the usage block of a ``/v1/completions`` answer."""
        data = self.json("POST", "/v1/completions", body, what=what, retry=retry)
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise EngineError(f"{what}: the server answered without a choice: {str(data)[:BODY_QUOTE]!r}")
        usage = data.get("usage")
        return choices[0], usage if isinstance(usage, dict) else {}

    def stream(self, body: Json, stops: Sequence[str], *, what: str, retry: bool = True) -> Streamed:
        """Stream a completion and cut it at the first of ``stops``, as the in-process engine does.

        llama_cpp.server answers a request it cannot serve (a prompt longer than its context) with
        an empty stream; the same request without streaming then gets its error, which is raised
        as the server words it (a 4xx is not retried).
        """
        try:
            return self.call(what, lambda: self._stream_once(body, stops, what), retry=retry)
        except _EmptyStream:
            self.complete({**body, "max_tokens": 1}, what=what, retry=retry)  # raises the server's error
            return self.call(what, lambda: self._stream_once(body, stops, what), retry=retry)

    def _stream_once(self, body: Json, stops: Sequence[str], what: str) -> Streamed:
        longest = max((len(s) for s in stops), default=0)
        # One connection per stream: a stream cut at a stop string leaves its connection unusable.
        payload, headers = {**body, "stream": True}, {"Connection": "close"}
        with self._client.stream("POST", "/v1/completions", json=payload, headers=headers) as response:
            if response.status_code >= 400:
                response.read()
                raise self._failure(response, what)
            text, chunks, usage, events = "", 0, {}, 0
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                events += 1
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    event = json.loads(data)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                if "error" in event:
                    raise _Failure(EngineError(f"{what}: error in the stream: {data[:BODY_QUOTE]!r}"), True)
                if isinstance(event.get("usage"), dict):
                    usage = event["usage"]
                for choice in event.get("choices") or []:
                    piece = choice.get("text") or ""
                    reason = choice.get("finish_reason")
                    if piece or reason is None:
                        chunks += 1
                    if piece:
                        scan_from = max(0, len(text) - longest)
                        text += piece
                        hits = [(at, s) for s in stops if (at := text.find(s, scan_from)) >= 0]
                        if hits:
                            at, stop = min(hits)
                            return Streamed(text[: at + len(stop)], "stop", stop, chunks, usage)
                    if reason == "stop":
                        return Streamed(text, "eos", None, chunks, usage)
                    if reason == "length":
                        return Streamed(text, "length", None, chunks, usage)
                    if reason is not None:
                        error = EngineError(f"{what}: the server ended with finish_reason={reason!r}")
                        raise _Failure(error, retryable=False)
        if events == 0:
            raise _Failure(_EmptyStream(f"{what}: the server sent an empty stream"), retryable=False)
        raise _Failure(
            EngineError(
                f"{what}: the stream ended without a finish reason (llama_cpp.server cuts a stream when another "
                "request arrives; start it with --interrupt_requests false if other clients use it)"
            ),
            retryable=True,
        )
