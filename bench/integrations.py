"""``make bench-integrations``: requests/s of an ASGI app with and without the middleware.

The same Starlette app runs in two uvicorn processes on 127.0.0.1, one instrumented with
``TrackingMiddleware`` (publishing to the real broker), one bare; ``wrk`` loads them in
alternating rounds so drift affects both. Target: instrumented / bare >= 0.95.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bench.common import kafka_bootstrap, print_table
from tests.conftest import free_port

ROUNDS = int(os.environ.get("EPT_BENCH_ROUNDS", "3"))
SECONDS = int(os.environ.get("EPT_BENCH_SECONDS", "8"))
REPO = Path(__file__).resolve().parents[1]


async def _render(request: Any) -> PlainTextResponse:
    return PlainTextResponse(request.path_params["render_id"])


def bare_app() -> Starlette:
    return Starlette(routes=[Route("/api/render/{render_id}", _render)])


def instrumented_app() -> Starlette:
    from ept.integrations.asgi import TrackingMiddleware

    app = bare_app()
    app.add_middleware(TrackingMiddleware)
    return app


def serve(factory: str, port: int, environment: dict[str, str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", f"bench.integrations:{factory}",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
         "--no-access-log"], cwd=REPO, env={**os.environ, **environment})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/render/1", timeout=1)
            return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{factory} did not start on port {port}")


def requests_per_second(port: int) -> float:
    result = subprocess.run(
        ["wrk", "-t1", "-c16", f"-d{SECONDS}s", f"http://127.0.0.1:{port}/api/render/42"],
        capture_output=True, text=True, check=True)
    match = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    if match is None:
        raise RuntimeError(result.stdout)
    return float(match.group(1))


def main() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("bench-integrations needs wrk (Debian: apt-get install wrk)")
    with kafka_bootstrap() as bootstrap, tempfile.TemporaryDirectory() as state:
        environment = {"EPT_KAFKA_BOOTSTRAP": bootstrap, "EPT_TOPIC_PREFIX": "bench.",
                       "EPT_STATE_DIR": state, "EPT_SERVICE": "bench"}
        ports = {"bare": free_port(), "instrumented": free_port()}
        servers = [serve("bare_app", ports["bare"], environment),
                   serve("instrumented_app", ports["instrumented"], environment)]
        results: dict[str, list[float]] = {"bare": [], "instrumented": []}
        try:
            requests_per_second(ports["bare"])  # warm up both
            requests_per_second(ports["instrumented"])
            for _ in range(ROUNDS):
                for name in ("bare", "instrumented"):
                    results[name].append(requests_per_second(ports[name]))
        finally:
            for server in servers:
                server.terminate()
                server.wait(30)
    bare = statistics.median(results["bare"])
    instrumented = statistics.median(results["instrumented"])
    print_table(f"ASGI middleware: Starlette on uvicorn, wrk -c16, {ROUNDS} rounds of "
                f"{SECONDS}s each (target ratio >= 0.95)",
                ["what", "requests/s (median)", "rounds", "ratio"],
                [["bare app", f"{bare:,.0f}", ", ".join(f"{r:,.0f}" for r in results["bare"]),
                  "1.00"],
                 ["with TrackingMiddleware", f"{instrumented:,.0f}",
                  ", ".join(f"{r:,.0f}" for r in results["instrumented"]),
                  f"{instrumented / bare:.3f}"]])


if __name__ == "__main__":
    main()
