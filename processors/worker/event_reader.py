"""The worker's event topics read in bulk with confluent-kafka, off Faust's per-event path.

Faust's stream machinery costs tens of microseconds per message; librdkafka's batch
``consume()`` hands over thousands of messages per call. The reader is a consumer of its
own group (``{prefix}worker-events``: Faust's group speaks Faust's assignor, which a
librdkafka consumer cannot join), so the event partitions are spread over the worker
processes by that group, and the signals partitions by Faust's.

Contracts:

* :meth:`EventReader.consume` blocks up to its timeout on the broker (call it in a
  thread); the rebalance callbacks run inside it, in that thread. A revocation commits
  (synchronously) what :meth:`commit` was given for the revoked partitions before the
  partitions go: nothing is read by the next owner that was counted and committed here,
  and nothing committed that was not acknowledged.
* Assignments and revocations are queued and taken by the caller's own thread through
  :meth:`changes`, in order, before it handles the messages of the batch they came with.
* Offsets are committed only through :meth:`commit`, which the caller calls once the
  signals of the messages before them are acknowledged (the consumer never commits on
  its own: ``enable.auto.commit`` and ``enable.auto.offset.store`` are off).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from ept.core.kafka import ConsumerRole, consumer_config
from ept.core.settings import Settings

log = logging.getLogger("ept.worker")

Partition = tuple[str, int]
"""An event topic partition: (topic, partition)."""

START_TIMEOUT_S = 10.0  # all it takes to ask the broker where reading starts
START_RETRY_S = 2.0  # between such questions while the broker cannot tell


def reader_group(settings: Settings) -> str:
    """The consumer group of the worker's event readers."""
    return f"{settings.topic_prefix}worker-events"


@dataclass(frozen=True, slots=True)
class Change:
    """Partitions assigned to (``assigned``) or revoked from this reader."""

    assigned: bool
    partitions: frozenset[Partition]


class EventReader:
    """One worker process's consumer of the event ``topics`` (see the module docstring)."""

    def __init__(self, settings: Settings, topics: list[str]) -> None:
        # Like the sink's: event topics, committed by hand, large fetches.
        self._consumer = Consumer(consumer_config(
            settings, ConsumerRole.WORKER_EVENTS, reader_group(settings),
            **{"session.timeout.ms": int(settings.worker_session_timeout_s * 1000),
               "logger": logging.getLogger("ept.librdkafka")}))
        self._topics = topics
        self._lock = threading.Lock()  # guards the fields below across the two threads
        self._changes: list[Change] = []
        self._assignment: set[Partition] = set()
        self._acked: dict[Partition, int] = {}  # next offset acknowledged, to commit
        self._started: dict[Partition, int] = {}  # committed offset when assigned
        self._unstarted: set[Partition] = set()  # assigned, that offset not known yet
        self._next_start_retry = 0.0
        self._subscribed = False

    # -- the consuming thread -----------------------------------------------------------

    def consume(self, count: int, timeout_s: float) -> list[Message]:
        """Up to ``count`` messages, waiting up to ``timeout_s`` for the first ones.
        Errors other than a partition's end are logged and left out. Blocks."""
        if not self._subscribed:
            self._consumer.subscribe(self._topics, on_assign=self._on_assign,
                                     on_revoke=self._on_revoke, on_lost=self._on_revoke)
            self._subscribed = True
        self._learn_missing_starts()
        messages = self._consumer.consume(count, timeout=timeout_s)
        if any(message.error() is not None for message in messages):
            for message in messages:
                error = message.error()
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    log.warning("event reader: %s", error)
            messages = [message for message in messages if message.error() is None]
        return messages

    def close(self) -> None:
        """Commit what was acknowledged, leave the group. Blocks on the broker."""
        if self._subscribed:
            self._commit_sync(None)
        self._consumer.close()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assigned = frozenset((tp.topic, tp.partition) for tp in partitions)
        started = self._read_starts(assigned)
        with self._lock:
            self._started.update(started)
            self._unstarted |= assigned - started.keys()
            self._next_start_retry = time.monotonic() + START_RETRY_S
            self._assignment |= assigned
            self._changes.append(Change(True, assigned))

    def _read_starts(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        """Where reading starts on each of ``partitions``: the committed offset, else the
        log start (a partition nothing is read from has been read to there: its high-water
        mark may equal it, caught up with nothing to read). Those the broker could not
        tell are left out, and logged. Blocks on the broker."""
        deadline = time.monotonic() + START_TIMEOUT_S
        wanted = [TopicPartition(topic, partition) for topic, partition in partitions]
        try:
            committed = self._consumer.committed(wanted, timeout=START_TIMEOUT_S)
        except Exception as exc:  # the broker away: asked again before the next fetch
            log.warning("event reader: committed offsets not read (%s)", exc)
            return {}
        started = {}
        for tp in committed:
            partition = (tp.topic, tp.partition)
            if tp.error is not None:
                log.warning("event reader: %s[%d] committed offset not read (%s)",
                            *partition, tp.error)
            elif tp.offset == OFFSET_INVALID or tp.offset < 0:  # nothing committed
                try:
                    started[partition] = self._consumer.get_watermark_offsets(
                        tp, timeout=max(0.1, deadline - time.monotonic()))[0]
                except Exception as exc:
                    log.warning("event reader: %s[%d] log start not read (%s)", *partition,
                                exc)
            else:
                started[partition] = tp.offset
        return started

    def _learn_missing_starts(self) -> None:
        """Ask again where reading started on the partitions the broker could not tell
        when they were assigned (each :data:`START_RETRY_S` at most): until it is known,
        such a partition with nothing new to read would never count as caught up, and
        the event time of its family would stand. Blocks on the broker."""
        with self._lock:
            unstarted = set(self._unstarted)
        if not unstarted or time.monotonic() < self._next_start_retry:
            return
        started = self._read_starts(unstarted)
        with self._lock:
            self._started.update(started)
            self._unstarted -= started.keys()
            if self._unstarted:
                self._next_start_retry = time.monotonic() + START_RETRY_S
            else:
                log.info("event reader: where reading started is known again")

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = frozenset((tp.topic, tp.partition) for tp in partitions)
        self._commit_sync(revoked)
        with self._lock:
            self._assignment -= revoked
            self._unstarted -= revoked
            for partition in revoked:
                self._acked.pop(partition, None)
                self._started.pop(partition, None)
            self._changes.append(Change(False, revoked))

    def _commit_sync(self, only: Iterable[Partition] | None) -> None:
        with self._lock:
            wanted = self._acked if only is None else {
                p: self._acked[p] for p in only if p in self._acked}
            offsets = [TopicPartition(topic, partition, offset)
                       for (topic, partition), offset in wanted.items()]
        if not offsets:
            return
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except Exception as exc:  # read again by the next owner: applied once by evaluate
            log.warning("event reader: offsets not committed (%s)", exc)

    # -- the caller's thread ------------------------------------------------------------

    def changes(self) -> list[Change]:
        """The assignments and revocations since the last call, in order. Never blocks."""
        with self._lock:
            changes, self._changes = self._changes, []
        return changes

    def assignment(self) -> frozenset[Partition]:
        with self._lock:
            return frozenset(self._assignment)

    def commit(self, next_offsets: dict[Partition, int]) -> None:
        """Commit ``next_offsets`` (the offset after the last message handled, per
        partition), whose signals are acknowledged; asynchronously. Never blocks."""
        with self._lock:
            offsets = [TopicPartition(topic, partition, offset)
                       for (topic, partition), offset in next_offsets.items()
                       if (topic, partition) in self._assignment]
            for tp in offsets:
                self._acked[(tp.topic, tp.partition)] = tp.offset
        if offsets:
            try:
                self._consumer.commit(offsets=offsets, asynchronous=True)
            except Exception as exc:  # committed later, or read again after a rebalance
                log.warning("event reader: offsets not committed (%s)", exc)

    def highwater(self, partition: Partition) -> int | None:
        """The partition's high-water mark as of the last fetch (None: not fetched yet,
        or not assigned). Never blocks; raises nothing."""
        with self._lock:
            # librdkafka keeps answering with a revoked partition's last mark, which no
            # fetch updates anymore: read up to it, the partition would stay caught up,
            # while its new owner has not yet read what came since.
            if partition not in self._assignment:
                return None
        try:
            _, high = self._consumer.get_watermark_offsets(TopicPartition(*partition),
                                                            cached=True)
        except KafkaException:  # revoked between the copy of the assignment and now
            return None
        return high if high >= 0 else None

    def started_at(self, partition: Partition) -> int | None:
        """The offset reading started from when ``partition`` was assigned: the committed
        one, else the log start (None: the broker could not tell yet; asked again before
        each fetch). Never blocks."""
        with self._lock:
            return self._started.get(partition)

    def lag(self) -> int:
        """Messages of the assignment not yet committed, as of the last fetches."""
        total = 0
        with self._lock:
            positions = {p: self._acked.get(p, self._started.get(p, 0))
                         for p in self._assignment}
        for partition, position in positions.items():
            high = self.highwater(partition)
            if high is not None:
                total += max(0, high - position)
        return total
