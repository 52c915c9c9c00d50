"""Shared HTTP plumbing: the optional API token and running an aiohttp app in a thread."""

from __future__ import annotations

import asyncio
import hmac
import threading
from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]
OPEN_PATHS = frozenset({"/health"})
TOKEN_COOKIE = "ept_token"  # set by POST /api/login, for the dashboard in a browser


def token_middleware(token: str | None, open_paths: frozenset[str] = OPEN_PATHS
                     ) -> Middleware:
    """Require the API token on every path but ``open_paths``: ``Authorization: Bearer
    <token>``, or the ``ept_token`` cookie :func:`login_route` sets. Never a query
    parameter: URLs end up in access logs, proxies and browser history."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token is None or request.path in open_paths:
            return await handler(request)
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        given = given or request.cookies.get(TOKEN_COOKIE, "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            return web.json_response({"error": "missing or wrong API token"}, status=401)
        return await handler(request)

    return check


def login_route(token: str | None) -> web.RouteDef:
    """``POST /api/login`` with ``{"token": ...}``: on the right token, sets the token
    cookie (HttpOnly, SameSite=Strict) for a browser; 401 otherwise. Keep it open."""

    async def login(request: web.Request) -> web.Response:
        try:
            given = str((await request.json()).get("token", ""))
        except (ValueError, AttributeError):
            return web.json_response({"error": 'send {"token": "..."}'}, status=400)
        if token is not None and not hmac.compare_digest(given.encode(), token.encode()):
            return web.json_response({"error": "wrong API token"}, status=401)
        response = web.json_response({"ok": True})
        if token is not None:
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict",
                                path="/", secure=request.secure)
        return response

    return web.post("/api/login", login)


class ServerThread:
    """Runs ``app`` on ``host:port`` in a daemon thread, through ``runner`` (an AppRunner
    class). ``start`` blocks until it listens and raises OSError when the port is
    taken."""

    def __init__(self, app: web.Application, host: str, port: int,
                 runner: type[web.AppRunner] = web.AppRunner) -> None:
        self._app, self._host, self._port = app, host, port
        self._runner_class = runner
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._serve, name="ept-http", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._runner = self._runner_class(self._app, access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self._host, self._port)
            self._loop.run_until_complete(site.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        if self._runner is not None and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
