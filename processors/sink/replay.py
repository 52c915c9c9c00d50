"""``ept dlq replay``: re-feed dead letters that now decode to their original topics."""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import Consumer, Producer

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
    no_origin: int = 0


def replay_dead_letters(settings: Settings, dry_run: bool = False, idle_seconds: float = 3.0
                        ) -> ReplayReport:
    """Read the dead-letter topic from the last replay on; produce the messages that now
    decode and validate back to their original topic. Messages still invalid stay in the
    dead-letter topic (and are not replayed again). Blocks until the topic is idle."""
    consumer = Consumer(consumer_config(settings, ConsumerRole.REPLAY, REPLAY_GROUP))
    producer = Producer(producer_config(settings, ProducerRole.REPLAY))
    decoder = Decoder(settings.schema_registry_url)
    report = ReplayReport()
    consumer.subscribe([settings.topics.dlq])
    last_message = time.monotonic()
    try:
        while time.monotonic() - last_message < idle_seconds:
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
                report.replayed += 1
                if not dry_run:
                    producer.produce(origin, message.value(), message.key())
        if not dry_run:
            if producer.flush(60) != 0:
                raise RuntimeError("replayed messages not acknowledged; offsets not committed")
            consumer.commit(asynchronous=False) if report.replayed or report.still_invalid else None
    finally:
        consumer.close()
    return report
