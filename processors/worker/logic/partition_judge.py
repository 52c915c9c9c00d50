"""Everything ``evaluate`` does for one partition of the signals topic, as pure logic.

Signals are counted into their scope's state; progress reports move the event-time
frontiers; every scope with counts or an active alert is judged up to its family's
frontier. ``states`` is the worker's changelogged table (any mutable mapping of key to
JSON value in tests), holding each state in parts (:mod:`.state_table`).

A judged state is saved to ``states`` only by :meth:`PartitionJudge.save`, which the caller
calls once the notices judged with it are delivered. A crash in between so leaves the
table before the judgement: on restart the same records are read again and judged again,
and the alert topic's own record drops the notices that did reach it. Saving first would
lose them: the restored state would say the alert fires, and nothing would re-judge it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any

from ept.processors.worker.logic.event_time import FAMILIES, Frontiers
from ept.processors.worker.logic.records import Progress, ScopeState, Signal
from ept.processors.worker.logic.scope_evaluation import BLOCK_S, DecidedNotice, Evaluator
from ept.processors.worker.logic.scopes import Scope
from ept.processors.worker.logic.state_table import StateTable

# The event time one step of judging covers at most (see PartitionJudge.steps).
STEP_MS = 3_600_000


class PartitionJudge:
    """The scopes of one signals partition. Never blocks; raises nothing for any record.

    ``live`` starts from the scopes in ``states`` that hold anything (after a restart
    the table is restored first), then follows each judgement.
    """

    def __init__(self, evaluator: Evaluator, frontiers: Frontiers,
                 states: MutableMapping[str, Any], scope_keys: list[str]) -> None:
        self._evaluator = evaluator
        self.frontiers = frontiers
        self._states = StateTable(states, evaluator.retain_s)
        self._live = {key for key in scope_keys if self._states.holds(key)}
        self._decoded: dict[str, ScopeState] = {}  # the newest state, saved or not
        # scope key -> the minutes whose counters changed since it was saved
        self._unsaved: dict[str, set[int]] = {}
        # Duration scopes keep a week of baseline after their last render: those at rest
        # are pruned as event time enters each new six-hour block, and dropped when empty.
        self._resting_durations = {key for key in scope_keys
                                   if _family(key) == "duration" and key not in self._live}
        self._expired: set[str] = set()
        self._expiry_block = -1
        self._ahead_families = evaluator.ahead_families
        self._settled_s: dict[str, int] = {}  # per family: judged ahead up to this second

    def handle(self, record: Signal | Progress) -> list[DecidedNotice]:
        """The notices ``record`` causes, in order. Call :meth:`save` once they are
        delivered."""
        return [notice for step in self.steps(record) for notice in step]

    def steps(self, record: Signal | Progress) -> Iterator[list[DecidedNotice]]:
        """:meth:`handle` in steps of at most :data:`STEP_MS` of event time each (a report
        after a backlog can move event time by days: judging them at once would hold
        the caller's event loop for seconds). Each step's notices in order."""
        if isinstance(record, Signal):
            state, family = self._state(record.scope), _family(record.scope)
            scope = Scope.parse(record.scope)
            counted_s = record.seconds()
            self._evaluator.add(scope, state, record)
            self._unsaved.setdefault(record.scope, set()).update(
                {second // 60 for second in counted_s})
            notices = self._judge(record.scope, state, self.frontiers.frontier(family))
            yield notices + self._judge_ahead(record.scope, state, counted_s)
            return
        before = {family: self.frontiers.frontier(family) for family in FAMILIES}
        advanced = self.frontiers.update(record)
        keys = sorted(self._live)  # each judged to the end, live at each step or not
        if advanced and keys:
            start = min(before[family] for family in advanced)
            end = max(advanced.values())
            if end - start > STEP_MS:  # from the oldest instant any live scope awaits
                start = max(start, min(self._awaited_ms(key) for key in keys))
            at = start + STEP_MS
            while at < end:
                notices = []
                for key in keys:
                    family = _family(key)
                    if family in advanced and at < advanced[family]:
                        notices += self._judge(key, self._state(key), at)
                yield notices
                at += STEP_MS
        settling = self._newly_settled()
        notices = []
        for key in keys:
            family = _family(key)
            if family in advanced:
                notices += self._judge(key, self._state(key), advanced[family])
            if family in settling:
                state = self._state(key)
                first, last = settling[family]
                seconds = (range(first, last + 1) if last - first < len(state.seconds)
                           else [s for s in state.seconds if first <= s <= last])
                notices += self._judge_ahead(key, state, [s for s in seconds
                                                          if s in state.seconds])
        if "duration" in advanced and advanced["duration"] // 1000 // BLOCK_S > self._expiry_block:
            self._expiry_block = advanced["duration"] // 1000 // BLOCK_S
            self._expire_resting(advanced["duration"])
        yield notices

    def _awaited_ms(self, key: str) -> int:
        """The event time from which ``key`` has anything to judge: after its judged
        second, and not before its oldest count unless an alert of it is active."""
        state = self._state(key)
        judged_ms = (state.judged_s + 1) * 1000
        if state.has_active_alert or not state.seconds:
            return judged_ms
        return max(judged_ms, min(state.seconds) * 1000)

    def _newly_settled(self) -> dict[str, tuple[int, int]]:
        """Per family a rule may fire ahead in, the seconds settled since the last report
        (:meth:`Frontiers.settled`): a rate condition is judged ahead there."""
        settling = {}
        for family in self._ahead_families:
            last = self.frontiers.settled(family) // 1000 - 1
            before = self._settled_s.get(family, self.frontiers.frontier(family) // 1000 - 1)
            if last > before:
                settling[family] = (max(before + 1, last - self._evaluator.retain_s), last)
            self._settled_s[family] = max(last, before)
        return settling

    def _judge_ahead(self, key: str, state: ScopeState, seconds: Iterable[int]
                     ) -> list[DecidedNotice]:
        family = _family(key)
        if family not in self._ahead_families:
            return []
        settled_s = self.frontiers.settled(family) // 1000 - 1
        alerts = dict(state.alerts)
        notices = self._evaluator.judge_ahead(Scope.parse(key), state, seconds, settled_s)
        if state.alerts != alerts:
            self._unsaved.setdefault(key, set())
        return notices

    def save(self) -> None:
        """Write the states judged since the last save to ``states`` (and delete those
        that expired)."""
        for key, minutes in sorted(self._unsaved.items()):
            if key in self._expired:
                self._states.delete(key)
            else:
                self._states.save(key, self._state(key), minutes)
            if key not in self._live:
                self._decoded.pop(key, None)
                self._states.forget(key)
        self._unsaved.clear()
        self._expired.clear()

    def _expire_resting(self, frontier_ms: int) -> None:
        for key in sorted(self._resting_durations):
            state = self._state(key)
            blocks = len(state.blocks)
            if self._evaluator.expire(state, frontier_ms):
                self._expired.add(key)
                self._resting_durations.discard(key)
            if len(state.blocks) != blocks:
                self._unsaved.setdefault(key, set())

    def saved_state(self, key: str) -> ScopeState:
        """The state of ``key`` as last saved (what a restart would start from), to read."""
        return self._states.peek(key)

    def _state(self, key: str) -> ScopeState:
        state = self._decoded.get(key)
        if state is None:
            state = self._decoded[key] = self._states.load(key)
        return state

    def _judge(self, key: str, state: ScopeState, frontier_ms: int) -> list[DecidedNotice]:
        alerts, excluded = dict(state.alerts), set(state.excluded)
        scope = Scope.parse(key)
        notices = self._evaluator.judge(scope, state, frontier_ms)
        live = (bool(state.seconds) or state.has_active_alert
                or self._evaluator.watches_absence(scope, state))
        # The table is written when counts or alert states change, not for each instant
        # judged (that write per scope per progress report was most of the worker's
        # cost). A restored state may so lag in ``judged_s``: re-judging those instants
        # over the same counts decides the same, and the notices are on the topic already.
        if notices or state.alerts != alerts or state.excluded != excluded or not live:
            self._unsaved.setdefault(key, set())
        if live:
            self._live.add(key)
            self._resting_durations.discard(key)
            self._expired.discard(key)
        else:
            self._live.discard(key)
            if _family(key) == "duration":
                self._resting_durations.add(key)
        return notices


def _family(scope_key: str) -> str:
    return scope_key.split("|", 1)[0]
