"""Who may do what on ept's Kafka: a SCRAM user per component, with only its ACLs.

The one table of grants. ``deploy/kubernetes/kafka.yaml``'s KafkaUsers mirror it (a unit
test compares them); :func:`apply_access` writes it to any broker with an authorizer,
which ``tests/integration/test_security.py`` does to prove each grant on a real broker.
Analysts get no user: they read ClickHouse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from ept.core.kafka import connection_config
from ept.core.settings import Settings
from ept.core.topics import Topics


@dataclass(frozen=True)
class Grant:
    """Operations on the resources of one kind whose name is ``name`` (``literal``) or
    starts with it (``prefix``)."""

    resource: str  # "topic", "group" or "cluster"
    name: str
    pattern: str  # "literal" or "prefix"
    operations: tuple[str, ...]  # Kafka's names: "Read", "Write", "Describe", ...


def component_grants(topics: Topics) -> dict[str, list[Grant]]:
    """The grants of each component's user, for ``topics``' names."""
    events = list(topics.events.values())

    def each(names: list[str], *operations: str) -> list[Grant]:
        return [Grant("topic", name, "literal", operations) for name in names]

    idempotent = Grant("cluster", "kafka-cluster", "literal", ("IdempotentWrite",))
    create_missing = Grant("topic", topics.prefix, "prefix", ("Create", "Describe"))
    readers = Grant("group", "ept-", "prefix", ("Read",))  # ept's own topic readers
    return {
        # Render services: publish events, follow the template kill switch and the tuned
        # slow thresholds.
        "ept-sdk": [*each(events, "Write", "Describe"),
                    *each([topics.template_controls, topics.slow_thresholds], "Read",
                          "Describe"), idempotent],
        # The worker: read events; its own topics and group; write alerts and controls.
        "ept-worker": [*each(events, "Read", "Describe"),
                       Grant("topic", f"{topics.prefix}worker-", "prefix",
                             ("Read", "Write", "Describe")),
                       *each([topics.alerts], "Read", "Write", "Describe"),
                       *each([topics.template_controls], "Write", "Describe"),
                       Grant("group", f"{topics.prefix}worker", "literal", ("Read",)),
                       # the event readers' group (ept.processors.worker.event_reader)
                       Grant("group", f"{topics.prefix}worker-events", "literal", ("Read",)),
                       create_missing, readers, idempotent],
        # The sink and its dashboard: read events, deletions, alerts, controls; write
        # dead letters and re-enabled templates.
        "ept-sink": [*each(events, "Read", "Describe"),
                     *each([topics.deletions, topics.alerts], "Read", "Describe"),
                     *each([topics.template_controls], "Read", "Write", "Describe"),
                     *each([topics.dlq], "Write", "Describe"),
                     Grant("group", "ept-sink", "literal", ("Read",)),
                     create_missing, readers, idempotent],
        # The notifier: read alerts.
        "ept-notifier": [*each([topics.alerts], "Read", "Describe"), readers],
        # Operators: ept templates, thresholds, delete-account, dlq replay.
        "ept-admin": [Grant("topic", topics.prefix, "prefix",
                            ("Create", "Describe", "DescribeConfigs")),
                      *each([topics.template_controls, topics.slow_thresholds,
                             topics.deletions], "Read", "Write"),
                      *each([topics.dlq], "Read"), *each(events, "Write"),
                      readers, idempotent],
    }


def parse_passwords(text: str) -> dict[str, str]:
    """The ``user=password`` lines of a passwords file, by user (the password stripped of
    surrounding blanks); lines starting with ``#`` or holding no ``=`` are skipped."""
    return {user: password.strip() for user, password in (
        line.split("=", 1) for line in text.splitlines()
        if "=" in line and not line.lstrip().startswith("#"))}


def missing_passwords(topics: Topics, passwords: Mapping[str, str]) -> list[str]:
    """The component users of :func:`component_grants` ``passwords`` has no entry for,
    sorted."""
    return sorted(set(component_grants(topics)) - passwords.keys())


def set_scram_passwords(admin: AdminClient, passwords: dict[str, str],
                        timeout_s: float = 30.0) -> None:
    """Create or reset SCRAM-SHA-512 users through the admin API (a password on a command
    line would show in every process listing). Blocks; raises KafkaException."""
    upserts: list[UserScramCredentialAlteration] = [UserScramCredentialUpsertion(
        user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), password.encode())
        for user, password in passwords.items()]
    for future in admin.alter_user_scram_credentials(upserts,
                                                     request_timeout=timeout_s).values():
        future.result(timeout=timeout_s)


_RESOURCE = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP,
             "cluster": ResourceType.BROKER}
_PATTERN = {"literal": ResourcePatternType.LITERAL, "prefix": ResourcePatternType.PREFIXED}
_OPERATION = {"Read": AclOperation.READ, "Write": AclOperation.WRITE,
              "Create": AclOperation.CREATE, "Describe": AclOperation.DESCRIBE,
              "DescribeConfigs": AclOperation.DESCRIBE_CONFIGS,
              "IdempotentWrite": AclOperation.IDEMPOTENT_WRITE}


def apply_access(settings: Settings, passwords: dict[str, str], timeout_s: float = 30.0
                 ) -> None:
    """Create (or reset) each component's SCRAM-SHA-512 user with its password and its
    grants, as ``settings``' (admin) client. Blocks; raises KafkaException when the broker
    refuses, KeyError for a component without a password."""
    admin = AdminClient(connection_config(settings))
    grants = component_grants(settings.topics)
    set_scram_passwords(admin, {user: passwords[user] for user in grants}, timeout_s)
    bindings = [AclBinding(_RESOURCE[grant.resource], grant.name, _PATTERN[grant.pattern],
                           f"User:{user}", "*", _OPERATION[operation],
                           AclPermissionType.ALLOW)
                for user, user_grants in grants.items() for grant in user_grants
                for operation in grant.operations]
    for future in admin.create_acls(bindings, request_timeout=timeout_s).values():
        future.result(timeout=timeout_s)
