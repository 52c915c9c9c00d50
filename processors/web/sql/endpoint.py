"""ClickHouse's HTTP interface (the part its clients use) over the embedded engine.

Served by the sink, the process that owns the engine, on ``EPT_SQL_BIND:EPT_SQL_PORT``
(127.0.0.1:8123), so clickhouse-connect, the JavaScript client, notebooks, BI tools and
curl reach analysts' SQL as they would a ClickHouse server: ``GET /?query=`` or ``POST /``
with the query in the body, ``database``, ``default_format`` and ``FORMAT``, settings and
``param_<name>`` as URL parameters, ``/ping``, credentials by basic auth,
``X-ClickHouse-User``/``-Key`` or ``user``/``password`` parameters. Every output format is
ClickHouse's own; so are the errors (``Code: N. DB::Exception: ... (NAME)``, with
``X-ClickHouse-Exception-Code``). Queries run in :class:`AnalystEngine` sessions:
read-only and bounded, never under the sink's writer lock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

from aiohttp import web

from ept.core.settings import Settings
from ept.processors.storage.analyst import AnalystEngine, ClickHouseError, SqlResult
from ept.processors.storage.engine.protocol import Analyst
from ept.processors.web.sql import transport
from ept.processors.web.sql.access import AccessGuard
from ept.processors.web.sql.server import clickhouse_errors, error_response
from ept.processors.web.sql.slots import QuerySlots

log = logging.getLogger("ept.sql")
MAX_BODY_BYTES = 1024 ** 2

# URL parameters of the HTTP interface that are not settings.
_TRANSPORT = frozenset({
    "query", "database", "default_format", "user", "password", "query_id", "session_id",
    "session_timeout", "session_check", "compress", "decompress", "quota_key",
    "buffer_size", "wait_end_of_query", "client_protocol_version", "role",
    "enable_http_compression", "http_zlib_compression_level", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms",
}) | transport.PARAMETERS
_CONTENT_TYPES = {
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "TSV": "text/tab-separated-values; charset=UTF-8",
    "TabSeparatedWithNames": "text/tab-separated-values; charset=UTF-8",
    "TSVWithNames": "text/tab-separated-values; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "CSVWithNames": "text/csv; charset=UTF-8; header=present",
    "JSON": "application/json; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
    "JSONCompactEachRow": "application/x-ndjson; charset=UTF-8",
    "JSONStrings": "application/json; charset=UTF-8",
}
_BINARY = ("Parquet", "Arrow", "ArrowStream", "Native", "RowBinary", "ORC", "Avro",
           "MsgPack", "Protobuf", "CapnProto")


def content_type(fmt: str) -> str:
    if fmt in _CONTENT_TYPES:
        return _CONTENT_TYPES[fmt]
    if fmt.startswith(_BINARY):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


class SqlEndpoint:
    """The aiohttp handlers; ``routes()`` for an application of their own."""

    def __init__(self, settings: Settings, engine: AnalystEngine) -> None:
        self._engine = engine
        self._user = settings.analyst_user
        self._access = AccessGuard(settings.analyst_user, (
            settings.analyst_password.get_secret_value()
            if settings.analyst_password is not None else None))
        self._slots = QuerySlots(settings.sql_max_concurrent)
        refusal = engine.sandbox_error()
        if refusal is not None:
            log.error("analysts' SQL is refused: the engine host is not sandboxed (%s)",
                      refusal)

    def application(self) -> web.Application:
        """An application serving ``routes()`` with a 1 MiB body limit (a larger body is
        ClickHouse's error), every error in ClickHouse's form. Serve it with
        :class:`~ept.processors.web.sql.server.SqlRunner`."""
        app = web.Application(client_max_size=MAX_BODY_BYTES,
                              middlewares=[clickhouse_errors])
        app.add_routes(self.routes())
        return app

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/ping", self.ping), web.get("/", self.query),
                web.post("/", self.query)]

    async def ping(self, request: web.Request) -> web.Response:
        return web.Response(text="Ok.\n")

    async def query(self, request: web.Request) -> web.Response:
        query_id = request.query.get("query_id") or str(uuid.uuid4())
        try:
            await self._access.check(request)
            sql = await self._sql(request)
            if not sql.strip():
                return web.Response(text="Ok.\n")
            async with self._slots.taken():
                result = await self._run_until_done(request, sql, query_id)
            body, encoding = await asyncio.get_running_loop().run_in_executor(
                None, transport.reply, result.body, result.format, request.query,
                request.headers.get("Accept-Encoding"))
        except web.HTTPRequestEntityTooLarge:
            return error_response(ClickHouseError(
                1001, "STD_EXCEPTION", f"The request body is larger than {MAX_BODY_BYTES} "
                "bytes: send the query, not data"), query_id, status=413)
        except ClickHouseError as error:
            return error_response(error, query_id)
        return web.Response(body=body, headers={
            **encoding, "Content-Type": content_type(result.format),
            "X-ClickHouse-Format": result.format,
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Server-Display-Name": "ept",
            "X-ClickHouse-Summary": json.dumps({
                "read_rows": str(result.rows_read), "read_bytes": str(result.bytes_read),
                "written_rows": "0", "written_bytes": "0", "total_rows_to_read": "0",
                "elapsed_ns": str(int(result.elapsed_s * 1e9))}),
        })

    async def _run_until_done(self, request: web.Request, sql: str, query_id: str
                              ) -> SqlResult:
        """The query's result; a client that leaves first (the handler is cancelled)
        has its query stopped in the engine, and so its slot freed."""
        analyst = Analyst(self._user, request.query.get("session_id", ""))
        loop = asyncio.get_running_loop()
        running = loop.run_in_executor(None, self._run, request, sql, query_id, analyst)
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            await loop.run_in_executor(None, self._engine.cancel, query_id, analyst)
            await asyncio.wait({running}, timeout=10)  # its slot is held until it ends
            if running.done() and not running.cancelled():
                running.exception()  # QUERY_WAS_CANCELLED: nobody is left to tell
            raise

    def _run(self, request: web.Request, sql: str, query_id: str, analyst: Analyst
             ) -> SqlResult:
        url = request.query
        settings = {name: value for name, value in url.items()
                    if name not in _TRANSPORT and not name.startswith("param_")}
        params = {name.removeprefix("param_"): value for name, value in url.items()
                  if name.startswith("param_")}
        return self._engine.run(
            sql, default_format=url.get("default_format")
            or request.headers.get("X-ClickHouse-Format"),
            database=url.get("database") or request.headers.get("X-ClickHouse-Database"),
            settings=settings, params=params, query_id=query_id, analyst=analyst)

    @staticmethod
    async def _sql(request: web.Request) -> str:
        """The query: the ``query`` parameter, then the POST body (ClickHouse joins them)."""
        parts = [request.query.get("query", "")]
        if request.method == "POST":
            body = await transport.request_body(request)
            try:
                parts.append(body.decode())
            except UnicodeDecodeError:
                raise ClickHouseError(36, "BAD_ARGUMENTS", "the query is not UTF-8") from None
        return "\n".join(part for part in parts if part)

