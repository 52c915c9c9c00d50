"""Publishing events with chosen event times (the worker computes in event time)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Producer

from ept.core.settings import Settings
from ept.schemas import SingleObjectEncoder

BASE_MS = (int(time.time() * 1000) // 60_000 - 120) * 60_000  # a whole minute, 2 h ago


def record(event_name: str, at_ms: int, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": str(uuid.uuid4()), "event_time": at_ms, "service": "test",
        "environment": "test", "sdk_version": "test", "user_id": None, "account_id": None,
    }
    defaults: dict[str, dict[str, Any]] = {
        "render_failed": {"render_id": "r", "template_id": "tpl", "reason": "timeout",
                          "error_message": "m", "duration_ms": 1.0, "retry_attempt": 0,
                          "render_type": None},
        "render_completed": {"render_id": "r", "template_id": "tpl", "render_type": "video",
                             "duration_ms": 1.0, "width": None, "height": None},
        "slow_render": {"render_id": "r", "template_id": "tpl", "render_type": "video",
                        "duration_ms": 60000.0, "threshold_ms": 30000.0,
                        "slowness_factor": 2.0, "width": None, "height": None},
        "api_error": {"endpoint": "/api/render", "method": "POST", "status_code": 500,
                      "error_message": "m", "request_id": str(uuid.uuid4()),
                      "duration_ms": 1.0, "retry_attempt": 0, "rate_limited": False,
                      "retry_after_s": None},
        "api_request_completed": {"endpoint": "/api/render", "method": "POST",
                                  "status_code": 200, "duration_ms": 1.0,
                                  "request_id": str(uuid.uuid4())},
    }
    return {**base, **defaults[event_name], **fields}


class EventPublisher:
    """Publishes (event name, record) pairs to a test's topics, keyed like the SDK does."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._encoder = SingleObjectEncoder()
        self._producer = Producer({"bootstrap.servers": settings.kafka_bootstrap,
                                   "enable.idempotence": True, "linger.ms": 5})

    def publish(self, events: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Publish in order, each to its key's partition as the SDK does. Blocks until the
        broker acknowledged all."""
        self._send((name, None, None, data) for name, data in events)

    def publish_to_partitions(self, events: Iterable[tuple[str, int, int, dict[str, Any]]]
                              ) -> None:
        """Publish (event name, partition, record timestamp in ms, record) in order. On
        topics stamped by the broker (LogAppendTime) the broker's time replaces the one
        given."""
        self._send(events)

    def _send(self, events: Iterable[tuple[str, int | None, int | None, dict[str, Any]]]
              ) -> None:
        for name, partition, timestamp_ms, data in events:
            key = str(data.get("template_id") or data.get("endpoint")).encode()
            options: dict[str, int] = {}
            if partition is not None:
                options["partition"] = partition
            if timestamp_ms is not None:
                options["timestamp"] = timestamp_ms
            self._producer.produce(self._settings.topics.event(name),
                                   self._encoder.encode(name, data), key, **options)
            self._producer.poll(0)
        assert self._producer.flush(30) == 0
