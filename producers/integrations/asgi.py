"""ASGI middleware: one ``api_request_completed`` per answered request, ``api_error`` for
5xx responses and unhandled exceptions (re-raised unchanged).

    app.add_middleware(TrackingMiddleware)          # Starlette / FastAPI
    app = TrackingMiddleware(app)                    # any ASGI app
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from ept.ids import new_id
from ept.integrations.endpoints import templated_path
from ept.integrations.tracking import track_served_request, tracker_or_default
from ept.tracker import Tracker

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def route_of(scope: Scope) -> str:
    """The matched route template (Starlette/FastAPI set ``scope["route"]``), else the
    path with id-like segments replaced."""
    route = scope.get("route")
    path = getattr(route, "path", None) or getattr(route, "path_format", None)
    return str(path) if path else templated_path(scope.get("path", "/"))


class TrackingMiddleware:
    """Measures every HTTP request of ``app``. Never changes the response."""

    def __init__(self, app: ASGIApp, tracker: Tracker | None = None,
                 request_id_header: str = "x-request-id",
                 exclude_paths: Iterable[str] = ("/health", "/healthz", "/metrics")) -> None:
        self.app = app
        self._tracker = tracker
        self._header = request_id_header.lower().encode()
        self._exclude = set(exclude_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self._exclude:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = next((value.decode(errors="replace") for name, value
                           in scope.get("headers", []) if name.lower() == self._header),
                          None) or new_id()
        status: list[int] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, capture)
        except Exception as error:
            self._record(scope, request_id, started, status[0] if status else 500,
                         f"{type(error).__name__}: {error}")
            raise
        self._record(scope, request_id, started, status[0] if status else 500, None)

    def _record(self, scope: Scope, request_id: str, started: float, status: int,
                error: str | None) -> None:
        duration = (time.perf_counter() - started) * 1000.0
        track_served_request(tracker_or_default(self._tracker), route_of(scope),
                             scope.get("method", "GET"), status, duration, request_id, error)
