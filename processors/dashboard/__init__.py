"""The web dashboard, served by the sink process (which owns ClickHouse).

``/`` is a single static page (vanilla JS and SVG, no front-end dependency) that polls:
the named queries (``/api/query/...``, raw events for short ranges, rollups for long
ones), ``/api/alerts`` (the latest alerts, followed from the alert topic) and
``/api/live`` (the worker's live statistics, proxied so the page needs one origin).
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections import deque
from importlib import resources
from typing import Any

from aiohttp import web

from ept.core.settings import Settings
from ept.processors.alert_topic import AlertNotice, read_alerts


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


def dashboard_routes(settings: Settings, feed: AlertFeed) -> list[web.RouteDef]:
    page = (resources.files("ept.processors") / "dashboard" / "index.html").read_text()
    worker_stats = f"http://{settings.http_host}:{settings.worker_port}/stats"

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    async def alerts(request: web.Request) -> web.Response:
        return web.json_response(feed.snapshot())

    def fetch_live() -> dict[str, Any]:
        with urllib.request.urlopen(worker_stats, timeout=3) as reply:
            return dict(json.loads(reply.read()))

    async def live(request: web.Request) -> web.Response:
        import asyncio

        try:
            data = await asyncio.get_running_loop().run_in_executor(None, fetch_live)
        except OSError as exc:
            return web.json_response({"error": f"worker not reachable: {exc}"}, status=503)
        return web.json_response(data)

    return [web.get("/", index), web.get("/api/alerts", alerts), web.get("/api/live", live)]
