"""What an analyst can reach through the SQL endpoint of a running ``ept sink`` (issue
#24): no file, no secret, no one else's query, and the engine host's sandbox alone
holding when the SQL-level check is bypassed."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from ept.core.kafka import ensure_topics
from ept.core.settings import load_settings
from ept.processors.storage.analyst import SqlLimits
from ept.processors.storage.engine import landlock
from ept.processors.storage.engine.analyst_policy import TABLE_FUNCTIONS
from ept.processors.storage.engine.hosted_client import hosted_client
from ept.processors.storage.engine.link import start_engine_host
from tests.conftest import KafkaService, free_port

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "analyst-pw-7f3c9a"
API_TOKEN = "api-token-4b1d8e2a"
SECRET_FILE_TEXT = "secret-file-contents-91e7"

pytestmark = pytest.mark.skipif(landlock.abi_version() < landlock.MINIMUM_ABI,
                                reason="the kernel lacks Landlock ABI "
                                f"{landlock.MINIMUM_ABI}: the engine host refuses "
                                "analysts' SQL there (fail closed)")


@dataclass(frozen=True)
class SecuredSink:
    url: str
    pid: int
    state: Path
    data: Path
    secret_file: Path
    symlink: Path
    log: Path


def sql(url: str, query: str, password: str = PASSWORD, timeout: float = 60,
        **parameters: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"{url}?{urllib.parse.urlencode(parameters)}",
                                     data=query.encode(), method="POST",
                                     headers={"X-ClickHouse-User": "analyst",
                                              "X-ClickHouse-Key": password})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.fixture(scope="module")
def sink(kafka_service: KafkaService, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[SecuredSink]:
    """A sink holding secrets in its environment (API token, analyst password), a secret
    file and a symlink to it planted in a temporary folder."""
    state = tmp_path_factory.mktemp("secured-sink")
    planted = tmp_path_factory.mktemp("planted")
    secret_file = planted / "secret.txt"
    secret_file.write_text(SECRET_FILE_TEXT)
    symlink = planted / "innocent.csv"
    symlink.symlink_to(secret_file)
    settings = load_settings(kafka_bootstrap=kafka_service.bootstrap,
                             topic_prefix=f"t{uuid.uuid4().hex[:10]}.", state_dir=state)
    ensure_topics(settings)
    port = free_port()
    environment = {**os.environ, "EPT_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                   "EPT_TOPIC_PREFIX": settings.topic_prefix, "EPT_STATE_DIR": str(state),
                   "EPT_CLICKHOUSE_PATH": str(state / "clickhouse"),
                   "EPT_SINK_PORT": str(free_port()), "EPT_SQL_PORT": str(port),
                   "EPT_ANALYST_PASSWORD": PASSWORD, "EPT_API_TOKEN": API_TOKEN,
                   "EPT_SQL_MAX_CONCURRENT": "2"}
    environment.pop("EPT_CLICKHOUSE_URL", None)
    (state / "secret-state.txt").write_text(SECRET_FILE_TEXT)
    log = state / "sink.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "ept.deploy.cli", "sink"],
                                   env=environment, cwd=REPO, stdout=log_file,
                                   stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if sql(url, "SELECT count() FROM events", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        else:
            pytest.fail(f"the sink did not serve SQL: {log.read_text()[-2000:]}")
        yield SecuredSink(url, process.pid, state, state / "clickhouse", secret_file,
                          symlink, log)
    finally:
        process.terminate()
        process.wait(60)


def assert_refused(sink: SecuredSink, query: str) -> bytes:
    status, headers, body = sql(sink.url, query)
    assert status != 200, (query, body)
    assert body.startswith(b"Code: ") and b"DB::Exception" in body, (query, body)
    assert "X-ClickHouse-Exception-Code" in headers
    for secret in (PASSWORD, API_TOKEN, SECRET_FILE_TEXT, "root:x:0:0"):
        assert secret.encode() not in body, (query, body)
    return body


def test_the_file_function_reaches_no_file(sink: SecuredSink) -> None:
    part_files = sorted(str(path) for path in sink.data.rglob("*") if path.is_file())
    assert part_files
    paths = ["/etc/passwd", "/etc/shadow", "/proc/self/environ", "/proc/self/cmdline",
             f"/proc/{sink.pid}/environ", f"/proc/{os.getpid()}/environ",
             str(sink.state / "secret-state.txt"), str(sink.data / "status"), part_files[0],
             "../../../../../../etc/passwd", str(sink.secret_file), str(sink.symlink)]
    for path in paths:
        for query in (f"SELECT file('{path}')", f"SELECT length(file('{path}'))",
                      f"select FILE('{path}')", f"SELECT `file`('{path}')",
                      f"SELECT /* x */ file(/* y */ '{path}') -- z",
                      f"SELECT extract(file('{path}'), 'EPT_API_TOKEN=[^\\x00]*')",
                      f"SELECT arrayMap(p -> file(p), ['{path}'])",
                      f"SELECT 1 FROM numbers(1) WHERE file('{path}') != ''",
                      f"SELECT 1; SELECT file('{path}')"):
            assert_refused(sink, query)
    body = assert_refused(sink, "SELECT file('/etc/passwd')")
    assert b"(ACCESS_DENIED)" in body


def test_every_table_function_is_refused(sink: SecuredSink) -> None:
    status, _, body = sql(sink.url, "SELECT name FROM system.table_functions ORDER BY name")
    assert status == 200
    names = body.decode().split()
    assert {"file", "url", "remote", "s3", "executable", "mysql", "python"} <= set(names)
    for name in names:
        if name.lower() in TABLE_FUNCTIONS:
            continue
        for query in (f"SELECT * FROM {name}('/etc/passwd')",
                      f"SELECT * FROM numbers(1) JOIN {name}('/etc/passwd') AS t ON 1",
                      f"SELECT * FROM (SELECT * FROM {name}('/etc/passwd'))",
                      f"DESCRIBE TABLE {name}('/etc/passwd')"):
            body = assert_refused(sink, query)
            # view() takes a SELECT: '/etc/passwd' is a syntax error before anything
            assert b"(READONLY)" in body or (
                name.lower().startswith("view") and b"(SYNTAX_ERROR)" in body), (query, body)
            assert b"formatQuery" not in body


def test_no_secret_of_the_sink_reaches_the_engine_host(sink: SecuredSink) -> None:
    """The engine host (the process analysts' SQL runs in) holds no secret: its
    environment and command line name none, and the sink's memory is not its own."""
    children = psutil.Process(sink.pid).children()
    hosts = [child for child in children if "storage.engine.host" in " ".join(child.cmdline())]
    assert len(hosts) == 1
    host = hosts[0]
    environment = Path(f"/proc/{host.pid}/environ").read_bytes()
    command = " ".join(host.cmdline())
    for secret in (PASSWORD, API_TOKEN):
        assert secret.encode() not in environment and secret not in command
    assert b"EPT_" not in environment
    for query in ("SELECT * FROM system.environment",
                  "SELECT getSetting('log_comment')"):
        _status, _, body = sql(sink.url, query)
        assert PASSWORD.encode() not in body and API_TOKEN.encode() not in body


def test_the_sandbox_alone_refuses_the_hosts_files(tmp_path: Path) -> None:
    """A trusted session in an engine host runs without the analyst's SQL-level check:
    Landlock alone keeps /etc, /proc and every path beyond the data directory away,
    while the data directory itself stays readable."""
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET_FILE_TEXT)
    link = start_engine_host(tmp_path / "data", SqlLimits(60, 1000, 10 ** 9, 2 ** 31))
    try:
        assert link.sandbox_error() is None
        client = hosted_client(link)
        inside = tmp_path / "data" / "user_files" / "inside.txt"
        inside.parent.mkdir(parents=True, exist_ok=True)
        inside.write_text("inside the data directory")
        assert client.command(f"SELECT file('{inside}')") == "inside the data directory"
        for path in ("/etc/passwd", "/proc/self/environ", f"/proc/{os.getpid()}/environ",
                     str(secret), "/etc/hostname"):
            with pytest.raises(Exception, match="Permission denied") as refused:
                client.command(f"SELECT file('{path}')")
            assert SECRET_FILE_TEXT not in str(refused.value)
        with pytest.raises(Exception, match=r"Permission denied|CANNOT_OPEN_FILE|denied"):
            client.command("SELECT * FROM url('http://127.0.0.1:9/', 'LineAsString')")
    finally:
        link.close()


def test_withheld_columns_are_not_readable(sink: SecuredSink) -> None:
    for query in ("SELECT user_id FROM events", "SELECT * FROM events",
                  "SELECT account_id FROM default.events",
                  "SELECT count() FROM events WHERE user_id = 'u'",
                  "SELECT u FROM (SELECT user_id AS u FROM events)",
                  "SELECT COLUMNS('.*_id') FROM events",
                  "EXPLAIN SELECT user_id FROM events"):
        body = assert_refused(sink, query)
        assert b"(ACCESS_DENIED)" in body, (query, body)
    status, _, body = sql(sink.url,
                          "SELECT * EXCEPT (user_id, account_id) FROM events LIMIT 1")
    assert status == 200, body
    status, _, body = sql(sink.url, "SELECT account, sum(events) FROM events_hourly "
                          "GROUP BY account")
    assert status == 200, body


def test_errors_never_name_the_engines_user(sink: SecuredSink) -> None:
    for query in ("SELECT * FROM system.users", "SELECT * FROM system.grants",
                  "KILL QUERY WHERE query_id = 'nope' SYNC", "SYSTEM FLUSH LOGS",
                  "CREATE USER x", "SELECT nope FROM events", "DROP TABLE events"):
        _status, _, body = sql(sink.url, query)
        assert b"default:" not in body and b"user default" not in body.lower(), body


SLOW = "SELECT sleepEachRow(0.5) FROM numbers(40)"


def start_slow(sink: SecuredSink, query_id: str, session: str = "",
               results: dict[str, tuple[int, bytes]] | None = None) -> threading.Thread:
    def run() -> None:
        parameters = {"query_id": query_id, "max_block_size": "1"}
        if session:
            parameters["session_id"] = session
        status, _, body = sql(sink.url, SLOW, **parameters)
        if results is not None:
            results[query_id] = (status, body)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def wait_running(sink: SecuredSink, query_id: str, session: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status, _, body = sql(sink.url, "SELECT count() FROM system.processes WHERE "
                              "query LIKE '%sleepEachRow%' AND query NOT LIKE '%processes%'",
                              session_id=session)
        if status == 200 and body.strip() == b"1":
            return
        time.sleep(0.1)
    pytest.fail(f"{query_id} did not start")


def test_an_analyst_sees_and_kills_only_their_own_queries(sink: SecuredSink) -> None:
    results: dict[str, tuple[int, bytes]] = {}
    victim = f"victim-{uuid.uuid4()}"
    thread = start_slow(sink, victim, session="alice", results=results)
    wait_running(sink, victim, "alice")
    # bob sees nothing of it, and his KILL reaches nothing
    status, _, body = sql(sink.url, "SELECT query_id, query FROM system.processes",
                          session_id="bob")
    assert status == 200 and b"sleepEachRow" not in body, body
    status, _, body = sql(sink.url, "KILL QUERY WHERE query LIKE '%sleepEachRow%' SYNC",
                          session_id="bob")
    assert status == 200 and body == b"", body
    status, _, body = sql(sink.url, "KILL QUERY WHERE 1 SYNC")
    assert status == 200 and body == b"", body
    assert thread.is_alive()
    # a driver's cancel: a fresh request naming the client's own query_id
    began = time.monotonic()
    status, _, body = sql(sink.url, f"KILL QUERY WHERE query_id = '{victim}' SYNC")
    assert status == 200 and victim.encode() in body, body
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - began < 10
    assert results[victim][0] != 200 and b"(QUERY_WAS_CANCELLED)" in results[victim][1]


def test_system_processes_shows_a_session_its_own_queries_under_the_clients_ids(
        tmp_path: Path) -> None:
    """While ept's own query (a trusted one: the sink's writer, the dashboard) and an
    analyst's run in one engine host, each analyst session's system.processes holds its
    own queries only, under the ids the client sent and the analyst's user, never the
    engine's UUIDs or its user ``default``; a KILL of an id it shows stops that query."""
    from ept.processors.storage.analyst import AnalystEngine, ClickHouseError
    from ept.processors.storage.engine.protocol import Analyst

    link = start_engine_host(tmp_path / "data", SqlLimits(60, 1000, 10 ** 9, 2 ** 31))
    engine, trusted = AnalystEngine(link), hosted_client(link)
    alice, bob = Analyst("analyst", "alice"), Analyst("analyst", "bob")
    failures: dict[str, str] = {}

    def run(name: str, call: Callable[[], object]) -> threading.Thread:
        def target() -> None:
            try:
                call()
            except Exception as exc:  # the test reads it below
                failures[name] = str(exc)
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        return thread

    def processes(analyst: Analyst, sql: str = "SELECT query_id, initial_query_id, user, "
                  "initial_user, query FROM system.processes", database: str = ""
                  ) -> list[list[str]]:
        result = engine.run(sql, default_format="TSV", analyst=analyst, database=database,
                            query_id=f"look-{uuid.uuid4()}")
        return [line.split("\t") for line in result.body.decode().splitlines()]

    try:
        ept_own = run("ept", lambda: trusted.command(
            "SELECT sleepEachRow(0.5) FROM numbers(12) SETTINGS max_block_size = 1"))
        alices = run("alice", lambda: engine.run(
            "SELECT sleepEachRow(0.5) FROM numbers(12)", settings={"max_block_size": "1"},
            query_id="alice-report-1", analyst=alice))
        deadline = time.monotonic() + 10
        while not any(row[0] == "alice-report-1" for row in processes(alice)):
            assert time.monotonic() < deadline, "alice's query did not start"
            time.sleep(0.1)
        for analyst, own in ((alice, {"alice-report-1"}), (bob, set()),
                             (Analyst("analyst"), set())):
            rows = processes(analyst)
            looking = {row[0] for row in rows if row[0].startswith("look-")}
            assert {row[0] for row in rows} - looking == own, (analyst, rows)
            assert len(looking) == 1
            for query_id, initial_query_id, user, initial_user, query in rows:
                assert initial_query_id == query_id and user == initial_user == "analyst"
                assert "numbers(12)" not in query or query_id == "alice-report-1"
        # the engine's ids appear nowhere, in a subquery, a join or under an alias
        counted = processes(
            alice, "SELECT count() FROM system.processes AS p INNER JOIN "
            "(SELECT query_id FROM system.processes) AS q ON p.query_id = q.query_id "
            "WHERE q.query_id = 'alice-report-1' AND 'FROM system.processes' != ''")
        assert counted == [["1"]]
        with pytest.raises(ClickHouseError, match=r"\(ACCESS_DENIED\)"):
            processes(alice, "SELECT query_id FROM processes", database="system")
        # alice's KILL of the id she sees stops her query, and nothing of ept's
        killed = processes(alice, "KILL QUERY WHERE query_id = 'alice-report-1' SYNC")
        assert [row[1] for row in killed] == ["alice-report-1"], killed
        alices.join(10)
        assert not alices.is_alive() and "QUERY_WAS_CANCELLED" in failures["alice"]
        assert ept_own.is_alive()
        ept_own.join(20)
        assert "ept" not in failures
    finally:
        link.close()


def test_a_client_that_leaves_frees_its_slot_and_over_the_limit_is_202(
        sink: SecuredSink) -> None:
    port = int(sink.url.rsplit(":", 1)[1].strip("/"))
    sockets = []
    for index in range(2):  # EPT_SQL_MAX_CONCURRENT = 2
        connection = socket.create_connection(("127.0.0.1", port))
        query = urllib.parse.quote(SLOW)
        connection.sendall(f"GET /?query={query}&max_block_size=1&query_id=gone-{index}"
                           f"&user=analyst&password={PASSWORD} HTTP/1.1\r\n"
                           "Host: 127.0.0.1\r\n\r\n".encode())
        sockets.append(connection)
    time.sleep(1.0)
    queued: dict[str, tuple[int, bytes]] = {}

    def wait_in_line(name: str) -> None:
        queued[name] = sql(sink.url, "SELECT sleep(1)")[::2]

    threads = [threading.Thread(target=wait_in_line, args=(f"queued-{index}",))
               for index in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    began = time.monotonic()
    status, headers, body = sql(sink.url, "SELECT 1")
    assert time.monotonic() - began < 1.0
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "202"), body
    assert b"(TOO_MANY_SIMULTANEOUS_QUERIES)" in body
    for connection in sockets:  # the two running clients leave: their slots are freed
        connection.close()
    for thread in threads:
        thread.join(30)
    assert queued == {"queued-0": (200, b"0\n"), "queued-1": (200, b"0\n")}
    began = time.monotonic()
    status, _, body = sql(sink.url, "SELECT 1")
    assert (status, body) == (200, b"1\n")
    assert time.monotonic() - began < 1.0


def test_wrong_passwords_are_slowed_down(sink: SecuredSink) -> None:
    timings = []
    for _ in range(5):
        began = time.monotonic()
        status, _headers, body = sql(sink.url, "SELECT 1", password="wrong")
        timings.append(time.monotonic() - began)
        assert status == 403 and b"(AUTHENTICATION_FAILED)" in body
    assert max(timings[:3]) < 0.5 and timings[3] >= 1.0 and timings[4] >= 2.0, timings
    status, _, body = sql(sink.url, "SELECT 1")
    assert (status, body) == (200, b"1\n")
    began = time.monotonic()
    assert sql(sink.url, "SELECT 1")[0] == 200
    assert time.monotonic() - began < 0.5  # a right password clears the count


def test_every_error_is_clickhouses_and_no_traceback_is_logged(sink: SecuredSink) -> None:
    status, headers, body = sql(sink.url, "SELECT 1 -- " + "x" * (2 * 1024 ** 2))
    assert status == 413 and body.startswith(b"Code: ") and "X-ClickHouse-Exception-Code" \
        in headers, body[:200]
    long_query = f"SELECT length('{'x' * 30000}')"  # a 30 KB URL, as ClickHouse takes it
    url = f"{sink.url}?query={urllib.parse.quote(long_query)}&user=analyst" \
          f"&password={PASSWORD}"
    with urllib.request.urlopen(url, timeout=30) as reply:
        assert reply.read() == b"30000\n"
    assert sql(sink.url, "SELECT 1", password="nope")[2].startswith(b"Code: 516.")
    assert_refused(sink, "SELEC 1")
    log = sink.log.read_text()
    assert "Traceback" not in log, log[-3000:]


def raw_exchange(sink: SecuredSink, request: bytes) -> tuple[bytes, dict[str, str], bytes]:
    """Sends ``request`` on a socket of its own (from a thread: the server may answer and
    close before it has read all of it) and reads the reply: (status line, headers, body)."""
    port = int(sink.url.rsplit(":", 1)[1].strip("/"))
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)

    def send() -> None:
        # refused before the whole request was read: its reply says why
        with contextlib.suppress(OSError):
            connection.sendall(request)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    reply = b""
    try:
        while chunk := connection.recv(65536):
            reply += chunk
            head, _, body = reply.partition(b"\r\n\r\n")
            length = [line for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")]
            if length and len(body) >= int(length[0].split(b":")[1]):
                break
    except ConnectionResetError:
        pass
    finally:
        connection.close()
        sender.join(10)
    head, _, body = reply.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    return status.encode(), dict(line.split(": ", 1) for line in lines), body


def test_requests_aiohttp_cannot_parse_get_clickhouses_errors(sink: SecuredSink) -> None:
    """A URL over ClickHouse's 1 MiB, a header over its 128 KiB, too many headers, a
    malformed request line or framing, an unknown path or method: each is ClickHouse's
    error (its text, code header and status), and the log holds no traceback and none
    of the request's bytes (the password in the URL)."""
    credentials = f"user=analyst&password={PASSWORD}"
    host = b"Host: 127.0.0.1\r\n"
    cases = {
        "a 2 MiB URL": (b"GET /?" + credentials.encode() + b"&query=SELECT%20%27"
                        + b"x" * (2 * 1024 ** 2) + b"%27 HTTP/1.1\r\n" + host + b"\r\n",
                        400, "1000", b"URI is longer than 1048576 bytes"),
        "a 200 KB header": (b"GET /?query=SELECT%201&" + credentials.encode()
                            + b" HTTP/1.1\r\n" + host + b"X-Long: " + b"y" * 200_000
                            + b"\r\n\r\n", 400, "1000", b"header field is longer"),
        "300 headers": (b"GET /?query=SELECT%201 HTTP/1.1\r\n" + host
                        + b"".join(b"X-H%d: v\r\n" % index for index in range(300))
                        + b"\r\n", 400, "1000", b"Too many HTTP header fields"),
        "a bad request line": (b"G@T / HTTP/1.1\r\n" + host + b"\r\n", 400, "1000",
                               b"Malformed HTTP request"),
        "a bad chunk": (b"POST /?" + credentials.encode() + b" HTTP/1.1\r\n" + host
                        + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nSELECT 1\r\n0\r\n\r\n",
                        400, "1000", b"Malformed HTTP request"),
        "an unknown path": (b"GET /play HTTP/1.1\r\n" + host + b"\r\n", 404, "1012",
                            b"There is no handle /play"),
        "an unknown method": (b"PUT /?" + credentials.encode() + b" HTTP/1.1\r\n" + host
                              + b"Content-Length: 0\r\n\r\n", 405, "1", b"method PUT"),
    }
    for case, (request, status, code, text) in cases.items():
        status_line, headers, body = raw_exchange(sink, request)
        assert status_line.split(b" ")[1] == str(status).encode(), (case, status_line, body)
        assert headers.get("X-ClickHouse-Exception-Code") == code, (case, headers)
        assert body.startswith(f"Code: {code}. DB::Exception: ".encode()), (case, body)
        assert text in body and body.endswith(b")\n"), (case, body)
        assert PASSWORD.encode() not in body, case
    # up to ClickHouse's limits, long URLs and headers are served: 8 KB to 1 MiB
    for size in (8 * 1024, 16 * 1024, 64 * 1024, 1000 * 1000):
        status_line, _, body = raw_exchange(
            sink, f"GET /?{credentials}&query=SELECT%20length({{s:String}})&param_s={'x' * size} "
            f"HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: {'y' * 100_000}\r\n\r\n".encode())
        assert status_line.endswith(b"200 OK") and body == f"{size}\n".encode(), size
    time.sleep(0.5)  # the sink's log is written by another process
    log = sink.log.read_text()
    assert "Traceback" not in log and "Error handling request" not in log, log[-3000:]
    assert PASSWORD not in log
    assert "refused an unparsable request" in log


def test_settings_that_loosen_nothing_are_taken(sink: SecuredSink) -> None:
    for settings in ({"max_execution_time": "60"}, {"max_execution_time": "30"},
                     {"network_compression_method": "lz4", "client_protocol_version": "54460"},
                     {"session_timezone": "Europe/Berlin"},
                     {"output_format_json_quote_64bit_integers": "0"}, {"readonly": "1"}):
        status, _, body = sql(sink.url, "SELECT 1", **settings)
        assert (status, body) == (200, b"1\n"), (settings, body)
    status, _, body = sql(sink.url, "SELECT timezone()", session_timezone="Europe/Berlin")
    assert body == b"Europe/Berlin\n"
    status, headers, body = sql(sink.url, "SELECT 1", max_execution_time="3600")
    assert headers["X-ClickHouse-Exception-Code"] == "452", body
    assert b"(SETTING_CONSTRAINT_VIOLATION)" in body
    for loosening in ({"max_result_rows": "0"}, {"max_memory_usage": "0"},
                      {"max_threads": "16"}):
        assert sql(sink.url, "SELECT 1", **loosening)[1]["X-ClickHouse-Exception-Code"] \
            == "452"
    for other in ({"max_rows_to_read": "5"}, {"readonly": "0"},
                  {"additional_table_filters": "{}"}, {"log_comment": "x"}):
        status, headers, body = sql(sink.url, "SELECT 1", **other)
        assert headers["X-ClickHouse-Exception-Code"] == "164", (other, body)


def test_without_a_password_only_a_loopback_host_is_served(tmp_path: Path) -> None:
    """DNS rebinding: a page re-binding its own name to 127.0.0.1 sends that name as
    Host; without a password the endpoint serves loopback names only."""
    from ept.processors.storage.analyst import AnalystEngine
    from ept.processors.web.http import ServerThread
    from ept.processors.web.sql.endpoint import SqlEndpoint
    from ept.processors.web.sql.server import SqlRunner

    settings = load_settings(state_dir=tmp_path, clickhouse_path=tmp_path / "ch",
                             sql_port=free_port())
    link = start_engine_host(settings.clickhouse_data_dir, SqlLimits.of(settings))
    server = ServerThread(SqlEndpoint(settings, AnalystEngine(link)).application(),
                          "127.0.0.1", settings.sql_port, SqlRunner)
    server.start()
    try:
        for host, served in ((f"127.0.0.1:{settings.sql_port}", True), ("localhost", True),
                             (f"[::1]:{settings.sql_port}", True),
                             (f"rebound.example:{settings.sql_port}", False),
                             ("127.0.0.1.evil.example", False), ("", False)):
            connection = socket.create_connection(("127.0.0.1", settings.sql_port))
            connection.sendall(f"GET /?query=SELECT%201 HTTP/1.1\r\nHost: {host}\r\n"
                               "Connection: close\r\n\r\n".encode())
            reply = b""
            while chunk := connection.recv(65536):
                reply += chunk
            connection.close()
            head, _, body = reply.partition(b"\r\n\r\n")
            if served:
                assert head.startswith(b"HTTP/1.1 200") and body == b"1\n", (host, reply)
            else:
                assert head.startswith(b"HTTP/1.1 403"), (host, reply)
                assert b"(AUTHENTICATION_FAILED)" in body
    finally:
        server.stop()
        link.close()
