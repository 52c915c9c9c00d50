"""Alerts on the platform's worst day (issue #25), through the worker's own classes on a
simulated clock: renders that stop, thin traffic, a storm of failing templates, a page
as soon as the evidence is there, and a popular healthy template left alone."""

from __future__ import annotations

import random
import zlib
from dataclasses import replace

from ept.processors.worker.evaluate_stage import publication_order
from ept.processors.worker.logic.alert_state import alert_notice
from ept.processors.worker.logic.collector import Collector, SourceEvent
from ept.processors.worker.logic.event_time import Frontiers
from ept.processors.worker.logic.partition_judge import PartitionJudge
from ept.processors.worker.logic.records import Progress, ScopeState, Signal, SourceProgress
from ept.processors.worker.logic.rules import Rule, load_rules
from ept.processors.worker.logic.scope_evaluation import DecidedNotice, Evaluator
from ept.processors.worker.logic.scopes import Scope
from ept.schemas.registry import EVENT_NAMES
from tests.alert_streams import MINUTE_MS, T0, Notices, Traffic, drive, event_time_order

HOUR_MS = 60 * MINUTE_MS


def render(traffic: Traffic, time_ms: int, template: str, failed: bool) -> None:
    if failed:
        traffic.add("render_failed", template, time_ms,
                    {"template_id": template, "reason": "timeout"})
    else:
        traffic.add("render_completed", template, time_ms,
                    {"template_id": template, "render_type": "still", "duration_ms": 900.0})


def api_call(traffic: Traffic, time_ms: int, failed: bool = False) -> None:
    traffic.add("api_error" if failed else "api_request_completed", "/api/render", time_ms,
                {"endpoint": "/api/render"})


def sealed(traffic: Traffic) -> Traffic:
    """Every source partition holds something (else event time waits for it), and each
    partition is in record-time order."""
    for event in EVENT_NAMES:
        for partition in range(traffic.partitions):
            key = next(f"k{i}" for i in range(10_000)
                       if zlib.crc32(f"k{i}".encode()) % traffic.partitions == partition)
            traffic.add(event, key, traffic.start_ms,
                        {"template_id": key, "render_type": "still", "endpoint": key,
                         "reason": "timeout", "duration_ms": 900.0})
    for stream in traffic.streams.values():
        stream.sort(key=lambda e: e.record_ms)
        for offset, event in enumerate(stream):
            stream[offset] = type(event)(event.event_name, event.partition, offset,
                                         event.record_ms, event.record)
    return traffic


def told(notices: Notices, rule: str) -> list[tuple[str, bool]]:
    return [(status, renotify) for key, seq in notices.items() if key.startswith(rule + "[")
            for status, _, _, renotify in seq]


def firings(notices: Notices, rule: str) -> list[tuple[int, float]]:
    """(event time, value) of each firing (not re-notified) of ``rule``."""
    return [(at, value) for key, seq in notices.items() if key.startswith(rule + "[")
            for status, value, at, renotify in seq if status == "firing" and not renotify]


def test_renders_that_stop_keep_the_page_open_and_page_for_the_silence() -> None:
    """A day of healthy history, then half the renders fail for 15 minutes, then renders
    stop entirely while API calls go on: the critical error-rate page never resolves as
    "0.0%", and renders_stopped pages for the silence itself."""
    traffic = Traffic(partitions=1, start_ms=T0 - 24 * HOUR_MS)
    rng = random.Random(1)
    outage, stop, end = T0, T0 + 15 * MINUTE_MS, T0 + 3 * HOUR_MS
    for minute in range((end - traffic.start_ms) // MINUTE_MS):
        at = traffic.start_ms + minute * MINUTE_MS
        for _ in range(10):
            time_ms = at + rng.randrange(MINUTE_MS)
            api_call(traffic, time_ms)
            if time_ms < stop:
                render(traffic, time_ms, f"tpl_{rng.randrange(20)}",
                       failed=time_ms >= outage and rng.random() < 0.5)
    notices = drive(sealed(traffic), event_time_order(traffic))
    assert told(notices, "high_error_rate")[0] == ("firing", False)
    assert ("resolved", False) not in told(notices, "high_error_rate")
    # re-notified while renders are away, saying there is no data rather than "0.0%"
    assert told(notices, "high_error_rate")[1:3] == [("firing", True), ("firing", True)]
    [(stopped_at, _)] = firings(notices, "renders_stopped")
    assert stop < stopped_at <= stop + 15 * MINUTE_MS
    assert ("resolved", False) not in told(notices, "renders_stopped")
    # API calls flowed to the end of the traffic; their silence after it pages too
    assert [at >= end for at, _ in firings(notices, "api_calls_stopped")] == [True]


def test_a_total_outage_at_one_render_a_minute_pages() -> None:
    """80 templates, one render a minute between them, every render failing for 2 h: no
    template reaches 4 failures in an hour, and the window never holds 20 renders."""
    traffic = Traffic(partitions=1)
    for minute in range(120):
        render(traffic, T0 + minute * MINUTE_MS + 7_000, f"tpl_{minute % 80:02d}", True)
    notices = drive(sealed(traffic), event_time_order(traffic))
    assert told(notices, "high_error_rate")[0] == ("firing", False)
    [(at_ms, _)] = firings(notices, "high_error_rate")
    assert at_ms <= T0 + 10 * MINUTE_MS  # at the 10th failed render (the floor)


def test_a_steady_thirty_percent_at_thin_traffic_pages_once_and_does_not_flap() -> None:
    traffic = Traffic(partitions=1)
    rng = random.Random(5)
    for second in range(0, 3 * 3600, 46):  # ~1.3 renders a minute
        render(traffic, T0 + second * 1000, f"tpl_{rng.randrange(10)}", rng.random() < 0.3)
    notices = drive(sealed(traffic), event_time_order(traffic))
    statuses = told(notices, "high_error_rate")
    assert statuses[0] == ("firing", False)
    assert ("firing", False) not in statuses[1:]  # one page, then re-notifications only
    assert ("resolved", False) not in statuses


def test_a_storm_of_failing_templates_publishes_the_overall_page_first() -> None:
    """2,000 templates fail at once: the overall critical page is the first notice out."""
    rules = load_rules(None)
    evaluator = Evaluator(rules)
    overall, states = Scope("render"), {}
    notices: list[DecidedNotice] = []
    for number in range(2_000):
        template = Scope("render", "template_id", f"tpl_{number:05d}")
        events = [(T0 + i * 1000 + number, "render_failed:0", number * 4 + i, "failed")
                  for i in range(4)]
        state = states.setdefault(template.key, ScopeState())
        evaluator.add(template, state, Signal.of(template.key, events))
        notices += evaluator.judge(template, state, T0 + MINUTE_MS)
    state = ScopeState()
    evaluator.add(overall, state, Signal.of(overall.key, [(T0 + i, "render_failed:0", i, "failed")
                                                          for i in range(8_000)]))
    notices += evaluator.judge(overall, state, T0 + MINUTE_MS)
    assert len(notices) == 2_001
    first = sorted(notices, key=publication_order)[0]
    assert (first.rule.name, first.scope) == ("high_error_rate", overall)


def test_a_ratio_is_judged_at_the_second_its_failure_arrives_not_the_minute_end() -> None:
    evaluator = Evaluator(load_rules(None))
    scope, state = Scope("render"), ScopeState()
    healthy = [(T0 + i * 1000, "render_completed:0", i, "completed") for i in range(40)]
    failing = [(T0 + 40_000 + i * 1000, "render_failed:0", i, "failed") for i in range(10)]
    evaluator.add(scope, state, Signal.of(scope.key, healthy + failing))
    [firing] = [n for n in evaluator.judge(scope, state, T0 + 5 * MINUTE_MS)
                if n.rule.name == "high_error_rate"]
    # the 6th failure of 46 renders is the first > 5% with 99% confidence: at its second
    assert firing.at_ms == T0 + 46_000


def test_a_popular_healthy_template_is_never_disabled() -> None:
    """3,000 renders an hour at a healthy 0.1% failure rate, for a day: more than 3
    failures in many hours, never a template_failures alert (its kill switch)."""
    [rule] = [r for r in load_rules(None) if r.name == "template_failures"]
    evaluator = Evaluator([rule])
    scope, state = Scope("render", "template_id", "tpl_popular"), ScopeState()
    rng = random.Random(3)
    notices: list[DecidedNotice] = []
    failures_per_hour = []
    for hour in range(24):
        events = [(T0 + hour * HOUR_MS + i * 1200, "render:0", hour * 3000 + i,
                   "failed" if rng.random() < 0.001 else "completed")
                  for i in range(3000)]
        failures_per_hour.append(sum(counter == "failed" for *_, counter in events))
        evaluator.add(scope, state, Signal.of(scope.key, events))
        notices += evaluator.judge(scope, state, T0 + (hour + 1) * HOUR_MS)
    assert max(failures_per_hour) > 3  # the count alone would have fired
    assert notices == []


def test_a_resend_after_a_restart_counts_once() -> None:
    """Dedup ids were memory only: a worker restarted (or assigned the partition in a
    rebalance) counted a producer's re-send of an event read before it took over. The
    collect stage reads the partition's recent event ids back; a collector that
    remembers them drops the re-send."""
    first = Collector(300_000, idle_ms=10_000, dedup_horizon_ms=300_000)
    event = SourceEvent("api_error", 0, 7, T0, {"event_time": T0, "event_id": "e-1",
                                                 "endpoint": "/a"})
    assert [s.scope for s in first.collect([event], T0)] == ["api||", "api|endpoint|/a"]
    resent = replace(event, offset=9, record_ms=T0 + 2_000)
    assert first.collect([resent], T0 + 2_000) == []  # the same worker: a duplicate
    restarted = Collector(300_000, idle_ms=10_000, dedup_horizon_ms=300_000)
    restarted.remember("api_error:0", [("e-1", T0), ("e-0", T0 - 1000)])
    assert restarted.collect([resent], T0 + 2_000) == []
    assert restarted.duplicate_events == 1


def judge_with_lateness(rules: list[Rule]) -> PartitionJudge:
    """A judge of one signals partition, over one partition per event topic, that waits
    30 s of allowed lateness behind the sources' watermarks."""
    frontiers = Frontiers(dict.fromkeys(EVENT_NAMES, 1), lateness_ms=30_000)
    return PartitionJudge(Evaluator(rules), frontiers, {}, [])


def read_up_to(time_ms: int) -> Progress:
    """Every source read up to ``time_ms`` (none idle)."""
    return Progress({f"{event}:0": SourceProgress(time_ms, False) for event in EVENT_NAMES},
                    clock_ms=time_ms)


def test_a_count_pages_the_moment_it_crosses_and_the_frontier_confirms_it() -> None:
    """api_degradation (more than 10 API errors in 5 minutes) fires with the 11th error,
    30 s of lateness before the frontier reaches it; the frontier's own firing follows,
    and nothing is withdrawn (a count only grows with late events)."""
    [rule] = [r for r in load_rules(None) if r.name == "api_degradation"]
    judge = judge_with_lateness([rule])
    judge.handle(read_up_to(T0))
    errors = [(T0 + i * 1000, "api_error:0", i, "errors") for i in range(11)]
    early = judge.handle(Signal.of("api||", errors))
    assert [(n.note.status, n.note.ahead, n.at_ms) for n in early] == [
        ("firing", True, T0 + 11_000)]
    assert judge.frontiers.frontier("api") < T0 + 11_000  # the frontier had not come
    assert "told ahead of late events" in alert_notice(
        rule, {}, early[0].note, early[0].at_ms).summary
    later = judge.handle(read_up_to(T0 + 60_000))
    assert [(n.note.status, n.note.ahead, n.at_ms) for n in later] == [
        ("firing", False, T0 + 11_000)]


def test_a_count_with_a_rate_fires_ahead_once_its_sources_are_read_and_can_be_withdrawn(
        ) -> None:
    """template_failures also needs a failure rate > 5%, which late successes lower: it
    fires ahead only once every source of renders was read past the crossing (not while
    the completions' partition is behind), and the frontier withdraws it when late
    completions bring the rate down."""
    [rule] = [r for r in load_rules(None) if r.name == "template_failures"]
    judge = judge_with_lateness([rule])
    template = "render|template_id|tpl_a"
    judge.handle(read_up_to(T0))
    failures = [(T0 + i * 1000, "render_failed:0", i, "failed") for i in range(4)]
    assert judge.handle(Signal.of(template, failures)) == []  # completions not read that far
    early = judge.handle(read_up_to(T0 + 5_000))
    assert [(n.note.status, n.note.ahead, n.at_ms) for n in early] == [
        ("firing", True, T0 + 4_000)]
    late = [(T0 - 1000 - i, "render_completed:0", i, "completed") for i in range(500)]
    judge.handle(Signal.of(template, late))  # out of order, within the lateness
    withdrawn = judge.handle(read_up_to(T0 + 60_000))
    assert [(n.note.status, n.note.ahead, n.at_ms) for n in withdrawn] == [
        ("resolved", True, T0 + 4_000)]
    assert "withdrawn" in alert_notice(rule, {"template_id": "tpl_a"}, withdrawn[0].note,
                                       withdrawn[0].at_ms).summary
