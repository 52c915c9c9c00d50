"""One scope's rules judged in event time: pure logic, no Faust and no Kafka.

Events are counted into a scope's per-second counters as they arrive, in any order.
The scope is judged only up to its family's event-time frontier
(:mod:`ept.processors.worker.logic.event_time`), at instants fixed by the events alone:

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

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace

from ddsketch import DDSketch

from ept.processors.worker.logic import durations
from ept.processors.worker.logic.alert_state import (
    FIRING,
    INACTIVE,
    RESOLVED,
    AlertState,
    StateNote,
    step,
    verdict,
)
from ept.processors.worker.logic.records import ScopeState, Signal
from ept.processors.worker.logic.rules import BASELINE_KINDS, REGRESSION, Rule
from ept.processors.worker.logic.scopes import (
    COUNTED_BY_KIND,
    FAMILY_OF_KIND,
    MINUTE_FAMILIES,
    NOUN_OF_FAMILY,
    VOLUME_COUNTERS,
    Measurement,
    Scope,
    measure,
)

# A regression's baseline is kept in blocks of six hours: the baseline slides with event
# time in steps of a quarter day (whole days would make a steady drift read ~25% more at
# the end of each day than at its start), at 4 * 7 + 1 sketches per scope for 7 days.
BLOCK_S = 6 * 3600
BLOCKS_PER_DAY = 86_400 // BLOCK_S


@dataclass(frozen=True)
class DecidedNotice:
    """A notice decided (its second stage): ``rule``'s :class:`StateNote` for ``scope`` at
    event time ``at_ms``; the evaluate stage publishes it as an ``AlertNotice``."""

    rule: Rule
    scope: Scope
    note: StateNote
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
            (r.baseline_days for r in variants if r.kind in BASELINE_KINDS), default=0)
        # families whose overall scope keeps blocks for a volume drop's baseline
        self._volume_families = frozenset(FAMILY_OF_KIND[r.kind] for r in rules
                                          if r.is_volume_drop)
        self.late_events = 0  # counted after an instant they belong to was judged

    @property
    def ahead_families(self) -> frozenset[str]:
        """The families with a rule that may fire ahead of the frontier."""
        return frozenset(family for family, rules in self._rules.items()
                         if any(v.fires_ahead for rule in rules for v in rule.variants))

    @property
    def families(self) -> frozenset[str]:
        """The scope families some rule judges."""
        return frozenset(family for family, rules in self._rules.items() if rules)

    def rules_of(self, scope: Scope) -> list[Rule]:
        return [rule for rule in self._rules[scope.family] if scope.scope_type in rule.scopes]

    def keeps_blocks(self, scope: Scope) -> bool:
        """Whether ``scope`` keeps six-hour blocks of counters for a baseline."""
        return scope.family in MINUTE_FAMILIES or (
            not scope.label and scope.family in self._volume_families)

    def watches_absence(self, scope: Scope, state: ScopeState) -> bool:
        """Whether ``scope`` must be judged as event time passes even without counts: a
        volume drop's scope with a baseline (silence is what it looks for)."""
        return bool(state.blocks) and not scope.label and (
            scope.family in self._volume_families)

    def add(self, scope: Scope, state: ScopeState, signal: Signal) -> None:
        """Count the events of ``signal`` (of ``scope``), skipping those at or below an
        applied source offset.

        An event in a second already judged is still counted for later instants (so they
        do not depend on its arrival) and counted in ``late_events``; one older than every
        window that is still to be judged is dropped (from the windows: it still counts in
        its block, for the baselines).
        """
        # Summed per (second, counter) first: the counters of a second change once, not
        # once per event.
        counted = Counter[tuple[int, int]]()
        for source, events in signal.sources.items():
            new = events.after(state.applied.get(source, -1))
            if new.offsets:  # else replayed after a restart: counted before
                state.applied[source] = new.offsets[-1]
                counted.update(zip(new.seconds, new.counters, strict=True))
        per_minute = scope.family in MINUTE_FAMILIES
        blocks = self.keeps_blocks(scope)
        names = signal.counters
        for (second, code), number in counted.items():
            counter = names[code]
            if blocks:
                block = second // BLOCK_S
                counts = state.blocks.setdefault(block, {})
                counts[counter] = counts.get(counter, 0) + number
                _forget_baselines_after(state, block)
            if per_minute:
                second = second // 60 * 60 + 59  # counted at the end of its minute
            if second <= state.judged_s:
                self.late_events += number
                if second <= state.judged_s - self.retain_s:
                    continue
            counts = state.seconds.setdefault(second, {})
            counts[counter] = counts.get(counter, 0) + number

    def judge(self, scope: Scope, state: ScopeState, frontier_ms: int) -> list[DecidedNotice]:
        """Judge every instant after ``state.judged_s`` up to ``frontier_ms``, in order."""
        last = frontier_ms // 1000 - 1  # the last second wholly at or before the frontier
        if last <= state.judged_s:
            return []
        rules = self.rules_of(scope)
        notices: list[DecidedNotice] = []
        for second in self._instants(scope, rules, state, last):
            notices += self._judge_at(scope, rules, state, second)
        state.judged_s = last
        horizon = last - self.retain_s
        for second in [s for s in state.seconds if s <= horizon]:
            del state.seconds[second]
        self._drop_old_blocks(state, last)
        return notices

    def judge_ahead(self, scope: Scope, state: ScopeState, seconds: Iterable[int],
                    settled_s: int) -> list[DecidedNotice]:
        """Fire count and ratio rules ahead of the frontier, at the first of ``seconds``
        (beyond ``state.judged_s``) at which the events read so far already make them
        hold.

        A count only grows with events still to come, so a crossing count is final: the
        frontier's own judgement fires it at that instant or before. A rate is not
        (late successes lower it), so rates, and counts with a ``min_rate``, fire ahead
        only up to ``settled_s``, the last second every active source of the family has
        been read past (only out-of-order events can still come before it); should the
        frontier's judgement not find them holding there, the notice is withdrawn
        (:meth:`_judge_at`). Notices told ahead are ``ahead``: the notices of the
        frontier's judgement stay a function of the events alone.
        """
        notices: list[DecidedNotice] = []
        candidates = sorted(s for s in seconds if s > state.judged_s)
        if not candidates:
            return notices
        for scope_rule in self.rules_of(scope):
            rule = scope_rule.for_scope(scope.scope_type, scope.value)
            if rule is None or not rule.fires_ahead:
                continue
            before = state.alerts.get(rule.name, AlertState())
            if before.status != INACTIVE or before.ahead_ms:
                continue
            counter = COUNTED_BY_KIND[rule.kind]
            for second in candidates:
                if second > settled_s and not rule.is_final_once_crossed:
                    break
                if counter not in state.seconds.get(second, {}):
                    continue
                measurement = measured(rule, state, second)
                if measurement.no_data or not verdict(rule, measurement)[0]:
                    continue
                now_ms = (second + 1) * 1000
                _, note = step(rule, before, measurement, now_ms)
                assert note is not None  # holds, no pending period: it fires
                state.alerts[rule.name] = replace(before, ahead_ms=now_ms)
                notices.append(DecidedNotice(rule, scope, replace(note, ahead=True), now_ms))
                break
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
        state.excluded = {b for b in state.excluded if b >= oldest}

    def _instants(self, scope: Scope, rules: list[Rule], state: ScopeState, last: int
                  ) -> list[int]:
        first = state.judged_s + 1
        counted = {COUNTED_BY_KIND[rule.kind] for rule in rules} - {None}
        instants = {second for second, counts in state.seconds.items()
                    if first <= second <= last and counted & counts.keys()}
        absence = self.watches_absence(scope, state)
        watched = state.has_active_alert or absence
        if not state.has_active_alert:  # nothing to judge before the oldest count
            oldest = min(state.seconds, default=last + 1)
            if absence:
                oldest = min(oldest, min(state.blocks) * BLOCK_S)
            first = max(first, oldest)
        minute_end = (first // 60) * 60 + 59
        if state.seconds or watched:
            newest = max(state.seconds, default=first)
            # Minutes after the newest count's last window and with no alert active are
            # idle; stop there unless an alert needs judging to resolve or re-notify, or
            # silence itself is what a rule looks for.
            quiet_from = newest + self.retain_s + 60
            while minute_end <= last:
                if minute_end > quiet_from and not watched:
                    break
                instants.add(minute_end)
                minute_end += 60
        return sorted(instants)

    def _judge_at(self, scope: Scope, rules: list[Rule], state: ScopeState, second: int
                  ) -> list[DecidedNotice]:
        now_ms = (second + 1) * 1000
        minute_end = (second + 1) % 60 == 0
        notices = []
        for scope_rule in rules:
            rule = scope_rule.for_scope(scope.scope_type, scope.value)
            if rule is None or (not minute_end and rule.judged_at_minute_ends):
                continue
            before = state.alerts.get(rule.name, AlertState())
            measurement = measured(rule, state, second)
            after, note = step(rule, before, measurement, now_ms)
            if after.ahead_ms and after.ahead_ms <= now_ms and after.status != FIRING:
                # told firing ahead at this instant, and it does not hold with every event
                # of it read: withdrawn
                notices.append(DecidedNotice(rule, scope, StateNote(
                    RESOLVED, measurement.value, measurement.samples, after.ahead_ms, now_ms,
                    hits=measurement.hits,
                    no_data=measurement.no_data, ahead=True), now_ms))
                after = replace(after, ahead_ms=0)
            if after != before:
                state.alerts[rule.name] = after
            if after.status == FIRING and rule.kind in BASELINE_KINDS:
                _exclude_from_baselines(state, second // BLOCK_S)
            if note is not None:
                notices.append(DecidedNotice(rule, scope, note, now_ms))
        return notices


def measured(rule: Rule, state: ScopeState, last_second: int) -> Measurement:
    """The measurement of ``rule`` over its window ending with ``last_second``, with
    ``no_data`` set when the window holds less evidence than the rule's floor.

    A baseline is made of the blocks before the block of ``last_second``: complete once
    event time has passed them, so the same for any arrival order. Blocks in which a
    baseline rule of the scope was firing are left out of it, so an unfixed regression
    or outage never becomes its own baseline.
    """
    window = window_totals(state, rule.window_minutes, last_second)
    block = last_second // BLOCK_S
    if rule.kind == REGRESSION:
        regression = durations.compare(window,
                                       _baseline(state, block, rule.baseline_days),
                                       rule.quantile, rule.baseline_min_samples,
                                       rule.threshold)
        if regression.baseline_short:
            return Measurement(0.0, regression.samples, no_data=regression.baseline_short)
        measurement = Measurement(regression.ratio, regression.samples, regression.above,
                                  detail=regression.detail)
    elif rule.is_volume_drop:
        return _volume(rule, state, window, block)
    else:
        measurement = measure(rule.kind, window)
    floor = max(1, rule.min_samples)
    if measurement.samples < floor:
        noun = NOUN_OF_FAMILY[FAMILY_OF_KIND[rule.kind]]
        needed = f" (min_samples {rule.min_samples})" if rule.min_samples > 1 else ""
        return Measurement(measurement.value, measurement.samples, measurement.hits,
                           f"{measurement.samples} {noun} in {rule.window_minutes}m{needed}")
    return measurement


def _volume(rule: Rule, state: ScopeState, window: dict[str, int], block: int
            ) -> Measurement:
    """A volume drop: the window's events against the mean of the same six-hour block of
    the day over the ``baseline_days`` days before (traffic has a daily rhythm; a block
    with no count, or one in which the drop was firing, is no evidence of it)."""
    family = FAMILY_OF_KIND[rule.kind]
    counters = VOLUME_COUNTERS[family]
    noun = NOUN_OF_FAMILY[family]
    actual = sum(window.get(counter, 0) for counter in counters)
    days = [sum(state.blocks[b].get(counter, 0) for counter in counters)
            for b in range(block - BLOCKS_PER_DAY * rule.baseline_days, block, BLOCKS_PER_DAY)
            if b in state.blocks and b not in state.excluded]
    days = [count for count in days if count]
    expected = sum(days) / len(days) * rule.window_minutes * 60 / BLOCK_S if days else 0.0
    if sum(days) < rule.baseline_min_samples or expected < max(1, rule.min_samples):
        return Measurement(0.0, actual, no_data=(
            f"a baseline of {sum(days)} {noun} on {len(days)} day(s) at this time of day "
            f"expects {expected:.0f} in {rule.window_minutes}m (baseline_min_samples "
            f"{rule.baseline_min_samples}, min_samples {rule.min_samples})"))
    return Measurement(100.0 * actual / expected, actual, detail=(
        f"{actual} {noun} vs {expected:.0f} expected from the same hours of "
        f"{len(days)} day(s)"))


def _exclude_from_baselines(state: ScopeState, block: int) -> None:
    if block not in state.excluded:
        state.excluded.add(block)
        _forget_baselines_after(state, block)


def _forget_baselines_after(state: ScopeState, block: int) -> None:
    """Forget the cached baselines that hold ``block`` (it changed)."""
    for key in [k for k in state.baselines if k[0] > block]:
        del state.baselines[key]


def _baseline(state: ScopeState, block: int, days: int) -> DDSketch:
    """The sketch of the ``days`` days of blocks before ``block`` (those in which the
    regression was firing left out), kept until one of them changes."""
    key = (block, days)
    if key not in state.baselines:
        first = block - days * BLOCKS_PER_DAY
        state.baselines[key] = durations.sketch(state.blocks.get(b, {})
                                                for b in range(first, block)
                                                if b not in state.excluded)
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
