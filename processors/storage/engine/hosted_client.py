"""clickhouse-connect's embedded-engine client, with the engine in the engine host.

clickhouse-connect drives chdb through one seam: a connection object with ``query(sql,
format, params=)`` returning a result (``bytes()``, ``rows_read()``, ...), ``send_query``
for streams and ``close``. :class:`HostedConnection` is that object over an
:class:`~ept.processors.storage.engine.link.EngineLink`, so ept's code (migrations, the
sink's Avro inserts, the dashboard's reads) keeps its ``Client`` unchanged. An insert's
``FROM INFILE`` file, which clickhouse-connect writes in this process, travels with the
request: the host cannot read this process's files.
"""

from __future__ import annotations

import contextlib
import re
import weakref
from collections.abc import Iterator
from itertools import count
from typing import Any

from clickhouse_connect.driver._backend.chdb_backend import ChdbBackend, _EngineHandle
from clickhouse_connect.driver._chdbclient import ChdbClient
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.transform import NativeTransform

from ept.processors.storage.engine.link import EngineLink
from ept.processors.storage.engine.protocol import Reply, Request

_INFILE = re.compile(r"FROM INFILE '((?:[^'\\]|\\.)*)'")
_handles = count(1)


class HostedResult:
    """A reply, read as chdb's query result."""

    def __init__(self, reply: Reply) -> None:
        self._reply = reply

    def bytes(self) -> bytes:
        return self._reply.body

    def rows_read(self) -> int:
        return self._reply.rows_read

    def bytes_read(self) -> int:
        return self._reply.bytes_read

    def elapsed(self) -> float:
        return self._reply.elapsed_s


class HostedConnection:
    """A trusted connection (a session of its own) in the engine host. ``query`` blocks
    and raises RuntimeError with ClickHouse's message, as chdb's own connection does."""

    def __init__(self, link: EngineLink) -> None:
        self._link, self._handle = link, next(_handles)
        self._link.checked(Request(0, "open", handle=self._handle))

    def query(self, sql: str | bytes, format: str = "CSV",
              params: dict[str, Any] | None = None) -> HostedResult:
        text = sql.decode() if isinstance(sql, bytes) else sql
        input_path, data = "", b""
        infile = _INFILE.search(text)
        if infile is not None:
            input_path = infile.group(1).replace("\\'", "'").replace("\\\\", "\\")
            with open(input_path, "rb") as handle:
                data = handle.read()
        reply = self._link.call(Request(
            0, "query", text, format, self._handle,
            params={name: str(value) for name, value in (params or {}).items()},
            input_path=input_path, input=data))
        if reply.error_code:
            raise RuntimeError(reply.error_message)
        return HostedResult(reply)

    def send_query(self, sql: str | bytes, format: str = "CSV",
                   params: dict[str, Any] | None = None) -> Iterator[HostedResult]:
        return iter([self.query(sql, format, params)])

    def close(self) -> None:
        self._link.call(Request(0, "close", handle=self._handle))


class _HostedBackend(ChdbBackend):
    def __init__(self, link: EngineLink) -> None:  # not super's: it would open chdb here
        self.connection_string = "ept-engine-host"
        self.show_clickhouse_errors = True
        self._handle = _EngineHandle(HostedConnection(link))
        self._closed = False
        self._streams: weakref.WeakSet[Any] = weakref.WeakSet()
        self._release = weakref.finalize(self, _close, self._handle)


def _close(handle: _EngineHandle, blocking: bool = False) -> None:
    with contextlib.suppress(Exception):  # the host is gone: nothing left to close
        handle.conn.close()


class _HostedClient(ChdbClient):
    def __init__(self, link: EngineLink, database: str | None,
                 settings: dict[str, Any] | None) -> None:
        self.path = "ept-engine-host"
        self._rename_response_column = None
        self._transform = NativeTransform()
        self._client_settings: dict[str, str] = {}
        self._backend = _HostedBackend(link)
        self._initial_settings = settings
        super(ChdbClient, self).__init__(
            database=database, uri="chdb://ept-engine-host", query_limit=0,
            query_retries=0, server_host_name=None, tz_source=None, tz_mode=None,
            show_clickhouse_errors=None, autoconnect=True)
        for key, value in (settings or {}).items():
            self.set_client_setting(key, value)


def hosted_client(link: EngineLink, database: str | None = None,
                  settings: dict[str, Any] | None = None) -> Client:
    """A clickhouse-connect client whose every statement runs in the engine host behind
    ``link``, on a session of its own with ``settings``."""
    return _HostedClient(link, database, settings)
