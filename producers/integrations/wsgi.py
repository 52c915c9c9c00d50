"""WSGI middleware: the same measurements as the ASGI one, for Flask, Django and others.

    track_flask(app)                                                # Flask
    application = TrackingMiddleware(get_wsgi_application())        # Django, any WSGI app
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from ept.ids import new_id
from ept.integrations.endpoints import templated_path
from ept.integrations.tracking import track_served_request, tracker_or_default
from ept.tracker import Tracker

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


ROUTE_KEY = "ept.route"
"""Frameworks put the matched route template here (``track_flask`` does it for Flask)."""


def route_of(environ: Environ) -> str:
    """The route template a framework recorded, else the path with id-like segments hidden."""
    return str(environ.get(ROUTE_KEY) or templated_path(environ.get("PATH_INFO", "/")))


def track_flask(app: Any, tracker: Tracker | None = None, **options: Any) -> None:
    """Instrument a Flask app: its routes (``/api/render/<id>``) become the endpoints."""
    from flask import request

    @app.before_request
    def remember_route() -> None:
        if request.url_rule is not None:
            request.environ[ROUTE_KEY] = request.url_rule.rule

    app.wsgi_app = TrackingMiddleware(app.wsgi_app, tracker, **options)


class TrackingMiddleware:
    """Measures every request of ``app``; exceptions are tracked and re-raised unchanged."""

    def __init__(self, app: WSGIApp, tracker: Tracker | None = None,
                 request_id_header: str = "X-Request-ID",
                 exclude_paths: Iterable[str] = ("/health", "/healthz", "/metrics"),
                 endpoint_of: Callable[[Environ], str] | None = None) -> None:
        self.app = app
        self._tracker = tracker
        self._header = "HTTP_" + request_id_header.upper().replace("-", "_")
        self._exclude = set(exclude_paths)
        self._endpoint_of = endpoint_of or route_of

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") in self._exclude:
            return self.app(environ, start_response)
        started = time.perf_counter()
        request_id = environ.get(self._header) or new_id()
        status: list[int] = []

        def capture(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            status.append(int(status_line.split(" ", 1)[0]))
            return start_response(status_line, headers, exc_info)

        try:
            result = self.app(environ, capture)
        except Exception as error:
            self._record(environ, request_id, started, 500, f"{type(error).__name__}: {error}")
            raise
        self._record(environ, request_id, started, status[0] if status else 500, None)
        return result

    def _record(self, environ: Environ, request_id: str, started: float, status: int,
                error: str | None) -> None:
        duration = (time.perf_counter() - started) * 1000.0
        track_served_request(tracker_or_default(self._tracker), self._endpoint_of(environ),
                             environ.get("REQUEST_METHOD", "GET"), status, duration,
                             request_id, error)
