"""The one backoff of the sink: retry an attempt, waiting 0.5 s after the first failure,
twice as long after each next one, at most 30 s."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 30.0


def retry(attempt: Callable[[], T], *, failed: Callable[[Exception, float], bool],
          wait: Callable[[float], None]) -> T | None:
    """``attempt()`` until it returns, and what it returned.

    After each failure (an ``Exception`` it raised) ``failed(error, delay)`` is told and
    says whether to go on: when it says no, None is returned at once; else ``wait(delay)``
    spends the delay (it may return early, e.g. on stop) and the attempt is made again.
    Blocks as long as the attempts fail and ``failed`` says go on. Raises what
    ``failed`` or ``wait`` raise; an attempt should not return None (it would read as
    giving up).
    """
    delay = FIRST_DELAY_S
    while True:
        try:
            return attempt()
        except Exception as exc:
            if not failed(exc, delay):
                return None
        wait(delay)
        delay = min(delay * 2, MAX_DELAY_S)
