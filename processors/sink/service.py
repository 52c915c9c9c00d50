"""The ``ept sink`` process: migrations, topics, the query API and the sink loop."""

from __future__ import annotations

import logging
import signal
import threading

from aiohttp import web

from ept.core.kafka import ensure_topics
from ept.core.settings import Settings
from ept.core.template_controls import TemplateControlView
from ept.processors.sink.consumer import DEFAULT_GROUP, Sink
from ept.processors.storage.analyst import AnalystEngine, SqlLimits
from ept.processors.storage.connection import (
    clickhouse_client,
    engine_host,
    hosted_reader,
)
from ept.processors.storage.engine.hosted_client import hosted_client
from ept.processors.storage.tables import migrate
from ept.processors.web.dashboard import AlertFeed, dashboard_routes
from ept.processors.web.http import OPEN_PATHS, ServerThread, login_route, token_middleware
from ept.processors.web.query_api import QueryApi
from ept.processors.web.sql.endpoint import SqlEndpoint
from ept.processors.web.sql.server import SqlRunner

log = logging.getLogger("ept.sink")


def run_sink(settings: Settings, stop: threading.Event | None = None,
             group: str = DEFAULT_GROUP, serve_http: bool = True) -> Sink:
    """Run the sink until SIGTERM/SIGINT or ``stop``; returns the finished sink.

    Opens ClickHouse (raises when the embedded data directory is held by another
    process), applies migrations, creates missing topics, serves the query API and the
    dashboard on ``EPT_HTTP_HOST:EPT_SINK_PORT`` and, on the embedded engine, analysts'
    SQL on ``EPT_SQL_BIND:EPT_SQL_PORT`` (reads never take the writer's connection), then
    consumes. Raises OSError when a port is taken.
    """
    stop = stop or threading.Event()
    link = None
    if settings.clickhouse_server is None:
        # The engine lives in a sandboxed child that holds no secret: analysts' SQL runs
        # there, never in this process (see docs/security.md).
        link = engine_host(settings, wait_s=10.0)
        client = hosted_client(link)
    else:
        client = clickhouse_client(settings)
    applied = migrate(client, settings)
    if applied:
        log.info("sink: applied migrations %s", ", ".join(applied))
    ensure_topics(settings)
    server = sql_server = None
    feed, templates = None, None
    if serve_http:
        feed = AlertFeed(settings)
        feed.start()
        templates = TemplateControlView(settings).start()
        limits = SqlLimits.of(settings)
        reader = (hosted_reader(link, limits.session_settings()) if link is not None
                  else clickhouse_client(settings))
        api = QueryApi(reader, threading.Lock())
        token = settings.api_token.get_secret_value() if settings.api_token else None
        # The dashboard's page holds no data: it is served to anyone, and asks for the
        # token (POST /api/login) when the API answers 401.
        open_paths = OPEN_PATHS | {"/", "/api/login"}
        app = web.Application(middlewares=[token_middleware(token, open_paths)])  # type: ignore[list-item]
        app.add_routes([web.get("/health", _health), login_route(token), *api.routes(),
                        *dashboard_routes(settings, feed, templates)])
        server = ServerThread(app, settings.http_host, settings.sink_port)
        server.start()
        log.info("sink: dashboard and query API on http://%s:%d/", settings.http_host,
                 settings.sink_port)
        if link is not None:
            sql_app = SqlEndpoint(settings, AnalystEngine(link)).application()
            sql_server = ServerThread(sql_app, settings.sql_bind, settings.sql_port,
                                      SqlRunner)
            sql_server.start()
            log.info("sink: analysts' SQL (ClickHouse HTTP interface) on http://%s:%d/",
                     settings.sql_bind, settings.sql_port)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    sink = Sink(settings, client, group=group)
    try:
        sink.run(stop)
    finally:
        if server is not None:
            server.stop()
        if sql_server is not None:
            sql_server.stop()
        if feed is not None:
            feed.stop()
        if templates is not None:
            templates.close()
        if link is not None:
            link.close()
    return sink


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "component": "sink"})
