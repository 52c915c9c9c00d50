"""``make bench-integrations``: requests/s of an ASGI app with and without the middleware.

The same Starlette app is called directly through the ASGI interface (no network), so
the difference is the middleware's own cost (measure, build and publish the event).
Target: instrumented / bare >= 0.95.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bench.common import kafka_bootstrap, print_table
from deploy.settings import load_settings
from producers import Tracker
from producers.integrations.asgi import TrackingMiddleware

REQUESTS = int(os.environ.get("EPT_BENCH_REQUESTS", "20000"))


def app() -> Starlette:
    async def render(request: Any) -> PlainTextResponse:
        return PlainTextResponse(request.path_params["render_id"])

    return Starlette(routes=[Route("/api/render/{render_id}", render)])


async def requests_per_second(asgi: Any) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    def scope(index: int) -> dict[str, Any]:
        return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                "method": "GET", "scheme": "http", "path": f"/api/render/{index}",
                "raw_path": f"/api/render/{index}".encode(), "query_string": b"",
                "root_path": "", "headers": [(b"host", b"bench")],
                "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}

    for index in range(500):
        await asgi(scope(index), receive, send)
    began = time.perf_counter()
    for index in range(REQUESTS):
        await asgi(scope(index), receive, send)
    return REQUESTS / (time.perf_counter() - began)


def main() -> None:
    with kafka_bootstrap() as bootstrap, tempfile.TemporaryDirectory() as state:
        tracker = Tracker(load_settings(kafka_bootstrap=bootstrap, topic_prefix="bench.",
                                        state_dir=Path(state)))
        bare = asyncio.run(requests_per_second(app()))
        instrumented_app = app()
        instrumented_app.add_middleware(TrackingMiddleware, tracker=tracker)
        instrumented = asyncio.run(requests_per_second(instrumented_app))
        bare_again = asyncio.run(requests_per_second(app()))  # drift check
        tracker.close(30)
    baseline = (bare + bare_again) / 2
    print_table(f"ASGI middleware: {REQUESTS:,} requests through a Starlette app "
                "(target ratio >= 0.95)", ["what", "requests/s", "us/request", "ratio"],
                [["bare app (mean of two runs)", f"{baseline:,.0f}", f"{1e6 / baseline:.1f}",
                  "1.00"],
                 ["with TrackingMiddleware", f"{instrumented:,.0f}",
                  f"{1e6 / instrumented:.1f}", f"{instrumented / baseline:.3f}"]])


if __name__ == "__main__":
    main()
