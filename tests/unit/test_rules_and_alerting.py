import json
from dataclasses import replace
from pathlib import Path

import pytest

from ept.processors.worker.logic.alert_state import (
    FIRING,
    INACTIVE,
    PENDING,
    AlertState,
    alert_notice,
    fingerprint,
    step,
)
from ept.processors.worker.logic.records import ScopeState
from ept.processors.worker.logic.rules import RulesError, load_rules, parse_rules
from ept.processors.worker.logic.scope_evaluation import measured
from ept.processors.worker.logic.scopes import Measurement, Scope, measure, signals_of

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


def counted(value: float, samples: int | None = None, hits: int = 0,
            no_data: str = "") -> Measurement:
    return Measurement(value, int(value) if samples is None else samples, hits, no_data)


def test_lifecycle_with_pending_hysteresis_and_renotify() -> None:
    [rule] = parse_rules(RULE.replace('severity = "high"', 'severity = "high"\n'
                                      'pending_seconds = 60\nrenotify_minutes = 10'), "f")
    state = AlertState()
    state, note = step(rule, state, counted(11), 0)
    assert state.status == PENDING and note is None
    state, note = step(rule, state, counted(12), 30_000)
    assert state.status == PENDING and note is None
    state, note = step(rule, state, counted(12), 60_000)
    assert state.status == FIRING and note is not None and note.status == "firing"
    assert note.started_at_ms == 0
    state, note = step(rule, state, counted(9), 90_000)  # between resolve and fire: still firing
    assert state.status == FIRING and note is None
    state, note = step(rule, state, counted(9), 60_000 + 10 * 60_000)
    assert note is not None and note.renotify and note.status == "firing"
    state, note = step(rule, state, counted(8), 800_000)
    assert state.status == INACTIVE and note is not None and note.status == "resolved"
    assert note.resolved_at_ms == 800_000


def rate(failed: int, total: int) -> Measurement:
    return Measurement(100.0 * failed / total if total else 0.0, total, failed)


def test_a_rate_fires_and_resolves_on_evidence_not_on_thin_data() -> None:
    rule = {rule.name: rule for rule in load_rules(None)}["high_error_rate"]
    # 10 of 10 renders failing is an outage; 1 of 1 is below the floor (10 renders): no data
    assert step(rule, AlertState(), rate(10, 10), 0)[0].status == FIRING
    one = measured(rule, ScopeState({100: {"failed": 1}}), 100)
    assert one.no_data == "1 renders in 15m (min_samples 10)"
    assert step(rule, AlertState(), one, 0)[0].status == INACTIVE
    # 2 failures of 10 (20%) are not yet > 5% with 99% confidence; 3 of 10 are
    assert step(rule, AlertState(), rate(2, 10), 0)[0].status == INACTIVE
    assert step(rule, AlertState(), rate(3, 10), 0)[0].status == FIRING
    # a steady 30% at ~20 renders per window never resolves for 19 instead of 20 renders
    firing = step(rule, AlertState(), rate(6, 20), 0)[0]
    for failed, total in [(6, 19), (5, 19), (4, 19), (6, 21)]:
        assert step(rule, firing, rate(failed, total), 60_000) == (firing, None)
    # ... and a 6% rate over 10,000 renders holds while 4.5% does not resolve (hysteresis)
    assert step(rule, AlertState(), rate(600, 10_000), 0)[0].status == FIRING
    assert step(rule, firing, rate(450, 10_000), 60_000) == (firing, None)
    # healthy again: 0 failures of 20 renders read <= 4% at 80% confidence; once that has
    # held for 15 minutes (resolve_pending_seconds), the alert resolves
    clearing, note = step(rule, firing, rate(0, 20), 60_000)
    assert clearing.status == FIRING and note is None
    assert step(rule, clearing, rate(3, 20), 120_000)[0] == firing  # not clean: start over
    clearing = step(rule, firing, rate(0, 20), 120_000)[0]
    assert step(rule, clearing, rate(0, 21), 120_000 + 14 * 60_000) == (
        clearing, None)
    resolved, note = step(rule, clearing, rate(0, 20), 120_000 + 15 * 60_000)
    assert resolved.status == INACTIVE and note is not None and note.status == "resolved"
    assert alert_notice(rule, {}, note, 0).summary == (
        "Render error rate 0.0% (0 of 20 renders; <= 3.4% at 80% confidence) <= 4% over 15m "
        "for all traffic")


def test_no_data_keeps_a_page_firing_and_says_so() -> None:
    rule = {rule.name: rule for rule in load_rules(None)}["high_error_rate"]
    firing, note = step(rule, AlertState(), rate(15, 15), 0)
    assert note is not None and alert_notice(rule, {}, note, 0).summary == (
        "Render error rate 100.0% (15 of 15 renders; >= 73.5% at 99% confidence) > 5% over "
        "15m for all traffic")
    silent = Measurement(0.0, 0, 0, "0 renders in 15m (min_samples 10)")
    assert step(rule, firing, silent, 15 * 60_000) == (firing, None)
    _, renotified = step(rule, firing, silent, 60 * 60_000)
    assert renotified is not None and renotified.status == "firing" and renotified.renotify
    told = alert_notice(rule, {}, renotified, 0)
    assert told.summary == ("Render error rate over 15m for all traffic: still firing, "
                            "no data: 0 renders in 15m (min_samples 10)")
    assert told.no_data == "0 renders in 15m (min_samples 10)"
    # the other policies: resolve (saying why), or fire on the silence itself
    resolving = replace(rule, no_data="resolve", resolve_pending_seconds=0)
    state, note = step(resolving, firing, silent, 60_000)
    assert state.status == INACTIVE and note is not None and note.status == "resolved"
    assert alert_notice(resolving, {}, note, 0).summary.endswith(
        "resolved, no data: 0 renders in 15m (min_samples 10)")
    alerting = replace(rule, no_data="alert")
    state, note = step(alerting, AlertState(), silent, 0)
    assert state.status == FIRING and note is not None and note.no_data
    assert step(rule, AlertState(), silent, 0) == (AlertState(), None)


def test_a_popular_healthy_template_never_fires_and_a_broken_one_does() -> None:
    rule = {rule.name: rule for rule in load_rules(None)}["template_failures"]
    assert rule.min_rate == 5.0
    # 4 failures of 3,000 renders an hour (0.13%): more than 3, but a healthy template
    assert step(rule, AlertState(), Measurement(4.0, 3000, 4), 0) == (AlertState(), None)
    # ... and so is a thin one at 2% failing 4 of 25 in one hour by chance (99.9%)
    assert step(rule, AlertState(), Measurement(4.0, 25, 4), 0) == (AlertState(), None)
    state, note = step(rule, AlertState(), Measurement(4.0, 5, 4), 0)
    assert state.status == FIRING and note is not None
    assert alert_notice(rule, {"template_id": "t"}, note, 0).summary == (
        "Template failures 4 > 3 over 60m for template_id=t (4 of 5 renders; >= 22.4% at "
        "99.9% confidence failing)")
    _, resolved = step(rule, state, Measurement(0.0, 20, 0), 60_000)
    assert resolved is not None and alert_notice(rule, {"template_id": "t"}, resolved,
                                                 0).summary == (
        "Template failures 0 <= 0 over 60m for template_id=t")


def test_alert_notice_fields_and_stable_fingerprint() -> None:
    rules = {rule.name: rule for rule in load_rules(None)}
    _, note = step(rules["template_failures"], AlertState(), Measurement(4.0, 4, 4),
                   1_700_000_000_000)
    assert note is not None
    message = alert_notice(rules["template_failures"], {"template_id": "t1"}, note, 0).to_json()
    assert message["fingerprint"] == fingerprint("template_failures", {"template_id": "t1"})
    assert message["fingerprint"] != fingerprint("template_failures", {"template_id": "t2"})
    assert {"fingerprint", "rule", "status", "severity", "labels", "value", "threshold",
            "window", "started_at", "resolved_at", "summary", "runbook_url", "action"} <= set(
        message)
    assert message["started_at"] == "2023-11-14T22:13:20.000Z"
    assert message["summary"] == ("Template failures 4 > 3 over 60m for template_id=t1 "
                                  "(4 of 4 renders; >= 29.5% at 99.9% confidence failing)")


def test_scope_state_round_trips_through_json() -> None:
    state = ScopeState({100: {"failed": 2}, 161: {"completed": 1}},
                       {"template_failures": AlertState("firing", 1, 1, 2)}, 160, {"x:0": 7})
    assert ScopeState.from_json(json.loads(json.dumps(state.to_json()))) == state


def test_signals_and_measures() -> None:
    scopes = signals_of("render_completed", {"template_id": "t", "render_type": "video",
                                             "duration_ms": 10.0})
    assert ("render", Scope("render", "template_id", "t").key, "completed") in scopes
    assert ("slow", Scope("slow", "render_type", "video").key, "renders") in scopes
    assert ("render", Scope("render").key, "completed") in scopes
    assert Scope.parse(Scope("api", "endpoint", "/a|b").key) == Scope("api", "endpoint", "/a|b")
    assert measure("render_error_rate", {"failed": 1, "completed": 3}) == Measurement(
        25.0, 4, 1)
    assert measure("slow_render_ratio", {"slow": 6, "renders": 10}) == Measurement(60.0, 10, 6)
    # a slow_render published without its render_completed is a render too: <= 100%
    assert measure("slow_render_ratio", {"slow": 6, "renders": 2}) == Measurement(100.0, 6, 6)
    assert measure("api_errors", {"errors": 11, "requests": 5}) == Measurement(11.0, 16, 11)
    assert measure("template_failures", {"failed": 4, "completed": 1}) == Measurement(
        4.0, 5, 4)
