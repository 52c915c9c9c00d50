"""One scope's rules judged in event time: pure logic, no Faust and no Kafka.

Events are counted into a scope's per-second counters as they arrive, in any order.
The scope is judged only up to its family's event-time frontier
(:mod:`ept.processors.event_time`), at instants fixed by the events alone:

* the end of every minute, for every rule (ratio rules are judged only there: their
  windows are exact to the minute they end in);
* the end of every second holding an event a count rule counts (so "more than N in W
  minutes" holds over any W-minute span, exact to the second).

A window at the end of second ``S`` holds the seconds ``S - 60*W + 1 .. S``. Minutes are
judged while the scope has counts in a window or an active alert. Since the frontier only
passes an instant once every event at or before it has been read (up to the allowed
lateness), the same events give the same notices in any arrival order Kafka allows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from ddsketch import DDSketch

from ept.processors import durations
from ept.processors.alerting import AlertState, Notification, step
from ept.processors.records import Counted, ScopeState
from ept.processors.rules import REGRESSION, Rule
from ept.processors.signals import (
    COUNTED_BY_KIND,
    FAMILY_OF_KIND,
    MINUTE_FAMILIES,
    Scope,
    measure,
)

# A regression's baseline is kept in blocks of six hours: the baseline slides with event
# time in steps of a quarter day (whole days would make a steady drift read ~25% more at
# the end of each day than at its start), at 4 * 7 + 1 sketches per scope for 7 days.
BLOCK_S = 6 * 3600
BLOCKS_PER_DAY = 86_400 // BLOCK_S


@dataclass(frozen=True)
class Notice:
    """An alert transition to tell: ``rule`` changed state for ``scope`` at ``at_ms``."""

    rule: Rule
    scope: Scope
    note: Notification
    at_ms: int


class Evaluator:
    """Counts events into scopes and judges their rules up to a frontier.

    Methods mutate the :class:`ScopeState` passed in and return the notices to publish,
    in order; they never block and raise nothing for any event time.
    """

    def __init__(self, rules: list[Rule]) -> None:
        self._rules = defaultdict[str, list[Rule]](list)
        for rule in rules:
            self._rules[FAMILY_OF_KIND[rule.kind]].append(rule)
        variants = [variant for rule in rules for variant in rule.variants]
        self.retain_s = max(rule.window_minutes for rule in variants) * 60
        # blocks of counters a duration scope keeps for its baselines, the current one too
        self.retain_blocks = 1 + BLOCKS_PER_DAY * max(
            (r.baseline_days for r in variants if r.kind == REGRESSION), default=0)
        self.late_events = 0  # counted after an instant they belong to was judged

    @property
    def families(self) -> frozenset[str]:
        """The scope families some rule judges."""
        return frozenset(family for family, rules in self._rules.items() if rules)

    def rules_of(self, scope: Scope) -> list[Rule]:
        return [rule for rule in self._rules[scope.family] if scope.scope_type in rule.scopes]

    def add(self, family: str, state: ScopeState, events: list[Counted]) -> None:
        """Count ``events`` of a scope of ``family`` (skipping those at or below an applied
        source offset).

        An event in a second already judged is still counted for later instants (so they
        do not depend on its arrival) and counted in ``late_events``; one older than every
        window that is still to be judged is dropped (from the windows: a duration still
        counts in its day, for the baselines).
        """
        per_minute = family in MINUTE_FAMILIES
        for event in events:
            if event.offset <= state.applied.get(event.source, -1):
                continue  # replayed after a restart: counted before
            state.applied[event.source] = event.offset
            second = event.time_ms // 1000
            if per_minute:
                block = second // BLOCK_S
                counts = state.blocks.setdefault(block, {})
                counts[event.counter] = counts.get(event.counter, 0) + 1
                for key in [k for k in state.baselines if k[0] > block]:
                    del state.baselines[key]  # the baselines that hold that block
                second = second // 60 * 60 + 59  # counted at the end of its minute
            if second <= state.judged_s:
                self.late_events += 1
                if second <= state.judged_s - self.retain_s:
                    continue
            counts = state.seconds.setdefault(second, {})
            counts[event.counter] = counts.get(event.counter, 0) + 1

    def judge(self, scope: Scope, state: ScopeState, frontier_ms: int) -> list[Notice]:
        """Judge every instant after ``state.judged_s`` up to ``frontier_ms``, in order."""
        last = frontier_ms // 1000 - 1  # the last second wholly at or before the frontier
        if last <= state.judged_s:
            return []
        rules = self.rules_of(scope)
        notices: list[Notice] = []
        for second in self._instants(rules, state, last):
            notices += self._judge_at(scope, rules, state, second)
        state.judged_s = last
        horizon = last - self.retain_s
        for second in [s for s in state.seconds if s <= horizon]:
            del state.seconds[second]
        self._drop_old_blocks(state, last)
        return notices

    def expire(self, state: ScopeState, frontier_ms: int) -> bool:
        """Drop the baseline blocks of a scope at rest that no instant from ``frontier_ms``
        on can use; True when nothing is left of it (it may be deleted)."""
        self._drop_old_blocks(state, frontier_ms // 1000)
        return not state.blocks and not state.seconds and not state.has_active_alert

    def _drop_old_blocks(self, state: ScopeState, second: int) -> None:
        oldest = second // BLOCK_S - self.retain_blocks + 1
        for block in [b for b in state.blocks if b < oldest]:
            del state.blocks[block]

    def _instants(self, rules: list[Rule], state: ScopeState, last: int) -> list[int]:
        first = state.judged_s + 1
        counted = {COUNTED_BY_KIND[rule.kind] for rule in rules} - {None}
        instants = {second for second, counts in state.seconds.items()
                    if first <= second <= last and counted & counts.keys()}
        if not state.has_active_alert:  # windows before the oldest count are empty
            first = max(first, min(state.seconds, default=last + 1))
        minute_end = (first // 60) * 60 + 59
        if state.seconds or state.has_active_alert:
            newest = max(state.seconds, default=first)
            # Minutes after the newest count's last window and with no alert active are
            # idle; stop there unless an alert needs judging to resolve or re-notify.
            quiet_from = newest + self.retain_s + 60
            while minute_end <= last:
                if minute_end > quiet_from and not state.has_active_alert:
                    break
                instants.add(minute_end)
                minute_end += 60
        return sorted(instants)

    def _judge_at(self, scope: Scope, rules: list[Rule], state: ScopeState, second: int
                  ) -> list[Notice]:
        now_ms = (second + 1) * 1000
        minute_end = (second + 1) % 60 == 0
        notices = []
        for scope_rule in rules:
            rule = scope_rule.for_scope(scope.scope_type, scope.value)
            if rule is None or (not minute_end and rule.judged_at_minute_ends):
                continue
            value, samples, detail = measured(rule, state, second)
            before = state.alerts.get(rule.name, AlertState())
            after, note = step(rule, before, value, samples, now_ms, detail)
            if after != before:
                state.alerts[rule.name] = after
            if note is not None:
                notices.append(Notice(rule, scope, note, now_ms))
        return notices


def measured(rule: Rule, state: ScopeState, last_second: int) -> tuple[float, int, str]:
    """(value, samples, detail) of ``rule`` over its window ending with ``last_second``.

    A regression's baseline is the ``baseline_days`` days of blocks before the block of
    ``last_second``: complete once event time has passed them, so the same for any
    arrival order.
    """
    window = window_totals(state, rule.window_minutes, last_second)
    if rule.kind != REGRESSION:
        value, samples = measure(rule.kind, window)
        return value, samples, ""
    regression = durations.compare(durations.sketch([window]),
                                   _baseline(state, last_second // BLOCK_S, rule.baseline_days),
                                   rule.quantile, rule.baseline_min_samples)
    return regression.ratio, regression.samples, regression.detail


def _baseline(state: ScopeState, block: int, days: int) -> DDSketch:
    """The sketch of the ``days`` days of blocks before ``block``, kept until a count of
    those blocks changes (:meth:`Evaluator.add` forgets it)."""
    key = (block, days)
    if key not in state.baselines:
        first = block - days * BLOCKS_PER_DAY
        state.baselines[key] = durations.sketch(state.blocks.get(b, {})
                                                for b in range(first, block))
    return state.baselines[key]


def window_totals(state: ScopeState, minutes: int, last_second: int) -> dict[str, int]:
    """Counter sums over the ``minutes`` minutes ending with ``last_second``."""
    first = last_second - minutes * 60
    totals: dict[str, int] = {}
    for second, counts in state.seconds.items():
        if first < second <= last_second:
            for name, amount in counts.items():
                totals[name] = totals.get(name, 0) + amount
    return totals
