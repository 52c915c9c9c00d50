"""Alert quality when the platform itself fails (issue #25): the scenarios of ``make
bench-alerts`` that days of event time, thin traffic, wrong clocks and storms are made of.

They cannot be replayed live on the broker here (a week of event time does not compress
into minutes without the compression's own jitter deciding the notices), so each runs a
live platform on a simulated true clock through the worker's own classes — ``Collector``
→ ``Frontiers`` → ``Evaluator`` → ``PartitionJudge``, the default rules, no Faust and no
Kafka — as ``tests/unit/test_event_time_clocks.py`` does: hosts record events by their
own clocks and hand them to Kafka (the SDK's send stamp by the host's clock), the broker
stamps each record as it lands (record time = send time + 20 ms), the collector reads
what has landed at every tick of the worker's clock and reports progress to every
signals partition's judge. Ticks are one second where a page's delay in true time is
measured, coarser (up to a minute, with the collector's clock step to match) through the
quiet days of a baseline.

Per scenario the four attributes of an alert (the Google SRE Workbook's "Alerting on
SLOs"):

* precision: firings an incident explains / all firings (re-notifications left out);
* recall: expected alerts (an incident in one scope) that fired / those expected;
* detection time: incident start → first firing notice, in event time (``decided_at``),
  and "told": the same to the true time the judge returned it (a delay in event time
  plus the frontier's wait: what an on-call engineer sees);
* reset time: incident end → resolution notice, in event time; "open" where the alert
  must stay open (an unfixed regression, renders that never come back);

and pages per incident and scope (firings, re-notifications apart), templates a
``template_failures`` page would have disabled (``auto_action``) that were healthy, and
in the storm, where the overall critical page came in the order of publication
(``publication_order`` applied to each batch a ``PartitionJudge.handle`` returns).

Run alone: ``python -m bench.alert_scenarios [name ...]``.
"""

from __future__ import annotations

import math
import random
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.common import print_table
from ept.core.send_stamp import SendStamp
from ept.processors.alerts.topic import FIRING, RESOLVED
from ept.processors.worker.collect_stage import DEDUP_HORIZON_MS
from ept.processors.worker.evaluate_stage import publication_order
from ept.processors.worker.logic.collector import MAX_CLOCK_STEP_MS, Collector, SourceEvent
from ept.processors.worker.logic.event_time import Frontiers, source_of
from ept.processors.worker.logic.partition_judge import PartitionJudge
from ept.processors.worker.logic.rules import Rule, load_rules
from ept.processors.worker.logic.scope_evaluation import DecidedNotice, Evaluator
from ept.processors.worker.logic.scopes import scope_partition
from ept.schemas.registry import EVENT_NAMES

SECOND_MS, MINUTE_MS, HOUR_MS, DAY_MS = 1000, 60_000, 3_600_000, 86_400_000
START = 20_600 * DAY_MS  # a UTC midnight (baseline blocks are six hours of the UTC day)
TRANSPORT_MS = 20  # host -> broker
LATENESS_MS, SKEW_MS, IDLE_MS = 30_000, 300_000, 10_000  # the worker's defaults
PARTITIONS = 3  # per event topic
SIGNAL_PARTITIONS = 3


@dataclass(frozen=True)
class Host:
    """A producing host: its clock reads true time + ``clock_ms``; ``sdk``: it stamps its
    send time (ept's SDK)."""

    producer: int
    clock_ms: int = 0
    sdk: bool = True


GOOD = Host(1)


@dataclass(frozen=True)
class Told:
    """A notice as the worker would publish it: at true time ``told_ms``, at ``rank`` in
    the order of publication (earlier ticks first; within a tick, each signals partition's
    batches in order, each batch in ``publication_order``)."""

    told_ms: int
    rank: int
    partition: int
    notice: DecidedNotice


class Platform:
    """Hosts, a broker, one collector and a judge per signals partition, on a true clock."""

    def __init__(self, *, rules: list[Rule] | None = None,
                 max_clock_step_ms: int = MAX_CLOCK_STEP_MS,
                 worker_clock: Callable[[int], int] | None = None, start_ms: int = START
                 ) -> None:
        self.rules = rules or load_rules(None)
        self.evaluator = Evaluator(self.rules)
        self.collector = Collector(SKEW_MS, IDLE_MS, DEDUP_HORIZON_MS, self.evaluator.families,
                                   max_clock_step_ms=max_clock_step_ms)
        self.collector.assign([source_of(event, p) for event in EVENT_NAMES
                               for p in range(PARTITIONS)], start_ms)
        counts = dict.fromkeys(EVENT_NAMES, PARTITIONS)
        self.states: dict[str, object] = {}
        self.judges = [PartitionJudge(self.evaluator, Frontiers(counts, LATENESS_MS),
                                      self.states, []) for _ in range(SIGNAL_PARTITIONS)]
        self._worker_clock = worker_clock or (lambda now_ms: 0)
        self._records: list[tuple[int, int, str, int, dict[str, object], SendStamp | None]] = []
        self._pending = 0  # index of the next record to land
        self._sorted = False
        self._offsets: dict[str, int] = {}
        self.now_ms = start_ms
        self.told: list[Told] = []
        self.events = 0

    def send(self, host: Host, event: str, at_ms: int, record: dict[str, object], *,
             key: str = "", partition: int | None = None, sent_at_ms: int | None = None
             ) -> None:
        """``host`` records ``event`` at true time ``at_ms`` and hands it to Kafka at
        ``sent_at_ms`` (later: it waited in the spool), keyed like the SDK (template id or
        endpoint) unless ``partition`` is given. Call before the first :meth:`run`."""
        assert not self._sorted, "every event is sent before the platform runs"
        sent = at_ms if sent_at_ms is None else sent_at_ms
        if partition is None:
            partition = zlib.crc32(key.encode()) % PARTITIONS
        body = {**record, "event_time": at_ms + host.clock_ms,
                "event_id": f"{host.producer}-{len(self._records)}"}
        stamp = SendStamp(sent + host.clock_ms, host.producer) if host.sdk else None
        self._records.append((sent + TRANSPORT_MS, len(self._records), event, partition, body,
                              stamp))

    def run(self, until_ms: int, tick_ms: int) -> None:
        """Every ``tick_ms`` of true time up to ``until_ms``: read what has landed, hand its
        signals to their judges, then report progress to every judge."""
        if not self._sorted:
            self._records.sort(key=lambda r: (r[0], r[1]))
            self._sorted = True
        records = self._records
        for now in range(self.now_ms + tick_ms, until_ms + 1, tick_ms):
            wall = now + self._worker_clock(now)
            batch = []
            while self._pending < len(records) and records[self._pending][0] <= now:
                record_ms, _, event, partition, body, stamp = records[self._pending]
                self._pending += 1
                source = source_of(event, partition)
                offset = self._offsets[source] = self._offsets.get(source, -1) + 1
                batch.append(SourceEvent(event, partition, offset, record_ms, body, stamp))
            self.events += len(batch)
            for signal in self.collector.collect(batch, wall):
                partition = scope_partition(signal.scope, SIGNAL_PARTITIONS)
                self._tell(now, partition, self.judges[partition].handle(signal))
            progress = self.collector.progress(wall)
            for partition, judge in enumerate(self.judges):
                self._tell(now, partition, judge.handle(progress))
            self.now_ms = now

    def _tell(self, now: int, partition: int, notices: list[DecidedNotice]) -> None:
        self.judges[partition].save()  # told at once: nothing is lost in between
        for notice in sorted(notices, key=publication_order):
            self.told.append(Told(now, len(self.told), partition, notice))


# --- traffic shapes ----------------------------------------------------------------------

def arrivals(rng: random.Random, start_ms: int, end_ms: int, per_minute: float) -> list[int]:
    """Poisson arrival times at ``per_minute`` between ``start_ms`` and ``end_ms``."""
    times: list[int] = []
    at = float(start_ms)
    while per_minute > 0:
        at += rng.expovariate(per_minute / MINUTE_MS)
        if at >= end_ms:
            return times
        times.append(int(at))
    return times


def render(platform: Platform, host: Host, at_ms: int, template: str, failed: bool,
           duration_ms: float = 2000.0, render_type: str = "still") -> None:
    if failed:
        platform.send(host, "render_failed", at_ms, {"template_id": template,
                                                      "reason": "timeout"}, key=template)
    else:
        platform.send(host, "render_completed", at_ms,
                      {"template_id": template, "render_type": render_type,
                       "duration_ms": duration_ms}, key=template)


def renders(platform: Platform, rng: random.Random, start_ms: int, end_ms: int,
            per_minute: float, failing: float | Callable[[int], float], *,
            templates: list[str], duration: Callable[[int, random.Random], float] | None = None,
            render_types: tuple[str, ...] = ("still", "video"), host: Host = GOOD,
            zipf: bool = True) -> list[int]:
    """Renders at ``per_minute`` (Poisson) of ``templates`` (Zipf-popular, or uniform),
    each failing with probability ``failing`` (or ``failing(t)``) whatever its template.
    Returns the failure times."""
    weights = [1 / (i + 1) if zipf else 1.0 for i in range(len(templates))]
    failures = []
    for at in arrivals(rng, start_ms, end_ms, per_minute):
        template = rng.choices(templates, weights)[0]
        if rng.random() < (failing(at) if callable(failing) else failing):
            render(platform, host, at, template, True)
            failures.append(at)
        else:
            render(platform, host, at, template, False,
                   duration(at, rng) if duration else 1000.0 + rng.random() * 3000,
                   rng.choice(render_types))
    return failures


ENDPOINTS = ["/api/render", "/api/assets", "/api/export", "/api/variants"]


def api_calls(platform: Platform, rng: random.Random, start_ms: int, end_ms: int,
              per_minute: float, failing: float = 0.0, host: Host = GOOD,
              endpoints: list[str] = ENDPOINTS) -> None:
    for at in arrivals(rng, start_ms, end_ms, per_minute):
        endpoint = rng.choice(endpoints)
        event = "api_error" if rng.random() < failing else "api_request_completed"
        platform.send(host, event, at, {"endpoint": endpoint}, key=endpoint)


def steady(platform: Platform, host: Host, event: str, endpoint: str, start_ms: int,
           end_ms: int, every_ms: int, partition: int | None = None) -> None:
    for at in range(start_ms, end_ms, every_ms):
        platform.send(host, event, at, {"endpoint": endpoint}, key=endpoint,
                      partition=partition)


def burst(platform: Platform, host: Host, endpoint: str, at_ms: int,
          partition: int | None = None, errors: int = 14, every_ms: int = 5_000) -> int:
    """An endpoint's outage: ``errors`` API errors ``every_ms`` apart; returns the time
    of the 11th (api_degradation's count > 10 crosses with it)."""
    for i in range(errors):
        platform.send(host, "api_error", at_ms + i * every_ms, {"endpoint": endpoint},
                      key=endpoint, partition=partition)
    return at_ms + 10 * every_ms


# --- scenarios ----------------------------------------------------------------------------

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Expect:
    """An alert an incident should raise: ``rule`` for the scope ``labels``.

    ``required``: missing it is a miss (else a firing is explained, no firing is fine);
    ``stays_open``: it must not resolve within the run; ``told_within_s``: the page must
    be told within that many true seconds of the incident's start.
    """

    rule: str
    labels: Labels = ()
    required: bool = True
    stays_open: bool = False
    told_within_s: float | None = None


@dataclass
class Incident:
    """``explains``: rules whose firing in any scope the incident explains though none
    is expected (a template whose renders all failed in a platform-wide outage)."""

    name: str
    start_ms: int
    end_ms: int | None  # None: not over when the run ends
    expects: list[Expect]
    explains: tuple[str, ...] = ()


@dataclass
class Setup:
    platform: Platform
    incidents: list[Incident]
    phases: list[tuple[int, int]]  # (run until, tick) in true time
    notes: list[str] = field(default_factory=list)
    storm: bool = False  # the overall critical page must be published first


@dataclass(frozen=True)
class Scenario:
    name: str
    shape: str  # what the traffic is, for the table
    build: Callable[[], Setup]


OVERALL: Labels = ()


def tpl(template: str) -> Labels:
    return (("template_id", template),)


def endpoint(name: str) -> Labels:
    return (("endpoint", name),)


HEALTHY_TEMPLATES = [f"tpl_{i:03d}" for i in range(20)]  # Zipf-popular, 2% failing


def renders_stop() -> Setup:
    """A day of healthy traffic (the volume rules' baseline), then half the renders fail
    for 10 minutes, then renders stop altogether while API calls go on for two hours."""
    rng = random.Random(1)
    platform = Platform(max_clock_step_ms=MINUTE_MS)
    errors_at = START + DAY_MS + 2 * HOUR_MS
    stop_at = errors_at + 10 * MINUTE_MS
    end = stop_at + 2 * HOUR_MS
    renders(platform, rng, START, errors_at, 10, 0.02, templates=HEALTHY_TEMPLATES)
    renders(platform, rng, errors_at, stop_at, 10, 0.5, templates=HEALTHY_TEMPLATES)
    api_calls(platform, rng, START, end, 5, 0.005)
    return Setup(platform, [
        Incident("50% of renders fail, then none come", errors_at, None,
                 [Expect("high_error_rate", OVERALL, stays_open=True)],
                 explains=("template_failures",)),
        Incident("renders stop (API calls go on)", stop_at, None,
                 [Expect("renders_stopped", OVERALL, stays_open=True)]),
    ], [(errors_at - 10 * MINUTE_MS, MINUTE_MS), (end, 5 * SECOND_MS)],
        ["a day of 10 renders/min and 5 API calls/min first (the volume rules' baseline)"])


# Healthy traffic after a thin-traffic incident: a page resolves on 15 minutes of clean
# windows, each of which needs 17 renders without a failure (the 80% upper bound of 0 of
# 16 is 4.2% > 4%): at ~1 render a minute that takes hours.
RECOVERY_MS = 4 * HOUR_MS


def low_traffic_outage() -> Setup:
    """1 render a minute over 80 templates: healthy for an hour, every render failing
    for 2 hours, healthy for 4 hours."""
    rng = random.Random(2)
    platform = Platform(max_clock_step_ms=MINUTE_MS)
    templates = [f"tpl_{i:03d}" for i in range(80)]
    begin, end = START + HOUR_MS, START + 3 * HOUR_MS
    renders(platform, rng, START, begin, 1, 0.02, templates=templates, zipf=False)
    renders(platform, rng, begin, end, 1, 1.0, templates=templates, zipf=False)
    renders(platform, rng, end, end + RECOVERY_MS, 1, 0.02, templates=templates, zipf=False)
    return Setup(platform, [Incident("every render fails for 2 h", begin, end,
                                     [Expect("high_error_rate")],
                                     explains=("template_failures",))],
                 [(end + RECOVERY_MS, 5 * SECOND_MS)])


def low_traffic_30() -> Setup:
    """~1.3 renders a minute: healthy for an hour, 30% failing for 3 hours, healthy for
    4 hours."""
    rng = random.Random(3)
    platform = Platform(max_clock_step_ms=MINUTE_MS)
    templates = [f"tpl_{i:03d}" for i in range(80)]
    begin, end = START + HOUR_MS, START + 4 * HOUR_MS
    renders(platform, rng, START, begin, 1.3, 0.02, templates=templates, zipf=False)
    renders(platform, rng, begin, end, 1.3, 0.3, templates=templates, zipf=False)
    renders(platform, rng, end, end + RECOVERY_MS, 1.3, 0.02, templates=templates, zipf=False)
    return Setup(platform, [Incident("30% of renders fail for 3 h", begin, end,
                                     [Expect("high_error_rate")],
                                     explains=("template_failures",))],
                 [(end + RECOVERY_MS, 5 * SECOND_MS)])


def slow_producer(clock_ms: int) -> Callable[[], Setup]:
    """A host whose clock is ``clock_ms`` off (ept's SDK: it stamps its send time) sends
    API calls alone on one partition of api_request_completed and, with a healthy host, on
    another; an outage of an unrelated endpoint (the healthy host) at minute 20, one of
    its own at minute 40. Both must page within the lateness of the crossing."""
    def build() -> Setup:
        platform = Platform()
        slow = Host(2, clock_ms)
        end = START + 60 * MINUTE_MS
        steady(platform, GOOD, "api_request_completed", "/api/render", START, end, 2_000,
               partition=0)
        steady(platform, GOOD, "api_request_completed", "/api/variants", START, end, 3_000,
               partition=2)
        steady(platform, slow, "api_request_completed", "/api/legacy", START, end, 2_000,
               partition=1)
        steady(platform, slow, "api_request_completed", "/api/legacy", START, end, 3_000,
               partition=2)
        steady(platform, GOOD, "api_error", "/api/variants", START, end, MINUTE_MS,
               partition=0)
        first, second = START + 20 * MINUTE_MS, START + 40 * MINUTE_MS
        burst(platform, GOOD, "/api/export", first, partition=0)
        burst(platform, slow, "/api/assets", second, partition=2)
        # the 11th error crosses 50 s in; then the lateness and the end of its second
        prompt = 50 + LATENESS_MS / 1000 + 6
        return Setup(platform, [
            Incident("healthy host: /api/export fails", first, first + 65 * SECOND_MS,
                     [Expect("api_degradation", endpoint("/api/export"), told_within_s=prompt),
                      Expect("api_degradation", OVERALL, told_within_s=prompt)]),
            Incident("the slow host: /api/assets fails", second, second + 65 * SECOND_MS,
                     [Expect("api_degradation", endpoint("/api/assets"), told_within_s=prompt),
                      Expect("api_degradation", OVERALL, told_within_s=prompt)]),
        ], [(end + 10 * MINUTE_MS, SECOND_MS)])
    return build


def fast_producer_then_quiet() -> Setup:
    """A host 280 s fast (inside the 300 s skew) sends API calls for 10 minutes, as does a
    healthy one; then all is quiet; an outage a minute later."""
    platform = Platform()
    fast = Host(2, 280_000)
    quiet = START + 10 * MINUTE_MS
    steady(platform, fast, "api_request_completed", "/api/legacy", START, quiet, 5_000,
           partition=1)
    steady(platform, GOOD, "api_request_completed", "/api/render", START, quiet, 2_000,
           partition=0)
    at = quiet + MINUTE_MS
    burst(platform, GOOD, "/api/export", at, partition=0)
    prompt = 50 + LATENESS_MS / 1000 + 6
    return Setup(platform, [Incident("outage after the fast host went quiet", at,
                                     at + 65 * SECOND_MS,
                                     [Expect("api_degradation", endpoint("/api/export"),
                                             told_within_s=prompt),
                                      Expect("api_degradation", OVERALL,
                                             told_within_s=prompt)])],
                 [(at + 20 * MINUTE_MS, SECOND_MS)])


def worker_clock_jump() -> Setup:
    """API calls for 10 minutes, then quiet; at minute 15 one progress report is taken
    with the worker's wall clock 2 h ahead; outages at minutes 20 and 60."""
    jump = START + 15 * MINUTE_MS
    platform = Platform(worker_clock=lambda now: 2 * HOUR_MS if now == jump else 0)
    steady(platform, GOOD, "api_request_completed", "/api/render", START,
           START + 10 * MINUTE_MS, 2_000, partition=0)
    prompt = 50 + LATENESS_MS / 1000 + 6
    incidents = []
    for minute, name, partition in ((20, "/api/export", 0), (60, "/api/assets", 1)):
        at = START + minute * MINUTE_MS
        burst(platform, GOOD, name, at, partition=partition)
        incidents.append(Incident(f"outage at minute {minute}, after the jump", at,
                                  at + 65 * SECOND_MS,
                                  [Expect("api_degradation", endpoint(name),
                                          told_within_s=prompt),
                                   Expect("api_degradation", OVERALL,
                                          told_within_s=prompt)]))
    return Setup(platform, incidents, [(START + 90 * MINUTE_MS, SECOND_MS)])


STORM_TEMPLATES = 10_000


def storm() -> Setup:
    """Healthy traffic (40 renders/min), then 10,000 templates fail at once: 5 failures
    each within 30 s; healthy traffic goes on."""
    rng = random.Random(4)
    platform = Platform(max_clock_step_ms=MINUTE_MS)
    at = START + 30 * MINUTE_MS
    end = at + 30 * SECOND_MS
    over = at + 90 * MINUTE_MS
    renders(platform, rng, START, over, 40, 0.02, templates=HEALTHY_TEMPLATES)
    failing = [f"storm_{i:05d}" for i in range(STORM_TEMPLATES)]
    for template in failing:
        for _ in range(5):
            render(platform, GOOD, at + rng.randrange(30 * SECOND_MS), template, True)
    return Setup(platform, [
        Incident(f"{STORM_TEMPLATES:,} templates fail at once", at, end,
                 [Expect("high_error_rate")]
                 + [Expect("template_failures", tpl(t)) for t in failing]),
    ], [(at - MINUTE_MS, 10 * SECOND_MS), (at + 5 * MINUTE_MS, SECOND_MS),
        (over, MINUTE_MS)], storm=True)


def popular_template() -> Setup:
    """One template rendered 3,000 times an hour, 0.1% failing, for a day."""
    rng = random.Random(5)
    platform = Platform(max_clock_step_ms=MINUTE_MS)
    failures = renders(platform, rng, START, START + DAY_MS, 50, 0.001,
                       templates=["tpl_popular"])
    busiest = max(sum(1 for t in failures if s <= t < s + HOUR_MS) for s in failures)
    return Setup(platform, [], [(START + DAY_MS, MINUTE_MS)],
                 [f"{len(failures)} failures in the day; up to {busiest} in one hour "
                  "(the specification's count alone, > 3 in 1 h, would page)"])


def unfixed_regression() -> Setup:
    """A stable week of video renders of one template (~10 s, 3/min), then every render
    twice as slow for 3 days, never fixed."""
    rng = random.Random(6)
    platform = Platform(max_clock_step_ms=MINUTE_MS)
    step_at = START + 7 * DAY_MS
    end = step_at + 3 * DAY_MS

    def duration(at: int, rng: random.Random) -> float:
        return rng.lognormvariate(math.log(10_000), 0.25) * (2 if at >= step_at else 1)

    renders(platform, rng, START, end, 3, 0.0, templates=["tpl_video"], duration=duration,
            render_types=("video",))
    return Setup(platform, [
        Incident("render durations 2x from day 8, never fixed", step_at, None,
                 [Expect("duration_regression", (("render_type", "video"),), stays_open=True),
                  Expect("duration_regression", tpl("tpl_video"), stays_open=True)]),
    ], [(end, MINUTE_MS)])


def hovering_rate() -> Setup:
    """20 renders a minute: an hour at 2% failing, 6 hours hovering at the threshold (each
    minute 5% +/- 2%), an hour at 2%."""
    rng = random.Random(7)
    platform = Platform(max_clock_step_ms=MINUTE_MS)
    begin, end = START + HOUR_MS, START + 7 * HOUR_MS
    jitter = {minute: rng.uniform(-0.02, 0.02) for minute in range(7 * 60)}
    renders(platform, rng, START, begin, 20, 0.02, templates=HEALTHY_TEMPLATES)
    renders(platform, rng, begin, end, 20,
            lambda t: 0.05 + jitter[(t - START) // MINUTE_MS], templates=HEALTHY_TEMPLATES)
    renders(platform, rng, end, end + HOUR_MS, 20, 0.02, templates=HEALTHY_TEMPLATES)
    # At the threshold is neither healthy nor an outage: a page is allowed, one.
    return Setup(platform, [Incident("failure rate at 5% +/- 2% for 6 h", begin, end,
                                     [Expect("high_error_rate", required=False)],
                                     explains=("template_failures",))],
                 [(end + HOUR_MS, 10 * SECOND_MS)])


SCENARIOS = [
    Scenario("renders stop", "a day of traffic; 50% failing; renders stop, API calls go on",
             renders_stop),
    Scenario("low-traffic outage", "1 render/min over 80 templates, all failing for 2 h",
             low_traffic_outage),
    Scenario("low-traffic 30%", "~1.3 renders/min, 30% failing for 3 h", low_traffic_30),
    Scenario("clock 3 min slow", "a host 180 s slow, alone and sharing partitions",
             slow_producer(-3 * MINUTE_MS)),
    Scenario("clock 30 min slow", "a host 30 min slow, alone and sharing partitions",
             slow_producer(-30 * MINUTE_MS)),
    Scenario("clock 280 s fast, quiet", "a host 280 s fast, then all quiet; an outage",
             fast_producer_then_quiet),
    Scenario("worker clock jump", "one report with the worker's clock 2 h ahead; 2 outages",
             worker_clock_jump),
    Scenario("10,000-template storm", "10,000 templates x 5 failures within 30 s",
             storm),
    Scenario("popular healthy template", "3,000 renders/h at 0.1% failing for a day",
             popular_template),
    Scenario("unfixed 2x regression", "a stable week, then 3 days at 2x render duration",
             unfixed_regression),
    Scenario("rate at the threshold", "20 renders/min at 5% +/- 2% for 6 h",
             hovering_rate),
]


# --- judging the notices -------------------------------------------------------------------

@dataclass
class AlertOutcome:
    """What became of one expected alert."""

    incident: Incident
    expect: Expect
    pages: int = 0
    renotified: int = 0
    first_ms: int | None = None  # event time of the first firing
    told_ms: int | None = None  # true time it was told
    resolved_ms: int | None = None  # event time of the last resolution after it
    resolved_after_first: bool = False


@dataclass
class Result:
    scenario: Scenario
    setup: Setup
    seconds: float
    firings: int
    false_firings: list[Told]
    explained: list[Told]  # firings of no expected alert that an incident explains
    outcomes: list[AlertOutcome]
    healthy_disabled: set[str]
    storm_rank: int | None  # of the overall critical firing among the storm's notices
    storm_notices: int
    late_events: int

    @property
    def precision(self) -> float | None:
        return (self.firings - len(self.false_firings)) / self.firings if self.firings else None

    @property
    def required(self) -> list[AlertOutcome]:
        return [o for o in self.outcomes if o.expect.required]

    @property
    def recall(self) -> float | None:
        required = self.required
        if not required:
            return None
        return sum(1 for o in required if o.pages) / len(required)

    @property
    def explained_pages(self) -> dict[tuple[str, Labels], int]:
        pages: dict[tuple[str, Labels], int] = {}
        for told in self.explained:
            key = (told.notice.rule.name, _labels(told.notice))
            pages[key] = pages.get(key, 0) + 1
        return pages

    @property
    def most_pages(self) -> int:
        return max([o.pages for o in self.outcomes] + list(self.explained_pages.values()),
                   default=0)

    def failures(self) -> list[str]:
        """The targets this scenario misses, in words."""
        missed = []
        if self.false_firings:
            missed.append(f"{len(self.false_firings)} false firing(s)")
        unpaged = [o for o in self.required if not o.pages]
        if unpaged:
            missed.append(f"{len(unpaged)} expected alert(s) never fired")
        flapping = [o for o in self.outcomes if o.pages > 1]
        if flapping:
            missed.append(f"{len(flapping)} alert(s) paged more than once")
        explained_flapping = [scope for scope, pages in self.explained_pages.items()
                              if pages > 1]
        if explained_flapping:
            missed.append(f"{len(explained_flapping)} alert(s) the incident explains paged "
                          f"more than once: " + ", ".join(
                              f"{rule}{dict(labels)}" for rule, labels in explained_flapping))
        if self.healthy_disabled:
            missed.append(f"{len(self.healthy_disabled)} healthy template(s) disabled")
        for o in self.outcomes:
            if o.expect.stays_open and o.resolved_after_first:
                missed.append(f"{_alert(o)} resolved though it must stay open")
            elif (not o.expect.stays_open and o.pages and o.incident.end_ms is not None
                  and not o.resolved_after_first):
                missed.append(f"{_alert(o)} never resolved")
            if (o.expect.told_within_s is not None and o.told_ms is not None
                    and (o.told_ms - o.incident.start_ms) / 1000 > o.expect.told_within_s):
                missed.append(f"{_alert(o)} told {(o.told_ms - o.incident.start_ms) / 1000:.0f} s "
                              f"after the start (> {o.expect.told_within_s:.0f} s)")
        if self.setup.storm and self.storm_rank != 0:
            missed.append(f"the overall page came {_ordinal(self.storm_rank)}")
        return _dedupe(missed)


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _alert(outcome: AlertOutcome) -> str:
    labels = ",".join(f"{k}={v}" for k, v in outcome.expect.labels)
    return f"{outcome.expect.rule}[{labels}]" if labels else outcome.expect.rule


def _ordinal(rank: int | None) -> str:
    return "never" if rank is None else f"#{rank + 1}"


def _labels(notice: DecidedNotice) -> Labels:
    return tuple(sorted(notice.scope.labels.items()))


def judge(scenario: Scenario, setup: Setup, seconds: float) -> Result:
    windows = {rule.name: rule.window_minutes * MINUTE_MS for rule in setup.platform.rules}
    outcomes = {(id(incident), expect.rule, expect.labels): AlertOutcome(incident, expect)
                for incident in setup.incidents for expect in incident.expects}
    by_alert: dict[tuple[str, Labels], list[AlertOutcome]] = {}
    for outcome in outcomes.values():
        by_alert.setdefault((outcome.expect.rule, outcome.expect.labels), []).append(outcome)

    def explaining(told: Told) -> AlertOutcome | Incident | None:
        """The expected alert ``told`` is about, else the incident that explains it."""
        notice = told.notice

        def during(incident: Incident) -> bool:
            until = (math.inf if incident.end_ms is None
                     else incident.end_ms + windows[notice.rule.name] + 5 * MINUTE_MS)
            return incident.start_ms <= notice.at_ms <= until

        for outcome in by_alert.get((notice.rule.name, _labels(notice)), []):
            if during(outcome.incident):
                return outcome
        return next((incident for incident in setup.incidents
                     if notice.rule.name in incident.explains and during(incident)), None)

    firings = 0
    false_firings: list[Told] = []
    explained: list[Told] = []
    healthy_disabled: set[str] = set()
    storm_rank, storm_told = None, 0  # alerts told since the storm began
    storm_start = min((i.start_ms for i in setup.incidents), default=0)
    # Told ahead of the frontier: a firing withdrawn is a false page; one confirmed is the
    # same page as the frontier's firing, told at the earlier time.
    withdrawn = {(t.notice.rule.name, _labels(t.notice), t.notice.at_ms)
                 for t in setup.platform.told
                 if t.notice.note.ahead and t.notice.note.status == RESOLVED}
    told_ahead: dict[tuple[str, Labels], int] = {}  # alert -> true time told ahead
    for told in setup.platform.told:
        note, notice = told.notice.note, told.notice
        about = explaining(told)
        alert = (notice.rule.name, _labels(notice))
        first_tell = (note.status == FIRING and not note.renotify
                      and (note.ahead or alert not in told_ahead))
        if setup.storm and notice.at_ms >= storm_start and first_tell:
            storm_told += 1
            if (storm_rank is None and notice.rule.name == "high_error_rate"
                    and not notice.scope.labels):
                storm_rank = storm_told - 1
        if note.ahead:
            if note.status == FIRING and (*alert, notice.at_ms) in withdrawn:
                firings += 1
                false_firings.append(told)
            elif note.status == FIRING:
                told_ahead[alert] = told.told_ms
            continue
        if note.status == FIRING and note.renotify:
            if isinstance(about, AlertOutcome):
                about.renotified += 1
            continue
        if note.status == RESOLVED:  # closes the alert's open incidents that fired
            for candidate in by_alert.get((notice.rule.name, _labels(notice)), []):
                if (candidate.first_ms is not None and notice.at_ms >= candidate.first_ms
                        and not candidate.resolved_after_first):
                    candidate.resolved_ms = notice.at_ms
                    candidate.resolved_after_first = True
            continue
        firings += 1
        told_ms = min(told.told_ms, told_ahead.pop(alert, told.told_ms))
        if about is None:
            false_firings.append(told)
            if notice.rule.action == "disable_template" and "template_id" in notice.scope.labels:
                healthy_disabled.add(notice.scope.labels["template_id"])
        elif isinstance(about, Incident):
            explained.append(told)
        else:
            about.pages += 1
            if about.first_ms is None:
                about.first_ms, about.told_ms = notice.at_ms, told_ms
    return Result(scenario, setup, seconds, firings, false_firings, explained,
                  list(outcomes.values()), healthy_disabled, storm_rank,
                  len(setup.platform.told), setup.platform.evaluator.late_events)


def run(scenario: Scenario) -> Result:
    began = time.monotonic()
    setup = scenario.build()
    for until_ms, tick_ms in setup.phases:
        setup.platform.run(until_ms, tick_ms)
    return judge(scenario, setup, time.monotonic() - began)


# --- printing ---------------------------------------------------------------------------------

def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _spread(values: list[float]) -> str:
    """One value, or "p50 / max" of several."""
    if not values:
        return "-"
    ordered = sorted(values)
    if len(ordered) == 1 or ordered[0] == ordered[-1]:
        return f"{ordered[-1]:.0f}"
    return f"{ordered[len(ordered) // 2]:.0f} / {ordered[-1]:.0f}"


def _most(values: list[float]) -> str:
    return f"{max(values):.0f}" if values else "-"


def _reset(outcomes: list[AlertOutcome]) -> str:
    paged = [o for o in outcomes if o.pages]
    if not paged:
        return "-"
    if all(o.expect.stays_open for o in paged):
        resolved = [o for o in paged if o.resolved_after_first]
        return "open" if not resolved else f"resolved ({len(resolved)})"
    if any(o.incident.end_ms is None for o in paged):
        return "open"
    never = [o for o in paged if not o.resolved_after_first]
    if never:
        return f"never ({len(never)})"
    resets = [(o.resolved_ms - o.incident.end_ms) / 1000 for o in paged]  # type: ignore[operator]
    return _spread(resets)


def summary_rows(results: list[Result]) -> list[list[object]]:
    rows: list[list[object]] = []
    for result in results:
        required = result.required or [o for o in result.outcomes if o.pages]
        paged = [o for o in required if o.first_ms is not None]
        detection = [(o.first_ms - o.incident.start_ms) / 1000 for o in paged]  # type: ignore[operator]
        told = [(o.told_ms - o.incident.start_ms) / 1000 for o in paged]  # type: ignore[operator]
        pages = result.most_pages
        renotified = sum(o.renotified for o in result.outcomes)
        missed = result.failures()
        rows.append([
            result.scenario.name, f"{result.setup.platform.events:,}",
            _percent(result.precision) if result.firings else "- (0 fired)",
            _percent(result.recall), _most(detection), _most(told),
            _reset(result.outcomes),
            f"{pages} (+{renotified} re)" if result.outcomes else "-",
            len(result.healthy_disabled),
            _ordinal(result.storm_rank) if result.setup.storm else "-",
            result.late_events, f"{result.seconds:.0f}",
            "yes" if not missed else "NO"])
    return rows


def incident_rows(results: list[Result]) -> list[list[object]]:
    rows: list[list[object]] = []
    for result in results:
        for incident in result.setup.incidents:
            groups: dict[tuple[str, tuple[str, ...]], list[AlertOutcome]] = {}
            for outcome in result.outcomes:
                if outcome.incident is incident:
                    key = (outcome.expect.rule, tuple(k for k, _ in outcome.expect.labels))
                    groups.setdefault(key, []).append(outcome)
            for (rule, _), outcomes in groups.items():
                alert = _alert(outcomes[0]) if len(outcomes) == 1 else (
                    f"{rule} x {len(outcomes):,} templates")
                paged = [o for o in outcomes if o.first_ms is not None]
                required = "" if outcomes[0].expect.required else " (optional)"
                rows.append([
                    result.scenario.name, incident.name, alert + required,
                    f"{len(paged):,}/{len(outcomes):,}",
                    f"{max((o.pages for o in outcomes), default=0)} "
                    f"(+{sum(o.renotified for o in outcomes)} re)",
                    _spread([(o.first_ms - incident.start_ms) / 1000 for o in paged]),  # type: ignore[operator]
                    _spread([(o.told_ms - incident.start_ms) / 1000 for o in paged]),  # type: ignore[operator]
                    _reset(outcomes)])
    return rows


def print_results(results: list[Result]) -> None:
    print("\nScenarios of the platform failing (bench.alert_scenarios):")
    for result in results:
        print(f"  {result.scenario.name}: {result.scenario.shape}")
    print_table(
        "Alert quality when the platform fails (simulated clock, the worker's own classes, "
        "default rules; targets: precision and recall 100%, one page per incident and "
        "scope, no healthy template disabled, the storm's overall page first)",
        ["scenario", "events", "precision", "recall", "detect s", "told s", "reset s",
         "pages/incident", "healthy disabled", "overall page", "late events", "run s",
         "targets met"], summary_rows(results))
    print_table("Per incident (detect: incident start -> first firing in event time; told: "
                "-> true time it was told; reset: incident end -> resolution; p50 / max "
                "where several)",
                ["scenario", "incident", "alert", "paged", "pages", "detect s", "told s",
                 "reset s"], incident_rows(results))
    for result in results:
        for note in result.setup.notes:
            print(f"  {result.scenario.name}: {note}")
        if result.explained:
            scopes = sorted({", ".join(f"{k}={v}" for k, v in t.notice.scope.labels.items())
                             for t in result.explained})
            print(f"  {result.scenario.name}: {len(result.explained)} firing(s) the incident "
                  f"explains though none was expected: "
                  f"{', '.join(sorted({t.notice.rule.name for t in result.explained}))} for "
                  f"{', '.join(scopes[:6])}{' ...' if len(scopes) > 6 else ''}")
        for missed in result.failures():
            print(f"  {result.scenario.name}: MISSED: {missed}")
        for told in result.false_firings[:5]:
            notice = told.notice
            summary = _summary(notice)
            print(f"    false firing at +{(notice.at_ms - START) / 1000:.0f} s (event time) "
                  f"{notice.rule.name}{dict(notice.scope.labels) or ''}: {summary}")
        if len(result.false_firings) > 5:
            print(f"    ... and {len(result.false_firings) - 5} more false firings")


def _summary(notice: DecidedNotice) -> str:
    from ept.processors.worker.logic.alert_state import alert_notice
    return alert_notice(notice.rule, notice.scope.labels, notice.note, notice.at_ms).summary


def main(names: list[str] | None = None) -> list[Result]:
    chosen = [s for s in SCENARIOS if not names or s.name in names
              or any(n.lower() in s.name.lower() for n in names)]
    results = []
    for scenario in chosen:
        result = run(scenario)
        print(f"  {scenario.name}: {result.seconds:.1f} s", file=sys.stderr, flush=True)
        results.append(result)
    print_results(results)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
