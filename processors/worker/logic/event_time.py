"""How far event time has progressed, judged from every source partition that feeds a
scope: the frontier up to which a scope may be judged.

The anchors are Flink's per-input watermarks (the minimum over inputs, idle inputs left
out) and Kafka Streams' ``max.task.idle.ms`` (wait for a lagging input rather than run
ahead of it). For a family of scopes (render, slow, api):

* each source partition of the family's topics reports its watermark (the newest sane
  event time read from it, kept within the clock skew behind its newest record timestamp
  and not ahead of it: see :mod:`~ept.processors.worker.logic.collector`) and whether it is idle
  (silent for ``EPT_SOURCE_IDLE_S`` and not behind its high-water mark);
* while any source is unreported, or active without a first event, event time stands;
* otherwise the frontier is the minimum watermark of the active sources, minus the
  allowed lateness (events within a partition may be that much out of order);
* when every source is idle, everything read is judged (the idle interval of silence
  covered any disorder) and event time follows the broker's clock (minus the lateness),
  the newest clock any report carried, so firing alerts resolve and re-notify when all
  traffic stops. The worker's own wall clock only ever moves it in bounded steps, in the
  collectors: a jump of it does not move event time past what the broker stamped.

The frontier never goes back. Pure logic: no Faust, no Kafka.
"""

from __future__ import annotations

from ept.processors.worker.logic.records import Progress, Source, SourceProgress

FAMILIES_OF_EVENT = {"render_failed": ("render",),
                     "render_completed": ("render", "slow", "duration"),
                     "slow_render": ("slow",), "api_error": ("api",),
                     "api_request_completed": ("api",)}

FAMILIES = ("render", "slow", "api", "duration")


def source_of(event_name: str, partition: int) -> Source:
    return f"{event_name}:{partition}"


class Frontiers:
    """The event-time frontier of each family, from the progress reports of collectors.

    ``partitions`` is the partition count of each event's topic: every one of those
    source partitions must have been reported before event time moves.
    """

    def __init__(self, partitions: dict[str, int], lateness_ms: int) -> None:
        self._lateness_ms = lateness_ms
        self._sources: dict[str, list[Source]] = {}
        for event, count in partitions.items():
            for family in FAMILIES_OF_EVENT[event]:
                self._sources.setdefault(family, []).extend(
                    source_of(event, p) for p in range(count))
        self._reported: dict[Source, SourceProgress] = {}
        self._frontier: dict[str, int] = dict.fromkeys(self._sources, 0)
        self._clock_ms: int | None = None  # the broker's clock: the newest reported

    def update(self, progress: Progress) -> dict[str, int]:
        """Apply a report; returns the families whose frontier advanced, with the new one.

        A source's watermark and settled time never go back (a stale report from a
        previous owner of the partition cannot lower them), nor does the broker's clock:
        the newest any report carried.
        """
        for source, reported in progress.sources.items():
            before = self._reported.get(source)
            if before is not None and before.watermark_ms is not None and (
                    reported.watermark_ms is None or reported.watermark_ms < before.watermark_ms):
                reported = SourceProgress(before.watermark_ms, reported.idle,
                                          reported.settled_ms)
            if before is not None and before.settled_ms is not None and (
                    reported.settled_ms is None or reported.settled_ms < before.settled_ms):
                reported = SourceProgress(reported.watermark_ms, reported.idle,
                                          before.settled_ms)
            self._reported[source] = reported
        if progress.clock_ms is not None and (self._clock_ms is None
                                              or progress.clock_ms > self._clock_ms):
            self._clock_ms = progress.clock_ms
        advanced = {}
        for family, sources in self._sources.items():
            frontier = self._candidate(sources)
            if frontier is not None and frontier > self._frontier[family]:
                self._frontier[family] = frontier
                advanced[family] = frontier
        return advanced

    def frontier(self, family: str) -> int:
        return self._frontier.get(family, 0)

    def settled(self, family: str) -> int:
        """The event time (ms) every active source of ``family`` has been read past
        (:attr:`SourceProgress.settled_ms`), without the allowed lateness: what a rule may
        be judged ahead of the frontier on (only out-of-order events can still come before
        it). The frontier when that is not known (a source unreported, or active before
        its first event)."""
        frontier = self._frontier.get(family, 0)
        active: list[int] = []
        for source in self._sources.get(family, ()):
            reported = self._reported.get(source)
            if reported is None:
                return frontier
            if reported.idle:
                continue
            settled = (reported.watermark_ms if reported.settled_ms is None
                       else reported.settled_ms)
            if settled is None:
                return frontier
            active.append(settled)
        return max(frontier, min(active)) if active else frontier

    def _candidate(self, sources: list[Source]) -> int | None:
        active: list[int] = []
        newest = 0
        for source in sources:
            reported = self._reported.get(source)
            if reported is None:
                return None  # not heard of yet: it may hold anything
            if reported.watermark_ms is not None:
                newest = max(newest, reported.watermark_ms)
            if not reported.idle:
                if reported.watermark_ms is None:
                    return None  # about to deliver its first event
                active.append(reported.watermark_ms)
        if active:
            return min(active) - self._lateness_ms
        # Every source has been silent for the idle interval: whatever was out of order
        # has arrived, so everything read is judged (to the end of the newest event's
        # second: watermarks are not ahead of the broker); what comes next is near the
        # broker's clock.
        judged = newest // 1000 * 1000 + 1000
        if self._clock_ms is None:
            return judged
        return max(judged, self._clock_ms - self._lateness_ms)
