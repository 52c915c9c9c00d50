"""Getting encoded events to Kafka without ever blocking or failing the caller.

Path of an event: ``send`` -> librdkafka's bounded memory queue (idempotent producer,
acks=all, no delivery timeout, so librdkafka retries until the broker takes it, without
duplicates) -> when that queue is full, the bounded on-disk :class:`Spool` -> when both
are full, dropped and counted. A background thread serves delivery reports and moves
spooled events back to the producer once the broker acknowledges deliveries again.

Each record handed to the producer carries the SDK's send stamp (:mod:`ept.core.send_stamp`),
taken at that hand-over: a spooled event is stamped again when it leaves the spool, so
the worker tells the time it waited there from a wrong clock.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from ept.core.send_stamp import stamp_headers
from ept.spool import Spool, SpooledMessage
from ept.stats import StatsRecorder

log = logging.getLogger("ept.producers")

_PERMANENT_ERRORS = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG_SIZE,
                     KafkaError.TOPIC_AUTHORIZATION_FAILED}
# ``Producer.produce``'s defaults, for passing its ``headers`` by position: librdkafka's
# partitioner picks the partition (RD_KAFKA_PARTITION_UA), the configured ``on_delivery``
# reports, and librdkafka stamps the record's time.
_ANY_PARTITION, _DEFAULT_CALLBACK, _NO_TIMESTAMP = -1, None, 0


class RateLimitedLog:
    """Logs at most one line per ``interval`` seconds per key, with a count of the rest."""

    def __init__(self, interval: float = 10.0) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def warning(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -self._interval) < self._interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            suppressed = self._suppressed.pop(key, 0)
            self._last[key] = now
        suffix = f" ({suppressed} similar suppressed)" if suppressed else ""
        log.warning(message + suffix, *args)


class Delivery(Protocol):
    """Where a tracker hands its encoded events."""

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Queue one message. Never blocks on the network, never raises."""

    def pending(self) -> int:
        """Messages queued and not yet acknowledged."""

    def flush(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for queued messages; returns how many remain."""

    def close(self, timeout: float) -> None:
        """Deliver what can be within ``timeout`` s and release what was held."""


class DiscardingDelivery:
    """Sends nothing and counts each event as dropped: the delivery of a tracker whose
    settings are invalid (tracking disabled). Never blocks, never raises."""

    def __init__(self, stats: StatsRecorder) -> None:
        self._stats = stats

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self._stats.add("dropped")

    def pending(self) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0

    def close(self, timeout: float) -> None:
        pass


class KafkaDelivery:
    """Owns the producer, its delivery-report thread and the spool.

    ``send`` never blocks on the network and never raises. ``close`` blocks up to its
    timeout, then moves undelivered events to the spool for the next process.
    """

    def __init__(self, producer_config: dict[str, Any], spool: Spool | None,
                 stats: StatsRecorder, queue_max: int) -> None:
        self._stats = stats
        self._spool = spool
        self._queue_max = queue_max
        self._warn = RateLimitedLog()
        self._broker_ok_at = 0.0
        self._closing = threading.Event()
        self._draining: _Draining | None = None
        self._producer = Producer({**producer_config, "on_delivery": self._on_delivery,
                                   "error_cb": self._on_error})
        self._produce = self._producer.produce  # looked up once for the hot path
        self._thread = threading.Thread(target=self._serve, name="ept-delivery", daemon=True)
        self._thread.start()

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Queue one message. Never blocks on the network, never raises."""
        try:
            # All by position (topic, value, key, partition, callback, on_delivery,
            # timestamp, headers): confluent-kafka parses a keyword at ~0.2 us a call.
            self._produce(topic, value, key, _ANY_PARTITION, _DEFAULT_CALLBACK,
                          _DEFAULT_CALLBACK, _NO_TIMESTAMP, stamp_headers())
        except BufferError:
            self._spool_or_drop(topic, key, value)
        except KafkaException as exc:
            self._warn.warning("produce", "ept: produce failed: %s", exc)
            self._spool_or_drop(topic, key, value)

    def _spool_or_drop(self, topic: str, key: bytes | None, value: bytes) -> None:
        if self._spool is not None and self._spool.append(topic, key, value):
            self._stats.add("spooled")
            return
        self._stats.add("dropped")
        self._warn.warning("dropped", "ept: event dropped: producer queue and spool are full")

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self._broker_ok_at = time.monotonic()
            self._stats.add("delivered")
            return
        self._undelivered(error, message)

    def _undelivered(self, error: KafkaError, message: Message) -> None:
        if error.code() in _PERMANENT_ERRORS:
            self._stats.add("dropped")
            self._warn.warning("permanent", "ept: event dropped by Kafka: %s", error)
            return
        value = message.value()
        topic = message.topic()
        if value is None or topic is None:
            return
        self._spool_or_drop(topic, message.key(), value)

    def _on_error(self, error: KafkaError) -> None:
        self._warn.warning("broker", "ept: Kafka unreachable or failing: %s", error)

    def _serve(self) -> None:
        last_flush = time.monotonic()
        while not self._closing.is_set():
            self._producer.poll(0.1)
            now = time.monotonic()
            if self._spool is not None:
                if now - last_flush > 0.5:
                    self._spool.flush_to_os()
                    last_flush = now
                if (self._draining or self._spool) and self._broker_reachable(now):
                    self._drain_spool()

    def _broker_reachable(self, now: float) -> bool:
        if now - self._broker_ok_at < 5.0:
            return True
        try:
            self._producer.list_topics(timeout=1.0)
        except KafkaException:
            return False
        self._broker_ok_at = now
        return True

    def _drain_spool(self) -> None:
        """Move spooled messages into the producer while it has room, oldest first.

        A segment leaves the disk only when every one of its messages was delivered or
        spooled again (see ``_Outstanding``), so a crash mid-way loses nothing.
        """
        assert self._spool is not None
        if self._draining is None:
            taken = self._spool.take_segment()
            if taken is None:
                return
            path, messages = taken
            if not messages:
                self._spool.release(path)
                return
            release = functools.partial(self._spool.release, path)
            self._draining = _Draining(messages, _Outstanding(len(messages), release))
        draining = self._draining
        while draining.next < len(draining.messages):
            message = draining.messages[draining.next]
            try:
                self._producer.produce(
                    message.topic, message.value, message.key, headers=stamp_headers(),
                    on_delivery=functools.partial(self._on_spooled_delivery,
                                                  draining.outstanding),
                )
            except BufferError:
                return  # the queue is full again: continue on a later round
            draining.next += 1
            self._stats.add("spooled", -1)
        self._draining = None

    def _on_spooled_delivery(self, outstanding: _Outstanding, error: KafkaError | None,
                             message: Message) -> None:
        self._on_delivery(error, message)
        outstanding.done()

    def pending(self) -> int:
        """Events in the producer's memory queue (not yet acknowledged)."""
        return len(self._producer)

    def flush(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for queued events to be delivered; returns how many remain."""
        return int(self._producer.flush(timeout))

    def close(self, timeout: float) -> None:
        """Deliver what can be delivered within ``timeout``; spool the rest; stop the thread."""
        remaining = self.flush(timeout)
        if remaining:
            # Messages not yet sent come back through _on_delivery (as purged) and are
            # spooled; messages in flight may have reached the broker, so they are awaited.
            self._producer.purge(in_queue=True, in_flight=False, blocking=True)
            self._producer.poll(0)
            self._producer.flush(min(timeout, 5.0))
        self._closing.set()
        self._thread.join(timeout=2.0)
        if self._spool is not None:
            self._spool.close()


@dataclass
class _Draining:
    """The spool segment being moved into the producer, and how far it got."""

    messages: list[SpooledMessage]
    outstanding: _Outstanding
    next: int = 0


class _Outstanding:
    """Counts the delivery reports still due for one spool segment; releases it at zero."""

    def __init__(self, count: int, release: functools.partial[None]) -> None:
        self._count = count
        self._release = release
        self._lock = threading.Lock()

    def done(self) -> None:
        with self._lock:
            self._count -= 1
            finished = self._count == 0
        if finished:
            self._release()
