"""The worker as a separate process (``ept worker``), for integration tests and benches."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from ept.core.settings import Settings
from ept.processors.worker.logic.event_time import FAMILIES
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
# What the Kafka clients log while a broker or a peer is away, again and again.
_CLIENT_NOISE = re.compile(r"rdkafka|Unable connect|Unable to update metadata|NodeNotReady|"
                           r"Failed fetch|Heartbeat|[Cc]oordinator|Connection at|"
                           r"produce response|KafkaConnectionError")
_FRONTIER = re.compile(r'^ept_worker_event_time_frontier_seconds\{family="(\w+)",'
                       r'partition="(\d+)"\} (\S+)$', re.MULTILINE)


class Worker:
    """``ept worker`` on ``settings``' topics; ready (joined its group) when constructed,
    unless ``wait`` is False (then :meth:`wait_ready`)."""

    def __init__(self, settings: Settings, log_path: Path, *, wait: bool = True,
                 **environment: str) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._log_start = log_path.stat().st_size if log_path.exists() else 0  # log is shared
        variables = {**os.environ, "EPT_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                     "EPT_TOPIC_PREFIX": settings.topic_prefix,
                     "EPT_TOPIC_PARTITIONS": str(settings.topic_partitions),
                     "EPT_WORKER_PORT": str(self.port), "EPT_STATE_DIR": str(settings.state_dir),
                     # a killed worker's partitions move on after 10 s, not 45
                     "EPT_WORKER_SESSION_TIMEOUT_S": "10",
                     # tests publish up to 15 h of event time at once to topics the
                     # broker stamps: events older than the skew behind their record
                     # are late (docs/alerts.md, Clocks both ways); 23 h ahead stays wrong
                     "EPT_MAX_CLOCK_SKEW_S": "57600", **environment}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ept.deploy.cli", "worker", "-l", "info"], env=variables,
            stdout=open(log_path, "ab"), stderr=subprocess.STDOUT, cwd=REPO)  # noqa: SIM115
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()[-3000:]
            if b"[^Worker]: Ready" in self.log_path.read_bytes()[self._log_start:]:
                return
            time.sleep(0.5)
        raise AssertionError(f"worker not ready: {self.log_path.read_text()[-3000:]}")

    def log(self) -> str:
        """What this worker logged (the log file may be shared with earlier workers)."""
        return self.log_path.read_bytes()[self._log_start:].decode(errors="replace")

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=10) as reply:
            return dict(json.loads(reply.read()))

    def metrics(self) -> str:
        """The worker's /metrics page (Prometheus text format)."""
        return metrics_page(self.port)

    def counter(self, name: str) -> float:
        """The value of an unlabelled metric, e.g. ``ept_worker_late_events_total``."""
        match = re.search(rf"^{name} (\S+)$", self.metrics(), re.MULTILINE)
        assert match, f"no metric {name}"
        return float(match.group(1))

    def frontiers(self) -> dict[tuple[str, int], float]:
        """The event time (s) each family is judged up to, per signals partition."""
        return {(family, int(partition)): float(value)
                for family, partition, value in _FRONTIER.findall(self.metrics())}

    def wait_judged(self, through_ms: int, partitions: int, timeout: float = 300.0) -> None:
        """Until every scope has been judged beyond ``through_ms`` of event time, and the
        notices of that judgment are published: the frontier has moved again after it
        (``evaluate`` handles one report at a time and publishes before the next)."""
        deadline = time.monotonic() + timeout
        passed: dict[tuple[str, int], float] | None = None
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()[-3000:]
            frontiers = self.frontiers()
            complete = len(frontiers) == len(FAMILIES) * partitions
            if complete and passed is None and min(frontiers.values()) * 1000 > through_ms:
                passed = frontiers
            elif complete and passed is not None and all(
                    frontiers[key] > passed[key] for key in passed):
                return
            time.sleep(0.5)
        raise AssertionError(f"not judged through {through_ms}: {self.frontiers()}\n"
                             f"{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


def log_digest(log_path: Path, lines: int = 80) -> str:
    """The last ``lines`` warnings, errors, notices and restarts of a worker log, without
    the Kafka clients' retry noise: what a failed test is explained by."""
    kept = [line for line in log_path.read_text(errors="replace").splitlines()
            if re.search(r"\[(WARNING|ERROR|CRITICAL)\]|alert |Worker\]: (Starting|Ready)", line)
            and not _CLIENT_NOISE.search(line)]
    return "\n".join(kept[-lines:])


def metrics_page(port: int) -> str:
    """The /metrics page of the worker on ``port`` (Prometheus text format)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return str(reply.read().decode())


def progress_lines(port: int) -> str:
    """The event-time and lag lines of a worker's /metrics page, or why there are none."""
    try:
        page = metrics_page(port)
    except OSError as exc:
        return f"no /metrics page ({exc})"
    return "\n".join(line for line in page.splitlines()
                     if line.startswith(("ept_worker_event_time", "ept_worker_consumer_lag")))
