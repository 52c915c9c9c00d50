"""A storm on the real broker and ``ept worker``: 10,000 templates failing at once.

Each template fails 4 times within the same 30 s of event time (nothing else renders),
so the worker judges 10,001 alerts at once: ``template_failures`` for every template and
the critical ``high_error_rate`` for all traffic. Printed, from the alert topic's record
timestamps (the worker's producer stamps them as it sends):

* how long the 10,000 frontier notices took to be published, first to last (a batch is
  sent together and acknowledged together: target <= 5 s);
* where the page for all traffic came among the alerts' first notices (target: first);
* the delay from the last event's publication to the first and the last notice, for the
  notices told ahead of the frontier and for the frontier's own.

Run by ``make bench-alerts`` (``python -m bench.storm`` alone, about two minutes).
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import kafka_bootstrap, print_table
from ept.core.kafka import ensure_topics
from ept.core.settings import load_settings
from tests.events import EventPublisher, record
from tests.helpers import read_topics
from tests.worker_process import Worker

TEMPLATES = 10_000
FAILURES = 4
PARTITIONS = 3
STORM_MS = 30_000


def main() -> None:
    with kafka_bootstrap() as bootstrap, tempfile.TemporaryDirectory() as state:
        settings = load_settings(kafka_bootstrap=bootstrap, state_dir=Path(state),
                                 topic_prefix=f"benchstorm{uuid.uuid4().hex[:6]}.",
                                 topic_partitions=PARTITIONS)
        ensure_topics(settings)
        worker = Worker(settings, Path(state) / "worker.log")
        try:
            start_ms = int(time.time() * 1000) - STORM_MS  # the last 30 s
            events = [("render_failed", record(
                "render_failed", start_ms + (number * FAILURES + i) * STORM_MS
                // (TEMPLATES * FAILURES), template_id=f"tpl_storm_{number:05d}"))
                for number in range(TEMPLATES) for i in range(FAILURES)]
            EventPublisher(settings).publish(events)
            published_ms = int(time.time() * 1000)
            notices = wait_for_storm(settings.kafka_bootstrap, settings.topics.alerts)
        finally:
            worker.stop()
    report(notices, published_ms)


def wait_for_storm(bootstrap: str, topic: str, timeout_s: float = 600.0
                   ) -> list[tuple[dict[str, object], int]]:
    """The alert topic's notices with their record timestamps, once every template's
    frontier firing is on it."""
    deadline = time.monotonic() + timeout_s
    while True:
        notices = [(json.loads(m.value()), m.timestamp()[1])
                   for m in read_topics(bootstrap, [topic], timeout=30, idle=2.0)]
        fired = sum(1 for n, _ in notices if n["rule"] == "template_failures"
                    and n["status"] == "firing" and not n["ahead"])
        if fired >= TEMPLATES or time.monotonic() > deadline:
            return notices
        time.sleep(2)


def report(notices: list[tuple[dict[str, object], int]], published_ms: int) -> None:
    rows = []
    for name, ahead in (("ahead of the frontier", True), ("the frontier's", False)):
        told = [(n, at) for n, at in notices if n["status"] == "firing"
                and bool(n["ahead"]) == ahead and not n["renotify"]]
        if not told:
            rows.append([name, 0, "-", "-", "-", "-"])
            continue
        times = sorted(at for _, at in told)
        page = [at for n, at in told if n["rule"] == "high_error_rate"]
        rows.append([name, f"{len(told):,}", f"{(times[-1] - times[0]) / 1000:.2f}",
                     f"{(times[0] - published_ms) / 1000:.1f}",
                     f"{(times[-1] - published_ms) / 1000:.1f}",
                     f"{(page[0] - published_ms) / 1000:.1f}" if page else "never"])
    first_tells: dict[object, int] = {}
    order: list[dict[str, object]] = []
    for notice, _ in notices:  # topic order per partition; the alert's first notice
        if notice["status"] == "firing" and notice["fingerprint"] not in first_tells:
            first_tells[notice["fingerprint"]] = len(order)
            order.append(notice)
    rank = next((i for i, n in enumerate(order)
                 if n["rule"] == "high_error_rate" and not n["labels"]), None)
    print_table(f"A storm: {TEMPLATES:,} templates x {FAILURES} failures within "
                f"{STORM_MS // 1000} s on the real broker and ept worker ({PARTITIONS} "
                "partitions; targets: the frontier's 10,000 published within 5 s, the page "
                "for all traffic first)",
                ["notices", "firings", "first to last s", "first after publish s",
                 "last after publish s", "page for all traffic after publish s"], rows)
    by_time = sorted(((at, n) for n, at in notices if n["status"] == "firing"),
                     key=lambda pair: pair[0])
    first_page = next((i for i, (_, n) in enumerate(by_time)
                       if n["rule"] == "high_error_rate" and not n["labels"]), None)
    print(f"page for all traffic: #{first_page + 1 if first_page is not None else '-'} of "
          f"{len(by_time):,} firings by publication time; "
          f"#{rank + 1 if rank is not None else '-'} in its partition's order")


if __name__ == "__main__":
    main()
