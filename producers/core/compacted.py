"""ept's compacted control topics (template controls, deletions): the one reader, which
follows such a topic from its start, and the one writer of a single record."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from ept.core.kafka import ConsumerRole, ProducerRole, consumer_config, producer_config
from ept.core.settings import SdkSettings

log = logging.getLogger("ept.compacted")

Apply = Callable[[bytes | None, bytes | None, bool], None]
"""``apply(key, value, live)``: one message; ``live`` once the topic's start was read."""


def publish_record(settings: SdkSettings, topic: str, key: str, value: bytes,
                   timeout_s: float = 30.0) -> None:
    """Write one record and wait until the broker acknowledged it. Blocks.

    Raises KafkaException when it was not delivered within ``timeout_s``.
    """
    errors: list[Any] = []
    producer = Producer(producer_config(settings, ProducerRole.CONTROL, **{
        "message.timeout.ms": int(timeout_s * 1000)}))
    producer.produce(topic, key=key.encode(), value=value,
                     on_delivery=lambda error, message: errors.append(error))
    if producer.flush(timeout_s + 5) or not errors or errors[0] is not None:
        raise KafkaException(errors[0] if errors else f"record for {topic} not delivered")


class CompactedTopicFollower:
    """Reads ``topic`` from its start in a daemon thread, hands every message to ``apply``
    (in that thread), then follows it. :attr:`loaded` once the end offsets seen at start
    are reached (at once when the topic does not exist yet; it is looked for again every
    5 s). Broker errors are logged and retried every 5 s: the thread never dies.
    """

    def __init__(self, settings: SdkSettings, topic: str, apply: Apply, poll_s: float = 0.2
                 ) -> None:
        self._settings, self._topic, self._apply, self._poll_s = settings, topic, apply, poll_s
        self._loaded = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"ept-follow-{topic}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    def wait_loaded(self, timeout_s: float | None = None) -> bool:
        """Block until the topic was read to its end (True) or ``timeout_s`` passed."""
        return self._loaded.wait(timeout_s)

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                self._read()
            except KafkaException as exc:  # the broker is away: expected, no traceback
                log.warning("reading %s failed (%s); again in 5 s", self._topic, exc)
                self._stop.wait(5.0)
            except Exception:  # never let the thread die; what was read is kept
                log.exception("reading %s failed; again in 5 s", self._topic)
                self._stop.wait(5.0)

    def _read(self) -> None:
        """Follow the topic until stopped. Blocks; raises KafkaException on broker errors."""
        topic = self._topic
        consumer = Consumer(consumer_config(self._settings, ConsumerRole.TOPIC_READER,
                                            f"ept-follow-{uuid.uuid4()}",
                                            **{"fetch.wait.max.ms": 100}))
        try:
            metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if metadata is None or metadata.error is not None or not metadata.partitions:
                self._loaded.set()  # no topic yet: nothing in it
                self._stop.wait(5.0)
                return
            partitions = sorted(metadata.partitions)
            ends = {}
            for partition in partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                           timeout=10)
                if high > low:
                    ends[partition] = high
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
            started = time.monotonic()
            while not self._stop.is_set():
                if not ends and not self._loaded.is_set():
                    log.info("%s loaded in %.2f s", topic, time.monotonic() - started)
                    self._loaded.set()
                for message in consumer.consume(500, timeout=self._poll_s):
                    if message.error() is not None:
                        continue
                    partition, offset = message.partition() or 0, message.offset() or 0
                    self._apply(message.key(), message.value(), self._loaded.is_set())
                    if partition in ends and offset + 1 >= ends[partition]:
                        del ends[partition]
        finally:
            consumer.close()
