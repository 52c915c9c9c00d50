"""What ``collect`` does with a batch of events, as pure logic: sane event times, no
duplicates, one signal per scope, and the progress of each source partition.

The Faust agent (:mod:`ept.processors.worker`) decodes the messages and hands them here
with their source partition, offset and Kafka record timestamp.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from ept.processors.event_time import source_of
from ept.processors.records import Counted, Progress, Signal, Source, SourceProgress
from ept.processors.signals import signals_of


@dataclass(frozen=True, slots=True)
class SourceEvent:
    """One decoded event as read from Kafka."""

    event_name: str
    partition: int
    offset: int
    record_ms: int  # the Kafka record timestamp (the broker's append time on ept's topics)
    record: dict[str, Any]


@dataclass
class _SourceState:
    watermark_ms: int | None = None
    last_data_wall_ms: int = 0
    caught_up: bool | None = None  # None: not known
    # event id -> event time of the events read recently (duplicate re-sends)
    seen: dict[str, int] | None = None


class Collector:
    """Turns batches of events into signals and progress reports.

    * An event time beyond its record timestamp plus ``max_skew_ms`` comes from a wrong
      clock: it is counted at the record timestamp and never moves a watermark
      (``skewed_events`` counts them).
    * An event id read again on its partition within ``dedup_horizon_ms`` of event time
      (a producer's re-send at a new offset) is not counted (``duplicate_events``).
    * Only the scopes of ``families`` (those some rule judges) are signalled.
    * A source is idle when it has been silent for ``idle_ms`` of wall-clock time and is
      not known to be behind its high-water mark.
    """

    def __init__(self, max_skew_ms: int, idle_ms: int, dedup_horizon_ms: int,
                 families: frozenset[str] | None = None) -> None:
        self._families = families  # the scope families some rule judges; None: all
        self._max_skew_ms = max_skew_ms
        self._idle_ms = idle_ms
        self._horizon_ms = dedup_horizon_ms
        self._sources: dict[Source, _SourceState] = {}
        self.skewed_events = 0
        self.duplicate_events = 0

    def assign(self, sources: list[Source], wall_ms: int) -> None:
        """Partitions newly assigned to this collector: silent since ``wall_ms``."""
        for source in sources:
            self._sources.setdefault(source, _SourceState(last_data_wall_ms=wall_ms))

    def revoke(self, sources: list[Source]) -> None:
        for source in sources:
            self._sources.pop(source, None)

    def collect(self, events: list[SourceEvent], wall_ms: int) -> list[Signal]:
        """The signals of a batch, one per scope, events in the order read (each source's
        offsets ascending: ``evaluate`` skips offsets it applied before). Never raises."""
        by_scope: dict[str, list[Counted]] = defaultdict(list)
        for event in events:
            source = source_of(event.event_name, event.partition)
            state = self._sources.setdefault(source, _SourceState())
            state.last_data_wall_ms = wall_ms
            time_ms = int(event.record["event_time"])
            if time_ms > event.record_ms + self._max_skew_ms:
                self.skewed_events += 1
                time_ms = event.record_ms
            if self._is_duplicate(state, str(event.record.get("event_id", "")), time_ms):
                self.duplicate_events += 1
                continue
            if state.watermark_ms is None or time_ms > state.watermark_ms:
                state.watermark_ms = time_ms
            for scope, counter in signals_of(event.event_name, event.record):
                if self._families is not None and scope.family not in self._families:
                    continue
                by_scope[scope.key].append(Counted(time_ms, source, event.offset, counter))
        return [Signal(scope, counted) for scope, counted in by_scope.items()]

    def caught_up(self, source: Source, caught_up: bool | None) -> None:
        """Whether ``source`` has been read to its high-water mark (None: unknown)."""
        self._sources.setdefault(source, _SourceState()).caught_up = caught_up

    def progress(self, wall_ms: int) -> Progress:
        """The report of every source this collector reads."""
        return Progress({source: SourceProgress(state.watermark_ms, self._idle(state, wall_ms))
                         for source, state in self._sources.items()}, wall_ms)

    def _idle(self, state: _SourceState, wall_ms: int) -> bool:
        # Caught up is not enough: a producer may be about to write. Like Kafka Streams'
        # max.task.idle.ms, wait ``idle_ms`` of silence; a source known to be behind waits.
        silent = wall_ms - state.last_data_wall_ms >= self._idle_ms
        return silent and state.caught_up is not False

    def _is_duplicate(self, state: _SourceState, event_id: str, time_ms: int) -> bool:
        if not event_id:
            return False
        if state.seen is None:
            state.seen = {}
        if event_id in state.seen:
            return True
        state.seen[event_id] = time_ms
        if len(state.seen) % 1024 == 0 and state.watermark_ms is not None:
            oldest = state.watermark_ms - self._horizon_ms
            state.seen = {key: t for key, t in state.seen.items() if t >= oldest}
        return False
