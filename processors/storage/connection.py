"""The one place that reaches ClickHouse: a server, or the embedded engine (chdb).

Everything else asks this module for a client and never looks at whether ClickHouse is
embedded or a server. A long-running process that serves analysts' SQL (the sink) opens
the embedded engine through :func:`engine_host` instead: a sandboxed child process that
holds no secret, which its clients (:func:`hosted_client`) reach over a socket.
"""

from __future__ import annotations

import fcntl
import threading
import time
from pathlib import Path

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from ept.core.settings import Settings
from ept.processors.storage.analyst import SqlLimits
from ept.processors.storage.engine.hosted_client import hosted_client
from ept.processors.storage.engine.link import EngineLink, start_engine_host


class EngineHeldElsewhere(RuntimeError):
    """The embedded engine's data directory is open in another process (the sink, say)."""

_embedded_lock = threading.Lock()
_opened_here: set[Path] = set()  # embedded data directories this process has open


def clickhouse_client(settings: Settings, database: str | None = None) -> Client:
    """A ClickHouse client: the server of ``EPT_CLICKHOUSE_URL``, else the embedded engine.

    The embedded engine (chdb) allows one data directory per process and one process per
    data directory; opening a directory another process holds raises EngineHeldElsewhere.
    """
    server = settings.clickhouse_server
    if server is not None:
        return clickhouse_connect.get_client(
            host=server.host,
            port=server.port,
            username=server.username,
            password=server.password,
            database=database or server.database,
            secure=server.secure,
        )
    return embedded_client(settings.clickhouse_data_dir, database)


def engine_host(settings: Settings, wait_s: float = 0.0) -> EngineLink:
    """The engine host on the embedded engine's data directory, started: for a process
    that serves analysts' SQL (they never run in a process that holds a secret). Waits
    up to ``wait_s`` for another process to let the directory go (a killed sink's host
    exits within milliseconds), then raises EngineHeldElsewhere."""
    path = settings.clickhouse_data_dir
    path.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while _held_by_another_process(path) and time.monotonic() < deadline:
        time.sleep(0.1)
    with _embedded_lock:
        if path in _opened_here or _held_by_another_process(path):
            raise EngineHeldElsewhere(
                f"the embedded ClickHouse data directory {path} is held by another process "
                "(only one process may open it; query through the running sink's HTTP API "
                "or set EPT_CLICKHOUSE_URL to a server)")
        return start_engine_host(path, SqlLimits.of(settings))


def hosted_reader(link: EngineLink, session: dict[str, int | str]) -> Client:
    """A client for reads (dashboard, named queries) in the engine host, on a session of
    its own with ``session`` (limits) and ``readonly = 1``."""
    return hosted_client(link, settings={**session, "readonly": 1})


def embedded_client(path: Path, database: str | None = None,
                    session: dict[str, int | str] | None = None) -> Client:
    """A client of the embedded engine on ``path`` (created if missing), its session with
    the ``session`` settings."""
    path.mkdir(parents=True, exist_ok=True)
    with _embedded_lock:
        if path not in _opened_here and _held_by_another_process(path):
            raise EngineHeldElsewhere(
                f"the embedded ClickHouse data directory {path} is held by another process "
                "(only one process may open it; query through the running sink's HTTP API "
                "or set EPT_CLICKHOUSE_URL to a server)"
            )
        client = clickhouse_connect.get_client(
            interface="chdb", path=str(path), database=database or "default",
            settings=session,
        )
        _opened_here.add(path)
        return client


def _held_by_another_process(path: Path) -> bool:
    """Whether another process has the engine open (it flocks ``<path>/status``)."""
    status = path / "status"
    if not status.exists():
        return False
    with open(status, "rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False

