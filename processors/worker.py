"""The Faust worker: windowed rules over the event topics, alerts to ``{prefix}alerts``.

Two stages:

1. ``collect`` consumes the five event topics (keyed by template / endpoint, so they are
   co-partitioned), decodes each event with the shared decoder and sends, per batch, one
   signal per (scope, source partition) to the internal ``signals`` topic, keyed by scope
   — this repartitions global scopes (all traffic, render type) to a single owner. A
   signal lists each event's source offset, event time and counter.
2. ``evaluate`` keeps each scope's one-minute buckets (event time) in the ``scopes``
   table, evaluates the scope's rules and publishes alert transitions.

Faust runs at-least-once (its exactly-once mode commits a transaction only when the
destination partition number also consumed something, which a repartitioning stage
breaks). Exactness is restored here: a scope applies an event only if its source offset
is beyond the last one it applied from that source partition (signals of one scope and
source arrive in order), and alert notifications are reconciled against the alert topic
itself — a state that says "firing" publishes only if the topic's last word for that
fingerprint is not already "firing" — so a killed worker neither repeats nor misses one.
It consumes through :mod:`processors.faust_kafka`, so no offset is committed that an
agent was not handed.

Event time only advances with events; ``collect`` sends a tick to every signals partition
when its event-time minute advances, so alerts of idle scopes still resolve — judged at
minute boundaries of event time (:mod:`processors.evaluation`), whatever the batching.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import Counter, defaultdict
from typing import Any

import faust
from ept.core.kafka import faust_broker_options
from ept.core.settings import Settings
from ept.processors.alert_topic import read_alerts
from ept.processors.alerting import alert_notice, fingerprint
from ept.processors.evaluation import Evaluator, Notice, has_active_alert
from ept.processors.faust_kafka import use_transport
from ept.processors.rules import Rule
from ept.processors.signals import Scope, measure, signals_of
from ept.processors.windows import MinuteBuckets, minute_of
from ept.schemas.codec import DecodeError, Decoder
from ept.schemas.registry import EVENT_NAMES

log = logging.getLogger("ept.worker")
TICK = "__tick__"


class WorkerMetrics:
    """Counters of this worker process, served as JSON and in Prometheus format."""

    def __init__(self) -> None:
        self.events = Counter[str]()
        self.decode_errors = 0
        self.alerts = Counter[str]()


class PublishedAlerts:
    """The last status published on the alert topic per fingerprint, read from the topic.

    Reloaded after every rebalance, since another worker may have published meanwhile.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._last: dict[str, str] | None = None

    def invalidate(self, *args: Any, **kwargs: Any) -> None:
        self._last = None

    async def last_status(self, key: str) -> str | None:
        if self._last is None:
            loop = asyncio.get_running_loop()
            self._last = await loop.run_in_executor(None, self._read_topic)
        return self._last.get(key)

    def record(self, key: str, status: str) -> None:
        if self._last is not None:
            self._last[key] = status

    def _read_topic(self) -> dict[str, str]:
        """Blocks until the alert topic was read to its end (bounded by 30 s)."""
        last: dict[str, str] = {}
        read_alerts(self._settings, lambda alert: last.__setitem__(alert.fingerprint,
                                                                    alert.status),
                    until_end=True)
        return last


def _scope_partition(scope_key: str, partitions: int) -> int:
    return zlib.crc32(scope_key.encode()) % partitions


def create_app(settings: Settings, rules: list[Rule]) -> faust.App:
    """Build the worker's Faust app. Nothing connects until the worker starts."""
    partitions = settings.topic_partitions
    evaluator = Evaluator(rules, settings.allowed_lateness_s * 1000)

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
    metrics = WorkerMetrics()
    decoder = Decoder(settings.schema_registry_url, raw=True)
    event_topics = app.topic(*[settings.topics.event(name) for name in EVENT_NAMES],
                             key_type=bytes, value_type=bytes, key_serializer="raw",
                             value_serializer="raw")
    signals = app.topic(settings.topics.worker_signals, partitions=partitions,
                        key_type=bytes, key_serializer="raw", value_serializer="json",
                        internal=True)
    alerts = app.topic(settings.topics.alerts, key_serializer="raw", value_serializer="raw")
    scopes = app.Table("scopes", default=dict, partitions=partitions)
    latest_minute = {"value": 0}

    @app.agent(event_topics)
    async def collect(stream: faust.StreamT[bytes]) -> None:
        # A batch of events becomes one signal per scope listing each event's source
        # partition, offset, time and counter, in event-time order: far fewer messages
        # than one per event, and ``evaluate`` can still skip exactly the events it
        # applied before a restart.
        async for events in stream.take_events(2000, within=0.05):  # type: ignore[attr-defined]
            batched: dict[str, list[tuple[int, str, int, str]]] = defaultdict(list)
            for event in events:
                try:
                    decoded = decoder.decode(event.value)
                except DecodeError:
                    metrics.decode_errors += 1
                    continue
                metrics.events[decoded.name] += 1
                event_ms = int(decoded.record["event_time"])
                message = event.message
                source = f"{message.topic}:{message.partition}"
                for scope, counter in signals_of(decoded.name, decoded.record):
                    batched[scope.key].append((event_ms, source, message.offset, counter))
            newest = 0
            for scope_key, entries in batched.items():
                entries.sort()
                newest = max(newest, entries[-1][0])
                await signals.send(
                    key=scope_key.encode(), partition=_scope_partition(scope_key, partitions),
                    value={"scope": scope_key, "events": entries})
            if minute_of(newest) > latest_minute["value"]:
                latest_minute["value"] = minute_of(newest)
                for partition in range(partitions):
                    await signals.send(key=TICK.encode(), partition=partition,
                                       value={"tick": newest})

    partition_watermark: dict[int, int] = {}
    published = PublishedAlerts(settings)
    app.on_partitions_assigned.connect(published.invalidate)

    async def publish(notices: list[Notice]) -> None:
        for notice in notices:
            key = fingerprint(notice.rule.name, notice.scope.labels)
            last = await published.last_status(key)
            if notice.note.status == last and not notice.note.renotify:
                continue  # already on the topic (published before a restart)
            message = alert_notice(notice.rule, notice.scope.labels, notice.note, 0)
            metrics.alerts[f"{notice.rule.name}:{notice.note.status}"] += 1
            log.info("alert %s %s", notice.note.status, message.summary)
            await alerts.send(key=key.encode(), value=message.encode())
            published.record(key, notice.note.status)

    @app.agent(signals)
    async def evaluate(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            signal = event.value
            partition = event.message.partition
            if "tick" in signal:
                await on_tick(partition, int(signal["tick"]))
                continue
            scope_key = signal["scope"]
            state = dict(scopes[scope_key] or {})
            applied = state.setdefault("applied", {})
            before = dict(applied)  # offsets at or below these were counted earlier
            buckets = MinuteBuckets.from_json(state.get("window"))
            for event_ms, source, offset, counter in signal["events"]:
                if offset <= before.get(source, -1):
                    continue  # replayed after a restart: already counted
                applied[source] = max(offset, applied.get(source, -1))
                await publish(evaluator.count(scope_key, state, buckets, event_ms, counter,
                                              partition_watermark.get(partition, 0)))
            state["window"] = buckets.to_json()
            scopes[scope_key] = state

    async def on_tick(partition: int, now_ms: int) -> None:
        """Event time moved on: catch up this partition's scopes with active alerts."""
        if now_ms <= partition_watermark.get(partition, 0):
            return
        partition_watermark[partition] = now_ms
        for scope_key, state in list(scopes.items()):
            if _scope_partition(scope_key, partitions) != partition:
                continue
            if not has_active_alert(state):
                continue
            state = dict(state)
            buckets = MinuteBuckets.from_json(state.get("window"))
            await publish(evaluator.catch_up(scope_key, state, buckets, now_ms))
            state["window"] = buckets.to_json()
            scopes[scope_key] = state

    def current_rates() -> list[dict[str, Any]]:
        rates = []
        for scope_key, state in list(scopes.items()):
            scope = Scope.parse(scope_key)
            buckets = MinuteBuckets.from_json((state or {}).get("window"))
            for rule in evaluator.rules_of(scope):
                value, samples = measure(rule.kind, buckets.window(rule.window_minutes))
                status = (state.get("alerts", {}).get(rule.name) or {}).get("status", "inactive")
                rates.append({"rule": rule.name, "scope": scope.scope_type,
                              "labels": scope.labels, "value": round(value, 3),
                              "samples": samples, "threshold": rule.threshold,
                              "status": status})
        return rates

    def spec_counters() -> dict[str, int]:
        events = metrics.events
        return {
            "rendersFailed": events["render_failed"], "apiErrors": events["api_error"],
            "slowRenders": events["slow_render"],
            "totalErrors": events["render_failed"] + events["api_error"],
            "totalPerformanceIssues": events["slow_render"],
        }

    def lag() -> int:
        monitor = app.monitor
        total = 0
        for tp, end in getattr(monitor, "tp_end_offsets", {}).items():
            committed = getattr(monitor, "tp_committed_offsets", {}).get(tp, 0)
            total += max(0, end - committed)
        return total

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
        lines = ["# HELP ept_worker_events_total Events processed, by event name.",
                 "# TYPE ept_worker_events_total counter"]
        lines += [f'ept_worker_events_total{{event="{name}"}} {metrics.events[name]}'
                  for name in EVENT_NAMES]
        lines += ["# TYPE ept_worker_decode_errors_total counter",
                  f"ept_worker_decode_errors_total {metrics.decode_errors}",
                  "# HELP ept_worker_late_events_total Events older than the allowed lateness.",
                  "# TYPE ept_worker_late_events_total counter",
                  f"ept_worker_late_events_total {evaluator.late_events}",
                  "# HELP ept_worker_alerts_total Alert notifications, by rule and status.",
                  "# TYPE ept_worker_alerts_total counter"]
        for key, count in sorted(metrics.alerts.items()):
            rule, status = key.split(":")
            lines.append(f'ept_worker_alerts_total{{rule="{rule}",status="{status}"}} {count}')
        lines += ["# HELP ept_worker_consumer_lag Messages not yet committed by this worker.",
                  "# TYPE ept_worker_consumer_lag gauge", f"ept_worker_consumer_lag {lag()}"]
        return web.text("\n".join(lines) + "\n", content_type="text/plain")

    return app


def run_worker(settings: Settings, rules: list[Rule], loglevel: str = "info") -> None:
    """Run the worker until SIGTERM/SIGINT. Blocks."""
    from ept.core.kafka import ensure_topics
    from faust.worker import Worker

    ensure_topics(settings)
    app = create_app(settings, rules)
    Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
