import json
from pathlib import Path

import pytest

from ept.processors.alerting import (
    FIRING,
    INACTIVE,
    PENDING,
    AlertState,
    alert_notice,
    fingerprint,
    step,
)
from ept.processors.records import ScopeState
from ept.processors.rules import RulesError, load_rules, parse_rules
from ept.processors.signals import Scope, measure, signals_of

RULE = """
[[rules]]
name = "r"
kind = "api_errors"
scopes = ["endpoint"]
threshold = 10
resolve_threshold = 8
window_minutes = 5
severity = "high"
"""


def test_default_rules_are_the_specifications_four() -> None:
    rules = {rule.name: rule for rule in load_rules(None)}
    assert (rules["high_error_rate"].threshold, rules["high_error_rate"].window_minutes,
            rules["high_error_rate"].severity) == (5.0, 15, "critical")
    assert (rules["api_degradation"].threshold, rules["api_degradation"].window_minutes,
            rules["api_degradation"].severity) == (10, 5, "high")
    assert (rules["performance_degradation"].threshold,
            rules["performance_degradation"].window_minutes,
            rules["performance_degradation"].severity) == (50.0, 30, "medium")
    assert (rules["template_failures"].threshold, rules["template_failures"].action,
            rules["template_failures"].severity) == (3, "disable_template", "high")


@pytest.mark.parametrize(("line", "replacement", "message"), [
    ("threshold = 10", "", "rule 'r': field 'threshold': is required"),
    ('kind = "api_errors"', "", "rule 'r': field 'kind': is required"),
    ("threshold = 10", 'threshold = "ten"',
     "rule 'r': field 'threshold': must be an integer or a number, got 'ten'"),
    ('severity = "high"', 'severity = "high"\nsevere = 1', "rule 'r': field 'severe': unknown"),
    ('scopes = ["endpoint"]', 'scopes = ["template"]',
     "rule 'r': field 'scopes': 'template' is not a scope of api_errors"),
    ('kind = "api_errors"', 'kind = "cpu"', "rule 'r': field 'kind': must be one of"),
    ("window_minutes = 5", "window_minutes = 0", "rule 'r': field 'window_minutes': must be"),
    ('severity = "high"', 'severity = "urgent"', "rule 'r': field 'severity': must be one of"),
])
def test_invalid_rules_name_the_rule_and_field(line: str, replacement: str, message: str,
                                               tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(RULE.replace(line, replacement))
    with pytest.raises(RulesError, match=message) as raised:
        load_rules(path)
    assert str(path) in str(raised.value)


def test_a_valid_rules_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(RULE)
    [rule] = load_rules(path)
    assert (rule.name, rule.scopes, rule.resolve_threshold) == ("r", ("endpoint",), 8.0)
    assert rule.runbook_url.endswith("/r.md")


def test_resolve_above_threshold_and_bad_toml_are_rejected() -> None:
    with pytest.raises(RulesError, match="resolve_threshold': must be <= threshold"):
        parse_rules(RULE.replace("resolve_threshold = 8", "resolve_threshold = 12"), "f")
    with pytest.raises(RulesError, match="f: not valid TOML"):
        parse_rules("[[rules]\nname=", "f")
    with pytest.raises(RulesError, match="unique"):
        parse_rules(RULE + RULE, "f")


def test_lifecycle_with_pending_hysteresis_and_renotify() -> None:
    [rule] = parse_rules(RULE.replace('severity = "high"', 'severity = "high"\n'
                                      'pending_seconds = 60\nrenotify_minutes = 10'), "f")
    state = AlertState()
    state, note = step(rule, state, 11, 11, 0)
    assert state.status == PENDING and note is None
    state, note = step(rule, state, 12, 12, 30_000)
    assert state.status == PENDING and note is None
    state, note = step(rule, state, 12, 12, 60_000)
    assert state.status == FIRING and note is not None and note.status == "firing"
    assert note.started_at_ms == 0
    state, note = step(rule, state, 9, 9, 90_000)  # between resolve and fire: still firing
    assert state.status == FIRING and note is None
    state, note = step(rule, state, 9, 9, 60_000 + 10 * 60_000)
    assert note is not None and note.renotify and note.status == "firing"
    state, note = step(rule, state, 8, 8, 800_000)
    assert state.status == INACTIVE and note is not None and note.status == "resolved"
    assert note.resolved_at_ms == 800_000


def test_min_samples_blocks_tiny_ratios() -> None:
    rules = {rule.name: rule for rule in load_rules(None)}
    state, note = step(rules["high_error_rate"], AlertState(), 100.0, 1, 0)
    assert note is None and state.status == INACTIVE


def test_a_resolution_for_want_of_samples_says_so() -> None:
    rule = {rule.name: rule for rule in load_rules(None)}["high_error_rate"]
    firing, _ = step(rule, AlertState(), 10.0, 100, 0)
    _, by_value = step(rule, firing, 3.0, 100, 60_000)
    _, by_samples = step(rule, firing, 23.5, 17, 60_000)
    assert by_value is not None and by_samples is not None
    assert alert_notice(rule, {}, by_value, 0).summary == (
        "Render error rate 3.0% <= 4% over 15m for all traffic")
    assert alert_notice(rule, {}, by_samples, 0).summary == (
        f"Render error rate 23.5% over 15m for all traffic: resolved, 17 samples < "
        f"min_samples {rule.min_samples}")


def test_alert_notice_fields_and_stable_fingerprint() -> None:
    rules = {rule.name: rule for rule in load_rules(None)}
    _, note = step(rules["template_failures"], AlertState(), 4, 4, 1_700_000_000_000)
    assert note is not None
    message = alert_notice(rules["template_failures"], {"template_id": "t1"}, note, 0).to_json()
    assert message["fingerprint"] == fingerprint("template_failures", {"template_id": "t1"})
    assert message["fingerprint"] != fingerprint("template_failures", {"template_id": "t2"})
    assert {"fingerprint", "rule", "status", "severity", "labels", "value", "threshold",
            "window", "started_at", "resolved_at", "summary", "runbook_url", "action"} <= set(
        message)
    assert message["started_at"] == "2023-11-14T22:13:20.000Z"
    assert message["summary"] == "Template failures 4 > 3 over 60m for template_id=t1"


def test_scope_state_round_trips_through_json() -> None:
    state = ScopeState({100: {"failed": 2}, 161: {"completed": 1}},
                       {"template_failures": AlertState("firing", 1, 1, 2)}, 160, {"x:0": 7})
    assert ScopeState.from_json(json.loads(json.dumps(state.to_json()))) == state


def test_signals_and_measures() -> None:
    scopes = signals_of("render_completed", {"template_id": "t", "render_type": "video",
                                             "duration_ms": 10.0})
    assert (Scope("render", "template_id", "t"), "completed") in scopes
    assert (Scope("slow", "render_type", "video"), "renders") in scopes
    assert Scope.parse(Scope("api", "endpoint", "/a|b").key) == Scope("api", "endpoint", "/a|b")
    assert measure("render_error_rate", {"failed": 1, "completed": 3}) == (25.0, 4)
    assert measure("slow_render_ratio", {"slow": 6, "renders": 10}) == (60.0, 10)
    # a slow_render published without its render_completed is a render too: <= 100%
    assert measure("slow_render_ratio", {"slow": 6, "renders": 2}) == (100.0, 6)
    assert measure("api_errors", {"errors": 11, "requests": 5}) == (11.0, 16)
    assert measure("template_failures", {"failed": 4}) == (4.0, 4)
