"""The alert lifecycle of one rule for one scope: inactive -> pending -> firing -> resolved.

Pure logic: :func:`step` takes the current state and the measured value at an event
time and returns the new state and, when something must be told, the notification.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import asdict, dataclass, replace
from typing import Any

from ept.processors.alerts.notice import AlertNotice
from ept.processors.worker.logic.evidence import lower_bound, upper_bound
from ept.processors.worker.logic.rules import REGRESSION, Rule
from ept.processors.worker.logic.scopes import Measurement

INACTIVE, PENDING, FIRING, RESOLVED = "inactive", "pending", "firing", "resolved"


@dataclass(frozen=True)
class AlertState:
    status: str = INACTIVE
    pending_since_ms: int = 0
    started_at_ms: int = 0
    last_notified_ms: int = 0
    # firing, with the verdict "cleared" at every instant judged since (resolve pending)
    clearing_since_ms: int = 0
    # not firing yet at the frontier, but told firing ahead of it at this instant: the
    # frontier's judgement there confirms it (fires) or withdraws it
    ahead_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> AlertState:
        return cls(**data) if data else cls()


@dataclass(frozen=True)
class StateNote:
    """What one rule's alert state tells as it steps (the first stage of a notice's life):
    a firing, a resolution or a re-notification, with the measurement behind it. The
    evaluator makes it a :class:`~ept.processors.worker.logic.scope_evaluation.DecidedNotice`
    (for a scope, at an instant), published as the topic's ``AlertNotice``."""

    status: str  # "firing" or "resolved"
    value: float
    samples: int
    started_at_ms: int
    resolved_at_ms: int | None
    renotify: bool = False
    detail: str = ""  # what the value was computed from, for the summary
    hits: int = 0  # the failing part of ``samples`` (rates: the bounds are told)
    no_data: str = ""  # told without evidence enough to judge: what is missing
    # told ahead of the frontier (a firing), or withdrawing such a one (a resolution):
    # decided on the events read so far, not yet on every event of its instant
    ahead: bool = False


def verdict(rule: Rule, measurement: Measurement) -> tuple[bool, bool]:
    """(holds, cleared) of ``rule`` on ``measurement``, which has evidence enough.

    A rate holds when its lower bound is above the threshold and is cleared when its
    upper bound is at or below the resolve threshold (:mod:`.evidence`); a count with a
    ``min_rate`` needs its rate above that rate too; a regression needs more than 1 -
    quantile of the window's durations above its level with confidence; a volume drop
    holds below its threshold. In between, neither: an alert stays as it is.
    """
    m = measurement
    if rule.is_ratio:
        low = 100 * lower_bound(m.hits, m.samples, rule.confidence)
        high = 100 * upper_bound(m.hits, m.samples, rule.resolve_confidence)
        return low > rule.threshold, high <= rule.resolve_threshold
    if rule.is_volume_drop:
        return m.value < rule.threshold, m.value >= rule.resolve_threshold
    holds, cleared = m.value > rule.threshold, m.value <= rule.resolve_threshold
    if rule.kind == REGRESSION and rule.confidence:
        # The window's quantile q is above threshold x the baseline's when more than 1 - q
        # of its durations are above that level: with confidence, not by a render or two
        # (5% of renders slow all day is no regression, though its p95 swings between
        # the fast and the slow ones from window to window).
        holds = holds and lower_bound(m.hits, m.samples, rule.confidence) > 1 - rule.quantile
    if rule.min_rate:
        holds = holds and 100 * lower_bound(m.hits, m.samples, rule.confidence) > rule.min_rate
        cleared = cleared or (
            100 * upper_bound(m.hits, m.samples, rule.resolve_confidence) <= rule.min_rate)
    return holds, cleared


def step(rule: Rule, state: AlertState, measurement: Measurement, now_ms: int
         ) -> tuple[AlertState, StateNote | None]:
    """Advance ``state`` given ``measurement`` at event time ``now_ms``.

    Without evidence enough (``measurement.no_data``) the rule's ``no_data`` policy
    decides: a firing alert keeps firing (and says so when it re-notifies), resolves, or
    the rule fires on the silence itself. Absence of events is never read as health.
    """
    m = measurement

    def told(status: str, since_ms: int, renotify: bool = False) -> StateNote:
        return StateNote(status, m.value, m.samples, since_ms,
                            now_ms if status == RESOLVED else None, renotify, m.detail,
                            m.hits, m.no_data)

    if m.no_data:
        holds, cleared = rule.no_data == "alert", rule.no_data == "resolve"
    else:
        holds, cleared = verdict(rule, m)
    if state.status == FIRING:
        if cleared:
            clearing_since = state.clearing_since_ms or now_ms
            if now_ms - clearing_since >= rule.resolve_pending_seconds * 1000:
                return AlertState(), told(RESOLVED, state.started_at_ms)
            state = replace(state, clearing_since_ms=clearing_since)
        elif state.clearing_since_ms:
            state = replace(state, clearing_since_ms=0)
        renotify_ms = rule.renotify_minutes * 60_000
        if renotify_ms and now_ms - state.last_notified_ms >= renotify_ms:
            return replace(state, last_notified_ms=now_ms), told(
                FIRING, state.started_at_ms, renotify=True)
        return state, None
    if not holds:
        return (AlertState(), None) if state.status == PENDING else (state, None)
    since = state.pending_since_ms if state.status == PENDING else now_ms
    if now_ms - since >= rule.pending_seconds * 1000:
        return AlertState(FIRING, since, since, now_ms), told(FIRING, since)
    return AlertState(PENDING, since), None


def fingerprint(rule_name: str, labels: dict[str, str]) -> str:
    """Stable id of an alert: the rule plus its scope labels."""
    canonical = rule_name + "".join(f"|{k}={v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _iso(epoch_ms: int | None) -> str | None:
    if epoch_ms is None:
        return None
    return dt.datetime.fromtimestamp(epoch_ms / 1000, tz=dt.UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def readable(value: float, bound: float) -> str:
    """``value`` with one decimal, or as many more (up to 6) as it takes not to read as
    ``bound`` ("5.0% > 5%" says 5.0005% as "5.0005% > 5%")."""
    for decimals in range(1, 7):
        text = f"{value:.{decimals}f}"
        if value == bound or float(text) != bound:
            return text
    return f"{value:.6f}"


def alert_notice(rule: Rule, labels: dict[str, str], note: StateNote, decided_at_ms: int
                 ) -> AlertNotice:
    """The record published on the alert topic for ``note`` (schema in docs/alerts.md)."""
    scope = ", ".join(f"{k}={v}" for k, v in labels.items()) or "all traffic"
    return AlertNotice(
        fingerprint=fingerprint(rule.name, labels), rule=rule.name, kind=rule.kind,
        status=note.status, severity=rule.severity, labels=dict(labels),
        value=round(note.value, 3), samples=note.samples, threshold=rule.threshold,
        resolve_threshold=rule.resolve_threshold, window=f"{rule.window_minutes}m",
        started_at=_iso(note.started_at_ms), resolved_at=_iso(note.resolved_at_ms),
        summary=summary(rule, scope, note), runbook_url=rule.runbook_url, action=rule.action,
        renotify=note.renotify, decided_at_ms=decided_at_ms, no_data=note.no_data,
        ahead=note.ahead)


_WHAT = {"render_error_rate": "Render error rate", "api_errors": "API errors",
         "slow_render_ratio": "Slow-render ratio", "template_failures": "Template failures",
         "render_volume_drop": "Render volume", "api_volume_drop": "API call volume"}


def summary(rule: Rule, scope: str, note: StateNote) -> str:
    """One line that says what is known and how sure it is, e.g. "Render error rate
    100.0% (15 of 15 renders; >= 78.3% at 99% confidence) > 5% over 15m for all traffic",
    or, without evidence, "... for all traffic: still firing, no data: 0 renders in 15m"."""
    if rule.kind == REGRESSION:
        what = f"Render duration p{rule.quantile * 100:g}"
    else:
        what = _WHAT[rule.kind]
    if note.ahead and note.status == RESOLVED:
        return (f"{what} over {rule.window_minutes}m for {scope}: withdrawn, the late "
                f"events of its instant bring it to {_reading(rule, note)}")
    text = _judged(rule, what, scope, note)
    return f"{text} (told ahead of late events)" if note.ahead else text


def _reading(rule: Rule, note: StateNote) -> str:
    """What a count rule read, e.g. "4 (4 of 90 renders failing)"."""
    if note.no_data:
        return f"no data: {note.no_data}"
    noun = "renders" if rule.kind == "template_failures" else "calls"
    return f"{int(note.value)} ({note.hits} of {note.samples} {noun} failing)"


def _judged(rule: Rule, what: str, scope: str, note: StateNote) -> str:
    if note.no_data:
        state = ("resolved" if note.status == RESOLVED
                 else "still firing" if note.renotify or rule.no_data != "alert" else "firing")
        return f"{what} over {rule.window_minutes}m for {scope}: {state}, no data: {note.no_data}"
    firing = note.status != RESOLVED
    bound = rule.threshold if firing else rule.resolve_threshold
    relation = ("<" if firing else ">=") if rule.is_volume_drop else (">" if firing else "<=")
    where = f"over {rule.window_minutes}m for {scope}"
    if rule.kind == REGRESSION:
        return (f"{what} {readable(note.value, bound)}x its {rule.baseline_days}-day baseline "
                f"({relation} {bound:g}x) {where}: {note.detail}")
    if rule.is_volume_drop:
        return (f"{what} {readable(note.value, bound)}% of its {rule.baseline_days}-day "
                f"baseline ({relation} {bound:g}%) {where}: {note.detail}")
    if rule.is_ratio:
        evidence = _bounds(note, rule.confidence if firing else rule.resolve_confidence,
                           firing, "renders")
        return (f"{what} {readable(note.value, bound)}% ({evidence}) {relation} {bound:g}% "
                f"{where}")
    text = f"{what} {int(note.value)} {relation} {bound:g} {where}"
    if rule.min_rate and firing:  # what made it fire; a resolution is told by its count
        noun = "renders" if rule.kind == "template_failures" else "calls"
        text += f" ({_bounds(note, rule.confidence, True, noun)} failing)"
    return text


def _bounds(note: StateNote, confidence: float, lower: bool, noun: str) -> str:
    """E.g. "15 of 15 renders; >= 78.3% at 99% confidence"."""
    counted = f"{note.hits} of {note.samples} {noun}"
    if not confidence:
        return counted
    if lower:
        bound = f">= {100 * lower_bound(note.hits, note.samples, confidence):.1f}%"
    else:
        bound = f"<= {100 * upper_bound(note.hits, note.samples, confidence):.1f}%"
    return f"{counted}; {bound} at {confidence * 100:g}% confidence"
