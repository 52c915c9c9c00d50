"""SASL/SCRAM end to end and secrets kept out of logs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer

from ept import Tracker
from ept.core.kafka import (
    ConsumerRole,
    ProducerRole,
    consumer_config,
    ensure_topics,
    producer_config,
)
from ept.core.settings import load_settings
from ept.deploy.broker import LocalBroker
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
USER, PASSWORD = "ept-service", "s3cret-Scram-Pa55word"
API_TOKEN = "tok-0123456789-never-log-me"


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    port = free_port()
    while not all(_free(p) for p in (port + 2,)):
        port = free_port()
    broker = LocalBroker(tmp_path_factory.mktemp("sasl-kafka"), port, (USER, PASSWORD))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def _free(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def sasl_environment(broker: LocalBroker, password: str = PASSWORD) -> dict[str, str]:
    assert broker.sasl_bootstrap is not None
    return {"EPT_KAFKA_BOOTSTRAP": broker.sasl_bootstrap,
            "EPT_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "EPT_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "EPT_KAFKA_SASL_USERNAME": USER, "EPT_KAFKA_SASL_PASSWORD": password}


def test_settings_pass_scram_through_to_the_broker(sasl_broker: LocalBroker,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    for name, value in sasl_environment(sasl_broker).items():
        monkeypatch.setenv(name, value)
    settings = load_settings(topic_prefix="sasl.", state_dir=tmp_path, topic_partitions=1)
    ensure_topics(settings)
    tracker = Tracker(settings, strict=True)
    tracker.track_render_completed("r1", "tpl", "still", 10.0)
    assert tracker.flush(30) == 0
    tracker.close()
    consumer = Consumer(consumer_config(settings, ConsumerRole.TOPIC_READER, "sasl-reader"))
    consumer.subscribe([settings.topics.event("render_completed")])
    message = None
    deadline = time.monotonic() + 30
    while message is None and time.monotonic() < deadline:
        polled = consumer.poll(0.5)
        if polled is not None and polled.error() is None:
            message = polled
    consumer.close()
    assert message is not None

    monkeypatch.setenv("EPT_KAFKA_SASL_PASSWORD", "wrong-password")
    wrong = load_settings()
    producer = Producer(producer_config(wrong, ProducerRole.REPLAY))
    with pytest.raises(KafkaException):
        producer.list_topics(timeout=5)


def test_worker_and_sink_over_sasl_never_log_secrets(sasl_broker: LocalBroker,
                                                     tmp_path: Path) -> None:
    environment = {**os.environ, **sasl_environment(sasl_broker),
                   "EPT_TOPIC_PREFIX": "secrets.", "EPT_STATE_DIR": str(tmp_path / "state"),
                   "EPT_API_TOKEN": API_TOKEN, "EPT_WORKER_PORT": str(free_port()),
                   "EPT_SINK_PORT": str(free_port()), "EPT_TOPIC_PARTITIONS": "2",
                   "EPT_SQL_PORT": str(free_port()),
                   "DEBUG_TRACKING": "true"}
    logs = {name: tmp_path / f"{name}.log" for name in ("worker", "sink")}
    processes = [subprocess.Popen([sys.executable, "-m", "ept.deploy.cli", name, "-v"]
                                  if name == "sink" else
                                  [sys.executable, "-m", "ept.deploy.cli", name, "-l", "debug"],
                                  env=environment, cwd=REPO, stdout=open(logs[name], "wb"),  # noqa: SIM115
                                  stderr=subprocess.STDOUT) for name in logs]
    try:
        deadline = time.monotonic() + 120
        while b"[^Worker]: Ready" not in logs["worker"].read_bytes():
            assert time.monotonic() < deadline, logs["worker"].read_text()[-2000:]
            assert all(p.poll() is None for p in processes)
            time.sleep(0.5)
        settings = load_settings(**{k.removeprefix("EPT_").lower(): v for k, v in
                                    sasl_environment(sasl_broker).items()},
                                 topic_prefix="secrets.", state_dir=tmp_path / "client")
        tracker = Tracker(settings)
        for index in range(20):
            tracker.track_api_error("/api/render", 502, f"upstream said password={PASSWORD}",
                                    None, 3.0)
            tracker.track_render_completed(f"r{index}", "tpl", "video", 1.0)
        assert tracker.flush(30) == 0
        tracker.close()
        deadline = time.monotonic() + 90
        while b"alert firing" not in logs["worker"].read_bytes():
            assert time.monotonic() < deadline, "no alert over SASL"
            time.sleep(0.5)
        check_every_route_needs_the_token(f"http://127.0.0.1:{environment['EPT_WORKER_PORT']}",
                                          f"http://127.0.0.1:{environment['EPT_SINK_PORT']}")
    finally:
        for process in processes:
            process.terminate()
            process.wait(60)
    text = "".join(path.read_text(errors="replace") for path in logs.values())
    assert "alert firing" in text  # the worker did its job over SASL
    assert PASSWORD not in text and API_TOKEN not in text


def http_status(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=30) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def check_every_route_needs_the_token(worker: str, sink: str) -> None:
    for url in (f"{worker}/stats", f"{worker}/metrics", f"{worker}/", f"{sink}/api/alerts",
                f"{sink}/api/templates", f"{sink}/api/live", f"{sink}/api/queries",
                f"{sink}/api/query/ingestion-summary"):
        assert http_status(url) == 401, url
        assert http_status(f"{url}?token={API_TOKEN}") == 401, url  # never in a URL
        assert http_status(url, API_TOKEN) in (200, 404), url
    assert http_status(f"{worker}/stats", API_TOKEN) == 200
    for faust_view in ("/router/", "/table/scopes/", "/graph/"):  # would dump the table
        assert http_status(f"{worker}{faust_view}", API_TOKEN) == 404, faust_view
    assert http_status(f"{worker}/health") == http_status(f"{sink}/health") == 200
    with urllib.request.urlopen(f"{sink}/", timeout=30) as page:  # holds no data
        policy = page.headers["Content-Security-Policy"]
        assert "script-src 'nonce-" in policy and "frame-ancestors 'none'" in policy
        nonce = policy.split("'nonce-")[1].split("'")[0]
        assert f'<script nonce="{nonce}">' in page.read().decode()


@pytest.fixture(scope="module")
def authorizing_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A broker whose SASL clients may do only what ACLs grant them."""
    port = free_port()
    while not _free(port + 2):
        port = free_port()
    broker = LocalBroker(tmp_path_factory.mktemp("acl-kafka"), port, (USER, PASSWORD),
                         authorize=True)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def test_each_component_may_do_only_what_its_grants_allow(
        authorizing_broker: LocalBroker, tmp_path: Path) -> None:
    """deploy/kafka_access.py's table (which the Kubernetes KafkaUsers mirror), written to a
    real broker with an authorizer: each component's user tried on the topics it needs
    and on those it must not touch."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

    from ept.core.kafka import ensure_scope_state_limit, ensure_topics
    from ept.deploy.kafka_access import component_grants

    admin = load_settings(kafka_bootstrap=authorizing_broker.bootstrap, topic_prefix="ept.",
                          topic_partitions=1)
    ensure_topics(admin)
    passwords = {user: f"{user}-password-0123" for user in component_grants(admin.topics)}
    password_file = tmp_path / "passwords"
    password_file.write_text("".join(f"{user}={secret}\n" for user, secret in passwords.items()))
    applied = subprocess.run(
        [sys.executable, "-m", "ept.deploy.cli", "kafka", "access", "--passwords",
         str(password_file)], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "EPT_KAFKA_BOOTSTRAP": authorizing_broker.bootstrap,
             "EPT_TOPIC_PREFIX": "ept."}, check=False)
    assert applied.returncode == 0, applied.stderr
    assert "ept-sdk" in applied.stdout and "password-0123" not in applied.stdout
    topics = admin.topics
    seed = Producer({"bootstrap.servers": authorizing_broker.bootstrap})  # the operator
    for topic in topics.all:  # something to read everywhere: a refusal is then the ACL
        seed.produce(topic, b"seed", b"k", partition=0)
    assert seed.flush(30) == 0

    def client(user: str) -> dict[str, str]:
        assert authorizing_broker.sasl_bootstrap is not None
        return {"bootstrap.servers": authorizing_broker.sasl_bootstrap,
                "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": user, "sasl.password": passwords[user]}

    def can_write(user: str, topic: str) -> bool:
        outcome: list[KafkaError | None] = []

        def delivered(error: KafkaError | None, message: object) -> None:
            outcome.append(error)

        producer = Producer({**client(user), "enable.idempotence": True, "acks": "all",
                             "message.timeout.ms": 15_000})
        producer.produce(topic, b"probe", b"k", on_delivery=delivered)
        try:
            producer.flush(20)
        except KafkaException:  # e.g. no IdempotentWrite: a fatal refusal
            return False
        # `is None`: KafkaError's == fails on None (a TypeError left pending)
        return len(outcome) == 1 and outcome[0] is None

    def can_read(user: str, topic: str) -> bool:
        consumer = Consumer({**client(user), "group.id": f"ept-probe-{user}",
                             "enable.auto.commit": False})
        consumer.assign([TopicPartition(topic, 0, 0)])
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                for message in consumer.consume(10, timeout=1.0):
                    error = message.error()
                    if error is None:
                        return True
                    if error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                        return False
            return False
        finally:
            consumer.close()

    render_failed = topics.event("render_failed")
    assert can_write("ept-sdk", render_failed)
    assert not can_write("ept-sdk", topics.alerts)          # no forged alerts
    assert not can_write("ept-sdk", topics.dlq)
    assert can_read("ept-sdk", topics.template_controls)     # the kill switch
    assert not can_read("ept-sdk", render_failed)           # no other service's events
    assert can_read("ept-worker", render_failed) and can_write("ept-worker", topics.alerts)
    assert not can_write("ept-worker", topics.dlq)
    assert can_write("ept-sink", topics.dlq) and not can_write("ept-sink", topics.alerts)
    assert can_read("ept-sink", topics.deletions) and not can_write("ept-sink", render_failed)
    assert can_read("ept-notifier", topics.alerts)
    assert not can_write("ept-notifier", topics.alerts)
    assert not can_read("ept-notifier", render_failed)
    assert can_write("ept-admin", topics.deletions) and can_write("ept-admin", render_failed)
    assert not can_write("ept-admin", topics.alerts)

    # What the sink and the worker do at start works within their grants: every topic is
    # there, and the worker's check of the changelog's message limit (DescribeConfigs,
    # not granted) is logged, not raised.
    for user in ("ept-worker", "ept-sink"):
        as_user = admin.replace(kafka_bootstrap=authorizing_broker.sasl_bootstrap,
                                kafka_security_protocol="SASL_PLAINTEXT",
                                kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username=user,
                                kafka_sasl_password=passwords[user])
        assert ensure_topics(as_user) == []
    ensure_scope_state_limit(as_user.replace(kafka_sasl_username="ept-worker",
                                             kafka_sasl_password=passwords["ept-worker"]))
