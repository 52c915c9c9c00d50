"""Helpers shared by integration tests: reading topics to the end."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, KafkaException, TopicPartition


def read_topics(bootstrap: str, topics: list[str], expected: int | None = None,
                timeout: float = 60.0, idle: float = 3.0) -> list:  # type: ignore[type-arg]
    """Every message of ``topics`` from the beginning (a fresh group each call).

    Stops at ``expected`` messages, after ``idle`` seconds without new ones (when
    ``expected`` is None), or at ``timeout``.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "topic.metadata.refresh.interval.ms": 1000})
    consumer.subscribe(topics)
    messages = []
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(5000, timeout=0.5)
            for message in batch:
                if message.error() is None:
                    messages.append(message)
            if batch:
                last_new = time.monotonic()
            if expected is not None and len(messages) >= expected:
                extra = consumer.consume(5000, timeout=1.0)  # anything beyond is a duplicate
                messages.extend(m for m in extra if m.error() is None)
                break
            if expected is None and messages and time.monotonic() - last_new > idle:
                break
    finally:
        consumer.close()
    return messages


def end_offsets(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4()}"})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        total = 0
        for partition in metadata.partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            total += high
        return total
    finally:
        consumer.close()
