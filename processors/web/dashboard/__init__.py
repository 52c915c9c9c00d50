"""The web dashboard, served by the sink process (which owns ClickHouse).

``/`` is a single static page (vanilla JS and SVG, no front-end dependency) that polls:
the named queries (``/api/query/...``, raw events for short ranges, rollups for long
ones), ``/api/alerts`` (the latest alerts, followed from the alert topic),
``/api/templates`` (the template kill switch; ``POST /api/templates/{id}/enable``
re-enables one) and ``/api/live`` (the worker's live statistics, proxied so the page
needs one origin).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
import urllib.request
from collections import deque
from importlib import resources
from typing import Any

from aiohttp import web

from ept.core.settings import Settings
from ept.core.template_controls import (
    ENABLED,
    TemplateControl,
    TemplateControlView,
    publish_control,
)
from ept.processors.alerts.topic import AlertNotice, read_alerts


class AlertFeed:
    """Follows the alert topic from its start in a daemon thread; keeps the latest alerts."""

    def __init__(self, settings: Settings, keep: int = 200) -> None:
        self._settings = settings
        self._recent: deque[dict[str, Any]] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="ept-alert-feed", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._recent)

    def _follow(self) -> None:
        read_alerts(self._settings, self._append, self._stop, from_beginning=True)

    def _append(self, alert: AlertNotice) -> None:
        with self._lock:
            self._recent.append(alert.to_json())


def content_policy(nonce: str) -> str:
    """The page's own script (by nonce) and its own origin, nothing else: no injected
    script runs, no data leaves for another site, no site frames the page. (Inline styles
    stay allowed: the charts set widths in style attributes.)"""
    return (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
            "connect-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
            "form-action 'none'")


def dashboard_routes(settings: Settings, feed: AlertFeed, templates: TemplateControlView
                     ) -> list[web.RouteDef]:
    page = (resources.files("ept.processors.web.dashboard") / "index.html").read_text()
    worker_stats = f"http://{settings.http_host}:{settings.worker_port}/stats"

    async def index(request: web.Request) -> web.Response:
        nonce = secrets.token_urlsafe(16)
        return web.Response(text=page.replace("{{nonce}}", nonce), content_type="text/html",
                            headers={"Content-Security-Policy": content_policy(nonce),
                                     "X-Content-Type-Options": "nosniff",
                                     "Referrer-Policy": "no-referrer"})

    async def alerts(request: web.Request) -> web.Response:
        return web.json_response(feed.snapshot())

    def fetch_live() -> dict[str, Any]:
        request = urllib.request.Request(worker_stats)
        if settings.api_token is not None:  # the worker asks for the same token
            request.add_header("Authorization",
                               f"Bearer {settings.api_token.get_secret_value()}")
        with urllib.request.urlopen(request, timeout=3) as reply:
            return dict(json.loads(reply.read()))

    async def live(request: web.Request) -> web.Response:
        try:
            data = await asyncio.get_running_loop().run_in_executor(None, fetch_live)
        except OSError as exc:
            return web.json_response({"error": f"worker not reachable: {exc}"}, status=503)
        return web.json_response(data)

    async def template_controls(request: web.Request) -> web.Response:
        return web.json_response([control.to_json() for control in templates.controls()])

    async def enable_template(request: web.Request) -> web.Response:
        # A JSON body cannot be sent cross-site without a CORS preflight, which this server
        # never grants: another page the operator has open cannot re-enable a template.
        if request.content_type != "application/json":
            return web.json_response({"error": "send Content-Type: application/json"},
                                     status=415)
        template_id = request.match_info["template_id"]
        current = templates.control(template_id)
        if current is None or not current.disabled:
            return web.json_response({"error": f"template {template_id!r} is not disabled"},
                                     status=409)
        control = TemplateControl(template_id, ENABLED, "re-enabled from the dashboard",
                                  "dashboard", int(time.time() * 1000))
        await asyncio.get_running_loop().run_in_executor(None, publish_control, settings,
                                                         control)
        return web.json_response(control.to_json())

    return [web.get("/", index), web.get("/api/alerts", alerts), web.get("/api/live", live),
            web.get("/api/templates", template_controls),
            web.post("/api/templates/{template_id}/enable", enable_template)]
