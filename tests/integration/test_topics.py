"""The topics ept creates, on the real broker: what each is created with, and an existing
one brought up to what the worker needs."""

from __future__ import annotations

import time

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from ept.core.kafka import SCOPE_STATE_MESSAGE_BYTES, ensure_scope_state_limit, ensure_topics
from ept.core.settings import Settings


def message_limit(admin: AdminClient, topic: str, expected: int) -> int:
    """``topic``'s ``max.message.bytes``, asked until it is ``expected`` (a topic just made,
    or a change just made, reaches every broker a moment later) or for 30 s."""
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    deadline = time.monotonic() + 30
    limit = None
    while limit != expected and time.monotonic() < deadline:
        try:
            described = admin.describe_configs([resource])[resource].result(timeout=30)
            limit = int(described["max.message.bytes"].value)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
        if limit != expected:
            time.sleep(0.2)
    assert limit is not None, f"{topic} not known to the broker"
    return limit


def test_the_scopes_changelog_takes_a_scope_state_over_a_megabyte(settings: Settings) -> None:
    ensure_topics(settings)
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    changelog = settings.topics.worker_scopes_changelog
    assert message_limit(admin, changelog, SCOPE_STATE_MESSAGE_BYTES) == (
        SCOPE_STATE_MESSAGE_BYTES)
    delivered: list[object] = []
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap,
                         "message.max.bytes": SCOPE_STATE_MESSAGE_BYTES})
    producer.produce(changelog, b"x" * 3_000_000, b"scope",
                     on_delivery=lambda error, _: delivered.append(error))
    assert producer.flush(30) == 0
    assert delivered == [None]


def test_a_changelog_of_an_earlier_version_is_raised_to_the_limit(settings: Settings) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    changelog = settings.topics.worker_scopes_changelog
    created = admin.create_topics([NewTopic(changelog, settings.topic_partitions, 1, config={
        "cleanup.policy": "compact", "max.message.bytes": "1048588"})])
    created[changelog].result(timeout=30)
    assert message_limit(admin, changelog, 1048588) == 1048588
    assert changelog not in ensure_topics(settings)  # there: left as it is
    ensure_scope_state_limit(settings)  # what the worker does at start
    assert message_limit(admin, changelog, SCOPE_STATE_MESSAGE_BYTES) == (
        SCOPE_STATE_MESSAGE_BYTES)
