"""Fixtures for the real Kafka broker and the real ClickHouse engine.

Each service is chosen in this order:

1. a running service named by an environment variable
   (``EPT_TEST_KAFKA_BOOTSTRAP``, ``EPT_TEST_CLICKHOUSE_URL``);
2. testcontainers, when a Docker engine answers;
3. the native broker (``deploy.broker.LocalBroker``, one per test session) and the
   embedded ClickHouse engine (chdb, one data directory per test session).

Every test gets its own topic prefix, consumer groups and ClickHouse database.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hypothesis
import pytest
from clickhouse_connect.driver.client import Client

from ept.core.settings import Settings, load_settings
from ept.deploy.broker import LocalBroker
from ept.processors.storage.connection import clickhouse_client

# Property tests judge results, never speed: on a loaded 2-core CI machine Hypothesis's
# "too slow" health check failed a run whose every example passed.
hypothesis.settings.register_profile("ept", deadline=None,
                                     suppress_health_check=[hypothesis.HealthCheck.too_slow])
hypothesis.settings.load_profile("ept")


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


def free_port() -> int:
    """A port that is free on 127.0.0.1 together with the next one (broker + controller)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port < 65000:
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                    return port
                except OSError:
                    continue


@dataclass
class KafkaService:
    bootstrap: str
    broker: LocalBroker | None  # set when the test session runs the native broker
    kind: str


@pytest.fixture(scope="session")
def kafka_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaService]:
    external = os.environ.get("EPT_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield KafkaService(external, None, "external")
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield KafkaService(container.get_bootstrap_server(), None, "testcontainers")
        return
    broker = LocalBroker(tmp_path_factory.mktemp("kafka"), free_port())
    broker.start()
    try:
        yield KafkaService(broker.bootstrap, broker, "native Apache Kafka")
    finally:
        broker.stop()


@pytest.fixture
def kafka(kafka_service: KafkaService) -> str:
    """Bootstrap address of the real Kafka broker."""
    return kafka_service.bootstrap


@pytest.fixture
def native_broker(kafka_service: KafkaService) -> LocalBroker:
    """The session's native broker, for tests that stop and restart it."""
    if kafka_service.broker is None:
        pytest.skip(f"needs the native broker to restart it (running against {kafka_service.kind})")
    return kafka_service.broker


@pytest.fixture
def unique() -> str:
    """A short unique name for this test's topics, groups and database."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def clickhouse_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    external = os.environ.get("EPT_TEST_CLICKHOUSE_URL")
    if external:
        yield load_settings(clickhouse_url=external)
        return
    if _docker_answers():
        from testcontainers.clickhouse import ClickHouseContainer

        with ClickHouseContainer() as container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(8123)
            yield load_settings(clickhouse_url=(
                f"http://{container.username}:{container.password}@{host}:{port}/default"))
        return
    yield load_settings(clickhouse_path=tmp_path_factory.mktemp("clickhouse"))


@pytest.fixture
def clickhouse(clickhouse_settings: Settings, unique: str) -> Iterator[Client]:
    """A ClickHouse client on a fresh database, dropped after the test."""
    admin = clickhouse_client(clickhouse_settings)
    admin.command(f"CREATE DATABASE {unique}")
    try:
        yield clickhouse_client(clickhouse_settings, database=unique)
    finally:
        admin.command(f"DROP DATABASE IF EXISTS {unique}")


@pytest.fixture
def settings(kafka: str, clickhouse_settings: Settings, unique: str, tmp_path: Path) -> Settings:
    """Settings that point every component at this test's own topics and state."""
    return load_settings(
        kafka_bootstrap=kafka,
        topic_prefix=f"{unique}.",
        state_dir=tmp_path / "state",
        clickhouse_url=clickhouse_settings.clickhouse_url,
        clickhouse_path=clickhouse_settings.clickhouse_path,
        strict=True,
        topic_partitions=3,
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by folder: tests/unit -> unit, tests/integration -> integration."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "unit" in parts:
            item.add_marker(pytest.mark.unit)
        elif "integration" in parts:
            item.add_marker(pytest.mark.integration)
