"""The demo of ``make run`` (``ept run --demo``) on the real broker: its render slowdown is
caught by the duration_regression rule, against the day of history the demo publishes
first."""

from __future__ import annotations

import threading
import time
from importlib import resources
from pathlib import Path

from ept.core.kafka import ensure_topics
from ept.core.settings import Settings
from ept.deploy.demo import DemoTraffic
from ept.processors.alerts.topic import AlertNotice, read_alerts
from tests.worker_process import Worker


def test_the_demo_slowdown_is_a_duration_regression(settings: Settings, tmp_path: Path) -> None:
    ensure_topics(settings)
    rules = resources.files("ept.processors.worker.logic") / "rules.demo.toml"
    worker = Worker(settings, tmp_path / "worker.log", EPT_RULES_FILE=str(rules))
    demo = DemoTraffic(settings)
    thread = threading.Thread(target=demo.run, daemon=True)
    thread.start()
    regressions: list[AlertNotice] = []
    try:
        deadline = time.monotonic() + 300
        while not regressions and time.monotonic() < deadline:
            time.sleep(5)
            alerts: list[AlertNotice] = []
            read_alerts(settings, alerts.append, until_end=True)
            regressions = [a for a in alerts if a.rule == "duration_regression"]
        elapsed = demo.elapsed
    finally:
        demo.stop.set()
        thread.join(30)
        worker.stop()
    assert regressions, "no duration_regression alert within 300 s"
    [alert] = regressions
    assert alert.status == "firing" and alert.labels == {"render_type": "video"}
    assert alert.action == "check_recent_deploys" and alert.severity == "medium"
    assert alert.value > 1.5 and "x its 1-day baseline (> 1.5x) over 2m" in alert.summary
    assert elapsed >= 45  # not before the script's slowdown
