"""Alerts delivered through a real Alertmanager to a webhook receiver.

The notifier (``ept notify``'s loop) follows the alert topic on the real broker and posts
to an Alertmanager v0.35 process; the receiver is an HTTP server of this test.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Producer

from ept.core.kafka import ensure_topics
from ept.core.settings import Settings
from ept.deploy.local_alertmanager import INSTALL_HINT, LocalAlertmanager, find_binary
from ept.processors.alerts.notifier import Notifier
from ept.processors.alerts.topic import FIRING, RESOLVED, AlertNotice
from ept.processors.worker.logic.alert_state import fingerprint
from tests.conftest import free_port


class Webhook:
    """A receiver of Alertmanager's webhook notifications."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with webhook._changed:
                    webhook.received.append(body)
                    webhook._changed.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert of every notification so far, in order."""
        with self._changed:
            return [alert for body in self.received for alert in body["alerts"]]

    def wait_for(self, found: Callable[[list[dict[str, Any]]], bool],
                 timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not found(self.alerts()):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"webhook got {self.alerts()}")
                self._changed.wait(left)
        return self.alerts()

    def close(self) -> None:
        self._server.shutdown()


CONFIG = """
route:
  receiver: webhook
  group_by: [alertname, template_id, endpoint]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: webhook
    webhook_configs:
      - url: {url}
        send_resolved: true
"""


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    receiver = Webhook()
    yield receiver
    receiver.close()


@pytest.fixture
def alertmanager(tmp_path: Path, webhook: Webhook) -> Iterator[LocalAlertmanager]:
    assert find_binary() is not None, f"no Alertmanager binary: {INSTALL_HINT}"
    config = tmp_path / "alertmanager.yml"
    config.write_text(CONFIG.format(url=webhook.url))
    running = LocalAlertmanager(tmp_path / "alertmanager", config, free_port())
    running.start()
    yield running
    running.stop()


@pytest.fixture
def notifying(settings: Settings, alertmanager: LocalAlertmanager) -> Iterator[Notifier]:
    """A notifier following the test's alert topic, re-sending firing alerts every 2 s."""
    notify_settings = settings.replace(alertmanager_urls=alertmanager.url,
                                       alertmanager_resend_s=2)
    ensure_topics(notify_settings)
    notifier = Notifier(notify_settings)
    stop = threading.Event()
    thread = threading.Thread(target=notifier.run, args=(stop, False), daemon=True)
    thread.start()
    yield notifier
    stop.set()
    thread.join(30)


def notice(rule: str, status: str, step: int, **labels: str) -> AlertNotice:
    """A notice decided ``step`` seconds after the test began (the notifier does not post
    a resolution older than an hour)."""
    started = "2026-12-01T10:00:00.000Z"
    return AlertNotice(
        fingerprint=fingerprint(rule, labels), rule=rule, kind="template_failures",
        status=status, severity="high", labels=labels, value=5.0, samples=5, threshold=3.0,
        resolve_threshold=0.0, window="60m", started_at=started,
        resolved_at="2026-12-01T11:00:00.000Z" if status == RESOLVED else None,
        summary=f"Template failures 5 > 3 over 60m for {labels}",
        runbook_url="https://runbooks/template-failures.md", action="disable_template",
        decided_at_ms=BEGAN_MS + step * 1000)


BEGAN_MS = int(time.time() * 1000)


def publish(settings: Settings, *notices: AlertNotice) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for item in notices:
        producer.produce(settings.topics.alerts, item.encode(), item.fingerprint.encode())
    assert producer.flush(30) == 0


def statuses(alerts: list[dict[str, Any]], template: str) -> list[str]:
    return [a["status"] for a in alerts if a["labels"].get("template_id") == template]


def test_a_webhook_gets_the_firing_then_the_resolved_notification(
        settings: Settings, notifying: Notifier, webhook: Webhook) -> None:
    publish(settings, notice("template_failures", FIRING, 1, template_id="tpl_x"))
    alerts = webhook.wait_for(lambda found: FIRING in statuses(found, "tpl_x"))
    firing = alerts[-1]
    assert firing["labels"] == {"alertname": "template_failures", "severity": "high",
                                "service": "ept", "template_id": "tpl_x"}
    assert firing["annotations"]["action"] == "disable_template"
    assert firing["annotations"]["runbook_url"] == "https://runbooks/template-failures.md"
    assert firing["annotations"]["summary"].startswith("Template failures 5 > 3")
    assert firing["startsAt"].startswith("2026-12-01T10:00:00")
    assert firing["generatorURL"] == settings.dashboard_url
    publish(settings, notice("template_failures", RESOLVED, 2, template_id="tpl_x"))
    alerts = webhook.wait_for(lambda found: RESOLVED in statuses(found, "tpl_x"))
    assert statuses(alerts, "tpl_x") == [FIRING, RESOLVED]


def eventually(holds: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Until ``holds()``; fails naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not holds():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(0.2)


def held_states(alertmanager: LocalAlertmanager, template: str) -> list[str]:
    """The state Alertmanager holds ``template``'s alert in (active, suppressed)."""
    with urllib.request.urlopen(f"{alertmanager.url}/api/v2/alerts", timeout=10) as reply:
        held = json.loads(reply.read())
    return [a["status"]["state"] for a in held if a["labels"].get("template_id") == template]


def test_a_silence_suppresses_the_notification(settings: Settings, notifying: Notifier,
                                               webhook: Webhook,
                                               alertmanager: LocalAlertmanager) -> None:
    silence = {"matchers": [{"name": "template_id", "value": "tpl_silenced", "isRegex": False,
                             "isEqual": True}],
               "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z",
               "createdBy": "test", "comment": "known, being fixed"}
    request = urllib.request.Request(f"{alertmanager.url}/api/v2/silences",
                                     data=json.dumps(silence).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 200
    publish(settings, notice("template_failures", FIRING, 1, template_id="tpl_silenced"),
            notice("template_failures", FIRING, 1, template_id="tpl_loud"))
    webhook.wait_for(lambda found: FIRING in statuses(found, "tpl_loud"))
    eventually(lambda: held_states(alertmanager, "tpl_silenced") == ["suppressed"],
               "Alertmanager holds tpl_silenced as suppressed")
    # One more alert, posted after Alertmanager held the silenced one: by its notification
    # the silenced one's group has been flushed (or would have been) too.
    publish(settings, notice("template_failures", FIRING, 1, template_id="tpl_later"))
    alerts = webhook.wait_for(lambda found: FIRING in statuses(found, "tpl_later"))
    assert statuses(alerts, "tpl_silenced") == []
    assert statuses(alerts, "tpl_loud") == [FIRING]


def test_an_alertmanager_down_or_restarted_mid_incident_still_delivers(
        settings: Settings, notifying: Notifier, webhook: Webhook,
        alertmanager: LocalAlertmanager) -> None:
    # Down when the incident starts: the post fails, is counted, and retried with backoff.
    alertmanager.stop()
    publish(settings, notice("template_failures", FIRING, 1, template_id="tpl_r"))
    failed = {"alertmanager": f"http://127.0.0.1:{alertmanager.port}", "outcome": "error"}
    eventually(lambda: bool(notifying.metrics.registry.get_sample_value(
        "ept_notifier_posts_total", failed)), "a failed post is counted")
    alertmanager.start()
    webhook.wait_for(lambda found: FIRING in statuses(found, "tpl_r"))
    # Restarted (its alerts are held in memory only): the re-sent firing alert is held again.
    alertmanager.stop()
    alertmanager.start()
    eventually(lambda: held_states(alertmanager, "tpl_r") == ["active"],
               "Alertmanager holds tpl_r as active again")
    publish(settings, notice("template_failures", RESOLVED, 2, template_id="tpl_r"))
    alerts = webhook.wait_for(lambda found: RESOLVED in statuses(found, "tpl_r"))
    # Alertmanager itself may notify the firing alert again after a restart (its
    # notification log is saved periodically); nothing is lost, the resolution comes last.
    told = statuses(alerts, "tpl_r")
    assert told[0] == FIRING and told[-1] == RESOLVED and set(told) == {FIRING, RESOLVED}


def test_a_firing_told_ahead_then_withdrawn_resolves_in_alertmanager(
        settings: Settings, notifying: Notifier, webhook: Webhook,
        alertmanager: LocalAlertmanager) -> None:
    """A count told firing ahead of the frontier that late events undid (docs/alerts.md,
    firing ahead): the withdrawal, a resolved notice of the same instant, resolves it; one
    confirmed by the frontier's notice of that instant stays firing, notified once."""
    told = notice("template_failures", FIRING, 1, template_id="tpl_withdrawn")
    publish(settings, replace(told, ahead=True),
            replace(notice("template_failures", FIRING, 1, template_id="tpl_confirmed"),
                    ahead=True))
    webhook.wait_for(lambda found: FIRING in statuses(found, "tpl_withdrawn")
                     and FIRING in statuses(found, "tpl_confirmed"))
    withdrawn = replace(notice("template_failures", RESOLVED, 1, template_id="tpl_withdrawn"),
                        ahead=True, summary="Template failures over 60m: withdrawn")
    publish(settings, withdrawn,
            notice("template_failures", FIRING, 1, template_id="tpl_confirmed"))
    alerts = webhook.wait_for(lambda found: RESOLVED in statuses(found, "tpl_withdrawn"))
    assert statuses(alerts, "tpl_withdrawn") == [FIRING, RESOLVED]
    eventually(lambda: held_states(alertmanager, "tpl_withdrawn") == []
               and held_states(alertmanager, "tpl_confirmed") == ["active"],
               "Alertmanager holds only tpl_confirmed, as active")
    # The frontier's firing of the same instant is the alert already held: no new message.
    assert statuses(webhook.alerts(), "tpl_confirmed") == [FIRING]


def test_the_example_routing_tree_is_accepted_by_alertmanager(tmp_path: Path) -> None:
    """deploy/alertmanager/alertmanager.yml loads: Alertmanager refuses to start on an
    invalid file."""
    example = Path(__file__).resolve().parents[2] / "deploy/alertmanager/alertmanager.yml"
    running = LocalAlertmanager(tmp_path / "am", example, free_port())
    running.start()
    try:
        with urllib.request.urlopen(f"{running.url}/api/v2/status", timeout=10) as reply:
            status = json.loads(reply.read())
    finally:
        running.stop()
    assert "receiver: pagerduty" in status["config"]["original"]


def test_a_storm_through_the_example_routing_is_one_page_and_at_most_one_message(
        settings: Settings, tmp_path: Path, webhook: Webhook) -> None:
    """The example routing (deploy/alertmanager/alertmanager.yml, its receivers pointed at
    this test's webhook). 300 failing templates are one message listing them, not 300.
    Then the critical page for all traffic and 300 more templates of another rule, as the
    worker publishes a storm (broadest first): one page, the templates inhibited by it."""
    example = Path(__file__).resolve().parents[2] / "deploy/alertmanager/alertmanager.yml"
    config = yaml.safe_load(example.read_text())
    config.pop("global", None)
    config["receivers"] = [{"name": receiver["name"], "webhook_configs": [
        {"url": f"{webhook.url}{receiver['name']}", "send_resolved": True}]}
        for receiver in config["receivers"]]
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    running = LocalAlertmanager(tmp_path / "am", path, free_port())
    running.start()
    notify_settings = settings.replace(alertmanager_urls=running.url, alertmanager_resend_s=2)
    ensure_topics(notify_settings)
    notifier = Notifier(notify_settings)
    stop = threading.Event()
    thread = threading.Thread(target=notifier.run, args=(stop, False), daemon=True)
    thread.start()

    def messages() -> list[tuple[str, int]]:
        return [(body["receiver"], len(body["alerts"])) for body in webhook.received]

    try:
        publish(notify_settings, *(notice("template_failures", FIRING, 1,
                                          template_id=f"tpl_{n:03d}") for n in range(300)))
        # The notices started firing before the group's group_wait, so Alertmanager tells
        # the group at once: what the notifier posted by then, the rest at group_interval.
        eventually(lambda: len(held_states(running, "tpl_299")) == 1, "all alerts held")
        # Told as the group was created, on its own schedule: held is not yet received.
        webhook.wait_for(lambda found: bool(found))
        assert [receiver for receiver, _ in messages()] == ["slack"], messages()
        page = replace(notice("high_error_rate", FIRING, 2), severity="critical",
                       kind="render_error_rate", fingerprint=fingerprint("high_error_rate", {}))
        regressions = [replace(notice("duration_regression", FIRING, 2, template_id=f"r_{n:03d}"),
                               severity="medium", kind="duration_regression")
                       for n in range(300)]
        publish(notify_settings, page, *regressions)
        webhook.wait_for(lambda found: any(a["labels"]["alertname"] == "high_error_rate"
                                           for a in found))
        eventually(lambda: held_states(running, "r_299") == ["suppressed"],
                   "the templates inhibited by the page")
        # Nothing more may come: wait out the template group's group_wait (30 s), in
        # which its notification would have gone.
        time.sleep(35)
    finally:
        stop.set()
        thread.join(30)
        running.stop()
    assert [m for m in messages() if m[0] != "slack"] == [("pagerduty", 1)], messages()
