"""The sink's run loop: consume the event topics and pass what is read through the steps.

Exactly once, by two mechanisms that cover each other (docs/exactly-once.md): every row
stores its source topic, partition and offset, and a newly assigned partition's rows
already stored are skipped (:mod:`.stored`: a sink killed between insert and commit);
each insert carries a deduplication token derived from its exact offset ranges
(:mod:`.insert`: an insert retried after an ambiguous failure). Offsets are committed in
batch order, only after ClickHouse acknowledged a batch's inserts and Kafka its dead
letters (:mod:`.commit`); while ClickHouse is unavailable nothing is committed.

A deletion recorded while the sink runs is applied to the stored rows once everything
consumed before it is stored (:mod:`.deleted`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from clickhouse_connect.driver.client import Client
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from ept.core.kafka import ConsumerRole, ProducerRole, consumer_config, producer_config
from ept.core.settings import Settings
from ept.processors.sink.batching import Batching
from ept.processors.sink.commit import Commit
from ept.processors.sink.counters import SinkCounters
from ept.processors.sink.deleted import DropDeleted
from ept.processors.sink.dlq import DeadLetters
from ept.processors.sink.insert import Insert
from ept.processors.sink.pause import Pause
from ept.processors.sink.runs import partition_runs
from ept.processors.sink.stored import SkipStored
from ept.processors.sink.validate import Validate
from ept.schemas.codec import Decoder
from ept.schemas.registry import EVENT_NAMES

log = logging.getLogger("ept.sink")

DEFAULT_GROUP = "ept-sink"


class Sink:
    """One sink process's consumer. ``run`` blocks until ``stop`` is set.

    ``client_lock`` serialises this sink's ClickHouse calls with other users of the same
    client (the HTTP query API shares the embedded engine). ``on_batch`` is called with
    each committed batch's row count.
    """

    def __init__(self, settings: Settings, client: Client, *, group: str = DEFAULT_GROUP,
                 client_lock: threading.Lock | None = None,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.settings = settings
        self.counters = SinkCounters()
        self._stop = threading.Event()
        client_lock = client_lock or threading.Lock()
        decoder = Decoder(settings.schema_registry_url, raw=True)
        self._topics = [settings.topics.event(name) for name in EVENT_NAMES]
        self._consumer = Consumer(consumer_config(settings, ConsumerRole.SINK, group))
        self._dead_letters = DeadLetters(
            producer_config(settings, ProducerRole.DEAD_LETTERS), settings.topics.dlq,
            self.counters)
        # The steps: stored -> deleted -> validate -> dead letters | batching -> insert
        # -> commit. Validate hands on to its two, insert to commit; run() does the rest.
        self._stored = SkipStored(client, client_lock, self.counters)
        self._deleted = DropDeleted(settings, decoder, client, client_lock, self.counters)
        self._batching = Batching(settings.sink_batch_rows, settings.sink_batch_seconds)
        self._validate = Validate(settings.topics.event, decoder, self._dead_letters,
                                  self._batching)
        self._pause = Pause(self._consumer)  # told of rebalances: see _on_revoke, _on_assign
        self._insert = Insert(client, client_lock, self._pause,
                              Commit(self._consumer, self._dead_letters, self.counters,
                                     on_batch),
                              self.counters, self._stop_requested)

    # -- lifecycle ----------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Consume until ``stop`` (or :meth:`stop`) is set; then store and commit what can
        be stored at once."""
        if stop is not None:
            self._stop = stop
        self._deleted.start()
        while not self._deleted.wait_loaded(1.0):  # nothing deleted may be stored again
            if self._stop.is_set():
                self._deleted.close()
                return
            log.warning("sink: waiting for %s to be read", self.settings.topics.deletions)
        self._consumer.subscribe(self._topics, on_assign=self._on_assign,
                                 on_revoke=self._on_revoke)
        try:
            while not self._stop.is_set():
                if self._deleted.has_new:
                    self._apply_deletions()
                messages = self._consumer.consume(self._batching.room(), timeout=0.1)
                self.counters.consumed += len(messages)
                for run in partition_runs(messages):
                    self._validate.submit(run, self._deleted.submit(self._stored.submit(run)))
                self._insert.poll()
                if self._batching.due():
                    self._hand_over()
            if self._insert.join(retry=False) and self._batching.consumed:
                self._flush(retry=False)
        finally:
            self._insert.close()
            self._consumer.close()
            self._dead_letters.flush(10)
            self._deleted.close()

    def stop(self) -> None:
        self._stop.set()

    def _stop_requested(self) -> bool:
        return self._stop.is_set()

    # -- composing the steps ------------------------------------------------------------

    def _hand_over(self) -> None:
        """Start inserting the batch and begin the next one, once the batch before is
        stored (at most one insert is in flight)."""
        if self._insert.join():
            self._insert.submit(self._batching.take())

    def _flush(self, retry: bool = True) -> bool:
        """Store and commit the batch being filled, in this thread. False when it could
        not (nothing lost: the offsets stay uncommitted and the messages are read again)."""
        return self._insert.store(self._batching.take(), retry)

    def _apply_deletions(self) -> None:
        """Store everything consumed so far, then remove the new deletions' stored rows.
        When ClickHouse refuses, wait a second with the partitions paused and retry on
        the next loop (nothing is committed past it)."""
        if not self._insert.join() or (self._batching.consumed and not self._flush()):
            return
        if not self._deleted.apply_new():
            with self._pause.outage():
                self._pause.wait(1.0, self._stop_requested)

    # -- rebalancing --------------------------------------------------------------------

    # Served inside consume(): by the main loop's, or by a wait of the pause while
    # ClickHouse is unavailable (an insert retry stops, the pause holds the new partitions).

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Whatever is not stored now is forgotten: the next owner reads it again from the
        # committed offsets (and skips whatever did get stored).
        self._pause.revoked(partitions)
        if self._insert.join(retry=False) and self._batching.consumed:
            self._flush(retry=False)
        self._insert.forget()
        self._batching.forget()
        self._stored.revoked(partitions)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = consumer.committed(partitions, timeout=30)
        self._stored.assigned(committed)
        for partition in committed:
            if partition.offset < 0:
                partition.offset = OFFSET_BEGINNING
        consumer.assign(committed)
        self._pause.assigned(committed)
