"""Step: commit — a stored batch's offsets, once Kafka has its dead letters."""

from __future__ import annotations

import logging
from collections.abc import Callable

from confluent_kafka import Consumer, TopicPartition

from ept.processors.sink.counters import SinkCounters
from ept.processors.sink.dlq import DeadLetters
from ept.processors.sink.rows import Batch

log = logging.getLogger("ept.sink")


class Commit:
    """Commits the offsets of batches ClickHouse has acknowledged, in the order given.

    :meth:`submit` blocks on the broker (dead letters' acknowledgement, a synchronous
    commit); it raises only what ``on_batch`` raises.
    """

    def __init__(self, consumer: Consumer, dead_letters: DeadLetters, counters: SinkCounters,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self._consumer = consumer
        self._dead_letters = dead_letters
        self._counters = counters
        self._on_batch = on_batch

    def submit(self, batch: Batch) -> bool:
        """Commit stored ``batch``'s offsets once its dead letters are acknowledged. False
        when they are not (nothing committed: the messages are read again after a
        restart or rebalance, the stored rows then skipped). A commit refused because the
        partitions were rebalanced away counts as done: their next owner skips the rows."""
        if not self._dead_letters.flush(30):
            log.warning("sink: dead letters not acknowledged; offsets not committed")
            return False
        offsets = [TopicPartition(t, p, o) for (t, p), o in batch.next_offsets.items()]
        if offsets:
            try:
                self._consumer.commit(offsets=offsets, asynchronous=False)
            except Exception as exc:
                log.warning("sink: commit failed (%s); the next owner skips the stored rows",
                            exc)
        self._counters.inserted += len(batch)
        self._counters.batches += 1
        if self._on_batch is not None:
            self._on_batch(len(batch))
        return True
