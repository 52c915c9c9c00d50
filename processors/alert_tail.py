"""``ept alerts``: follow the alert topic in a readable form."""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import Callable
from typing import Any

import click
from confluent_kafka import Consumer

from deploy.connections import kafka_config
from deploy.settings import Settings

_COLOURS = {"critical": "red", "high": "magenta", "medium": "yellow", "low": "cyan",
            "info": "white"}


def format_alert(alert: dict[str, Any]) -> str:
    """One line: time, status, severity, rule, summary, action."""
    firing = alert.get("status") == "firing"
    status = click.style("FIRING  " if firing else "RESOLVED", fg="red" if firing else "green",
                         bold=True)
    severity = click.style(f"{alert.get('severity', '?'):8}",
                           fg=_COLOURS.get(str(alert.get("severity")), "white"))
    when = alert.get("resolved_at") if not firing else alert.get("started_at")
    action = f"  -> {alert['action']}" if firing and alert.get("action") else ""
    return f"{when}  {status}  {severity} {alert.get('rule')}: {alert.get('summary')}{action}"


def follow_alerts(settings: Settings, on_alert: Callable[[dict[str, Any]], None],
                  stop: threading.Event, from_beginning: bool = False) -> None:
    """Call ``on_alert`` with each alert (a dict) as it arrives, until ``stop`` is set.

    Blocks; reads committed alerts only; skips messages that are not JSON objects.
    """
    consumer = Consumer({**kafka_config(settings), "group.id": f"ept-alerts-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest" if from_beginning else "latest",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    consumer.subscribe([settings.topic("alerts")])
    try:
        while not stop.is_set():
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            try:
                alert = json.loads(message.value() or b"")
            except ValueError:
                continue
            if isinstance(alert, dict):
                on_alert(alert)
    finally:
        consumer.close()


def tail_alerts(settings: Settings, from_beginning: bool = False, as_json: bool = False,
                echo: Callable[[str], None] = click.echo) -> None:
    """Print alerts as they arrive until interrupted. Blocks."""
    with contextlib.suppress(KeyboardInterrupt):
        follow_alerts(settings,
                      lambda alert: echo(json.dumps(alert) if as_json else format_alert(alert)),
                      threading.Event(), from_beginning)
