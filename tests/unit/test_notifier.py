"""The notifier's pure parts: what it posts to Alertmanager, and when."""

from __future__ import annotations

from typing import Any

import pytest

from ept.core.settings import load_settings
from ept.processors.alerts.alertmanager import DeliveryError, alert_of, where
from ept.processors.alerts.notifier import MAX_BACKOFF_S, RESOLVED_KEPT_S, Delivery, Notifier
from ept.processors.alerts.topic import FIRING, RESOLVED, AlertNotice
from ept.processors.worker.logic.alert_state import fingerprint

NOW_S = 1_800_000_000.0
AM = "http://127.0.0.1:9093"


def notice(status: str = FIRING, at_s: float = NOW_S, template: str = "tpl") -> AlertNotice:
    labels = {"template_id": template}
    return AlertNotice(
        fingerprint=fingerprint("template_failures", labels), rule="template_failures",
        kind="template_failures", status=status, severity="high", labels=labels, value=4.0,
        samples=4, threshold=3.0, resolve_threshold=0.0, window="60m",
        started_at="2027-01-15T08:00:00.000Z",
        resolved_at="2027-01-15T09:00:00.000Z" if status == RESOLVED else None,
        summary="Template failures 4 > 3 over 60m for template_id=tpl",
        runbook_url="https://runbooks/t.md", action="disable_template",
        decided_at_ms=int(at_s * 1000))


def test_the_alert_posted_for_a_notice() -> None:
    alert = alert_of(notice(), NOW_S, 60, "http://dash/")
    assert alert["labels"] == {"alertname": "template_failures", "severity": "high",
                               "service": "ept", "template_id": "tpl"}
    assert alert["annotations"]["value"] == "4"
    assert alert["annotations"]["action"] == "disable_template"
    assert alert["startsAt"] == "2027-01-15T08:00:00.000Z"
    assert alert["endsAt"] == "2027-01-15T08:04:00.000Z"  # four re-send intervals ahead
    assert alert["generatorURL"] == "http://dash/"
    resolved = alert_of(notice(RESOLVED), NOW_S, 60, "http://dash/")
    assert resolved["endsAt"] == "2027-01-15T09:00:00.000Z"


def test_a_regression_is_described_as_a_factor_of_its_baseline() -> None:
    regression = AlertNotice(**{**notice().to_json(), "kind": "duration_regression",
                                "value": 2.04, "threshold": 1.5, "resolve_threshold": 1.2})
    assert alert_of(regression, NOW_S, 60, "")["annotations"]["description"] == (
        "duration_regression = 2.04x over 60m (4 samples; fires above 1.5x, resolves at or "
        "below 1.2x)")


def test_a_scope_label_cannot_replace_ept_s_own() -> None:
    spoof = AlertNotice(**{**notice().to_json(), "labels": {"service": "x", "alertname": "y"}})
    assert alert_of(spoof, NOW_S, 60, "")["labels"]["service"] == "ept"


def test_logs_and_metrics_never_show_credentials() -> None:
    assert where("https://user:secret@am.example:9443/path?q=1") == "https://am.example:9443"


def test_each_alertmanager_is_posted_the_latest_notice_once() -> None:
    delivery = Delivery([AM, "http://127.0.0.2:9093"])
    first, later = notice(at_s=NOW_S - 10), notice(RESOLVED, NOW_S)
    delivery.receive(first)
    delivery.receive(later)
    delivery.receive(first)  # read again (a reader restart): older, ignored
    due = delivery.due(NOW_S)
    assert due == {AM: [later], "http://127.0.0.2:9093": [later]}
    delivery.delivered(AM, due[AM])
    assert AM not in delivery.due(NOW_S)


def test_a_notice_arriving_during_a_post_is_still_posted() -> None:
    delivery = Delivery([AM])
    delivery.receive(notice(at_s=NOW_S - 10))
    posting = delivery.due(NOW_S)[AM]
    newer = notice(RESOLVED, NOW_S)
    delivery.receive(newer)
    delivery.delivered(AM, posting)
    assert delivery.due(NOW_S) == {AM: [newer]}


def test_failures_back_off_exponentially_up_to_a_minute() -> None:
    delivery = Delivery([AM])
    delivery.receive(notice())
    waits = [delivery.failed(AM, NOW_S) for _ in range(8)]
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60] and MAX_BACKOFF_S == 60
    assert delivery.due(NOW_S + 59) == {}
    assert AM in delivery.due(NOW_S + 60)


def test_firing_alerts_are_posted_again_and_old_resolutions_never() -> None:
    delivery = Delivery([AM])
    delivery.receive(notice(template="a"))
    delivery.receive(notice(RESOLVED, NOW_S - RESOLVED_KEPT_S - 1, template="b"))
    due = delivery.due(NOW_S)[AM]
    assert [n.labels["template_id"] for n in due] == ["a"]
    delivery.delivered(AM, due)
    assert delivery.due(NOW_S) == {}
    delivery.resend_firing()
    assert [n.labels["template_id"] for n in delivery.due(NOW_S)[AM]] == ["a"]


def test_a_failed_post_is_counted_and_retried() -> None:
    posted: list[list[dict[str, Any]]] = []
    answers = [DeliveryError("down"), None]

    def post(url: str, alerts: list[dict[str, Any]]) -> None:
        answer = answers.pop(0)
        if answer is not None:
            raise answer
        posted.append(alerts)

    notifier = Notifier(load_settings(alertmanager_urls=AM), post=post)
    notifier.delivery.receive(notice())
    notifier.deliver(NOW_S)
    notifier.deliver(NOW_S + 0.5)  # backing off: not tried
    notifier.deliver(NOW_S + 1)
    sample = notifier.metrics.registry.get_sample_value
    assert sample("ept_notifier_posts_total", {"alertmanager": AM, "outcome": "error"}) == 1
    assert sample("ept_notifier_posts_total", {"alertmanager": AM, "outcome": "ok"}) == 1
    assert [a["labels"]["template_id"] for a in posted[0]] == ["tpl"]
    assert sample("ept_notifier_alerts_pending", {"alertmanager": AM}) == 0


def test_a_storm_is_posted_broadest_first_each_breadth_in_a_post_of_its_own() -> None:
    """The page for all traffic answered before the templates it inhibits are posted;
    a failed post leaves the narrower ones for the retry, after it."""
    posted: list[list[dict[str, Any]]] = []
    answers: list[DeliveryError | None] = [None, DeliveryError("down"), None, None]

    def post(url: str, alerts: list[dict[str, Any]]) -> None:
        answer = answers.pop(0)
        if answer is not None:
            raise answer
        posted.append(alerts)

    page = AlertNotice(**{**notice().to_json(), "rule": "high_error_rate", "labels": {},
                          "severity": "critical",
                          "fingerprint": fingerprint("high_error_rate", {})})
    endpoint = AlertNotice(**{**notice().to_json(), "rule": "api_degradation",
                              "labels": {"endpoint": "/api/render"},
                              "fingerprint": fingerprint("api_degradation",
                                                         {"endpoint": "/api/render"})})
    notifier = Notifier(load_settings(alertmanager_urls=AM), post=post)
    for told in (notice(template="b"), endpoint, notice(template="a"), page):
        notifier.delivery.receive(told)
    notifier.deliver(NOW_S)
    notifier.deliver(NOW_S + 1)

    def names(alerts: list[dict[str, Any]]) -> list[str]:
        return [a["labels"].get("template_id") or a["labels"]["alertname"] for a in alerts]

    assert [sorted(names(alerts)) for alerts in posted] == [
        ["high_error_rate"], ["api_degradation"], ["a", "b"]]


def test_no_alertmanager_configured_is_refused() -> None:
    with pytest.raises(ValueError, match="EPT_ALERTMANAGER_URLS"):
        Notifier(load_settings(alertmanager_urls=""))
