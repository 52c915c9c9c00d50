"""Columnar batches of decoded events, in the column order of the ``events`` table."""

from __future__ import annotations

import hashlib
from typing import Any

COLUMNS: tuple[str, ...] = (
    "event_id", "event", "timestamp", "service", "environment", "sdk_version", "user_id",
    "account_id", "render_id", "template_id", "render_type", "reason", "error_message",
    "duration", "retry_attempt", "threshold_ms", "slowness_factor", "width", "height",
    "endpoint", "method", "status_code", "request_id", "rate_limited", "retry_after_s",
    "source_topic", "source_partition", "source_offset",
)
# Columns that are not Nullable in ClickHouse, and what an event without them stores.
_DEFAULTS: dict[str, Any] = {
    "render_id": "", "template_id": "", "render_type": "", "reason": "", "error_message": "",
    "duration": 0.0, "retry_attempt": 0,
    "endpoint": "", "method": "", "request_id": "", "rate_limited": False,
}
# (record field, default) for the columns taken from the record, in order.
_FROM_RECORD: tuple[tuple[str, Any], ...] = tuple(
    ("duration_ms" if column == "duration" else column, _DEFAULTS.get(column))
    for column in COLUMNS[3:25]
)


class Batch:
    """Rows accumulated for one insert, with the source offsets they came from.

    The deduplication token is derived from the exact offset ranges, so retrying the
    same batch is recognised by ClickHouse as the same insert.
    """

    def __init__(self) -> None:
        self.columns: list[list[Any]] = [[] for _ in COLUMNS]
        self.ranges: dict[tuple[str, int], tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self.columns[0])

    def add(self, event: str, record: dict[str, Any], topic: str, partition: int,
            offset: int) -> None:
        columns = self.columns
        columns[0].append(record["event_id"])
        columns[1].append(event)
        columns[2].append(record["event_time"])
        for index, (name, default) in enumerate(_FROM_RECORD, start=3):
            value = record.get(name)
            columns[index].append(default if value is None else value)
        columns[25].append(topic)
        columns[26].append(partition)
        columns[27].append(offset)
        first, _ = self.ranges.get((topic, partition), (offset, offset))
        self.ranges[(topic, partition)] = (first, offset)

    def deduplication_token(self) -> str:
        spans = ",".join(f"{t}:{p}:{a}-{b}" for (t, p), (a, b) in sorted(self.ranges.items()))
        return hashlib.sha256(spans.encode()).hexdigest()
