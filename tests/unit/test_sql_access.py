"""The pure parts of analysts' SQL access: loopback names, settings constraints, the
policy's reading of ClickHouse's parse dumps, the slot line, the engine frames."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

from ept.processors.storage.analyst import ClickHouseError, SqlLimits
from ept.processors.storage.engine import session_view
from ept.processors.storage.engine.analyst_policy import check_columns, check_syntax
from ept.processors.storage.engine.host import EngineHost
from ept.processors.storage.engine.protocol import (
    Analyst,
    Reply,
    Request,
    decode_reply,
    decode_request,
    encode,
)
from ept.processors.storage.engine.session_settings import analyst_settings
from ept.processors.web.sql import server as sql_server
from ept.processors.web.sql.access import is_loopback_host, is_loopback_peer
from ept.processors.web.sql.slots import QuerySlots

LIMITS = SqlLimits(60, 1000, 10 ** 9, 2 ** 31)


def test_loopback_hosts_and_peers() -> None:
    for host in ("127.0.0.1", "127.0.0.1:8123", "localhost", "LOCALHOST:1", "[::1]:8123",
                 "::1", "127.1.2.3"):
        assert is_loopback_host(host), host
    for host in ("", "evil.example", "127.0.0.1.evil.example", "10.0.0.1:8123", "[::2]"):
        assert not is_loopback_host(host), host
    assert is_loopback_peer("127.0.0.1") and is_loopback_peer("::1")
    assert not is_loopback_peer("192.168.1.2") and not is_loopback_peer(None)


def test_settings_that_loosen_nothing_go_before_readonly() -> None:
    before, after = analyst_settings({"max_execution_time": "30", "session_timezone": "UTC",
                                      "client_protocol_version": "54460",
                                      "output_format_json_quote_64bit_integers": "0",
                                      "max_rows_to_read": "8"}, LIMITS)
    assert before == {"max_execution_time": "30", "session_timezone": "UTC",
                      "output_format_json_quote_64bit_integers": "0"}
    assert after == {"max_rows_to_read": "8"}
    for loosening in ({"max_execution_time": "61"}, {"max_result_rows": "0"},
                      {"max_threads": "8"},
                      {"max_memory_usage": "lots"}):
        with pytest.raises(ClickHouseError) as refused:
            analyst_settings(loosening, LIMITS)
        assert refused.value.code == 452


AST = """SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 2)
   ExpressionList (children 1)
    Function {scalar} (children 1)
     ExpressionList (children 1)
      Literal 'x'
   TablesInSelectQuery (children 1)
    TablesInSelectQueryElement (children 1)
     TableExpression (children 1)
      Function {table} (children 1)
       ExpressionList (children 1)
        Literal UInt64_3
"""


def test_the_policy_reads_clickhouses_parse() -> None:
    assert check_syntax(AST.format(scalar="lower", table="numbers")) == "SelectWithUnionQuery"
    for scalar, table, code in (("FILE", "numbers", 497), ("lower", "url", 164),
                                ("lower", "File", 164), ("catboostEvaluate", "zeros", 497)):
        with pytest.raises(ClickHouseError) as refused:
            check_syntax(AST.format(scalar=scalar, table=table))
        assert refused.value.code == code
    with pytest.raises(ClickHouseError):  # anything but a dump (another format) is refused
        check_syntax('{"explain": "x"}')
    tree = """QUERY id: 0
  PROJECTION
    LIST id: 1, nodes: 1
      COLUMN id: 2, column_name: {column}, result_type: Nullable(String), source_id: 3
  JOIN TREE
    TABLE id: 3, alias: __table1, table_name: default.events
"""
    check_columns(tree.format(column="template_id"))
    with pytest.raises(ClickHouseError, match=r"SELECT\(user_id\) ON default.events"):
        check_columns(tree.format(column="user_id"))


def test_the_line_of_waiting_queries_is_bounded() -> None:
    async def scenario() -> list[str]:
        slots = QuerySlots(1, queued=1, wait_s=0.2)
        outcomes: list[str] = []
        release = asyncio.Event()

        async def query(name: str) -> None:
            try:
                async with slots.taken():
                    outcomes.append(f"{name} ran")
                    await release.wait()
            except ClickHouseError as error:
                outcomes.append(f"{name} {error.code}")

        first = asyncio.create_task(query("first"))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(query("second"))  # waits in line, then gives up
        await asyncio.sleep(0.01)
        await query("third")  # the line is full: at once
        await second
        release.set()
        await first
        return outcomes

    assert asyncio.run(scenario()) == ["first ran", "third 202", "second 202"]


def test_engine_frames_round_trip() -> None:
    request = Request(7, "analyst", "SELECT 1", "JSON", params={"a": "1"},
                      analyst=Analyst("analyst", "s"), query_id="q", input=b"\x00\xff")
    assert decode_request(encode(request)) == request
    reply = Reply(7, b"\x00body", "JSON", 1, 2, 0.5)
    assert decode_reply(encode(reply)) == reply
    with pytest.raises(ValueError):
        decode_reply(b"\x00\x00\x00\x05{nope")


def test_an_unsandboxed_host_refuses_analysts(tmp_path: Path) -> None:
    def never() -> None:
        raise AssertionError("an analyst's query reached the engine")

    host = EngineHost(never, tmp_path, LIMITS, "the kernel has no Landlock")
    reply = host.answer(Request(1, "analyst", "SELECT 1", analyst=Analyst("analyst"),
                                query_id="q"))
    assert reply.error_code == 497 and "could not be sandboxed" in reply.error_message
    assert host.answer(Request(2, "status")).body == b"the kernel has no Landlock"


def test_system_processes_is_read_through_the_sessions_view() -> None:
    view = session_view.view("analyst")
    assert session_view.rewrite("SELECT query_id\nFROM system.processes\n", "analyst", 1) \
        == f"SELECT query_id\nFROM {view} AS processes\n"
    joined = session_view.rewrite(
        "SELECT *\nFROM system.processes AS p\nINNER JOIN system.processes AS `the q` "
        "USING (query_id)\nWHERE query = 'FROM system.processes'", "analyst", 2)
    assert joined == (f"SELECT *\nFROM {view} AS p\nINNER JOIN {view} AS `the q` "
                      "USING (query_id)\nWHERE query = 'FROM system.processes'")
    untouched = "SELECT `FROM system.processes`, 'JOIN system.processes'\nFROM numbers(1)"
    assert session_view.rewrite(untouched, "analyst", 0) == untouched
    assert "'o\\'brien' AS user" in session_view.view("o'brien")
    for sql, reads in (("SELECT *\nFROM processes", 1),  # under database=system
                       ("SELECT *\nFROM system.processes", 2),
                       ("SELECT 1\nFROM system.processes", 0)):
        with pytest.raises(ClickHouseError, match=r"\(ACCESS_DENIED\)"):
            session_view.rewrite(sql, "analyst", reads)


def test_what_aiohttp_cannot_parse_is_clickhouses_400() -> None:
    too_long = sql_server.unparsable(LineTooLong(b"GET /?password=secret",
                                                 sql_server.MAX_URI_BYTES))
    assert too_long is not None and (too_long.code, too_long.name) == (1000, "POCO_EXCEPTION")
    assert "URI is longer than 1048576 bytes" in str(too_long)
    header = sql_server.unparsable(LineTooLong(b"X-Key: secret", sql_server.MAX_FIELD_BYTES))
    assert header is not None and "header field is longer than 131072" in str(header)
    many = sql_server.unparsable(BadHttpMessage("Too many headers received"))
    assert many is not None and "Too many HTTP header fields" in str(many)
    for error in (too_long, header, many):
        assert "secret" not in str(error)
    assert sql_server.unparsable(RuntimeError("a bug of ours")) is None
    assert sql_server.unparsable(None) is None
    response = sql_server.error_response(too_long)
    assert response.status == 400 and response.headers["X-ClickHouse-Exception-Code"] == "1000"
    assert sql_server.error_response(ClickHouseError(202, "TOO_MANY_SIMULTANEOUS_QUERIES",
                                                   "x")).status == 500
