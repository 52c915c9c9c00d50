"""ept's own topics, read and written in one place: the compacted control topics
(template controls, slow thresholds, deletions) and the alert topic.

- :func:`publish` writes one :class:`~ept.core.json_record.ControlRecord` under its key;
- :func:`read_topic` reads a topic from its start (or end) to the end seen at the start,
  and follows it; :func:`decoding` decodes what it reads, skipping bad records;
- :class:`ControlView` keeps a control topic in memory, following it in a daemon thread
  that never dies; a control topic's view is a subclass saying what it keeps of a record.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Generic, Self, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from ept.core.json_record import ControlRecord, JsonRecord
from ept.core.kafka import ConsumerRole, ProducerRole, consumer_config, producer_config
from ept.core.settings import SdkSettings

log = logging.getLogger("ept.compacted")

RETRY_S = 5.0
"""How often a missing topic is looked for again, and a view's broker errors retried."""


R = TypeVar("R", bound=JsonRecord)
C = TypeVar("C", bound=ControlRecord)
OnMessage = Callable[[Message, bool], None]
"""``on_message(message, live)``; ``live`` once the end seen at the start was reached."""


def publish(settings: SdkSettings, topic: str, record: ControlRecord, timeout_s: float = 30.0
            ) -> None:
    """Write ``record`` under its key and wait until the broker acknowledged it. Blocks.

    Raises KafkaException when it was not delivered within ``timeout_s``.
    """
    errors: list[Any] = []
    producer = Producer(producer_config(settings, ProducerRole.CONTROL, **{
        "message.timeout.ms": int(timeout_s * 1000)}))
    producer.produce(topic, key=record.key.encode(), value=record.encode(),
                     on_delivery=lambda error, message: errors.append(error))
    if producer.flush(timeout_s + 5) or not errors or errors[0] is not None:
        raise KafkaException(errors[0] if errors else f"record for {topic} not delivered")


def _partitions(consumer: Consumer, topic: str) -> list[int]:
    """The topic's partitions; none when it does not exist (yet)."""
    metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if metadata is None or metadata.error is not None:
        return []
    return sorted(metadata.partitions)


def read_topic(settings: SdkSettings, topic: str, on_message: OnMessage,
               stop: threading.Event | None = None, *, from_beginning: bool = True,
               until_end: bool = False, timeout_s: float = 30.0,
               on_loaded: Callable[[], None] = lambda: None, poll_s: float = 0.5) -> None:
    """Hand each message of ``topic`` to ``on_message(message, live)``, in each partition's
    order.

    Reads from each partition's log start (``from_beginning``; never offset 0, which
    retention may have deleted) or from its end. Once the end offsets seen at the start
    are reached (at once when reading from the end, or the topic is empty or missing),
    ``on_loaded()`` is called and ``live`` is True from then on. With ``until_end`` it
    returns then (and raises TimeoutError when that took over ``timeout_s``); otherwise it
    follows the topic until ``stop`` is set (never, when None). A topic that does not
    exist yet is empty: followed, it is looked for again every :data:`RETRY_S` and read
    from its start once it appears. Blocks on the broker; raises KafkaException when the
    broker does not answer (a message's own error is skipped).
    """
    consumer = Consumer(consumer_config(settings, ConsumerRole.TOPIC_READER,
                                        f"ept-read-{uuid.uuid4()}",
                                        **{"fetch.wait.max.ms": 100,
                                           "isolation.level": "read_committed"}))
    stop = stop or threading.Event()
    try:
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        partitions = _partitions(consumer, topic)
        loaded = False
        while not partitions:
            if not loaded:
                loaded = True
                on_loaded()
            if until_end or stop.wait(RETRY_S):
                return
            partitions, start = _partitions(consumer, topic), OFFSET_BEGINNING
        ends: dict[int, int] = {}
        for partition in partitions if start == OFFSET_BEGINNING and not loaded else ():
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                       timeout=10)
            if high > low:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, p, start) for p in partitions])
        started = time.monotonic()
        while not stop.is_set():
            if not ends and not loaded:
                log.info("%s read to its end in %.2f s", topic, time.monotonic() - started)
                loaded = True
                on_loaded()
            if until_end and loaded:
                return
            if until_end and time.monotonic() > started + timeout_s:
                raise TimeoutError(f"{topic} not read to its end in {timeout_s}s")
            for message in consumer.consume(500, timeout=poll_s):
                if message.error() is not None:
                    continue
                on_message(message, loaded)
                partition, offset = message.partition() or 0, message.offset() or 0
                if partition in ends and offset + 1 >= ends[partition]:
                    del ends[partition]
    finally:
        consumer.close()


def decoded(record: type[R], message: Message) -> R | None:
    """The record in ``message``; None, with a warning saying why, when it is not one."""
    try:
        return record.decode(message.value())
    except record.invalid as exc:
        log.warning("%s[%s]@%s: a record skipped: %s", message.topic(), message.partition(),
                    message.offset(), exc)
        return None


def decoding(record: type[R], on_record: Callable[[R], None]) -> OnMessage:
    """An ``on_message`` for :func:`read_topic` handing ``on_record`` each record read;
    messages that are not one are logged and skipped."""
    def on_message(message: Message, live: bool) -> None:
        if (found := decoded(record, message)) is not None:
            on_record(found)

    return on_message


class ControlView(Generic[C]):
    """What a subclass keeps of a compacted control topic's records, fed by a daemon
    thread that reads the topic from its start and follows it.

    The subclass implements :meth:`keep`, called in that thread with each record whose
    message key is its key (others, and messages that are not records, are logged and
    skipped); ``live`` once the topic was read to the end seen at the start
    (:attr:`loaded`: at once when it does not exist yet). Broker errors are logged and
    the topic read again from its start every :data:`RETRY_S`: the thread never dies.
    """

    def __init__(self, settings: SdkSettings, topic: str, record: type[C],
                 poll_s: float = 0.2) -> None:
        self._settings, self._topic, self._record, self._poll_s = (
            settings, topic, record, poll_s)
        self._loaded = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"ept-follow-{topic}",
                                        daemon=True)

    def keep(self, record: C, live: bool) -> None:
        """Take in ``record``, the latest of its key. Called in the view's thread."""
        raise NotImplementedError

    def start(self) -> Self:
        self._thread.start()
        return self

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop following; blocks until the thread ended, or ``timeout_s`` passed."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    def wait_loaded(self, timeout_s: float | None = None) -> bool:
        """Block until the topic was read to its end (True) or ``timeout_s`` passed."""
        return self._loaded.wait(timeout_s)

    def read_to_end(self, timeout_s: float = 20.0) -> Self:
        """Start, wait until the topic was read to its end, and close: the view then holds
        every key's latest record. Blocks; raises TimeoutError when the broker did not
        answer within ``timeout_s``."""
        self.start()
        try:
            if not self.wait_loaded(timeout_s):
                raise TimeoutError(f"{self._topic} on {self._settings.kafka_bootstrap} "
                                   f"not read within {timeout_s:.0f} s")
            return self
        finally:
            self.close()

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                read_topic(self._settings, self._topic, self._on_message, self._stop,
                           on_loaded=self._loaded.set, poll_s=self._poll_s)
            except KafkaException as exc:  # the broker is away: expected, no traceback
                log.warning("reading %s failed (%s); again in 5 s", self._topic, exc)
                self._stop.wait(RETRY_S)
            except Exception:  # never let the thread die; what was read is kept
                log.exception("reading %s failed; again in 5 s", self._topic)
                self._stop.wait(RETRY_S)

    def _on_message(self, message: Message, live: bool) -> None:
        record = decoded(self._record, message)
        if record is None:
            return
        key = message.key()
        if key is not None and key.decode(errors="replace") != record.key:
            log.warning("%s[%s]@%s: a record skipped: key %r is not its key %r",
                        message.topic(), message.partition(), message.offset(), key,
                        record.key)
            return
        self.keep(record, self._loaded.is_set())
