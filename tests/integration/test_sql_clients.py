"""The clients analysts' tools are built on, unmodified, against the SQL endpoint of a
running ``ept sink``: ClickHouse's JDBC driver (DBeaver, most BI tools) with the plain URL,
clickhouse-go over HTTP (Grafana's ClickHouse data source), clickhouse-connect (notebooks)
and the JavaScript client with and without compression, and curl with each
``Accept-Encoding``. ``make client-deps`` installs and builds them (JDBC and Go into
~/.cache/ept/clients, once)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import brotli
import clickhouse_connect
import lz4.frame
import pytest

from ept.processors.web.sql import compression
from tests.integration import test_sql_endpoint
from tests.integration.test_sql_endpoint import (
    CLIENTS,
    FAILURES,
    PASSWORD,
    SLOW,
    RunningSink,
    sql_over_http,
)

sink = test_sql_endpoint.sink  # its module-scoped fixture: a sink of our own, set up alike

CACHE = Path(os.environ.get("EPT_CACHE_DIR", Path.home() / ".cache" / "ept")) / "clients"
JDBC = CACHE / "jdbc"
GO = CACHE / "go" / "chgo"
NEEDS_JDBC = pytest.mark.skipif(shutil.which("java") is None or not (JDBC / ".stamp").exists(),
                                reason="`make client-deps` builds the JDBC client")
NEEDS_GO = pytest.mark.skipif(not GO.exists(), reason="`make client-deps` builds the Go client")

FAILURES_QUERY = ("SELECT templateId, reason, count() AS failures FROM events "
                  "WHERE event_name = 'render_failed' GROUP BY templateId, reason "
                  "ORDER BY failures DESC, templateId")
FAILURES_ROWS = [["tpl_a", "timeout", 5], ["tpl_a", "codec_error", 2],
                 ["tpl_b", "timeout", 1]]
# Types a tool meets: LowCardinality, Nullable, a DateTime (from DateTime64), arrays.
SLOW_QUERY = ("SELECT renderType, slownessFactor, toStartOfDay(timestamp) AS day, "
              "[renderType] AS tags FROM events WHERE event_name = 'slow_render' "
              "ORDER BY slownessFactor, renderType LIMIT 2")


def port_of(sink: RunningSink) -> int:
    return int(sink.url.rsplit(":", 1)[1].strip("/"))


# --- JDBC ------------------------------------------------------------------------------

def jdbc(sink: RunningSink, mode: str, *arguments: str,
         url_suffix: str = "") -> subprocess.CompletedProcess[str]:
    url = f"jdbc:clickhouse://127.0.0.1:{port_of(sink)}/default{url_suffix}"
    return subprocess.run(
        ["java", "-cp", f"{JDBC / 'classes'}{os.pathsep}{JDBC / 'lib' / '*'}",
         "ClickHouseJdbc", url, "analyst", PASSWORD, mode, *arguments],
        capture_output=True, text=True, timeout=120, check=False)


def tsv(output: str) -> list[list[str]]:
    return [line.split("\t") for line in output.splitlines()]


@NEEDS_JDBC
def test_jdbc_with_the_plain_url_queries_reads_types_and_binds_parameters(
        sink: RunningSink) -> None:
    """jdbc-v2 asks for compress=1 (ClickHouse's compressed blocks, LZ4) by default; with
    decompress=true it sends the query in them too (decompress=1); with
    client.use_http_compression=true it asks Accept-Encoding: lz4 instead."""
    for suffix in ("", "?compress=0", "?decompress=true",
                   "?client.use_http_compression=true"):
        result = jdbc(sink, "query", FAILURES_QUERY, url_suffix=suffix)
        assert result.returncode == 0, (suffix, result.stderr)
        assert tsv(result.stdout) == [["templateId", "reason", "failures"]] + [
            [str(cell) for cell in row] for row in FAILURES_ROWS]

    typed = jdbc(sink, "typed")
    assert typed.returncode == 0, typed.stderr
    assert dict(line.split("\t", 1) for line in typed.stdout.splitlines()) == {
        "u": "42", "s": "text", "f": "1.5", "dt": "2026-12-05T10:00:00Z", "d": "2026-12-05",
        "n": "0\ttrue", "a": "[1, 2, 3]", "b": "true", "dec": "3.25",
        "id": "61f0c404-5cb3-11e7-907b-a6006ad3dba0", "next": "false"}

    prepared = jdbc(sink, "prepared", "SELECT reason, count() AS n FROM events WHERE "
                    "event_name = ? AND templateId = ? GROUP BY reason ORDER BY n DESC",
                    "render_failed", "tpl_a")
    assert prepared.returncode == 0, prepared.stderr
    assert tsv(prepared.stdout) == [["reason", "n"], ["timeout", "5"], ["codec_error", "2"]]
    injected = jdbc(sink, "prepared", "SELECT count() AS n FROM events WHERE templateId = ?",
                    "tpl_a' OR '1' = '1")
    assert tsv(injected.stdout) == [["n"], ["0"]], injected.stderr


@NEEDS_JDBC
def test_jdbc_database_metadata_lists_tables_and_columns_as_dbeaver_asks(
        sink: RunningSink) -> None:
    result = jdbc(sink, "metadata", "events")
    assert result.returncode == 0, result.stderr
    lines = tsv(result.stdout)
    assert ["product", "ClickHouse"] in lines
    assert ["schema", "default"] in lines and ["current", "default"] in lines
    tables = {(line[1], line[2]) for line in lines if line[0] == "table"}
    assert ("default", "events") in tables
    columns = {line[1]: (line[2], int(line[3])) for line in lines if line[0] == "column"}
    assert columns["reason"] == ("LowCardinality(String)", 12)  # java.sql.Types.VARCHAR
    assert columns["timestamp"][0] == "DateTime64(3, 'UTC')"
    assert columns["slownessFactor"] == ("Nullable(Float64)", 8)  # DOUBLE
    assert "templateId" in columns


@NEEDS_JDBC
def test_jdbc_errors_arrive_as_clickhouses(sink: RunningSink) -> None:
    result = jdbc(sink, "query", "SELECT no_such_column FROM events")
    assert result.returncode != 0
    assert "Code: 47. DB::Exception: " in result.stderr
    assert "(UNKNOWN_IDENTIFIER)" in result.stderr


# About 10 s of work that stops on its own: four blocks of 65,505 rows, 2.6 s each.
SLOW_SCAN = "SELECT count() FROM numbers(262020) WHERE sleepEachRow(0.00004) = 0"


@NEEDS_JDBC
def test_jdbc_statement_cancel_stops_a_running_query(sink: RunningSink) -> None:
    """A tool's Cancel button: Statement.cancel() from another thread, 1.5 s in, sends
    ``KILL QUERY WHERE query_id = '…'`` with the driver's own query id."""
    result = jdbc(sink, "cancel", SLOW_SCAN)
    assert result.returncode == 0, result.stderr
    facts = dict(line.split("\t", 1) for line in result.stdout.splitlines() if "\t" in line)
    assert "cancel_error" not in facts, result.stdout
    assert "QUERY_WAS_CANCELLED" in facts.get("stopped", ""), result.stdout
    assert int(facts["elapsed_ms"]) < 6_000, result.stdout


# --- clickhouse-go ---------------------------------------------------------------------

def go(sink: RunningSink, query: str, *options: str) -> list[list[object]]:
    result = subprocess.run(
        [str(GO), "-addr", f"127.0.0.1:{port_of(sink)}", "-user", "analyst", "-password",
         PASSWORD, "-query", query, *options],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@NEEDS_GO
@pytest.mark.parametrize("method", ["none", "lz4", "zstd", "gzip", "br"])
def test_clickhouse_go_over_http_reads_native_for_its_protocol_version(
        sink: RunningSink, method: str) -> None:
    """clickhouse-go sends client_protocol_version and reads Native for it; with LZ4 or
    ZSTD it asks compress=1 (compressed blocks), with gzip or br an HTTP encoding."""
    rows = go(sink, FAILURES_QUERY, "-compression", method)
    assert rows == [["templateId", "reason", "failures"], *FAILURES_ROWS]
    slow = go(sink, SLOW_QUERY, "-compression", method)
    day = slow[1][2]
    assert slow == [["renderType", "slownessFactor", "day", "tags"],
                    ["still", 1.5, day, ["still"]], ["video", 2.0, day, ["video"]]]
    assert day.endswith("T00:00:00Z")


@NEEDS_GO
@pytest.mark.parametrize("method", ["none", "lz4"])
def test_clickhouse_go_through_database_sql(sink: RunningSink, method: str) -> None:
    rows = go(sink, FAILURES_QUERY, "-api", "sql", "-compression", method)
    assert rows == [["templateId", "reason", "failures"], *FAILURES_ROWS]


@NEEDS_GO
def test_clickhouse_go_with_a_deadline_as_grafana_queries(sink: RunningSink) -> None:
    """A context deadline makes the driver send max_execution_time (deadline + 5 s), which
    loosens nothing below the endpoint's limit; the driver's connection handshake sends it
    too, from its dial timeout."""
    rows = go(sink, FAILURES_QUERY, "-api", "sql", "-compression", "lz4", "-deadline", "20s")
    assert rows == [["templateId", "reason", "failures"], *FAILURES_ROWS]


# --- clickhouse-connect and the JavaScript client --------------------------------------

@pytest.mark.parametrize("compress", [False, True, "lz4", "zstd", "gzip", "br"])
def test_clickhouse_connect_with_compression_on_and_off(sink: RunningSink,
                                                        compress: bool | str) -> None:
    client = clickhouse_connect.get_client(host="127.0.0.1", port=port_of(sink),
                                           interface="http", username="analyst",
                                           password=PASSWORD, compress=compress)
    assert [list(row) for row in client.query(FAILURES_QUERY).result_rows] == FAILURES_ROWS
    frame = client.query_df(SLOW_QUERY)
    assert list(frame["renderType"]) == ["still", "video"]
    assert list(frame["slownessFactor"]) == [1.5, 2.0]


@pytest.mark.skipif(shutil.which("node") is None
                    or not (CLIENTS / "node_modules" / "@clickhouse" / "client").exists(),
                    reason="`make client-deps` installs Node.js and @clickhouse/client")
@pytest.mark.parametrize("codec", ["none", "gzip", "br"])
def test_the_javascript_client_with_response_compression(sink: RunningSink,
                                                         codec: str) -> None:
    result = subprocess.run(["node", "compressed_query.mjs", sink.url, "analyst", PASSWORD,
                             FAILURES_QUERY, codec],
                            cwd=CLIENTS, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"templateId": t, "reason": r, "failures": n} for t, r, n in FAILURES_ROWS]


# --- curl and raw HTTP -----------------------------------------------------------------

EXPECTED_TSV = "".join(f"{t}\t{r}\t{n}\n" for t, r, n in FAILURES_ROWS).encode()
DECODE = {"gzip": gzip.decompress, "deflate": zlib.decompress,
          "zstd": lambda data: compression.decode(data, "zstd"),
          "lz4": lz4.frame.decompress, "br": brotli.decompress,
          "xz": lambda data: compression.decode(data, "xz"),
          "bz2": lambda data: compression.decode(data, "bz2")}


def curl(sink: RunningSink, *arguments: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-s", "-S", "-u", f"analyst:{PASSWORD}", *arguments],
                          capture_output=True, timeout=60, check=False)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("encoding", sorted(DECODE))
def test_curl_with_each_accept_encoding(sink: RunningSink, tmp_path: Path,
                                        encoding: str) -> None:
    """The engine's enable_http_compression is 1, as system.settings says: Accept-Encoding
    is enough (clickhouse-connect relies on it), enable_http_compression=0 turns it off."""
    query = urllib.parse.quote(FAILURES_QUERY)
    headers = tmp_path / "headers"
    for url in (f"{sink.url}?query={query}", f"{sink.url}?enable_http_compression=1&query={query}"):
        reply = curl(sink, "-D", str(headers), "-H", f"Accept-Encoding: {encoding}", url)
        assert reply.returncode == 0, reply.stderr
        assert f"content-encoding: {encoding}" in headers.read_text().lower()
        assert DECODE[encoding](reply.stdout) == EXPECTED_TSV
    plain = curl(sink, "-D", str(headers), "-H", f"Accept-Encoding: {encoding}",
                 f"{sink.url}?enable_http_compression=0&query={query}")
    assert plain.stdout == EXPECTED_TSV
    assert "content-encoding" not in headers.read_text().lower()


def test_clickhouse_connect_sees_http_compression_on_and_gets_zstd(sink: RunningSink) -> None:
    """What clickhouse-connect (compress=True) relies on: the session reports
    enable_http_compression = 1, and its Accept-Encoding alone gets a compressed reply,
    in ClickHouse's preference (zstd first)."""
    status, _, body = sql_over_http(sink.url, "SELECT value FROM system.settings "
                                    "WHERE name = 'enable_http_compression'")
    assert (status, body) == (200, b"1\n")
    request = urllib.request.Request(
        f"{sink.url}?query={urllib.parse.quote(FAILURES_QUERY)}",
        headers={"X-ClickHouse-User": "analyst", "X-ClickHouse-Key": PASSWORD,
                 "Accept-Encoding": "lz4,zstd,br,gzip,deflate"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        assert reply.headers["Content-Encoding"] == "zstd"
        assert compression.decode(reply.read(), "zstd") == EXPECTED_TSV


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_compressed_and_request_bodies_in_a_content_encoding(
        sink: RunningSink, tmp_path: Path) -> None:
    decoded = curl(sink, "--compressed", sink.url, "--data-binary", FAILURES_QUERY)
    assert decoded.stdout == EXPECTED_TSV, decoded.stderr
    for encoding in ("gzip", "deflate", "zstd", "lz4", "br"):
        body = tmp_path / f"query.{encoding}"
        body.write_bytes(compression.encode(FAILURES_QUERY.encode(), encoding))
        reply = curl(sink, "-H", f"Content-Encoding: {encoding}", "--data-binary",
                     f"@{body}", sink.url)
        assert reply.stdout == EXPECTED_TSV, (encoding, reply.stdout, reply.stderr)
    for encoding in ("gzip", "deflate", "zstd", "br", "lz4"):  # aiohttp's, then ours
        broken = curl(sink, "-H", f"Content-Encoding: {encoding}", "--data-binary",
                      "SELECT 'not compressed'", sink.url)
        assert broken.stdout.startswith(b"Code: 271. DB::Exception: Cannot decompress"), (
            encoding, broken.stdout)
        assert broken.stdout.rstrip().endswith(b"(CANNOT_DECOMPRESS)")
    assert curl(sink, f"{sink.url}?query=SELECT%201").stdout == b"1\n"


def test_compressed_blocks_both_ways_and_a_bad_checksum_is_code_40(
        sink: RunningSink) -> None:
    for method, byte in (("", 0x82), ("LZ4", 0x82), ("ZSTD", 0x90), ("NONE", 0x02)):
        parameters = {"compress": "1", "decompress": "1"}
        if method:
            parameters["network_compression_method"] = method
        status, headers, body = raw(sink, compression.compress_blocks(
            FAILURES_QUERY.encode(), compression.block_method(method or None)), parameters)
        assert status == 200, body
        assert body[16] == byte
        assert compression.decompress_blocks(body) == EXPECTED_TSV
    corrupted = bytearray(compression.compress_blocks(FAILURES_QUERY.encode()))
    corrupted[-1] ^= 0xFF
    status, headers, body = raw(sink, bytes(corrupted), {"decompress": "1"})
    assert status != 200 and headers["X-ClickHouse-Exception-Code"] == "40"
    assert body.startswith(b"Code: 40. DB::Exception: Checksum doesn't match")
    assert body.rstrip().endswith(b"(CHECKSUM_DOESNT_MATCH)")
    status, headers, body = raw(sink, bytes(corrupted[:20]), {"decompress": "1"})
    assert headers["X-ClickHouse-Exception-Code"] == "33", body
    status, headers, body = raw(sink, b"SELECT 1", {"compress": "1",
                                                    "network_compression_method": "snappy"})
    assert headers["X-ClickHouse-Exception-Code"] == "89", body


def raw(sink: RunningSink, body: bytes, parameters: dict[str, str]
        ) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"{sink.url}?{urllib.parse.urlencode(parameters)}",
                                     data=body, method="POST",
                                     headers={"X-ClickHouse-User": "analyst",
                                              "X-ClickHouse-Key": PASSWORD})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_the_fixture_data_is_what_the_clients_read(sink: RunningSink) -> None:
    """The expectations above follow from the sink fixture's events."""
    assert sum(int(str(row[2])) for row in FAILURES_ROWS) == len(FAILURES)
    assert sorted(factor for _, factor in SLOW)[:2] == [1.5, 2.0]
    status, _, body = sql_over_http(sink.url, FAILURES_QUERY)
    assert (status, body) == (200, EXPECTED_TSV)
