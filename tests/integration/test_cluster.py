"""The Kafka path on a real three-broker KRaft cluster: topics with 3 replicas and
``min.insync.replicas=2``; while the SDK publishes, the leader of a partition is SIGKILLed
and later restarted. Nothing the SDK accepted is lost or duplicated in ClickHouse, and
the worker's alerts are those of a healthy run."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from ept import Tracker
from ept.core.kafka import ensure_topics
from ept.core.settings import load_settings
from ept.deploy.broker import LocalCluster
from tests.components import Component, summary
from tests.conftest import free_port
from tests.helpers import read_topics

EVENTS = 6_000
RULES = """
[[rules]]
name = "template_failures"
kind = "template_failures"
scopes = ["template"]
threshold = 3
resolve_threshold = 0
window_minutes = 1
no_data = "resolve"  # the failing template is not rendered again: its alert resolves
severity = "high"
action = "disable_template"
"""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    running = LocalCluster(tmp_path / "cluster", [free_port() for _ in range(3)])
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_a_leader_killed_mid_stream_loses_and_duplicates_nothing(cluster: LocalCluster,
                                                                  tmp_path: Path) -> None:
    settings = load_settings(kafka_bootstrap=cluster.bootstrap, topic_prefix="cluster.",
                             topic_partitions=3, topic_replication=3,
                             state_dir=tmp_path / "client")
    ensure_topics(settings)
    topic = settings.topics.event("render_completed")
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    # A topic just created shows in a broker's metadata a moment before its partitions
    # and their leaders do (one run here found no partition 0 below: KeyError).
    deadline = time.monotonic() + 30
    while True:
        metadata = admin.list_topics(topic, timeout=30).topics[topic]
        partitions = metadata.partitions.values()
        if len(partitions) == 3 and all(p.leader >= 0 for p in partitions):
            break
        assert time.monotonic() < deadline, f"{topic} has no leaders: {metadata.partitions}"
        time.sleep(0.2)
    assert all(len(p.replicas) == 3 for p in metadata.partitions.values())
    config = admin.describe_configs([ConfigResource("topic", topic)])
    effective = next(iter(config.values())).result(timeout=30)
    assert effective["min.insync.replicas"].value == "2"

    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    environment = {**os.environ, "EPT_KAFKA_BOOTSTRAP": cluster.bootstrap,
                   "EPT_TOPIC_PREFIX": settings.topic_prefix, "EPT_TOPIC_PARTITIONS": "3",
                   "EPT_TOPIC_REPLICATION": "3", "EPT_STATE_DIR": str(tmp_path / "state"),
                   "EPT_CLICKHOUSE_PATH": str(tmp_path / "clickhouse"),
                   "EPT_SINK_PORT": str(free_port()), "EPT_WORKER_PORT": str(free_port()),
                   "EPT_SQL_PORT": str(free_port()), "EPT_RULES_FILE": str(rules)}
    environment.pop("EPT_CLICKHOUSE_URL", None)
    sink = Component(["sink"], environment, tmp_path / "sink.log")
    worker = Component(["worker"], environment, tmp_path / "worker.log")
    sink.start()
    worker.start()
    # The broker is killed mid-stream, not mid-start: a worker that cannot reach a broker
    # while it starts exits, and is restarted by its supervisor (below, as by ept run).
    worker.wait_logged(b"[^Worker]: Ready")
    tracker = Tracker(settings, service="cluster")
    published = 0
    stop_heartbeat = threading.Event()

    def publish() -> None:
        nonlocal published
        for number in range(EVENTS):
            if number < 6:  # an incident: one template fails 6 times
                tracker.track_render_failed(f"c{number}", "codec_error", "Encoding failed",
                                            "tpl_cluster", 10.0)
            else:
                tracker.track_render_completed(f"c{number}", f"tpl{number % 20}", "still", 1.0)
            published += 1
            if number % 100 == 0:
                time.sleep(0.3)  # ~20 s of traffic: the kill lands mid-stream

    def heartbeat() -> None:  # event time moves on, so the incident resolves
        while not stop_heartbeat.wait(1.0):
            tracker.track_api_request_completed("/api/health-of-cluster", "GET", 200, 1.0)

    publisher = threading.Thread(target=publish)
    helper = threading.Thread(target=heartbeat, daemon=True)
    publisher.start()
    helper.start()
    try:
        time.sleep(5)
        leader = metadata.partitions[0].leader
        victim = cluster.node(leader)
        assert victim.kill()  # SIGKILL: no clean shutdown, no flush
        time.sleep(8)
        victim.start()
        publisher.join()

        alerts: list[dict[str, object]] = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            worker.ensure_running()
            alerts = [json.loads(m.value()) for m in read_topics(
                cluster.bootstrap, [settings.topics.alerts], timeout=10, idle=1.5)]
            if alerts and alerts[-1]["status"] == "resolved":
                break
            time.sleep(3)
        stop_heartbeat.set()
        assert tracker.flush(120) == 0
        stats = tracker.get_error_performance_stats()
        accepted = stats.delivered
        assert stats.dropped == 0 and stats.rejected == 0, stats
        rows = distinct = -1
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            sink.ensure_running()
            rows, distinct = summary(int(environment["EPT_SINK_PORT"]))
            if rows >= accepted:
                time.sleep(5)
                rows, distinct = summary(int(environment["EPT_SINK_PORT"]))
                break
            time.sleep(2)
    finally:
        stop_heartbeat.set()
        tracker.close(10)
        sink.stop()
        worker.stop()

    print(f"\ncluster: {accepted} events, leader {leader} killed; "
          f"lost {accepted - distinct}, duplicated {rows - distinct}")
    assert (rows, distinct) == (accepted, accepted)
    assert published <= accepted
    told = [(a["rule"], a["labels"], a["status"]) for a in alerts
            if not a.get("renotify") and not a.get("ahead")]  # the frontier's notices
    assert told == [("template_failures", {"template_id": "tpl_cluster"}, "firing"),
                    ("template_failures", {"template_id": "tpl_cluster"}, "resolved")]
