"""Abuse limits: request body size (before any parsing) and rate limits per client and conversation.

A body over ``max_body_bytes`` is answered ``413`` whether its size was declared (``Content-Length``,
refused before the app runs) or not (``Transfer-Encoding: chunked``, refused when the count passes the
limit while the app reads it). The second case raises ``BodyTooLarge``, an ``HTTPException``, so the
framework does not turn it into "400 error parsing the body"; and whatever the app answers after its
body was cut off is replaced by the 413.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import OrderedDict

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, _too_large(max_bytes))


def _too_large(max_bytes: int) -> str:
    return f"request body is larger than {max_bytes} bytes"


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        seen = 0
        started = False
        over = False  # the body passed the limit: the answer is ours, a 413

        async def limited_receive() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    over = True
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if over:  # whatever the app made of a body it could not read in full
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._reject(send)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps({"detail": _too_large(self.max_bytes)}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class RateLimiter:
    """Token buckets per key (client IP, conversation id): ``rate`` per second with bursts up to
    ``burst``. Memory is bounded: the least recently seen keys are forgotten first."""

    def __init__(self, rate: float, burst: float, *, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def allow(self, key: str, now: float | None = None) -> float:
        """0 if allowed (and counted), else the seconds to wait before the next try."""
        if not self.enabled:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


def too_many_requests(what: str, wait_s: float) -> JSONResponse:
    return JSONResponse({"detail": f"too many messages from this {what}; retry in {math.ceil(wait_s)} s"},
                        status_code=429, headers={"Retry-After": str(math.ceil(wait_s))})


class ClientRateLimit:
    """Per-client-IP limit on customer-facing paths (web webhook and widget), before parsing.

    The client address is the socket peer; behind a proxy run uvicorn with
    ``--forwarded-allow-ips`` so that it is the customer's, not the proxy's."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter, path_pattern: str) -> None:
        self.app = app
        self.limiter = limiter
        self.pattern = re.compile(path_pattern)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.limiter.enabled and self.pattern.match(scope["path"]):
            client = scope.get("client") or ("unknown", 0)
            wait = self.limiter.allow(str(client[0]))
            if wait > 0:
                if scope["type"] == "http":
                    await too_many_requests("address", wait)(scope, receive, send)
                else:
                    await send({"type": "websocket.close", "code": 1008, "reason": "rate limited"})
                return
        await self.app(scope, receive, send)
