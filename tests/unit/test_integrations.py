"""Framework middleware and HTTP client hooks, with real frameworks and real HTTP."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest
import requests
from flask import Flask
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from ept.integrations import asgi, wsgi
from ept.integrations.endpoints import external_endpoint, templated_path
from ept.integrations.http_clients import httpx_hooks, tracking_adapter
from tests.recording import recording_tracker, sent_events


def test_an_external_endpoint_is_host_port_and_route_only() -> None:
    assert external_endpoint("https://user:s3cr3t@api.example.com:8443/v1/users/123?key=abc"
                             "#frag") == "api.example.com:8443/v1/users/{id}"
    assert external_endpoint("http://api.example.com") == "api.example.com/"
    assert external_endpoint("http://h:notaport/x") == "h/x"


def test_templated_path_hides_ids() -> None:
    assert templated_path("/api/render/123/frames/9f86d081884c7d65a1b2") == (
        "/api/render/{id}/frames/{id}")
    assert templated_path("/api/templates?page=2") == "/api/templates"


def starlette_app() -> Starlette:
    async def render(request):  # type: ignore[no-untyped-def]
        return JSONResponse({"id": request.path_params["render_id"]})

    async def broken(request):  # type: ignore[no-untyped-def]
        raise RuntimeError("database went away")

    async def unavailable(request):  # type: ignore[no-untyped-def]
        return PlainTextResponse("busy", status_code=503)

    async def health(request):  # type: ignore[no-untyped-def]
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/api/render/{render_id}", render),
                             Route("/api/broken", broken), Route("/api/busy", unavailable),
                             Route("/health", health)])


def test_asgi_middleware_tracks_route_templates_errors_and_exceptions() -> None:
    tracker, delivery = recording_tracker()
    app = starlette_app()
    app.add_middleware(asgi.TrackingMiddleware, tracker=tracker)
    client = TestClient(app, raise_server_exceptions=True)
    assert client.get("/api/render/42", headers={"X-Request-ID": "req-7"}).json() == {"id": "42"}
    assert client.get("/api/busy").status_code == 503
    with pytest.raises(RuntimeError, match="database went away"):
        client.get("/api/broken")
    client.get("/health")
    events = sent_events(delivery)
    assert [(name, r["endpoint"], r["status_code"]) for name, r in events] == [
        ("api_request_completed", "/api/render/{render_id}", 200),
        ("api_error", "/api/busy", 503),
        ("api_error", "/api/broken", 500),
    ]
    assert events[0][1]["request_id"] == "req-7" and events[0][1]["method"] == "GET"
    assert "database went away" in events[2][1]["error_message"]


def test_wsgi_middleware_with_flask() -> None:
    tracker, delivery = recording_tracker()
    app = Flask(__name__)

    @app.get("/api/render/<render_id>")
    def render(render_id: str) -> dict[str, str]:
        return {"id": render_id}

    @app.get("/api/fail")
    def fail() -> str:
        raise ValueError("bad composition")

    wsgi.track_flask(app, tracker)
    client = app.test_client()
    assert client.get("/api/render/abc123").status_code == 200
    assert client.get("/api/fail").status_code == 500
    events = sent_events(delivery)
    assert [(name, r["status_code"]) for name, r in events] == [
        ("api_request_completed", 200), ("api_error", 500)]
    assert events[0][1]["endpoint"] == "/api/render/<render_id>"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/v1/images"):
            self.send_response(429)
            self.send_header("Retry-After", "20")
        elif self.path.startswith("/v1/down"):
            self.send_response(503)
        else:
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_httpx_hooks_recognise_rate_limiting(server: str) -> None:
    tracker, delivery = recording_tracker()
    with httpx.Client(event_hooks=httpx_hooks(tracker)) as client:
        client.get(f"{server}/v1/images/generations")
        client.get(f"{server}/v1/down")
        client.get(f"{server}/v1/models/123")
    events = sent_events(delivery)
    host = server.removeprefix("http://")
    assert [(n, r["endpoint"], r["status_code"], r.get("rate_limited")) for n, r in events] == [
        ("api_error", f"{host}/v1/images/generations", 429, True),
        ("api_error", f"{host}/v1/down", 503, False),
        ("api_request_completed", f"{host}/v1/models/{{id}}", 200, None),
    ]
    assert events[0][1]["retry_after_s"] == 20.0


def test_async_httpx_hooks(server: str) -> None:
    import asyncio

    tracker, delivery = recording_tracker()

    async def call() -> None:
        async with httpx.AsyncClient(event_hooks=httpx_hooks(tracker, async_=True)) as client:
            await client.get(f"{server}/v1/images/x")

    asyncio.run(call())
    [(name, record)] = sent_events(delivery)
    assert name == "api_error" and record["rate_limited"]


def test_requests_adapter_tracks_responses_and_failures(server: str) -> None:
    tracker, delivery = recording_tracker()
    session = requests.Session()
    session.mount("http://", tracking_adapter(tracker))
    session.get(f"{server}/v1/images/generations")
    session.get(f"{server}/ok")
    with pytest.raises(requests.ConnectionError):
        session.get("http://127.0.0.1:1/unreachable", timeout=2)
    events = sent_events(delivery)
    assert [(n, r["status_code"]) for n, r in events] == [
        ("api_error", 429), ("api_request_completed", 200), ("api_error", None)]
    assert events[0][1]["rate_limited"] and events[2][1]["endpoint"] == "127.0.0.1:1/unreachable"
