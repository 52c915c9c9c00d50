"""Step: batch — the batch being filled, and when it is due for insertion.

A batch holds up to ``EPT_SINK_BATCH_ROWS`` rows of each event type (each type's rows are
one insert, so the bound is the size of an insert) and is due when one type reaches it or
``EPT_SINK_BATCH_SECONDS`` after its first message.
"""

from __future__ import annotations

import time

from ept.processors.sink.rows import Batch, PartitionRows
from ept.processors.sink.runs import PartitionRun

#: At most this many messages are consumed at once, whatever room the batch has.
MAX_CONSUME = 10_000


class Batching:
    """Fills one :class:`~ept.processors.sink.rows.Batch` at a time. Nothing here blocks
    or raises."""

    def __init__(self, rows: int, seconds: float) -> None:
        self._rows = rows
        self._seconds = seconds
        self.batch = Batch()
        self._started = time.monotonic()

    def submit(self, run: PartitionRun, event: str) -> PartitionRows:
        """The batch's rows of ``run``'s partition (``event``s), where its valid events
        go; the run's offsets count as consumed (committed with the batch, whatever
        becomes of its messages)."""
        self.batch.next_offsets[run.source] = run.next_offset
        return self.batch.rows_of(run.source, event)

    @property
    def consumed(self) -> bool:
        """The batch holds any consumed message (stored or not)."""
        return bool(self.batch.next_offsets)

    def room(self) -> int:
        """How many messages to consume next: what fits under the bound (at least one)."""
        return max(1, min(MAX_CONSUME, self._rows - self.batch.largest_insert()))

    def due(self) -> bool:
        """The batch is full or old enough. While it is empty, its age starts anew."""
        if not self.batch.next_offsets:
            self._started = time.monotonic()
            return False
        return (self.batch.largest_insert() >= self._rows
                or time.monotonic() - self._started >= self._seconds)

    def take(self) -> Batch:
        """The batch, to insert; a new one begins."""
        batch, self.batch = self.batch, Batch()
        self._started = time.monotonic()
        return batch

    def forget(self) -> None:
        """Drop the batch unstored (its partitions were revoked: their next owner reads
        its messages again from the committed offsets)."""
        self.batch = Batch()
