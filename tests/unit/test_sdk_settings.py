"""The SDK reads only its own settings, and never raises on them outside strict mode.

A render service's environment may hold variables meant for the sink or the worker
(``EPT_SQL_BIND``, ``EPT_TOPIC_PARTITIONS``...): the SDK neither reads nor checks them. A
bad SDK setting disables tracking, logged once; strict mode raises at ``configure``.
Each test uses the module-level API on a fresh default tracker, as a service would.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import ept
import ept.default
from ept.core.settings import SdkSettings, SettingsError, load_settings

pytestmark = pytest.mark.unit

OTHER_COMPONENTS = [{"EPT_SQL_BIND": "0.0.0.0"}, {"EPT_TOPIC_PARTITIONS": "abc"}]
BAD_SDK = [{"EPT_PRODUCER_QUEUE_MAX": "abc"}, {"EPT_KAFKA_BOOTSTRAP": "no-port"},
           {"EPT_THRESHOLDS": "{not json"}, {"EPT_STRICT": "maybe"}]


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A clean EPT_ environment (unreachable broker, no spool) and no default tracker."""
    for variable in list(os.environ):
        if variable.startswith("EPT_"):
            monkeypatch.delenv(variable)
    monkeypatch.setenv("EPT_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("EPT_SPOOL_MAX_BYTES", "0")
    monkeypatch.setenv("EPT_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setattr(ept.default, "_default", None)
    yield
    tracker = ept.default._default
    if tracker is not None:
        tracker.close(timeout=0)


def track_everything() -> None:
    """One call of each kind a render service makes."""
    ept.track_render_failed("r1", "timeout", "Render timed out", "tpl_1", 30000.0)
    ept.track_slow_render("r2", "still", 9000.0, 8000.0, "tpl_1")
    ept.track_render_completed("r3", "tpl_1", "still", 1200.0)
    ept.track_api_error("/api/render", 503, "unavailable")
    ept.track_api_request_completed("/api/render", "GET", 200, 12.0)
    with ept.measure_render_performance("r4", "still", "tpl_1"):
        pass


def disabled_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if "tracking disabled" in record.getMessage()]


@pytest.mark.parametrize("variables", OTHER_COMPONENTS, ids=lambda v: next(iter(v)))
def test_another_components_setting_never_reaches_a_render_service(
        environment: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        variables: dict[str, str]) -> None:
    for variable, value in variables.items():
        monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=next(iter(variables))):
        load_settings()  # the pipeline's components do check it
    track_everything()
    tracker = ept.get_tracker()
    assert tracker.enabled and type(tracker.settings) is SdkSettings
    stats = ept.get_error_performance_stats()
    assert (stats.renders_failed, stats.slow_renders, stats.api_errors, stats.rejected,
            stats.dropped) == (1, 1, 1, 0, 0), stats
    assert stats.queued + stats.delivered == 6, stats  # all six handed to the producer
    assert disabled_logs(caplog) == [], caplog.text


@pytest.mark.parametrize("variables", BAD_SDK, ids=lambda v: next(iter(v)))
def test_a_bad_sdk_setting_disables_tracking_logged_once_never_raised(
        environment: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        variables: dict[str, str]) -> None:
    for variable, value in variables.items():
        monkeypatch.setenv(variable, value)
    for _ in range(3):
        track_everything()
    assert ept.is_template_enabled("tpl_1")
    assert ept.wait_for_template_controls(timeout_s=30) is False  # at once: nothing to read
    assert ept.get_tracker().slow_threshold("render_still") > 0  # the static defaults
    [logged] = disabled_logs(caplog)
    assert logged.levelno == logging.ERROR and next(iter(variables)) in logged.getMessage()
    stats = ept.get_error_performance_stats()
    assert (stats.renders_failed, stats.dropped, stats.queued, stats.rejected) == (
        3, 18, 0, 0), stats


@pytest.mark.parametrize("variables", BAD_SDK[:3], ids=lambda v: next(iter(v)))
@pytest.mark.parametrize("strict_from", ["argument", "environment"])
def test_strict_mode_raises_at_configure(environment: None, monkeypatch: pytest.MonkeyPatch,
                                         variables: dict[str, str], strict_from: str) -> None:
    for variable, value in variables.items():
        monkeypatch.setenv(variable, value)
    if strict_from == "environment":
        monkeypatch.setenv("EPT_STRICT", "true")
    with pytest.raises(SettingsError, match=next(iter(variables))):
        ept.configure(**({"strict": True} if strict_from == "argument" else {}))


def test_a_secret_in_a_bad_setting_is_never_logged(
        environment: None, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("EPT_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")  # no mechanism: invalid
    monkeypatch.setenv("EPT_KAFKA_SASL_PASSWORD", "hunter2-secret")
    track_everything()
    [logged] = disabled_logs(caplog)
    assert "EPT_KAFKA_SASL_MECHANISM" in logged.getMessage()
    assert "hunter2" not in caplog.text
