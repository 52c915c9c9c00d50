"""Scope states kept in the table in parts (processors/worker/logic/state_table.py)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ept.processors.worker.logic.alert_state import AlertState
from ept.processors.worker.logic.records import ScopeState
from ept.processors.worker.logic.state_table import (
    StateTable,
    head_key,
    minute_key,
    scope_of,
    stored_scopes,
)

RETAIN_S = 3600
SCOPE = "render|template_id|a/b|c"  # a value with the separator and a bar in it


def restored(table: dict[str, Any]) -> dict[str, Any]:
    """The table as a restarted worker reads it back from the changelog (JSON)."""
    return json.loads(json.dumps(table))


def state_with(seconds: dict[int, dict[str, int]], judged_s: int) -> ScopeState:
    return ScopeState(seconds, {"rule": AlertState(status="firing")}, judged_s,
                      {"render_failed:0": 41}, {judged_s // 21600: {"completed": 3}}, {7})


def test_a_saved_state_reads_back_equal_after_a_restart() -> None:
    table: dict[str, Any] = {}
    state = state_with({1_000: {"failed": 2}, 1_059: {"completed": 1}, 1_060: {"failed": 1}},
                       judged_s=1_000)
    StateTable(table, RETAIN_S).save(SCOPE, state, {16, 17})
    assert StateTable(restored(table), RETAIN_S).load(SCOPE) == state
    assert stored_scopes(table) == [SCOPE]


class Recording(dict[str, Any]):
    """A table that records the keys written and deleted, in order."""

    def __init__(self, table: dict[str, Any]) -> None:
        super().__init__(table)
        self.written: list[str] = []

    def __setitem__(self, key: str, value: Any) -> None:
        self.written.append(key)
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.written.append(f"-{key}")
        super().__delitem__(key)


def test_a_save_writes_its_head_alone_and_a_minute_once_no_save_touches_it() -> None:
    table = Recording({})
    states = StateTable(table, RETAIN_S)
    state = state_with({second: {"completed": 1} for second in range(0, 3_600)}, judged_s=0)
    states.save(SCOPE, state, {second // 60 for second in state.seconds})
    assert table.written == [head_key(SCOPE)]  # all inline: one message
    state.seconds[3_599]["failed"] = 1
    table.written.clear()
    states.save(SCOPE, state, {59})
    # the 59 minutes no longer touched get parts, before the head that stops holding them
    assert table.written == [minute_key(SCOPE, minute) for minute in range(59)] + [
        head_key(SCOPE)]
    state.seconds[3_598]["failed"] = 1
    table.written.clear()
    states.save(SCOPE, state, {59})
    assert table.written == [head_key(SCOPE)]
    assert StateTable(restored(table), RETAIN_S).load(SCOPE) == state


def test_a_save_cut_short_by_a_kill_leaves_the_state_before_it_or_after_it() -> None:
    """Whatever prefix of a save's messages reached the changelog, the state read back is
    the one saved before or the one saved now: never counts without their offsets."""
    table = Recording({})
    states = StateTable(table, RETAIN_S)
    before = state_with({second: {"completed": 1} for second in range(0, 7_200, 7)},
                        judged_s=3_000)
    states.save(SCOPE, before, {second // 60 for second in before.seconds})
    saved_before = restored(table)
    states = StateTable(table, RETAIN_S)
    after = states.load(SCOPE)
    after.applied["render_failed:0"] = 99
    for second in (4_000, 4_001, 7_000):
        after.seconds.setdefault(second, {})["failed"] = 1
    after.judged_s = 3_700  # minutes up to 1 go past the horizon
    after.seconds = {s: c for s, c in after.seconds.items() if s > after.judged_s - RETAIN_S}
    table.written.clear()
    states.save(SCOPE, after, {66, 116})
    messages = list(table.written)
    final = restored(table)
    for cut in range(len(messages) + 1):
        partial = dict(saved_before)
        for key in messages[:cut]:
            if key.startswith("-"):
                partial.pop(key[1:], None)
            else:
                partial[key] = final[key]
        read = StateTable(partial, RETAIN_S).load(SCOPE)
        assert read in (before, after), f"cut after {cut} of {messages}"
    assert StateTable(final, RETAIN_S).load(SCOPE) == after


def test_minutes_past_the_horizon_are_deleted_and_a_cut_one_reads_without_them() -> None:
    table: dict[str, Any] = {}
    states = StateTable(table, RETAIN_S)
    state = state_with({second: {"completed": 1} for second in range(0, 240)}, judged_s=100)
    states.save(SCOPE, state, {0, 1, 2, 3})
    # judged on to 3,690: the window keeps seconds after 90, as the evaluator prunes
    state.judged_s = 3_690
    state.seconds = {s: c for s, c in state.seconds.items() if s > state.judged_s - RETAIN_S}
    states.save(SCOPE, state, set())
    assert minute_key(SCOPE, 0) not in table  # seconds 0-59: all past the horizon
    assert minute_key(SCOPE, 1) in table  # seconds 60-119: cut at 90
    assert StateTable(restored(table), RETAIN_S).load(SCOPE) == state


def test_a_whole_state_of_an_older_worker_is_read_and_replaced_by_parts() -> None:
    state = state_with({1_000: {"failed": 2}, 5_000: {"completed": 1}}, judged_s=1_000)
    table: dict[str, Any] = restored({SCOPE: state.to_json()})
    assert stored_scopes(table) == [SCOPE]
    states = StateTable(table, RETAIN_S)
    loaded = states.load(SCOPE)
    assert loaded == state
    states.save(SCOPE, loaded, set())
    assert SCOPE not in table
    assert StateTable(restored(table), RETAIN_S).load(SCOPE) == state


def test_a_deleted_state_leaves_no_part_behind() -> None:
    table: dict[str, Any] = {}
    states = StateTable(table, RETAIN_S)
    other = "render|template_id|b"
    states.save(other, state_with({5: {"failed": 1}}, judged_s=0), {0})
    state = state_with({second: {"completed": 1} for second in range(0, 600, 7)}, judged_s=0)
    states.save(SCOPE, state, {second // 60 for second in state.seconds})
    fresh = StateTable(table, RETAIN_S)
    fresh.load(SCOPE)
    fresh.delete(SCOPE)
    assert stored_scopes(table) == [other]
    assert all(scope_of(key) == other for key in table)
    assert not fresh.holds(SCOPE) and fresh.holds(other)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 7_200), max_size=20),
                          st.integers(0, 400)), min_size=1, max_size=8),
       st.text(max_size=6))
def test_any_history_of_saves_reads_back_as_the_state(
        steps: list[tuple[list[int], int]], value: str) -> None:
    """Counts added and judged on in any order, with a restart after any save: the state
    read back is the state held, and the table keeps no part of another scope."""
    scope = f"api|endpoint|{value}"
    table: dict[str, Any] = {}
    held = ScopeState()
    for seconds, judged_step in steps:
        states = StateTable(table, RETAIN_S)
        held = states.load(scope)
        for second in seconds:
            if second > held.judged_s - RETAIN_S:
                counts = held.seconds.setdefault(second, {})
                counts["completed"] = counts.get("completed", 0) + 1
        held.judged_s += judged_step * 10
        held.seconds = {s: c for s, c in held.seconds.items()
                        if s > held.judged_s - RETAIN_S}
        states.save(scope, held, {second // 60 for second in seconds})
        table = restored(table)
        assert StateTable(table, RETAIN_S).load(scope) == held
    assert all(scope_of(key) == scope for key in table)
