"""``ept dlq replay``: re-feed dead letters that now decode to their original topics."""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import Consumer, Producer

from ept.core.deletions import DeletionView
from ept.core.kafka import ConsumerRole, ProducerRole, consumer_config, producer_config
from ept.core.settings import Settings
from ept.processors.sink.dlq import HEADER_TOPIC, headers_of
from ept.schemas.codec import DecodeError, Decoder
from ept.schemas.validation import problems

REPLAY_GROUP = "ept-dlq-replay"


@dataclass
class ReplayReport:
    replayed: int = 0
    still_invalid: int = 0
    no_origin: int = 0  # no origin header, or one naming another topic than the event's
    deleted: int = 0  # of a deleted account or user: never re-fed


def replay_dead_letters(settings: Settings, dry_run: bool = False, idle_seconds: float = 3.0
                        ) -> ReplayReport:
    """Read the dead-letter topic from the last replay on; produce the messages that now
    decode and validate back to their original topic, which must be their event's own
    topic (a header cannot send a message anywhere else). Messages still invalid stay in
    the dead-letter topic (and are not replayed again); those of a deleted account or user
    are never re-fed. Blocks until the topic is idle."""
    deletions = DeletionView(settings).start()
    if not deletions.wait_loaded(30):
        deletions.close()
        raise RuntimeError(f"{settings.topics.deletions} not read within 30 s: not replaying")
    consumer = Consumer(consumer_config(settings, ConsumerRole.REPLAY, REPLAY_GROUP))
    producer = Producer(producer_config(settings, ProducerRole.REPLAY))
    decoder = Decoder(settings.schema_registry_url)
    report = ReplayReport()
    assigned: list[object] = []  # idle time counts from the group's assignment on
    consumer.subscribe([settings.topics.dlq],
                       on_assign=lambda consumer, partitions: assigned.append(partitions))
    last_message = time.monotonic()
    joining_until = last_message + 60
    try:
        while ((not assigned and time.monotonic() < joining_until)
               or time.monotonic() - last_message < idle_seconds):
            if not assigned:
                last_message = time.monotonic()
            for message in consumer.consume(1000, timeout=0.5):
                if message.error() is not None:
                    continue
                last_message = time.monotonic()
                origin = headers_of(message).get(HEADER_TOPIC)
                if not origin:
                    report.no_origin += 1
                    continue
                try:
                    event = decoder.decode(message.value() or b"")
                    if problems(event.name, event.record):
                        raise DecodeError("invalid values")
                except DecodeError:
                    report.still_invalid += 1
                    continue
                if origin != settings.topics.event(event.name):
                    report.no_origin += 1
                    continue
                if deletions.is_deleted(event.record):
                    report.deleted += 1
                    continue
                report.replayed += 1
                if not dry_run:
                    producer.produce(origin, message.value(), message.key())
        if not dry_run:
            if producer.flush(60) != 0:
                raise RuntimeError("replayed messages not acknowledged; offsets not committed")
            consumer.commit(asynchronous=False) if report.replayed or report.still_invalid else None
    finally:
        consumer.close()
        deletions.close()
    return report
