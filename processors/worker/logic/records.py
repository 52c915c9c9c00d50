"""Typed records of the worker's own topic (``worker-signals``) and of its scope table.

``collect`` writes :class:`Signal` and :class:`Progress` records; ``evaluate`` reads them
and keeps one :class:`ScopeState` per scope in its changelogged table. Each has
``to_json`` / ``from_json`` for Faust's JSON serializer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ept.processors.worker.logic.alert_state import AlertState

Source = str
"""A source partition, ``<event name>:<partition>`` (topic prefix left out)."""


@dataclass(frozen=True, slots=True)
class Counted:
    """One event's contribution to one scope: ``counter`` + 1 at ``time_ms``."""

    time_ms: int
    source: Source
    offset: int
    counter: str


@dataclass(frozen=True)
class Signal:
    """The events of one collected batch that touch ``scope`` (a scope key)."""

    scope: str
    events: list[Counted]

    def to_json(self) -> dict[str, Any]:
        return {"scope": self.scope,
                "events": [[e.time_ms, e.source, e.offset, e.counter] for e in self.events]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Signal:
        return cls(data["scope"], [Counted(int(t), s, int(o), c) for t, s, o, c in data["events"]])

    def split(self, most: int) -> list[Signal]:
        """This signal as consecutive signals of at most ``most`` events each (one Kafka
        message each, within the producer's request size). Evaluating them in order is
        evaluating this one: between them no progress report moves event time."""
        if len(self.events) <= most:
            return [self]
        return [Signal(self.scope, self.events[start:start + most])
                for start in range(0, len(self.events), most)]


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
