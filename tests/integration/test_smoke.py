"""Smoke tests that prove the parts are real: Kafka broker, ClickHouse engine, Faust."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

from clickhouse_connect.driver.client import Client
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from ept.deploy.broker import KAFKA_VERSION, LocalBroker


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(timeout=30)


def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True, "linger.ms": 5})
    for index, value in enumerate(values):
        producer.produce(topic, value, key=str(index % 17).encode())
    assert producer.flush(60) == 0


def consume(bootstrap: str, topic: str, group: str, expected: int,
            timeout: float = 60.0) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(values) < expected and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=0.5):
                assert message.error() is None, message.error()
                values.append(message.value())
        if values:
            consumer.commit(asynchronous=False)
        # Nothing more than expected arrives.
        values.extend(m.value() for m in consumer.consume(1000, timeout=1.0) if not m.error())
    finally:
        consumer.close()
    return values


def test_produce_consume_resume_from_committed_offsets(kafka: str, unique: str) -> None:
    topic = f"{unique}.smoke"
    create_topic(kafka, topic, 3)
    first = [f"m{i}".encode() for i in range(10_000)]
    produce(kafka, topic, first)

    assert sorted(consume(kafka, topic, f"{unique}-g", 10_000)) == sorted(first)

    later = [f"later{i}".encode() for i in range(100)]
    produce(kafka, topic, later)
    assert sorted(consume(kafka, topic, f"{unique}-g", 100)) == sorted(later)

    admin = AdminClient({"bootstrap.servers": kafka})
    assert len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 3


def test_broker_restart_keeps_messages(kafka: str, native_broker: LocalBroker,
                                       unique: str) -> None:
    topic = f"{unique}.durable"
    create_topic(kafka, topic, 3)
    values = [f"d{i}".encode() for i in range(5_000)]
    produce(kafka, topic, values)
    pid_before = native_broker.pid()

    assert native_broker.stop()
    assert native_broker.pid() is None
    native_broker.start()
    assert native_broker.pid() not in (None, pid_before)

    assert sorted(consume(kafka, topic, f"{unique}-after", 5_000)) == sorted(values)


def test_clickhouse_mergetree_with_ttl(clickhouse: Client) -> None:
    clickhouse.command("""
        CREATE TABLE smoke (ts DateTime64(3, 'UTC'), id UInt64, name LowCardinality(String))
        ENGINE = MergeTree PARTITION BY toDate(ts) ORDER BY (ts, id)
        TTL toDateTime(ts) + INTERVAL 30 DAY SETTINGS ttl_only_drop_parts = 1
    """)
    now = dt.datetime.now(dt.UTC)
    rows = [[now, i, f"n{i % 7}"] for i in range(100_000)]
    clickhouse.insert("smoke", rows, column_names=["ts", "id", "name"])

    result = clickhouse.query("SELECT count(), sum(id), uniqExact(name) FROM smoke")
    assert result.result_rows == [(100_000, sum(range(100_000)), 7)]
    assert "TTL" in clickhouse.command("SHOW CREATE TABLE smoke")


def test_faust_agent_on_the_broker(kafka: str, unique: str) -> None:
    source, target = f"{unique}.echo-in", f"{unique}.echo-out"
    create_topic(kafka, source, 1)
    create_topic(kafka, target, 1)
    environment = {**os.environ, "ECHO_APP_ID": f"{unique}-echo", "ECHO_BOOTSTRAP": kafka,
                   "ECHO_SOURCE": source, "ECHO_TARGET": target}
    worker = subprocess.Popen(
        [sys.executable, "-m", "faust", "-A", "tests.integration.faust_echo_app", "worker",
         "-l", "warn"],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        values = [f"hello {i}".encode() for i in range(50)]
        produce(kafka, source, values)
        received = consume(kafka, target, f"{unique}-reader", 50, timeout=90)
    finally:
        worker.terminate()
        try:
            output, _ = worker.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            output, _ = worker.communicate()
    assert sorted(received) == sorted(v.upper() for v in values), output.decode()[-3000:]


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie awaiting its reaper is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_broker_cli_lifecycle(tmp_path: Path) -> None:
    from tests.conftest import free_port

    port = str(free_port())
    data_dir = str(tmp_path / "kafka")

    def ept(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ept.deploy.cli", "broker", *args,
                               "--port", port, "--data-dir", data_dir],
                              capture_output=True, text=True, check=False, timeout=180)

    try:
        started = ept("start")
        assert started.returncode == 0, started.stderr
        again = ept("start")  # idempotent
        assert again.returncode == 0 and again.stdout == started.stdout

        status = ept("status")
        assert status.returncode == 0
        assert f"Apache Kafka {KAFKA_VERSION}" in status.stdout
        assert f"127.0.0.1:{port}" in status.stdout and data_dir in status.stdout
        pid = LocalBroker(Path(data_dir), int(port)).pid()
        assert pid is not None
    finally:
        stopped = ept("stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not _running(pid)
    after = ept("status")
    assert after.returncode == 1 and "not running" in after.stdout
