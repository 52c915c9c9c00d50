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
from dataclasses import dataclass
from typing import Any

_EARLIEST_MS = dt.datetime(2000, 1, 1, tzinfo=dt.UTC).timestamp() * 1000
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
MAX_TEXT = 8192
_MAX_ID = 512
_REQUIRED_TEXT = {
    "render_failed": ("render_id", "template_id"),
    "render_completed": ("render_id", "template_id"),
    "slow_render": ("render_id", "template_id"),
    "api_error": ("endpoint", "request_id"),
    "api_request_completed": ("endpoint", "request_id", "method"),
}


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


def _number_problem(field: str, value: Any, integer: bool) -> Problem | None:
    kinds = int if integer else int | float
    if isinstance(value, bool) or not isinstance(value, kinds):
        expected = "an integer" if integer else "a number"
        return Problem(field, f"must be {expected}, got {type(value).__name__}", True)
    if not math.isfinite(value) or value < 0:
        return Problem(field, f"must be finite and >= 0, got {value!r}")
    return None


def field_problems(event_name: str, record: dict[str, Any]) -> list[Problem]:
    """Rules of the event's own fields that ``record`` breaks."""
    found: list[Problem] = []
    for field in _REQUIRED_TEXT[event_name]:
        value = record.get(field)
        if not isinstance(value, str):
            found.append(Problem(field, f"must be a string, got {type(value).__name__}", True))
        elif not value.strip():
            found.append(Problem(field, "must not be empty"))
        elif len(value) > _MAX_ID:
            found.append(Problem(field, f"longer than {_MAX_ID} characters"))
    for field in ("duration_ms", "threshold_ms"):
        if field in record:
            problem = _number_problem(field, record[field], integer=False)
            if problem is None and field == "threshold_ms" and record[field] == 0:
                problem = Problem(field, "must be > 0")
            if problem is not None:
                found.append(problem)
    for field in ("retry_attempt", "width", "height"):
        if record.get(field) is not None:
            problem = _number_problem(field, record[field], integer=True)
            if problem is not None:
                found.append(problem)
    status = record.get("status_code")
    if status is not None:
        if isinstance(status, bool) or not isinstance(status, int):
            found.append(Problem("status_code", f"must be an integer, got {type(status).__name__}",
                                 True))
        elif not 100 <= status <= 599:
            found.append(Problem("status_code", f"must be an HTTP status 100..599, got {status}"))
    message = record.get("error_message", "")
    if not isinstance(message, str):
        found.append(Problem("error_message", f"must be a string, got {type(message).__name__}",
                             True))
    elif len(message) > MAX_TEXT:
        found.append(Problem("error_message", f"longer than {MAX_TEXT} characters"))
    return found


def problems(event_name: str, record: dict[str, Any]) -> list[str]:
    """Every rule ``record`` breaks, each naming the field; empty when it is valid."""
    return envelope_problems(record) + [str(p) for p in field_problems(event_name, record)]
