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


class _Run:
    """The rows of one batch read from one partition: one block of its event's container."""

    __slots__ = ("event", "first", "last", "prefix", "rows")

    def __init__(self, event: str, prefix: bytes, first: int) -> None:
        self.event = event
        self.prefix = prefix
        self.first = first
        self.last = first
        self.rows: list[bytes] = []


class Batch:
    """Rows accumulated for one flush, and the offsets to commit once they are stored.

    Every consumed message moves its partition's entry in ``next_offsets`` on, stored or
    not (already stored, dead-lettered). Deduplication tokens are derived from the
    exact offset ranges of the rows, so retrying a batch repeats the same tokens.
    """

    def __init__(self) -> None:
        self.next_offsets: dict[tuple[str, int], int] = {}
        self._runs: dict[tuple[str, int], _Run] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, event: str, body: bytes, source: tuple[str, int], offset: int) -> None:
        """Add a validated event's current-schema Avro ``body`` read from ``offset`` of
        the ``source`` (topic, partition), whose events all are ``event``s. Offsets of
        one partition must be added in increasing order."""
        run = self._runs.get(source)
        if run is None:
            topic, partition = source
            run = self._runs[source] = _Run(
                event, _string(event) + _string(topic) + zigzag(partition), offset)
        run.rows += (run.prefix, zigzag(offset), body)
        run.last = offset
        self._count += 1

    def inserts(self) -> Iterator[Insert]:
        """One insert per event type with rows: an Avro container of one block per
        partition."""
        by_event: dict[str, list[tuple[tuple[str, int], _Run]]] = {}
        for source, run in sorted(self._runs.items(), key=lambda item: item[0]):
            by_event.setdefault(run.event, []).append((source, run))
        for event, runs in by_event.items():
            blocks = []
            for _, run in runs:
                body = b"".join(run.rows)
                blocks += (zigzag(len(run.rows) // 3), zigzag(len(body)), body, _SYNC_MARKER)
            spans = ",".join(f"{topic}:{partition}:{run.first}-{run.last}"
                             for (topic, partition), run in runs)
            form = row_format(event)
            yield Insert(form.columns, form.header + b"".join(blocks),
                         hashlib.sha256(f"{event}|{spans}".encode()).hexdigest())
