"""A worker started on a backlog: the alerts of event-time order, on the real broker.

The worker is stopped while hours of traffic on all five topics are published (the
restart that used to page falsely: Faust interleaves topics by message count, so sparse
topics ran ahead of dense ones). The expected notices come from the worker's own logic
fed the same partitions in event-time order (``tests.alert_streams.drive``).
"""

from __future__ import annotations

import time
from pathlib import Path

from ept.core.kafka import ensure_topics
from ept.core.settings import Settings
from ept.processors.alerts.topic import AlertNotice, read_alerts
from ept.processors.worker.logic.scope_evaluation import BLOCK_S
from tests.alert_streams import (
    EXPECTED_RULE,
    INCIDENTS,
    MINUTE_MS,
    Traffic,
    drive,
    event_time_order,
    notices_of,
    partition_messages,
    simulate,
)
from tests.events import EventPublisher
from tests.worker_process import Worker

MINUTES = 180  # ~27,000 events: a dozen batches or more, each raced by heartbeats


def backlog_start() -> int:
    """So long ago that every alert has resolved by now, as in ``drive``, which judges up
    to 4 h past the traffic's end; at the start of a six-hour block, so that the three
    hours lie in one block: no render of the backlog is a duration baseline for another
    (the slow-render incident would otherwise also be a duration regression, depending
    on the time of day the test runs)."""
    start_ms = int(time.time() * 1000) - (MINUTES + 6 * 60) * MINUTE_MS
    return start_ms // (BLOCK_S * 1000) * BLOCK_S * 1000


def notices_after_catch_up(settings: Settings, traffic: Traffic, log: Path) -> list[AlertNotice]:
    ensure_topics(settings)
    EventPublisher(settings).publish_to_partitions(partition_messages(traffic))
    started_ms = int(time.time() * 1000)
    worker = Worker(settings, log)
    try:
        worker.wait_judged(started_ms, settings.topic_partitions)
        # No event came after its instant was judged: no source was taken for idle (or
        # caught up) while it still held unread events.
        assert worker.counter("ept_worker_late_events_total") == 0
    finally:
        worker.stop()
    alerts: list[AlertNotice] = []
    read_alerts(settings, alerts.append, until_end=True)
    return alerts


def expected(settings: Settings, traffic: Traffic) -> dict[str, list[tuple[str, float, int, bool]]]:
    return drive(traffic, event_time_order(traffic), signal_partitions=settings.topic_partitions,
                 lateness_ms=settings.allowed_lateness_s * 1000)


def test_hours_of_healthy_backlog_raise_nothing(settings: Settings, tmp_path: Path) -> None:
    traffic = simulate(5, MINUTES, [], partitions=settings.topic_partitions,
                       renders_per_minute=100, start_ms=backlog_start())
    assert expected(settings, traffic) == {}
    assert notices_after_catch_up(settings, traffic, tmp_path / "worker.log") == []


def test_a_backlog_with_incidents_gives_the_event_time_notices(settings: Settings,
                                                               tmp_path: Path) -> None:
    incidents = [("error_rate", 5), ("api_burst", 20), ("slow_renders", 15),
                 ("template_failures", 2)]
    assert sorted(kind for kind, _ in incidents) == sorted(INCIDENTS)
    traffic = simulate(5, MINUTES, incidents, partitions=settings.topic_partitions,
                       renders_per_minute=100, start_ms=backlog_start())
    want = expected(settings, traffic)
    fired = {key.split("[")[0] for key, told in want.items() if told[0][0] == "firing"}
    assert fired == set(EXPECTED_RULE.values()), want
    got = notices_after_catch_up(settings, traffic, tmp_path / "worker.log")
    assert notices_of(got) == want
    assert all(told[-1][0] == "resolved" for told in want.values())
