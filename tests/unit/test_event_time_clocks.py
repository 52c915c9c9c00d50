"""Clocks both ways: hosts slow or fast, the SDK's spool, the worker's own clock.

Each case runs a live platform on a simulated clock through the worker's own Collector,
Frontiers, Evaluator and PartitionJudge: hosts send events (stamped by their own clocks),
the broker stamps each record as it lands, the collector reads it a moment later and
reports progress every second. The measure is what an on-call engineer sees: how long
after the event that crossed a threshold the page comes, in true time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from ept.core.send_stamp import SendStamp
from ept.processors.worker.logic.collector import MAX_CLOCK_STEP_MS, Collector, SourceEvent
from ept.processors.worker.logic.event_time import Frontiers, source_of
from ept.processors.worker.logic.partition_judge import PartitionJudge
from ept.processors.worker.logic.records import Progress, Signal, SourceProgress
from ept.processors.worker.logic.rules import parse_rules
from ept.processors.worker.logic.scope_evaluation import DecidedNotice, Evaluator
from tests.alert_streams import MINUTE_MS, T0

LATENESS_MS = 30_000
SKEW_MS = 300_000
TRANSPORT_MS = 20  # producer -> broker
RULES = parse_rules("""
[[rules]]
name = "api_degradation"
kind = "api_errors"
scopes = ["endpoint"]
threshold = 10
resolve_threshold = 8
window_minutes = 5
severity = "high"
""", "test rules")
PARTITIONS = {"api_error": 2, "api_request_completed": 1}


@dataclass(frozen=True)
class Host:
    """A producing host: its clock reads true time + ``clock_ms``; ``sdk``: it sends the
    send stamp (ept's SDK) or not (another producer)."""

    producer: int
    clock_ms: int = 0
    sdk: bool = True


@dataclass(order=True)
class _Record:
    record_ms: int
    event_name: str = field(compare=False)
    partition: int = field(compare=False)
    record: dict[str, object] = field(compare=False)
    stamp: SendStamp | None = field(compare=False)


class Live:
    """The platform, one collector and one judge, on a simulated true clock."""

    def __init__(self, worker_clock_ms: dict[int, int] | None = None) -> None:
        """``worker_clock_ms``: true second (ms) -> the worker's clock error reading then."""
        self._records: list[_Record] = []
        self._worker_clock = worker_clock_ms or {}
        self._offsets: dict[str, int] = {}
        self._now = T0
        self._pending: Iterator[_Record] | None = None
        self._next: _Record | None = None
        self.collector = Collector(SKEW_MS, idle_ms=10_000, dedup_horizon_ms=300_000)
        sources = [source_of(event, p) for event, count in PARTITIONS.items()
                   for p in range(count)]
        self.collector.assign(sources, T0)
        self.judge = PartitionJudge(Evaluator(RULES), Frontiers(PARTITIONS, LATENESS_MS),
                                    {}, [])
        self.told: list[tuple[int, DecidedNotice]] = []  # (true time told, notice)

    def send(self, host: Host, event_name: str, partition: int, at_ms: int, endpoint: str,
             sent_at_ms: int | None = None) -> None:
        """``host`` records an event at true time ``at_ms`` and hands it to Kafka at
        ``sent_at_ms`` (later when it waited in the spool)."""
        sent_at_ms = at_ms if sent_at_ms is None else sent_at_ms
        stamp = SendStamp(sent_at_ms + host.clock_ms, host.producer) if host.sdk else None
        record = {"event_time": at_ms + host.clock_ms, "endpoint": endpoint,
                  "event_id": f"{host.producer}-{len(self._records)}"}
        self._records.append(_Record(sent_at_ms + TRANSPORT_MS, event_name, partition,
                                     record, stamp))

    def run(self, until_ms: int) -> None:
        """Read every record as it lands, a report each second, on to ``until_ms`` (all
        events are sent before the first run)."""
        if self._pending is None:
            self._records.sort()
            self._pending = iter(self._records)
            self._next = next(self._pending, None)
        for now in range(self._now, until_ms + 1, 1000):
            wall = now + self._worker_clock.get(now, 0)
            batch = []
            while self._next is not None and self._next.record_ms <= now:
                record = self._next
                source = source_of(record.event_name, record.partition)
                offset = self._offsets[source] = self._offsets.get(source, -1) + 1
                batch.append(SourceEvent(record.event_name, record.partition, offset,
                                         record.record_ms, record.record, record.stamp))
                self._next = next(self._pending, None)
            for signal in self.collector.collect(batch, wall):
                self._tell(now, self.judge.handle(signal))
            self._tell(now, self.judge.handle(self.collector.progress(wall)))
        self._now = until_ms + 1000

    def page_delay_s(self, endpoint: str, crossing_ms: int) -> float:
        """True seconds from the crossing event to the first firing notice of
        ``endpoint`` (infinite: never paged)."""
        told = [at for at, notice in self.told if notice.note.status == "firing"
                and notice.scope.labels.get("endpoint") == endpoint]
        return (min(told) - crossing_ms) / 1000 if told else float("inf")

    def _tell(self, now: int, notices: list[DecidedNotice]) -> None:
        self.told += [(now, notice) for notice in notices]


GOOD = Host(1)


def steady(live: Live, host: Host, event: str, partition: int, endpoint: str,
           minutes: int, every_ms: int = 2_000) -> None:
    for at in range(T0, T0 + minutes * MINUTE_MS, every_ms):
        live.send(host, event, partition, at, endpoint)


def outage(live: Live, host: Host, partition: int, endpoint: str, at_ms: int) -> int:
    """14 API errors of ``endpoint`` 5 s apart; returns the true time of the 11th (the
    count > 10 crosses with it)."""
    for i in range(14):
        live.send(host, "api_error", partition, at_ms + i * 5_000, endpoint)
    return at_ms + 10 * 5_000


def slow_host_alone(clock_ms: int, sdk: bool) -> float:
    """A host ``clock_ms`` off, alone on api_error:1 (a steady trickle of errors of its
    own endpoint); an unrelated endpoint's outage on api_error:0: its page delay."""
    live = Live()
    steady(live, GOOD, "api_request_completed", 0, "/api/render", 40)
    steady(live, Host(2, clock_ms, sdk), "api_error", 1, "/api/legacy", 40, every_ms=5_000)
    steady(live, GOOD, "api_error", 0, "/api/assets", 40, every_ms=60_000)
    crossing = outage(live, GOOD, 0, "/api/export", T0 + 20 * MINUTE_MS)
    live.run(T0 + 40 * MINUTE_MS)
    return live.page_delay_s("/api/export", crossing)


# With every clock right: the lateness, the 5 s between the outage's errors (the newest
# event time read lags by up to that), the end of the crossing's second.
PROMPT_S = LATENESS_MS / 1000 + 6


def test_a_host_180_s_slow_alone_on_a_partition_does_not_delay_others_pages() -> None:
    assert slow_host_alone(0, sdk=True) <= PROMPT_S
    assert slow_host_alone(-180_000, sdk=True) <= PROMPT_S


def test_a_host_30_min_slow_alone_on_a_partition_does_not_delay_others_pages() -> None:
    assert slow_host_alone(-30 * MINUTE_MS, sdk=True) <= PROMPT_S


def test_a_slow_producer_without_the_send_stamp_holds_event_time_back_at_most_the_skew(
        ) -> None:
    # not our SDK: nothing tells its clock error from a wait, but the broker's stamp
    # bounds how far back it holds everyone
    assert slow_host_alone(-30 * MINUTE_MS, sdk=False) <= SKEW_MS / 1000 + PROMPT_S


def test_a_host_6_min_slow_sharing_partitions_has_its_own_outage_paged() -> None:
    live = Live()
    slow = Host(2, -6 * MINUTE_MS)
    for partition in (0, 1):  # both hosts on both partitions
        steady(live, GOOD, "api_error", partition, "/api/assets", 40, every_ms=60_000)
        steady(live, slow, "api_error", partition, "/api/legacy", 40, every_ms=60_000)
    steady(live, GOOD, "api_request_completed", 0, "/api/render", 40)
    steady(live, slow, "api_request_completed", 0, "/api/render", 40)
    crossing = outage(live, slow, 1, "/api/export", T0 + 20 * MINUTE_MS)
    live.run(T0 + 40 * MINUTE_MS)
    assert live.page_delay_s("/api/export", crossing) <= PROMPT_S
    assert live.collector.corrected_events > 0


def counted_times(signals: list[Signal]) -> list[int]:
    """The second each event of a batch is counted in, in offset order (once: an event
    touches several scopes)."""
    counted = {(source, offset): second for signal in signals
               for source, events in signal.sources.items()
               for offset, second in zip(events.offsets, events.seconds, strict=True)}
    return [counted[key] for key in sorted(counted)]


def test_events_spooled_through_a_broker_outage_keep_their_time() -> None:
    """A spooled event: old event time, sent (and stamped) on replay, broker time then.
    And one that waited in librdkafka's queue: stamped before the outage, broker time
    after it; its producer was seen before, so its offset is no clock error either."""
    collector = Collector(SKEW_MS, idle_ms=10_000, dedup_horizon_ms=300_000)
    host = 7
    before = [SourceEvent("api_error", 0, i, T0 + i * 1000 + TRANSPORT_MS,
                          {"event_time": T0 + i * 1000, "event_id": f"b{i}", "endpoint": "/a"},
                          SendStamp(T0 + i * 1000, host)) for i in range(5)]
    outage_ms = T0 + 5 * MINUTE_MS  # the broker is back 5 minutes later
    spooled = [SourceEvent("api_error", 0, 5 + i, outage_ms + i,
                           {"event_time": T0 + 10_000 + i * 1000, "event_id": f"s{i}",
                            "endpoint": "/a"}, SendStamp(outage_ms + i, host))
               for i in range(5)]
    queued = [SourceEvent("api_error", 0, 10 + i, outage_ms + 10 + i,
                          {"event_time": T0 + 20_000 + i * 1000, "event_id": f"q{i}",
                           "endpoint": "/a"}, SendStamp(T0 + 20_000 + i * 1000, host))
              for i in range(5)]
    for batch, wall in ((before, T0 + 5_000), (spooled + queued, outage_ms)):
        assert counted_times(collector.collect(batch, wall)) == [
            int(str(event.record["event_time"])) // 1000 for event in batch]
    assert collector.corrected_events == 0


def test_a_clock_error_is_corrected_however_long_the_host_waited_in_the_spool() -> None:
    collector = Collector(SKEW_MS, idle_ms=10_000, dedup_horizon_ms=300_000)
    slow_ms = 8 * MINUTE_MS
    # sent when recorded, then after a 2-minute spool: both 8 minutes slow
    events = [SourceEvent("api_error", 0, 0, T0 + TRANSPORT_MS,
                          {"event_time": T0 - slow_ms, "event_id": "a", "endpoint": "/a"},
                          SendStamp(T0 - slow_ms, 3)),
              SourceEvent("api_error", 0, 1, T0 + 1000 + TRANSPORT_MS,
                          {"event_time": T0 - 2 * MINUTE_MS - slow_ms, "event_id": "b",
                           "endpoint": "/a"}, SendStamp(T0 + 1000 - slow_ms, 3))]
    assert counted_times(collector.collect(events, T0)) == [
        (T0 + TRANSPORT_MS) // 1000, (T0 - 2 * MINUTE_MS + TRANSPORT_MS) // 1000]


def test_a_jump_of_the_worker_clock_moves_event_time_no_further_than_the_broker() -> None:
    # everything quiet from minute 10; at minute 15, one report with the clock 2 h ahead
    jump = T0 + 15 * MINUTE_MS
    live = Live({jump: 2 * 3600_000})
    steady(live, GOOD, "api_request_completed", 0, "/api/render", 10)
    first = outage(live, GOOD, 0, "/api/export", T0 + 20 * MINUTE_MS)
    second = outage(live, GOOD, 1, "/api/assets", T0 + 60 * MINUTE_MS)
    live.run(jump)
    newest_record = T0 + 10 * MINUTE_MS - 2_000 + TRANSPORT_MS
    assert live.judge.frontiers.frontier("api") <= newest_record + 5 * MINUTE_MS
    live.run(T0 + 90 * MINUTE_MS)
    assert live.page_delay_s("/api/export", first) <= PROMPT_S
    assert live.page_delay_s("/api/assets", second) <= PROMPT_S


def test_one_report_cannot_move_the_broker_clock_by_more_than_a_step() -> None:
    collector = Collector(SKEW_MS, idle_ms=10_000, dedup_horizon_ms=300_000)
    collector.collect([SourceEvent("api_error", 0, 0, T0, {"event_time": T0, "endpoint": "/a"})],
                      T0)
    assert collector.progress(T0 + 2 * 3600_000).clock_ms == T0 + MAX_CLOCK_STEP_MS
    # and back: nothing moves back, the next steps count from there
    assert collector.progress(T0 + 1000).clock_ms == T0 + MAX_CLOCK_STEP_MS
    assert collector.progress(T0 + 2000).clock_ms == T0 + MAX_CLOCK_STEP_MS + 1000


def fast_host_then_quiet(sdk: bool) -> float:
    """A host 280 s fast (inside the skew) sends for 10 minutes, then all is quiet; an
    outage a minute later: its page delay."""
    live = Live()
    steady(live, Host(2, 280_000, sdk), "api_error", 1, "/api/legacy", 10, every_ms=5_000)
    steady(live, GOOD, "api_request_completed", 0, "/api/render", 10)
    crossing = outage(live, GOOD, 0, "/api/export", T0 + 11 * MINUTE_MS)
    live.run(T0 + 30 * MINUTE_MS)
    return live.page_delay_s("/api/export", crossing)


def test_a_host_280_s_fast_then_quiet_does_not_hold_event_time_ahead() -> None:
    assert fast_host_then_quiet(sdk=True) <= PROMPT_S
    assert fast_host_then_quiet(sdk=False) <= PROMPT_S


def test_a_source_lagging_its_records_by_more_than_the_skew_stops_holding_the_frontier(
        ) -> None:
    collector = Collector(SKEW_MS, idle_ms=10_000, dedup_horizon_ms=300_000)
    now = T0 + 60 * MINUTE_MS
    events = [SourceEvent("api_error", 0, 0, now, {"event_time": T0, "endpoint": "/a"}),
              SourceEvent("api_error", 1, 0, now, {"event_time": now - 1000, "endpoint": "/b"})]
    collector.collect(events, now)
    progress = collector.progress(now)
    assert progress.sources["api_error:0"] == SourceProgress(now - SKEW_MS, False,
                                                             now - SKEW_MS)
    assert progress.sources["api_error:1"] == SourceProgress(now - 1000, False, now - 1000)
    frontiers = Frontiers({"api_error": 2}, LATENESS_MS)
    assert frontiers.update(progress) == {"api": now - SKEW_MS - LATENESS_MS}


def test_progress_keeps_its_wire_form() -> None:
    progress = Progress({"api_error:0": SourceProgress(T0, True, T0 + 5)}, T0 + 5)
    assert progress.to_json() == {"progress": {"api_error:0": [T0, True, T0 + 5]},
                                  "wall_ms": T0 + 5}
    assert Progress.from_json(progress.to_json()) == progress
    unknown = Progress({"api_error:0": SourceProgress(None, False)}, None)
    assert Progress.from_json(unknown.to_json()) == unknown
    # a report of a collector before settled_ms: settled at its watermark
    assert Progress.from_json({"progress": {"api_error:0": [T0, False]}, "wall_ms": T0}
                              ) == Progress({"api_error:0": SourceProgress(T0, False, T0)}, T0)


def test_a_caught_up_source_is_settled_to_the_brokers_clock() -> None:
    """Read to its high-water mark, a source has been read past everything stamped so
    far: a rate may be judged ahead up to the broker's clock, not only up to its own
    newest event (a sparse partition would hold it back up to the idle interval)."""
    collector = Collector(SKEW_MS, idle_ms=10_000, dedup_horizon_ms=300_000)
    now = T0 + 60 * MINUTE_MS
    collector.collect([SourceEvent("api_error", 0, 0, now - 4000,
                                   {"event_time": now - 4000, "endpoint": "/a"}),
                       SourceEvent("api_error", 1, 0, now, {"event_time": now, "endpoint": "/b"})],
                      now)
    collector.caught_up("api_error:0", True)
    collector.caught_up("api_error:1", False)
    progress = collector.progress(now)
    assert progress.sources["api_error:0"].settled_ms == now  # the broker's clock
    assert progress.sources["api_error:1"].settled_ms == now
    frontiers = Frontiers({"api_error": 2}, LATENESS_MS)
    frontiers.update(progress)
    assert frontiers.settled("api") == now
    collector.caught_up("api_error:0", False)  # behind again: its own newest event
    frontiers.update(collector.progress(now))
    assert frontiers.settled("api") == now  # never goes back


def test_a_jump_back_of_the_worker_clock_does_not_keep_a_source_busy() -> None:
    collector = Collector(SKEW_MS, idle_ms=10_000, dedup_horizon_ms=300_000)
    collector.assign(["api_error:0"], T0)
    collector.collect([SourceEvent("api_error", 0, 0, T0, {"event_time": T0, "endpoint": "/a"})],
                      T0)
    back = T0 - 2 * 3600_000  # the clock was stepped back 2 h, then runs on
    idle = [collector.progress(back + i * 1000).sources["api_error:0"].idle for i in range(11)]
    assert idle == [False] * 10 + [True]  # silent for 10 s of the clock's own steps


def test_partitions_taken_over_read_to_their_end_move_event_time_on_the_brokers_clock() -> None:
    """A collector with nothing to read (traffic stopped, then the worker restarted)
    starts the broker's clock from the newest record of the partitions it took over:
    once they are idle, event time moves on, so firing alerts resolve and stopped
    renders are noticed. It never moves the clock back."""
    frontiers = Frontiers({"api_error": 1}, LATENESS_MS)
    collector = Collector(SKEW_MS, idle_ms=10_000, dedup_horizon_ms=300_000)
    collector.assign(["api_error:0"], T0)
    collector.broker_clock_seen(T0 - 3 * MINUTE_MS)
    frontiers.update(collector.progress(T0))
    assert frontiers.frontier("api") == 0  # not caught up: the source may hold anything
    collector.caught_up("api_error:0", True)
    for second in range(12):
        frontiers.update(collector.progress(T0 + second * 1000))
    assert frontiers.frontier("api") == T0 - 3 * MINUTE_MS + 11_000 - LATENESS_MS
    collector.broker_clock_seen(T0 - MINUTE_MS)
    collector.broker_clock_seen(T0 - 2 * MINUTE_MS)  # an older partition's: no step back
    frontiers.update(collector.progress(T0 + 13_000))  # 2 s of the wall clock on
    assert frontiers.frontier("api") == T0 - MINUTE_MS + 2000 - LATENESS_MS
    frontiers.update(collector.progress(T0 + 23_000))
    assert frontiers.frontier("api") == T0 - MINUTE_MS + 12_000 - LATENESS_MS
