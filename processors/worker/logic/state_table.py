"""Scope states in the worker's changelogged table, in parts: a change writes what it
touched, not the whole state, and a save is still one message.

A busy scope holds up to an hour of per-second counters (~100 KB of JSON). Written whole
after each batch, states were most of what the worker serialized and the broker stored
through a backlog, and grew with it. Each state is kept under these keys instead:

* ``h/<scope>``, its head: alerts, judged second, applied source offsets, excluded
  blocks, the counters of the minutes and blocks the save touched (inline), and which
  minutes and blocks have parts of their own;
* ``m<minute>/<scope>``, the counters of that minute's seconds (minute = second // 60);
* ``b<block>/<scope>``, the counters of a six-hour block (a baseline's).

**A save is whole or not at all.** The applied source offsets and the counts they stand
for must change together: a worker killed between the two would count a signal read
again twice (or not at all). So the counters a save changed travel inline in its head,
one message. A minute or block is written as a part of its own only once a later save no
longer touches it, and before that save's head: until the new head lands, the old one
holds the same counters inline. Parts cut at the window's horizon are deleted after the
head that no longer lists them. The table's changelog keeps the order the worker wrote in
(one partition, one producer), so a kill leaves a prefix of a save's messages.

The tag comes first and holds no ``|``, so a key parses the same whatever a scope's value
(a template id, an endpoint) contains. A state written whole under its bare scope key (by
a worker before parts) is read, and replaced by parts at its next save. A minute part the
horizon cuts is read back without the seconds before the horizon, as the state held them.
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
Counts = dict[str, int]


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
    """What a scope has in the table: minutes and blocks with parts of their own, those
    inline in its head (``hot_*``), and whether a whole state is under its bare key."""

    minutes: set[int] = field(default_factory=set)
    blocks: set[int] = field(default_factory=set)
    hot_minutes: set[int] = field(default_factory=set)
    hot_blocks: set[int] = field(default_factory=set)
    whole: bool = False


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

    def save(self, scope: str, state: ScopeState, touched_minutes: Iterable[int]) -> None:
        """Write ``state`` of ``scope`` (loaded or saved through this table before), whose
        counters changed only in ``touched_minutes`` since (its blocks only in theirs)."""
        parts = self._parts.setdefault(scope, _Parts())
        touched = set(touched_minutes)
        touched_blocks = {minute * 60 // BLOCK_S for minute in touched}
        if parts.whole:  # every minute and block is to be written
            cooled = {second // 60 for second in state.seconds} - touched
            cooled_blocks = set(state.blocks) - touched_blocks
        else:
            cooled, cooled_blocks = parts.hot_minutes - touched, parts.hot_blocks - touched_blocks
        for minute in cooled:  # held inline by the head before this one: written first
            seconds = _seconds_of(state, minute)
            if seconds:
                self._table[minute_key(scope, minute)] = seconds
                parts.minutes.add(minute)
        for block in cooled_blocks & state.blocks.keys():
            self._table[block_key(scope, block)] = dict(state.blocks[block])
            parts.blocks.add(block)
        hot = {minute: seconds for minute in sorted(touched)
               if (seconds := _seconds_of(state, minute))}
        hot_blocks = {block: dict(state.blocks[block])
                      for block in sorted(touched_blocks & state.blocks.keys())}
        horizon = state.judged_s - self._retain_s
        expired = {minute for minute in parts.minutes if minute * 60 + 59 <= horizon}
        dropped_blocks = parts.blocks - state.blocks.keys()
        parts.minutes -= expired
        parts.blocks -= dropped_blocks
        self._table[head_key(scope)] = {
            "a": {rule: alert.to_json() for rule, alert in state.alerts.items()},
            "j": state.judged_s, "o": dict(state.applied), "x": sorted(state.excluded),
            "m": sorted(parts.minutes), "k": sorted(parts.blocks), "hm": hot, "hk": hot_blocks}
        parts.hot_minutes, parts.hot_blocks = set(hot), set(hot_blocks)
        for minute in expired:  # no head lists them now
            self._drop(minute_key(scope, minute))
        for block in dropped_blocks:
            self._drop(block_key(scope, block))
        if parts.whole:
            self._drop(scope)
            parts.whole = False

    def delete(self, scope: str) -> None:
        """Remove ``scope``'s state (loaded or saved through this table before): its head
        first, so that no head is left listing a part gone."""
        parts = self._parts.pop(scope, _Parts())
        self._drop(head_key(scope))
        self._drop(scope)  # a whole state, should its replacement have been cut short
        for minute in parts.minutes:
            self._drop(minute_key(scope, minute))
        for block in parts.blocks:
            self._drop(block_key(scope, block))

    def forget(self, scope: str) -> None:
        """Stop tracking ``scope``'s parts in memory (it is loaded again before a save)."""
        self._parts.pop(scope, None)

    def _read(self, scope: str) -> tuple[ScopeState, _Parts]:
        head = self._table.get(head_key(scope))
        whole = self._table.get(scope)
        if not head:
            return ScopeState.from_json(whole), _Parts(whole=bool(whole))
        horizon = int(head["j"]) - self._retain_s
        hot = {int(minute): seconds for minute, seconds in head["hm"].items()}
        seconds: dict[int, Counts] = {}
        for minute in head["m"]:
            if minute not in hot:
                _add_seconds(seconds, self._table[minute_key(scope, minute)], horizon)
        for minute_seconds in hot.values():
            _add_seconds(seconds, minute_seconds, horizon)
        hot_blocks = {int(block): counts for block, counts in head["hk"].items()}
        blocks = {int(block): dict(self._table[block_key(scope, block)])
                  for block in head["k"] if block not in hot_blocks}
        blocks.update((block, dict(counts)) for block, counts in hot_blocks.items())
        state = ScopeState(seconds,
                           {rule: AlertState.from_json(alert)
                            for rule, alert in head["a"].items()},
                           int(head["j"]), dict(head["o"]), blocks,
                           {int(block) for block in head["x"]})
        return state, _Parts(set(head["m"]), set(head["k"]), set(hot), set(hot_blocks),
                             whole=bool(whole))

    def _drop(self, key: str) -> None:
        if key in self._table:
            del self._table[key]


def _seconds_of(state: ScopeState, minute: int) -> dict[int, Counts]:
    first = minute * 60
    return {second: dict(state.seconds[second])
            for second in range(first, first + 60) if second in state.seconds}


def _add_seconds(seconds: dict[int, Counts], stored: dict[Any, Counts], horizon: int) -> None:
    for second, counts in stored.items():
        if int(second) > horizon:
            seconds[int(second)] = dict(counts)
