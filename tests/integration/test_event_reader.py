"""The worker's bulk event reader against the real broker."""

from __future__ import annotations

import time

from ept.core.kafka import ensure_topics
from ept.core.settings import Settings
from ept.processors.worker.event_reader import EventReader, Partition


def test_where_reading_starts_is_asked_again_until_the_broker_tells(settings: Settings) -> None:
    """A broker that cannot tell at assignment where reading starts (restarting, say)
    is asked again before later fetches: a partition with nothing new to read must become
    known as caught up, or the event time of its family would stand for good (the chaos
    soak's incident stayed firing)."""
    ensure_topics(settings)
    topic = settings.topics.event("render_failed")
    reader = EventReader(settings, [topic])
    asked: list[frozenset[Partition]] = []
    read_starts = reader._read_starts

    def unanswered_at_first(partitions: frozenset[Partition]) -> dict[Partition, int]:
        asked.append(frozenset(partitions))
        return {} if len(asked) == 1 else read_starts(partitions)

    reader._read_starts = unanswered_at_first
    try:
        deadline = time.monotonic() + 60
        while not reader.assignment():
            assert time.monotonic() < deadline, "no partition assigned"
            assert reader.consume(100, 0.5) == []
        partitions = reader.assignment()
        assert len(partitions) == settings.topic_partitions
        while any(reader.started_at(p) is None for p in partitions):
            assert time.monotonic() < deadline, "where reading starts never learnt"
            reader.consume(100, 0.5)
        assert asked[0] == partitions and len(asked) >= 2
        assert {reader.started_at(p) for p in partitions} == {0}  # nothing committed, empty
        while any(reader.highwater(p) is None for p in partitions):
            assert time.monotonic() < deadline, "no fetch answered"
            reader.consume(100, 0.5)
        assert {reader.highwater(p) for p in partitions} == {0}
    finally:
        reader.close()
