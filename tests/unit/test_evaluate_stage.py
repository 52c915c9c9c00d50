"""``EvaluateStage`` saves a judged state only once the broker holds its notices."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ept.core.settings import Settings
from ept.processors.worker.evaluate_stage import EvaluateStage, PublishedAlerts
from ept.processors.worker.logic.collector import Collector, SourceEvent
from ept.processors.worker.logic.records import Counted, ScopeState, Signal
from ept.processors.worker.logic.rules import parse_rules

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
    return [alert.status for data in table.values()
            for alert in ScopeState.from_json(data).alerts.values()]


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
        for signal in collector.collect(events, T0 + 12_000):
            await stage.handle(0, signal.to_json())
        handling = asyncio.create_task(stage.handle(0, collector.progress(T0 + 22_000)
                                                    .to_json()))
        while not topic.deliveries:
            await asyncio.sleep(0)
        topic.deliveries[0].set_result(None)
        await handling

    asyncio.run(scenario())
    assert alert_status(table) == ["firing"] and len(topic.sent) == 1


def test_a_signal_split_in_parts_keeps_its_events_in_order() -> None:
    """A batch's signal too large for one Kafka message is sent in parts of at most
    ``most`` events: the same events, in order, under the same scope."""
    events = [Counted(1_000 + i, "render_completed:0", i, "completed") for i in range(5)]
    signal = Signal("render||", events)
    parts = signal.split(2)
    assert [len(part.events) for part in parts] == [2, 2, 1]
    assert {part.scope for part in parts} == {"render||"}
    assert [e for part in parts for e in part.events] == events
    assert signal.split(5) == [signal]
