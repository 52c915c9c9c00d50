"""The dashboard in headless Chromium against a running sink with data and alerts."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Producer

from ept import Tracker
from ept.core.kafka import ensure_topics
from ept.core.settings import Settings
from ept.core.template_controls import DISABLED, TemplateControl
from ept.processors.alert_topic import AlertNotice
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def render_page(url: str, profile: Path) -> str:
    """The DOM after the page's scripts ran (Chromium's virtual time lets fetches finish)."""
    assert CHROMIUM is not None
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=8000",
         "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is installed by `make setup`")
def test_dashboard_shows_charts_and_alerts(settings: Settings, tmp_path: Path) -> None:
    ensure_topics(settings)
    port = free_port()
    environment = {**os.environ, "EPT_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                   "EPT_TOPIC_PREFIX": settings.topic_prefix, "EPT_SINK_PORT": str(port),
                   "EPT_SQL_PORT": str(free_port()),
                   "EPT_STATE_DIR": str(tmp_path / "state"),
                   "EPT_CLICKHOUSE_PATH": str(tmp_path / "clickhouse")}
    sink = subprocess.Popen([sys.executable, "-m", "ept.deploy.cli", "sink"], env=environment,
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        tracker = Tracker(settings)
        for index in range(300):
            template = "tpl_broken" if index % 3 == 0 else "tpl_ok"
            if index % 3 == 0:
                tracker.track_render_failed(f"r{index}", "codec_error", "Encoding failed",
                                            template, 100.0)
            else:
                tracker.track_render_completed(f"r{index}", template, "video", 1000.0)
            if index % 10 == 0:
                tracker.track_api_error("/api/render", 503, "unavailable", None, 5.0)
        assert tracker.flush(30) == 0
        tracker.close()
        alert = AlertNotice(
            fingerprint="abc123", rule="template_failures", kind="template_failures",
            status="firing", severity="high", labels={"template_id": "tpl_broken"},
            value=100.0, samples=100, threshold=3.0, resolve_threshold=0.0, window="60m",
            summary="Template failures 100 > 3 over 60m for template_id=tpl_broken",
            started_at="2026-11-29T10:00:00Z", resolved_at=None, action="disable_template",
            runbook_url="https://example.invalid/rb")
        renotified = dataclasses.replace(alert, renotify=True, decided_at_ms=1)
        resolved = dataclasses.replace(alert, fingerprint="def456", rule="api_degradation",
                                       status="resolved", labels={"endpoint": "/api/x"},
                                       resolved_at="2026-11-29T10:05:00Z")
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
        for notice in (alert, renotified, resolved):
            producer.produce(settings.topics.alerts, notice.encode(),
                             notice.fingerprint.encode())
        disabled = TemplateControl("tpl_broken", DISABLED, "4 failures", "rule:template_failures",
                                   int(time.time() * 1000), "abc123")
        producer.produce(settings.topics.template_controls, disabled.encode(), b"tpl_broken")
        assert producer.flush(30) == 0

        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/api/query/ingestion-summary") as reply:
                    if sum(r["rows"] for r in json.loads(reply.read())) >= 330:
                        break
            except OSError:
                pass
            time.sleep(0.5)

        dom = render_page(f"{base}/", tmp_path / "profile")
        enabling = f"{base}/api/templates/tpl_broken/enable"
        assert post(enabling, "text/plain") == 415  # a cross-site form cannot send JSON
        assert post(enabling, "application/json") == 200
        while time.monotonic() < deadline and controls(base)["tpl_broken"] != "enabled":
            time.sleep(0.2)
        assert controls(base)["tpl_broken"] == "enabled"
        assert post(enabling, "application/json") == 409  # not disabled any more
    finally:
        sink.terminate()
        sink.wait(60)

    assert 'data-series="error"' in dom and 'data-series="slow"' in dom
    assert 'data-points="0"' not in dom  # the chart has data points
    assert "tpl_broken" in dom                # most failing templates
    assert "/api/render" in dom               # API errors by endpoint
    assert 'data-rule="template_failures"' in dom and "disable_template" in dom
    assert '<b id="firing-count">1</b>' in dom
    firing, recent = dom.split('id="alerts"')[1].split('id="resolved"')
    assert firing.count("data-rule=") == 1  # the re-notification folds into its alert
    assert recent.split('id="templates-panel"')[0].count('data-rule="api_degradation"') == 1
    assert 'data-template="tpl_broken"' in dom and "rule:template_failures" in dom
    assert 'data-enable="tpl_broken"' in dom


def post(url: str, content_type: str) -> int:
    request = urllib.request.Request(url, data=b"{}", method="POST",
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def controls(base: str) -> dict[str, str]:
    with urllib.request.urlopen(f"{base}/api/templates", timeout=10) as reply:
        return {c["template_id"]: c["state"] for c in json.loads(reply.read())}
