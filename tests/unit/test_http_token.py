"""The HTTP servers: bound to 127.0.0.1 by default, an optional API token guards them."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from aiohttp import web

from ept.core.settings import load_settings
from ept.processors.http import ServerThread, token_middleware
from tests.conftest import free_port


def test_default_bind_address_is_loopback() -> None:
    assert load_settings().http_host == "127.0.0.1"


def test_token_is_required_except_for_health() -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[token_middleware("s3cret")])  # type: ignore[list-item]
    app.add_routes([web.get("/health", hello), web.get("/api/query/x", hello)])
    port = free_port()
    server = ServerThread(app, "127.0.0.1", port)
    server.start()
    base = f"http://127.0.0.1:{port}"
    try:
        assert urllib.request.urlopen(f"{base}/health").status == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(urllib.request.Request(f"{base}/api/query/x",
                                                              headers=headers))
            assert refused.value.code == 401
        allowed = urllib.request.Request(f"{base}/api/query/x",
                                         headers={"Authorization": "Bearer s3cret"})
        assert urllib.request.urlopen(allowed).status == 200
        assert urllib.request.urlopen(f"{base}/api/query/x?token=s3cret").status == 200
    finally:
        server.stop()
