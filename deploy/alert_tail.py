"""``ept alerts``: follow the alert topic in a readable form."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

import click

from ept.core.settings import Settings
from ept.processors.alerts.topic import FIRING, AlertNotice, read_alerts

_COLOURS = {"critical": "red", "high": "magenta", "medium": "yellow", "low": "cyan",
            "info": "white"}


def format_alert(alert: AlertNotice) -> str:
    """One line: time, status, severity, rule, summary, action."""
    firing = alert.status == FIRING
    status = click.style("FIRING  " if firing else "RESOLVED", fg="red" if firing else "green",
                         bold=True)
    severity = click.style(f"{alert.severity:8}", fg=_COLOURS.get(alert.severity, "white"))
    when = alert.started_at if firing else alert.resolved_at
    action = f"  -> {alert.action}" if firing and alert.action else ""
    return f"{when}  {status}  {severity} {alert.rule}: {alert.summary}{action}"


def tail_alerts(settings: Settings, from_beginning: bool = False, as_json: bool = False,
                echo: Callable[[str], None] = click.echo) -> None:
    """Print alerts as they arrive until interrupted. Blocks."""
    with contextlib.suppress(KeyboardInterrupt):
        read_alerts(settings, lambda alert: echo(
            json.dumps(alert.to_json()) if as_json else format_alert(alert)),
            from_beginning=from_beginning)
