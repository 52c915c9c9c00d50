"""``make bench-alerts``: how well the real worker's alerts tell the truth, on the real broker.

A seeded simulated day — healthy noise (2% render errors, Zipf-popular templates, API
traffic with rare errors) with scripted incidents of every rule kind — replayed four ways:

(a) live: a running worker, the day published in send order, compressed into
    ``EPT_BENCH_LIVE_S`` seconds (default 120);
(b) backlog: the day published while no worker runs, then a worker started on it;
(c) as (a), with 10% of the events sent by a host whose clock is 10 minutes fast;
(d) as (a), with 1% of the sends re-sent at a later offset (a producer retry).

Record timestamps stand for the broker's clock. ept creates its event topics stamped by
the broker (LogAppendTime); here the bench creates them with producer timestamps and
stamps each record with its simulated send time, as a broker living in simulated time
would.

Under compression (x720 by default) a second of the worker's delivery jitter spans twelve
minutes of event time, so the live runs allow ``EPT_ALLOWED_LATENESS_S=1800``: the
share of jitter the default 30 s covers in real time. Late events are printed; any would
make a notice depend on delivery.

Printed per scenario: incidents detected / missed, false alerts (firings no incident
explains), detection delay in event time (incident start to its first firing), late
events, and whether the notices equal those of the worker's logic fed in event-time
order (``tests.alert_streams.drive``) and those of (a).

First, the scenarios of the platform failing (issue #25: renders that stop, thin traffic,
wrong clocks, a storm, a popular healthy template, an unfixed regression, a rate at the
threshold), run through the worker's own classes on a simulated clock
(:mod:`bench.alert_scenarios`, about a minute; ``EPT_BENCH_ALERTS_LIVE=0`` stops there);
then a 10,000-template storm on the real broker (:mod:`bench.storm`).
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from bench import alert_scenarios, storm
from bench.common import kafka_bootstrap, percentile, print_table
from ept.core.kafka import connection_config, ensure_topics
from ept.core.settings import Settings, load_settings
from ept.processors.alerts.topic import FIRING, AlertNotice, read_alerts
from ept.processors.worker.logic.collector import SourceEvent
from ept.processors.worker.logic.rules import load_rules
from ept.processors.worker.logic.scope_evaluation import BLOCK_S
from ept.schemas.registry import EVENT_NAMES
from tests.alert_streams import (
    EXPECTED_RULE,
    INCIDENTS,
    MINUTE_MS,
    Message,
    Notices,
    Traffic,
    drive,
    event_time_order,
    message_of,
    notices_of,
    partition_messages,
    simulate,
)
from tests.events import EventPublisher
from tests.worker_process import Worker

SEED = 20261201
DAY_MINUTES = 24 * 60
LIVE_SECONDS = float(os.environ.get("EPT_BENCH_LIVE_S", "120"))
LIVE_LATENESS_S = 1800
MAX_CLOCK_SKEW_S = 300  # the worker's default (EPT_MAX_CLOCK_SKEW_S)
PARTITIONS = 3
# How long each scripted incident lasts (tests.alert_streams.simulate), in minutes.
INCIDENT_MINUTES = {"error_rate": 10, "api_burst": 4, "slow_renders": 40,
                    "template_failures": 50}
# Rules an incident shows in besides its own, and the rules the day's end (all traffic
# stopping) rightly fires.
ALSO_SHOWS_IN = {"slow_renders": ("duration_regression",)}
VOLUME_RULES = ("renders_stopped", "api_calls_stopped")
INCIDENT_SCRIPT = [(INCIDENTS[i % len(INCIDENTS)], 60 + i * 85) for i in range(16)]


@dataclass(frozen=True)
class Scenario:
    name: str
    live: bool
    fast_clock: float = 0.0
    duplicates: float = 0.0


SCENARIOS = [Scenario("(a) live", True), Scenario("(b) backlog", False),
             Scenario("(c) clock +10 min", True, fast_clock=0.1),
             Scenario("(d) 1% re-sent", True, duplicates=0.01)]


@dataclass(frozen=True)
class Outcome:
    scenario: Scenario
    start_ms: int  # of the simulated day
    events: int
    alerts: list[AlertNotice]
    late_events: float
    expected: Notices  # the worker's logic fed in event-time order
    horizon_ms: int  # both judged at least this far: notices are compared up to it

    def told(self) -> Notices:
        """The frontier's notices of the run, up to the horizon."""
        return up_to(notices_of(self.alerts), self.horizon_ms)


@dataclass(frozen=True)
class Quality:
    detected: int
    missed: int
    false_alerts: int
    delays_s: list[float]


def judge_quality(alerts: list[AlertNotice], start_ms: int) -> Quality:
    """Which scripted incidents a run's firings detected, and which firings were false.

    A firing is explained by an incident of its rule (the incident is detected), by an
    incident that also shows in another rule (most videos slow for 40 minutes is a
    duration regression too), or, for the volume drops, by the end of the day's traffic.
    Told ahead of the frontier, a firing is the frontier's own once confirmed; one
    withdrawn is a false alert.
    """
    windows = {rule.name: rule.window_minutes for rule in load_rules(None)}
    day_end_ms = start_ms + DAY_MINUTES * MINUTE_MS
    withdrawn = {(n.fingerprint, n.decided_at_ms) for n in alerts
                 if n.ahead and n.status != FIRING}
    first_firing: dict[int, int] = {}
    false_alerts = 0
    for notice in alerts:
        rule = notice.rule
        if notice.status != FIRING or notice.renotify:
            continue
        if notice.ahead:
            false_alerts += (notice.fingerprint, notice.decided_at_ms) in withdrawn
            continue
        explained = rule in VOLUME_RULES and notice.decided_at_ms >= day_end_ms
        for index, (kind, minute) in enumerate(INCIDENT_SCRIPT):
            begin = start_ms + minute * MINUTE_MS
            end = begin + (INCIDENT_MINUTES[kind] + windows[rule]) * MINUTE_MS
            if not begin <= notice.decided_at_ms <= end:
                continue
            if EXPECTED_RULE[kind] == rule:
                explained = True
                first_firing[index] = min(first_firing.get(index, notice.decided_at_ms),
                                          notice.decided_at_ms)
            explained = explained or rule in ALSO_SHOWS_IN.get(kind, ())
        false_alerts += not explained
    delays = [(at - start_ms - INCIDENT_SCRIPT[i][1] * MINUTE_MS) / 1000
              for i, at in first_firing.items()]
    return Quality(len(first_firing), len(INCIDENT_SCRIPT) - len(first_firing),
                   false_alerts, delays)


def relative(notices: Notices, start_ms: int) -> Notices:
    """``notices`` with their times counted from the simulated day's start (each run
    places the day at its own time)."""
    return {key: [(status, value, at_ms - start_ms, renotify)
                  for status, value, at_ms, renotify in told]
            for key, told in notices.items()}


def create_event_topics(settings: Settings) -> None:
    """The event topics with producer timestamps (see the module's docstring), then the
    rest as ept creates them."""
    admin = AdminClient(connection_config(settings))
    futures = admin.create_topics([
        NewTopic(topic, PARTITIONS, 1, config={"message.timestamp.type": "CreateTime"})
        for topic in settings.topics.events.values()])
    for future in futures.values():
        future.result(30)
    ensure_topics(settings)


def publish_live(publisher: EventPublisher, traffic: Traffic) -> None:
    """Each simulated minute's sends in send order, paced to the compressed clock."""
    messages = sorted((event for stream in traffic.streams.values() for event in stream),
                      key=lambda event: event.record_ms)
    began = time.monotonic()
    seconds_per_minute = LIVE_SECONDS / DAY_MINUTES
    for minute, events in groupby(messages, key=lambda e: (e.record_ms - traffic.start_ms)
                                  // MINUTE_MS):
        publisher.publish_to_partitions(map(message_of, events))
        pause = began + (minute + 1) * seconds_per_minute - time.monotonic()
        if pause > 0:
            time.sleep(pause)


def clock_messages(at_ms: int) -> list[Message]:
    """One record per source partition at ``at_ms``, as records arriving then would be.

    Idle event time follows the broker's clock (the newest record timestamp, then the
    worker's wall clock in bounded steps: docs/alerts.md, Clocks both ways), not the
    worker's clock alone: a day published with timestamps hours in the past would be
    judged past its end only hours later. These records move the broker's clock past the
    horizon ``drive`` judges; they are beyond it, so they are never judged themselves.
    """
    fields = {"template_id": "bench_clock", "endpoint": "/bench/clock", "render_type": "still",
              "reason": "timeout", "duration_ms": 1000.0}
    return [message_of(SourceEvent(event, partition, 0, at_ms,
                                   {**fields, "event_time": at_ms,
                                    "event_id": f"clock-{event}-{partition}"}))
            for event in EVENT_NAMES for partition in range(PARTITIONS)]


def run(scenario: Scenario, bootstrap: str, state: Path) -> Outcome:
    # Ends 6 to 12 h ago, at the start of a six-hour block: the regression baselines'
    # blocks then cut every scenario's day alike, so their notices compare with (a)'s.
    block_ms = BLOCK_S * 1000
    start_ms = (int(time.time() * 1000) - 30 * 3600_000) // block_ms * block_ms
    traffic = simulate(SEED, DAY_MINUTES, INCIDENT_SCRIPT, partitions=PARTITIONS,
                       fast_clock=scenario.fast_clock, duplicates=scenario.duplicates,
                       start_ms=start_ms)
    settings = load_settings(kafka_bootstrap=bootstrap, state_dir=state,
                             topic_prefix=f"benchalerts{uuid.uuid4().hex[:6]}.",
                             topic_partitions=PARTITIONS)
    create_event_topics(settings)
    publisher = EventPublisher(settings)
    log = state / f"worker-{uuid.uuid4().hex[:6]}.log"
    lateness = {"EPT_ALLOWED_LATENESS_S": str(LIVE_LATENESS_S)} if scenario.live else {}
    judged_through = traffic.end_ms + 4 * 3600_000
    clock = clock_messages(judged_through + int(lateness.get("EPT_ALLOWED_LATENESS_S", "30"))
                           * 1000 + MINUTE_MS)
    if not scenario.live:
        publisher.publish_to_partitions([*partition_messages(traffic), *clock])
    # The worker's default skew, as drive() has it: the integration tests' Worker allows
    # 16 h for backlogs on broker-stamped topics, but here record timestamps are the
    # simulated broker's, and a skew that wide would count scenario (c)'s fast clock as
    # right.
    worker = Worker(settings, log, EPT_MAX_CLOCK_SKEW_S=str(MAX_CLOCK_SKEW_S), **lateness)
    try:
        if scenario.live:
            publish_live(publisher, traffic)
            publisher.publish_to_partitions(clock)
        # As far as drive() judges (4 h past the day): every incident has resolved.
        worker.wait_judged(judged_through, PARTITIONS, timeout=900)
        late = worker.counter("ept_worker_late_events_total")
    finally:
        worker.stop()
    alerts: list[AlertNotice] = []
    read_alerts(settings, alerts.append, until_end=True)
    expected = drive(traffic, event_time_order(traffic), signal_partitions=PARTITIONS,
                     lateness_ms=int(lateness.get("EPT_ALLOWED_LATENESS_S", "30")) * 1000)
    # The worker judges past ``judged_through`` (the clock messages lead it by the
    # lateness and a minute), drive() not: a re-notification there is in one of them only.
    horizon_ms = judged_through - int(lateness.get("EPT_ALLOWED_LATENESS_S", "30")) * 1000
    return Outcome(scenario, start_ms, sum(map(len, traffic.streams.values())), alerts, late,
                   up_to(expected, horizon_ms), horizon_ms)


def up_to(notices: Notices, horizon_ms: int) -> Notices:
    """``notices`` decided at or before ``horizon_ms``."""
    kept = {key: [notice for notice in told if notice[2] <= horizon_ms]
            for key, told in notices.items()}
    return {key: told for key, told in kept.items() if told}


def same_as(notices: Notices, reference: Notices, outcome: Outcome) -> str:
    """Whether a scenario's notices are (a)'s; "-" for (c), whose fast clock makes its
    events count at other times than (a)'s."""
    if outcome.scenario.fast_clock:
        return "-"
    return "yes" if notices == reference else "NO"


def main() -> None:
    alert_scenarios.main()
    if os.environ.get("EPT_BENCH_ALERTS_LIVE", "1") == "0":
        return
    storm.main()
    with kafka_bootstrap() as bootstrap, tempfile.TemporaryDirectory() as state:
        outcomes = [run(scenario, bootstrap, Path(state)) for scenario in SCENARIOS]
    reference = relative(outcomes[0].told(), outcomes[0].start_ms)
    rows = []
    for outcome in outcomes:
        quality = judge_quality(outcome.alerts, outcome.start_ms)
        delays = quality.delays_s or [float("nan")]
        notices = outcome.told()
        rows.append([outcome.scenario.name, f"{outcome.events:,}",
                     f"{quality.detected}/{len(INCIDENT_SCRIPT)}", quality.missed,
                     quality.false_alerts, f"{percentile(delays, 0.5):.0f}",
                     f"{max(delays):.0f}", f"{outcome.late_events:.0f}",
                     "yes" if notices == outcome.expected else "NO",
                     same_as(relative(notices, outcome.start_ms), reference, outcome)])
    print_table(f"Alert quality over a simulated day ({len(INCIDENT_SCRIPT)} incidents, "
                f"live runs compressed into {LIVE_SECONDS:.0f} s; targets: all detected, "
                "0 false, notices identical)",
                ["scenario", "events", "detected", "missed", "false alerts",
                 "delay p50 s", "delay max s", "late events", "= event-time order",
                 "= (a)"], rows)


if __name__ == "__main__":
    main()
