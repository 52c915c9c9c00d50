"""The dashboard in headless Chromium against a running sink with data and alerts."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from confluent_kafka import Producer

from ept import Tracker
from ept.core.kafka import ensure_topics
from ept.core.settings import Settings
from ept.core.template_controls import DISABLED, TemplateControl
from ept.processors.alerts.topic import AlertNotice
from ept.processors.worker.logic.alert_state import fingerprint
from tests.conftest import free_port
from tests.worker_process import Worker

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
    assert 'title="tpl_broken"' in dom        # most failing templates
    assert 'title="/api/render"' in dom       # API errors by endpoint
    assert 'data-rule="template_failures"' in dom and "action: disable template" in dom
    assert '<b id="firing-count">1</b>' in dom
    firing, recent = dom.split('id="alerts"')[1].split('id="resolved"')
    assert firing.count("data-rule=") == 1  # the re-notification folds into its alert
    assert recent.split("</section>")[0].count('data-rule="api_degradation"') == 1
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


# Realistic names: the widest a panel has to hold without spilling into the next one.
ENDPOINTS = [f"/api/v2/workspaces/{{workspace_id}}/projects/{{project_id}}/renders/batch-{n:02d}"
             "/status" for n in range(12)]
TEMPLATES = [f"tpl_marketing-q4-holiday-campaign_vertical-9x16_localized-de-DE_v{n:02d}"
             for n in range(16)] + ["tpl_3f2a9c1e7b4d4e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d"]
WIDTHS = (1024, 1400)

# Every panel and every table in it: wider content than box (scrollWidth > clientWidth) is
# content spilling out or cut off; a table's box must also end inside its panel's.
MEASURE = """(() => {
  const problems = [];
  const fits = (what, element) => {
    const [content, box] = [element.scrollWidth, element.clientWidth];
    if (content > box) problems.push(`${what}: scrollWidth ${content} > clientWidth ${box}`);
  };
  fits("page", document.documentElement);
  const panels = document.querySelectorAll("main section");
  for (const panel of panels) {
    const name = panel.querySelector("h2").textContent;
    fits(`panel "${name}"`, panel);
    const padding = parseFloat(getComputedStyle(panel).paddingRight);
    const inner = panel.getBoundingClientRect().right - padding;
    for (const table of panel.querySelectorAll("table")) {
      fits(`table in "${name}"`, table);
      const right = table.getBoundingClientRect().right;
      if (right > inner + 0.5)
        problems.push(`table in "${name}" ends at ${right}, its panel's content at ${inner}`);
      for (const cell of table.querySelectorAll("th, td"))
        fits(`cell "${cell.textContent.slice(0, 40)}" in "${name}"`, cell);
    }
  }
  const scopes = [...document.querySelectorAll("#alerts [data-scope]")].map((scope) => ({
    scope: scope.dataset.scope,
    rules: [...scope.querySelectorAll("[data-rule]")].map((rule) => rule.dataset.rule)}));
  return {problems, panels: panels.length, text: document.body.innerText,
          firing: document.querySelector("#alerts").innerText, scopes,
          no_data: [...document.querySelectorAll("#alerts .no-data[data-rule]")].map(
            (rule) => rule.dataset.rule),
          headers: [...document.querySelectorAll("th")].map((th) => th.textContent),
          height: document.documentElement.scrollHeight};
})()"""


class DevTools:
    """One page of headless Chromium, driven over the DevTools protocol's websocket."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        request = next(self._ids)
        await self._socket.send_json({"id": request, "method": method, "params": params})
        while True:  # events arrive in between; the answer carries the request's id
            message = await self._socket.receive_json()
            if message.get("id") == request:
                assert "error" not in message, f"{method}: {message['error']}"
                return dict(message["result"])

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not await self.evaluate(expression):
            if time.monotonic() > deadline:
                shown = await self.evaluate("document.body.innerText")
                raise AssertionError(f"never true in the page: {expression}\n{shown[:3000]}")
            await asyncio.sleep(0.25)

    async def resize(self, width: int, height: int) -> None:
        await self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                        deviceScaleFactor=1, mobile=False)

    async def screenshot(self) -> bytes:
        shot = await self.call("Page.captureScreenshot", format="png")
        return base64.b64decode(shot["data"])


@contextmanager
def chromium(profile: Path) -> Iterator[str]:
    """Headless Chromium with its DevTools port open; yields its page's websocket URL."""
    assert CHROMIUM is not None
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}",
         "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"  # Chromium writes its port here
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            assert browser.poll() is None and time.monotonic() < deadline, "no DevTools port"
            time.sleep(0.2)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as reply:
            pages = [t for t in json.loads(reply.read()) if t["type"] == "page"]
        yield str(pages[0]["webSocketDebuggerUrl"])
    finally:
        browser.terminate()
        browser.wait(30)


async def look_at_dashboard(page_socket: str, url: str, ready: str
                            ) -> dict[int, tuple[dict[str, Any], bytes]]:
    """At each width: the page loaded until ``ready``, measured, and a full-page screenshot."""
    seen = {}
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(page_socket, max_msg_size=0) as socket:
        page = DevTools(socket)
        for width in WIDTHS:
            await page.resize(width, 900)
            await page.call("Page.navigate", url=url)
            await page.wait_for(ready)
            measured = await page.evaluate(MEASURE)
            await page.resize(width, measured["height"])  # the whole page in the screenshot
            seen[width] = (measured, await page.screenshot())
    return seen


def produce_realistic_traffic(settings: Settings) -> int:
    """Renders of many long-named templates and calls of long endpoints; the event count."""
    tracker = Tracker(settings)
    count = 0
    for index in range(600):
        template = TEMPLATES[index % len(TEMPLATES)]
        if (index // len(TEMPLATES)) % (2 + index % 4) == 0:  # each fails, some more often
            tracker.track_render_failed(f"r{index}", "codec_error" if index % 2 else "timeout",
                                        "Encoding failed", template, 900.0)
        else:
            tracker.track_render_completed(f"r{index}", template, "video", 1000.0 + index)
            if index % 7 == 0:
                tracker.track_slow_render(f"r{index}", "video", 95000.0, 60000.0, template)
                count += 1
        endpoint = ENDPOINTS[index % len(ENDPOINTS)]
        if (index // len(ENDPOINTS)) % (2 + index % 3) == 0:
            tracker.track_api_error(endpoint, 503 if index % 2 else 429, "unavailable", None,
                                    5.0, rate_limited=index % 2 == 0)
        else:
            tracker.track_api_request_completed(endpoint, "POST", 200, 35.0)
        count += 2
    assert tracker.flush(30) == 0
    tracker.close()
    return count


def notice(rule: str, labels: dict[str, str], **fields: Any) -> AlertNotice:
    scope = ", ".join(f"{k}={v}" for k, v in labels.items()) or "all traffic"
    defaults: dict[str, Any] = dict(
        fingerprint=fingerprint(rule, labels), rule=rule, kind=rule, status="firing",
        severity="high", labels=labels, value=12.0, samples=240, threshold=5.0,
        resolve_threshold=2.0, window="15m", summary=f"{rule} 12 > 5 over 15m for {scope}",
        started_at="2026-11-29T10:00:00Z", resolved_at=None, action="notify_oncall",
        runbook_url="https://example.invalid/runbook")
    return AlertNotice(**{**defaults, **fields})


# Two alerts of one template, two of all traffic (one of them told without data), the
# resolved alert of an endpoint the traffic does not call (the worker's alerts on it
# would supersede it), and a template's count told firing ahead of the frontier, then
# withdrawn (docs/alerts.md, firing ahead): not firing.
ALERTS = [
    notice("template_failures", {"template_id": "tpl_withdrawn"}, ahead=True,
           decided_at_ms=1_764_410_400_000),
    notice("template_failures", {"template_id": "tpl_withdrawn"}, ahead=True,
           decided_at_ms=1_764_410_400_000, status="resolved",
           resolved_at="2026-11-29T10:00:00Z",
           summary="template_failures over 15m for template_id=tpl_withdrawn: withdrawn"),
    notice("template_failures", {"template_id": TEMPLATES[-1]}, action="disable_template"),
    notice("duration_regression", {"template_id": TEMPLATES[-1]}, severity="medium",
           kind="duration_regression", value=1.9, threshold=1.5, window="60m",
           summary=f"p95 render duration 1.9x the baseline over 60m for "
                   f"template_id={TEMPLATES[-1]}"),
    notice("high_error_rate", {}, severity="critical", kind="render_error_rate"),
    notice("renders_stopped", {}, severity="critical", kind="render_volume_drop",
           no_data="0 renders in 15m", value=0.0, samples=0,
           summary="Render volume over 15m for all traffic: still firing, no data: "
                   "0 renders in 15m"),
    notice("api_degradation", {"endpoint": "/api/v1/legacy/exports/{export_id}/download-links"},
           status="resolved",
           resolved_at="2026-11-29T10:25:00Z", action="check_external_service"),
]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is installed by `make setup`")
def test_dashboard_fits_its_panels_and_reads_as_labels(settings: Settings,
                                                       tmp_path: Path) -> None:
    """Long names and many rows at 1024 and 1400 px: no panel or table wider than its box,
    labels instead of keys, one row per alerted scope. Screenshots in the test's tmp dir
    (and in $EPT_SCREENSHOT_DIR when set: docs/img/ holds the ones the docs show)."""
    ensure_topics(settings)
    worker = Worker(settings, tmp_path / "worker.log")
    port = free_port()
    environment = {**os.environ, "EPT_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                   "EPT_TOPIC_PREFIX": settings.topic_prefix, "EPT_SINK_PORT": str(port),
                   "EPT_SQL_PORT": str(free_port()), "EPT_WORKER_PORT": str(worker.port),
                   "EPT_STATE_DIR": str(tmp_path / "sink-state"),
                   "EPT_CLICKHOUSE_PATH": str(tmp_path / "clickhouse")}
    sink_log = tmp_path / "sink.log"
    sink = subprocess.Popen([sys.executable, "-m", "ept.deploy.cli", "sink"], env=environment,
                            cwd=REPO, stdout=sink_log.open("wb"), stderr=subprocess.STDOUT)
    try:
        events = produce_realistic_traffic(settings)
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
        for alert in ALERTS:
            producer.produce(settings.topics.alerts, alert.encode(), alert.fingerprint.encode())
        assert producer.flush(30) == 0
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: stored_rows(base) >= events, "the sink stored the events", sink_log)
        wait_until(lambda: worker.stats()["rendersFailed"] > 0, "the worker counted them",
                   worker.log_path)

        # Loaded: the last refresh answered, every table and the live counters are filled.
        ready = ("(document.querySelector('#updated')?.textContent ?? '').startsWith('updated') && "
                 "document.querySelectorAll('#api-errors tr').length > 12 && "
                 "document.querySelectorAll('#templates tr').length > 17 && "
                 "document.querySelectorAll('#counters .counter').length > 0 && "
                 "document.querySelectorAll('#resolved [data-rule]').length > 0")
        with chromium(tmp_path / "profile") as page_socket:
            seen = asyncio.run(look_at_dashboard(page_socket, f"{base}/", ready))
    finally:
        sink.terminate()
        sink.wait(60)
        worker.stop()

    shots = os.environ.get("EPT_SCREENSHOT_DIR")
    for width, (_, png) in seen.items():
        (tmp_path / f"dashboard-{width}.png").write_bytes(png)
        if shots:
            (Path(shots) / f"dashboard-{width}.png").write_bytes(png)
    for width, (measured, _) in seen.items():
        assert measured["panels"] == 6
        problems = "\n".join(measured["problems"])
        assert not problems, f"overflow at {width} px:\n{problems}"
        for label in ("Renders failed", "Slow renders", "API errors", "no data: 0 renders in 15m"):
            assert label in measured["text"], f"{label!r} not shown at {width} px"
        for key in ("rendersFailed", "totalPerformanceIssues"):
            assert key not in measured["text"], f"raw key {key!r} shown at {width} px"
        assert {"Endpoint", "Template", "Error rate", "Top reason"} <= set(measured["headers"])
        assert not [h for h in measured["headers"] if "_" in h], measured["headers"]
        # One row per alerted scope, listing its rules (the worker's own alerts on this
        # traffic join the planted ones); the scope told without data says so.
        rules = {s["scope"]: s["rules"] for s in measured["scopes"]}
        assert len(rules) == len(measured["scopes"]), "a scope in two rows"
        assert {"template_failures", "duration_regression"} <= set(
            rules[f"template_id={TEMPLATES[-1]}"])
        assert {"high_error_rate", "renders_stopped"} <= set(rules[""])
        assert measured["no_data"] == ["renders_stopped"]
        firing = measured["firing"]
        assert firing.count(TEMPLATES[-1]) == 1 and firing.lower().count("all traffic") == 1
        assert "tpl_withdrawn" not in firing


def wait_until(condition: Any, what: str, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting until {what}:\n{log.read_text()[-3000:]}")


def stored_rows(base: str) -> int:
    with urllib.request.urlopen(f"{base}/api/query/ingestion-summary", timeout=10) as reply:
        return sum(int(r["rows"]) for r in json.loads(reply.read()))
