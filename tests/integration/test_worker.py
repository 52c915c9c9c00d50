"""The Faust worker on the real broker: the four default rules, restarts, replay, scaling."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ept.core.kafka import ensure_topics
from ept.core.settings import Settings
from ept.schemas.registry import EVENT_NAMES
from tests.events import BASE_MS, EventPublisher, record
from tests.helpers import read_topics
from tests.worker_process import Worker, log_digest

MIN = 60_000


@pytest.fixture
def worker_settings(settings: Settings) -> Settings:
    ensure_topics(settings)
    return settings


@pytest.fixture
def worker(worker_settings: Settings, tmp_path: Path) -> Iterator[Worker]:
    running = Worker(worker_settings, tmp_path / "worker.log")
    yield running
    running.stop()


def alerts_of(settings: Settings, until: Any = None, timeout: float = 60.0,
              settle: float = 4.0, ahead: bool = False) -> list[dict[str, Any]]:
    """Alerts on the topic once ``until(alerts)`` holds (then ``settle`` s more): the
    frontier's, a function of the events alone (with ``ahead``, those told ahead of it
    too)."""
    def read() -> list[dict[str, Any]]:
        alerts = [json.loads(m.value()) for m in read_topics(
            settings.kafka_bootstrap, [settings.topics.alerts], timeout=10, idle=1.5)]
        return [a for a in alerts if ahead or not a.get("ahead")]

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if until is None or until(read()):
            break
        time.sleep(1)
    time.sleep(settle)
    return read()


def scoped(alerts: list[dict[str, Any]], rule: str, **labels: str) -> list[tuple[str, float]]:
    return [(a["status"], a["value"]) for a in alerts
            if a["rule"] == rule and a["labels"] == labels]


def renders(template: str, completed: int, failed: int, start_ms: int) -> list:
    """``completed`` successes then ``failed`` failures, one per second of event time."""
    events = [("render_completed", record("render_completed", start_ms + i * 1000,
                                          template_id=template)) for i in range(completed)]
    events += [("render_failed", record("render_failed", start_ms + (completed + i) * 1000,
                                        template_id=template)) for i in range(failed)]
    return events


def test_render_error_rate_rule(worker_settings: Settings, worker: Worker) -> None:
    publisher = EventPublisher(worker_settings)
    # All in one go, in no particular topic order: judged in event time.
    publisher.publish([event for minute in range(2, 41)  # minutes 2..40: 5 successes each
                       for event in renders("tpl_bad", 5, 0, BASE_MS + minute * MIN)]
                      + renders("tpl_bad", 0, 19, BASE_MS + MIN)   # minute 1: 20 failures
                      + renders("tpl_fine", 0, 1, BASE_MS + MIN)
                      + renders("tpl_bad", 20, 0, BASE_MS)         # minute 0: 59 successes,
                      + renders("tpl_fine", 39, 0, BASE_MS)        # 1 failure
                      + renders("tpl_tiny", 0, 1, BASE_MS))
    alerts = alerts_of(worker_settings, lambda found: any(
        a["status"] == "resolved" and a["rule"] == "high_error_rate" for a in found))
    # judged at each second holding a failure: at 01:06, 8 failures of 67 renders (11.9%)
    # are the first above 5% with 99% confidence; the failures leave the 15-minute window
    # at 16:19, the rate reads <= 4% (80% confidence) at the minute ends from 17:00 on,
    # and after 15 minutes of that (resolve_pending_seconds) the alert resolves, at 32:00
    assert scoped(alerts, "high_error_rate") == [
        ("firing", pytest.approx(11.9403, abs=0.001)), ("resolved", 0.0)]
    firing, resolved = [a for a in alerts if a["rule"] == "high_error_rate"]
    assert firing["decided_at_ms"] == BASE_MS + 66_000
    assert resolved["decided_at_ms"] == BASE_MS + 32 * MIN
    assert firing["severity"] == "critical" and firing["window"] == "15m"
    assert firing["runbook_url"].endswith("high-error-rate.md")
    assert firing["summary"].startswith("Render error rate 11.9% (8 of 67 renders; >= 5.")
    assert not any(a["labels"] for a in alerts if a["rule"] == "high_error_rate")
    assert worker.stats()["rendersFailed"] == 21


def test_api_degradation_rule(worker_settings: Settings, worker: Worker) -> None:
    publisher = EventPublisher(worker_settings)
    errors = [("api_error", record("api_error", BASE_MS + i * 1000, endpoint="/api/a"))
              for i in range(11)]
    errors += [("api_error", record("api_error", BASE_MS + i * 1000, endpoint="/api/b"))
               for i in range(10)]
    publisher.publish(errors)
    later = BASE_MS + 7 * MIN  # the 5-minute window has moved past every error
    publisher.publish([("api_request_completed", record("api_request_completed", later,
                                                        endpoint=endpoint))
                       for endpoint in ("/api/a", "/api/b")])
    alerts = alerts_of(worker_settings, lambda found: any(
        a["status"] == "resolved" and a["labels"] == {"endpoint": "/api/a"} for a in found))
    assert scoped(alerts, "api_degradation", endpoint="/api/a") == [
        ("firing", 11.0), ("resolved", 0.0)]
    assert scoped(alerts, "api_degradation", endpoint="/api/b") == []
    assert [a["status"] for a in alerts if a["rule"] == "api_degradation" and not a["labels"]
            ] == ["firing", "resolved"]


def test_performance_degradation_rule(worker_settings: Settings, worker: Worker) -> None:
    publisher = EventPublisher(worker_settings)
    completed = [("render_completed", record("render_completed", BASE_MS + i * 1000,
                                             render_type=kind)) for i in range(40)
                 for kind in ("video", "still")]
    slow = [("slow_render", record("slow_render", BASE_MS + i * 1000, render_type="video"))
            for i in range(40) if i % 10 < 9]  # 90 %
    slow += [("slow_render", record("slow_render", BASE_MS + i * 1000, render_type="still"))
             for i in range(40) if i % 2 == 0]  # 50 %: never above with confidence
    recovery = [("render_completed", record("render_completed", BASE_MS + MIN + i * 100,
                                            render_type="video")) for i in range(200)]
    publisher.publish(recovery + slow + completed)
    alerts = alerts_of(worker_settings, lambda found: any(a["status"] == "resolved"
                                                          for a in found))
    # at 00:11, 10 of 11 video renders slow: above 50% with 99% confidence; at 02:00,
    # 36 of 240 (15%): at or below 40% with 80% confidence
    assert scoped(alerts, "performance_degradation", render_type="video") == [
        ("firing", pytest.approx(90.9091, abs=0.001)), ("resolved", 15.0)]
    assert scoped(alerts, "performance_degradation", render_type="still") == []


def test_template_failures_rule(worker_settings: Settings, worker: Worker) -> None:
    publisher = EventPublisher(worker_settings)
    publisher.publish(renders("tpl_four", 0, 4, BASE_MS))
    publisher.publish(renders("tpl_three", 0, 3, BASE_MS))
    # An hour later, any traffic moves event time on: the failures leave the window.
    publisher.publish(renders("tpl_other", 1, 0, BASE_MS + 62 * MIN))
    alerts = alerts_of(worker_settings, lambda found: any(
        a["status"] == "resolved" and a["rule"] == "template_failures" for a in found))
    assert scoped(alerts, "template_failures", template_id="tpl_four") == [
        ("firing", 4.0), ("resolved", 0.0)]
    assert scoped(alerts, "template_failures", template_id="tpl_three") == []
    firing = next(a for a in alerts if a["rule"] == "template_failures")
    assert firing["action"] == "disable_template" and firing["severity"] == "high"


def test_a_host_with_a_wrong_clock_moves_no_event_time(worker_settings: Settings,
                                                       worker: Worker) -> None:
    """Its producer stamps the record as wrongly as the event (23 h ahead); the broker
    restamps the record (LogAppendTime), so the event counts now and the burst after it
    is judged at its own time: it fires, and does not resolve 23 h early."""
    now = int(time.time() * 1000) // 1000 * 1000
    ahead = now + 23 * 3600_000
    publisher = EventPublisher(worker_settings)
    publisher.publish_to_partitions([("api_error", 0, ahead, record(
        "api_error", ahead, endpoint="/api/skewed"))])
    publisher.publish_to_partitions(("api_error", 0, now + i * 1000, record(
        "api_error", now + i * 1000, endpoint="/api/real")) for i in range(12))
    worker.wait_judged(now + 12_000, worker_settings.topic_partitions)  # past the burst
    alerts = alerts_of(worker_settings, settle=0)
    assert scoped(alerts, "api_degradation", endpoint="/api/real") == [("firing", 11.0)]
    firing = next(a for a in alerts if a["labels"] == {"endpoint": "/api/real"})
    assert firing["decided_at_ms"] == now + 11_000  # the end of the 11th error's second
    assert scoped(alerts, "api_degradation", endpoint="/api/skewed") == []
    assert worker.counter("ept_worker_skewed_events_total") == 1


def incident_stream() -> list:
    """Several incidents over 90 minutes of event time; the alerts it must give are known."""
    events = []
    for minute in range(90):
        at = BASE_MS + minute * MIN
        events += renders("tpl_steady", 5, 0, at)
        events.append(("api_request_completed", record("api_request_completed", at + 30_000,
                                                       endpoint="/api/x")))
        if 10 <= minute < 13:
            events += renders("tpl_flaky", 0, 10, at)
        if 30 <= minute < 32:
            events += [("api_error", record("api_error", at + i * 500, endpoint="/api/x"))
                       for i in range(8)]
    return events


EXPECTED_INCIDENT_ALERTS = [
    ("high_error_rate", {}, "firing"),     # 10:06: 8 failures of 65 renders
    ("high_error_rate", {}, "resolved"),   # read <= 4% from 28:00, for 15 minutes
    ("template_failures", {"template_id": "tpl_flaky"}, "firing"),    # 10:04
    # re-notified 60 min on (minute 12's failures still in the hour's window)
    ("template_failures", {"template_id": "tpl_flaky"}, "firing"),
    # its failures leave the hour and it has no renders: resolved, "no data"
    ("template_failures", {"template_id": "tpl_flaky"}, "resolved"),
    ("api_degradation", {"endpoint": "/api/x"}, "firing"),
    ("api_degradation", {"endpoint": "/api/x"}, "resolved"),
    ("api_degradation", {}, "firing"),
    ("api_degradation", {}, "resolved"),
]


def summary(alerts: list[dict[str, Any]]) -> list[tuple[str, dict[str, str], str]]:
    ordered = sorted(alerts, key=lambda a: (a["rule"], sorted(a["labels"].items()),
                                            a["started_at"], a["status"] != "firing"))
    return [(a["rule"], a["labels"], a["status"]) for a in ordered]


def complete(found: list[dict[str, Any]]) -> bool:
    return summary(found) == expected_summary()


def expected_summary() -> list[tuple[str, dict[str, str], str]]:
    return sorted(EXPECTED_INCIDENT_ALERTS,
                  key=lambda a: (a[0], sorted(a[1].items()), a[2] != "firing"))


def test_worker_killed_mid_stream_misses_and_repeats_nothing(worker_settings: Settings,
                                                             tmp_path: Path) -> None:
    events = incident_stream()
    publisher = EventPublisher(worker_settings)
    running = Worker(worker_settings, tmp_path / "worker.log")
    try:
        chunk = len(events) // 4
        for index in range(4):
            publisher.publish(events[index * chunk:(index + 1) * chunk if index < 3 else None])
            time.sleep(1.5)
            running.kill()
            running = Worker(worker_settings, tmp_path / "worker.log")
        alerts = alerts_of(worker_settings, complete, timeout=120)
    finally:
        running.stop()
    assert summary(alerts) == expected_summary(), log_digest(tmp_path / "worker.log")


def test_replay_with_different_timing_gives_the_same_alerts(settings: Settings,
                                                            tmp_path: Path) -> None:
    events = incident_stream()
    results = []
    for attempt, pause in enumerate((0.0, 0.3)):
        prefix = f"{settings.topic_prefix}r{attempt}."
        run_settings = settings.replace(topic_prefix=prefix)
        ensure_topics(run_settings)
        running = Worker(run_settings, tmp_path / f"worker{attempt}.log")
        try:
            publisher = EventPublisher(run_settings)
            step = len(events) if pause == 0 else 300
            for start in range(0, len(events), step):
                publisher.publish(events[start:start + step])
                time.sleep(pause)
            results.append(alerts_of(run_settings, complete, timeout=120))
        finally:
            running.stop()
    assert summary(results[0]) == summary(results[1]) == expected_summary()


def test_two_workers_give_the_same_alerts_as_one(worker_settings: Settings,
                                                 tmp_path: Path) -> None:
    first = Worker(worker_settings, tmp_path / "w1.log")
    second = Worker(worker_settings, tmp_path / "w2.log")
    try:
        time.sleep(5)  # let the group settle on two members
        EventPublisher(worker_settings).publish(incident_stream())
        alerts = alerts_of(worker_settings, complete, timeout=120)
        assignments = [set(map(tuple, w.stats()["assignment"])) for w in (first, second)]
    finally:
        first.stop()
        second.stop()
    assert summary(alerts) == expected_summary()
    event_partitions = {(worker_settings.topics.event(name), p) for name in EVENT_NAMES
                        for p in range(worker_settings.topic_partitions)}
    shares = [a & event_partitions for a in assignments]
    assert all(shares), "one worker was assigned no event partition"
    assert shares[0] | shares[1] == event_partitions and not shares[0] & shares[1]


def test_a_resend_after_a_restart_is_counted_once(worker_settings: Settings,
                                                  tmp_path: Path) -> None:
    """A producer re-sends events a stopped worker had read (same event ids, new offsets):
    the next worker reads the partition's recent ids back and counts each once."""
    now = int(time.time() * 1000)
    sent = [("api_request_completed", 0, now + i * 1000,
             {**record("api_request_completed", now + i * 1000, endpoint="/api/again"),
              "event_id": f"again-{i}"}) for i in range(5)]
    publisher = EventPublisher(worker_settings)
    first = Worker(worker_settings, tmp_path / "first.log")
    try:
        publisher.publish_to_partitions(sent)
        first.wait_judged(now + 5_000, worker_settings.topic_partitions)
    finally:
        first.stop()
    second = Worker(worker_settings, tmp_path / "second.log")
    try:
        publisher.publish_to_partitions(sent)  # the re-sends, at new offsets
        second.wait_judged(now + 5_000, worker_settings.topic_partitions)
        deadline = time.monotonic() + 60
        while second.counter("ept_worker_duplicate_events_total") < 5:
            assert time.monotonic() < deadline, "the re-sends were counted again"
            time.sleep(0.5)
        assert second.counter("ept_worker_duplicate_events_total") == 5
    finally:
        second.stop()


def test_a_worker_starting_after_the_last_event_moves_event_time(worker_settings: Settings,
                                                                 tmp_path: Path) -> None:
    """Traffic stops and the worker restarts (a deploy, a crash): the next one has nothing
    left to read, yet event time moves on with the broker's clock, learnt from the newest
    records of the partitions it took over. Without that, no firing alert would ever
    resolve, nor would a rule on stopped renders fire (the kill test's last worker stood
    at an event time of 1 s)."""
    now = int(time.time() * 1000)
    sent = [("api_request_completed", 0, now + i * 1000,
             record("api_request_completed", now + i * 1000, endpoint="/api/last"))
            for i in range(3)]
    first = Worker(worker_settings, tmp_path / "first.log")
    try:
        EventPublisher(worker_settings).publish_to_partitions(sent)
        first.wait_judged(now + 3_000, worker_settings.topic_partitions)
    finally:
        first.stop()
    stopped_ms = int(time.time() * 1000)
    lateness_ms = int(worker_settings.allowed_lateness_s * 1000)
    second = Worker(worker_settings, tmp_path / "second.log")
    try:
        # Beyond any clock the first worker's reports carried (the second may read some
        # of them again): only the broker's clock learnt here, running on, gets there.
        second.wait_judged(stopped_ms - lateness_ms + 5_000, worker_settings.topic_partitions,
                           timeout=150)
        assert second.counter("ept_worker_duplicate_events_total") == 0
        assert sum(int(float(line.rsplit(" ", 1)[1])) for line in second.metrics().splitlines()
                   if line.startswith("ept_worker_events_total{")) == 0  # nothing read again
    finally:
        second.stop()


def test_renders_that_stop_keep_the_page_firing_as_no_data(worker_settings: Settings,
                                                           worker: Worker) -> None:
    """Half the renders fail, then renders stop altogether: the critical page is not
    resolved as "0.0%" on no renders; an hour on it is re-notified, saying so."""
    publisher = EventPublisher(worker_settings)
    publisher.publish(renders("tpl_dead", 40, 0, BASE_MS) + renders("tpl_dead", 0, 20,
                                                                     BASE_MS + MIN))
    alerts = alerts_of(worker_settings, lambda found: any(
        a["rule"] == "high_error_rate" and a["renotify"] for a in found), timeout=120)
    told = [(a["status"], a["renotify"], a["no_data"]) for a in alerts
            if a["rule"] == "high_error_rate"]
    assert told[0] == ("firing", False, "")
    assert ("firing", True, "0 renders in 15m (min_samples 10)") in told
    assert {status for status, _, _ in told} == {"firing"}


def test_a_storm_publishes_the_page_for_all_traffic_with_the_first(
        worker_settings: Settings, worker: Worker) -> None:
    """300 templates fail at once (4 failures each, and nothing else renders): the page
    for all traffic is published before, or within a second of, the first template's."""
    publisher = EventPublisher(worker_settings)
    publisher.publish([event for number in range(300)
                       for event in renders(f"tpl_storm_{number:03d}", 0, 4,
                                            BASE_MS + number * 10)])
    alerts = alerts_of(worker_settings, lambda found: sum(
        a["rule"] == "template_failures" and a["status"] == "firing" for a in found) >= 300,
        timeout=180, settle=2)
    published: dict[str, int] = {}  # fingerprint -> when its first notice was published
    for message in read_topics(worker_settings.kafka_bootstrap,
                               [worker_settings.topics.alerts], timeout=10, idle=1.5):
        fingerprint = json.loads(message.value())["fingerprint"]
        published[fingerprint] = min(message.timestamp()[1],
                                     published.get(fingerprint, message.timestamp()[1]))
    page = next(a for a in alerts if a["rule"] == "high_error_rate")
    templates = [a for a in alerts if a["rule"] == "template_failures"
                 and a["status"] == "firing" and not a["renotify"]]
    assert len(templates) == 300
    first_template = min(published[a["fingerprint"]] for a in templates)
    assert published[page["fingerprint"]] <= first_template + 1_000


def test_a_count_pages_seconds_after_its_crossing_ahead_of_the_frontier(
        worker_settings: Settings, worker: Worker) -> None:
    """11 API errors in one second: api_degradation is told firing ahead of the frontier
    within seconds of the crossing error's publication, well before the frontier's own
    firing (it waits out the lateness, or the sources' silence), which follows at the
    same instant."""
    now = int(time.time() * 1000) // 1000 * 1000
    published_ms = int(time.time() * 1000)
    EventPublisher(worker_settings).publish_to_partitions(("api_error", 0, now + i, record(
        "api_error", now + i, endpoint="/api/early")) for i in range(11))
    alerts_of(worker_settings, lambda found: any(
        a["labels"] == {"endpoint": "/api/early"} for a in found), timeout=60, settle=0)
    told = [(json.loads(m.value()), m.timestamp()[1]) for m in read_topics(
        worker_settings.kafka_bootstrap, [worker_settings.topics.alerts], timeout=10, idle=1.5)]
    early = [(a["status"], a["ahead"], a["decided_at_ms"], at) for a, at in told
             if a["labels"] == {"endpoint": "/api/early"}]
    assert [e[:3] for e in early] == [("firing", True, now + 1000), ("firing", False, now + 1000)]
    ahead_at, frontier_at = early[0][3], early[1][3]
    assert ahead_at - published_ms < 5_000, early
    assert frontier_at - ahead_at > 5_000, early
