"""ASGI middleware of the portal API: the body limit, access log lines and request metrics."""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker import metrics
from worker.entrypoints.api.problems import BodyTooLarge, problem

log = logging.getLogger("timebok.api.access")
UNMATCHED = "unmatched"  # the route label of a path no route answers (never the path itself)


class BodyLimit:
    """413 for a body above `limit` bytes: by Content-Length at once, else while it streams."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse early when the length is declared; count the chunks when it is not."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            detail = f"the request body is larger than {self.limit} bytes"
            await problem(Request(scope), 413, detail, slug="too-large")(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLarge(self.limit)  # answered 413 by the problem handlers
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class AccessLog:
    """One log line and one metric sample per request: method, route template, status, ms.

    Never the path or the query string (they may carry ids and dates of one patient), never
    a header; `Cache-Control: no-store` on every /v1 answer (they are one citizen's data).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time the request and record how it was answered."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500
        private = str(scope.get("path", "")).startswith("/v1/")

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if private:
                    message.setdefault("headers", [])
                    message["headers"] = [*message["headers"], (b"cache-control", b"no-store")]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            _record(scope, status, time.perf_counter() - began)


def _record(scope: Scope, status: int, seconds: float) -> None:
    route = _template(scope)
    method = str(scope.get("method", "-"))
    metrics.api_request(method, route, status, seconds)
    extra: dict[str, Any] = {
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": round(seconds * 1000, 1),
    }
    log.info("%s %s %s", method, route, status, extra=extra)


def _template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else UNMATCHED
