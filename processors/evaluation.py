"""One scope's rules judged in event time: pure logic, no Faust and no Kafka.

A scope's state is the JSON-able dict the worker keeps in its table: ``window`` (the
scope's :class:`MinuteBuckets`), ``alerts`` (an :class:`AlertState` per rule) and
``clock`` (the event time the scope was last judged at, which never goes back).

A scope is judged at the time of each of its events and, while one of its alerts is
active (pending or firing), at every minute boundary of event time in between and after,
up to the time the rest of its partition has reached. Time without events is therefore
judged at the same instants whatever the batching that brought the news of it, so the
alerts — re-notifications included — do not depend on arrival timing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from ept.processors.alerting import AlertState, Notification, step
from ept.processors.rules import Rule
from ept.processors.signals import FAMILY_OF_KIND, Scope, measure
from ept.processors.windows import MINUTE_MS, MinuteBuckets, minute_of


@dataclass(frozen=True)
class Notice:
    """An alert transition to tell: ``rule`` changed state for ``scope``."""

    rule: Rule
    scope: Scope
    note: Notification


def has_active_alert(state: dict[str, Any] | None) -> bool:
    return any(alert.get("status") != "inactive"
               for alert in (state or {}).get("alerts", {}).values())


class Evaluator:
    """Counts events into scopes and advances their alert states.

    Methods mutate the ``state`` and ``buckets`` passed in and return the notices to
    publish, in order; they never block and raise nothing for any event time.
    """

    def __init__(self, rules: list[Rule], allowed_lateness_ms: int) -> None:
        self._rules = defaultdict[str, list[Rule]](list)
        for rule in rules:
            self._rules[FAMILY_OF_KIND[rule.kind]].append(rule)
        self._lateness_ms = allowed_lateness_ms
        self.retain_minutes = (max(rule.window_minutes for rule in rules)
                               + allowed_lateness_ms // MINUTE_MS + 1)
        self.late_events = 0

    def rules_of(self, scope: Scope) -> list[Rule]:
        return [rule for rule in self._rules[scope.family] if scope.scope_type in rule.scopes]

    def count(self, scope_key: str, state: dict[str, Any], buckets: MinuteBuckets,
              event_ms: int, counter: str, elsewhere_ms: int) -> list[Notice]:
        """Count one event at ``event_ms`` and judge the scope, as if it arrived alone.

        The scope is judged at its own latest event time, so the decision does not depend
        on how other scopes' events interleave — but never before its clock: once its
        active alerts caught up with event time elsewhere (a backlog being replayed), its
        late events are judged at that later time. ``elsewhere_ms`` is the event time the
        scope's partition has reached; active alerts are caught up to it afterwards. An
        event older than the allowed lateness is not counted (``late_events`` grows), and
        the scope is still judged.
        """
        notices = self.catch_up(scope_key, state, buckets, event_ms)
        if not buckets.add(minute_of(event_ms), {counter: 1}, event_ms, self._lateness_ms,
                           self.retain_minutes):
            self.late_events += 1
        now_ms = max(buckets.watermark_ms, state.get("clock", 0))
        notices += self._judge(scope_key, state, buckets, now_ms)
        return notices + self.catch_up(scope_key, state, buckets, elsewhere_ms)

    def catch_up(self, scope_key: str, state: dict[str, Any], buckets: MinuteBuckets,
                 until_ms: int) -> list[Notice]:
        """Judge a scope with an active alert at each minute boundary after its clock, up
        to ``until_ms``; nothing for a scope without one."""
        notices: list[Notice] = []
        boundary = (minute_of(state.get("clock", 0)) + 1) * MINUTE_MS
        while boundary <= until_ms and has_active_alert(state):
            buckets.advance(boundary, self.retain_minutes)
            notices += self._judge(scope_key, state, buckets, boundary)
            boundary += MINUTE_MS
        return notices

    def _judge(self, scope_key: str, state: dict[str, Any], buckets: MinuteBuckets,
               now_ms: int) -> list[Notice]:
        scope = Scope.parse(scope_key)
        alert_states = state.setdefault("alerts", {})
        notices = []
        for rule in self.rules_of(scope):
            value, samples = measure(rule.kind, buckets.window(rule.window_minutes, now_ms))
            before = AlertState.from_json(alert_states.get(rule.name))
            after, note = step(rule, before, value, samples, now_ms)
            if after != before:
                alert_states[rule.name] = after.to_json()
            if note is not None:
                notices.append(Notice(rule, scope, note))
        state["clock"] = now_ms
        return notices
