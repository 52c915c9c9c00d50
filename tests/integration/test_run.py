"""``ept run`` stops everything it started, whatever happens to its output."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]


def port_taken(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(port_taken(9092) or port_taken(9093),
                    reason="ept run starts its broker on 9092 (and 9093), in use here")
def test_ept_run_stops_everything_when_its_output_pipe_is_closed(tmp_path: Path) -> None:
    """`make run | tee run.log` stopped with Ctrl-C: tee dies first, so every later line
    of the supervisor meets a closed pipe. Shutdown must still stop every child."""
    environment = {**os.environ, "EPT_STATE_DIR": str(tmp_path / "state"),
                   "EPT_WORKER_PORT": str(free_port()), "EPT_SINK_PORT": str(free_port()),
                   "EPT_NOTIFIER_PORT": str(free_port()), "EPT_SQL_PORT": str(free_port()),
                   "EPT_LOCAL_ALERTMANAGER_PORT": str(free_port())}
    for name in ("EPT_KAFKA_BOOTSTRAP", "EPT_CLICKHOUSE_URL", "EPT_ALERTMANAGER_URLS"):
        environment.pop(name, None)
    run = subprocess.Popen([sys.executable, "-m", "ept.deploy.cli", "run"], env=environment,
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    started: list[psutil.Process] = []
    try:
        assert run.stdout is not None
        deadline = time.monotonic() + 300
        seen = []
        while time.monotonic() < deadline:
            line = run.stdout.readline().decode()
            seen.append(line)
            assert line or run.poll() is None, "".join(seen)
            if line.startswith("[ok] pipeline up"):
                break
        started = psutil.Process(run.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in started)
        assert "kafka.Kafka" in names and "worker" in names and "sink" in names, names
        run.stdout.close()  # the reader is gone
        run.send_signal(signal.SIGINT)
        run.wait(180)
        _, alive = psutil.wait_procs(started, timeout=60)
        assert alive == [], [p.cmdline() for p in alive]
    finally:
        for process in started:
            if process.is_running():
                process.kill()
        if run.poll() is None:
            run.kill()
