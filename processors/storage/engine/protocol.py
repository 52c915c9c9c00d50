"""The records that cross between ept's processes and the engine host, and their framing.

One frame is a 4-byte big-endian header length, a JSON header (the record's fields) and
the record's bytes (a query's input, a reply's body) raw after it. Nothing is pickled:
the host runs analysts' SQL, so what it sends back is data, never code.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

_LENGTH = struct.Struct(">I")


@dataclass(frozen=True)
class Analyst:
    """Who runs an analyst query: ``user`` (authenticated by the endpoint) and
    ``session`` (the client's ``session_id``; empty: the query is a session alone)."""

    user: str
    session: str = ""


@dataclass(frozen=True)
class Request:
    """One thing for the host to do.

    ``op``: ``open`` / ``close`` a trusted connection ``handle`` (ept's own reads and
    writes), ``query`` on a trusted handle (``input`` replaces the file ``input_path``
    the SQL reads with ``FROM INFILE``), ``analyst`` (a bounded read-only query, for
    ``analyst``, under the client's ``query_id``), ``cancel`` (the analyst query
    ``query_id`` of ``analyst``), ``status`` (whether analysts' SQL is confined).
    """

    id: int
    op: str
    sql: str = ""
    format: str = "TabSeparated"
    handle: int = 0
    params: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    database: str = ""
    query_id: str = ""
    analyst: Analyst | None = None
    input_path: str = ""
    input: bytes = b""


@dataclass(frozen=True)
class Reply:
    """The answer to request ``id``: ``body`` in ``format`` and what the query read, or
    ClickHouse's error (``error_code`` non-zero, ``error_name``, ``error_message``)."""

    id: int
    body: bytes = b""
    format: str = ""
    rows_read: int = 0
    bytes_read: int = 0
    elapsed_s: float = 0.0
    error_code: int = 0
    error_name: str = ""
    error_message: str = ""


def encode(record: Request | Reply) -> bytes:
    """The frame for ``record``."""
    fields = asdict(record)
    payload = fields.pop("input" if isinstance(record, Request) else "body")
    header = json.dumps(fields, separators=(",", ":")).encode()
    return _LENGTH.pack(len(header)) + header + payload


def decode_request(frame: bytes) -> Request:
    """The Request in ``frame``. Raises ValueError for a malformed one."""
    fields, payload = _split(frame)
    analyst = fields.pop("analyst", None)
    try:
        return Request(**fields, input=payload,
                       analyst=Analyst(**analyst) if analyst is not None else None)
    except TypeError as exc:
        raise ValueError(f"malformed engine request: {exc}") from None


def decode_reply(frame: bytes) -> Reply:
    """The Reply in ``frame``. Raises ValueError for a malformed one."""
    fields, payload = _split(frame)
    try:
        return Reply(**fields, body=payload)
    except TypeError as exc:
        raise ValueError(f"malformed engine reply: {exc}") from None


def _split(frame: bytes) -> tuple[dict[str, Any], bytes]:
    try:
        (length,) = _LENGTH.unpack_from(frame)
        fields = json.loads(frame[_LENGTH.size:_LENGTH.size + length])
    except (struct.error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"malformed engine frame: {exc}") from None
    if not isinstance(fields, dict):
        raise ValueError("malformed engine frame: the header is not an object")
    return fields, bytes(frame[_LENGTH.size + length:])
