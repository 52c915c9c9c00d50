"""Analysts' own SQL: real, unmodified ClickHouse clients against the SQL endpoint of a
running ``ept sink`` (the embedded engine), and ``ept sql``."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import clickhouse_connect
import pyarrow.parquet
import pytest

from ept import Tracker
from ept.core.kafka import ensure_topics
from ept.core.settings import load_settings
from ept.processors.storage import queries
from tests.conftest import KafkaService, free_port

REPO = Path(__file__).resolve().parents[2]
CLIENTS = REPO / "tests" / "clients"
PASSWORD = "analyst-test-password"
MAX_ROWS = 100_000

FAILURES = [("tpl_a", "timeout")] * 5 + [("tpl_a", "codec_error")] * 2 + [("tpl_b", "timeout")]
SUCCESSES = {"tpl_a": 13, "tpl_b": 20}
API_ERRORS = [("/api/render", 500)] * 4 + [("/api/templates", 503)] * 2
SLOW = [("video", 2.0)] * 3 + [("still", 1.5)]


@dataclass(frozen=True)
class RunningSink:
    url: str
    environment: dict[str, str]


def sql_over_http(url: str, query: str, password: str = PASSWORD,
                  **parameters: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"{url}?{urllib.parse.urlencode(parameters)}",
                                     data=query.encode(), method="POST",
                                     headers={"X-ClickHouse-User": "analyst",
                                              "X-ClickHouse-Key": password})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.fixture(scope="module")
def sink(kafka_service: KafkaService, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[RunningSink]:
    """A sink on the embedded engine (the endpoint's home) holding a known set of events."""
    state = tmp_path_factory.mktemp("sql-sink")
    settings = load_settings(kafka_bootstrap=kafka_service.bootstrap,
                             topic_prefix=f"t{uuid.uuid4().hex[:10]}.", state_dir=state,
                             strict=True, topic_partitions=3)
    ensure_topics(settings)
    port = free_port()
    environment = {**os.environ, "EPT_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                   "EPT_TOPIC_PREFIX": settings.topic_prefix, "EPT_STATE_DIR": str(state),
                   "EPT_CLICKHOUSE_PATH": str(state / "clickhouse"),
                   "EPT_SINK_PORT": str(free_port()), "EPT_SQL_PORT": str(port),
                   "EPT_ANALYST_PASSWORD": PASSWORD,
                   "EPT_SQL_MAX_RESULT_ROWS": str(MAX_ROWS)}
    environment.pop("EPT_CLICKHOUSE_URL", None)
    process = subprocess.Popen([sys.executable, "-m", "ept.deploy.cli", "sink"],
                               env=environment, cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        tracker = Tracker(settings)
        for index, (template, reason) in enumerate(FAILURES):
            tracker.track_render_failed(f"f{index}", reason, "m", template, 100.0 + index)
        for template, count in SUCCESSES.items():
            for index in range(count):
                tracker.track_render_completed(f"{template}-{index}", template, "still", 50.0)
        for endpoint, status in API_ERRORS:
            tracker.track_api_error(endpoint, status, "failed", None, 20.0)
        for index, (render_type, factor) in enumerate(SLOW):
            tracker.track_slow_render(f"s{index}", render_type, 1000.0 * factor, 1000.0,
                                      "tpl_a")
        assert tracker.flush(30) == 0
        tracker.close()
        url = f"http://127.0.0.1:{port}/"
        expected = len(FAILURES) + sum(SUCCESSES.values()) + len(API_ERRORS) + len(SLOW)
        deadline = time.monotonic() + 120
        stored = b""
        while time.monotonic() < deadline:
            try:
                status, _, stored = sql_over_http(url, "SELECT count() FROM events")
                if status == 200 and int(stored) >= expected:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        assert stored.strip() == str(expected).encode()
        yield RunningSink(url, environment)
    finally:
        process.terminate()
        process.wait(60)


def test_clickhouse_connect_runs_the_specification_queries_verbatim(sink: RunningSink) -> None:
    port = int(sink.url.rsplit(":", 1)[1].strip("/"))
    client = clickhouse_connect.get_client(host="127.0.0.1", port=port, interface="http",
                                           username="analyst", password=PASSWORD)
    failures = client.query(queries.SPEC_RENDER_FAILURE_RATE)
    assert failures.column_names == ("date", "total_failures", "reason",
                                     "avg_duration_before_failure")
    assert {row[2]: row[1] for row in failures.result_rows} == Counter(
        reason for _, reason in FAILURES)
    trends = client.query(queries.SPEC_API_ERROR_TRENDS).result_rows
    assert {(row[0], row[1]): row[2] for row in trends} == Counter(API_ERRORS)
    slow = client.query(queries.SPEC_PERFORMANCE_DEGRADATION).result_rows
    assert [(row[0], row[1], row[2]) for row in slow] == [("video", 2.0, 3), ("still", 1.5, 1)]
    by_template = client.query(queries.SPEC_ERROR_RATE_BY_TEMPLATE).result_rows
    assert {row[0]: row[1] for row in by_template} == Counter(t for t, _ in FAILURES)

    frame = client.query_df("SELECT templateId, count() AS renders FROM events "
                            "WHERE event = 'render_completed' GROUP BY templateId "
                            "ORDER BY templateId")
    assert frame.to_dict("records") == [{"templateId": t, "renders": n}
                                        for t, n in sorted(SUCCESSES.items())]
    table = client.query_arrow("SELECT reason, count() AS n FROM events WHERE "
                               "event_name = 'render_failed' GROUP BY reason ORDER BY reason")
    assert table.to_pydict() == {"reason": ["codec_error", "timeout"], "n": [2, 6]}


@pytest.mark.skipif(shutil.which("node") is None
                    or not (CLIENTS / "node_modules" / "@clickhouse" / "client").exists(),
                    reason="`make client-deps` installs Node.js and @clickhouse/client")
def test_the_javascript_client_streams_rows_of_a_query_with_parameters(
        sink: RunningSink) -> None:
    query = ("SELECT templateId, reason, count() AS failures FROM events "
             "WHERE event_name = {event:String} AND templateId = {template:String} "
             "GROUP BY templateId, reason ORDER BY failures DESC")
    result = subprocess.run(
        ["node", "stream_rows.mjs", sink.url, "analyst", PASSWORD, query,
         json.dumps({"event": "render_failed", "template": "tpl_a"})],
        cwd=CLIENTS, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines == [{"templateId": "tpl_a", "reason": "timeout", "failures": 5},
                     {"templateId": "tpl_a", "reason": "codec_error", "failures": 2},
                     {"rows": 2}]


def curl(sink: RunningSink, *arguments: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-s", "-S", "-u", f"analyst:{PASSWORD}", *arguments],
                          capture_output=True, timeout=60, check=False)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_gets_csv_and_parquet(sink: RunningSink) -> None:
    query = urllib.parse.quote("SELECT endpoint, count() AS errors FROM events "
                               "WHERE event_name = 'api_error' GROUP BY endpoint "
                               "ORDER BY endpoint FORMAT CSVWithNames")
    csv = curl(sink, f"{sink.url}?query={query}")
    assert csv.stdout.decode() == '"endpoint","errors"\n"/api/render",4\n"/api/templates",2\n'
    parquet = curl(sink, "--data-binary", "SELECT renderType, slownessFactor FROM events "
                   "WHERE event_name = 'slow_render' ORDER BY renderType FORMAT Parquet",
                   sink.url)
    assert parquet.stdout[:4] == b"PAR1"
    table = pyarrow.parquet.read_table(io.BytesIO(parquet.stdout))
    assert table.to_pydict() == {"renderType": ["still", "video", "video", "video"],
                                 "slownessFactor": [1.5, 2.0, 2.0, 2.0]}


def test_writes_files_urls_wrong_passwords_and_huge_results_are_refused(
        sink: RunningSink) -> None:
    status, headers, body = sql_over_http(
        sink.url, "INSERT INTO events (event_id) VALUES (generateUUIDv4())")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "164")
    assert b"Cannot execute query in readonly mode. (READONLY)" in body
    for reader in ("file('/etc/passwd', 'LineAsString')", "url('http://127.0.0.1:1/')"):
        status, _, body = sql_over_http(sink.url, f"SELECT * FROM {reader}")
        assert status == 403 and b"(READONLY)" in body, body
    status, _, body = sql_over_http(sink.url, "SELECT 1", password="wrong")
    assert status == 403 and b"(AUTHENTICATION_FAILED)" in body
    status, _, body = sql_over_http(sink.url, "SELECT * FROM numbers(1000000)")
    assert status == 500 and b"(TOO_MANY_ROWS_OR_BYTES)" in body
    status, _, body = sql_over_http(sink.url, "SELECT 1 SETTINGS max_result_rows = 0")
    assert status == 403 and b"Cannot modify 'max_result_rows'" in body
    status, headers, body = sql_over_http(sink.url, "SELECT 1 AS one",
                                          default_format="JSONEachRow")
    assert (status, body, headers["X-ClickHouse-Format"]) == (200, b'{"one":1}\n',
                                                               "JSONEachRow")
    with urllib.request.urlopen(f"{sink.url}ping", timeout=10) as reply:
        assert reply.read() == b"Ok.\n"


def ept_sql(environment: dict[str, str], *arguments: str,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ept.deploy.cli", "sql", *arguments],
                          env=environment, cwd=REPO, capture_output=True, text=True,
                          input=stdin, timeout=120, check=False)


def test_ept_sql_through_the_running_sink(sink: RunningSink, tmp_path: Path) -> None:
    query = ("SELECT templateId, count() AS failures FROM events WHERE "
             "event_name = 'render_failed' GROUP BY templateId ORDER BY templateId")
    table = ept_sql(sink.environment, query)
    assert table.returncode == 0, table.stderr
    assert "templateId" in table.stdout and "│ tpl_a" in table.stdout
    assert ept_sql(sink.environment, "--format", "csv", query).stdout == (
        '"templateId","failures"\n"tpl_a",7\n"tpl_b",1\n')
    assert ept_sql(sink.environment, "--format", "tsv", query).stdout == (
        "templateId\tfailures\ntpl_a\t7\ntpl_b\t1\n")
    assert [json.loads(line) for line in ept_sql(sink.environment, "--format", "json",
                                                 query).stdout.splitlines()] == [
        {"templateId": "tpl_a", "failures": 7}, {"templateId": "tpl_b", "failures": 1}]
    output = tmp_path / "failures.parquet"
    assert ept_sql(sink.environment, "--format", "parquet", "-o", str(output),
                   query).returncode == 0
    assert pyarrow.parquet.read_table(output).to_pydict() == {
        "templateId": ["tpl_a", "tpl_b"], "failures": [7, 1]}
    piped = ept_sql(sink.environment, "--format", "csv", stdin="SELECT 6 * 7 AS answer")
    assert piped.stdout == '"answer"\n42\n'
    syntax = ept_sql(sink.environment, "SELECT templateId FROM events WHERE")
    assert syntax.returncode == 1
    assert syntax.stderr.startswith("Error: Code: 62. DB::Exception: Syntax error")
    assert syntax.stderr.rstrip().endswith("(SYNTAX_ERROR)")


def test_ept_sql_on_an_embedded_engine_nobody_holds(tmp_path: Path) -> None:
    environment = {**os.environ, "EPT_STATE_DIR": str(tmp_path),
                   "EPT_CLICKHOUSE_PATH": str(tmp_path / "clickhouse")}
    environment.pop("EPT_CLICKHOUSE_URL", None)
    result = ept_sql(environment, "--format", "csv", "SELECT 1 + 1 AS two")
    assert (result.returncode, result.stdout) == (0, '"two"\n2\n')
    refused = ept_sql(environment, "CREATE TABLE t (x UInt8) ENGINE = Memory")
    assert refused.returncode == 1 and "(READONLY)" in refused.stderr


def ept(environment: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ept.deploy.cli", *arguments],
                          env=environment, cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)


def test_thresholds_suggested_from_stored_durations_reach_the_sdk(sink: RunningSink) -> None:
    """`ept thresholds suggest` reads the durations through the running sink's SQL
    endpoint; --apply publishes them, and a render service's tracker uses them."""
    shown = ept(sink.environment, "thresholds", "suggest", "--since", "-1d",
                "--min-renders", "15")
    assert shown.returncode == 0, shown.stderr
    # tpl_b: 20 still renders of 50 ms; tpl_a has 13, fewer than 15
    rows = [line.split() for line in shown.stdout.splitlines()[1:-1]]
    assert rows == [["tpl_b", "render_still", "20", "50", "5000", "50"]], shown.stdout
    assert ept(sink.environment, "thresholds", "list").stdout.startswith("no tuned threshold")
    applied = ept(sink.environment, "thresholds", "suggest", "--since", "-1d",
                  "--min-renders", "15", "--apply", "--by", "perf-team")
    assert applied.returncode == 0, applied.stderr
    assert "published 1 thresholds" in applied.stdout
    listed = ept(sink.environment, "thresholds", "list").stdout
    assert listed.startswith("render_still/tpl_b  50 ms  by perf-team at "), listed
    assert "p95 of 20 renders since" in listed
    settings = load_settings(kafka_bootstrap=sink.environment["EPT_KAFKA_BOOTSTRAP"],
                             topic_prefix=sink.environment["EPT_TOPIC_PREFIX"])
    tracker = Tracker(settings)
    try:
        assert tracker.wait_for_slow_thresholds(30)
        assert tracker.slow_threshold("render_still", "tpl_b") == 50.0
        assert tracker.slow_threshold("render_still", "tpl_a") == 5000.0  # static default
        # by hand, while the tracker runs: a render type's threshold, then a cleared one
        assert ept(sink.environment, "thresholds", "set", "render_still", "7000").stdout == (
            "render_still: 7000 ms\n")
        assert ept(sink.environment, "thresholds", "clear", "render_still", "--template",
                   "tpl_b").stdout == "render_still/tpl_b: cleared\n"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and tracker.slow_threshold("render_still",
                                                                     "tpl_b") != 7000.0:
            time.sleep(0.1)
        assert tracker.slow_threshold("render_still", "tpl_b") == 7000.0
        assert tracker.slow_threshold("render_still", "tpl_a") == 7000.0
    finally:
        tracker.close()
    typo = ept(sink.environment, "thresholds", "set", "render_gif", "100")
    assert typo.returncode == 1 and "operation: must be one of render_still" in typo.stderr
    bad = ept(sink.environment, "thresholds", "suggest", "--quantile", "95")
    assert bad.returncode == 1 and "quantile: must be between 0 and 1" in bad.stderr
