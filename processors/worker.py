"""The Faust worker: windowed rules over the event topics, alerts to ``{prefix}alerts``.

Two stages, each a thin Faust wrapper around pure logic:

1. ``collect`` consumes the five event topics (keyed by template / endpoint, so they are
   co-partitioned). :class:`~ept.processors.collection.Collector` makes each batch one
   :class:`~ept.processors.records.Signal` per scope (sent to the internal signals topic,
   keyed by scope) and then a :class:`~ept.processors.records.Progress` report of its
   source partitions, sent to every signals partition — after the signals, so a
   watermark never overtakes its own events. A timer re-sends the report each second.
2. ``evaluate`` counts signals into each scope's :class:`ScopeState` (the ``scopes``
   table) and, as reports move a family's event-time frontier
   (:class:`~ept.processors.event_time.Frontiers`), judges its scopes up to it
   (:class:`~ept.processors.evaluation.Evaluator`) and publishes the notices.

Faust runs at-least-once (its exactly-once mode commits a transaction only when the
destination partition number also consumed something, which a repartitioning stage
breaks). Exactness is restored here: a scope applies an event only if its source offset
is beyond the last one it applied from that source partition, and a notice is published
only if it was decided at a later event time than the last notice of its fingerprint on
the alert topic — so a killed worker neither repeats nor misses one, re-notifications
included. It consumes through :mod:`ept.processors.faust_kafka`, so no offset is
committed that an agent was not handed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections import Counter
from typing import Any

import faust
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ept.core.kafka import faust_broker_options
from ept.core.settings import Settings
from ept.processors.alert_topic import read_alerts
from ept.processors.alerting import alert_notice, fingerprint
from ept.processors.collection import Collector, SourceEvent
from ept.processors.evaluation import Evaluator, Notice, window_totals
from ept.processors.event_time import Frontiers, source_of
from ept.processors.faust_kafka import use_transport
from ept.processors.judging import PartitionJudge
from ept.processors.records import ScopeState, signal_or_progress
from ept.processors.rules import Rule
from ept.processors.signals import Scope, measure
from ept.schemas.codec import DecodeError, Decoder
from ept.schemas.registry import EVENT_NAMES

log = logging.getLogger("ept.worker")
DEDUP_HORIZON_MS = 5 * 60_000  # a producer's re-send comes within seconds, not minutes
# At most this often after a batch (and each second by the heartbeat): every report is
# a message to each signals partition and a judgement of each live scope there.
PROGRESS_INTERVAL_S = 0.2


class PublishedAlerts:
    """The event time of the last notice per fingerprint on the alert topic.

    Read from the topic's log start after every rebalance, since another worker may have
    published meanwhile.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._last: dict[str, int] | None = None

    def invalidate(self, *args: Any, **kwargs: Any) -> None:
        self._last = None

    async def is_new(self, key: str, decided_at_ms: int) -> bool:
        if self._last is None:
            self._last = await asyncio.get_running_loop().run_in_executor(None, self._read)
        return decided_at_ms > self._last.get(key, -1)

    def record(self, key: str, decided_at_ms: int) -> None:
        if self._last is not None:
            self._last[key] = max(decided_at_ms, self._last.get(key, -1))

    def _read(self) -> dict[str, int]:
        """Blocks until the alert topic was read to its end (raises after 30 s)."""
        last: dict[str, int] = {}

        def keep(alert: Any) -> None:
            last[alert.fingerprint] = max(alert.decided_at_ms, last.get(alert.fingerprint, -1))

        read_alerts(self._settings, keep, until_end=True)
        return last


class WorkerMetrics:
    """This worker's counters, exposed in Prometheus format through prometheus_client."""

    def __init__(self, collector: Collector, evaluator: Evaluator,
                 judges: dict[int, PartitionJudge], lag: Any) -> None:
        self.events = Counter[str]()
        self.decode_errors = 0
        self.alerts = Counter[tuple[str, str]]()
        self._collector, self._evaluator = collector, evaluator
        self._judges, self._lag = judges, lag
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self)

    def collect(self) -> Any:
        events = CounterMetricFamily("ept_worker_events", "Events processed, by event name.",
                                     labels=["event"])
        for name in EVENT_NAMES:
            events.add_metric([name], self.events[name])
        yield events
        yield CounterMetricFamily("ept_worker_decode_errors", "Messages that did not decode.",
                                  value=self.decode_errors)
        yield CounterMetricFamily(
            "ept_worker_late_events", "Events counted after an instant they belong to was "
            "judged (older than the frontier).", value=self._evaluator.late_events)
        yield CounterMetricFamily(
            "ept_worker_skewed_events", "Events stamped beyond their Kafka record time plus "
            "EPT_MAX_CLOCK_SKEW_S, counted at the record time.",
            value=self._collector.skewed_events)
        yield CounterMetricFamily(
            "ept_worker_duplicate_events", "Events read again under an event id already "
            "counted (producer re-sends).", value=self._collector.duplicate_events)
        alerts = CounterMetricFamily("ept_worker_alerts", "Alert notifications, by rule "
                                     "and status.", labels=["rule", "status"])
        for (rule, status), count in sorted(self.alerts.items()):
            alerts.add_metric([rule, status], count)
        yield alerts
        frontier = GaugeMetricFamily("ept_worker_event_time_frontier_seconds",
                                     "Event time up to which scopes are judged.",
                                     labels=["family", "partition"])
        for partition, judge in sorted(self._judges.items()):
            for family in ("render", "slow", "api"):
                frontier.add_metric([family, str(partition)],
                                    judge.frontiers.frontier(family) / 1000)
        yield frontier
        yield GaugeMetricFamily("ept_worker_consumer_lag",
                                "Messages not yet committed by this worker.", value=self._lag())


def scope_partition(scope_key: str, partitions: int) -> int:
    return zlib.crc32(scope_key.encode()) % partitions


def create_app(settings: Settings, rules: list[Rule],
               source_partitions: dict[str, int] | None = None) -> faust.App:
    """Build the worker's Faust app. Nothing connects until the worker starts.

    ``source_partitions``: the partition count of each event topic (default: the
    configured ``topic_partitions``); every source partition must report before event
    time moves.
    """
    partitions = settings.topic_partitions
    sources = source_partitions or dict.fromkeys(EVENT_NAMES, partitions)
    lateness_ms = settings.allowed_lateness_s * 1000
    app = faust.App(
        f"{settings.topic_prefix}worker",
        **faust_broker_options(settings),
        store="memory://",
        broker_commit_interval=0.5,
        broker_session_timeout=settings.worker_session_timeout_s,
        topic_partitions=partitions,
        topic_replication_factor=settings.topic_replication,
        web_enabled=True,
        web_bind=settings.http_host,
        web_port=settings.worker_port,
        web_host=settings.http_host,
        consumer_auto_offset_reset="earliest",
        table_cleanup_interval=60.0,
        producer_linger_ms=5,
    )
    use_transport(app)
    decoder = Decoder(settings.schema_registry_url, raw=True)
    collector = Collector(settings.max_clock_skew_s * 1000, int(settings.source_idle_s * 1000),
                          DEDUP_HORIZON_MS)
    evaluator = Evaluator(rules)
    judges: dict[int, PartitionJudge] = {}  # per signals partition of this worker
    event_of_topic = {topic: name for name, topic in settings.topics.events.items()}
    event_topics = app.topic(*event_of_topic, key_type=bytes, value_type=bytes,
                             key_serializer="raw", value_serializer="raw")
    signals = app.topic(settings.topics.worker_signals, partitions=partitions,
                        key_type=bytes, key_serializer="raw", value_serializer="json",
                        internal=True)
    alerts = app.topic(settings.topics.alerts, key_serializer="raw", value_serializer="raw")
    scopes = app.Table("scopes", default=dict, partitions=partitions)
    published = PublishedAlerts(settings)
    read_up_to: dict[Any, int] = {}  # event topic partition -> last offset handed to collect

    def wall_ms() -> int:
        return int(time.time() * 1000)

    def lag() -> int:
        monitor = app.monitor
        ends = getattr(monitor, "tp_end_offsets", {})
        committed = getattr(monitor, "tp_committed_offsets", {})
        return sum(max(0, end - committed.get(tp, 0)) for tp, end in ends.items())

    metrics = WorkerMetrics(collector, evaluator, judges, lag)

    # Sources assigned by the last rebalance, handed to the collector once the tables are
    # recovered and streams flow again: their silence must not count from the assignment,
    # or a long recovery would make them look idle with a backlog still unread.
    assigned_sources: list[str] = []

    def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        (assigned,) = args
        published.invalidate()
        judges.clear()  # rebuilt from the restored table on first use
        assigned_sources[:] = [source_of(event_of_topic[tp.topic], tp.partition)
                               for tp in assigned if tp.topic in event_of_topic]

    def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        (revoked,) = args
        collector.revoke([source_of(event_of_topic[tp.topic], tp.partition)
                          for tp in revoked if tp.topic in event_of_topic])
        for tp in revoked:
            read_up_to.pop(tp, None)

    app.on_partitions_assigned.connect(on_assigned)
    app.on_partitions_revoked.connect(on_revoked)

    last_report = [0.0]  # monotonic time of the last progress report

    async def caught_up(tp: Any) -> bool:
        """Whether everything of ``tp`` up to its high-water mark was handed to collect.

        A partition nothing was read from since the assignment is behind until the
        fetcher shows there is nothing to read: a backlog partition that Faust serves late
        must not pass for idle while its events wait.
        """
        highwater = app.consumer.highwater(tp)
        if highwater is None:
            return False  # not fetched yet: it may hold anything
        if tp in read_up_to:
            return read_up_to[tp] + 1 >= highwater
        position = await app.consumer.position(tp)
        return position is not None and position >= highwater

    # Held while a batch is turned into signals and sent: a report made meanwhile (by the
    # heartbeat) would carry the batch's watermarks ahead of its signals, and evaluate
    # would judge past events it has not counted yet.
    batch_in_flight = asyncio.Lock()

    async def report_progress() -> None:
        """Tell every signals partition how far this collector's sources are (nothing
        while a rebalance or its recovery is in progress)."""
        async with batch_in_flight:
            await send_progress()

    async def send_progress() -> None:
        if app.rebalancing:
            return
        last_report[0] = time.monotonic()
        if assigned_sources:
            collector.assign(assigned_sources, wall_ms())
            assigned_sources.clear()
        for tp in app.consumer.assignment():
            if tp.topic in event_of_topic:
                collector.caught_up(source_of(event_of_topic[tp.topic], tp.partition),
                                    await caught_up(tp))
        progress = collector.progress(wall_ms()).to_json()
        for partition in range(partitions):
            await signals.send(key=b"progress", partition=partition, value=progress)

    @app.agent(event_topics)
    async def collect(stream: faust.StreamT[bytes]) -> None:
        # Batches of up to 2,000 or 1 s: each batch costs a signal per scope it touches,
        # so small batches (50 ms gave ~45 events) cost more than one send per event.
        # The second is nothing next to the lateness an alert waits for anyway.
        async for events in stream.take_events(2000, within=1.0):  # type: ignore[attr-defined]
            async with batch_in_flight:
                await send_signals(events)
            if time.monotonic() - last_report[0] >= PROGRESS_INTERVAL_S:
                await report_progress()

    async def send_signals(events: list[Any]) -> None:
        batch = []
        for event in events:
            message = event.message
            read_up_to[message.tp] = message.offset
            try:
                decoded = decoder.decode(event.value)
            except DecodeError:
                metrics.decode_errors += 1
                continue
            metrics.events[decoded.name] += 1
            batch.append(SourceEvent(decoded.name, message.partition, message.offset,
                                     int(message.timestamp * 1000), decoded.record))
        for signal in collector.collect(batch, wall_ms()):
            await signals.send(key=signal.scope.encode(), value=signal.to_json(),
                               partition=scope_partition(signal.scope, partitions))

    @app.timer(1.0)
    async def heartbeat() -> None:
        if collect_assigned():
            await report_progress()

    def collect_assigned() -> bool:
        return any(tp.topic in event_of_topic for tp in app.consumer.assignment())

    async def publish(notices: list[Notice]) -> None:
        for notice in notices:
            key = fingerprint(notice.rule.name, notice.scope.labels)
            if not await published.is_new(key, notice.at_ms):
                continue  # already on the topic (published before a restart)
            message = alert_notice(notice.rule, notice.scope.labels, notice.note, notice.at_ms)
            metrics.alerts[(notice.rule.name, notice.note.status)] += 1
            log.info("alert %s %s", notice.note.status, message.summary)
            await alerts.send(key=key.encode(), value=message.encode())
            published.record(key, notice.at_ms)

    def judge_of(partition: int) -> PartitionJudge:
        if partition not in judges:
            keys = [key for key in list(scopes.keys())
                    if scope_partition(key, partitions) == partition]
            judges[partition] = PartitionJudge(evaluator, Frontiers(sources, lateness_ms),
                                               scopes, keys)
        return judges[partition]

    @app.agent(signals)
    async def evaluate(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            judge = judge_of(event.message.partition)
            await publish(judge.handle(signal_or_progress(event.value)))

    def current_rates() -> list[dict[str, Any]]:
        rates = []
        for scope_key, data in list(scopes.items()):
            scope, state = Scope.parse(scope_key), ScopeState.from_json(data)
            partition = scope_partition(scope_key, partitions)
            last = judge_of(partition).frontiers.frontier(scope.family) // 1000 - 1
            for rule in evaluator.rules_of(scope):
                value, samples = measure(rule.kind,
                                         window_totals(state, rule.window_minutes, last))
                alert = state.alerts.get(rule.name)
                rates.append({"rule": rule.name, "scope": scope.scope_type,
                              "labels": scope.labels, "value": round(value, 3),
                              "samples": samples, "threshold": rule.threshold,
                              "status": alert.status if alert else "inactive"})
        return rates

    def spec_counters() -> dict[str, int]:
        events = metrics.events
        return {
            "rendersFailed": events["render_failed"], "apiErrors": events["api_error"],
            "slowRenders": events["slow_render"],
            "totalErrors": events["render_failed"] + events["api_error"],
            "totalPerformanceIssues": events["slow_render"],
        }

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", "component": "worker", "rules": [r.name for r in rules]})

    @app.page("/stats")
    async def stats(web: Any, request: Any) -> Any:
        assignment = sorted((tp.topic, tp.partition) for tp in app.consumer.assignment())
        return web.json({**spec_counters(), "events": dict(metrics.events),
                         "rates": current_rates(), "assignment": assignment})

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        return web.text(generate_latest(metrics.registry).decode(),
                        content_type="text/plain")

    return app


def run_worker(settings: Settings, rules: list[Rule], loglevel: str = "info") -> None:
    """Run the worker until SIGTERM/SIGINT. Blocks."""
    from faust.worker import Worker

    from ept.core.kafka import ensure_topics, topic_partitions

    ensure_topics(settings)
    partitions = topic_partitions(settings, list(settings.topics.events.values()))
    event_of_topic = {topic: name for name, topic in settings.topics.events.items()}
    app = create_app(settings, rules, {event_of_topic[t]: n for t, n in partitions.items()})
    Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
