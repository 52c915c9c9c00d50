"""Process-local statistics of tracking (the specification's counters plus delivery state)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ErrorPerformanceStats:
    renders_failed: int = 0
    api_errors: int = 0
    slow_renders: int = 0
    total_errors: int = 0
    total_performance_issues: int = 0
    delivered: int = 0   # acknowledged by Kafka
    queued: int = 0      # waiting in the producer's memory queue
    spooled: int = 0     # written to the on-disk spool while Kafka was unreachable or full
    dropped: int = 0     # lost: memory queue and spool both full, or tracking disabled
    rejected: int = 0    # invalid arguments (lenient mode)
    renders_refused: int = 0  # not started: their template is disabled (kill switch)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def as_spec_dict(self) -> dict[str, int]:
        """The specification's five counters under its camelCase names."""
        return {
            "rendersFailed": self.renders_failed,
            "apiErrors": self.api_errors,
            "slowRenders": self.slow_renders,
            "totalErrors": self.total_errors,
            "totalPerformanceIssues": self.total_performance_issues,
        }


_COUNTERS = tuple(ErrorPerformanceStats.__dataclass_fields__)
# The counter one tracked event adds to (successes add to none); the totals are sums.
_EVENT_COUNTER = {"render_failed": "renders_failed", "api_error": "api_errors",
                  "slow_render": "slow_renders"}


class StatsRecorder:
    """Thread-safe counters. ``add`` never blocks for longer than a lock hand-off."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(_COUNTERS, 0)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._values[name] += amount

    def record_event(self, event_name: str) -> None:
        """Count one tracked event under the specification's counters."""
        self.event_counter(event_name)()

    def event_counter(self, event_name: str) -> Callable[[], None]:
        """``count()``: :meth:`record_event` of ``event_name``, its counter looked up
        once, here (a tracker takes one per event for its hot path)."""
        counter = _EVENT_COUNTER.get(event_name)
        if counter is None:
            return _uncounted
        lock, values = self._lock, self._values

        def count() -> None:
            lock.acquire()  # no ``with``: the hot path's cheaper form; nothing here raises
            values[counter] += 1
            lock.release()

        return count

    def snapshot(self, queued: int = 0) -> ErrorPerformanceStats:
        with self._lock:
            values = {**self._values, "queued": queued}
        values["total_errors"] = values["renders_failed"] + values["api_errors"]
        values["total_performance_issues"] = values["slow_renders"]
        return ErrorPerformanceStats(**values)

    def reset(self) -> None:
        with self._lock:  # in place: the functions of event_counter hold the dict
            self._values.update(dict.fromkeys(_COUNTERS, 0))


def _uncounted() -> None:
    """The counter of an event that adds to none (a success)."""
