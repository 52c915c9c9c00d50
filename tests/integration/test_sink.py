"""The ClickHouse sink against the real broker and the real engine."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client
from confluent_kafka import Producer

from ept import Tracker
from ept.core.deletions import ACCOUNT, USER, Deletion, publish_deletion
from ept.core.kafka import ensure_topics
from ept.core.settings import Settings
from ept.processors.sink.consumer import Sink
from ept.processors.sink.dlq import (
    HEADER_ERROR,
    HEADER_ERROR_TYPE,
    HEADER_OFFSET,
    HEADER_TOPIC,
    headers_of,
)
from ept.processors.sink.replay import replay_dead_letters
from ept.processors.storage import queries
from ept.processors.storage.deletion import delete_stored
from ept.processors.storage.tables import EVENT_NAME_INDEX, migrate
from ept.schemas import SingleObjectEncoder
from ept.schemas.codec import ConfluentEncoder
from tests.conftest import free_port
from tests.helpers import read_topics

REPO = Path(__file__).resolve().parents[2]


class RunningSink:
    def __init__(self, settings: Settings, client: Client) -> None:
        self.stop = threading.Event()
        self.sink = Sink(settings, client, group=f"{settings.topic_prefix}sink")
        self.thread = threading.Thread(target=self.sink.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()


@pytest.fixture
def storage(settings: Settings, clickhouse: Client) -> Client:
    migrate(clickhouse, settings)
    ensure_topics(settings)
    return clickhouse


@pytest.fixture
def running_sink(settings: Settings, storage: Client) -> Iterator[RunningSink]:
    sink = RunningSink(settings, storage)
    yield sink
    sink.close()


def wait_for_rows(client: Client, expected: int, timeout: float = 120.0,
                  where: str = "1") -> int:
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = int(client.query(f"SELECT count() FROM events WHERE {where}").result_rows[0][0])
        if count >= expected:
            return count
        time.sleep(0.5)
    return count


def test_every_published_event_is_stored_exactly_once(settings: Settings, storage: Client,
                                                      running_sink: RunningSink) -> None:
    tracker = Tracker(settings)
    for index in range(100_000):
        if index % 4 == 0:
            tracker.track_render_failed(f"r{index}", "timeout", "timed out", f"tpl{index % 40}",
                                        float(index % 5000))
        elif index % 4 == 1:
            tracker.track_render_completed(f"r{index}", f"tpl{index % 40}", "video", 1500.0)
        elif index % 4 == 2:
            tracker.track_api_error("/api/render", 503, "unavailable", None, 20.0)
        else:
            tracker.track_api_request_completed("/api/render", "POST", 200, 12.0)
    assert tracker.flush(60) == 0
    tracker.close()

    assert wait_for_rows(storage, 100_000) == 100_000
    time.sleep(2)  # anything extra would be a duplicate
    count, distinct = storage.query("SELECT count(), uniqExact(event_id) FROM events"
                                    ).result_rows[0]
    assert (count, distinct) == (100_000, 100_000)
    hourly = storage.query("SELECT sum(events) FROM events_hourly").result_rows[0][0]
    assert hourly == 100_000


def publish_known_dataset(settings: Settings) -> None:
    """A dataset whose answers are known (asserted in the test below)."""
    tracker = Tracker(settings)
    for template, failures, successes in (("tpl_a", 6, 14), ("tpl_b", 1, 19), ("tpl_c", 3, 5)):
        for index in range(failures):
            reason = "timeout" if index % 2 == 0 else "codec_error"
            tracker.track_render_failed(f"{template}-f{index}", reason, "x", template,
                                        1000.0 if reason == "timeout" else 3000.0)
        for index in range(successes):
            tracker.track_render_completed(f"{template}-s{index}", template, "video", 2000.0)
    for _ in range(7):
        tracker.track_api_error("/api/render", 500, "boom", None, 100.0)
    for _ in range(3):
        tracker.track_api_error("/api/render", 502, "bad gateway", None, 300.0)
    tracker.track_api_error("api.openai.com/v1/images", 429, "slow down", None, 50.0,
                            retry_after_s=20)
    tracker.track_slow_render("s1", "still", 10_000, 5000, "tpl_a")
    tracker.track_slow_render("s2", "still", 7_500, 5000, "tpl_a")
    tracker.track_slow_render("s3", "video", 90_000, 30_000, "tpl_b")
    assert tracker.flush(30) == 0
    tracker.close()


def test_specification_queries_verbatim_give_the_known_answers(
        settings: Settings, storage: Client, running_sink: RunningSink) -> None:
    publish_known_dataset(settings)
    assert wait_for_rows(storage, 62) == 62

    failure_rate = storage.query(queries.SPEC_RENDER_FAILURE_RATE).result_rows
    today = dt.datetime.now(dt.UTC).date()
    assert [(r[0], r[1], r[2], r[3]) for r in failure_rate] == [
        (today, 6, "timeout", 1000.0), (today, 4, "codec_error", 3000.0)]

    trends = storage.query(queries.SPEC_API_ERROR_TRENDS).result_rows
    assert [tuple(r) for r in trends] == [
        ("/api/render", 500, 7, 100.0), ("/api/render", 502, 3, 300.0),
        ("api.openai.com/v1/images", 429, 1, 50.0)]

    degradation = storage.query(queries.SPEC_PERFORMANCE_DEGRADATION).result_rows
    assert [(r[0], r[1], r[2], r[3]) for r in degradation] == [
        ("video", 3.0, 1, 90_000.0), ("still", 1.75, 2, 8_750.0)]

    by_template = storage.query(queries.SPEC_ERROR_RATE_BY_TEMPLATE).result_rows
    # tpl_c has only 8 renders: filtered out by HAVING COUNT(*) > 10.
    assert [tuple(r) for r in by_template] == [("tpl_a", 6, 14, 30.0), ("tpl_b", 1, 19, 5.0)]

    # The same four through `ept query`'s runner (bound parameters, filtered subquery).
    result = queries.run(storage, "error-rate-by-template", template="tpl_b")
    assert result.rows == [["tpl_b", 1, 19, 5.0]]
    top = queries.run(storage, "top-failing-templates")
    assert [row[:3] for row in top.rows] == [["tpl_a", 6, 14], ["tpl_c", 3, 5], ["tpl_b", 1, 19]]


@pytest.mark.parametrize("spec_query", [queries.SPEC_RENDER_FAILURE_RATE,
                                        queries.SPEC_API_ERROR_TRENDS,
                                        queries.SPEC_PERFORMANCE_DEGRADATION,
                                        queries.SPEC_ERROR_RATE_BY_TEMPLATE])
def test_specification_queries_skip_other_event_types(storage: Client, spec_query: str) -> None:
    """``event_name`` is an ALIAS the primary key cannot see through; the skip index lets
    the verbatim queries read only the granules of the event types they ask for."""
    storage.command("""
        INSERT INTO events (event_id, event, timestamp, template_id)
        SELECT generateUUIDv4(), ['render_completed', 'render_failed', 'api_error',
               'slow_render', 'api_request_completed'][1 + intDiv(number, 20000)],
               now64(3) - number, 'tpl', FROM numbers(100000)""")
    plan = storage.command(f"EXPLAIN indexes = 1 {spec_query}")
    plan_text = plan if isinstance(plan, str) else "\n".join(map(str, plan))
    assert EVENT_NAME_INDEX in plan_text
    granules = re.findall(r"Granules: (\d+)/(\d+)", plan_text)
    selected, total = map(int, granules[-1])
    assert selected < 0.6 * total, plan_text  # each query asks for one or two of five types


def test_ttl_is_declared_and_applied(settings: Settings, storage: Client) -> None:
    raw = storage.command("SHOW CREATE TABLE events")
    assert "TTL toDateTime(timestamp) + toIntervalDay(30)" in raw
    assert "ttl_only_drop_parts = 1" in raw
    for rollup in ("events_hourly", "events_daily"):
        assert "TTL bucket + toIntervalDay(365)" in storage.command(f"SHOW CREATE TABLE {rollup}")

    now = dt.datetime.now(dt.UTC)
    encoder_rows = [(now - dt.timedelta(days=40), "old"), (now - dt.timedelta(days=400), "ancient"),
                    (now, "new")]
    for when, name in encoder_rows:
        storage.command(
            "INSERT INTO events (event_id, event, timestamp, template_id, duration) VALUES "
            "(generateUUIDv4(), 'render_failed', {when:DateTime64(3, 'UTC')}, {name:String}, 1)",
            parameters={"when": when, "name": name})
    storage.command("OPTIMIZE TABLE events FINAL")
    storage.command("OPTIMIZE TABLE events_daily FINAL")
    raw_left = {r[0] for r in storage.query("SELECT template_id FROM events").result_rows}
    rollup_left = {r[0] for r in storage.query("SELECT template_id FROM events_daily").result_rows}
    assert raw_left == {"new"}
    assert rollup_left == {"new", "old"}


def test_poison_messages_go_to_the_dead_letter_topic(settings: Settings, storage: Client,
                                                     running_sink: RunningSink) -> None:
    encoder = SingleObjectEncoder()
    good = [_valid_record(i) for i in range(4)]
    invalid_values = {**_valid_record(99), "duration_ms": -5.0, "render_id": ""}
    unknown_fingerprint = b"\xc3\x01" + b"\x01" * 8 + b"\x00" * 20
    # Random bytes, but not starting with a framing's magic (0x00 registry, C3 01 single object).
    no_framing = b"\xff" + random.Random(5).randbytes(63)
    truncated = encoder.encode("render_failed", _valid_record(98))[:-6]
    payloads = [
        encoder.encode("render_failed", good[0]), no_framing,
        encoder.encode("render_failed", good[1]), unknown_fingerprint,
        encoder.encode("render_failed", good[2]), truncated,
        encoder.encode("render_failed", invalid_values),
        encoder.encode("render_failed", good[3]),
    ]
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for payload in payloads:
        producer.produce(settings.topics.event("render_failed"), payload, b"tpl")
    assert producer.flush(30) == 0

    assert wait_for_rows(storage, 4) == 4
    stored = {str(r[0]) for r in storage.query("SELECT event_id FROM events").result_rows}
    assert stored == {record["event_id"] for record in good}

    letters = read_topics(settings.kafka_bootstrap, [settings.topics.dlq], expected=4)
    kinds = sorted(headers_of(m)[HEADER_ERROR_TYPE] for m in letters)
    assert kinds == ["CorruptPayloadError", "InvalidValues", "UnknownFramingError",
                     "UnknownSchemaError"]
    invalid = next(m for m in letters if headers_of(m)[HEADER_ERROR_TYPE] == "InvalidValues")
    assert "duration_ms" in headers_of(invalid)[HEADER_ERROR]
    assert headers_of(invalid)[HEADER_OFFSET] == "6"

    report = replay_dead_letters(settings, idle_seconds=2)
    assert (report.replayed, report.still_invalid) == (0, 4)


def test_dlq_replay_feeds_only_the_events_own_topic_and_never_a_deleted_account(
        settings: Settings, storage: Client) -> None:
    encoder = SingleObjectEncoder()
    own_topic = settings.topics.event("render_failed")
    letters = [(own_topic, {**_valid_record(1), "account_id": "acct_live"}),
               (own_topic, {**_valid_record(2), "account_id": "acct_dead"}),
               (settings.topics.alerts, {**_valid_record(3), "account_id": "acct_live"})]
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for origin, record in letters:
        producer.produce(settings.topics.dlq, encoder.encode("render_failed", record), b"tpl",
                         headers=[(HEADER_TOPIC, origin.encode())])
    assert producer.flush(30) == 0
    publish_deletion(settings, Deletion(ACCOUNT, "acct_dead", int(time.time() * 1000), "t"))
    report = replay_dead_letters(settings, idle_seconds=2)
    assert (report.replayed, report.deleted, report.no_origin) == (1, 1, 1), report
    replayed = read_topics(settings.kafka_bootstrap, [own_topic], expected=1)
    assert [m.value() for m in replayed] == [encoder.encode("render_failed", letters[0][1])]


def _valid_record(index: int) -> dict:
    return {
        "event_id": str(uuid.uuid4()), "event_time": int(time.time() * 1000),
        "service": "t", "environment": "t", "sdk_version": "x", "user_id": None,
        "account_id": None, "render_id": f"r{index}", "template_id": "tpl",
        "reason": "timeout", "error_message": "m", "duration_ms": 1.0, "retry_attempt": 0,
        "render_type": None,
    }


def test_delete_account_removes_only_that_account(settings: Settings, storage: Client,
                                                  running_sink: RunningSink) -> None:
    tracker = Tracker(settings, consent=lambda user, account: True)
    for account in ("acct_gone", "acct_kept"):
        for index in range(50):
            tracker.track_render_failed(f"{account}-{index}", "timeout", "m", "tpl", 1.0,
                                        user_id=f"u-{account}", account_id=account)
            tracker.track_render_completed(f"{account}-ok{index}", "tpl", "still", 1.0,
                                           user_id=f"u-{account}", account_id=account)
    assert tracker.flush(30) == 0
    tracker.close()
    assert wait_for_rows(storage, 200) == 200

    removed = delete_stored(storage, ACCOUNT, "acct_gone")
    assert removed == {"events": 100, "events_hourly": 100, "events_daily": 100}
    for table, column in (("events", "account_id"), ("events_hourly", "account"),
                          ("events_daily", "account")):
        left = dict(storage.query(f"SELECT {column}, count() FROM {table} GROUP BY {column}"
                                  ).result_rows)
        assert "acct_gone" not in left
    kept = storage.query("SELECT count() FROM events WHERE account_id = 'acct_kept'")
    assert kept.result_rows[0][0] == 100
    assert storage.query("SELECT sum(events) FROM events_daily WHERE account = 'acct_kept'"
                         ).result_rows[0][0] == 100
    assert delete_stored(storage, USER, "u-acct_kept") == {"events": 100}
    assert storage.query("SELECT sum(events) FROM events_daily WHERE account = 'acct_kept'"
                         ).result_rows[0][0] == 100  # rollups hold no user


def count_of(storage: Client, condition: str) -> int:
    return int(storage.query(f"SELECT count() FROM events WHERE {condition}"
                             ).result_rows[0][0])


def test_a_recorded_deletion_holds_for_what_kafka_still_holds(settings: Settings,
                                                              storage: Client) -> None:
    """Events of a deleted account or user are never stored after the deletion: those
    stored before are removed by the running sink, those it reads later (still queued in
    Kafka when it was recorded, or published afterwards) are dropped."""
    tracker = Tracker(settings, consent=lambda user, account: True)

    def publish(tag: str) -> None:
        for account, user in (("acct_x", "u1"), ("acct_y", "u2"), ("acct_y", "u_gone")):
            for index in range(20):
                tracker.track_render_completed(f"{tag}-{account}-{user}-{index}", "tpl",
                                               "still", 1.0, user_id=user, account_id=account)
        assert tracker.flush(30) == 0

    sink = RunningSink(settings, storage)
    try:
        publish("before")
        assert wait_for_rows(storage, 60) == 60
        publish_deletion(settings, Deletion(ACCOUNT, "acct_x", int(time.time() * 1000), "t"))
        deadline = time.monotonic() + 60
        while count_of(storage, "account_id = 'acct_x'") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert count_of(storage, "account_id = 'acct_x'") == 0
        publish("after")  # the deleted account goes on sending: nothing of it is stored
        assert wait_for_rows(storage, 80) == 80
    finally:
        sink.close()
    # queued in Kafka while no sink runs, then deleted: dropped when a sink reads them
    publish("queued")
    publish_deletion(settings, Deletion(USER, "u_gone", int(time.time() * 1000), "t"))
    restarted = RunningSink(settings, storage)
    try:
        assert wait_for_rows(storage, 80) == 80  # 20 of acct_y/u2 + 20 of u_gone deleted
        deadline = time.monotonic() + 60
        while count_of(storage, "user_id = 'u2'") < 60 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        restarted.close()
        tracker.close()
    assert count_of(storage, "account_id = 'acct_x'") == 0
    assert count_of(storage, "user_id = 'u2'") == 60
    assert count_of(storage, "user_id = 'u_gone'") == 40  # stored before its deletion
    assert restarted.sink.counters.dropped_deleted == 20 + 20  # acct_x and u_gone queued


def test_clickhouse_unavailable_pauses_and_loses_nothing(settings: Settings, storage: Client,
                                                         running_sink: RunningSink) -> None:
    tracker = Tracker(settings)
    for index in range(500):
        tracker.track_render_completed(f"a{index}", "tpl", "still", 1.0)
    assert tracker.flush(30) == 0
    assert wait_for_rows(storage, 500) == 500

    storage.command("DETACH TABLE events")  # inserts now fail
    try:
        for index in range(2_000):
            tracker.track_render_completed(f"b{index}", "tpl", "still", 1.0)
        assert tracker.flush(30) == 0
        deadline = time.monotonic() + 30
        while running_sink.sink.counters.insert_failures < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert running_sink.sink.counters.insert_failures >= 2
    finally:
        storage.command("ATTACH TABLE events")
    tracker.close()
    assert wait_for_rows(storage, 2_500) == 2_500
    time.sleep(2)
    assert storage.query("SELECT count(), uniqExact(event_id) FROM events").result_rows[0] == (
        2_500, 2_500)


def sink_process(settings: Settings, data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ, "EPT_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "EPT_TOPIC_PREFIX": settings.topic_prefix, "EPT_CLICKHOUSE_PATH": str(data_dir),
        "EPT_STATE_DIR": str(data_dir.parent), "EPT_SINK_PORT": str(port),
        "EPT_SQL_PORT": str(free_port()),
        "EPT_SINK_BATCH_ROWS": "5000", "EPT_SINK_BATCH_SECONDS": "0.5",
    }
    if settings.clickhouse_url is not None:
        environment["EPT_CLICKHOUSE_URL"] = settings.clickhouse_url.get_secret_value()
        environment.pop("EPT_CLICKHOUSE_PATH")
    return subprocess.Popen([sys.executable, "-m", "ept.deploy.cli", "sink"], env=environment,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)


def test_sink_killed_at_random_moments_stores_each_event_once(settings: Settings,
                                                              tmp_path: Path) -> None:
    """SIGKILL the sink process repeatedly during a 200,000-event load; restart it each time."""
    ensure_topics(settings)
    data_dir = tmp_path / "sink-clickhouse"
    port = free_port()
    total = 200_000
    rng = random.Random(7)
    publisher_done = threading.Event()

    def publish() -> None:
        tracker = Tracker(settings)
        for index in range(total):
            tracker.track_render_failed(f"k{index}", "timeout", "m", f"tpl{index % 64}", 1.0)
            if index % 20_000 == 0:
                time.sleep(0.5)
        tracker.flush(120)
        tracker.close()
        publisher_done.set()

    publisher = threading.Thread(target=publish)
    publisher.start()
    kills = 0
    process = sink_process(settings, data_dir, port)
    try:
        while not publisher_done.is_set() or kills < 5:
            time.sleep(rng.uniform(1.5, 4.0))
            process.send_signal(signal.SIGKILL)
            process.wait(30)
            kills += 1
            process = sink_process(settings, data_dir, port)
        publisher.join()
        summary = _wait_for_summary(port, total)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    assert kills >= 5
    assert summary == {"rows": total, "distinct_event_ids": total}, summary


def _wait_for_summary(port: int, total: int, timeout: float = 180.0) -> dict[str, int]:
    import urllib.request

    deadline = time.monotonic() + timeout
    summary: dict[str, int] = {}
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/query/ingestion-summary", timeout=10) as reply:
                rows = json.loads(reply.read())
            summary = {"rows": sum(r["rows"] for r in rows),
                       "distinct_event_ids": sum(r["distinct_event_ids"] for r in rows)}
            if summary["rows"] >= total:
                time.sleep(3)  # let any duplicate show up
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/api/query/ingestion-summary") as reply:
                    rows = json.loads(reply.read())
                return {"rows": sum(r["rows"] for r in rows),
                        "distinct_event_ids": sum(r["distinct_event_ids"] for r in rows)}
        except OSError:
            pass
        time.sleep(1)
    return summary


INJECTIONS = ["x' OR '1'='1", "tpl_a'; DROP TABLE events; --", "' UNION SELECT 1,2,3,4 --",
              "tpl_a\\' OR 1=1 --", "{template:String}", "tpl_a\" OR \"\"=\""]


def test_query_parameters_never_run_as_sql(settings: Settings, storage: Client,
                                           running_sink: RunningSink) -> None:
    """Injection attempts in every parameter, directly and through the HTTP API."""
    import threading as _threading
    import urllib.error
    import urllib.parse
    import urllib.request

    from aiohttp import web

    from ept.processors.storage.queries import parse_time
    from ept.processors.web.http import ServerThread
    from ept.processors.web.query_api import QueryApi

    publish_known_dataset(settings)
    assert wait_for_rows(storage, 62) == 62
    for attempt in INJECTIONS:
        for name in queries.QUERIES:
            assert queries.run(storage, name, template=attempt).rows == []
        with pytest.raises(ValueError, match="since"):
            parse_time(f"2026-01-01{attempt}", "since")

    app = web.Application()
    app.add_routes(QueryApi(storage, _threading.Lock()).routes())
    port = free_port()
    server = ServerThread(app, "127.0.0.1", port)
    server.start()
    try:
        for attempt in INJECTIONS:
            query = urllib.parse.urlencode({"template": attempt})
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/query/error-rate-by-template?{query}") as reply:
                assert json.loads(reply.read()) == []
            for parameter in ("since", "until", "format"):
                query = urllib.parse.urlencode({parameter: attempt})
                with pytest.raises(urllib.error.HTTPError) as refused:
                    urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/api/query/api-error-trends?{query}")
                assert refused.value.code == 400
            name = urllib.parse.quote(attempt, safe="")
            with pytest.raises(urllib.error.HTTPError) as unknown:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/query/{name}")
            assert unknown.value.code == 404
    finally:
        server.stop()
    # Nothing ran: every table is there and the data is untouched.
    assert storage.query("SELECT count() FROM events").result_rows[0][0] == 62
    tables = {row[0] for row in storage.query("SHOW TABLES").result_rows}
    assert {"events", "events_hourly", "events_daily"} <= tables


def test_fuzzed_payloads_among_valid_ones(settings: Settings, storage: Client,
                                          running_sink: RunningSink) -> None:
    """1,000 random or mutated payloads among 1,000 valid ones: every payload the decoder
    and the value rules accept is stored once, every other one is in the dead-letter topic.

    (An accepted payload whose mutated event time is older than the raw retention is
    stored and then dropped by the 30-day TTL, as any such event would be.)"""
    from ept.schemas import DecodeError, Decoder
    from ept.schemas.validation import problems

    rng = random.Random(2026)
    encoder = SingleObjectEncoder()
    valid = [encoder.encode("render_failed", _valid_record(i)) for i in range(1000)]
    fuzzed = []
    for index in range(1000):
        if index % 3 == 0:
            fuzzed.append(rng.randbytes(rng.randrange(0, 120)))
        else:
            payload = bytearray(valid[index])
            for _ in range(rng.randrange(1, 6)):
                payload[rng.randrange(len(payload))] = rng.randrange(256)
            fuzzed.append(bytes(payload[: rng.randrange(1, len(payload) + 1)]
                                if index % 3 == 1 else payload))
    decoder = Decoder(raw=True)
    retained_since_ms = (time.time() - settings.raw_retention_days * 86_400 + 3_600) * 1000
    accepted = retained = 0
    for payload in fuzzed:
        try:
            event = decoder.decode(payload)
        except DecodeError:
            continue
        if event.name == "render_failed" and not problems(event.name, event.record):
            accepted += 1
            retained += event.record["event_time"] >= retained_since_ms
    mixed = [p for pair in zip(valid, fuzzed, strict=True) for p in pair]
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5})
    for payload in mixed:
        producer.produce(settings.topics.event("render_failed"), payload, b"tpl")
    assert producer.flush(30) == 0

    expected_rows = len(valid) + retained
    assert wait_for_rows(storage, expected_rows) == expected_rows
    letters = read_topics(settings.kafka_bootstrap, [settings.topics.dlq],
                          expected=len(fuzzed) - accepted)
    assert len(letters) == len(fuzzed) - accepted
    time.sleep(2)
    count, _ = storage.query("SELECT count(), uniqExact(event_id) FROM events").result_rows[0]
    assert count == expected_rows


def full_records(now_ms: int) -> dict[str, list[dict[str, object]]]:
    """Two records per event type: every optional field set, and every one left null."""
    out: dict[str, list[dict[str, object]]] = {}
    for present in (True, False):
        base = {"event_time": now_ms - 1234, "service": "svc", "environment": "prod",
                "sdk_version": "9.9", "user_id": "u-1" if present else None,
                "account_id": "acct-1" if present else None}
        records = {
            "render_failed": {"render_id": "r-ü", "template_id": "tpl", "reason": "codec_error",
                              "error_message": "ffmpeg: bad frame", "duration_ms": 12.5,
                              "retry_attempt": 3, "render_type": "batch" if present else None},
            "render_completed": {"render_id": "r2", "template_id": "tpl", "render_type": "still",
                                 "duration_ms": 99.25, "width": 3840 if present else None,
                                 "height": 2160 if present else None},
            "slow_render": {"render_id": "r3", "template_id": "tpl", "render_type": "video",
                            "duration_ms": 45000.0, "threshold_ms": 30000.0,
                            "slowness_factor": 1.5, "width": 1 if present else None,
                            "height": 70000 if present else None},
            "api_error": {"endpoint": "/api/render/{id}", "method": "POST" if present else None,
                          "status_code": 429 if present else None, "error_message": "slow down",
                          "request_id": "q1", "duration_ms": 0.5, "retry_attempt": 0,
                          "rate_limited": present,
                          "retry_after_s": 2.5 if present else None},
            "api_request_completed": {"endpoint": "/api/templates", "method": "GET",
                                      "status_code": 200, "duration_ms": 7.0,
                                      "request_id": "q2"},
        }
        for name, fields in records.items():
            out.setdefault(name, []).append(
                {"event_id": str(uuid.uuid4()), **base, **fields})
    return out


def test_every_field_is_stored_as_published_in_both_framings(settings: Settings,
                                                             storage: Client) -> None:
    """Column by column, for both wire framings: what the sink hands ClickHouse as Avro is
    read back as the published values; columns an event lacks hold their defaults."""
    registry = settings.replace(schema_registry_url="mock://ept-sink-test")
    encoders = (SingleObjectEncoder(),
                ConfluentEncoder("mock://ept-sink-test",
                                 registry.topics.events))
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    published = {}
    for encoder in encoders:
        for name, records in full_records(int(time.time() * 1000)).items():
            for record in records:
                producer.produce(settings.topics.event(name), encoder.encode(name, record), b"k")
                published[record["event_id"]] = (name, record)
    assert producer.flush(30) == 0
    sink = RunningSink(registry, storage)
    try:
        assert wait_for_rows(storage, len(published)) == len(published)
    finally:
        sink.close()

    columns = [c for c in storage.query("SELECT * FROM events LIMIT 0").column_names
               if c not in ("source_topic", "source_partition", "source_offset", "inserted_at")]
    result = storage.query(f"SELECT {', '.join(columns)} FROM events")
    renamed = {"timestamp": "event_time", "duration": "duration_ms"}
    defaults = {"render_id": "", "template_id": "", "render_type": "", "reason": "",
                "error_message": "", "retry_attempt": 0, "endpoint": "", "method": "",
                "request_id": "", "rate_limited": False}
    for row in result.named_results():
        name, record = published[str(row["event_id"])]
        assert row["event"] == name
        assert int(row["timestamp"].replace(tzinfo=dt.UTC).timestamp() * 1000) == (
            record["event_time"])
        for column in columns:
            if column in ("event_id", "event", "timestamp"):
                continue
            value = record.get(renamed.get(column, column))
            expected = defaults.get(column) if value is None else value
            assert row[column] == expected, (name, column, row[column], expected)


class FailingOnce:
    """The real client, except that one insert raises *after* ClickHouse applied it —
    the ambiguous failure (a timeout on the way back) that retries must not duplicate."""

    def __init__(self, client: Client, fail_at: int) -> None:
        self._client = client
        self._inserts = 0
        self._fail_at = fail_at

    def raw_insert(self, *args: object, **kwargs: object) -> object:
        result = self._client.raw_insert(*args, **kwargs)  # type: ignore[arg-type]
        self._inserts += 1
        if self._inserts == self._fail_at:
            raise ConnectionError("injected: reply lost after the insert was applied")
        return result

    def __getattr__(self, name: str) -> object:
        return getattr(self._client, name)


def test_batch_retried_after_an_applied_insert_stores_each_event_once(
        settings: Settings, storage: Client) -> None:
    """A batch of three event types is three inserts; the second one's reply is lost, so
    the whole batch is retried: ClickHouse drops the two already applied (same tokens)."""
    tracker = Tracker(settings)
    for index in range(300):
        tracker.track_render_completed(f"c{index}", "tpl", "still", 1.0)
        tracker.track_api_request_completed("/api/x", "GET", 200, 1.0)
        tracker.track_render_failed(f"f{index}", "timeout", "timed out", "tpl", 5.0)
    assert tracker.flush(30) == 0
    tracker.close()
    stop = threading.Event()
    sink = Sink(settings.replace(sink_batch_seconds=5.0),
                FailingOnce(storage, fail_at=2),  # type: ignore[arg-type]
                group=f"{settings.topic_prefix}sink")
    thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert wait_for_rows(storage, 900) == 900
        time.sleep(1)
    finally:
        stop.set()
        thread.join(60)
    assert sink.counters.insert_failures == 1
    assert storage.query("SELECT count(), uniqExact(event_id) FROM events").result_rows[0] == (
        900, 900)
    # The rollup views saw each row once too.
    assert storage.query("SELECT sum(events) FROM events_hourly").result_rows[0][0] == 900


class RefusingInserts:
    """The real client, except that it refuses every insert until ``accept`` is called
    (queries are answered: a sink reads its newly assigned partitions' stored offsets)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._accepting = threading.Event()

    def accept(self) -> None:
        self._accepting.set()

    def raw_insert(self, *args: object, **kwargs: object) -> object:
        if not self._accepting.is_set():
            raise ConnectionError("injected: insert refused")
        return self._client.raw_insert(*args, **kwargs)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self._client, name)


def test_a_sink_joining_while_another_waits_on_clickhouse_stores_each_event_once(
        settings: Settings, storage: Client) -> None:
    """The first sink's inserts are refused: it waits with its partitions paused, polling
    only there, so it serves the rebalance a second sink's joining causes inside that
    wait. It must forget its batch (the second stores a share of it), hold what it is
    assigned, seek nothing it lost, and keep running."""
    tracker = Tracker(settings)
    for index in range(3_000):  # keys spread over the topic's three partitions
        tracker.track_render_completed(f"j{index}", f"tpl{index % 60}", "still", 1.0)
    assert tracker.flush(30) == 0
    tracker.close()
    refusing = RefusingInserts(storage)
    first = RunningSink(settings, refusing)  # type: ignore[arg-type]
    second = None
    try:
        deadline = time.monotonic() + 60
        while first.sink.counters.insert_failures < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert first.sink.counters.insert_failures >= 2  # in the wait, paused
        second = RunningSink(settings, storage)
        assert wait_for_rows(storage, 1) >= 1  # rebalanced: the second stored its share
        refusing.accept()
        assert wait_for_rows(storage, 3_000) == 3_000
        assert first.thread.is_alive() and second.thread.is_alive()
    finally:
        first.close()
        if second is not None:
            second.close()
    assert storage.query("SELECT count(), uniqExact(event_id) FROM events").result_rows[0] == (
        3_000, 3_000)
