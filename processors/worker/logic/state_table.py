"""Scope states in the worker's changelogged table, in parts: a change writes the parts it
touched, not the whole state.

A busy scope holds up to an hour of per-second counters (~100 KB of JSON). Written whole
after each batch, states were most of what the worker serialized and the broker stored
through a backlog, and grew with it. Each state is kept under these keys instead:

* ``h/<scope>``, its head: alerts, judged second, applied source offsets, excluded blocks,
  and which minute and block parts it has;
* ``m<minute>/<scope>``, the counters of that minute's seconds (minute = second // 60);
* ``b<block>/<scope>``, the counters of a six-hour block (a baseline's).

The tag comes first and holds no ``|``, so a key parses the same whatever a scope's value
(a template id, an endpoint) contains. A state written whole under its bare scope key (by
a worker before parts) is read, and replaced by parts at its next save.

A minute part is deleted once every second of it is past the scope's window horizon; one
the horizon cuts is read back without the seconds before the horizon, as the state held
them.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from ept.processors.worker.logic.alert_state import AlertState
from ept.processors.worker.logic.records import ScopeState
from ept.processors.worker.logic.scope_evaluation import BLOCK_S

HEAD = "h"
SEPARATOR = "/"


def head_key(scope: str) -> str:
    return f"{HEAD}{SEPARATOR}{scope}"


def minute_key(scope: str, minute: int) -> str:
    return f"m{minute}{SEPARATOR}{scope}"


def block_key(scope: str, block: int) -> str:
    return f"b{block}{SEPARATOR}{scope}"


def scope_of(key: str) -> str:
    """The scope key a table key belongs to."""
    tag, separator, scope = key.partition(SEPARATOR)
    if separator and "|" not in tag:
        return scope
    return key  # a whole state under its scope key


def stored_scopes(keys: Iterable[str]) -> list[str]:
    """The scopes with a state among table ``keys``, in order of first appearance."""
    return list(dict.fromkeys(scope_of(key) for key in keys
                              if key.startswith(HEAD + SEPARATOR) or scope_of(key) == key))


@dataclass
class _Parts:
    """The parts a scope has in the table."""

    minutes: set[int] = field(default_factory=set)
    blocks: set[int] = field(default_factory=set)
    whole: bool = False  # a whole state under the bare scope key, to be replaced


class StateTable:
    """Scope states over ``table`` (the changelogged table, or any mutable mapping of key to
    JSON value). ``retain_s`` is how far behind its judged second a scope keeps counts
    (:attr:`~ept.processors.worker.logic.scope_evaluation.Evaluator.retain_s`).

    Never blocks; a value of the table that cannot be read raises (``KeyError``,
    ``ValueError``), as a whole state did.
    """

    def __init__(self, table: MutableMapping[str, Any], retain_s: int) -> None:
        self._table = table
        self._retain_s = retain_s
        self._parts: dict[str, _Parts] = {}  # of the scopes loaded or saved

    def holds(self, scope: str) -> bool:
        """Whether ``scope`` has a state in the table."""
        return bool(self._table.get(head_key(scope)) or self._table.get(scope))

    def load(self, scope: str) -> ScopeState:
        """``scope``'s state as last saved (empty if none), to save again."""
        state, self._parts[scope] = self._read(scope)
        return state

    def peek(self, scope: str) -> ScopeState:
        """``scope``'s state as last saved (empty if none), to read only."""
        return self._read(scope)[0]

    def _read(self, scope: str) -> tuple[ScopeState, _Parts]:
        head = self._table.get(head_key(scope))
        if not head:
            whole = self._table.get(scope)
            return ScopeState.from_json(whole), _Parts(whole=bool(whole))
        horizon = int(head["j"]) - self._retain_s
        seconds: dict[int, dict[str, int]] = {}
        for minute in head["m"]:
            for second, counts in self._table[minute_key(scope, minute)].items():
                if int(second) > horizon:
                    seconds[int(second)] = dict(counts)
        blocks = {int(block): dict(self._table[block_key(scope, block)])
                  for block in head["k"]}
        state = ScopeState(seconds,
                           {rule: AlertState.from_json(alert)
                            for rule, alert in head["a"].items()},
                           int(head["j"]), dict(head["o"]), blocks,
                           {int(block) for block in head["x"]})
        return state, _Parts(set(head["m"]), set(head["k"]))

    def save(self, scope: str, state: ScopeState, touched_minutes: Iterable[int]) -> None:
        """Write ``state`` of ``scope`` (loaded or saved through this table before), whose
        counters changed only in ``touched_minutes`` since it was (its blocks only in
        theirs)."""
        parts = self._parts.setdefault(scope, _Parts())
        if parts.whole:  # every part is new
            touched_minutes = {second // 60 for second in state.seconds}
        touched = set(touched_minutes)
        for minute in touched:
            first = minute * 60
            seconds = {second: dict(state.seconds[second])
                       for second in range(first, first + 60) if second in state.seconds}
            if seconds:
                self._table[minute_key(scope, minute)] = seconds
                parts.minutes.add(minute)
            elif minute in parts.minutes:
                self._drop(minute_key(scope, minute))
                parts.minutes.discard(minute)
        horizon = state.judged_s - self._retain_s
        for minute in [m for m in parts.minutes if m * 60 + 59 <= horizon]:
            self._drop(minute_key(scope, minute))
            parts.minutes.discard(minute)
        touched_blocks = {minute * 60 // BLOCK_S for minute in touched}
        for block, counts in state.blocks.items():
            if parts.whole or block in touched_blocks or block not in parts.blocks:
                self._table[block_key(scope, block)] = dict(counts)
        for block in parts.blocks - state.blocks.keys():
            self._drop(block_key(scope, block))
        parts.blocks = set(state.blocks)
        self._table[head_key(scope)] = {
            "a": {rule: alert.to_json() for rule, alert in state.alerts.items()},
            "j": state.judged_s, "o": dict(state.applied), "x": sorted(state.excluded),
            "m": sorted(parts.minutes), "k": sorted(parts.blocks)}
        if parts.whole:
            self._drop(scope)
            parts.whole = False

    def delete(self, scope: str) -> None:
        """Remove ``scope``'s state (loaded or saved through this table before)."""
        parts = self._parts.pop(scope, _Parts())
        for minute in parts.minutes:
            self._drop(minute_key(scope, minute))
        for block in parts.blocks:
            self._drop(block_key(scope, block))
        self._drop(head_key(scope))
        if parts.whole:
            self._drop(scope)

    def forget(self, scope: str) -> None:
        """Stop tracking ``scope``'s parts in memory (it is loaded again before a save)."""
        self._parts.pop(scope, None)

    def _drop(self, key: str) -> None:
        if key in self._table:
            del self._table[key]
