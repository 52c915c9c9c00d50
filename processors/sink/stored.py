"""Step: skip what is already stored — the rows a partition's previous owner inserted but
did not get to commit (a sink killed between insert and commit; docs/exactly-once.md)."""

from __future__ import annotations

import logging
import threading
import time

from clickhouse_connect.driver.client import Client
from confluent_kafka import Message, TopicPartition

from ept.processors.sink import backoff
from ept.processors.sink.counters import SinkCounters
from ept.processors.sink.runs import PartitionRun
from ept.processors.storage import raw_events

log = logging.getLogger("ept.sink")


class SkipStored:
    """Knows, per assigned partition, the offsets at or after its committed one that are
    already rows in ``events``, and takes them out of runs read from it.

    :meth:`assigned` blocks until ClickHouse tells (guessing would duplicate or lose
    rows); :meth:`submit` and :meth:`revoked` never block. Nothing here raises.
    """

    def __init__(self, client: Client, client_lock: threading.Lock,
                 counters: SinkCounters) -> None:
        self._client = client
        self._client_lock = client_lock
        self._counters = counters
        self._stored: dict[tuple[str, int], set[int]] = {}

    def assigned(self, committed: list[TopicPartition]) -> None:
        """Read which offsets of the newly assigned partitions are stored, from each
        one's ``committed`` offset on (from its start when it has none). Retries with
        backoff until ClickHouse answers, sleeping: it runs in the rebalance callback,
        inside a consume."""
        starts = {(p.topic, p.partition): max(p.offset, 0) for p in committed}

        def failed(error: Exception, delay: float) -> bool:
            log.warning("sink: cannot read stored offsets (%s); retrying", error)
            return True

        stored = backoff.retry(lambda: self._stored_offsets(starts), failed=failed,
                               wait=time.sleep)
        self._stored.update(stored or {})

    def revoked(self, partitions: list[TopicPartition]) -> None:
        for partition in partitions:
            self._stored.pop((partition.topic, partition.partition), None)

    def submit(self, run: PartitionRun) -> list[Message]:
        """``run``'s messages not stored yet (each stored one is skipped once)."""
        stored = self._stored.get(run.source)
        if not stored:
            return run.messages
        kept = []
        for message in run.messages:
            offset = message.offset()
            if offset in stored:
                stored.discard(offset)
                self._counters.skipped_already_stored += 1
            else:
                kept.append(message)
        return kept

    def _stored_offsets(self, starts: dict[tuple[str, int], int]
                        ) -> dict[tuple[str, int], set[int]]:
        with self._client_lock:
            return raw_events.stored_offsets(self._client, starts)
