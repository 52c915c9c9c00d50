"""Holding the consumer still while ClickHouse is unavailable, without leaving the group."""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Consumer, TopicPartition


class Pause:
    """The assigned partitions, paused on the first :meth:`hold` and resumed by
    :meth:`release` where consumption stood when they were paused (whatever was fetched
    before the pause is read again). One per outage; a context manager releases on exit.
    Raises what the consumer raises."""

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer
        self._positions: list[TopicPartition] = []

    def __enter__(self) -> Pause:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def hold(self) -> None:
        if not self._positions:
            self._positions = self._consumer.position(self._consumer.assignment())
            self._consumer.pause(self._positions)

    def release(self) -> None:
        if not self._positions:
            return
        self._consumer.resume(self._positions)
        for position in self._positions:
            if position.offset >= 0:
                self._consumer.seek(position)
        self._positions = []


def wait_in_group(consumer: Consumer, seconds: float, stopping: Callable[[], bool]) -> None:
    """Spend ``seconds`` (less once ``stopping()``) polling ``consumer``, so that it stays
    in its group. Blocks; what it polls is dropped: paused partitions fetch nothing, and
    what was fetched before their pause is read again after :meth:`Pause.release`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stopping():
        consumer.consume(100, timeout=0.2)
