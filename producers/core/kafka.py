"""The one place that builds Kafka client configurations, by role.

Everything else asks this module for a client configuration (or, for administration,
a client) and never looks at whether the cluster needs SASL or TLS, nor writes
librdkafka options by hand.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from enum import Enum
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from ept.core.settings import SdkSettings, Settings

log = logging.getLogger(__name__)


class ProducerRole(Enum):
    SDK = "sdk"                    # services' events: never expire, batch and compress
    DEAD_LETTERS = "dead_letters"  # the sink's poison messages
    REPLAY = "replay"              # `ept dlq replay` re-feeding event topics
    CONTROL = "control"            # a person's template control (`ept templates`, dashboard)


class ConsumerRole(Enum):
    SINK = "sink"                  # event topics -> ClickHouse, offsets stored by hand
    WORKER_EVENTS = "worker_events"  # event topics -> the worker's signals, the same way
    TOPIC_READER = "topic_reader"  # reads a topic from its log start, commits nothing
    REPLAY = "replay"              # the dead-letter topic, committed after re-feeding


# Large fetches and a deep prefetch queue for the sink: with librdkafka's defaults (1 MB
# per partition per fetch) a backlog is read at a third of this speed, fetch-bound.
SINK_FETCH: dict[str, int] = {
    "fetch.max.bytes": 52_428_800,
    "fetch.message.max.bytes": 8_388_608,
    "queued.min.messages": 100_000,
    "queued.max.messages.kbytes": 131_072,
    # Once the queue is full, fetch again soon after it drains below the bounds, not a
    # second later (the default): with 1 s, reading a backlog stalled on an empty queue
    # and a bare consume ran at a third of its speed (bench-sink).
    "fetch.queue.backoff.ms": 10,
}

_PRODUCERS: dict[ProducerRole, dict[str, Any]] = {
    ProducerRole.SDK: {
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "batch.num.messages": 10_000,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "message.timeout.ms": 0,  # never expire: retry (idempotently) until delivered
        "queue.buffering.max.kbytes": 262_144,
        "reconnect.backoff.max.ms": 2_000,  # find a returning broker within seconds
    },
    ProducerRole.DEAD_LETTERS: {"enable.idempotence": True, "acks": "all", "linger.ms": 50},
    ProducerRole.REPLAY: {"enable.idempotence": True, "acks": "all"},
    ProducerRole.CONTROL: {"enable.idempotence": True, "acks": "all"},
}

_CONSUMERS: dict[ConsumerRole, dict[str, Any]] = {
    ConsumerRole.SINK: {
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "max.poll.interval.ms": 600_000,
        "topic.metadata.refresh.interval.ms": 5_000,
        # Eager (librdkafka's default, named here): a rebalance revokes every partition,
        # and the sink forgets all it has not stored (processors/sink/pause.py).
        "partition.assignment.strategy": "range,roundrobin",
        **SINK_FETCH,
    },
    ConsumerRole.TOPIC_READER: {"enable.auto.commit": False, "auto.offset.reset": "earliest"},
    ConsumerRole.REPLAY: {"enable.auto.commit": False, "auto.offset.reset": "earliest"},
}
# The sink's settings with a shallower prefetch queue: a worker process counts tens of
# thousands of events a second, not the sink's hundreds of thousands, and 16 MB is still
# seconds of its work; the sink's 128 MB, full through a backlog, was most of its RSS.
_CONSUMERS[ConsumerRole.WORKER_EVENTS] = {**_CONSUMERS[ConsumerRole.SINK],
                                          "queued.min.messages": 20_000,
                                          "queued.max.messages.kbytes": 16_384}


def connection_config(settings: SdkSettings) -> dict[str, Any]:
    """librdkafka options that reach ``settings``' cluster (servers, TLS, SASL)."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "security.protocol": settings.kafka_security_protocol.value,
    }
    if settings.kafka_sasl_mechanism is not None:
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism.value
        config["sasl.username"] = settings.kafka_sasl_username
        assert settings.kafka_sasl_password is not None  # checked by SdkSettings
        config["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    for name, key in (
        ("kafka_ssl_ca_location", "ssl.ca.location"),
        ("kafka_ssl_certificate_location", "ssl.certificate.location"),
        ("kafka_ssl_key_location", "ssl.key.location"),
    ):
        value = getattr(settings, name)
        if value is not None:
            config[key] = str(value)
    if settings.kafka_ssl_key_password is not None:
        config["ssl.key.password"] = settings.kafka_ssl_key_password.get_secret_value()
    return config


def producer_config(settings: SdkSettings, role: ProducerRole, **extra: Any) -> dict[str, Any]:
    """A ``confluent_kafka.Producer`` configuration for ``role`` (``extra``: callbacks)."""
    config = {**connection_config(settings), **_PRODUCERS[role], **extra}
    if role is ProducerRole.SDK:
        config.setdefault("queue.buffering.max.messages", settings.producer_queue_max)
        config.setdefault("logger", logging.getLogger("ept.librdkafka"))
    return config


def consumer_config(settings: SdkSettings, role: ConsumerRole, group_id: str,
                    **extra: Any) -> dict[str, Any]:
    """A ``confluent_kafka.Consumer`` configuration for ``role`` in group ``group_id``."""
    config = {**connection_config(settings), **_CONSUMERS[role], "group.id": group_id, **extra}
    if role is ConsumerRole.TOPIC_READER:  # in services too: their logging, not stderr
        config.setdefault("logger", logging.getLogger("ept.librdkafka"))
    return config


def faust_broker_options(settings: SdkSettings) -> dict[str, Any]:
    """Keyword arguments for ``faust.App`` that reach the same cluster as the others."""
    import ssl

    import faust

    servers = ";".join(
        f"kafka://{server.strip()}" for server in settings.kafka_bootstrap.split(",")
    )
    options: dict[str, Any] = {"broker": servers}
    context = None
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(
            cafile=str(settings.kafka_ssl_ca_location) if settings.kafka_ssl_ca_location else None
        )
        if settings.kafka_ssl_certificate_location and settings.kafka_ssl_key_location:
            password = settings.kafka_ssl_key_password
            context.load_cert_chain(
                str(settings.kafka_ssl_certificate_location),
                str(settings.kafka_ssl_key_location),
                password.get_secret_value() if password else None,
            )
    if settings.kafka_sasl_mechanism is not None:
        assert settings.kafka_sasl_password is not None
        options["broker_credentials"] = faust.SASLCredentials(
            username=settings.kafka_sasl_username or "",
            password=settings.kafka_sasl_password.get_secret_value(),
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism.value,
        )
    elif context is not None:
        options["broker_credentials"] = faust.SSLCredentials(context)
    return options


SCOPE_STATE_MESSAGE_BYTES = 16 * 1024 * 1024
"""The largest scope state the worker writes (one changelog message). A state holds every
second counted beyond the one judged last: through a backlog read unevenly (one topic hours
ahead of another, the frontier held by the slower) that is hours of seconds, over the 1 MB
Kafka's clients and topics take by default (the worker crashed on it). About a day of a
busy scope's seconds is 1 MB."""


def topic_config(settings: Settings, name: str) -> dict[str, str]:
    """The topic-level configuration ept creates ``name`` with.

    Event topics are stamped by the broker (LogAppendTime): the worker checks each event
    time against its record's timestamp, and a host with a wrong clock would stamp both
    wrong alike. Event topics and dead letters keep ``EPT_TOPIC_RETENTION_DAYS``: the
    bound on how long raw personal data lives in Kafka. The scopes changelog, the template
    controls, the slow thresholds and the deletions are compacted (only each key's latest
    matters); the scopes changelog takes messages up to :data:`SCOPE_STATE_MESSAGE_BYTES`.
    """
    retention = {"retention.ms": str(settings.topic_retention_days * 86_400_000)}
    if name in settings.topics.events.values():
        return {"message.timestamp.type": "LogAppendTime", **retention}
    if name == settings.topics.dlq:
        return retention
    if name == settings.topics.worker_scopes_changelog:
        return {"cleanup.policy": "compact",
                "max.message.bytes": str(SCOPE_STATE_MESSAGE_BYTES)}
    if name in (settings.topics.template_controls, settings.topics.slow_thresholds,
                settings.topics.deletions):
        return {"cleanup.policy": "compact"}
    return {}


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create ept's missing topics; returns the names created. Blocks on the broker.

    The worker's repartition topic and table changelog are created here rather than by
    Faust: a topic Faust creates at start may not be in the broker's metadata yet when it
    subscribes, and Faust then ignores it for good ("Ignoring missing topic", and for the
    changelog every table write fails with PartitionsMismatch — both seen here).

    Raises KafkaException when the broker cannot be reached or refuses.
    """
    admin = AdminClient(connection_config(settings))
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [name for name in settings.topics.all if name not in existing]
    if not wanted:
        return []
    futures = admin.create_topics([
        NewTopic(name, settings.topic_partitions, settings.topic_replication,
                 config=topic_config(settings, name))
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


def ensure_scope_state_limit(settings: Settings, timeout: float = 30.0) -> None:
    """Bring the scopes changelog's ``max.message.bytes`` up to
    :data:`SCOPE_STATE_MESSAGE_BYTES` when it is lower: one created by an earlier version
    keeps the 1 MB default, and the worker would crash on a larger state. Blocks on the
    broker; never raises. A broker that refuses (a principal without DescribeConfigs and
    AlterConfigs on the topic, as ept's own grants are) or cannot be asked is logged, with
    the command that sets it by hand."""
    topic = settings.topics.worker_scopes_changelog
    admin = AdminClient(connection_config(settings))
    try:
        if _message_limit(admin, topic, timeout) >= SCOPE_STATE_MESSAGE_BYTES:
            return
        change = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
            ConfigEntry("max.message.bytes", str(SCOPE_STATE_MESSAGE_BYTES),
                        incremental_operation=AlterConfigOpType.SET)])
        admin.incremental_alter_configs([change], request_timeout=timeout)[change].result(
            timeout=timeout)
    except (KafkaException, concurrent.futures.TimeoutError) as exc:
        log.warning("could not check or raise max.message.bytes of %s (%r): a scope state "
                    "over 1 MB would stop the worker. Set it by hand: kafka-configs "
                    "--alter --entity-type topics --entity-name %s --add-config "
                    "max.message.bytes=%d", topic, exc, topic, SCOPE_STATE_MESSAGE_BYTES)
        return
    log.warning("raised max.message.bytes of %s to %d (a scope state may be that large)",
                topic, SCOPE_STATE_MESSAGE_BYTES)


def _message_limit(admin: AdminClient, topic: str, timeout: float) -> int:
    """``topic``'s ``max.message.bytes``, asked again while the broker does not know a topic
    just made (for up to ``timeout``). Raises KafkaException or TimeoutError otherwise."""
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    deadline = time.monotonic() + timeout
    while True:
        try:
            described = admin.describe_configs([resource], request_timeout=timeout)
            return int(described[resource].result(timeout=timeout)["max.message.bytes"].value)
        except KafkaException as exc:
            if (exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART
                    or time.monotonic() > deadline):
                raise
            time.sleep(0.2)


def topic_partitions(settings: Settings, topics: list[str], timeout: float = 30.0
                     ) -> dict[str, int]:
    """The partition count of each of ``topics`` as the broker has it. Blocks.

    Raises KafkaException when the broker cannot be reached, LookupError for a topic it
    does not have.
    """
    metadata = AdminClient(connection_config(settings)).list_topics(timeout=timeout).topics
    missing = [topic for topic in topics if topic not in metadata]
    if missing:
        raise LookupError(f"no such topic(s) on {settings.kafka_bootstrap}: {missing}")
    return {topic: len(metadata[topic].partitions) for topic in topics}
