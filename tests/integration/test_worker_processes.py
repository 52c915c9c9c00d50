"""``ept worker --processes N``: the partitions spread over the processes, the notices the
same as with one."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from ept.core.kafka import ensure_topics
from ept.core.settings import Settings
from ept.schemas.registry import EVENT_NAMES
from tests.events import EventPublisher
from tests.integration.test_worker import alerts_of, complete, expected_summary, incident_stream
from tests.integration.test_worker import summary as alert_summary
from tests.worker_process import Worker


def event_partitions_of(port: int, settings: Settings) -> set[tuple[str, int]]:
    """The event partitions the worker process serving ``port`` reads (empty: none yet)."""
    events = {settings.topics.event(name) for name in EVENT_NAMES}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as reply:
            assignment = json.loads(reply.read())["assignment"]
    except OSError:
        return set()
    return {(topic, partition) for topic, partition in assignment if topic in events}


def notices(alerts: list[dict[str, Any]]) -> list[str]:
    """Every notice in full, in a canonical order (each is decided in event time)."""
    return sorted(json.dumps(alert, sort_keys=True) for alert in alerts)


def test_notices_are_identical_with_one_and_two_processes(settings: Settings,
                                                          tmp_path: Path) -> None:
    events = incident_stream()
    found: dict[int, list[dict[str, Any]]] = {}
    shares: list[set[tuple[str, int]]] = []
    everything: set[tuple[str, int]] = set()
    for processes in (1, 2):
        run_settings = settings.replace(topic_prefix=f"{settings.topic_prefix}p{processes}.")
        ensure_topics(run_settings)
        running = Worker(run_settings, tmp_path / f"worker{processes}.log",
                         EPT_WORKER_PROCESSES=str(processes))
        try:
            ports = [running.port + index for index in range(processes)]
            deadline = time.monotonic() + 120
            while processes > 1 and not all(event_partitions_of(p, run_settings) for p in ports):
                assert time.monotonic() < deadline, "a process was assigned no event partition"
                time.sleep(0.5)
            EventPublisher(run_settings).publish(events)
            found[processes] = alerts_of(run_settings, complete, timeout=180)
            if processes > 1:
                shares = [event_partitions_of(port, run_settings) for port in ports]
                everything = {(run_settings.topics.event(name), partition)
                              for name in EVENT_NAMES
                              for partition in range(run_settings.topic_partitions)}
        finally:
            running.stop()
    assert alert_summary(found[1]) == expected_summary()
    assert notices(found[2]) == notices(found[1])
    assert all(shares) and not shares[0] & shares[1]
    assert shares[0] | shares[1] == everything
