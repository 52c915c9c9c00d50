"""A delivery that keeps what the tracker sends, for unit tests of tracking logic."""

from __future__ import annotations

from typing import Any

from ept import Tracker
from ept.core.settings import load_settings
from ept.schemas import Decoder


class RecordingDelivery:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.sent.append((topic, key, value))

    def pending(self) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0

    def close(self, timeout: float) -> None:
        pass



def recording_tracker(strict: bool = True, **options: Any
                      ) -> tuple[Tracker, RecordingDelivery]:
    delivery = RecordingDelivery()
    tracker = Tracker(load_settings(topic_prefix="unit."), strict=strict, service="svc",
                      environment="test", delivery=delivery, **options)  # type: ignore[arg-type]
    return tracker, delivery


def sent_events(delivery: RecordingDelivery) -> list[tuple[str, dict[str, Any]]]:
    """(event name, decoded record) of everything sent."""
    decoder = Decoder()
    return [(topic.split(".", 1)[1], decoder.decode(value).record)
            for topic, _, value in delivery.sent]
