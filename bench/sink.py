"""``make bench-sink``: rows/s from topic to queryable rows, and the specification's queries.

One sink process (in-process thread) consumes N events from the real broker into the
embedded engine, timed from its first consumed message to the last row acknowledged by
ClickHouse (start-up is printed apart, as bench-processors does); the baseline is a bare
clickhouse-connect columnar insert of the same rows measured in the same run, and the
ceiling a bare confluent-kafka consumer reading the same messages (what any Python sink
pays before doing anything). Then each of the four specification queries runs over the
stored events. Targets: >= 150,000 rows/s; each query <= 150 ms over 10 million events.
Last, a second sink consumes another N events while an analyst's heavy query loops on the
SQL endpoint (ClickHouse's HTTP interface): its rows/s against the first run's (target:
at least 0.5 of it). ``EPT_BENCH_EVENTS`` (default 10,000,000) sets N.
"""

from __future__ import annotations

import os
import random
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client
from confluent_kafka import Consumer, Producer

from bench.common import kafka_bootstrap, median, print_table
from ept.core.kafka import SINK_FETCH, ensure_topics
from ept.core.settings import Settings, load_settings
from ept.processors.sink.consumer import Sink
from ept.processors.storage import queries
from ept.processors.storage.analyst import AnalystEngine
from ept.processors.storage.connection import engine_host
from ept.processors.storage.engine.hosted_client import hosted_client
from ept.processors.storage.engine.link import EngineLink
from ept.processors.storage.tables import migrate
from ept.processors.web.http import ServerThread
from ept.processors.web.sql.endpoint import SqlEndpoint
from ept.processors.web.sql.server import SqlRunner
from ept.schemas import SingleObjectEncoder
from tests.conftest import free_port

EVENTS = int(os.environ.get("EPT_BENCH_EVENTS", "10000000"))
DISTINCT = 200_000  # distinct records, published repeatedly (each copy a new offset and time)
SPAN_MS = 29 * 86_400_000
TEMPLATES = [f"tpl_{i:03d}" for i in range(200)]
ENDPOINTS = ["/api/render", "/api/render/{id}", "/api/templates", "/api/ads/generate-variants"]


def event_time(index: int, now_ms: int) -> int:
    """Event ``index`` happened at this time: the events are a month of traffic published
    in time order, as it lies in the topics (so a batch spans hours, not the whole month;
    shuffled times would make every insert write a part per day partition)."""
    return now_ms - SPAN_MS + index * SPAN_MS // EVENTS


def records() -> list[tuple[str, bytes, dict[str, Any]]]:
    """(event name, key, record) across templates, reasons and endpoints; ``event_time``
    is set by :func:`event_time` for each copy published."""
    rng = random.Random(1)
    out = []
    for _ in range(DISTINCT):
        base = {"event_id": str(uuid.uuid4()), "event_time": 0, "service": "bench",
                "environment": "bench", "sdk_version": "0", "user_id": None, "account_id": None}
        pick = rng.random()
        template = rng.choice(TEMPLATES)
        if pick < 0.1:
            name, record = "render_failed", {
                **base, "render_id": "r", "template_id": template,
                "reason": rng.choice(["timeout", "memory_exceeded", "codec_error", "unknown"]),
                "error_message": "Render operation timed out", "duration_ms": rng.uniform(1, 9e4),
                "retry_attempt": 0, "render_type": "video"}
        elif pick < 0.55:
            name, record = "render_completed", {
                **base, "render_id": "r", "template_id": template,
                "render_type": rng.choice(["still", "video", "batch"]),
                "duration_ms": rng.uniform(1, 9e4), "width": 1920, "height": 1080}
        elif pick < 0.6:
            name, record = "slow_render", {
                **base, "render_id": "r", "template_id": template, "render_type": "video",
                "duration_ms": 45000.0, "threshold_ms": 30000.0,
                "slowness_factor": rng.uniform(1, 4), "width": 1920, "height": 1080}
        elif pick < 0.65:
            name, record = "api_error", {
                **base, "endpoint": rng.choice(ENDPOINTS), "method": "POST",
                "status_code": rng.choice([500, 502, 503, 429]), "error_message": "boom",
                "request_id": "q", "duration_ms": rng.uniform(1, 3000), "retry_attempt": 0,
                "rate_limited": False, "retry_after_s": None}
        else:
            name, record = "api_request_completed", {
                **base, "endpoint": rng.choice(ENDPOINTS), "method": "GET", "status_code": 200,
                "duration_ms": rng.uniform(1, 500), "request_id": "q"}
        key = record.get("template_id") or record["endpoint"]
        out.append((name, key.encode(), record))
    return out


def publish(settings: Settings, sample: list[tuple[str, bytes, dict[str, Any]]],
            now_ms: int) -> None:
    print(f"publishing {EVENTS:,} events to {settings.topic_prefix}* ...", flush=True)
    encoder = SingleObjectEncoder()
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 50,
                         "batch.size": 1_000_000, "compression.type": "lz4",
                         "queue.buffering.max.messages": 2_000_000})
    for index in range(EVENTS):
        name, key, record = sample[index % DISTINCT]
        record["event_time"] = event_time(index, now_ms)
        value = encoder.encode(name, record)
        while True:
            try:
                producer.produce(settings.topics.event(name), value, key)
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(600)


def sink_seconds(settings: Settings, client: Client, until_inserted: int) -> float:
    """Seconds from a new sink's first consumed message to ``until_inserted`` rows."""
    sink = Sink(settings, client)
    stop = threading.Event()
    started = time.perf_counter()
    thread = threading.Thread(target=sink.run, args=(stop,))
    thread.start()
    while sink.counters.consumed == 0:
        time.sleep(0.005)
    first_message = time.perf_counter()
    while sink.counters.inserted < until_inserted:
        time.sleep(0.05)
    seconds = time.perf_counter() - first_message
    print(f"sink start-up (subscribe, group join, first fetch): "
          f"{first_message - started:.1f} s, not counted", flush=True)
    stop.set()
    thread.join()
    return seconds


def main() -> None:
    with kafka_bootstrap() as bootstrap, \
            tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as state:
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        settings = load_settings(kafka_bootstrap=bootstrap, topic_prefix=prefix,
                                 state_dir=Path(state), clickhouse_path=Path(state) / "ch",
                                 topic_partitions=6)
        ensure_topics(settings)
        link = engine_host(settings)  # the engine in its sandboxed host, as the sink has it
        client = hosted_client(link)
        migrate(client, settings)
        sample = records()
        now_ms = int(time.time() * 1000)
        publish(settings, sample, now_ms)
        sink_s = sink_seconds(settings, client, EVENTS)
        stored = client.query("SELECT count() FROM events").result_rows[0][0]
        assert stored == EVENTS, (stored, EVENTS)

        baseline_seconds = bare_insert(client, sample, now_ms)
        baseline_rows = EVENTS
        consume_seconds = bare_consume(bootstrap, list(settings.topics.events.values()))
        rows = [["sink: topic -> queryable rows (decode, validate, insert, commit)",
                 f"{EVENTS:,}", f"{sink_s:.1f}", f"{EVENTS / sink_s:,.0f}",
                 f"{(EVENTS / sink_s) / (baseline_rows / baseline_seconds):.2f}"],
                ["baseline: bare clickhouse-connect insert of the same rows",
                 f"{baseline_rows:,}", f"{baseline_seconds:.1f}",
                 f"{baseline_rows / baseline_seconds:,.0f}", "1.00"],
                ["ceiling: bare confluent-kafka consume of the same messages",
                 f"{EVENTS:,}", f"{consume_seconds:.1f}", f"{EVENTS / consume_seconds:,.0f}",
                 f"{(EVENTS / consume_seconds) / (baseline_rows / baseline_seconds):.2f}"]]
        print_table("Sink throughput (target >= 150,000 rows/s)",
                    ["what", "rows", "seconds", "rows/s", "ratio"], rows)

        client.command("DROP TABLE events_baseline")
        print(f"background merges settled after {settle_merges(client):.0f} s", flush=True)
        query_rows = []
        for title, sql in (("render failure rate", queries.SPEC_RENDER_FAILURE_RATE),
                           ("API error trends", queries.SPEC_API_ERROR_TRENDS),
                           ("performance degradation", queries.SPEC_PERFORMANCE_DEGRADATION),
                           ("error rate by template", queries.SPEC_ERROR_RATE_BY_TEMPLATE)):
            timings = []
            for _ in range(5):
                began = time.perf_counter()
                result = client.query(sql)
                timings.append((time.perf_counter() - began) * 1000)
            query_rows.append([title, len(result.result_rows), f"{median(timings):.0f}",
                               f"{max(timings):.0f}"])
        print_table(f"Specification queries over {stored:,} events (target <= 150 ms)",
                    ["query", "result rows", "median ms", "max ms"], query_rows)

        loaded = settings.replace(topic_prefix=f"bench{uuid.uuid4().hex[:6]}.")
        ensure_topics(loaded)
        publish(loaded, sample, now_ms)
        with AnalystLoop(loaded, link) as analyst:
            loaded_s = sink_seconds(loaded, client, EVENTS)
        print_table("Ingestion while an analyst's heavy query loops on the SQL endpoint "
                    "(target: >= 0.5 of idle)",
                    ["what", "rows/s", "ratio", "analyst queries", "median query ms"],
                    [["sink, nobody querying (first run)", f"{EVENTS / sink_s:,.0f}", "1.00",
                      "0", "-"],
                     ["sink, analyst query looping", f"{EVENTS / loaded_s:,.0f}",
                      f"{sink_s / loaded_s:.2f}", str(len(analyst.timings_ms)),
                      f"{median(analyst.timings_ms):.0f}" if analyst.timings_ms else "-"]])


HEAVY_QUERY = """
SELECT template_id, count() AS renders, uniqExact(event_id) AS distinct_events,
       quantiles(0.5, 0.9, 0.99)(duration) AS duration_quantiles
FROM events GROUP BY template_id ORDER BY renders DESC FORMAT JSONEachRow
"""


class AnalystLoop:
    """The sink's SQL endpoint on a free port, and a thread running HEAVY_QUERY on it
    back to back (over HTTP, as an analyst's client would) until the block ends."""

    def __init__(self, settings: Settings, link: EngineLink) -> None:
        port = free_port()
        self._settings = settings.replace(sql_port=port)
        self._url = f"http://127.0.0.1:{port}/"
        self._stop = threading.Event()
        self.timings_ms: list[float] = []
        app = SqlEndpoint(self._settings, AnalystEngine(link)).application()
        self._server = ServerThread(app, "127.0.0.1", port, SqlRunner)
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> AnalystLoop:
        self._server.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)
        self._server.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            began = time.perf_counter()
            with urllib.request.urlopen(self._url, HEAVY_QUERY.encode(), timeout=120) as reply:
                reply.read()
            self.timings_ms.append((time.perf_counter() - began) * 1000)


def settle_merges(client: Client, limit_s: float = 300) -> float:
    """Seconds until no merge is running (at most ``limit_s``): the queries are timed as
    an analyst meets them, not while the engine still merges the parts just written."""
    began = time.perf_counter()
    while time.perf_counter() - began < limit_s:
        if client.query("SELECT count() FROM system.merges").result_rows[0][0] == 0:
            break
        time.sleep(1)
    return time.perf_counter() - began


def bare_consume(bootstrap: str, topics: list[str]) -> float:
    """Seconds for a fresh consumer group to read the EVENTS messages (first message to
    last), touching what the sink reads of each message and nothing more."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         **SINK_FETCH})
    consumer.subscribe(topics)
    read, began = 0, None
    while read < EVENTS:
        messages = consumer.consume(10_000, timeout=0.1)
        if messages and began is None:
            began = time.perf_counter()
        for message in messages:
            message.error(), message.topic(), message.partition(), message.offset()
            message.value()
        read += len(messages)
    consumer.close()
    assert began is not None
    return time.perf_counter() - began


# The ``events`` columns the baseline fills, and the record field each one reads.
BASELINE_COLUMNS = (
    "event_id", "event", "timestamp", "service", "environment", "sdk_version", "user_id",
    "account_id", "render_id", "template_id", "render_type", "reason", "error_message",
    "duration", "retry_attempt", "threshold_ms", "slowness_factor", "width", "height",
    "endpoint", "method", "status_code", "request_id", "rate_limited", "retry_after_s",
    "source_topic", "source_partition", "source_offset",
)
_FIELD = {"timestamp": "event_time", "duration": "duration_ms"}
_NOT_NULL = {"render_id": "", "template_id": "", "render_type": "", "reason": "",
             "error_message": "", "duration": 0.0, "retry_attempt": 0, "endpoint": "",
             "method": "", "request_id": "", "rate_limited": False}


def bare_insert(client: Client, sample: list[tuple[str, bytes, dict[str, Any]]],
                now_ms: int) -> float:
    """Seconds to insert EVENTS rows, already in columns, with no sink logic: the sample
    inserted once per copy published, each copy with its own event times."""
    client.command("CREATE TABLE events_baseline AS events")
    columns: list[list[object]] = [[] for _ in BASELINE_COLUMNS]
    for index, (name, _, record) in enumerate(sample):
        row = {**record, "event": name, "source_topic": "baseline", "source_partition": 0,
               "source_offset": index}
        for column, values in zip(BASELINE_COLUMNS, columns, strict=True):
            found = row.get(_FIELD.get(column, column))
            values.append(_NOT_NULL.get(column) if found is None else found)
    timestamps = BASELINE_COLUMNS.index("timestamp")
    copies = EVENTS // DISTINCT
    seconds = 0.0
    for copy in range(copies):
        columns[timestamps] = [event_time(copy * DISTINCT + index, now_ms)
                               for index in range(DISTINCT)]
        began = time.perf_counter()
        client.insert("events_baseline", columns, column_names=list(BASELINE_COLUMNS),
                      column_oriented=True)
        seconds += time.perf_counter() - began
    return seconds * (EVENTS / (copies * DISTINCT))


if __name__ == "__main__":
    main()
