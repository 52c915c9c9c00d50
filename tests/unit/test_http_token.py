"""The HTTP servers: bound to 127.0.0.1 by default, an optional API token guards them."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from aiohttp import web

from ept.core.settings import load_settings
from ept.processors.web.http import TOKEN_COOKIE, ServerThread, login_route, token_middleware
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
        with pytest.raises(urllib.error.HTTPError) as in_url:  # URLs end up in logs
            urllib.request.urlopen(f"{base}/api/query/x?token=s3cret")
        assert in_url.value.code == 401
        cookie = urllib.request.Request(f"{base}/api/query/x",
                                        headers={"Cookie": f"{TOKEN_COOKIE}=s3cret"})
        assert urllib.request.urlopen(cookie).status == 200
    finally:
        server.stop()


def test_login_sets_an_http_only_strict_cookie_for_the_right_token_only() -> None:
    app = web.Application(middlewares=[  # type: ignore[list-item]
        token_middleware("s3cret", frozenset({"/api/login"}))])
    app.add_routes([login_route("s3cret")])
    port = free_port()
    server = ServerThread(app, "127.0.0.1", port)
    server.start()

    def login(body: bytes) -> tuple[int, str]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/login", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request) as reply:
                return reply.status, reply.headers.get("Set-Cookie", "")
        except urllib.error.HTTPError as error:
            return error.code, error.headers.get("Set-Cookie", "")

    try:
        status, cookie = login(b'{"token": "s3cret"}')
        assert status == 200 and cookie.startswith(f"{TOKEN_COOKIE}=s3cret;")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert login(b'{"token": "guess"}') == (401, "")
        assert login(b"not json")[0] == 400
    finally:
        server.stop()
