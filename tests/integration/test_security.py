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
