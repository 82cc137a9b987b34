"""What every request passes before an endpoint sees it: an id, a body-size bound, timing; and the key check.

``Gate`` is plain ASGI middleware (no buffering of responses): it gives the request an id (the
client's ``X-Request-ID`` when it is a short plain token, else a new one) and returns it in a
header, answers 413 to a body over the bound (by ``Content-Length`` at once, or once a chunked body
passes it; bodies are read here, before routing), and records the status and latency of every request.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from genprm.serving.metrics import ServerMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
ENDPOINTS = ("/get_reward", "/v1/verify", "/health", "/metrics")


def request_id_of(scope: Scope) -> str:
    """The id :class:`Gate` gave this request ("" outside one)."""
    return str(scope.get("state", {}).get("request_id", ""))


def authorized(header: str | None, api_key: str) -> bool:
    """Whether an ``Authorization`` header carries ``api_key``, compared in constant time.

    ``Bearer KEY`` is the form; ``Basic`` with KEY as the password is accepted too, because clients
    that take only a URL (OpenRLHF's ``--reward.remote_url``) send ``http://user:KEY@host/...`` that way.
    """
    scheme, _, value = (header or "").strip().partition(" ")
    given = value.strip()
    if scheme.lower() == "basic":
        try:
            given = base64.b64decode(given, validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    elif scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.encode("utf-8"), api_key.encode("utf-8"))


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body read already, then the client's later messages."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class Gate:
    """See the module docstring."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, metrics: ServerMetrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-request-id", "")
        rid = given if _CLIENT_ID.fullmatch(given) else uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid
        endpoint = scope.get("path", "") if scope.get("path") in ENDPOINTS else "other"
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                names = {k.lower() for k, _ in message.get("headers", [])}
                if b"x-request-id" not in names:
                    message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                await self._too_large(send_with_id, rid)
                return
            body = await self._read_body(receive)
            if body is None:
                await self._too_large(send_with_id, rid)
                return
            await self.app(scope, _replay(body, receive), send_with_id)
        finally:
            self.metrics.observe(endpoint, status, time.perf_counter() - started)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or ``None`` once it passes the bound (bodies are small: read before routing)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)  # the client left; the endpoint will see the disconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, send: Send, rid: str) -> None:
        body = json.dumps({"error": f"request body over {self.max_body_bytes} bytes (--max-body-bytes)",
                           "fields": [], "request_id": rid}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
