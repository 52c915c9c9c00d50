"""The worker's bulk event reader against the real broker."""

from __future__ import annotations

import time

from confluent_kafka import Producer, TopicPartition

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


def test_a_revoked_partition_has_no_high_water_mark(settings: Settings) -> None:
    """librdkafka keeps answering with a revoked partition's last high-water mark, which
    no fetch updates anymore: a partition read up to it would count as caught up until
    the revocation reached the collector, while its new owner read what came since (the
    worker joining mid-backlog lost counts so once the next batch was read ahead)."""
    ensure_topics(settings)
    topic = settings.topics.event("render_failed")
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for partition in range(settings.topic_partitions):
        producer.produce(topic, b"x", partition=partition)
    assert producer.flush(10) == 0
    everything = {(topic, partition) for partition in range(settings.topic_partitions)}
    first = EventReader(settings, [topic])
    second = None
    try:
        deadline = time.monotonic() + 60
        while first.assignment() != everything or any(first.highwater(p) != 1
                                                      for p in everything):
            assert time.monotonic() < deadline, "the first reader never read every partition"
            first.consume(100, 0.5)
        second = EventReader(settings, [topic])
        while not second.assignment() or first.assignment() == everything:
            assert time.monotonic() < deadline, "no rebalance"
            first.consume(100, 0.2)
            second.consume(100, 0.2)
        revoked = everything - first.assignment()
        assert revoked
        for partition in revoked:
            assert first.highwater(partition) is None
            # what librdkafka itself still says: the test could fail
            assert first._consumer.get_watermark_offsets(TopicPartition(*partition),
                                                         cached=True)[1] == 1
        assert all(first.highwater(p) == 1 for p in first.assignment())
    finally:
        first.close()
        if second is not None:
            second.close()
