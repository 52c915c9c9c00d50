"""Integrations end to end: real apps and real HTTP calls, events read back from the broker."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
from flask import Flask
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from ept import Tracker
from ept.core.settings import Settings
from ept.integrations import asgi, wsgi
from ept.integrations.http_clients import httpx_hooks, tracking_adapter
from ept.schemas import Decoder
from ept.schemas.registry import EVENT_NAMES
from tests.helpers import read_topics


def events_on_broker(settings: Settings, expected: int) -> list[tuple[str, dict[str, Any]]]:
    messages = read_topics(settings.kafka_bootstrap,
                           [settings.topics.event(name) for name in EVENT_NAMES], expected=expected)
    decoder = Decoder()
    events = [decoder.decode(m.value()) for m in messages]
    return sorted(((e.name, e.record) for e in events), key=lambda e: e[1]["event_time"])


class _Upstream(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = {"/v1/ok": 200, "/v1/missing/7": 404, "/v1/limited": 429, "/v1/boom": 500}
        if self.path == "/v1/hang":
            time.sleep(3)
        self.send_response(status.get(self.path, 200))
        if self.path == "/v1/limited":
            self.send_header("Retry-After", "30")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_asgi_and_wsgi_apps(settings: Settings) -> None:
    tracker = Tracker(settings)

    async def render(request):  # type: ignore[no-untyped-def]
        return JSONResponse({"id": request.path_params["id"]})

    async def crash(request):  # type: ignore[no-untyped-def]
        raise RuntimeError("render backend crashed")

    async def health(request):  # type: ignore[no-untyped-def]
        return PlainTextResponse("ok")

    starlette = Starlette(routes=[Route("/api/render/{id}", render), Route("/api/crash", crash),
                                  Route("/health", health)])
    starlette.add_middleware(asgi.TrackingMiddleware, tracker=tracker)
    client = TestClient(starlette)
    client.get("/api/render/981", headers={"x-request-id": "req-asgi"})
    client.get("/health")
    with pytest.raises(RuntimeError):
        client.get("/api/crash")

    flask = Flask(__name__)

    @flask.post("/api/templates/<template_id>")
    def save(template_id: str) -> tuple[str, int]:
        return "", 201

    wsgi.track_flask(flask, tracker)
    flask.test_client().post("/api/templates/tpl_9", headers={"X-Request-ID": "req-wsgi"})
    assert tracker.flush(30) == 0

    events = events_on_broker(settings, 3)
    assert [(name, r["endpoint"], r["method"], r["status_code"]) for name, r in events] == [
        ("api_request_completed", "/api/render/{id}", "GET", 200),
        ("api_error", "/api/crash", "GET", 500),
        ("api_request_completed", "/api/templates/<template_id>", "POST", 201),
    ]
    assert events[0][1]["request_id"] == "req-asgi" and events[2][1]["request_id"] == "req-wsgi"
    assert "render backend crashed" in events[1][1]["error_message"]
    tracker.close()


def test_httpx_and_requests_calls_to_an_upstream(settings: Settings, upstream: str) -> None:
    tracker = Tracker(settings)
    paths = ["/v1/ok", "/v1/missing/7", "/v1/limited", "/v1/boom"]
    with httpx.Client(event_hooks=httpx_hooks(tracker)) as client:
        for path in paths:
            client.get(f"http://{upstream}{path}")
    session = requests.Session()
    session.mount("http://", tracking_adapter(tracker))
    for path in paths:
        session.get(f"http://{upstream}{path}")
    with pytest.raises(requests.Timeout):
        session.get(f"http://{upstream}/v1/hang", timeout=0.5)
    assert tracker.flush(30) == 0

    events = events_on_broker(settings, 9)
    summary = [(name, r["endpoint"].removeprefix(upstream), r["status_code"],
                r.get("rate_limited"), r.get("retry_after_s")) for name, r in events]
    per_client = [
        ("api_request_completed", "/v1/ok", 200, None, None),
        ("api_request_completed", "/v1/missing/{id}", 404, None, None),
        ("api_error", "/v1/limited", 429, True, 30.0),
        ("api_error", "/v1/boom", 500, False, None),
    ]
    assert summary == per_client + per_client + [("api_error", "/v1/hang", None, False, None)]
    assert "rate limited" in events[2][1]["error_message"]
    tracker.close()
