"""Prometheus Alertmanager's API v2, as ept speaks it: the alert it posts for a notice of
the alert topic, and the POST itself.

Labels identify an alert in Alertmanager (its grouping, silences and inhibition match
them): ``alertname`` (the rule), ``severity``, ``service="ept"`` and the scope labels
(``template_id``, ``endpoint``, ``render_type``). Annotations carry the rest.

A firing alert is posted with ``endsAt`` a few re-send intervals ahead, as Prometheus does:
re-sent before then it stays firing; if ept stops sending, Alertmanager resolves it
itself. A resolved notice is posted with ``endsAt`` at its resolution time.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from ept.processors.alerts.topic import RESOLVED, AlertNotice

HOLD_RESENDS = 4  # a firing alert holds this many re-send intervals without news


class DeliveryError(RuntimeError):
    """Alertmanager did not take the alerts; the message says why (never credentials)."""


def iso(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, tz=dt.UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def alert_of(notice: AlertNotice, now_s: float, resend_s: float, generator_url: str
             ) -> dict[str, Any]:
    """The API v2 alert (``postableAlert``) for ``notice``, sent at ``now_s``."""
    # percent for rates, ratios and volumes, a factor of its baseline for a regression
    unit = {"duration_regression": "x"}.get(
        notice.kind, "%" if notice.kind.endswith(("rate", "ratio", "drop")) else "")
    below = notice.kind.endswith("_drop")  # a drop fires below its threshold
    description = (f"{notice.kind} = {notice.value:g}{unit} over {notice.window} "
                   f"({notice.samples} samples; fires {'below' if below else 'above'} "
                   f"{notice.threshold:g}{unit}, resolves at or "
                   f"{'above' if below else 'below'} {notice.resolve_threshold:g}{unit})")
    annotations = {"summary": notice.summary, "description": description,
                   "runbook_url": notice.runbook_url, "action": notice.action,
                   "value": f"{notice.value:g}"}
    if notice.no_data:
        annotations["no_data"] = notice.no_data
        annotations["description"] = f"no data: {notice.no_data} (the last verdict stands)"
    alert: dict[str, Any] = {
        "labels": {**notice.labels, "alertname": notice.rule, "severity": notice.severity,
                   "service": "ept"},
        "annotations": annotations,
        "generatorURL": generator_url,
    }
    if notice.started_at:
        alert["startsAt"] = notice.started_at
    if notice.status == RESOLVED:
        alert["endsAt"] = notice.resolved_at or iso(now_s)
    else:
        alert["endsAt"] = iso(now_s + HOLD_RESENDS * resend_s)
    return alert


def where(url: str) -> str:
    """``url`` without credentials, path or query: what logs and metrics may show."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{parts.hostname}:{port}"


def post_alerts(url: str, alerts: list[dict[str, Any]], timeout_s: float = 5.0) -> None:
    """POST ``alerts`` to ``url``'s ``/api/v2/alerts``. Blocks up to ``timeout_s``.

    Raises DeliveryError when Alertmanager cannot be reached or refuses them.
    """
    request = urllib.request.Request(
        url.rstrip("/") + "/api/v2/alerts", data=json.dumps(alerts).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            reply.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode(errors="replace").strip()
        raise DeliveryError(f"{where(url)} refused the alerts: HTTP {exc.code} {detail}"
                            ) from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"{where(url)} unreachable: {reason}") from None
