"""Scopes are judged in event time, and the alerts do not depend on how events were batched."""

from __future__ import annotations

from ept.processors.evaluation import Evaluator
from ept.processors.rules import load_rules
from ept.processors.windows import MINUTE_MS, MinuteBuckets

BASE_MS = 1_780_000_000_000 // MINUTE_MS * MINUTE_MS  # a minute boundary
TEMPLATE = "render|template_id|tpl_flaky"


def timeline(failures_per_minute: dict[int, int], minutes: int = 90) -> list[tuple[int, bool]]:
    """(event time, is it the template's failure) over ``minutes``: other traffic each 10 s,
    the template's failures at the start of the given minutes."""
    events = [(BASE_MS + second * 1000, False) for second in range(0, minutes * 60, 10)]
    for minute, failures in failures_per_minute.items():
        events += [(BASE_MS + minute * MINUTE_MS + i * 1000 + 500, True)
                   for i in range(failures)]
    return sorted(events)


def judge(events: list[tuple[int, bool]], batch: int) -> list[tuple[str, float, bool, int]]:
    """What the worker tells for the template's scope when events arrive ``batch`` at a
    time, each batch followed by a tick at its newest event time."""
    evaluator = Evaluator(load_rules(None), allowed_lateness_ms=120_000)
    state: dict = {}
    buckets = MinuteBuckets()
    told = []
    watermark = 0
    for start in range(0, len(events), batch):
        chunk = events[start:start + batch]
        for event_ms, mine in chunk:
            if mine:
                told += evaluator.count(TEMPLATE, state, buckets, event_ms, "failed", watermark)
        watermark = max(watermark, chunk[-1][0])
        told += evaluator.catch_up(TEMPLATE, state, buckets, watermark)
    return [(n.note.status, n.note.value, n.note.renotify,
             (n.note.resolved_at_ms or n.note.started_at_ms) - BASE_MS)
            for n in told if n.rule.name == "template_failures"]


BATCHES = [1, 7, 60, 500, 100_000]


def test_an_incident_fires_once_and_resolves_once_whatever_the_batching() -> None:
    events = timeline({10: 2, 11: 2, 12: 2})
    results = {batch: judge(events, batch) for batch in BATCHES}
    # Fires at the 4th failure (11:01.5); a re-notification would be due 60 min later,
    # at 71:01.5, but at the 72:00 boundary the window (13..72) holds no failure.
    assert results[1] == [("firing", 4.0, False, 11 * MINUTE_MS + 1500),
                          ("resolved", 0.0, False, 72 * MINUTE_MS)]
    assert all(result == results[1] for result in results.values()), results


def test_a_long_incident_is_renotified_at_the_same_instant_whatever_the_batching() -> None:
    events = timeline({minute: 1 for minute in range(10, 41)} | {10: 4}, minutes=130)
    results = {batch: judge(events, batch) for batch in BATCHES}
    # Fired at 10:03.5; re-notified at the first judgement 60 min later, the 71:00
    # boundary (no failure after minute 40); resolved once minute 40 left the window.
    assert results[1] == [("firing", 4.0, False, 10 * MINUTE_MS + 3500),
                          ("firing", 29.0, True, 10 * MINUTE_MS + 3500),
                          ("resolved", 0.0, False, 100 * MINUTE_MS)]
    assert all(result == results[1] for result in results.values()), results


def test_a_scope_without_an_active_alert_is_not_judged_on_ticks() -> None:
    evaluator = Evaluator(load_rules(None), allowed_lateness_ms=120_000)
    state: dict = {}
    buckets = MinuteBuckets()
    assert evaluator.count(TEMPLATE, state, buckets, BASE_MS, "failed", 0) == []
    clock = state["clock"]
    assert evaluator.catch_up(TEMPLATE, state, buckets, BASE_MS + 30 * MINUTE_MS) == []
    assert state["clock"] == clock


def test_an_event_older_than_the_lateness_is_not_counted() -> None:
    evaluator = Evaluator(load_rules(None), allowed_lateness_ms=2 * MINUTE_MS)
    state: dict = {}
    buckets = MinuteBuckets()
    evaluator.count(TEMPLATE, state, buckets, BASE_MS + 10 * MINUTE_MS, "failed", 0)
    evaluator.count(TEMPLATE, state, buckets, BASE_MS + 7 * MINUTE_MS, "failed", 0)
    assert evaluator.late_events == 1
