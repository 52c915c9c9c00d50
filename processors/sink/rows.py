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

from ept.processors.storage.raw_events import COLUMN_OF_FIELD
from ept.schemas.compiled import zigzag
from ept.schemas.registry import current_schemas

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
    fields = _SOURCE_FIELDS + [{**field, "name": COLUMN_OF_FIELD.get(field["name"], field["name"])}
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


class PartitionRows:
    """The rows of one batch read from one partition, all of one event type: one block
    of that event's container."""

    __slots__ = ("event", "first", "last", "prefix", "rows")

    def __init__(self, event: str, topic: str, partition: int) -> None:
        self.event = event
        self.prefix = _string(event) + _string(topic) + zigzag(partition)
        self.first = self.last = -1
        self.rows: list[bytes] = []  # three pieces per row: prefix, offset, body

    def add(self, offset: int, body: bytes) -> None:
        """Add a validated event's current-schema Avro ``body`` read from ``offset``;
        offsets must increase."""
        if not self.rows:
            self.first = offset
        self.rows += (self.prefix, zigzag(offset), body)
        self.last = offset

    def __len__(self) -> int:
        return len(self.rows) // 3


class Batch:
    """Rows accumulated for one flush, and the offsets to commit once they are stored.
    Each event type's rows are one insert.

    Every consumed message moves its partition's entry in ``next_offsets`` on, stored or
    not (already stored, dead-lettered). Deduplication tokens are derived from the
    exact offset ranges of the rows, so retrying a batch repeats the same tokens.
    """

    def __init__(self) -> None:
        self.next_offsets: dict[tuple[str, int], int] = {}
        self._partitions: dict[tuple[str, int], PartitionRows] = {}

    def __len__(self) -> int:
        return sum(len(rows) for rows in self._partitions.values())

    def largest_insert(self) -> int:
        """The rows of the event type with the most rows: the largest insert so far."""
        rows_by_event: dict[str, int] = {}
        for rows in self._partitions.values():
            rows_by_event[rows.event] = rows_by_event.get(rows.event, 0) + len(rows)
        return max(rows_by_event.values(), default=0)

    def rows_of(self, source: tuple[str, int], event: str) -> PartitionRows:
        """The rows read from the ``source`` (topic, partition), whose events are all
        ``event``s."""
        rows = self._partitions.get(source)
        if rows is None:
            rows = self._partitions[source] = PartitionRows(event, *source)
        return rows

    def inserts(self) -> Iterator[Insert]:
        """One insert per event type with rows: an Avro container of one block per
        partition."""
        by_event: dict[str, list[tuple[tuple[str, int], PartitionRows]]] = {}
        for source, rows in sorted(self._partitions.items(), key=lambda item: item[0]):
            if rows.rows:
                by_event.setdefault(rows.event, []).append((source, rows))
        for event, partitions in by_event.items():
            blocks: list[bytes] = []
            for _, rows in partitions:
                body = b"".join(rows.rows)
                blocks += (zigzag(len(rows)), zigzag(len(body)), body, _SYNC_MARKER)
            spans = ",".join(f"{topic}:{partition}:{rows.first}-{rows.last}"
                             for (topic, partition), rows in partitions)
            form = row_format(event)
            yield Insert(form.columns, form.header + b"".join(blocks),
                         hashlib.sha256(f"{event}|{spans}".encode()).hexdigest())
