"""The Faust worker: windowed rules over the event topics, alerts to ``{prefix}alerts``.

Two stages, each a thin Faust wrapper around pure logic:

1. ``collect`` (:class:`~ept.processors.worker.collect_stage.CollectStage`, a task of the app)
   reads the five event topics in bulk with confluent-kafka, outside Faust's streams
   (:class:`~ept.processors.worker.event_reader.EventReader`, in the ``{prefix}worker-events``
   group). Its :class:`~ept.processors.worker.logic.collector.Collector` makes each batch one
   :class:`~ept.processors.worker.logic.records.Signal` per scope (sent to the internal
   signals topic, keyed by scope); once the broker acknowledged them the batch's offsets
   are committed, then a :class:`~ept.processors.worker.logic.records.Progress` report of
   its source partitions is sent to every signals partition — after the signals, so a
   watermark never overtakes its own events. A timer re-sends the report each second.
2. ``evaluate`` (:class:`~ept.processors.worker.evaluate_stage.EvaluateStage`) counts signals
   into each scope's :class:`~ept.processors.worker.logic.records.ScopeState` (the ``scopes`` table)
   and, as reports move a family's event-time frontier, judges its scopes up to it and
   publishes the notices.

Faust runs at-least-once (its exactly-once mode commits a transaction only when the
destination partition number also consumed something, which a repartitioning stage
breaks). Exactness is restored here: a scope applies an event only if its source offset
is beyond the last one it applied from that source partition, and a notice is published
only if it was decided at a later event time than the last notice of its fingerprint on
the alert topic — so a killed worker neither repeats nor misses one, re-notifications
included. Faust consumes the signals through :mod:`ept.processors.worker.faust_kafka`, so no
offset is committed that an agent was not handed and a rebalance drops no signal; the
event reader commits an event's offset only after its signals are acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import faust
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ept.core.kafka import SCOPE_STATE_MESSAGE_BYTES, faust_broker_options
from ept.core.settings import Settings
from ept.processors.web.http import token_middleware
from ept.processors.worker.broker_wait import wait_for_broker
from ept.processors.worker.collect_stage import CollectStage
from ept.processors.worker.evaluate_stage import EvaluateStage
from ept.processors.worker.faust_kafka import use_fixed_consumption
from ept.processors.worker.logic.event_time import FAMILIES
from ept.processors.worker.logic.rules import Rule
from ept.schemas.registry import EVENT_NAMES

log = logging.getLogger("ept.worker")

class WorkerMetrics:
    """This worker's counters, exposed in Prometheus format through prometheus_client."""

    def __init__(self, collect: CollectStage, evaluate: EvaluateStage,
                 lag: Callable[[], int]) -> None:
        self._collect, self._evaluate, self._lag = collect, evaluate, lag
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self)

    def collect(self) -> Any:
        collect, evaluate = self._collect, self._evaluate
        events = CounterMetricFamily("ept_worker_events", "Events processed, by event name.",
                                     labels=["event"])
        for name in EVENT_NAMES:
            events.add_metric([name], collect.events[name])
        yield events
        yield CounterMetricFamily("ept_worker_decode_errors", "Messages that did not decode.",
                                  value=collect.decode_errors)
        yield CounterMetricFamily(
            "ept_worker_late_events", "Events counted after an instant they belong to was "
            "judged (older than the frontier).", value=evaluate.evaluator.late_events)
        yield CounterMetricFamily(
            "ept_worker_skewed_events", "Events stamped beyond their Kafka record time plus "
            "EPT_MAX_CLOCK_SKEW_S, counted at the record time.",
            value=collect.collector.skewed_events)
        yield CounterMetricFamily(
            "ept_worker_clock_corrected_events", "Events whose time was corrected by their "
            "producer's clock error, from the SDK's send stamp.",
            value=collect.collector.corrected_events)
        yield CounterMetricFamily(
            "ept_worker_duplicate_events", "Events read again under an event id already "
            "counted (producer re-sends).", value=collect.collector.duplicate_events)
        alerts = CounterMetricFamily("ept_worker_alerts", "Alert notifications, by rule "
                                     "and status.", labels=["rule", "status"])
        for (rule, status), count in sorted(evaluate.alerts_told.items()):
            alerts.add_metric([rule, status], count)
        yield alerts
        frontier = GaugeMetricFamily("ept_worker_event_time_frontier_seconds",
                                     "Event time up to which scopes are judged.",
                                     labels=["family", "partition"])
        for partition, judge in sorted(evaluate.judges.items()):
            for family in FAMILIES:
                frontier.add_metric([family, str(partition)],
                                    judge.frontiers.frontier(family) / 1000)
        yield frontier
        yield GaugeMetricFamily("ept_worker_consumer_lag",
                                "Messages not yet committed by this worker.", value=self._lag())


def create_app(settings: Settings, rules: list[Rule],
               source_partitions: dict[str, int] | None = None) -> faust.App:
    """Build the worker's Faust app. Nothing connects until the worker starts.

    ``source_partitions``: the partition count of each event topic (default: the
    configured ``topic_partitions``); every source partition must report before event
    time moves.
    """
    partitions = settings.topic_partitions
    datadir = settings.state_dir / "worker"  # Faust's, not in the working directory
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{settings.topic_prefix}worker",
        **faust_broker_options(settings),
        store="memory://",
        datadir=str(datadir),
        broker_commit_interval=0.5,
        broker_session_timeout=settings.worker_session_timeout_s,
        topic_partitions=partitions,
        topic_replication_factor=settings.topic_replication,
        web_enabled=True,
        # Only ept's own pages: Faust's router and table views would dump the scope table.
        web_router_enabled=False, web_tables_enabled=False, web_graph_enabled=False,
        web_stats_enabled=False,
        web_application_options={"middlewares": [token_middleware(
            settings.api_token.get_secret_value() if settings.api_token else None)]},
        web_bind=settings.http_host,
        web_port=settings.worker_port,
        web_host=settings.http_host,
        consumer_auto_offset_reset="earliest",
        table_cleanup_interval=60.0,
        producer_linger_ms=5,
        producer_max_request_size=SCOPE_STATE_MESSAGE_BYTES,
        consumer_max_fetch_size=SCOPE_STATE_MESSAGE_BYTES,
    )
    use_fixed_consumption(app)
    signals = app.topic(settings.topics.worker_signals, partitions=partitions,
                        key_type=bytes, key_serializer="raw", value_serializer="json",
                        internal=True)
    alerts = app.topic(settings.topics.alerts, key_serializer="raw", value_serializer="raw")
    controls = app.topic(settings.topics.template_controls, key_serializer="raw",
                         value_serializer="raw")
    # Its changelog is created by ensure_topics, taking SCOPE_STATE_MESSAGE_BYTES.
    scopes = app.Table("scopes", default=dict, partitions=partitions)
    evaluate_stage = EvaluateStage(
        settings, rules, source_partitions or dict.fromkeys(EVENT_NAMES, partitions),
        scopes, alerts, controls)
    collect_stage = CollectStage(settings, signals, evaluate_stage.evaluator.families)

    def lag() -> int:
        """Events not yet committed by the reader, and signals not yet by evaluate (the
        standby changelogs Faust also reads are never committed)."""
        monitor = app.monitor
        ends = getattr(monitor, "tp_end_offsets", {})
        committed = getattr(monitor, "tp_committed_offsets", {})
        signals_lag = sum(max(0, end - committed.get(tp, 0)) for tp, end in ends.items()
                          if tp.topic == settings.topics.worker_signals)
        return signals_lag + collect_stage.reader.lag()

    metrics = WorkerMetrics(collect_stage, evaluate_stage, lag)

    def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        evaluate_stage.on_assigned()

    app.on_partitions_assigned.connect(on_assigned)

    @app.task
    async def collect() -> None:
        try:
            await collect_stage.run()
        except Exception as exc:  # a worker that no longer reads events must not live on
            await app.crash(exc)
            raise

    @app.timer(1.0)
    async def heartbeat() -> None:
        if collect_stage.reads_events():
            await collect_stage.report_progress()

    signals_evaluated = [0]  # signal messages (not reports) evaluated here

    @app.agent(signals)
    async def evaluate(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            await evaluate_stage.handle(event.message.partition, event.value)
            if "progress" not in event.value:
                signals_evaluated[0] += 1
            # A message with nothing to publish never suspends, and Faust hands buffered
            # ones over without suspending either: through a backlog this loop would keep
            # the event loop (the web pages, the collect stage's deliveries) for seconds.
            await asyncio.sleep(0)

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", "component": "worker", "rules": [r.name for r in rules]})

    @app.page("/stats")
    async def stats(web: Any, request: Any) -> Any:
        """Counts, assignment and each scope's rule values (``?rates=0``: without them,
        for a caller polling progress: they take a measurement of every scope)."""
        events = collect_stage.events
        rates = evaluate_stage.current_rates() if request.query.get("rates") != "0" else []
        assignment = sorted({(tp.topic, tp.partition) for tp in app.consumer.assignment()}
                            | collect_stage.assignment())
        return web.json({
            "rendersFailed": events["render_failed"], "apiErrors": events["api_error"],
            "slowRenders": events["slow_render"],
            "totalErrors": events["render_failed"] + events["api_error"],
            "totalPerformanceIssues": events["slow_render"],
            "events": dict(events), "rates": rates,
            # signals sent by this collect stage, evaluated by this evaluate stage (a
            # signal read again after a rebalance counts again)
            "signals": {"sent": collect_stage.signals_sent,
                        "evaluated": signals_evaluated[0]},
            "assignment": assignment})

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        return web.text(generate_latest(metrics.registry).decode(),
                        content_type="text/plain")

    return app


def run_worker(settings: Settings, rules: list[Rule], loglevel: str = "info") -> None:
    """Run the worker until SIGTERM/SIGINT. Blocks, first until the broker answers
    (:func:`~ept.processors.worker.broker_wait.wait_for_broker`; SIGTERM meanwhile ends it)."""
    from faust.worker import Worker

    from ept.core.kafka import ensure_scope_state_limit, ensure_topics, topic_partitions

    if not _wait_for_broker(settings):
        return
    ensure_topics(settings)
    ensure_scope_state_limit(settings)
    topics = list(settings.topics.events.values())
    # A topic just created (a broker that just came up) can take a moment to show in the
    # metadata a broker answers with: asked again for up to 30 s before giving up.
    deadline = time.monotonic() + 30
    while True:
        try:
            partitions = topic_partitions(settings, topics)
            break
        except LookupError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    event_of_topic = {topic: name for name, topic in settings.topics.events.items()}
    app = create_app(settings, rules, {event_of_topic[t]: n for t, n in partitions.items()})
    Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()


def _wait_for_broker(settings: Settings) -> bool:
    """Wait for the broker, saying so on stderr (Faust's logging is not set up yet);
    False when SIGTERM or SIGINT came first."""
    stop = threading.Event()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] "
                                           "%(message)s"))
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    log.addHandler(handler)
    try:
        answered = wait_for_broker(settings, stop)
        if answered:
            log.warning("the broker at %s answers", settings.kafka_bootstrap)
        return answered
    finally:
        log.removeHandler(handler)
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)
