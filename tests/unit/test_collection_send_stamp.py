"""The SDK's send stamp: on every record as it is handed to Kafka, again when a spooled
event leaves the spool, and read back by the worker from Faust's headers."""

from __future__ import annotations

import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ept import delivery as delivery_module
from ept.core.send_stamp import HEADER, PRODUCER_ID, SendStamp, read_stamp, stamp_headers
from ept.delivery import KafkaDelivery
from ept.processors.worker.collect_stage import _stamp_of
from ept.spool import Spool
from ept.stats import StatsRecorder


class FakeProducer:
    """Takes what ``produce`` is given; ``full``: raises BufferError like a full queue."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.full = True
        self.produced: list[tuple[bytes, list[tuple[str, bytes]]]] = []
        self._lock = threading.Lock()

    def produce(self, topic: str, value: bytes, key: bytes | None = None,
                partition: int = -1, callback: Any = None, on_delivery: Any = None,
                timestamp: int = 0, headers: list[tuple[str, bytes]] | None = None) -> None:
        """``confluent_kafka.Producer.produce``'s parameters, in its order."""
        assert headers is not None
        if self.full:
            raise BufferError
        with self._lock:
            self.produced.append((value, headers))

    def poll(self, timeout: float) -> int:
        time.sleep(min(timeout, 0.01))
        return 0

    def list_topics(self, timeout: float) -> None:
        return None

    def flush(self, timeout: float) -> int:
        return 0

    def purge(self, **options: bool) -> None:
        return None

    def __len__(self) -> int:
        return 0


def test_the_stamp_reads_back() -> None:
    before = time.time_ns() // 1_000_000
    [(name, value)] = stamp_headers()
    stamp = read_stamp(value)
    assert name == HEADER and len(value) == 16
    assert stamp is not None and stamp.producer == PRODUCER_ID
    assert before <= stamp.sent_ms <= time.time_ns() // 1_000_000
    assert read_stamp(None) is None and read_stamp(b"\x00" * 8) is None


def test_a_spooled_event_is_stamped_when_it_leaves_the_spool(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(delivery_module, "Producer", FakeProducer)
    delivery = KafkaDelivery({}, Spool(tmp_path, 1 << 20), StatsRecorder(), 1000)
    producer: FakeProducer = delivery._producer  # type: ignore[assignment]
    try:
        delivery.send("t", b"k", b"spooled")  # the queue is full: to the spool
        time.sleep(0.2)
        released_ms = time.time_ns() // 1_000_000
        producer.full = False
        delivery.send("t", b"k", b"direct")
        deadline = time.monotonic() + 5
        while len(producer.produced) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        delivery.close(1.0)
    stamps = {value: read_stamp(dict(headers)[HEADER]) for value, headers in producer.produced}
    assert set(stamps) == {b"spooled", b"direct"}
    for stamp in stamps.values():
        assert stamp is not None and stamp.sent_ms >= released_ms


def test_the_worker_reads_the_stamp_from_either_form_of_faust_headers() -> None:
    value = struct.pack(">qQ", 1_780_000_000_000, 42)
    expected = SendStamp(1_780_000_000_000, 42)
    assert _stamp_of([("other", b"x"), (HEADER, value)]) == expected
    assert _stamp_of({HEADER: value}) == expected
    assert _stamp_of(None) is None and _stamp_of([]) is None
    assert _stamp_of([(HEADER, b"short")]) is None
