"""Analysts' own SQL on the embedded engine: its limits, results and errors, and the
handle ept's processes run it through.

The queries themselves run in the engine host, a process of their own that holds no
secret and is sandboxed (:mod:`~ept.processors.storage.engine.host`); each gets a fresh
engine connection there (about 4 ms), so nothing of one analyst's session leaks into
another's.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ept.core.settings import Settings
from ept.processors.storage.engine.protocol import Analyst, Request

if TYPE_CHECKING:
    from ept.processors.storage.engine.link import EngineLink

DEFAULT_FORMAT = "TabSeparated"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FORMAT_CLAUSE = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)
_ERROR = re.compile(r"Code: (\d+)\. DB::Exception: (?:Code: \d+\. DB::Exception: )?(.*?)"
                    r"(?: \(version [^)]*\))?\.? \((\w+)\)\s*$", re.DOTALL)


class ClickHouseError(Exception):
    """The engine refused a query; ``str()`` is ClickHouse's own message."""

    def __init__(self, code: int, name: str, message: str) -> None:
        self.code, self.name, self.message = code, name, message
        end = "" if message.endswith((".", "?", "!")) else "."
        super().__init__(f"Code: {code}. DB::Exception: {message}{end} ({name})")

    @classmethod
    def from_engine(cls, error: Exception) -> ClickHouseError:
        text = str(error).strip()
        match = _ERROR.search(text)
        if match is None:
            return cls(1001, "STD_EXCEPTION", text)
        name = match.group(3)
        message = re.sub(rf"\.?\s*\({name}\)$", "", match.group(2).strip())  # nested once more
        return cls(int(match.group(1)), name, message)


@dataclass(frozen=True)
class SqlLimits:
    """What one analyst query may take (``EPT_SQL_MAX_*``)."""

    max_execution_s: int
    max_result_rows: int
    max_result_bytes: int
    max_memory_bytes: int
    max_threads: int = 1

    @classmethod
    def of(cls, settings: Settings) -> SqlLimits:
        return cls(settings.sql_max_execution_s, settings.sql_max_result_rows,
                   settings.sql_max_result_bytes, settings.sql_max_memory_bytes,
                   settings.sql_max_threads)

    def session_settings(self) -> dict[str, int | str]:
        return {"max_execution_time": self.max_execution_s,
                "max_result_rows": self.max_result_rows,
                "max_result_bytes": self.max_result_bytes,
                "result_overflow_mode": "throw",
                "max_memory_usage": self.max_memory_bytes,
                "max_threads": self.max_threads}


@dataclass(frozen=True)
class SqlResult:
    """A query's output, in ``format`` (ClickHouse produced it), and what it read."""

    body: bytes
    format: str
    rows_read: int
    bytes_read: int
    elapsed_s: float


def output_format(sql: str, default_format: str | None) -> str:
    """The format ClickHouse answers ``sql`` in: its FORMAT clause, else the default."""
    match = _FORMAT_CLAUSE.search(sql)
    return match.group(1) if match else (default_format or DEFAULT_FORMAT)


def setting_literal(name: str, value: str) -> str:
    """``name = value`` for a SET statement. Raises ClickHouseError for a bad name."""
    if not _NAME.match(name):
        raise ClickHouseError(115, "UNKNOWN_SETTING", f"Unknown setting '{name}'")
    if re.fullmatch(r"-?\d+(\.\d+)?", value):
        return f"{name} = {value}"
    return f"{name} = '" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class AnalystEngine:
    """Analysts' queries, run by the engine host behind ``link`` (see
    :class:`~ept.processors.storage.engine.host.AnalystSession` for what a session may
    do). ``run`` blocks for the query's duration (at most the time limit) and raises
    ClickHouseError for anything refused. Safe to call from many threads."""

    def __init__(self, link: EngineLink) -> None:
        self._link = link

    def sandbox_error(self) -> str | None:
        """Why the host refuses analysts' SQL (it is not sandboxed), or None."""
        return self._link.sandbox_error()

    def run(self, sql: str, *, default_format: str | None = None,
            database: str | None = None, settings: dict[str, str] | None = None,
            params: dict[str, str] | None = None, query_id: str = "",
            analyst: Analyst | None = None) -> SqlResult:
        """``sql`` run as ``analyst``, under the client's ``query_id`` (a fresh one when
        empty); ``settings`` as ClickHouse's constraints would take them, ``params``
        fill ``{name:Type}`` placeholders."""
        reply = self._link.checked(Request(
            0, "analyst", sql, default_format or DEFAULT_FORMAT, params=params or {},
            settings=settings or {}, database=database or "",
            query_id=query_id or str(uuid.uuid4()), analyst=analyst or Analyst("analyst")))
        return SqlResult(reply.body, reply.format, reply.rows_read, reply.bytes_read,
                         reply.elapsed_s)

    def cancel(self, query_id: str, analyst: Analyst) -> None:
        """Stops ``analyst``'s query ``query_id`` if it still runs (a client that left)."""
        self._link.checked(Request(0, "cancel", query_id=query_id, analyst=analyst))


