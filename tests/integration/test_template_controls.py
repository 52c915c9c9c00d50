"""The template kill switch end to end on the real broker: a rule with ``auto_action``
disables a failing template as its alert fires, a render service (another process, using
the SDK) refuses the template within 2 s, ``ept templates`` re-enables it, and a restarted
service keeps the state."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ept.core.kafka import ensure_topics
from ept.core.settings import Settings
from ept.core.template_controls import TemplateControl
from tests.events import BASE_MS, EventPublisher, record
from tests.helpers import read_topics
from tests.worker_process import REPO, Worker

RULES = """
[[rules]]
name = "template_failures"
kind = "template_failures"
scopes = ["template"]
threshold = 3
resolve_threshold = 0
window_minutes = 60
no_data = "resolve"  # as the default rule: a template no longer rendered stops failing
severity = "high"
action = "disable_template"
auto_action = true
"""

# A render service: reports each change of the template's state, with the outcome of a
# render that enforces template controls, as one JSON line.
SERVICE = """
import json, sys, time
import ept

template = sys.argv[1]
print(json.dumps({"loaded": ept.wait_for_template_controls(30)}), flush=True)
last = None
while True:
    enabled = ept.is_template_enabled(template)
    if enabled != last:
        seen = time.time()
        try:
            with ept.measure_render_performance(template_id=template,
                                                enforce_template_controls=True):
                outcome = "rendered"
        except ept.TemplateDisabledError as refusal:
            outcome = f"refused: {refusal}"
        print(json.dumps({"enabled": enabled, "seen": seen, "outcome": outcome,
                          "refused": ept.get_error_performance_stats().renders_refused}),
              flush=True)
        last = enabled
    time.sleep(0.01)
"""


class RenderService:
    """The service above in its own process."""

    def __init__(self, environment: dict[str, str], template: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", SERVICE, template],
                                        env=environment, cwd=REPO, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)
        assert self.next_line(60) == {"loaded": True}

    def next_line(self, timeout: float = 30.0) -> dict[str, Any]:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line:
                return dict(json.loads(line))
            assert self.process.poll() is None, "render service exited"
        raise AssertionError("render service said nothing")

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(30)


def controls(settings: Settings) -> list[tuple[TemplateControl, float]]:
    """Every control on the topic, with the broker's timestamp (s)."""
    return [(TemplateControl.decode(m.value()), (m.timestamp()[1]) / 1000)
            for m in read_topics(settings.kafka_bootstrap, [settings.topics.template_controls],
                                 timeout=10, idle=1.0)]


def ept_cli(environment: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "ept.deploy.cli", *args], env=environment,
                            cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def environment(settings: Settings, tmp_path: Path) -> Iterator[dict[str, str]]:
    ensure_topics(settings)
    yield {**os.environ, "EPT_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
           "EPT_TOPIC_PREFIX": settings.topic_prefix,
           "EPT_STATE_DIR": str(tmp_path / "state")}


def test_a_failing_template_is_disabled_refused_and_enabled_again(
        settings: Settings, environment: dict[str, str], tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    worker = Worker(settings, tmp_path / "worker.log", EPT_RULES_FILE=str(rules))
    service = RenderService(environment, "tpl_kill")
    try:
        assert service.next_line() == {"enabled": True, "seen": pytest.approx(time.time(), abs=60),
                                       "outcome": "rendered", "refused": 0}
        EventPublisher(settings).publish(
            ("render_failed", record("render_failed", BASE_MS + i * 1000,
                                     template_id="tpl_kill")) for i in range(4))

        refused = service.next_line(120)
        assert refused["enabled"] is False and refused["refused"] == 1
        assert "tpl_kill" in refused["outcome"] and refused["outcome"].startswith("refused")
        # the alert fired, and the control that disabled the template names it; the
        # control was told first, at the alert's own decision time
        alerts = [json.loads(m.value()) for m in read_topics(
            settings.kafka_bootstrap, [settings.topics.alerts], timeout=10, idle=1.0)]
        firing = [a for a in alerts if a["status"] == "firing" and not a["ahead"]]
        assert [a["labels"] for a in firing] == [{"template_id": "tpl_kill"}]
        (disabled, written_at), = controls(settings)
        assert (disabled.template_id, disabled.state, disabled.by) == (
            "tpl_kill", "disabled", "rule:template_failures")
        assert disabled.alert_fingerprint == firing[0]["fingerprint"]
        assert disabled.at_ms == firing[0]["decided_at_ms"]
        assert refused["seen"] - written_at < 2.0  # the service saw it within 2 s
        print(f"\nkill switch: disabled seen by the service {refused['seen'] - written_at:.2f} s "
              "after the broker stamped it")

        assert "tpl_kill  disabled  by rule:template_failures" in ept_cli(
            environment, "templates", "list")
        assert ept_cli(environment, "templates", "enable", "tpl_kill",
                       "--by", "oncall") == "tpl_kill enabled\n"
        enabled = service.next_line()
        assert (enabled["enabled"], enabled["outcome"]) == (True, "rendered")
        enabled_after = enabled["seen"] - controls(settings)[-1][1]
        assert enabled_after < 2.0
        print(f"kill switch: re-enable seen after {enabled_after:.2f} s")
        assert "no template is disabled" in ept_cli(environment, "templates", "list")

        assert ept_cli(environment, "templates", "disable", "tpl_kill", "--reason",
                       "still broken") == "tpl_kill disabled\n"
        assert service.next_line()["enabled"] is False
        # the alert still fires, but only its start disabled the template
        assert [(c.state, c.by) for c, _ in controls(settings)] == [
            ("disabled", "rule:template_failures"), ("enabled", "oncall"),
            ("disabled", getpass.getuser())]
    finally:
        service.stop()
        worker.stop()
    restarted = RenderService(environment, "tpl_kill")
    try:
        state = restarted.next_line()
        assert (state["enabled"], state["refused"]) == (False, 1)
        assert "still broken" in state["outcome"]
    finally:
        restarted.stop()


def test_bad_template_commands_say_what_is_wrong(environment: dict[str, str]) -> None:
    result = subprocess.run([sys.executable, "-m", "ept.deploy.cli", "templates", "disable",
                             "tpl_x"], env=environment, cwd=REPO, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 2 and "--reason" in result.stderr
    assert ept_cli(environment, "templates", "enable", "tpl_never") == "tpl_never is not disabled\n"
    assert ept_cli(environment, "templates", "disable", "tpl_twice", "--reason", "r") == (
        "tpl_twice disabled\n")
    assert "tpl_twice is already disabled" in ept_cli(environment, "templates", "disable",
                                                      "tpl_twice", "--reason", "r")
