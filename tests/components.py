"""Pipeline processes (``ept sink`` / ``ept worker``) that fault tests kill and restart."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


class Component:
    """A child process (``ept sink`` / ``ept worker``) that the test kills and restarts."""

    def __init__(self, args: list[str], environment: dict[str, str], log: Path) -> None:
        self.args, self.environment, self.log = args, environment, log
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0
        self._log_start = 0

    def start(self) -> None:
        self._log_start = self.log.stat().st_size if self.log.exists() else 0
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ept.deploy.cli", *self.args], env=self.environment, cwd=REPO,
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self.kills += 1
        self.start()

    def wait_logged(self, marker: bytes, timeout_s: float = 180.0) -> None:
        """Until the log holds ``marker`` (``b"[^Worker]: Ready"``) since the last start;
        the component must not exit meanwhile."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, \
                self.log.read_text()[-3000:]
            if marker in self.log.read_bytes()[self._log_start:]:
                return
            time.sleep(0.5)
        raise AssertionError(f"{marker!r} not logged within {timeout_s:.0f} s")

    def ensure_running(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self.start()

    def rss_mb(self) -> float:
        try:
            return psutil.Process(self.process.pid).memory_info().rss / 2**20  # type: ignore[union-attr]
        except (psutil.Error, AttributeError):
            return 0.0

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()


def summary(port: int) -> tuple[int, int]:
    try:
        with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/api/query/ingestion-summary", timeout=10) as reply:
            rows = json.loads(reply.read())
    except OSError:
        return -1, -1
    return sum(r["rows"] for r in rows), sum(r["distinct_event_ids"] for r in rows)
