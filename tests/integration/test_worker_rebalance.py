"""A worker joining another in the middle of a backlog: the rebalance moves signals
partitions while they are being read, and every signal is still counted, once.

(faust-streaming 0.15 dropped dozens of signals in a row here: ``processors/worker/
faust_kafka.py`` says how, and what the worker does instead.)
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from ept.core.kafka import ensure_topics
from ept.core.settings import Settings, load_settings
from ept.processors.worker.logic.scopes import signals_of
from ept.processors.worker.logic.state_table import StateTable, stored_scopes
from tests.events import EventPublisher, record
from tests.worker_process import Worker

EVENTS = 800_000


def test_a_worker_joining_mid_backlog_loses_no_signal(settings: Settings,
                                                      tmp_path: Path) -> None:
    # Six partitions, as in the bench where the loss was found.
    settings = load_settings(kafka_bootstrap=settings.kafka_bootstrap,
                             topic_prefix=settings.topic_prefix, state_dir=settings.state_dir,
                             strict=True, topic_partitions=6)
    ensure_topics(settings)
    start_ms = int(time.time() * 1000) - 3_600_000
    publisher, events = EventPublisher(settings), list(backlog(start_ms))
    for chunk in range(0, EVENTS, 50_000):  # within the producer's queue
        publisher.publish(events[chunk:chunk + 50_000])
    expected = sum(len(signals_of(name, data)) for name, data in events)
    first = Worker(settings, tmp_path / "first.log")
    second = None
    try:
        while collected([first]) < EVENTS // 10:
            time.sleep(0.05)
        second = Worker(settings, tmp_path / "second.log")  # joins while the first reads
        joined_at = collected([first, second])
        deadline = time.monotonic() + 180
        counted = 0
        while time.monotonic() < deadline:
            counted = counts_saved(settings)
            if counted >= expected:
                break
            time.sleep(2)
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert joined_at < EVENTS, "the second worker joined after the backlog was read"
    assert counted == expected, (
        f"{expected - counted} of {expected} scope counts missing (signals lost in the "
        f"rebalance?)\n{first.log()[-2000:]}\n{second.log()[-2000:] if second else ''}")


def backlog(start_ms: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """Renders of 97 templates and calls of 13 endpoints, alternating, an event every
    millisecond of event time from ``start_ms`` (the load of ``make bench-processors``):
    signals for every signals partition, every minute of event time judged."""
    for index in range(EVENTS):
        if index % 2:
            yield ("api_request_completed", record(
                "api_request_completed", start_ms + index, endpoint=f"/api/{index % 13}",
                request_id=f"r{index}", event_id=f"e{index}"))
        else:
            yield ("render_completed", record(
                "render_completed", start_ms + index, template_id=f"tpl{index % 97}",
                duration_ms=float(100 + index * 7919 % 20_000), event_id=f"e{index}"))


def collected(workers: list[Worker]) -> int:
    """Events the workers' collect stages read (each counted once per worker)."""
    total = 0
    for worker in workers:
        url = f"http://127.0.0.1:{worker.port}/stats?rates=0"
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:
                total += sum(json.loads(reply.read())["events"].values())
        except OSError:  # not serving yet
            pass
    return total


def counts_saved(settings: Settings) -> int:
    """Every per-second count of every scope, as the scopes changelog holds them (what a
    restarted worker would start from)."""
    table = changelog_table(settings)
    states = StateTable(table, retain_s=86_400)
    return sum(sum(counters.values())
               for scope in stored_scopes(table)
               for counters in states.peek(scope).seconds.values())


def changelog_table(settings: Settings) -> dict[str, Any]:
    """The scopes table: the last value of each key on its changelog, deleted keys left out."""
    topic = settings.topics.worker_scopes_changelog
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap,
                         "group.id": f"{settings.topic_prefix}changelog-reader",
                         "enable.auto.commit": False})
    table: dict[str, Any] = {}
    try:
        ends = {partition: consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=10)[1]
                for partition in range(settings.topic_partitions)}
        consumer.assign([TopicPartition(topic, p, 0) for p, end in ends.items() if end])
        read = dict.fromkeys(ends, 0)
        deadline = time.monotonic() + 60
        while any(read[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            read[message.partition()] = message.offset() + 1
            key, value = json.loads(message.key()), message.value()
            if value is None:
                table.pop(key, None)
            else:
                table[key] = json.loads(value)
    finally:
        consumer.close()
    return table
