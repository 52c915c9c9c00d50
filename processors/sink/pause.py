"""Holding the consumer still while ClickHouse is unavailable, without leaving the group.

The wait polls the consumer (it must, to stay in the group), and a poll serves the
rebalance callbacks: partitions can be revoked and assigned in the middle of a hold. The
sink's assignment is eager (``producers/core/kafka.py``): a rebalance revokes every
partition, and the sink forgets what it has not stored (its next owner, maybe this sink
again, reads it from the committed offsets). So a revoked partition is never sought back
to where it stood, and a partition assigned during the hold is held too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from confluent_kafka import Consumer, Message, TopicPartition

from ept.processors.sink.runs import partition_runs


class Pause:
    """The assigned partitions of ``consumer``, held still by :meth:`hold` and let go by
    :meth:`release`, each where its consumption is to go on: where it stood when held,
    where it was assigned, or the first message the wait fetched from it.

    One per consumer. The rebalance callbacks tell it what they did (:meth:`assigned`,
    :meth:`revoked`); only partitions still assigned are resumed or sought. Raises what
    the consumer raises.
    """

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer
        # While holding: each held partition's offset to seek to on release (negative:
        # none; librdkafka resumes where it paused).
        self._held: dict[tuple[str, int], int] | None = None

    @contextmanager
    def outage(self) -> Iterator[None]:
        """On exit, release what was held within (not when it was held already on entry:
        an outage met in a rebalance callback, inside another one's wait)."""
        nested = self._held is not None
        try:
            yield
        finally:
            if not nested:
                self.release()

    def hold(self) -> None:
        """Pause every assigned partition where consumption stands (at once if holding)."""
        if self._held is None:
            positions = self._consumer.position(self._consumer.assignment())
            self._consumer.pause(positions)
            self._held = {(p.topic, p.partition): p.offset for p in positions}

    def assigned(self, partitions: list[TopicPartition]) -> None:
        """Call once ``partitions`` are assigned, at their offsets: while holding they are
        paused at once, so that the wait fetches nothing from them."""
        if self._held is not None and partitions:
            self._consumer.pause(partitions)
            self._held.update({(p.topic, p.partition): p.offset for p in partitions})

    def revoked(self, partitions: list[TopicPartition]) -> None:
        """Call when ``partitions`` are about to be revoked (from ``on_revoke``: still
        assigned). The held ones are let go at once, not sought: whoever is assigned them
        next, maybe this consumer, starts from the committed offsets. They are resumed
        now, as librdkafka would keep them paused through a later assignment."""
        if self._held is not None:
            let_go = [partition for partition in partitions
                      if self._held.pop((partition.topic, partition.partition), None)
                      is not None]
            if let_go:
                self._consumer.resume(let_go)

    def wait(self, seconds: float, stopping: Callable[[], bool]) -> None:
        """Spend ``seconds`` (less once ``stopping()``) polling the consumer, so that it
        stays in its group; holds first. Blocks. Held partitions fetch nothing; whatever
        the poll does return (a partition not held) is not dropped: its partition is held
        from its first message returned, and sought back there on release."""
        self.hold()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not stopping():
            self._hold_back(self._consumer.consume(100, timeout=0.2))

    def release(self) -> None:
        """Resume the held partitions still assigned, each at its offset to go on from
        (seeking an unassigned partition raises). Nothing when not holding."""
        if self._held is None:
            return
        held, self._held = self._held, None
        assigned = {(p.topic, p.partition) for p in self._consumer.assignment()}
        resumed = [TopicPartition(topic, partition, offset)
                   for (topic, partition), offset in held.items()
                   if (topic, partition) in assigned]
        if not resumed:
            return
        self._consumer.resume(resumed)
        for position in resumed:
            if position.offset >= 0:
                self._consumer.seek(position)

    def _hold_back(self, fetched: list[Message]) -> None:
        """Hold each partition ``fetched`` comes from, to go on from its first message
        (unless it has an offset to go on from already)."""
        assert self._held is not None
        for run in partition_runs(fetched):
            if self._held.get(run.source, -1) < 0:
                first = run.messages[0].offset() or 0
                self._consumer.pause([TopicPartition(run.topic, run.partition)])
                self._held[run.source] = first
