"""Clocks both ways on the real broker and ``ept worker`` (default skew and lateness).

A service host whose clock is 8 minutes slow shares the API partitions with hosts whose
clocks are right. Before the SDK's send stamp its outage was counted 8 minutes in the past,
behind event time, and never paged; now the worker corrects its events by its clock error
and pages as promptly as for any host.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ept import Tracker
from ept import tracker as tracker_module
from ept.core import send_stamp
from ept.core.kafka import ensure_topics
from ept.core.settings import Settings
from tests.events import EventPublisher, record
from tests.integration.test_worker import alerts_of, scoped
from tests.worker_process import Worker

SLOW_MS = 8 * 60_000


def slow_clock() -> Any:
    """The ``time`` module of a host whose clock reads ``SLOW_MS`` behind."""
    return SimpleNamespace(time_ns=lambda: time.time_ns() - SLOW_MS * 1_000_000,
                           time=lambda: time.time() - SLOW_MS / 1000,
                           monotonic=time.monotonic, perf_counter=time.perf_counter)


def steady_traffic(publisher: EventPublisher, partitions: int, stop: threading.Event) -> None:
    """Hosts with right clocks: a request per partition each second, an error of another
    endpoint per partition every 30 s (below any threshold)."""
    tick = 0
    while not stop.is_set():
        now = int(time.time() * 1000)
        events = [("api_request_completed", p, None,
                   record("api_request_completed", now, endpoint=f"/api/ok{p}"))
                  for p in range(partitions)]
        if tick % 30 == 0:
            events += [("api_error", p, None, record("api_error", now, endpoint="/api/ok"))
                       for p in range(partitions)]
        publisher.publish_to_partitions(events)
        tick += 1
        stop.wait(1.0)


def test_a_slow_host_sharing_partitions_has_its_own_outage_paged(
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ensure_topics(settings)
    worker = Worker(settings, tmp_path / "worker.log", EPT_MAX_CLOCK_SKEW_S="300",
                    EPT_ALLOWED_LATENESS_S="30")
    stop = threading.Event()
    feeder = threading.Thread(target=steady_traffic, daemon=True, args=(
        EventPublisher(settings), settings.topic_partitions, stop))
    feeder.start()
    try:
        time.sleep(20)  # every source has reported; event time follows the traffic
        monkeypatch.setattr(tracker_module, "time", slow_clock())
        monkeypatch.setattr(send_stamp, "time", slow_clock())
        tracker = Tracker(settings)
        crossing_ms = 0
        for i in range(14):  # its own outage: 14 errors in 7 s, over the partitions
            tracker.track_api_error("/api/slowhost", 502, "bad gateway")
            if i == 10:
                crossing_ms = int(time.time() * 1000)  # true time of the 11th
            time.sleep(0.5)
        assert tracker.flush(30) == 0
        tracker.close()
        alerts = alerts_of(settings, lambda found: bool(scoped(
            found, "api_degradation", endpoint="/api/slowhost")), timeout=120, settle=0)
        told_ms = int(time.time() * 1000)
        firing = next(a for a in alerts if a["labels"] == {"endpoint": "/api/slowhost"})
        assert firing["status"] == "firing" and firing["value"] >= 11
        # counted at its true time (the clock error corrected), and paged promptly: the
        # lateness, the idle interval of the spread partitions, reading the alert topic
        assert abs(firing["decided_at_ms"] - crossing_ms) < 3_000
        assert told_ms - crossing_ms < 75_000
        assert worker.counter("ept_worker_clock_corrected_events_total") >= 14
    finally:
        stop.set()
        feeder.join(10)
        worker.stop()
