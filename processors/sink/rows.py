"""Batches of validated events, framed for ClickHouse's ``Avro`` input format.

The sink has already decoded and checked every event, but ClickHouse parses the rows
itself, in C++, from the events' own Avro bodies: each event type's rows become one Avro
object container whose record schema is the event's current schema with the source
columns in front (``event``, ``source_topic``, ``source_partition``, ``source_offset``)
and two fields named after their ``events`` columns (``event_time`` -> ``timestamp``,
``duration_ms`` -> ``duration``). Avro binary carries no field names, so a row is just
those four values' encoding followed by the event's body, untouched. Columns an event
does not have take their defaults ('' / 0 / false / NULL).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

from schemas.compiled import zigzag
from schemas.registry import current_schemas

_RENAMED = {"event_time": "timestamp", "duration_ms": "duration"}
_SOURCE_FIELDS = [{"name": "event", "type": "string"}, {"name": "source_topic", "type": "string"},
                  {"name": "source_partition", "type": "int"},
                  {"name": "source_offset", "type": "long"}]
_SYNC_MARKER = os.urandom(16)


@dataclass(frozen=True)
class RowFormat:
    """The Avro container header and column list of one event type's rows."""

    columns: list[str]
    header: bytes


def _string(text: str) -> bytes:
    data = text.encode()
    return zigzag(len(data)) + data


@cache
def row_format(event: str) -> RowFormat:
    definition = current_schemas()[event].definition
    fields = _SOURCE_FIELDS + [{**field, "name": _RENAMED.get(field["name"], field["name"])}
                               for field in definition["fields"]]
    schema = json.dumps({"type": "record", "name": f"{event}_row", "fields": fields}).encode()
    metadata = (zigzag(2) + _string("avro.schema") + zigzag(len(schema)) + schema
                + _string("avro.codec") + _string("null") + zigzag(0))
    return RowFormat([field["name"] for field in fields],
                     b"Obj\x01" + metadata + _SYNC_MARKER)


@dataclass(frozen=True)
class Insert:
    """One ``INSERT INTO events (columns) FORMAT Avro`` of a batch."""

    columns: list[str]
    data: bytes
    deduplication_token: str


class Batch:
    """Rows accumulated for one flush, and the offsets to commit once they are stored.

    Every consumed message moves its partition's entry in ``next_offsets`` on, stored or
    not (already stored, dead-lettered). Deduplication tokens are derived from the
    exact offset ranges of the rows, so retrying a batch repeats the same tokens.
    """

    def __init__(self) -> None:
        self.next_offsets: dict[tuple[str, int], int] = {}
        self._rows: dict[str, list[bytes]] = {}
        # (event, topic, partition) -> row prefix, first offset and last offset.
        self._prefixes: dict[tuple[str, str, int], bytes] = {}
        self._first: dict[tuple[str, str, int], int] = {}
        self._last: dict[tuple[str, str, int], int] = {}

    def __len__(self) -> int:
        return sum(len(rows) for rows in self._rows.values())

    def add(self, event: str, body: bytes, topic: str, partition: int, offset: int) -> None:
        """Add a validated event's current-schema Avro ``body`` read from ``offset``.
        Offsets of one partition must be added in increasing order."""
        key = (event, topic, partition)
        prefix = self._prefixes.get(key)
        if prefix is None:
            prefix = self._prefixes[key] = _string(event) + _string(topic) + zigzag(partition)
            self._first[key] = offset
            self._rows.setdefault(event, [])
        self._rows[event].append(prefix + zigzag(offset) + body)
        self._last[key] = offset

    def inserts(self) -> Iterator[Insert]:
        """One insert per event type with rows, each a complete Avro container."""
        for event, rows in self._rows.items():
            body = b"".join(rows)
            spans = ",".join(f"{t}:{p}:{first}-{self._last[(e, t, p)]}"
                             for (e, t, p), first in sorted(self._first.items()) if e == event)
            form = row_format(event)
            yield Insert(form.columns,
                         form.header + zigzag(len(rows)) + zigzag(len(body)) + body
                         + _SYNC_MARKER,
                         hashlib.sha256(f"{event}|{spans}".encode()).hexdigest())
