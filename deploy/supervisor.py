"""``ept run``: the whole pipeline on one machine, supervised.

Starts the local broker (unless ``EPT_KAFKA_BOOTSTRAP`` names a cluster), creates the
topics, runs the worker and the sink as child processes (restarting one that crashes),
delivers alerts to Alertmanager (``EPT_ALERTMANAGER_URLS``, else a local one when its
binary is on this machine), optionally drives demo traffic, and prints progress: what
started, events/s, alerts as they fire and resolve. Ctrl-C or SIGTERM stops everything it
started, children first.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ept.core.kafka import ensure_topics
from ept.core.settings import Settings
from ept.core.template_controls import TemplateControl, TemplateControlView
from ept.deploy.broker import LocalBroker
from ept.deploy.local_alertmanager import (
    INSTALL_HINT,
    AlertmanagerError,
    LocalAlertmanager,
    find_binary,
)

# The local Alertmanager only holds alerts (its API: /api/v2/alerts); it sends nowhere.
# deploy/alertmanager/alertmanager.yml is the example of real routing.
LOCAL_ALERTMANAGER_CONFIG = """\
route:
  receiver: local
  group_by: [alertname, template_id, endpoint, render_type]
  group_wait: 10s
  group_interval: 1m
  repeat_interval: 4h
receivers:
  - name: local
"""

Echo = Callable[[str], None]


def resilient(echo: Echo) -> Echo:
    """``echo`` that goes quiet once its output is gone (a closed pipe: ``ept run | tee``
    stopped with Ctrl-C kills tee first) instead of raising in the middle of a shutdown,
    which would leave the broker and the children running."""
    gone = threading.Event()

    def say(line: str) -> None:
        if gone.is_set():
            return
        try:
            echo(line)
        except OSError:  # BrokenPipeError, EIO on a vanished terminal
            gone.set()

    return say


@dataclass
class Component:
    """A supervised child process (``ept worker`` or ``ept sink``)."""

    name: str
    args: list[str]
    health_url: str
    log_path: Path
    environment: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child's lifetime
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ept.deploy.cli", *self.args], env=self.environment,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.health_url, timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def crashed(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


class Supervisor:
    """Runs the pipeline until :meth:`request_stop`. ``run`` blocks."""

    def __init__(self, settings: Settings, demo: bool, echo: Echo,
                 worker_processes: int = 1) -> None:
        self.settings = settings
        self.demo = demo
        self.worker_processes = worker_processes
        self.echo = resilient(echo)
        self.stopping = threading.Event()
        self.broker: LocalBroker | None = None
        self.alertmanager: LocalAlertmanager | None = None
        self.templates: TemplateControlView | None = None
        self.components: list[Component] = []
        self.alert_counts = {"firing": 0, "resolved": 0}

    def request_stop(self, *_: object) -> None:
        self.stopping.set()

    def _components(self) -> list[Component]:
        settings = self.settings
        environment = {**os.environ, "EPT_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                       "EPT_STATE_DIR": str(settings.state_dir)}
        worker_args = ["worker", "--processes", str(self.worker_processes)]
        if self.demo and settings.rules_file is None:
            demo_rules = resources.files("ept.processors.worker.logic") / "rules.demo.toml"
            with resources.as_file(demo_rules) as path:
                worker_args += ["--rules", str(path)]
        logs = settings.state_dir / "logs"
        base = f"http://{settings.http_host}"
        components = [
            Component("worker", worker_args, f"{base}:{settings.worker_port}/health",
                      logs / "worker.log", environment),
            Component("sink", ["sink"], f"{base}:{settings.sink_port}/health",
                      logs / "sink.log", environment),
        ]
        if settings.alertmanager_url_list:
            components.append(Component(
                "notifier", ["notify"], f"{base}:{settings.notifier_port}/metrics",
                logs / "notifier.log",
                {**environment, "EPT_ALERTMANAGER_URLS": settings.alertmanager_urls}))
        return components

    def run(self) -> None:
        from ept.deploy.demo import DemoTraffic

        started = time.monotonic()
        self.echo(f"ept: state in {self.settings.state_dir}")
        self._start_broker()
        created = ensure_topics(self.settings)
        self.echo(f"[ok] topics ready ({len(created)} created, prefix "
                  f"{self.settings.topic_prefix!r})")
        self._start_alertmanager()
        self.components = self._components()
        for component in self.components:
            component.start()
            self.echo(f"[..] {component.name} starting (log: {component.log_path})")
        self._wait_healthy()
        if self.stopping.is_set():
            return
        self.echo(f"[ok] dashboard: http://{self.settings.http_host}:{self.settings.sink_port}/"
                  f"   worker stats: http://{self.settings.http_host}:"
                  f"{self.settings.worker_port}/stats")
        if self.settings.clickhouse_server is None:
            self.echo(f"[ok] analysts' SQL (any ClickHouse client, or `ept sql`): "
                      f"http://{self.settings.sql_bind}:{self.settings.sql_port}/")
        self.echo(f"[ok] pipeline up in {time.monotonic() - started:.0f}s; Ctrl-C stops it")
        threading.Thread(target=self._follow_alerts, daemon=True, name="ept-alerts").start()
        self.templates = TemplateControlView(self.settings, on_update=self._show_control).start()
        demo = None
        if self.demo:
            demo = DemoTraffic(self.settings)
            threading.Thread(target=demo.run, daemon=True, name="ept-demo").start()
            self.echo("[..] demo traffic: the last day's renders (the regression baseline), "
                      "then a failing template, an API outage, a render slowdown, and recovery")
        try:
            self._supervise(demo)
        finally:
            if demo is not None:
                demo.stop.set()

    def _start_broker(self) -> None:
        if self.settings.kafka_bootstrap_is_explicit:
            self.echo(f"[ok] using Kafka at {self.settings.kafka_bootstrap}")
            return
        port = int(self.settings.kafka_bootstrap.rsplit(":", 1)[1])
        self.broker = LocalBroker(self.settings.state_dir / "kafka", port)
        self.echo("[..] starting the local Kafka broker (first start downloads it)")
        status = self.broker.start()
        self.echo(f"[ok] broker up: {status.describe()}")

    def _start_alertmanager(self) -> None:
        """Use the Alertmanager(s) named, else start a local one if there is a binary."""
        if self.settings.alertmanager_url_list:
            self.echo(f"[ok] alerts go to Alertmanager at {self.settings.alertmanager_urls}")
            return
        binary = find_binary()
        if binary is None:
            self.echo(f"[--] no Alertmanager: alerts stay on the topic; {INSTALL_HINT}")
            return
        data_dir = self.settings.state_dir / "alertmanager"
        data_dir.mkdir(parents=True, exist_ok=True)
        config = data_dir / "alertmanager.yml"
        config.write_text(LOCAL_ALERTMANAGER_CONFIG)
        alertmanager = LocalAlertmanager(data_dir, config,
                                         self.settings.local_alertmanager_port, binary)
        try:
            alertmanager.start()
        except AlertmanagerError as exc:
            self.echo(f"[--] local Alertmanager did not start ({exc}); alerts stay on the topic")
            return
        self.alertmanager = alertmanager
        self.settings = self.settings.replace(alertmanager_urls=alertmanager.url)
        self.echo(f"[ok] local Alertmanager: {alertmanager.url} (alerts: "
                  f"{alertmanager.url}/api/v2/alerts)")

    def _wait_healthy(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        pending = list(self.components)
        while pending and not self.stopping.is_set():
            for component in list(pending):
                if component.crashed():
                    raise RuntimeError(f"{component.name} exited at start; see "
                                       f"{component.log_path}")
                if component.healthy():
                    pending.remove(component)
                    self.echo(f"[ok] {component.name} healthy")
            if time.monotonic() > deadline:
                raise RuntimeError(f"not healthy within {timeout:.0f}s: "
                                   f"{', '.join(c.name for c in pending)}")
            time.sleep(0.5)

    def _supervise(self, demo: object) -> None:
        from ept.deploy.demo import DemoTraffic, phase_at

        last_report, last_count, last_phase = time.monotonic(), 0, ""
        while not self.stopping.wait(1.0):
            for component in self.components:
                if component.crashed():
                    component.restarts += 1
                    self.echo(f"[!!] {component.name} exited with code "
                              f"{component.process.returncode if component.process else '?'}; "
                              f"restarting (restart #{component.restarts})")
                    component.start()
            if isinstance(demo, DemoTraffic):
                phase = phase_at(demo.elapsed)
                if phase != last_phase:
                    self.echo(f"[demo] {demo.elapsed:5.0f}s  phase: {phase}")
                    last_phase = phase
            if time.monotonic() - last_report >= 10:
                count = demo.published() if isinstance(demo, DemoTraffic) else 0
                rate = (count - last_count) / (time.monotonic() - last_report)
                stored = self._stored_rows()
                held = self._alertmanager_holds()
                disabled = (sum(c.disabled for c in self.templates.controls())
                            if self.templates is not None else 0)
                refused = demo.refused() if isinstance(demo, DemoTraffic) else 0
                self.echo(f"[stat] events/s {rate:6.0f}   stored rows {stored}   alerts fired "
                          f"{self.alert_counts['firing']}, resolved "
                          f"{self.alert_counts['resolved']}"
                          + (f"   in Alertmanager {held}" if held else "")
                          + (f"   templates disabled {disabled}" if disabled else "")
                          + (f"   renders refused {refused}" if refused else ""))
                last_report, last_count = time.monotonic(), count

    def _stored_rows(self) -> str:
        url = (f"http://{self.settings.http_host}:{self.settings.sink_port}"
               "/api/query/ingestion-summary")
        request = urllib.request.Request(url)
        if self.settings.api_token is not None:
            request.add_header("Authorization",
                               f"Bearer {self.settings.api_token.get_secret_value()}")
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                return str(sum(row["rows"] for row in json.loads(reply.read())))
        except (OSError, ValueError):
            return "?"

    def _alertmanager_holds(self) -> str:
        """How many alerts the local Alertmanager holds, by state ('' when none runs)."""
        if self.alertmanager is None:
            return ""
        try:
            with urllib.request.urlopen(f"{self.alertmanager.url}/api/v2/alerts",
                                        timeout=5) as reply:
                held = json.loads(reply.read())
        except (OSError, ValueError):
            return "?"
        firing = sum(1 for alert in held if alert["status"]["state"] == "active")
        return f"{firing} firing of {len(held)}"

    def _follow_alerts(self) -> None:
        from ept.deploy.alert_tail import format_alert
        from ept.processors.alerts.topic import AlertNotice, read_alerts

        def show(alert: AlertNotice) -> None:
            self.alert_counts[alert.status] = self.alert_counts.get(alert.status, 0) + 1
            self.echo(f"[alert] {format_alert(alert)}")

        read_alerts(self.settings, show, self.stopping, from_beginning=False)

    def _show_control(self, control: TemplateControl) -> None:
        self.echo(f"[template] {control.template_id} {control.state} by {control.by}: "
                  f"{control.reason}")

    def shutdown(self) -> None:
        """Stop children, then the broker we started. Blocks until they are gone."""
        self.stopping.set()
        if self.templates is not None:
            self.templates.close()
        for component in reversed(self.components):
            component.stop()
            self.echo(f"[ok] {component.name} stopped")
        if self.alertmanager is not None:
            self.alertmanager.stop()
            self.echo("[ok] Alertmanager stopped")
        if self.broker is not None and self.broker.stop():
            self.echo("[ok] broker stopped")


def run_pipeline(settings: Settings, demo: bool, echo: Echo, worker_processes: int = 1) -> None:
    supervisor = Supervisor(settings, demo, echo, worker_processes)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    try:
        supervisor.run()
    finally:
        supervisor.shutdown()
