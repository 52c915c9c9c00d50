"""``EvaluateStage`` saves a judged state only once the broker holds its notices."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ept.core.settings import Settings
from ept.processors.worker.evaluate_stage import EvaluateStage, PublishedAlerts
from ept.processors.worker.logic.collector import Collector, SourceEvent
from ept.processors.worker.logic.records import Events, ScopeState, Signal
from ept.processors.worker.logic.rules import parse_rules
from ept.processors.worker.logic.scope_evaluation import Evaluator
from ept.processors.worker.logic.scopes import Scope
from ept.processors.worker.logic.state_table import StateTable, stored_scopes

T0 = 1_700_000_000_000
RULES = parse_rules("""
[[rules]]
name = "api_degradation"
kind = "api_errors"
scopes = ["overall"]
threshold = 10
window_minutes = 5
severity = "high"
pending_seconds = 1  # fires at the frontier only, not ahead of it
""", "test rules")


class HeldTopic:
    """An alert topic whose deliveries complete only when the test says so."""

    def __init__(self) -> None:
        self.deliveries: list[asyncio.Future[None]] = []
        self.sent: list[bytes] = []

    async def send(self, key: bytes, value: bytes) -> asyncio.Future[None]:
        self.sent.append(key)
        self.deliveries.append(asyncio.get_running_loop().create_future())
        return self.deliveries[-1]


def alert_status(table: dict[str, Any]) -> list[str]:
    states = StateTable(table, retain_s=3600)
    return [alert.status for scope in stored_scopes(table)
            for alert in states.load(scope).alerts.values()]


def burst_of_api_errors(table: dict[str, Any], alerts: HeldTopic
                        ) -> tuple[EvaluateStage, Collector, list[SourceEvent]]:
    """A stage over ``table`` telling ``alerts``, and 12 API errors in 12 s (they fire
    api_degradation once event time passes the last)."""
    stage = EvaluateStage(Settings(topic_partitions=1), RULES, {"api_error": 1}, table,
                          alerts, HeldTopic())  # type: ignore[arg-type]
    collector = Collector(300_000, idle_ms=10_000, dedup_horizon_ms=300_000)
    collector.assign(["api_error:0"], T0)
    events = [SourceEvent("api_error", 0, i, T0 + i * 1000,
                          {"event_time": T0 + i * 1000, "event_id": f"e{i}", "endpoint": "/a"})
              for i in range(12)]
    return stage, collector, events


async def judged_until_told(stage: EvaluateStage, collector: Collector,
                            events: list[SourceEvent], topic: HeldTopic) -> asyncio.Task[None]:
    """Hand ``stage`` the burst's signals, then the report that fires it; returns the
    report's handling, once its notice is sent and held undelivered."""
    for signal in collector.collect(events, T0 + 12_000):
        await stage.handle(0, signal.to_json())
    handling = asyncio.create_task(stage.handle(0, collector.progress(T0 + 22_000).to_json()))
    while not topic.deliveries:
        await asyncio.sleep(0)
    return handling


def test_a_state_is_saved_after_its_notice_is_delivered(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    monkeypatch.setattr(PublishedAlerts, "_read", lambda self: {})  # an empty alert topic
    table: dict[str, Any] = {}
    topic = HeldTopic()
    stage, collector, events = burst_of_api_errors(table, topic)

    async def scenario() -> None:
        for signal in collector.collect(events, T0 + 12_000):
            await stage.handle(0, signal.to_json())
        assert alert_status(table) == []
        handling = asyncio.create_task(stage.handle(0, collector.progress(T0 + 22_000)
                                                    .to_json()))
        while not topic.deliveries:
            await asyncio.sleep(0)
        assert not handling.done()
        assert "firing" not in alert_status(table)
        topic.deliveries[0].set_result(None)
        await handling
        assert alert_status(table) == ["firing"]
        assert stage.alerts_told[("api_degradation", "firing")] == 1

    asyncio.run(scenario())


def test_the_rates_page_shows_the_saved_state_as_a_restarted_worker_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PublishedAlerts, "_read", lambda self: {})
    table: dict[str, Any] = {}
    topic = HeldTopic()
    stage, collector, events = burst_of_api_errors(table, topic)

    def rates(stage: EvaluateStage) -> list[tuple[str, float, str]]:
        return [(rate["rule"], rate["value"], rate["status"]) for rate in stage.current_rates()]

    async def scenario() -> None:
        handling = await judged_until_told(stage, collector, events, topic)
        assert [status for _, _, status in rates(stage)] == ["inactive"]  # not saved yet
        topic.deliveries[0].set_result(None)
        await handling
        assert rates(stage) == [("api_degradation", 12.0, "firing")]

    asyncio.run(scenario())
    restarted = EvaluateStage(Settings(topic_partitions=1), RULES, {"api_error": 1},
                              json.loads(json.dumps(table)), topic, HeldTopic())  # type: ignore[arg-type]
    assert [(rule, status) for rule, _, status in rates(restarted)] == [
        ("api_degradation", "firing")]


def test_an_unreadable_alert_topic_delays_the_notice_and_loses_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker restarting while the worker reads the alert topic (seen in a chaos run:
    "Not leader for partition") is waited out; the agent never crashes past a notice."""
    reads = iter([RuntimeError("Not leader for partition"), TimeoutError("30 s"), {}])

    def read(self: PublishedAlerts) -> dict[str, int]:
        outcome = next(reads)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    real_sleep = asyncio.sleep

    async def no_pause(seconds: float) -> None:  # the backoff, made instant
        await real_sleep(0)

    monkeypatch.setattr(PublishedAlerts, "_read", read)
    monkeypatch.setattr("ept.processors.worker.evaluate_stage.asyncio.sleep", no_pause)
    table: dict[str, Any] = {}
    topic = HeldTopic()
    stage, collector, events = burst_of_api_errors(table, topic)

    async def scenario() -> None:
        handling = await judged_until_told(stage, collector, events, topic)
        topic.deliveries[0].set_result(None)
        await handling

    asyncio.run(scenario())
    assert alert_status(table) == ["firing"] and len(topic.sent) == 1


def test_a_signal_split_in_parts_keeps_each_sources_events_in_order() -> None:
    """A batch's signal too large for one Kafka message is sent in parts of at most
    ``most`` events: the same events, each source's in order, under the same scope."""
    signal = Signal.of("render||", [(1_000 * i, f"render_completed:{i % 2}", i, "completed")
                                    for i in range(5)])
    parts = signal.split(2)
    assert [len(part) for part in parts] == [2, 2, 1]
    assert {part.scope for part in parts} == {"render||"}
    assert [(source, offset) for part in parts for source, events in part.sources.items()
            for offset in events.offsets] == [
        ("render_completed:0", 0), ("render_completed:0", 2), ("render_completed:0", 4),
        ("render_completed:1", 1), ("render_completed:1", 3)]
    assert signal.split(5) == [signal]


def test_a_signal_of_a_worker_before_the_columns_is_read() -> None:
    """During an upgrade the signals topic still holds signals written as one
    ``[time_ms, source, offset, counter]`` list per event."""
    events = [[T0 + 1_500, "api_error:0", 7, "errors"],
              [T0 + 2_000, "api_request_completed:1", 3, "requests"],
              [T0 + 2_999, "api_error:0", 9, "errors"]]
    signal = Signal.from_json(json.loads(json.dumps({"scope": "api||", "events": events})))
    assert signal == Signal.of("api||", events)  # type: ignore[arg-type]
    second = T0 // 1000
    assert signal.counters == ["errors", "requests"]
    assert signal.sources["api_error:0"] == Events([7, 9], [second + 1, second + 2], [0, 0])
    assert Signal.from_json(json.loads(json.dumps(signal.to_json()))) == signal
    state = ScopeState()
    Evaluator(RULES).add(Scope("api"), state, signal)
    assert state.seconds == {second + 1: {"errors": 1},
                             second + 2: {"requests": 1, "errors": 1}}
    assert state.applied == {"api_error:0": 9, "api_request_completed:1": 3}


SOURCES = ["api_error:0", "api_error:1", "api_request_completed:0"]
# (source, event time in seconds after T0, counter); a six-hour block begins at +6,400 s
EVENTS = st.lists(st.tuples(st.sampled_from(SOURCES),
                            st.integers(0, 900) | st.integers(5_000, 30_000),
                            st.sampled_from(["errors", "requests"])), max_size=80)


@pytest.mark.parametrize("scope", [Scope("api"), Scope("duration", "render_type", "video")])
@given(events=EVENTS, applied=st.integers(-1, 80), most=st.integers(1, 30))
@settings(max_examples=150, deadline=None)
def test_a_signal_counts_each_event_above_its_applied_offset_however_split(
        scope: Scope, events: list[tuple[str, int, str]], applied: int, most: int) -> None:
    """A batch read again after a crash overlaps the applied one at any offset: the
    events above each source's applied offset are counted, once; the parts of a split
    counted in order count as the whole (late events, minute families and blocks too)."""
    signal = Signal.of(scope.key, [(T0 + second * 1000, source, offset, counter)
                                   for offset, (source, second, counter) in enumerate(events)])

    def evaluated(parts: list[Signal], judged_s: int) -> tuple[ScopeState, int]:
        evaluator = Evaluator(RULES)
        state = ScopeState(judged_s=judged_s, applied={"api_error:0": applied})
        for part in parts:
            evaluator.add(scope, state, part)
        return state, evaluator.late_events

    judged_s = T0 // 1000 + 400  # some events late, some older than every window
    assert evaluated(signal.split(most), judged_s) == evaluated([signal], judged_s)
    assert sum(len(part) for part in signal.split(most)) == len(events)
    state, _ = evaluated([signal], -1)
    above = [(source, offset) for offset, (source, _, _) in enumerate(events)
             if source != "api_error:0" or offset > applied]
    assert sum(n for counts in state.seconds.values() for n in counts.values()) == len(above)
    assert state.applied == {"api_error:0": applied} | dict(above)


def test_a_batch_that_reads_offsets_again_counts_each_once() -> None:
    """A signal's offsets are ascending per source (``Events.after`` bisects them): events
    read again within one batch, as after a seek back, are counted once."""
    _, collector, events = burst_of_api_errors({}, HeldTopic())
    # without event ids (a producer that is not ept's SDK): no dedup by id to catch them
    events = [replace(event, record={k: v for k, v in event.record.items() if k != "event_id"})
              for event in events]
    again = [*events[:8], *events[5:]]  # offsets 0..7, then 5..11
    signals = collector.collect(again, T0 + 12_000)
    assert [signal.sources["api_error:0"].offsets for signal in signals] == (
        [list(range(12))] * len(signals))
