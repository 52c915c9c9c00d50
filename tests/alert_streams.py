"""Simulated traffic for alert tests: healthy noise plus scripted incidents, as the
events of each source partition, and a driver of the worker's own collect / evaluate
logic (no Faust, no Kafka) for any delivery order of those partitions.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from ept.processors.alerts.topic import AlertNotice
from ept.processors.worker.logic.collector import Collector, SourceEvent
from ept.processors.worker.logic.event_time import Frontiers, source_of
from ept.processors.worker.logic.partition_judge import PartitionJudge
from ept.processors.worker.logic.records import Progress, Signal
from ept.processors.worker.logic.rules import Rule, load_rules
from ept.processors.worker.logic.scope_evaluation import Evaluator
from ept.processors.worker.logic.scopes import scope_partition
from ept.schemas.registry import EVENT_NAMES
from tests.events import record as full_record

MINUTE_MS = 60_000
FAST_CLOCK_MS = 10 * MINUTE_MS
T0 = 1_780_000_000_000 // MINUTE_MS * MINUTE_MS
INCIDENTS = ("error_rate", "api_burst", "slow_renders", "template_failures")
EXPECTED_RULE = {"error_rate": "high_error_rate", "api_burst": "api_degradation",
                 "slow_renders": "performance_degradation",
                 "template_failures": "template_failures"}


@dataclass
class Traffic:
    """Each source partition's messages, in the order they sit in the partition."""

    partitions: int
    start_ms: int = T0
    streams: dict[str, list[SourceEvent]] = field(default_factory=dict)
    end_ms: int = T0

    def add(self, event: str, key: str, time_ms: int, record: dict[str, object],
            record_ms: int | None = None, event_id: str | None = None) -> None:
        partition = zlib.crc32(key.encode()) % self.partitions
        stream = self.streams.setdefault(source_of(event, partition), [])
        body = {**record, "event_time": time_ms,
                "event_id": event_id or f"{event}-{len(stream)}-{partition}-{time_ms}"}
        stream.append(SourceEvent(event, partition, len(stream),
                                  time_ms if record_ms is None else record_ms, body))
        self.end_ms = max(self.end_ms, time_ms)


def simulate(seed: int, minutes: int, incidents: list[tuple[str, int]], partitions: int = 2,
             renders_per_minute: int = 40, duplicates: float = 0.0,
             skewed: int = 0, fast_clock: float = 0.0, start_ms: int = T0) -> Traffic:
    """Healthy traffic (2% render errors, Zipf-popular templates, API calls with rare
    errors) with ``incidents`` (kind, start minute); every source partition gets traffic.

    ``duplicates``: the share of events re-sent at a later offset; ``skewed``: how many
    events carry a time 23 h ahead (a host with a wrong clock); ``fast_clock``: the share
    of events sent by a host whose clock is 10 minutes fast (their record timestamps, the
    broker's, are right); ``start_ms``: the first minute's start (a whole minute).
    """
    rng = random.Random(seed)
    traffic = Traffic(partitions, start_ms, end_ms=start_ms)
    templates = [f"tpl_{i:03d}" for i in range(40)]
    # Healthy failures fall on a long tail of templates: the specification's template rule
    # (> 3 failures in 1 h) pages for any template failing that often, healthy or not.
    long_tail = [f"tail_{i:03d}" for i in range(500)]
    weights = [1 / (i + 1) for i in range(len(templates))]
    endpoints = ["/api/render", "/api/assets", "/api/export", "/api/variants"]
    timeline: list[tuple[int, str, str, dict[str, object]]] = []

    def render(time_ms: int, template: str, failed: bool, slow: bool = False,
               render_type: str = "still") -> None:
        if failed:
            timeline.append((time_ms, "render_failed", template,
                             {"template_id": template, "reason": "timeout"}))
            return
        # durations from the time, not the generator: the seeds' traffic stays as it was
        duration_ms = 60_000.0 if slow else 1000.0 + time_ms % 3000
        timeline.append((time_ms, "render_completed", template,
                         {"template_id": template, "render_type": render_type,
                          "duration_ms": duration_ms}))
        if slow:
            timeline.append((time_ms, "slow_render", template,
                             {"template_id": template, "render_type": render_type}))

    for minute in range(minutes):
        for _ in range(renders_per_minute):
            time_ms = start_ms + minute * MINUTE_MS + rng.randrange(MINUTE_MS)
            if rng.random() < 0.02:
                render(time_ms, rng.choice(long_tail), True)
                continue
            render(time_ms, rng.choices(templates, weights)[0], False, rng.random() < 0.05,
                   rng.choice(("still", "video")))
        for _ in range(renders_per_minute // 2):
            time_ms = start_ms + minute * MINUTE_MS + rng.randrange(MINUTE_MS)
            endpoint = rng.choice(endpoints)
            kind = "api_error" if rng.random() < 0.005 else "api_request_completed"
            timeline.append((time_ms, kind, endpoint, {"endpoint": endpoint}))
    for kind, start in incidents:
        at = start_ms + start * MINUTE_MS
        if kind == "error_rate":  # 10% more renders fail for 10 minutes, all templates
            for _ in range(renders_per_minute * 10 // 10):
                render(at + rng.randrange(10 * MINUTE_MS), rng.choice(long_tail), True)
        elif kind == "api_burst":  # 14 errors of one endpoint within 4 minutes
            for _ in range(14):
                timeline.append((at + rng.randrange(4 * MINUTE_MS), "api_error",
                                 "/api/export", {"endpoint": "/api/export"}))
        elif kind == "slow_renders":  # most videos slow for 40 minutes
            for _ in range(renders_per_minute * 40):
                render(at + rng.randrange(40 * MINUTE_MS), rng.choice(templates), False,
                       True, "video")
        elif kind == "template_failures":  # one template fails 5 times in 50 minutes
            for _ in range(5):
                render(at + rng.randrange(50 * MINUTE_MS), "tpl_broken", True)
    timeline.sort(key=lambda entry: entry[0])
    resend: list[tuple[int, int, str, str, dict[str, object], str]] = []
    host_of = random.Random(seed + 1)  # apart from ``rng``: the same timeline either way
    for index, (time_ms, event, key, record) in enumerate(timeline):
        event_id = f"e{index}"
        stamped = time_ms + FAST_CLOCK_MS if host_of.random() < fast_clock else time_ms
        traffic.add(event, key, stamped, record, record_ms=time_ms, event_id=event_id)
        if rng.random() < duplicates:
            resend.append((time_ms, stamped, event, key, record, event_id))
        while resend and resend[0][0] + 2_000 <= time_ms:  # re-sent 2 s or more later
            _, first_stamped, dup_event, dup_key, dup_record, dup_id = resend.pop(0)
            traffic.add(dup_event, dup_key, first_stamped, dup_record, record_ms=time_ms,
                        event_id=dup_id)
    for _ in range(skewed):
        time_ms = start_ms + rng.randrange(minutes * MINUTE_MS)
        traffic.add("render_failed", "tpl_skewed", time_ms + 23 * 3600_000,
                    {"template_id": "tpl_skewed", "reason": "timeout"}, record_ms=time_ms)
    for event in EVENT_NAMES:  # every source partition holds something
        for partition in range(partitions):
            if source_of(event, partition) not in traffic.streams:
                key = next(f"k{i}" for i in range(10_000)
                           if zlib.crc32(f"k{i}".encode()) % partitions == partition)
                record: dict[str, object] = {"template_id": key, "render_type": "still",
                                             "endpoint": key, "reason": "timeout"}
                traffic.add(event, key, start_ms, record)
    for stream in traffic.streams.values():  # a partition is in record-time order
        stream.sort(key=lambda e: e.record_ms)
        stream[:] = [SourceEvent(e.event_name, e.partition, offset, e.record_ms, e.record)
                     for offset, e in enumerate(stream)]
    return traffic


Notices = dict[str, list[tuple[str, float, int, bool]]]


def drive(traffic: Traffic, schedule: Iterator[tuple[str, int]], *, collectors: int = 1,
          signal_partitions: int = 3, lateness_ms: int = 30_000,
          rules: list[Rule] | None = None) -> Notices:
    """The notices per alert (rule and labels) when the partitions are read in the order
    of ``schedule`` — (source, how many of its next messages) — through the worker's own
    Collector, Frontiers, Evaluator and PartitionJudge. Wall clock stands at the start while
    reading (so no source goes idle by silence) and moves 4 h past the end afterwards, in
    steps of an hour (the broker's clock then follows it from the newest record).
    """
    rules = rules or load_rules(None)
    evaluator = Evaluator(rules)
    sources = sorted(traffic.streams)
    owners = [Collector(max_skew_ms=300_000, idle_ms=3600_000, dedup_horizon_ms=300_000,
                        families=evaluator.families, max_clock_step_ms=3600_000)
              for _ in range(collectors)]
    owner_of = {source: owners[i % collectors] for i, source in enumerate(sources)}
    for source in sources:
        owner_of[source].assign([source], traffic.start_ms)
    counts = dict.fromkeys(EVENT_NAMES, traffic.partitions)
    states: dict[str, object] = {}
    judges = [PartitionJudge(evaluator, Frontiers(counts, lateness_ms), states, [])
              for _ in range(signal_partitions)]
    position = dict.fromkeys(sources, 0)
    told: Notices = {}

    told_ahead: list[tuple[str, str, int]] = []  # (key, status, instant)

    def judged(judge: PartitionJudge, record: Signal | Progress) -> None:
        notices = judge.handle(record)
        judge.save()  # the notices are told at once here: nothing is lost in between
        for notice in notices:
            key = notice.rule.name + repr(sorted(notice.scope.labels.items()))
            if notice.note.ahead:  # told on what was read so far: checked below
                told_ahead.append((key, notice.note.status, notice.at_ms))
                continue
            told.setdefault(key, []).append((notice.note.status, round(notice.note.value, 3),
                                             notice.at_ms, notice.note.renotify))

    def report(collector: Collector, wall_ms: int) -> None:
        progress = collector.progress(wall_ms)
        for judge in judges:
            judged(judge, progress)

    for source, count in schedule:
        stream = traffic.streams[source]
        batch = stream[position[source]:position[source] + count]
        if not batch:
            continue
        position[source] += len(batch)
        collector = owner_of[source]
        for signal in collector.collect(batch, traffic.start_ms):
            judged(judges[scope_partition(signal.scope, signal_partitions)], signal)
        collector.caught_up(source, position[source] >= len(stream))
        report(collector, traffic.start_ms)
    assert all(position[s] == len(traffic.streams[s]) for s in sources), "schedule too short"
    for collector in owners:  # the wall clock moves on an hour a step (the bound of each)
        for wall_ms in range(traffic.end_ms + 3600_000, traffic.end_ms + 4 * 3600_000 + 1,
                             3600_000):
            report(collector, wall_ms)
    assert_ahead_kept(told_ahead, told)
    return told


def assert_ahead_kept(told_ahead: list[tuple[str, str, int]], told: Notices) -> None:
    """Every alert told firing ahead of the frontier at an instant was, once the frontier
    passed it, fired there or before (confirmed) or withdrawn at that instant."""
    withdrawn = {(key, at_ms) for key, status, at_ms in told_ahead if status == "resolved"}
    for key, status, at_ms in told_ahead:
        if status != "firing" or (key, at_ms) in withdrawn:
            continue
        before = [(t, s) for s, _, t, renotify in told.get(key, []) if t <= at_ms]
        assert before and before[-1][1] == "firing", (
            f"{key} told firing ahead at {at_ms}, neither fired by then nor withdrawn: "
            f"{told.get(key)}")


def notices_of(alerts: list[AlertNotice]) -> Notices:
    """The alert topic's notices in the form ``drive`` gives them."""
    told: Notices = {}
    for alert in alerts:
        if alert.ahead:  # told on the events read so far; the frontier's follow
            continue
        key = alert.rule + repr(sorted(alert.labels.items()))
        told.setdefault(key, []).append((alert.status, round(alert.value, 3),
                                         alert.decided_at_ms, alert.renotify))
    return told


Message = tuple[str, int, int, dict[str, object]]


def message_of(event: SourceEvent) -> Message:
    """(event name, partition, record timestamp, full record) for ``EventPublisher``."""
    full = full_record(event.event_name, int(str(event.record["event_time"])))
    full.update((name, value) for name, value in event.record.items() if name in full)
    return event.event_name, event.partition, event.record_ms, full


def partition_messages(traffic: Traffic) -> Iterator[Message]:
    """Every message, partition by partition, each partition in its own order."""
    for stream in traffic.streams.values():
        yield from map(message_of, stream)


def event_time_order(traffic: Traffic) -> Iterator[tuple[str, int]]:
    """One message at a time, oldest record first (ties: source name)."""
    pending = sorted((event.record_ms, source, event.offset)
                     for source, stream in traffic.streams.items() for event in stream)
    for _, source, _ in pending:
        yield source, 1


def random_order(traffic: Traffic, rng: random.Random, max_batch: int = 400
                 ) -> Iterator[tuple[str, int]]:
    """Random batches from random partitions: any interleaving Kafka allows."""
    left = {source: len(stream) for source, stream in traffic.streams.items()}
    while left:
        source = rng.choice(sorted(left))
        count = min(left[source], rng.randint(1, max_batch))
        left[source] -= count
        if not left[source]:
            del left[source]
        yield source, count


def topic_by_topic(traffic: Traffic, sparse_first: bool) -> Iterator[tuple[str, int]]:
    """Whole partitions one after another: sparse topics first, or dense ones first (a
    restart with a backlog, at its most skewed)."""
    ordered = sorted(traffic.streams, key=lambda s: (len(traffic.streams[s]), s),
                     reverse=not sparse_first)
    for source in ordered:
        yield source, len(traffic.streams[source])
