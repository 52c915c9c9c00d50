"""What a worker taking over event partitions reads back from before it took them over.

A worker that starts (or is assigned a partition in a rebalance) reads on from the
group's committed offset; what the worker before it read is gone with it:

* The ids of the events just before that offset. A producer's re-send of one of those
  events, arriving now at a new offset, would be counted twice. So the collect stage
  reads them back once per assignment (:func:`recent_event_ids`) and the collector
  remembers them (:meth:`~ept.processors.worker.logic.collector.Collector.remember`).
* The broker's clock. Event time follows it while every source is idle, and the
  collector learns it from the records it reads: a worker that takes over partitions
  read to their end would learn nothing until the next event, and firing alerts would
  never resolve, nor would a rule on renders that stopped ever fire. So it starts from
  the newest record timestamp of the partitions (:func:`newest_records`), once
  it has read past that record (so did its predecessor, for a partition read to its end).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from ept.core.kafka import ConsumerRole, consumer_config
from ept.core.settings import Settings

log = logging.getLogger("ept.worker")

MAX_RECORDS = 200_000  # read back at most this many records of one partition


def recent_event_ids(settings: Settings, topic: str, partition: int, before_offset: int,
                     since_ms: int, event_of: Callable[[bytes], tuple[str, int] | None],
                     timeout_s: float = 30.0) -> list[tuple[str, int]]:
    """(event id, event time) of the records of ``topic``/``partition`` stamped at or
    after ``since_ms`` and before ``before_offset`` (at most :data:`MAX_RECORDS`, the
    newest), as ``event_of`` reads them from a record's value (None: not an event).

    Blocks on the broker up to about ``timeout_s`` and returns what it read by then
    (logged). Raises KafkaException when the broker cannot be asked at all.
    """
    if before_offset <= 0:
        return []  # a partition's first record: nothing came before it
    consumer = Consumer(consumer_config(settings, ConsumerRole.TOPIC_READER,
                                        f"ept-recent-{uuid.uuid4()}"))
    try:
        [found] = consumer.offsets_for_times([TopicPartition(topic, partition, since_ms)],
                                             timeout=timeout_s)
        start = found.offset
        if start < 0 or start >= before_offset:
            return []
        start = max(start, before_offset - MAX_RECORDS)
        consumer.assign([TopicPartition(topic, partition, start)])
        return _read(consumer, before_offset, event_of, time.monotonic() + timeout_s,
                     f"{topic}[{partition}]")
    finally:
        consumer.close()


def newest_records(settings: Settings, partitions: list[tuple[str, int]],
                   timeout_s: float = 10.0) -> dict[tuple[str, int], tuple[int, int]]:
    """The offset and broker timestamp (ms) of the newest record of each of
    ``partitions`` that has one (an empty partition is left out, as is one not read
    within ``timeout_s`` of the call, which is all it takes).

    Blocks on the broker. Raises KafkaException when the broker cannot be asked.
    """
    deadline = time.monotonic() + timeout_s
    consumer = Consumer(consumer_config(settings, ConsumerRole.TOPIC_READER,
                                        f"ept-recent-{uuid.uuid4()}"))
    try:
        newest = {}
        for topic, partition in partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=max(0.1, deadline - time.monotonic()))
            if high > low:
                newest[(topic, partition)] = high - 1
        consumer.assign([TopicPartition(topic, partition, offset)
                         for (topic, partition), offset in newest.items()])
        records: dict[tuple[str, int], tuple[int, int]] = {}
        while len(records) < len(newest) and time.monotonic() < deadline:
            for message in consumer.consume(len(newest), timeout=1.0):
                if message.error() is None:
                    read: tuple[str, int] = (message.topic(), message.partition())  # type: ignore[assignment]
                    records[read] = (message.offset(), message.timestamp()[1])  # type: ignore[assignment]
        return records
    finally:
        consumer.close()


def _read(consumer: Consumer, before_offset: int,
          event_of: Callable[[bytes], tuple[str, int] | None], deadline: float,
          where: str) -> list[tuple[str, int]]:
    events: list[tuple[str, int]] = []
    while time.monotonic() < deadline:
        messages: list[Any] = consumer.consume(1000, timeout=1.0)
        for message in messages:
            if message.error() is not None:
                continue
            if message.offset() >= before_offset:
                return events
            event = event_of(message.value())
            if event is not None:
                events.append(event)
            if message.offset() == before_offset - 1:
                return events
    log.warning("%s: read back %d recent events before offset %d, not all of them within "
                "the time allowed; a re-send of an older one may count twice", where,
                len(events), before_offset)
    return events
