"""The alert lifecycle of one rule for one scope: inactive -> pending -> firing -> resolved.

Pure logic: :func:`step` takes the current state and the measured value at an event
time and returns the new state and, when something must be told, the notification.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import asdict, dataclass, replace
from typing import Any

from ept.processors.alert_topic import AlertNotice
from ept.processors.rules import REGRESSION, Rule

INACTIVE, PENDING, FIRING = "inactive", "pending", "firing"


@dataclass(frozen=True)
class AlertState:
    status: str = INACTIVE
    pending_since_ms: int = 0
    started_at_ms: int = 0
    last_notified_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> AlertState:
        return cls(**data) if data else cls()


@dataclass(frozen=True)
class Notification:
    status: str  # "firing" or "resolved"
    value: float
    samples: int
    started_at_ms: int
    resolved_at_ms: int | None
    renotify: bool = False
    detail: str = ""  # what the value was computed from, for the summary


def step(rule: Rule, state: AlertState, value: float, samples: int, now_ms: int,
         detail: str = "") -> tuple[AlertState, Notification | None]:
    """Advance ``state`` given ``value`` over ``samples`` at event time ``now_ms``
    (``detail`` is passed on to the notification)."""
    enough = samples > 0 and samples >= rule.min_samples
    holds = enough and value > rule.threshold
    cleared = not enough or value <= rule.resolve_threshold
    if state.status == FIRING:
        if cleared:
            return AlertState(), Notification("resolved", value, samples, state.started_at_ms,
                                              now_ms, detail=detail)
        renotify_ms = rule.renotify_minutes * 60_000
        if renotify_ms and now_ms - state.last_notified_ms >= renotify_ms:
            return replace(state, last_notified_ms=now_ms), Notification(
                "firing", value, samples, state.started_at_ms, None, renotify=True,
                detail=detail)
        return state, None
    if not holds:
        return (AlertState(), None) if state.status == PENDING else (state, None)
    since = state.pending_since_ms if state.status == PENDING else now_ms
    if now_ms - since >= rule.pending_seconds * 1000:
        firing = AlertState(FIRING, since, since, now_ms)
        return firing, Notification("firing", value, samples, since, None, detail=detail)
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


def alert_notice(rule: Rule, labels: dict[str, str], note: Notification, decided_at_ms: int
                 ) -> AlertNotice:
    """The record published on the alert topic for ``note`` (schema in docs/alerts.md)."""
    scope = ", ".join(f"{k}={v}" for k, v in labels.items()) or "all traffic"
    summary = (_regression_summary(rule, scope, note) if rule.kind == REGRESSION
               else _summary(rule, scope, note))
    return AlertNotice(
        fingerprint=fingerprint(rule.name, labels), rule=rule.name, kind=rule.kind,
        status=note.status, severity=rule.severity, labels=dict(labels),
        value=round(note.value, 3), samples=note.samples, threshold=rule.threshold,
        resolve_threshold=rule.resolve_threshold, window=f"{rule.window_minutes}m",
        started_at=_iso(note.started_at_ms), resolved_at=_iso(note.resolved_at_ms),
        summary=summary, runbook_url=rule.runbook_url, action=rule.action,
        renotify=note.renotify, decided_at_ms=decided_at_ms)


def _regression_summary(rule: Rule, scope: str, note: Notification) -> str:
    """E.g. "Render duration p95 2.04x its 7-day baseline (> 1.5x) over 60m for
    render_type=video: p95 3.2 s vs 1.6 s, p50 1.1 s vs 1.0 s"."""
    what = f"Render duration p{rule.quantile * 100:g}"
    baseline = f"its {rule.baseline_days}-day baseline"
    if note.status == "resolved" and note.samples == 0:
        return f"{what} over {rule.window_minutes}m for {scope}: resolved, {note.detail}"
    if note.status == "resolved" and note.value > rule.resolve_threshold:
        return (f"{what} over {rule.window_minutes}m for {scope}: resolved, "
                f"{note.samples} samples < min_samples {rule.min_samples}")
    bound = rule.threshold if note.status != "resolved" else rule.resolve_threshold
    relation = ">" if note.status != "resolved" else "<="
    return (f"{what} {readable(note.value, bound)}x {baseline} ({relation} {bound:g}x) "
            f"over {rule.window_minutes}m for {scope}: {note.detail}")


def _summary(rule: Rule, scope: str, note: Notification) -> str:
    unit = "%" if rule.is_ratio else ""
    what = {"render_error_rate": "Render error rate", "api_errors": "API errors",
            "slow_render_ratio": "Slow-render ratio",
            "template_failures": "Template failures"}[rule.kind]
    bound = rule.threshold if note.status != "resolved" else rule.resolve_threshold
    value = f"{readable(note.value, bound)}{unit}" if rule.is_ratio else f"{int(note.value)}"
    threshold = f"{rule.threshold:g}{unit}"
    verb = "resolved" if note.status == "resolved" else "above"
    summary = (f"{what} {value} {'>' if verb == 'above' else '<='} "
               f"{threshold if verb == 'above' else f'{rule.resolve_threshold:g}{unit}'} "
               f"over {rule.window_minutes}m for {scope}")
    if note.status == "resolved" and note.value > rule.resolve_threshold:
        # Cleared for want of samples, not by the value (see step()).
        summary = (f"{what} {value} over {rule.window_minutes}m for {scope}: resolved, "
                   f"{note.samples} samples < min_samples {rule.min_samples}")
    return summary
