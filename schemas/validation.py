"""Value rules that Avro types cannot express (non-negative durations, sane timestamps...).

The SDK checks them before publishing and the sink checks them again before storing,
so a record from any publisher is held to the same rules.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_EARLIEST_MS = dt.datetime(2000, 1, 1, tzinfo=dt.UTC).timestamp() * 1000
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
MAX_TEXT = 8192
_MAX_ID = 512


def envelope_problems(record: dict[str, Any]) -> list[str]:
    """Rules of the shared envelope (event id, event time) that ``record`` breaks.

    Accepts both decodings: UUID / datetime objects, or strings / epoch milliseconds.
    """
    found: list[str] = []
    event_id = record.get("event_id")
    if not isinstance(event_id, uuid.UUID) and (
            not isinstance(event_id, str) or _UUID.fullmatch(event_id) is None):
        found.append(f"event_id: not a UUID: {event_id!r}")
    when = record.get("event_time")
    millis = when.timestamp() * 1000 if isinstance(when, dt.datetime) else when
    horizon = (time.time() + 86_400) * 1000
    if (isinstance(millis, bool) or not isinstance(millis, int | float)
            or not _EARLIEST_MS <= millis <= horizon):
        found.append(f"event_time: outside 2000-01-01 .. now+1d: {when!r}")
    return found


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken rule: the field, what is wrong, and whether the value has the wrong type."""

    field: str
    message: str
    wrong_type: bool = False

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


Check = Callable[[dict[str, Any]], "Problem | None"]


def _text(field: str) -> Check:
    def check(record: dict[str, Any]) -> Problem | None:
        value = record.get(field)
        if not isinstance(value, str):
            return Problem(field, f"must be a string, got {type(value).__name__}", True)
        if not value or value.isspace():
            return Problem(field, "must not be empty")
        if len(value) > _MAX_ID:
            return Problem(field, f"longer than {_MAX_ID} characters")
        return None
    return check


def _number(field: str, integer: bool, optional: bool = False, positive: bool = False
            ) -> Check:
    kinds = int if integer else (int, float)

    def check(record: dict[str, Any]) -> Problem | None:
        value = record.get(field)
        if value is None and optional:
            return None
        if value.__class__ is bool or not isinstance(value, kinds):
            expected = "an integer" if integer else "a number"
            return Problem(field, f"must be {expected}, got {type(value).__name__}", True)
        if not math.isfinite(value) or value < 0:
            return Problem(field, f"must be finite and >= 0, got {value!r}")
        if positive and value == 0:
            return Problem(field, "must be > 0")
        return None
    return check


def _status(optional: bool) -> Check:
    def check(record: dict[str, Any]) -> Problem | None:
        status = record.get("status_code")
        if status is None and optional:
            return None
        if status.__class__ is bool or not isinstance(status, int):
            return Problem("status_code", f"must be an integer, got {type(status).__name__}",
                           True)
        if not 100 <= status <= 599:
            return Problem("status_code", f"must be an HTTP status 100..599, got {status}")
        return None
    return check


def _message(record: dict[str, Any]) -> Problem | None:
    message = record.get("error_message")
    if not isinstance(message, str):
        return Problem("error_message", f"must be a string, got {type(message).__name__}", True)
    if len(message) > MAX_TEXT:
        return Problem("error_message", f"longer than {MAX_TEXT} characters")
    return None


_RENDER_IDS = (_text("render_id"), _text("template_id"))
_DIMENSIONS = (_number("width", integer=True, optional=True),
               _number("height", integer=True, optional=True))
_CHECKS: dict[str, tuple[Check, ...]] = {
    "render_failed": (*_RENDER_IDS, _number("duration_ms", integer=False),
                      _number("retry_attempt", integer=True), _message),
    "render_completed": (*_RENDER_IDS, _number("duration_ms", integer=False), *_DIMENSIONS),
    "slow_render": (*_RENDER_IDS, _number("duration_ms", integer=False),
                    _number("threshold_ms", integer=False, positive=True), *_DIMENSIONS),
    "api_error": (_text("endpoint"), _text("request_id"), _number("duration_ms", integer=False),
                  _number("retry_attempt", integer=True), _status(optional=True), _message),
    "api_request_completed": (_text("endpoint"), _text("request_id"), _text("method"),
                              _number("duration_ms", integer=False), _status(optional=False)),
}


def field_problems(event_name: str, record: dict[str, Any]) -> list[Problem]:
    """Rules of the event's own fields that ``record`` breaks (empty when valid)."""
    found = []
    for check in _CHECKS[event_name]:
        problem = check(record)
        if problem is not None:
            found.append(problem)
    return found


def problems(event_name: str, record: dict[str, Any]) -> list[str]:
    """Every rule ``record`` breaks, each naming the field; empty when it is valid."""
    envelope = envelope_problems(record)
    fields = field_problems(event_name, record)
    if not envelope and not fields:
        return envelope
    return envelope + [str(problem) for problem in fields]
