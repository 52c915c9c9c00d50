"""The sink loop: consume event topics, batch, insert into ClickHouse, then commit.

Exactly once, by two mechanisms that cover each other (docs/exactly-once.md):

* Every row stores its source topic, partition and offset. When a partition is
  assigned, the sink reads which offsets at or after the committed one are already in
  ``events`` and skips them — this covers a sink killed between insert and commit.
* Each insert carries a deduplication token derived from its exact offset ranges, so an
  insert retried after an ambiguous failure (timeout after the server applied it) is
  dropped by ClickHouse — this covers retries within one process.

A batch holds up to ``EPT_SINK_BATCH_ROWS`` rows of each event type (each type's rows
are one insert, so the bound is the size of an insert) and is flushed when one type
reaches it or ``EPT_SINK_BATCH_SECONDS`` after its first message. Valid events are
recognised by a compiled scan of their bytes (:mod:`schemas.scan`) and stored as they
are; anything else is decoded to find out what is wrong with it.

Events of a deleted account or user (:mod:`ept.core.deletions`) are dropped as they are
read; a deletion recorded while the sink runs is applied to the stored rows once
everything consumed before it is stored.

Inserts are pipelined: while one batch is being inserted (a background thread; the
engine parses the rows in C++ without holding the GIL), the next one is consumed,
decoded and checked. Offsets are committed in batch order, only after ClickHouse
acknowledged a batch's inserts and Kafka its dead letters. While ClickHouse is
unavailable the partitions are paused, the insert is retried with exponential backoff,
and nothing is committed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from ept.core.deletions import Deletion, DeletionView
from ept.core.kafka import ConsumerRole, ProducerRole, consumer_config, producer_config
from ept.core.settings import Settings
from ept.processors.sink.dlq import DeadLetters
from ept.processors.sink.rows import Batch
from ept.processors.storage import raw_events
from ept.processors.storage.deletion import delete_stored
from ept.schemas.codec import SINGLE_OBJECT_MAGIC, DecodeError, Decoder, current_body
from ept.schemas.registry import EVENT_NAMES, current_schemas
from ept.schemas.scan import scanner
from ept.schemas.validation import latest_event_time_ms, problems

log = logging.getLogger("ept.sink")

DEFAULT_GROUP = "ept-sink"

# How the sink fetches (bench-sink's bare consume reads the same way).


@dataclass
class SinkCounters:
    consumed: int = 0
    inserted: int = 0
    skipped_already_stored: int = 0
    dead_lettered: int = 0
    dropped_deleted: int = 0  # events of a deleted account or user, never stored
    insert_failures: int = 0
    batches: int = 0


class Sink:
    """One sink process's consumer. ``run`` blocks until ``stop`` is set.

    ``client_lock`` serialises this sink's ClickHouse calls with other users of the same
    client (the HTTP query API shares the embedded engine).
    """

    def __init__(self, settings: Settings, client: Client, *, group: str = DEFAULT_GROUP,
                 client_lock: threading.Lock | None = None,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.settings = settings
        # Deletions recorded while running: stored rows are removed once everything
        # consumed before is stored; later events of the subject are never stored.
        self._new_deletions: list[Deletion] = []
        self._deletions = DeletionView(settings, on_deleted=self._new_deletions.append)
        self.counters = SinkCounters()
        self._client = client
        self._client_lock = client_lock or threading.Lock()
        self._on_batch = on_batch
        self._decoder = Decoder(settings.schema_registry_url, raw=True)
        self._topics = [settings.topics.event(name) for name in EVENT_NAMES]
        # Per topic: its event, the single-object header of the event's current schema
        # and the compiled scan of that schema.
        self._scan_by_topic = {
            settings.topics.event(name): (name, SINGLE_OBJECT_MAGIC + schema.fingerprint,
                                   scanner(name))
            for name, schema in current_schemas().items()}
        self._consumer = Consumer(consumer_config(settings, ConsumerRole.SINK, group))
        self._dead_letters = DeadLetters(
            producer_config(settings, ProducerRole.DEAD_LETTERS), settings.topics.dlq)
        self._batch = Batch()
        self._batch_started = time.monotonic()
        self._inserter = ThreadPoolExecutor(1, thread_name_prefix="ept-sink-insert")
        self._in_flight: tuple[Batch, Future[None]] | None = None
        self._already_stored: dict[tuple[str, int], set[int]] = {}
        self._stop = threading.Event()

    # -- lifecycle ----------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Consume until ``stop`` (or :meth:`stop`) is set; then flush what can be flushed."""
        if stop is not None:
            self._stop = stop
        self._deletions.start()
        while not self._deletions.wait_loaded(1.0):  # nothing deleted may be stored again
            if self._stop.is_set():
                self._deletions.close()
                return
            log.warning("sink: waiting for %s to be read", self.settings.topics.deletions)
        self._consumer.subscribe(self._topics, on_assign=self._on_assign,
                                 on_revoke=self._on_revoke)
        try:
            while not self._stop.is_set():
                if self._new_deletions:
                    self._apply_deletions()
                room = max(1, min(10_000,
                                  self.settings.sink_batch_rows - self._batch.largest_insert()))
                messages = self._consumer.consume(room, timeout=0.1)
                self.counters.consumed += len(messages)
                self._accept(messages)
                if self._in_flight is not None and self._in_flight[1].done():
                    self._complete_in_flight()
                if self._batch_due():
                    self._hand_over()
            if self._complete_in_flight(retry=False) and self._batch.next_offsets:
                self._flush(retry=False)
        finally:
            self._inserter.shutdown(wait=True)
            self._consumer.close()
            self._dead_letters.flush(10)
            self._deletions.close()

    def stop(self) -> None:
        self._stop.set()

    # -- consuming ----------------------------------------------------------------------

    def _accept(self, messages: list[Message]) -> None:
        """Route consumed messages into the batch or to the dead letters.

        The hot loop of the sink. librdkafka hands messages out partition by partition,
        so the lookups are made once per run of one partition's messages. A body the
        compiled scan finds valid is added as it is; anything else takes
        :meth:`_accept_checked`, which decodes it and says what is wrong."""
        latest_ms = latest_event_time_ms()
        batch = self._batch
        deletions = self._deletions
        source: tuple[str, int] | None = None
        next_offset = 0
        for message in messages:
            error = message.error()
            if error is not None:
                self._consumer_error(error)
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            assert topic is not None and partition is not None and offset is not None
            if source is None or partition != source[1] or topic != source[0]:
                if source is not None:
                    batch.next_offsets[source] = next_offset
                source = (topic, partition)
                event, header, scan = self._scan_by_topic[topic]
                body_start = len(header)
                add = batch.rows_of(source, event).add
                stored = self._already_stored.get(source)
            next_offset = offset + 1
            if stored and offset in stored:
                stored.discard(offset)
                self.counters.skipped_already_stored += 1
                continue
            payload = message.value() or b""
            if deletions.may_hold(payload) and self._of_deleted_subject(payload):
                self.counters.dropped_deleted += 1
                continue
            if (scan is not None and payload.startswith(header)
                    and scan(payload, body_start, latest_ms)):
                add(offset, payload[body_start:])
            else:
                self._accept_checked(message, payload, event, add, offset)
        if source is not None:
            batch.next_offsets[source] = next_offset

    def _of_deleted_subject(self, payload: bytes) -> bool:
        try:
            return self._deletions.is_deleted(self._decoder.decode(payload).record)
        except DecodeError:
            return False  # not an event: the checks that follow send it to dead letters

    def _apply_deletions(self) -> None:
        """Store everything consumed so far, then remove the new deletions' stored rows.
        Retried on the next loop when ClickHouse refuses (nothing is committed past it)."""
        if not self._complete_in_flight() or (self._batch.next_offsets and not self._flush()):
            return
        while self._new_deletions:
            deletion = self._new_deletions[0]
            try:
                with self._client_lock:
                    removed = delete_stored(self._client, deletion.kind, deletion.subject_id,
                                            self.settings.clickhouse_cluster)
            except Exception as exc:
                log.warning("sink: deleting %s failed (%s); retrying", deletion.key, exc)
                self._wait(1.0)
                return
            log.info("sink: %s deleted: %s", deletion.key, removed)
            self._new_deletions.pop(0)

    def _consumer_error(self, error: KafkaError) -> None:
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("sink: consumer error: %s", error)

    def _accept_checked(self, message: Message, payload: bytes, expected: str,
                        add: Callable[[int, bytes], None], offset: int) -> None:
        try:
            event = self._decoder.decode(payload)
        except DecodeError as exc:
            self._dead_letter(message, type(exc).__name__, str(exc))
            return
        if event.name != expected:
            self._dead_letter(message, "WrongTopic", f"a {event.name} event on topic "
                              f"{message.topic()} (expected {expected})")
            return
        found = problems(event.name, event.record)
        if found:
            self._dead_letter(message, "InvalidValues", "; ".join(found))
            return
        body = event.body
        if body is None:  # an older schema or the registry framing: store the current one
            try:
                body = current_body(event.name, event.record)
            except (TypeError, ValueError) as exc:
                self._dead_letter(message, "NotStorable", f"{type(exc).__name__}: {exc}")
                return
        add(offset, body)

    def _dead_letter(self, message: Message, error_type: str, error: str) -> None:
        self.counters.dead_lettered += 1
        log.warning("sink: %s[%s]@%s to dead letters: %s: %s", message.topic(),
                    message.partition(), message.offset(), error_type, error)
        self._dead_letters.send(message, error_type, error)

    def _batch_due(self) -> bool:
        if not self._batch.next_offsets:
            self._batch_started = time.monotonic()
            return False
        return (self._batch.largest_insert() >= self.settings.sink_batch_rows
                or time.monotonic() - self._batch_started >= self.settings.sink_batch_seconds)

    # -- inserting and committing -------------------------------------------------------

    def _hand_over(self) -> None:
        """Start inserting the current batch in the background and begin the next one.
        Waits for the batch before it first: at most one insert is in flight."""
        if not self._complete_in_flight():
            return
        batch, self._batch = self._batch, Batch()
        self._batch_started = time.monotonic()
        self._in_flight = (batch, self._inserter.submit(self._insert_once, batch))

    def _complete_in_flight(self, retry: bool = True) -> bool:
        """Wait for the batch in flight; when its insert failed, retry it here (pausing
        the partitions); then commit it. False when it could not be stored; it then
        stays in flight (a rebalance forgets it)."""
        if self._in_flight is None:
            return True
        batch, future = self._in_flight
        try:
            future.result()
        except Exception as exc:
            self.counters.insert_failures += 1
            log.warning("sink: insert of %d rows failed (%s); retrying", len(batch), exc)
            if not self._insert(batch, retry):
                return False
        self._in_flight = None
        return self._commit(batch)

    def _flush(self, retry: bool = True) -> bool:
        """Insert the current batch and commit it, in this thread. False when it could
        not (nothing lost: the offsets stay uncommitted and the messages are read again)."""
        batch, self._batch = self._batch, Batch()
        self._batch_started = time.monotonic()
        return self._insert(batch, retry) and self._commit(batch)

    def _insert_once(self, batch: Batch) -> None:
        """Insert every event type's rows of ``batch``; raises the first failure."""
        for insert in batch.inserts():
            with self._client_lock:
                raw_events.insert_avro(self._client, insert.columns, insert.data,
                                       insert.deduplication_token)

    def _insert(self, batch: Batch, retry: bool) -> bool:
        """Insert ``batch``, retrying with backoff while ``retry`` and not stopping.
        Inserts that did get through before a failure are dropped as duplicates by
        ClickHouse when retried (same tokens)."""
        delay = 0.5
        paused: list[TopicPartition] = []
        try:
            while True:
                try:
                    self._insert_once(batch)
                    return True
                except Exception as exc:
                    self.counters.insert_failures += 1
                    log.warning("sink: insert of %d rows failed (%s); retrying in %.1fs",
                                len(batch), exc, delay)
                    if not retry or self._stop.is_set():
                        return False
                    if not paused:
                        paused = self._consumer.position(self._consumer.assignment())
                        self._consumer.pause(paused)
                    self._wait(delay)
                    delay = min(delay * 2, 30.0)
        finally:
            if paused:
                self._resume(paused)

    def _commit(self, batch: Batch) -> bool:
        """Commit ``batch``'s offsets once its dead letters are acknowledged."""
        if not self._dead_letters.flush(30):
            log.warning("sink: dead letters not acknowledged; offsets not committed")
            return False
        offsets = [TopicPartition(t, p, o) for (t, p), o in batch.next_offsets.items()]
        if offsets:
            try:
                self._consumer.commit(offsets=offsets, asynchronous=False)
            except Exception as exc:  # rebalanced away: the rows are stored, skip sets cover it
                log.warning("sink: commit failed (%s); the next owner skips the stored rows",
                            exc)
        self.counters.inserted += len(batch)
        self.counters.batches += 1
        if self._on_batch is not None:
            self._on_batch(len(batch))
        return True

    def _wait(self, seconds: float) -> None:
        """Sleep while staying in the consumer group (paused partitions fetch nothing)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._stop.is_set():
            # Anything prefetched before the pause is read again after _resume's seek.
            self._consumer.consume(100, timeout=0.2)

    def _resume(self, positions: list[TopicPartition]) -> None:
        """Resume where consumption stood when the partitions were paused."""
        self._consumer.resume(positions)
        for position in positions:
            if position.offset >= 0:
                self._consumer.seek(position)

    # -- rebalancing --------------------------------------------------------------------

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Whatever is not stored now is forgotten: the next owner reads it again from the
        # committed offsets (and skips whatever did get stored).
        if self._complete_in_flight(retry=False) and self._batch.next_offsets:
            self._flush(retry=False)
        self._in_flight = None
        self._batch = Batch()
        for partition in partitions:
            self._already_stored.pop((partition.topic, partition.partition), None)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = consumer.committed(partitions, timeout=30)
        starts = {(p.topic, p.partition): max(p.offset, 0) for p in committed}
        self._already_stored.update(self._stored_offsets(starts))
        for partition in committed:
            if partition.offset < 0:
                partition.offset = OFFSET_BEGINNING
        consumer.assign(committed)

    def _stored_offsets(self, starts: dict[tuple[str, int], int]
                        ) -> dict[tuple[str, int], set[int]]:
        """Per partition, the offsets at or after its start already in ClickHouse. Retries
        until it can tell: guessing wrong would duplicate or lose rows."""
        delay = 0.5
        while True:
            try:
                with self._client_lock:
                    return raw_events.stored_offsets(self._client, starts)
            except Exception as exc:
                log.warning("sink: cannot read stored offsets (%s); retrying", exc)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
