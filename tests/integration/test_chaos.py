"""Chaos soak: publish continuously while the broker, the sink and the worker are killed.

``make test`` runs it with EPT_SOAK_EVENTS (default 20,000); ``make soak`` with 1,000,000.
The embedded engine lives inside the sink process, so killing the sink also takes its
ClickHouse down; a ClickHouse outage with the sink alive is covered by
test_sink.py::test_clickhouse_unavailable_pauses_and_loses_nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from ept import Tracker
from ept.core.kafka import ensure_topics
from ept.core.settings import Settings
from ept.deploy.broker import LocalBroker
from tests.components import Component, summary
from tests.conftest import free_port
from tests.helpers import end_offsets, read_topics
from tests.worker_process import log_digest, progress_lines

REPO = Path(__file__).resolve().parents[2]
SOAK_EVENTS = int(os.environ.get("EPT_SOAK_EVENTS", "20000"))
PUBLISHERS = 4
KILL_ROUNDS = 3  # at least: each round kills the broker, then the sink, then the worker
RSS_LIMITS_MB = {"sink": 2048, "worker": 1024, "broker": 1536}
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


@pytest.mark.slow
def test_chaos_soak_loses_and_duplicates_nothing(settings: Settings, native_broker: LocalBroker,
                                                 tmp_path: Path) -> None:
    ensure_topics(settings)
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    sink_port, worker_port = free_port(), free_port()
    environment = {**os.environ, "EPT_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                   "EPT_TOPIC_PREFIX": settings.topic_prefix,
                   "EPT_TOPIC_PARTITIONS": str(settings.topic_partitions),
                   "EPT_STATE_DIR": str(tmp_path / "state"),
                   "EPT_CLICKHOUSE_PATH": str(tmp_path / "clickhouse"),
                   "EPT_SINK_PORT": str(sink_port), "EPT_WORKER_PORT": str(worker_port),
                   "EPT_SQL_PORT": str(free_port()),
                   "EPT_SINK_BATCH_ROWS": "20000", "EPT_RULES_FILE": str(rules)}
    sink = Component(["sink"], environment, tmp_path / "sink.log")
    worker = Component(["worker"], environment, tmp_path / "worker.log")
    sink.start()
    worker.start()

    trackers = [Tracker(settings, service=f"chaos-{i}") for i in range(PUBLISHERS)]
    published = [0] * PUBLISHERS
    stop_heartbeat = threading.Event()
    peak = dict.fromkeys(RSS_LIMITS_MB, 0.0)

    def publish(index: int) -> None:
        tracker = trackers[index]
        per_thread = SOAK_EVENTS // PUBLISHERS
        pace = max(45.0 / per_thread, 0.0)  # spread over >= 45 s so the kills land mid-stream
        for number in range(per_thread):
            if index == 0 and number < 8:  # an incident: one template fails 8 times
                tracker.track_render_failed(f"p{index}-{number}", "codec_error", "Encoding failed",
                                            "tpl_chaos", 10.0)
            else:
                tracker.track_render_completed(f"p{index}-{number}", f"tpl{number % 50}",
                                               "still", 10.0)
            published[index] += 1
            if number % 100 == 0:
                time.sleep(pace * 100)

    def heartbeat() -> None:  # keeps event time moving so the incident's alert resolves
        tracker = trackers[0]
        while not stop_heartbeat.wait(1.0):
            tracker.track_api_request_completed("/api/health-of-soak", "GET", 200, 1.0)
            published[0] += 1

    def sample_memory() -> None:
        while not stop_heartbeat.wait(1.0):
            peak["sink"] = max(peak["sink"], sink.rss_mb())
            peak["worker"] = max(peak["worker"], worker.rss_mb())
            pid = native_broker.pid()
            if pid is not None:
                with contextlib.suppress(psutil.Error):
                    peak["broker"] = max(peak["broker"],
                                         psutil.Process(pid).memory_info().rss / 2**20)

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(PUBLISHERS)]
    helpers = [threading.Thread(target=heartbeat, daemon=True),
               threading.Thread(target=sample_memory, daemon=True)]
    for thread in threads + helpers:
        thread.start()
    broker_kills = 0
    try:
        time.sleep(5)
        while any(thread.is_alive() for thread in threads) or broker_kills < KILL_ROUNDS:
            native_broker.kill()
            broker_kills += 1
            time.sleep(3)
            native_broker.start()
            time.sleep(4)
            sink.kill()
            time.sleep(4)
            worker.kill()
            time.sleep(4)
            sink.ensure_running()
            worker.ensure_running()
        for thread in threads:
            thread.join()

        # The worker judges the incident once it has read past it and the window in every
        # partition: after the kills that is a backlog, worked through at a few thousand
        # events/s here (a 1,000,000-event soak on a slow day needed more than 240 s).
        deadline = time.monotonic() + 240 + SOAK_EVENTS / 2000
        alerts: list[dict[str, Any]] = []
        progress = ""
        while time.monotonic() < deadline:
            sink.ensure_running()
            worker.ensure_running()
            alerts = [json.loads(m.value()) for m in read_topics(
                settings.kafka_bootstrap, [settings.topics.alerts], timeout=10, idle=1.5)]
            if alerts and alerts[-1]["status"] == "resolved":
                break
            time.sleep(3)
        else:
            progress = progress_lines(worker_port)  # what the worker judged up to
        stop_heartbeat.set()
        for tracker in trackers:
            assert tracker.flush(120) == 0
        accepted = sum(published)
        stats = [tracker.get_error_performance_stats() for tracker in trackers]
        assert sum(s.dropped for s in stats) == 0 and sum(s.rejected for s in stats) == 0

        rows = distinct = -1
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            sink.ensure_running()
            rows, distinct = summary(sink_port)
            if rows >= accepted:
                time.sleep(5)
                rows, distinct = summary(sink_port)
                break
            time.sleep(2)
    finally:
        stop_heartbeat.set()
        for tracker in trackers:
            tracker.close(10)
        sink.stop()
        worker.stop()
        native_broker.start()

    figures = {"events": accepted, "broker kills": broker_kills, "sink kills": sink.kills,
               "worker kills": worker.kills, "lost": accepted - distinct,
               "duplicated": rows - distinct,
               **{f"peak RSS {name} MB": round(value) for name, value in peak.items()}}
    print("\nchaos soak:", json.dumps(figures))
    assert (rows, distinct) == (accepted, accepted), figures
    assert end_offsets(settings.kafka_bootstrap, settings.topics.dlq) == 0
    by_fingerprint: dict[str, list[str]] = {}
    for alert in alerts:
        if not alert.get("renotify") and not alert.get("ahead"):
            by_fingerprint.setdefault(alert["fingerprint"], []).append(alert["status"])
    explanation = f"{progress}\n{log_digest(tmp_path / 'worker.log')}"
    assert by_fingerprint, f"the incident raised no alert\n{explanation}"
    for statuses in by_fingerprint.values():
        assert statuses[::2] == ["firing"] * len(statuses[::2]), statuses   # never twice
        assert statuses[1::2] == ["resolved"] * len(statuses[1::2]), statuses
        assert statuses[-1] == "resolved", f"{statuses}\n{explanation}"
    for name, limit in RSS_LIMITS_MB.items():
        assert peak[name] < limit, f"{name} peaked at {peak[name]:.0f} MB (limit {limit})"
