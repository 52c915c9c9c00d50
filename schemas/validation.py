"""Value rules that Avro types cannot express (non-negative durations, sane timestamps...).

The SDK checks them before publishing and the sink checks them again before storing,
so a record from any publisher is held to the same rules.

Every rule is a small value object with two readings of the same rule:
``problem(record)`` judges a record of any types (what the SDK is handed), and
``valid_when`` is a Python expression over ``value`` — the field as the Avro schema
decodes it — that is true exactly when ``problem`` finds nothing. The sink's compiled
scan (:mod:`schemas.scan`) inlines the expressions; unit tests hold both readings equal.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

EARLIEST_MS = int(dt.datetime(2000, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
UUID_PATTERN = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
MAX_TEXT = 8192
_MAX_ID = 512
_FUTURE_MS = 86_400_000


def latest_event_time_ms() -> float:
    """The latest acceptable event time now (epoch milliseconds): now + 1 day."""
    return time.time() * 1000 + _FUTURE_MS


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken rule: the field, what is wrong, and whether the value has the wrong type."""

    field: str
    message: str
    wrong_type: bool = False

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class Rule(Protocol):
    @property
    def field(self) -> str:
        """The record field the rule judges."""
        ...

    def problem(self, record: dict[str, Any]) -> Problem | None:
        """What is wrong with ``record[field]`` (absent counts as None), or None."""
        ...

    @property
    def valid_when(self) -> str:
        """An expression over ``value`` (the decoded field, or None when the schema has no
        such field) and ``latest_ms`` (:func:`latest_event_time_ms`), true exactly when
        :meth:`problem` is None for such a value. Names it uses: ``_UUID``,
        ``_EARLIEST_MS``, ``_INF``."""
        ...


def _type_name(value: Any) -> str:
    return type(value).__name__


@dataclass(frozen=True, slots=True)
class EventId:
    field: str = "event_id"

    def problem(self, record: dict[str, Any]) -> Problem | None:
        value = record.get(self.field)
        if isinstance(value, uuid.UUID) or (
                isinstance(value, str) and UUID_PATTERN.fullmatch(value) is not None):
            return None
        return Problem(self.field, f"not a UUID: {value!r}")

    @property
    def valid_when(self) -> str:
        return "value.__class__ is str and _UUID.fullmatch(value) is not None"


@dataclass(frozen=True, slots=True)
class EventTime:
    """Epoch milliseconds (or an aware datetime) between 2000-01-01 and now + 1 day."""

    field: str = "event_time"

    def problem(self, record: dict[str, Any]) -> Problem | None:
        when = record.get(self.field)
        millis = when.timestamp() * 1000 if isinstance(when, dt.datetime) else when
        if (isinstance(millis, bool) or not isinstance(millis, int | float)
                or not EARLIEST_MS <= millis <= latest_event_time_ms()):
            return Problem(self.field, f"outside 2000-01-01 .. now+1d: {when!r}")
        return None

    @property
    def valid_when(self) -> str:
        return "value.__class__ is int and _EARLIEST_MS <= value <= latest_ms"


@dataclass(frozen=True, slots=True)
class Text:
    """A string of at most ``max_chars`` characters; ``identifier`` ones not blank either."""

    field: str
    max_chars: int = _MAX_ID
    identifier: bool = True

    def problem(self, record: dict[str, Any]) -> Problem | None:
        value = record.get(self.field)
        if not isinstance(value, str):
            return Problem(self.field, f"must be a string, got {_type_name(value)}", True)
        if self.identifier and (not value or value.isspace()):
            return Problem(self.field, "must not be empty")
        if len(value) > self.max_chars:
            return Problem(self.field, f"longer than {self.max_chars} characters")
        return None

    @property
    def valid_when(self) -> str:
        blank = "value and not value.isspace() and " if self.identifier else ""
        return f"value.__class__ is str and {blank}len(value) <= {self.max_chars}"


@dataclass(frozen=True, slots=True)
class Number:
    """A finite number >= 0 (> 0 when ``positive``); an int when ``integer``; None
    allowed when ``optional``."""

    field: str
    integer: bool = False
    optional: bool = False
    positive: bool = False

    def problem(self, record: dict[str, Any]) -> Problem | None:
        value = record.get(self.field)
        if value is None and self.optional:
            return None
        kinds = int if self.integer else (int, float)
        if value.__class__ is bool or not isinstance(value, kinds):
            expected = "an integer" if self.integer else "a number"
            return Problem(self.field, f"must be {expected}, got {_type_name(value)}", True)
        if not math.isfinite(value) or value < 0:
            return Problem(self.field, f"must be finite and >= 0, got {value!r}")
        if self.positive and value == 0:
            return Problem(self.field, "must be > 0")
        return None

    @property
    def valid_when(self) -> str:
        kinds = "value.__class__ is int" if self.integer else (
            "(value.__class__ is float or value.__class__ is int)")
        low = "0 < value" if self.positive else "0 <= value"
        condition = f"{kinds} and {low} < _INF"
        return f"(value is None or {condition})" if self.optional else condition


@dataclass(frozen=True, slots=True)
class HttpStatus:
    field: str = "status_code"
    optional: bool = False

    def problem(self, record: dict[str, Any]) -> Problem | None:
        status = record.get(self.field)
        if status is None and self.optional:
            return None
        if status.__class__ is bool or not isinstance(status, int):
            return Problem(self.field, f"must be an integer, got {_type_name(status)}", True)
        if not 100 <= status <= 599:
            return Problem(self.field, f"must be an HTTP status 100..599, got {status}")
        return None

    @property
    def valid_when(self) -> str:
        condition = "value.__class__ is int and 100 <= value <= 599"
        return f"(value is None or {condition})" if self.optional else condition


ENVELOPE_RULES: tuple[Rule, ...] = (EventId(), EventTime())
_RENDER_IDS = (Text("render_id"), Text("template_id"))
_DIMENSIONS = (Number("width", integer=True, optional=True),
               Number("height", integer=True, optional=True))
_MESSAGE = Text("error_message", max_chars=MAX_TEXT, identifier=False)
FIELD_RULES: dict[str, tuple[Rule, ...]] = {
    "render_failed": (*_RENDER_IDS, Number("duration_ms"),
                      Number("retry_attempt", integer=True), _MESSAGE),
    "render_completed": (*_RENDER_IDS, Number("duration_ms"), *_DIMENSIONS),
    "slow_render": (*_RENDER_IDS, Number("duration_ms"),
                    Number("threshold_ms", positive=True), *_DIMENSIONS),
    "api_error": (Text("endpoint"), Text("request_id"), Number("duration_ms"),
                  Number("retry_attempt", integer=True), HttpStatus(optional=True), _MESSAGE),
    "api_request_completed": (Text("endpoint"), Text("request_id"), Text("method"),
                              Number("duration_ms"), HttpStatus()),
}


def rules(event_name: str) -> tuple[Rule, ...]:
    """Every rule an event of ``event_name`` must obey, envelope first."""
    return ENVELOPE_RULES + FIELD_RULES[event_name]


def _broken(checked: tuple[Rule, ...], record: dict[str, Any]) -> list[Problem]:
    return [problem for rule in checked if (problem := rule.problem(record)) is not None]


def field_problems(event_name: str, record: dict[str, Any]) -> list[Problem]:
    """Rules of the event's own fields that ``record`` breaks (empty when valid)."""
    return _broken(FIELD_RULES[event_name], record)


# The names the ``valid_when`` expressions use.
CHECK_NAMES: dict[str, Any] = {"_UUID": UUID_PATTERN, "_EARLIEST_MS": EARLIEST_MS,
                               "_INF": math.inf}


def field_checks(event_name: str) -> dict[str, list[str]]:
    """Per field of the event's own rules, their ``valid_when`` expressions (over
    ``value``, with :data:`CHECK_NAMES`): all true only when :func:`field_problems` finds
    nothing wrong with the field. False may still be no problem: a value of an unusual
    type (a ``str`` subclass) is judged by :func:`field_problems`."""
    checks: dict[str, list[str]] = {}
    for rule in FIELD_RULES[event_name]:
        checks.setdefault(rule.field, []).append(rule.valid_when)
    return checks


@cache
def fields_valid(event_name: str) -> Callable[[dict[str, Any]], bool]:
    """A compiled yes/no of :func:`field_checks`: ``valid(record)`` is True only when
    :func:`field_problems` finds nothing wrong with ``record``; False means it may (ask
    :func:`field_problems`). Never raises: each expression tests a value's class first."""
    lines = ["def valid(record):"]
    for field, conditions in field_checks(event_name).items():
        lines.append(f"    value = record.get({field!r})")
        for condition in conditions:
            lines += [f"    if not ({condition}):", "        return False"]
    lines.append("    return True")
    namespace = dict(CHECK_NAMES)
    exec(compile("\n".join(lines) + "\n", f"<ept fields_valid {event_name}>", "exec"),
         namespace)
    valid: Callable[[dict[str, Any]], bool] = namespace["valid"]
    return valid


def problems(event_name: str, record: dict[str, Any]) -> list[str]:
    """Every rule ``record`` breaks, each naming the field; empty when it is valid."""
    return [str(problem) for problem in _broken(rules(event_name), record)]
