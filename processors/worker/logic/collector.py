"""What ``collect`` does with a batch of events, as pure logic: sane event times, no
duplicates, one signal per scope, and the progress of each source partition.

The Faust agent (:mod:`ept.processors.worker.service`) decodes the messages and hands them here
with their source partition, offset, Kafka record timestamp and the SDK's send stamp.

Clocks both ways. Three clocks meet here: the producing host's (event time, send stamp),
the broker's (the record timestamp, LogAppendTime on ept's topics) and the worker's own.
Only the broker's is trusted as such:

* A host's clock error is told from the time an event waited in the SDK's spool by the
  send stamp: broker time - send time is the clock error plus the transport delay, while
  send time - event time is the spool delay (real: kept). The transport delay is never
  negative and near zero whenever the broker takes records as they come, so the lowest
  offset of a producer over the last :data:`CLOCK_WINDOW_MS` of broker time (a long
  silence carries the last estimate over) is its clock error; events are corrected by it
  when it exceeds :data:`CLOCK_TOLERANCE_MS`. An event that waited in librdkafka's own
  queue through a broker outage so keeps its time too, as long as the producer was seen
  before.
* A source partition holds event time back at most ``max_skew_ms`` behind its newest
  record timestamp, and never ahead of it: a producer without a stamp (not our SDK) whose
  clock is slow makes its own events late, not everyone's alerts; one whose clock is fast
  cannot carry the frontier ahead of the broker once everything is quiet.
* The clock that idle event time follows is the broker's: the newest record timestamp
  read, advanced between records by the worker's wall clock, each step at most
  ``max_clock_step_ms`` and never back. A jump of the worker's clock so moves event time
  by one bounded step, not by the jump.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from itertools import takewhile
from typing import Any

from ept.core.send_stamp import SendStamp
from ept.processors.worker.logic.event_time import source_of
from ept.processors.worker.logic.records import Progress, Signal, Source, SourceProgress
from ept.processors.worker.logic.scopes import signals_of


@dataclass(slots=True)  # not frozen: that costs ~0.4 us an event on the hot path
class SourceEvent:
    """One decoded event as read from Kafka."""

    event_name: str
    partition: int
    offset: int
    record_ms: int  # the Kafka record timestamp (the broker's append time on ept's topics)
    record: dict[str, Any]
    stamp: SendStamp | None = None  # the SDK's send stamp; None from other producers


CLOCK_WINDOW_MS = 10 * 60_000
"""How long (in broker time) a producer's lowest offset stands for its clock error: a
clock stepped to be slower is followed within two of these; a record queued through a
broker outage is told from a clock error whenever its producer was seen within one."""
MAX_CLOCK_STEP_MS = 10_000
"""The most one step of the worker's wall clock advances the broker's clock. Reports come
at least every second: a longer step is a stalled worker or a clock that jumped."""
CLOCK_TOLERANCE_MS = 1_000
"""Below this, an offset is transport delay or NTP-grade error: event times are kept."""


@dataclass
class _ProducerClock:
    """The offsets (broker time - send time) of one producer: the lowest in the current
    window of broker time and in the previous one."""

    window_start_ms: int
    current_ms: int
    previous_ms: int | None = None

    def observe(self, record_ms: int, offset_ms: int) -> None:
        if record_ms >= self.window_start_ms + CLOCK_WINDOW_MS:
            self.previous_ms, self.current_ms = self.current_ms, offset_ms
            self.window_start_ms = record_ms
        else:
            self.current_ms = min(self.current_ms, offset_ms)

    @property
    def error_ms(self) -> int:
        """How far the producer's clock is behind the broker's (negative: ahead)."""
        if self.previous_ms is None:
            return self.current_ms
        return min(self.current_ms, self.previous_ms)


@dataclass
class _SourceState:
    watermark_ms: int | None = None  # the newest event time read
    record_ms: int | None = None  # the newest record timestamp read
    last_data_ms: int = 0  # on the collector's steady clock
    caught_up: bool | None = None  # None: not known
    # event id -> event time of the events read recently (duplicate re-sends)
    seen: dict[str, int] | None = None


class Collector:
    """Turns batches of events into signals and progress reports.

    * An event with a send stamp is corrected by its producer's clock error (see the
      module's docstring; ``corrected_events`` counts them).
    * An event time beyond its record timestamp plus ``max_skew_ms`` comes from a wrong
      clock: it is counted at the record timestamp and never moves a watermark
      (``skewed_events`` counts them).
    * A source reports as its watermark its newest event time, kept within
      ``max_skew_ms`` behind its newest record timestamp and not ahead of it.
    * Reports carry the broker's clock: the newest record timestamp read, advanced by
      the wall clock in steps of at most ``max_clock_step_ms``.
    * An event id read again on its partition within ``dedup_horizon_ms`` of event time
      (a producer's re-send at a new offset) is not counted (``duplicate_events``).
    * Only the scopes of ``families`` (those some rule judges) are signalled.
    * A source is idle when it has been silent for ``idle_ms`` (of the wall clock's steps,
      each at most ``max_clock_step_ms``) and is not known to be behind its high-water
      mark.
    """

    def __init__(self, max_skew_ms: int, idle_ms: int, dedup_horizon_ms: int,
                 families: frozenset[str] | None = None, *,
                 max_clock_step_ms: int = MAX_CLOCK_STEP_MS) -> None:
        self._families = families  # the scope families some rule judges; None: all
        self._max_skew_ms = max_skew_ms
        self._idle_ms = idle_ms
        self._horizon_ms = dedup_horizon_ms
        self._max_step_ms = max_clock_step_ms
        self._sources: dict[Source, _SourceState] = {}
        self._producers: dict[int, _ProducerClock] = {}
        self._broker_ms: int | None = None  # the broker's clock, as far as known
        self._wall_ms: int | None = None  # the wall clock when it was last advanced
        # the wall clock's bounded steps, summed: silence is measured on it, so a jump of
        # the wall clock (either way) does not make a source idle or keep it busy
        self._steady_ms = 0
        self.skewed_events = 0
        self.duplicate_events = 0
        self.corrected_events = 0

    def assign(self, sources: list[Source], wall_ms: int) -> None:
        """Partitions newly assigned to this collector: silent since ``wall_ms``."""
        self._tick(wall_ms)
        for source in sources:
            self._sources.setdefault(source, _SourceState(last_data_ms=self._steady_ms))

    @property
    def sources(self) -> frozenset[Source]:
        """The source partitions this collector reads (assigned or read from)."""
        return frozenset(self._sources)

    def remember(self, source: Source, events: list[tuple[str, int]]) -> None:
        """Events of ``source`` (event id, event time) read before this collector took it
        over: re-sends of them are duplicates here too."""
        state = self._sources.setdefault(source, _SourceState())
        if state.seen is None:
            state.seen = {}
        for event_id, time_ms in events:
            if event_id:
                state.seen.setdefault(event_id, time_ms)

    def revoke(self, sources: list[Source]) -> None:
        for source in sources:
            self._sources.pop(source, None)

    def collect(self, events: list[SourceEvent], wall_ms: int) -> list[Signal]:
        """The signals of a batch, one per scope, each source's events in the order read
        (offsets ascending: ``evaluate`` skips offsets it applied before). Never raises."""
        self._tick(wall_ms)
        # scope key -> source -> its events' offsets, seconds and counters
        by_scope: defaultdict[str, dict[Source, tuple[list[int], list[int], list[str]]]] = (
            defaultdict(dict))
        read_up_to: dict[Source, int] = {}  # the last offset of each source in this batch
        for event in events:
            source = source_of(event.event_name, event.partition)
            if event.offset <= read_up_to.get(source, -1):
                continue  # read again within the batch (a seek back): counted once
            read_up_to[source] = event.offset
            state = self._sources.setdefault(source, _SourceState())
            state.last_data_ms = self._steady_ms
            if state.record_ms is None or event.record_ms > state.record_ms:
                state.record_ms = event.record_ms
            if self._broker_ms is None or event.record_ms > self._broker_ms:
                self._broker_ms = event.record_ms
            time_ms = int(event.record["event_time"])
            if event.stamp is not None:
                error_ms = self._clock_error(event.stamp, event.record_ms)
                if abs(error_ms) > CLOCK_TOLERANCE_MS:
                    self.corrected_events += 1
                    time_ms += error_ms
            if time_ms > event.record_ms + self._max_skew_ms:
                self.skewed_events += 1
                time_ms = event.record_ms
            if self._is_duplicate(state, str(event.record.get("event_id", "")), time_ms):
                self.duplicate_events += 1
                continue
            if state.watermark_ms is None or time_ms > state.watermark_ms:
                state.watermark_ms = time_ms
            offset, second = event.offset, time_ms // 1000
            for family, scope, counter in signals_of(event.event_name, event.record):
                if self._families is not None and family not in self._families:
                    continue
                sources = by_scope[scope]
                columns = sources.get(source)
                if columns is None:
                    columns = sources[source] = ([], [], [])
                columns[0].append(offset)
                columns[1].append(second)
                columns[2].append(counter)
        return [Signal.from_columns(scope, sources) for scope, sources in by_scope.items()]

    def broker_clock_seen(self, record_ms: int) -> None:
        """A record timestamp read by someone else (the newest of a partition taken over):
        the broker's clock is at least there."""
        if self._broker_ms is None or record_ms > self._broker_ms:
            self._broker_ms = record_ms

    def caught_up(self, source: Source, caught_up: bool | None) -> None:
        """Whether ``source`` has been read to its high-water mark (None: unknown)."""
        self._sources.setdefault(source, _SourceState()).caught_up = caught_up

    def progress(self, wall_ms: int) -> Progress:
        """The report of every source this collector reads, with the broker's clock."""
        self._tick(wall_ms)
        return Progress({source: SourceProgress(self._watermark(state), self._idle(state),
                                                self._settled(state))
                         for source, state in self._sources.items()}, self._broker_ms)

    def _tick(self, wall_ms: int) -> None:
        """Advance the steady clock and the broker's clock by the wall clock's step since
        the last call, at most ``max_clock_step_ms``; a step back counts as none."""
        if self._wall_ms is not None:
            step = min(max(wall_ms - self._wall_ms, 0), self._max_step_ms)
            self._steady_ms += step
            if self._broker_ms is not None:
                self._broker_ms += step
        self._wall_ms = wall_ms

    def _watermark(self, state: _SourceState) -> int | None:
        if state.watermark_ms is None or state.record_ms is None:
            return state.watermark_ms
        return min(max(state.watermark_ms, state.record_ms - self._max_skew_ms),
                   state.record_ms)

    def _settled(self, state: _SourceState) -> int | None:
        watermark = self._watermark(state)
        if state.caught_up and self._broker_ms is not None and watermark is not None:
            return max(watermark, self._broker_ms)
        return watermark

    def _clock_error(self, stamp: SendStamp, record_ms: int) -> int:
        offset_ms = record_ms - stamp.sent_ms
        clock = self._producers.get(stamp.producer)
        if clock is None:
            clock = self._producers[stamp.producer] = _ProducerClock(record_ms, offset_ms)
            if len(self._producers) % 256 == 0:  # producers come and go with processes
                oldest = record_ms - 2 * CLOCK_WINDOW_MS
                self._producers = {producer: known for producer, known in
                                   self._producers.items() if known.window_start_ms >= oldest}
        else:
            clock.observe(record_ms, offset_ms)
        return clock.error_ms

    def _idle(self, state: _SourceState) -> bool:
        # Caught up is not enough: a producer may be about to write. Like Kafka Streams'
        # max.task.idle.ms, wait ``idle_ms`` of silence; a source known to be behind waits.
        silent = self._steady_ms - state.last_data_ms >= self._idle_ms
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
            _forget_before(state.seen, state.watermark_ms - self._horizon_ms)
        return False


def _forget_before(seen: dict[str, int], oldest_ms: int) -> None:
    """Drop the event ids of ``seen`` read first, up to the first one of event time from
    ``oldest_ms`` on. Ids are read in about event-time order: one read out of order is
    kept until those before it go, and a pass that drops nothing costs nothing (a rebuild
    of the whole dict each time cost more than the rest of the collector through a
    backlog)."""
    expired = [key for key, _ in takewhile(lambda item: item[1] < oldest_ms, seen.items())]
    for key in expired:
        del seen[key]
