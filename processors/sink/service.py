"""The ``ept sink`` process: migrations, topics, the query API and the sink loop."""

from __future__ import annotations

import logging
import signal
import threading

from aiohttp import web

from ept.core.kafka import ensure_topics
from ept.core.settings import Settings
from ept.core.template_controls import TemplateControlView
from ept.processors.dashboard import AlertFeed, dashboard_routes
from ept.processors.http import ServerThread, token_middleware
from ept.processors.sink.consumer import DEFAULT_GROUP, Sink
from ept.processors.storage.api import QueryApi
from ept.processors.storage.connection import clickhouse_client
from ept.processors.storage.tables import migrate

log = logging.getLogger("ept.sink")


def run_sink(settings: Settings, stop: threading.Event | None = None,
             group: str = DEFAULT_GROUP, serve_http: bool = True) -> Sink:
    """Run the sink until SIGTERM/SIGINT or ``stop``; returns the finished sink.

    Opens ClickHouse (raises when the embedded data directory is held by another
    process), applies migrations, creates missing topics, serves the query API on
    ``EPT_HTTP_HOST:EPT_SINK_PORT`` and consumes.
    """
    stop = stop or threading.Event()
    client = clickhouse_client(settings)
    applied = migrate(client, settings)
    if applied:
        log.info("sink: applied migrations %s", ", ".join(applied))
    ensure_topics(settings)
    client_lock = threading.Lock()
    server = None
    feed, templates = None, None
    if serve_http:
        feed = AlertFeed(settings)
        feed.start()
        templates = TemplateControlView(settings).start()
        api = QueryApi(client, client_lock)
        token = settings.api_token.get_secret_value() if settings.api_token else None
        app = web.Application(middlewares=[token_middleware(token)])  # type: ignore[list-item]
        app.add_routes([web.get("/health", _health), *api.routes(),
                        *dashboard_routes(settings, feed, templates)])
        server = ServerThread(app, settings.http_host, settings.sink_port)
        server.start()
        log.info("sink: dashboard and query API on http://%s:%d/", settings.http_host,
                 settings.sink_port)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    sink = Sink(settings, client, group=group, client_lock=client_lock)
    try:
        sink.run(stop)
    finally:
        if server is not None:
            server.stop()
        if feed is not None:
            feed.stop()
        if templates is not None:
            templates.close()
    return sink


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "component": "sink"})
