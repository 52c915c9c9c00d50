"""Alerts are a function of the events, not of their delivery.

The worker's own collect / evaluate code (tests/alert_streams.py drives it without Faust)
gives the same notices for every order in which Kafka may deliver the partitions.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from ept.processors.worker.logic.collector import Collector, SourceEvent
from ept.processors.worker.logic.event_time import Frontiers
from ept.processors.worker.logic.partition_judge import PartitionJudge
from ept.processors.worker.logic.records import Progress, SourceProgress
from ept.processors.worker.logic.rules import parse_rules
from ept.processors.worker.logic.scope_evaluation import Evaluator
from ept.processors.worker.logic.state_table import stored_scopes
from tests.alert_streams import (
    EXPECTED_RULE,
    INCIDENTS,
    MINUTE_MS,
    T0,
    Traffic,
    drive,
    event_time_order,
    random_order,
    simulate,
    topic_by_topic,
)

incidents = st.lists(st.tuples(st.sampled_from(INCIDENTS), st.integers(0, 50)), max_size=3)


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32), incidents=incidents, order_seed=st.integers(0, 2**32),
       collectors=st.integers(1, 2), duplicates=st.sampled_from([0.0, 0.01]),
       skewed=st.integers(0, 2))
def test_any_delivery_order_gives_the_notices_of_event_time_order(
        seed: int, incidents: list[tuple[str, int]], order_seed: int, collectors: int,
        duplicates: float, skewed: int) -> None:
    traffic = simulate(seed, 60, incidents, renders_per_minute=20, duplicates=duplicates,
                       skewed=skewed)
    expected = drive(traffic, event_time_order(traffic))
    rng = random.Random(order_seed)
    assert drive(traffic, random_order(traffic, rng), collectors=collectors) == expected
    assert drive(traffic, random_order(traffic, rng, max_batch=5)) == expected
    for sparse_first in (True, False):
        assert drive(traffic, topic_by_topic(traffic, sparse_first)) == expected


def fired(notices: dict[str, list[tuple[str, float, int, bool]]]) -> set[str]:
    return {key.split("[")[0] for key, told in notices.items()
            if any(status == "firing" for status, *_ in told)}


def test_healthy_traffic_read_as_a_skewed_backlog_raises_nothing() -> None:
    traffic = simulate(7, 60, [], renders_per_minute=500 // 4)
    for sparse_first in (True, False):
        assert drive(traffic, topic_by_topic(traffic, sparse_first)) == {}


def test_each_incident_fires_its_rule_once_and_resolves_whatever_the_order() -> None:
    for kind in INCIDENTS:
        traffic = simulate(11, 90, [(kind, 10)])
        expected = drive(traffic, event_time_order(traffic))
        assert fired(expected) == {EXPECTED_RULE[kind]}, (kind, expected)
        for told in expected.values():
            assert [status for status, *_ in told if status != "firing" or not _[2]][-1] == (
                "resolved")
        for sparse_first in (True, False):
            assert drive(traffic, topic_by_topic(traffic, sparse_first)) == expected


def test_a_future_dated_event_and_duplicate_resends_change_nothing() -> None:
    traffic = simulate(3, 90, [("template_failures", 5), ("api_burst", 30)])
    expected = drive(traffic, event_time_order(traffic))
    assert fired(expected) == {"template_failures", "api_degradation"}
    noisy = simulate(3, 90, [("template_failures", 5), ("api_burst", 30)], duplicates=0.05,
                     skewed=1)
    assert len(noisy.streams["render_failed:0"]) + len(noisy.streams["render_failed:1"]) > (
        len(traffic.streams["render_failed:0"]) + len(traffic.streams["render_failed:1"]))
    told = drive(noisy, topic_by_topic(noisy, sparse_first=True))
    # the skewed event counts once, at its record time, for its own template only
    assert {k: v for k, v in told.items() if "tpl_skewed" not in k} == expected


RULES = parse_rules("""
[[rules]]
name = "api_degradation"
kind = "api_errors"
scopes = ["overall"]
threshold = 10
window_minutes = 5
severity = "high"

[[rules]]
name = "template_failures"
kind = "template_failures"
scopes = ["template"]
threshold = 3
resolve_threshold = 0
window_minutes = 60
severity = "high"
""", "test rules")


def span_traffic(event: str, key: str, offsets_ms: list[int]) -> Traffic:
    traffic = Traffic(partitions=1)
    record = {"endpoint": key, "template_id": key, "reason": "timeout",
              "render_type": "still", "duration_ms": 1000.0}
    for offset_ms in offsets_ms:
        traffic.add(event, key, T0 + offset_ms, record)
    for other in ("render_failed", "render_completed", "slow_render", "api_error",
                  "api_request_completed"):
        if f"{other}:0" not in traffic.streams:
            traffic.add(other, "other", T0, {**record, "endpoint": "other",
                                              "template_id": "other"})
    return traffic


def test_count_windows_are_exact_to_the_second() -> None:
    # 11 API errors within 4 min 01 s: more than 10 in 5 minutes
    api = span_traffic("api_error", "/a", [i * 24_100 for i in range(11)])
    assert "api_degradation" in fired(drive(api, event_time_order(api), rules=RULES))
    # 4 failures of one template within 59 min 01 s: more than 3 in an hour
    spread = [0, 20 * MINUTE_MS, 40 * MINUTE_MS, 59 * MINUTE_MS + 1_000]
    template = span_traffic("render_failed", "tpl", spread)
    assert "template_failures" in fired(drive(template, event_time_order(template),
                                              rules=RULES))
    # ... and 4 failures over 60 min 01 s are not
    wider = span_traffic("render_failed", "tpl", [0, 20 * MINUTE_MS, 40 * MINUTE_MS,
                                                  60 * MINUTE_MS + 1_000])
    assert "template_failures" not in fired(drive(wider, event_time_order(wider),
                                                  rules=RULES))


def test_when_every_source_is_idle_event_time_follows_the_wall_clock() -> None:
    evaluator = Evaluator(RULES)
    judge = PartitionJudge(evaluator, Frontiers({"api_error": 1}, 30_000), {}, [])
    collector = Collector(300_000, idle_ms=10_000, dedup_horizon_ms=300_000)
    collector.assign(["api_error:0"], T0)
    events = [SourceEvent("api_error", 0, i, T0 + i * 1000,
                          {"event_time": T0 + i * 1000, "event_id": f"e{i}", "endpoint": "/a"})
              for i in range(12)]
    told = []
    for signal in collector.collect(events, T0 + 12_000):
        told += judge.handle(signal)
    # the count crossed with the 11th error: told ahead of the frontier at once
    assert [(n.note.status, n.note.ahead, n.at_ms) for n in told] == [
        ("firing", True, T0 + 11_000)]
    told = []
    # not caught up as far as anyone knows, and heard of 1 s ago: not idle, so event time
    # stands 30 s (the lateness) behind the newest event
    told += judge.handle(collector.progress(T0 + 13_000))
    assert told == []
    # silent for 10 s: idle. The wall clock minus the lateness is still before the burst,
    # but everything read is judged, to the end of the newest event's second.
    told += judge.handle(collector.progress(T0 + 22_000))
    assert [(n.note.status, n.at_ms) for n in told] == [("firing", T0 + 11_000)]
    assert judge.frontiers.frontier("api") == T0 + 12_000
    # traffic stopped altogether: event time passes without any event (reported every
    # 10 s: the wall clock moves the broker's clock in bounded steps), but no API call is
    # no evidence of health: the alert keeps firing, and says why when it re-notifies
    for wall_ms in range(T0 + 32_000, T0 + 70 * MINUTE_MS + 1, 10_000):
        told += judge.handle(collector.progress(wall_ms))
    assert judge.frontiers.frontier("api") > T0 + 60 * MINUTE_MS
    assert [(n.note.status, n.note.renotify, n.note.no_data) for n in told] == [
        ("firing", False, ""), ("firing", True, "0 API calls in 5m")]


def test_an_unreported_source_holds_event_time_back() -> None:
    frontiers = Frontiers({"api_error": 2, "api_request_completed": 1}, 0)
    assert frontiers.update(Progress({"api_error:0": SourceProgress(T0, False),
                                      "api_request_completed:0": SourceProgress(T0, True)},
                                     T0)) == {}
    advanced = frontiers.update(Progress({"api_error:1": SourceProgress(T0 - 5_000, False)},
                                         T0))
    assert advanced == {"api": T0 - 5_000}
    # a stale report from a previous owner does not move a watermark back
    assert frontiers.update(Progress({"api_error:1": SourceProgress(T0 - 9_000, False)},
                                     T0)) == {}
    assert frontiers.frontier("api") == T0 - 5_000


def test_a_crash_before_its_notice_is_delivered_judges_the_transition_again() -> None:
    """The table is the worker's memory across a kill: it must not say "firing" before the
    firing notice is on the alert topic, or the restarted worker never tells it."""
    table: dict[str, object] = {}

    def started() -> PartitionJudge:  # a worker (re)started on the table
        return PartitionJudge(Evaluator(RULES), Frontiers({"api_error": 1}, 30_000), table,
                              stored_scopes(table))

    collector = Collector(300_000, idle_ms=10_000, dedup_horizon_ms=300_000)
    collector.assign(["api_error:0"], T0)
    events = [SourceEvent("api_error", 0, i, T0 + i * 1000,
                          {"event_time": T0 + i * 1000, "event_id": f"e{i}", "endpoint": "/a"})
              for i in range(12)]
    judge = started()
    for signal in collector.collect(events, T0 + 12_000):
        assert [n for n in judge.handle(signal) if not n.note.ahead] == []
        judge.save()
    idle = collector.progress(T0 + 22_000)
    firing = [(n.note.status, n.at_ms) for n in judge.handle(idle)]
    assert firing == [("firing", T0 + 11_000)]
    # killed before the notice was delivered (so before save): the transition is judged again
    restarted = started()
    assert [(n.note.status, n.at_ms) for n in restarted.handle(idle)] == firing
    restarted.save()
    # once saved, a restart does not judge it again
    assert started().handle(idle) == []
