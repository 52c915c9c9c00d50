"""The Kafka topics of ept, created idempotently with the configured layout."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from deploy.connections import kafka_config
from deploy.settings import Settings
from schemas.registry import EVENT_NAMES


def topic_names(settings: Settings) -> list[str]:
    """Event topics, the alert and dead-letter topics, and the worker's repartition topic.

    The worker's topic is created here rather than by Faust: a topic Faust creates at
    start may not be in the broker's metadata yet when it subscribes, and Faust then
    ignores it for good ("Ignoring missing topic" — seen with a fresh broker).
    """
    return [settings.topic(name) for name in (*EVENT_NAMES, "alerts", "dlq", "worker-signals")]


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create the missing topics; returns the names created. Blocks on the broker.

    Raises KafkaException when the broker cannot be reached or refuses.
    """
    admin = AdminClient(kafka_config(settings))
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [name for name in topic_names(settings) if name not in existing]
    if not wanted:
        return []
    futures = admin.create_topics([
        NewTopic(name, settings.topic_partitions, settings.topic_replication)
        for name in wanted
    ], request_timeout=timeout)
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created
