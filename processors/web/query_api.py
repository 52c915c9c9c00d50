"""HTTP access to the analytics queries, served by the process that owns ClickHouse.

The embedded engine admits one process per data directory, so ``ept query`` asks the
running sink through this API when it cannot open the engine itself.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import threading
from typing import Any

from aiohttp import web
from clickhouse_connect.driver.client import Client

from ept.processors.storage import queries


def to_jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [to_jsonable(item) for item in value]
    if isinstance(value, float) and value != value:  # NaN
        return None
    return value if isinstance(value, int | float | str | bool | type(None)) else str(value)


def render(result: queries.QueryResult, fmt: str) -> str:
    """``result`` as ``json``, ``csv`` or an aligned text ``table``."""
    rows = [[to_jsonable(value) for value in row] for row in result.rows]
    if fmt == "json":
        return json.dumps([dict(zip(result.columns, row, strict=True)) for row in rows],
                          indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(result.columns)
        writer.writerows(rows)
        return out.getvalue()
    cells = [result.columns, *[["" if v is None else str(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(result.columns))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             for row in cells]
    if lines:
        lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines) + f"\n({len(rows)} rows)"


class QueryApi:
    """``GET /api/query/{name}?since=&until=&template=&format=json|csv`` and ``/api/queries``."""

    def __init__(self, client: Client, client_lock: threading.Lock) -> None:
        self._client = client
        self._lock = client_lock

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/queries", self.list_queries),
                web.get("/api/query/{name}", self.query)]

    async def list_queries(self, request: web.Request) -> web.Response:
        return web.json_response([{"name": q.name, "description": q.description,
                                   "specification": q.spec} for q in queries.QUERIES.values()])

    def run_locked(self, name: str, since: dt.datetime | None, until: dt.datetime | None,
                   template: str | None) -> queries.QueryResult:
        with self._lock:
            return queries.run(self._client, name, since, until, template)

    async def query(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        fmt = request.query.get("format", "json")
        if fmt not in ("json", "csv", "table"):
            return web.json_response({"error": f"format: must be json, csv or table, got {fmt!r}"},
                                     status=400)
        try:
            since = queries.parse_time(request.query.get("since"), "since")
            until = queries.parse_time(request.query.get("until"), "until")
            result = await asyncio.get_running_loop().run_in_executor(
                None, self.run_locked, name, since, until, request.query.get("template"))
        except queries.UnknownQueryError as exc:
            return web.json_response({"error": str(exc)}, status=404)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        content_type = "application/json" if fmt == "json" else "text/plain"
        return web.Response(text=render(result, fmt), content_type=content_type)
