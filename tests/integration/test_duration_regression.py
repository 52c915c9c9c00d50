"""The duration_regression rule on the real broker: a week of render history, then today.

One worker reads a week and an hour of renders of three render types (each with its own
template), published with their event times:

* ``video``: stable durations with normal noise, then the last hour at twice as long;
* ``still``: stable durations with normal noise throughout;
* ``batch``: durations drifting 10% longer every day.

Only the video regression may page (for its render type and its template); the drift is
measured (its /stats value) and, against a trailing week, stays under 1.5x.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

from ept.core.kafka import ensure_topics
from ept.core.settings import Settings
from ept.processors.alerts.topic import AlertNotice, read_alerts
from tests.events import EventPublisher, record
from tests.worker_process import Worker

MINUTE_MS, HOUR_MS, DAY_MS = 60_000, 3_600_000, 86_400_000
RULES = """
[[rules]]
name = "duration_regression"
kind = "duration_regression"
scopes = ["render_type", "template"]
window_minutes = 60
min_samples = 30
renotify_minutes = 0
severity = "medium"
action = "check_recent_deploys"
"""


def week_and_today(end_ms: int) -> list[tuple[str, dict[str, object]]]:
    """A render of each type every minute of the 8 days to ``end_ms``: the same renders
    relative to ``end_ms`` whatever the time of day (the last hour's 60 renders are a
    small sample: drawn afresh, at some times of day their p95 fell outside the bounds
    below)."""
    rng = random.Random(16)
    start_ms = end_ms - 8 * DAY_MS
    events = []
    for at_ms in range(start_ms, end_ms, MINUTE_MS):
        usual = {kind: rng.lognormvariate(math.log(10_000), 0.25)
                 for kind in ("still", "video", "batch")}
        durations = {"still": usual["still"],
                     "video": usual["video"] * (2 if at_ms >= end_ms - HOUR_MS else 1),
                     "batch": usual["batch"] * 1.1 ** ((at_ms - start_ms) / DAY_MS)}
        for render_type, duration in durations.items():
            events.append(("render_completed", record(
                "render_completed", at_ms + rng.randrange(MINUTE_MS // 2),
                template_id=f"tpl-{render_type}", render_type=render_type,
                duration_ms=duration)))
    return events


def test_a_slow_hour_after_a_stable_week_pages_noise_and_drift_do_not(
        settings: Settings, tmp_path: Path) -> None:
    ensure_topics(settings)
    end_ms = (int(time.time() * 1000) // MINUTE_MS - 1) * MINUTE_MS
    EventPublisher(settings).publish(week_and_today(end_ms))
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    worker = Worker(settings, tmp_path / "worker.log", EPT_RULES_FILE=str(rules))
    try:
        worker.wait_judged(end_ms, settings.topic_partitions)
        rates = {(rate["scope"], *rate["labels"].values()): rate
                 for rate in worker.stats()["rates"]}
    finally:
        worker.stop()
    alerts: list[AlertNotice] = []
    read_alerts(settings, alerts.append, until_end=True)
    assert sorted((a.status, *a.labels.values()) for a in alerts) == [
        ("firing", "tpl-video"), ("firing", "video")], [a.summary for a in alerts]
    for alert in alerts:
        assert alert.action == "check_recent_deploys" and alert.severity == "medium"
        assert 1.5 < alert.value < 2.3, alert.summary
        assert "x its 7-day baseline (> 1.5x) over 60m" in alert.summary, alert.summary
    # What the trailing week makes of the others (the hour ending at the frontier):
    assert 0.8 < rates[("render_type", "still")]["value"] < 1.25, rates
    assert 1.1 < rates[("render_type", "batch")]["value"] < 1.5, rates
    assert rates[("render_type", "video")]["value"] > 1.5, rates
