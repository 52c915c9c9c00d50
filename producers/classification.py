"""Failure classification: which of the specification's reasons an exception or message is.

Rules are tried in order; the first whose exception type or message pattern matches
wins. Host applications prepend their own rules with :func:`register_failure_rule`.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

FAILURE_REASONS: tuple[str, ...] = (
    "timeout", "memory_exceeded", "invalid_composition", "missing_asset", "codec_error", "unknown",
)


@dataclass(frozen=True)
class FailureRule:
    reason: str
    exception_types: tuple[type[BaseException], ...] = ()
    pattern: re.Pattern[str] | None = None

    def matches(self, error: BaseException | None, message: str) -> bool:
        if error is not None and self.exception_types and isinstance(error, self.exception_types):
            return True
        return self.pattern is not None and self.pattern.search(message) is not None


def _rule(reason: str, pattern: str, *types: type[BaseException]) -> FailureRule:
    return FailureRule(reason, types, re.compile(pattern, re.IGNORECASE))


# Order matters: "Composition not found" is invalid_composition, not missing_asset.
_DEFAULT_RULES: tuple[FailureRule, ...] = (
    _rule("memory_exceeded", r"out of memory|\boom\b|memory limit|memory exceeded|"
          r"cannot allocate memory|heap", MemoryError),
    _rule("timeout", r"time[ d-]?out|timed out|deadline exceeded", TimeoutError),
    _rule("invalid_composition", r"composition|invalid format|invalid template|invalid config|"
          r"invalid props|schema validation"),
    _rule("missing_asset", r"not found|missing|no such file|\b404\b|does not exist",
          FileNotFoundError),
    _rule("codec_error", r"codec|encod|decod|ffmpeg|muxer|bitrate"),
)

_lock = threading.Lock()
_custom_rules: list[FailureRule] = []


def register_failure_rule(
    reason: str,
    pattern: str | None = None,
    exception_types: tuple[type[BaseException], ...] = (),
) -> None:
    """Add a rule tried before the defaults. Raises ValueError for an unknown reason."""
    if reason not in FAILURE_REASONS:
        raise ValueError(f"reason: must be one of {', '.join(FAILURE_REASONS)}, got {reason!r}")
    if pattern is None and not exception_types:
        raise ValueError("give a pattern, exception_types, or both")
    compiled = re.compile(pattern, re.IGNORECASE) if pattern is not None else None
    with _lock:
        _custom_rules.insert(0, FailureRule(reason, exception_types, compiled))


def clear_custom_failure_rules() -> None:
    with _lock:
        _custom_rules.clear()


def classify_failure(error: BaseException | str | None) -> str:
    """The failure reason of ``error`` (an exception or a message); ``unknown`` if none fits."""
    if isinstance(error, BaseException):
        exception: BaseException | None = error
        message = f"{type(error).__name__}: {error}"
    else:
        exception, message = None, error or ""
    for rule in (*_custom_rules, *_DEFAULT_RULES):
        if rule.matches(exception, message):
            return rule.reason
    return "unknown"
