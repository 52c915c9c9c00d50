"""The template kill switch's pure parts: its record, the rule field, the automatic action,
the worker telling the control before the alert, and `ept templates`' decision to publish."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ept.core import template_controls
from ept.core.settings import Settings
from ept.core.template_controls import (
    DISABLED,
    ENABLED,
    BadTemplateControl,
    StateChange,
    TemplateControl,
    TemplateDisabledError,
    change_state,
    changes_nothing,
)
from ept.processors.worker.evaluate_stage import EvaluateStage, PublishedAlerts, automatic_control
from ept.processors.worker.logic.alert_state import StateNote
from ept.processors.worker.logic.collector import Collector, SourceEvent
from ept.processors.worker.logic.rules import RulesError, parse_rules
from ept.processors.worker.logic.scope_evaluation import DecidedNotice
from ept.processors.worker.logic.scopes import Scope

T0 = 1_700_000_000_000
TEMPLATE_RULE = """
[[rules]]
name = "template_failures"
kind = "template_failures"
scopes = ["template"]
threshold = 3
resolve_threshold = 0
window_minutes = 60
severity = "high"
action = "disable_template"
auto_action = true
"""


def test_a_control_round_trips_and_bad_ones_say_why() -> None:
    control = TemplateControl("tpl_a", DISABLED, "failing", "rule:template_failures", T0, "fp")
    assert TemplateControl.decode(control.encode()) == control
    assert control.disabled
    with pytest.raises(BadTemplateControl, match="state: must be one of disabled, enabled"):
        TemplateControl("tpl_a", "paused", "x", "me", T0)
    with pytest.raises(BadTemplateControl, match="template_id: must not be empty"):
        TemplateControl("", DISABLED, "x", "me", T0)
    with pytest.raises(BadTemplateControl, match="missing fields: by, at_ms"):
        TemplateControl.decode(b'{"template_id": "t", "state": "enabled", "reason": "r"}')
    with pytest.raises(BadTemplateControl, match="not JSON"):
        TemplateControl.decode(b"\x00")
    message = str(TemplateDisabledError(control))
    assert "tpl_a" in message and "ept templates enable tpl_a" in message


def test_auto_action_needs_the_disable_action_and_the_template_scope() -> None:
    assert parse_rules(TEMPLATE_RULE, "f")[0].auto_action
    assert not parse_rules(TEMPLATE_RULE.replace("auto_action = true", ""), "f")[0].auto_action
    with pytest.raises(RulesError, match=r"auto_action.*needs action = 'disable_template'"):
        parse_rules(TEMPLATE_RULE.replace('"disable_template"', '"notify_oncall"'), "f")
    with pytest.raises(RulesError, match="auto_action': must be true or false"):
        parse_rules(TEMPLATE_RULE.replace("auto_action = true", 'auto_action = "yes"'), "f")


def test_only_a_rule_starting_to_fire_for_a_template_disables_it() -> None:
    rule = parse_rules(TEMPLATE_RULE, "f")[0]
    scope = Scope("render", "template_id", "tpl_a")

    def notice(status: str, renotify: bool = False, auto: bool = True,
               scope: Scope = scope) -> DecidedNotice:
        chosen = rule if auto else parse_rules(
            TEMPLATE_RULE.replace("auto_action = true", ""), "f")[0]
        return DecidedNotice(chosen, scope, StateNote(status, 4, 4, T0, None, renotify), T0 + 5)

    control = automatic_control(notice("firing"), "fp", "4 failures")
    assert control == TemplateControl("tpl_a", DISABLED, "4 failures",
                                      "rule:template_failures", T0 + 5, "fp")
    assert automatic_control(notice("firing", renotify=True), "fp", "s") is None
    assert automatic_control(notice("resolved"), "fp", "s") is None
    assert automatic_control(notice("firing", auto=False), "fp", "s") is None


class RecordingTopic:
    """A topic that delivers at once and writes what it was sent into a shared log."""

    def __init__(self, name: str, sent: list[tuple[str, bytes]]) -> None:
        self.name, self.sent = name, sent

    async def send(self, key: bytes, value: bytes) -> asyncio.Future[None]:
        self.sent.append((self.name, key))
        delivered = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return delivered


def test_the_template_is_disabled_before_its_alert_is_told(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setattr(PublishedAlerts, "_read", lambda self: {})  # an empty alert topic
    sent: list[tuple[str, bytes]] = []
    table: dict[str, Any] = {}
    stage = EvaluateStage(Settings(topic_partitions=1), parse_rules(TEMPLATE_RULE, "f"),
                          {"render_failed": 1}, table,
                          RecordingTopic("alerts", sent),  # type: ignore[arg-type]
                          RecordingTopic("controls", sent))  # type: ignore[arg-type]
    collector = Collector(300_000, idle_ms=10_000, dedup_horizon_ms=300_000)
    collector.assign(["render_failed:0"], T0)
    events = [SourceEvent("render_failed", 0, i, T0 + i * 1000,
                          {"event_time": T0 + i * 1000, "event_id": f"e{i}",
                           "template_id": "tpl_a", "reason": "timeout"})
              for i in range(4)]

    async def scenario() -> None:
        for signal in collector.collect(events, T0 + 4_000):
            await stage.handle(0, signal.to_json())
        await stage.handle(0, collector.progress(T0 + 20_000).to_json())

    asyncio.run(scenario())
    # told ahead of the frontier as the 4th failure is read, acted on only once the
    # frontier confirms it: the template is disabled before that firing is told
    assert [name for name, key in sent] == ["alerts", "controls", "alerts"]
    assert sent[1][1] == b"tpl_a"


def control(state: str, by: str = "oncall") -> TemplateControl:
    return TemplateControl("tpl_a", state, "why", by, T0)


@pytest.mark.parametrize(("wanted", "current", "nothing"), [
    (DISABLED, None, False), (ENABLED, None, True),  # never controlled: enabled
    (DISABLED, DISABLED, True), (ENABLED, ENABLED, True),
    (DISABLED, ENABLED, False), (ENABLED, DISABLED, False)])
def test_a_control_changes_nothing_when_the_template_is_in_its_state_already(
        wanted: str, current: str | None, nothing: bool) -> None:
    assert changes_nothing(control(wanted), current and control(current)) is nothing


def test_change_state_publishes_only_a_control_that_changes_something(
        monkeypatch: pytest.MonkeyPatch) -> None:
    topic = [control(DISABLED, "rule:template_failures"),
             TemplateControl("tpl_b", ENABLED, "ok", "oncall", T0)]
    monkeypatch.setattr(template_controls, "read_controls", lambda settings, timeout_s: topic)
    monkeypatch.setattr(template_controls, "publish_control",
                        lambda settings, written: topic.append(written))
    settings = Settings(topic_partitions=1)

    again = change_state(settings, control(DISABLED))
    assert again == StateChange(topic[0], published=False) and len(topic) == 2
    assert change_state(settings, TemplateControl("tpl_c", ENABLED, "r", "me", T0)) == (
        StateChange(None, published=False))
    enabled = change_state(settings, control(ENABLED))
    assert enabled == StateChange(topic[0], published=True)
    assert topic[2:] == [control(ENABLED)]
