"""Typed records of the worker's own topic (``worker-signals``) and of its scope table.

``collect`` writes :class:`Signal` and :class:`Progress` records; ``evaluate`` reads them
and keeps one :class:`ScopeState` per scope in its changelogged table. Each has
``to_json`` / ``from_json`` for Faust's JSON serializer.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, NamedTuple

from ept.processors.worker.logic.alert_state import AlertState

Source = str
"""A source partition, ``<event name>:<partition>`` (topic prefix left out)."""


class Events(NamedTuple):
    """One source's events in a :class:`Signal`, as parallel columns: event ``i`` is at
    source offset ``offsets[i]`` in event-time second ``seconds[i]`` and adds one to the
    counter coded ``counters[i]`` (an index into :attr:`Signal.counters`). Offsets are
    strictly ascending."""

    offsets: list[int]
    seconds: list[int]
    counters: list[int]

    def after(self, offset: int) -> Events:
        """The events above source offset ``offset`` (those not applied yet)."""
        start = bisect_right(self.offsets, offset)
        if not start:
            return self
        return Events(self.offsets[start:], self.seconds[start:], self.counters[start:])

    def part(self, start: int, end: int) -> Events:
        return Events(self.offsets[start:end], self.seconds[start:end],
                      self.counters[start:end])


@dataclass(frozen=True)
class Signal:
    """The events of one collected batch that touch ``scope`` (a scope key), by source
    partition (:class:`Events`), each adding one to a counter named in ``counters``.

    Event time is kept to the second: all ``evaluate`` counts by. On the wire, the columns
    are lists of integers (:meth:`to_json`); :meth:`from_json` reads the form of a worker
    before them too, a list of ``[time_ms, source, offset, counter]`` per event.
    """

    scope: str
    counters: list[str]
    sources: dict[Source, Events]

    @classmethod
    def of(cls, scope: str, events: Iterable[tuple[int, Source, int, str]]) -> Signal:
        """The signal of ``events`` given as (time ms, source, offset, counter), each
        source's in ascending offset order."""
        columns: dict[Source, tuple[list[int], list[int], list[str]]] = {}
        for time_ms, source, offset, counter in events:
            offsets, seconds, counters = columns.setdefault(source, ([], [], []))
            offsets.append(int(offset))
            seconds.append(int(time_ms) // 1000)
            counters.append(counter)
        return cls.from_columns(scope, columns)

    @classmethod
    def from_columns(cls, scope: str, columns: dict[Source, tuple[list[int], list[int],
                                                                   list[str]]]) -> Signal:
        """The signal of per-source columns (offsets ascending, seconds, counter names)."""
        names = list(dict.fromkeys(chain.from_iterable(
            counters for _, _, counters in columns.values())))
        code = {name: index for index, name in enumerate(names)}.__getitem__
        return cls(scope, names, {source: Events(offsets, seconds, list(map(code, counters)))
                                  for source, (offsets, seconds, counters) in columns.items()})

    def __len__(self) -> int:
        """The number of events."""
        return sum(len(events.offsets) for events in self.sources.values())

    def seconds(self) -> set[int]:
        """The event-time seconds of its events."""
        return set().union(*(events.seconds for events in self.sources.values()))

    def to_json(self) -> dict[str, Any]:
        return {"scope": self.scope, "counters": self.counters,
                "sources": {source: [events.offsets, events.seconds, events.counters]
                            for source, events in self.sources.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Signal:
        if "events" in data:  # written by a worker before the columns
            return cls.of(data["scope"], data["events"])
        return cls(data["scope"], data["counters"],
                   {source: Events(*columns) for source, columns in data["sources"].items()})

    def split(self, most: int) -> list[Signal]:
        """This signal as consecutive signals of at most ``most`` events each (one Kafka
        message each, within the producer's request size): each source's events in order,
        one source after another. Evaluating them in order is evaluating this one: between
        them no progress report moves event time."""
        if len(self) <= most:
            return [self]
        parts: list[Signal] = []
        part: dict[Source, Events] = {}
        room = most
        for source, events in self.sources.items():
            start = 0
            while start < len(events.offsets):
                end = start + room
                part[source] = events.part(start, end)
                room -= len(part[source].offsets)
                start = end
                if not room:
                    parts.append(Signal(self.scope, self.counters, part))
                    part, room = {}, most
        if part:
            parts.append(Signal(self.scope, self.counters, part))
        return parts


@dataclass(frozen=True, slots=True)
class SourceProgress:
    """How far one source partition has been read, in event time.

    ``watermark_ms`` is the newest (sane) event time read from it, kept within the allowed
    clock skew behind the newest record timestamp read and not ahead of it; None before
    its first event. ``idle`` says it holds nothing more to read now (caught up to its
    high-water mark, or silent for ``EPT_SOURCE_IDLE_S``), so it does not hold event time
    back. ``settled_ms`` is how far it has been read, for judging ahead of the frontier:
    the broker's clock when it is caught up to its high-water mark (what comes next is
    stamped later), else its watermark.
    """

    watermark_ms: int | None
    idle: bool
    settled_ms: int | None = None


@dataclass(frozen=True)
class Progress:
    """A collector's report of its sources, sent to every signals partition after the
    signals it covers (so a watermark never overtakes its own events).

    ``clock_ms`` is the broker's clock as the collector knows it (the newest record
    timestamp read, advanced by bounded steps of the wall clock), None before any record.
    On the wire it is ``wall_ms`` (0: unknown), the key that carried the collector's wall
    clock before: a reader of either version takes it for the time idle event time may
    follow.
    """

    sources: dict[Source, SourceProgress]
    clock_ms: int | None

    def to_json(self) -> dict[str, Any]:
        return {"progress": {s: [p.watermark_ms, p.idle, p.settled_ms]
                             for s, p in self.sources.items()},
                "wall_ms": self.clock_ms or 0}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Progress:
        """Reads reports of collectors before ``settled_ms`` too (settled at the
        watermark)."""
        return cls({s: SourceProgress(p[0], bool(p[1]), p[2] if len(p) > 2 else p[0])
                    for s, p in data["progress"].items()}, int(data["wall_ms"]) or None)


def signal_or_progress(data: dict[str, Any]) -> Signal | Progress:
    """Decode one message of the signals topic."""
    return Progress.from_json(data) if "progress" in data else Signal.from_json(data)


@dataclass
class ScopeState:
    """One scope's state: per-second counters, alert states, how far it was judged and the
    last source offset applied from each source (replays after a restart are skipped);
    for duration scopes, the counters of six-hour blocks too (a regression's baseline)."""

    seconds: dict[int, dict[str, int]] = field(default_factory=dict)
    alerts: dict[str, AlertState] = field(default_factory=dict)
    judged_s: int = -1  # every instant up to the end of this second is judged
    applied: dict[Source, int] = field(default_factory=dict)
    # six-hour block (seconds // 21600) -> counters, for the baselines of regressions
    blocks: dict[int, dict[str, int]] = field(default_factory=dict)
    # blocks in which a baseline rule of the scope was firing: left out of its baselines
    excluded: set[int] = field(default_factory=set)
    # (block, days) -> the sketch of the baseline before that block: derived, not saved
    baselines: dict[tuple[int, int], Any] = field(default_factory=dict, compare=False,
                                                  repr=False)

    @property
    def has_active_alert(self) -> bool:
        return any(alert.status != "inactive" for alert in self.alerts.values())

    def to_json(self) -> dict[str, Any]:
        """A JSON-able view (integer second keys become strings when dumped). It shares
        the counters: serialize it before the state changes again."""
        return {"s": self.seconds,
                "a": {rule: alert.to_json() for rule, alert in self.alerts.items()},
                "j": self.judged_s, "o": self.applied, "b": self.blocks,
                "x": sorted(self.excluded)}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ScopeState:
        if not data:
            return cls()
        return cls({int(second): dict(counts) for second, counts in data["s"].items()},
                   {rule: AlertState.from_json(alert) for rule, alert in data["a"].items()},
                   int(data["j"]), dict(data["o"]),
                   {int(block): dict(counts) for block, counts in data.get("b", {}).items()},
                   {int(block) for block in data.get("x", ())})
