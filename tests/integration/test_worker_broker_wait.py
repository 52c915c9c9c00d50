"""A worker started while its broker is down waits for it, then works."""

from __future__ import annotations

import time
from pathlib import Path

from ept.core.settings import Settings
from ept.deploy.broker import LocalBroker
from tests.events import BASE_MS, EventPublisher, record
from tests.integration.test_worker import alerts_of, scoped
from tests.worker_process import Worker

WAITING = "waiting for the broker at"


def test_a_worker_started_before_its_broker_waits_then_alerts(
        settings: Settings, native_broker: LocalBroker, tmp_path: Path) -> None:
    native_broker.stop()
    try:
        worker = Worker(settings, tmp_path / "worker.log", wait=False)
        deadline = time.monotonic() + 60
        while worker.log().count(WAITING) < 3:  # tried, backed off, tried again...
            assert worker.process.poll() is None, f"the worker exited:\n{worker.log()[-3000:]}"
            assert time.monotonic() < deadline, f"no waiting said:\n{worker.log()[-3000:]}"
            time.sleep(0.5)
        waited = worker.log()
        assert "Traceback" not in waited and "NodeNotReadyError" not in waited, waited
        assert all(WAITING in line for line in waited.splitlines() if line.strip()), (
            f"more than one line per try:\n{waited}")
    finally:
        native_broker.start()
    try:
        worker.wait_ready()
        EventPublisher(settings).publish(
            [("api_error", record("api_error", BASE_MS + i * 1000, endpoint="/api/up"))
             for i in range(11)])
        alerts = alerts_of(settings, lambda found: any(
            a["labels"] == {"endpoint": "/api/up"} for a in found), timeout=120, settle=0)
    finally:
        worker.stop()
    assert scoped(alerts, "api_degradation", endpoint="/api/up")[:1] == [("firing", 11.0)]
