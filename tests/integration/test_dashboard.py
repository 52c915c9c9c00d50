"""The dashboard in headless Chromium against a running sink with data and alerts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Producer

from ept import Tracker
from ept.core.kafka import ensure_topics
from ept.core.settings import Settings
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
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
        producer.produce(settings.topics.alerts, alert.encode(), b"abc123")
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
    finally:
        sink.terminate()
        sink.wait(60)

    assert 'data-series="error"' in dom and 'data-series="slow"' in dom
    assert 'data-points="0"' not in dom  # the chart has data points
    assert "tpl_broken" in dom                # most failing templates
    assert "/api/render" in dom               # API errors by endpoint
    assert 'data-rule="template_failures"' in dom and "disable_template" in dom
    assert '<b id="firing-count">1</b>' in dom
