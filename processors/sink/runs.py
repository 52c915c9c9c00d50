"""The unit the sink's steps pass on: a run of one partition's consecutive messages.

librdkafka hands consumed messages out partition by partition; each step does its
per-partition lookups once per run, not once per message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from confluent_kafka import KafkaError, Message

log = logging.getLogger("ept.sink")


class PartitionRun:
    """Consecutive messages of ``topic``'s ``partition``, in offset order, as one
    ``consume`` returned them. ``next_offset`` follows the last one: the offset to commit
    once the run is dealt with, whatever the steps did with its messages (stored, skipped,
    dropped, dead-lettered)."""

    __slots__ = ("messages", "next_offset", "partition", "topic")

    def __init__(self, topic: str, partition: int, messages: list[Message],
                 next_offset: int) -> None:
        self.topic = topic
        self.partition = partition
        self.messages = messages
        self.next_offset = next_offset

    @property
    def source(self) -> tuple[str, int]:
        return self.topic, self.partition


def partition_runs(messages: list[Message]) -> Iterator[PartitionRun]:
    """Split consumed ``messages`` into runs of one partition. Messages carrying an error
    are left out (logged, unless they only say a partition's end was reached). Never
    blocks, never raises."""
    run: list[Message] = []
    topic, partition, next_offset = "", -1, 0
    for message in messages:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("sink: consumer error: %s", error)
            continue
        if message.partition() != partition or message.topic() != topic:
            if run:
                yield PartitionRun(topic, partition, run, next_offset)
            topic, partition, run = message.topic() or "", message.partition() or 0, []
        run.append(message)
        next_offset = (message.offset() or 0) + 1
    if run:
        yield PartitionRun(topic, partition, run, next_offset)
