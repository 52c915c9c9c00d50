"""Step: dead letters — undecodable or invalid messages, with why and where they came from."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Message, Producer

from ept.processors.sink.counters import SinkCounters

log = logging.getLogger("ept.sink")

HEADER_TOPIC = "ept-original-topic"
HEADER_PARTITION = "ept-original-partition"
HEADER_OFFSET = "ept-original-offset"
HEADER_ERROR = "ept-error"
HEADER_ERROR_TYPE = "ept-error-type"


class DeadLetters:
    """Publishes poison messages to ``topic`` unchanged, with headers naming their origin.

    ``send`` never blocks (it logs and counts each message); ``flush`` blocks until the
    broker acknowledged them (call it before committing the offsets of the poison
    messages).
    """

    def __init__(self, producer_config: dict[str, Any], topic: str,
                 counters: SinkCounters) -> None:
        self.topic = topic
        self._producer = Producer(producer_config)
        self._counters = counters

    def send(self, message: Message, error_type: str, error: str) -> None:
        self._counters.dead_lettered += 1
        log.warning("sink: %s[%s]@%s to dead letters: %s: %s", message.topic(),
                    message.partition(), message.offset(), error_type, error)
        headers: list[tuple[str, str | bytes | None]] = [
            (HEADER_TOPIC, (message.topic() or "").encode()),
            (HEADER_PARTITION, str(message.partition()).encode()),
            (HEADER_OFFSET, str(message.offset()).encode()),
            (HEADER_ERROR_TYPE, error_type.encode()),
            (HEADER_ERROR, error[:1000].encode()),
        ]
        self._producer.produce(self.topic, message.value(), message.key(), headers=headers)
        self._producer.poll(0)

    def flush(self, timeout: float) -> bool:
        """True when every dead letter was acknowledged within ``timeout`` seconds."""
        return self._producer.flush(timeout) == 0


def headers_of(message: Message) -> dict[str, str]:
    headers: list[tuple[str, bytes]] = message.headers() or []  # type: ignore[assignment]
    return {key: (value or b"").decode(errors="replace") for key, value in headers}
