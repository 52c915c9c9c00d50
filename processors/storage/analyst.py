"""Analysts' own SQL on the embedded engine: read-only, bounded sessions beside the sink's.

Each query gets a fresh engine connection on the sink's data directory (about 4 ms here),
so nothing of one analyst's session leaks into another's. The session gets the limits of
``EPT_SQL_*`` first, then ``readonly = 1``: from there ClickHouse itself refuses writes,
DDL, table functions that read files or URLs, and any change of a setting (the limits
included), each with its own error. The sink's writer connection is never touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ept.core.settings import Settings
from ept.processors.storage.connection import engine_connection

DEFAULT_FORMAT = "TabSeparated"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FORMAT_CLAUSE = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)
_ERROR = re.compile(r"Code: (\d+)\. DB::Exception: (?:Code: \d+\. DB::Exception: )?(.*?)"
                    r"(?: \(version [^)]*\))?\.? \((\w+)\)\s*$", re.DOTALL)


class ClickHouseError(Exception):
    """The engine refused a query; ``str()`` is ClickHouse's own message."""

    def __init__(self, code: int, name: str, message: str) -> None:
        self.code, self.name = code, name
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

    @classmethod
    def of(cls, settings: Settings) -> SqlLimits:
        return cls(settings.sql_max_execution_s, settings.sql_max_result_rows,
                   settings.sql_max_result_bytes, settings.sql_max_memory_bytes)

    def session_settings(self) -> dict[str, int | str]:
        return {"max_execution_time": self.max_execution_s,
                "max_result_rows": self.max_result_rows,
                "max_result_bytes": self.max_result_bytes,
                "result_overflow_mode": "throw",
                "max_memory_usage": self.max_memory_bytes}


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
    """Read-only, bounded sessions on the embedded engine at ``path``.

    ``run`` blocks for the query's duration (at most the time limit) and raises
    ClickHouseError for anything the engine refuses. Safe to call from many threads: each
    call has its own connection.
    """

    def __init__(self, path: Path, limits: SqlLimits) -> None:
        self._path = path
        self._limits = limits

    def run(self, sql: str, *, default_format: str | None = None,
            database: str | None = None, settings: dict[str, str] | None = None,
            params: dict[str, str] | None = None) -> SqlResult:
        """``sql`` run as the analyst: ``settings`` are applied after ``readonly = 1`` (so
        ClickHouse refuses any that would change a value), ``params`` fill ``{name:Type}``
        placeholders."""
        fmt = output_format(sql, default_format)
        try:
            connection = engine_connection(self._path)
        except Exception as exc:  # the engine's own error, passed on
            raise ClickHouseError.from_engine(exc) from None
        try:
            if database:
                self._execute(connection, f"USE {_identifier(database)}")
            for name, value in self._limits.session_settings().items():
                self._execute(connection, f"SET {setting_literal(name, str(value))}")
            self._execute(connection, "SET readonly = 1")
            for name, value in (settings or {}).items():
                self._execute(connection, f"SET {setting_literal(name, value)}")
            try:
                result = connection.query(sql, fmt, params=params or None)
            except Exception as exc:  # the engine's own error, passed on
                raise ClickHouseError.from_engine(exc) from None
            return SqlResult(result.bytes(), fmt, int(result.rows_read()),
                             int(result.bytes_read()), float(result.elapsed()))
        finally:
            connection.close()

    @staticmethod
    def _execute(connection: Any, statement: str) -> None:
        try:
            connection.query(statement, DEFAULT_FORMAT)
        except Exception as exc:  # the engine's own error, passed on
            raise ClickHouseError.from_engine(exc) from None


def _identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"
