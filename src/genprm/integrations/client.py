"""An HTTP client of ``genprm serve``'s ``/v1/verify``, sync and async, with bounded retries.

Retries cover what may pass: the server at capacity (503, honouring ``Retry-After``), past its
deadline (504), or not reachable yet; anything else (a 4xx naming a bad field, a 500) raises
:class:`RewardServerError` at once with the server's one-line message and request id.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

import httpx

from genprm.errors import GenPRMError

URL_ENV = "GENPRM_URL"
KEY_ENV = "GENPRM_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8000"
_RETRY_STATUS = (502, 503, 504)


class RewardServerError(GenPRMError):
    """The reward server refused or failed a request (after the retries that could help)."""

    def __init__(self, message: str, *, status: int | None = None, request_id: str = "") -> None:
        self.status = status
        self.request_id = request_id
        where = f" (status {status}, request {request_id})" if status is not None else ""
        super().__init__(message + where)


@dataclass(frozen=True)
class GenPRMClient:
    """Where the server is and how patiently to call it."""

    url: str = DEFAULT_URL
    api_key: str | None = None
    timeout_s: float = 180.0
    attempts: int = 5
    max_wait_s: float = 30.0
    """The longest pause between attempts (a server's ``Retry-After`` is capped at this)."""

    @classmethod
    def from_env(cls, url: str | None = None, api_key: str | None = None, **options: Any) -> GenPRMClient:
        """Arguments first, then ``GENPRM_URL`` and ``GENPRM_API_KEY``, then loopback port 8000."""
        return cls(url or os.environ.get(URL_ENV) or DEFAULT_URL, api_key or os.environ.get(KEY_ENV), **options)

    @property
    def endpoint(self) -> str:
        return self.url.rstrip("/") + "/v1/verify"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def verify(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST one solution (a :class:`~genprm.serving.schemas.VerifyRequest` body); the response body."""
        with httpx.Client(timeout=self.timeout_s, headers=self.headers) as http:
            for attempt in range(self.attempts):
                try:
                    answer = http.post(self.endpoint, json=payload)
                except httpx.TransportError as exc:
                    wait = self._pause(attempt, None, exc)
                else:
                    if answer.status_code not in _RETRY_STATUS:
                        return _body(answer)
                    wait = self._pause(attempt, answer, None)
                time.sleep(wait)
        raise AssertionError("unreachable")  # _pause raises on the last attempt

    async def averify(self, payload: dict[str, Any], http: httpx.AsyncClient | None = None) -> dict[str, Any]:
        """:meth:`verify` for an event loop; pass ``http`` to share connections between calls."""
        if http is None:
            async with self.session() as own:
                return await self.averify(payload, own)
        for attempt in range(self.attempts):
            try:
                answer = await http.post(self.endpoint, json=payload)
            except httpx.TransportError as exc:
                wait = self._pause(attempt, None, exc)
            else:
                if answer.status_code not in _RETRY_STATUS:
                    return _body(answer)
                wait = self._pause(attempt, answer, None)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    def session(self, max_connections: int = 64) -> httpx.AsyncClient:
        """An async HTTP session for many concurrent :meth:`averify` calls."""
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        return httpx.AsyncClient(timeout=self.timeout_s, headers=self.headers, limits=limits)

    def _pause(self, attempt: int, answer: httpx.Response | None, error: Exception | None) -> float:
        """Seconds to wait before the next attempt; raises once the attempts are spent."""
        if attempt + 1 >= self.attempts:
            if answer is not None:
                _body(answer)  # raises with the server's message
            raise RewardServerError(f"cannot reach the reward server at {self.url}: {error}") from error
        retry_after = answer.headers.get("retry-after", "") if answer is not None else ""
        wait = float(retry_after) if retry_after.replace(".", "", 1).isdigit() else 2.0 ** attempt
        return min(self.max_wait_s, wait)


def _body(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        body = {"error": answer.text[:200]}
    if answer.status_code != 200:
        raise RewardServerError(str(body.get("error", "error")), status=answer.status_code,
                                request_id=answer.headers.get("x-request-id", ""))
    if not isinstance(body, dict):
        raise RewardServerError("the server's answer is not a JSON object", status=answer.status_code)
    return body
