"""The engine host: the one process that opens the embedded engine, and holds no secret.

``python -m ept.processors.storage.engine.host --data DIR --fd N ...`` is started by
:mod:`~ept.processors.storage.engine.link` with a scrubbed environment (no ``EPT_*``
variable, ``HOME`` an empty directory) and the limits as arguments. It opens the engine
on ``DIR``, then confines itself with Landlock to ``DIR`` (read-write) and nothing else:
no ``/proc``, no ``/etc``, no other state, no TCP. Then it answers
:class:`~ept.processors.storage.engine.protocol.Request` frames on the socket ``N``, each
in a thread of its own, so an analyst's query never holds back the sink's inserts.

Trusted requests (``open``/``query``/``close``) are ept's own: the sink's writer, the
dashboard's reads. ``analyst`` requests are refused outright when the sandbox could not
be set up (``status`` says why), and otherwise run as :class:`AnalystSession` describes.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import concurrent.futures.thread  # loaded now: after the sandbox, Python cannot read it
import contextlib
import functools
import json
import logging
import os
import re
import sys
import threading
import uuid
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ept.processors.storage.analyst import (
    ClickHouseError,
    SqlLimits,
    output_format,
    setting_literal,
)
from ept.processors.storage.engine import analyst_policy, landlock, session_view
from ept.processors.storage.engine.protocol import (
    Analyst,
    Reply,
    Request,
    decode_request,
    encode,
)
from ept.processors.storage.engine.session_settings import analyst_settings
from ept.processors.storage.engine.session_view import marked, quoted

log = logging.getLogger("ept.engine_host")
_TRAILING_FORMAT = re.compile(r"\s+FORMAT\s+\w+\s*$")


def session_of(analyst: Analyst, query_id: str) -> str:
    """The session a query belongs to: the client's, else one of its own."""
    return analyst.session or f"query:{query_id}"


def marker(analyst: Analyst, query_id: str) -> str:
    """What marks an analyst's query (its ``log_comment``)."""
    return json.dumps({"user": analyst.user, "session": session_of(analyst, query_id),
                       "query_id": query_id})


class AnalystSession:
    """One analyst query, on a connection of its own that is closed afterwards.

    In order: the database, the limits, the query's marker (``log_comment``: user,
    session and the client's query id; the analyst cannot change it) and a filter that
    shows the analyst only the queries of their own session in ``system.processes``
    (and so lets ``KILL QUERY`` reach only those), the client's settings that loosen
    nothing, ``readonly = 1``, the client's other settings (ClickHouse refuses any that
    would change a value). Then ClickHouse parses the query (one statement only), the
    policy judges the parse, and the query runs, reading ``system.processes`` through
    :mod:`~ept.processors.storage.engine.session_view` (the client's query ids, the analyst's
    user). ``KILL QUERY`` is answered here: it reaches the session's queries and the
    analyst's queries it names by ``query_id``. Every method raises ClickHouseError.
    """

    def __init__(self, connect: Callable[[], Any], limits: SqlLimits, request: Request,
                 analyst: Analyst) -> None:
        self._connect, self._limits, self._request = connect, limits, request
        self._analyst = analyst
        self._session = session_of(analyst, request.query_id)
        self._connection: Any = None

    def run(self) -> Reply:
        """The query's reply (see the class docstring); closes its connections."""
        try:
            return self._run()
        except ClickHouseError as error:  # the engine's own user is not the analyst's
            message = re.sub(r"^default: |(?<=user )`?default`?(?=\W|$)",
                             lambda found: found.group(0).replace("default",
                                                                  self._analyst.user),
                             error.message)
            raise ClickHouseError(error.code, error.name, message) from None
        finally:
            if self._connection is not None:
                self._connection.close()

    def _open(self, visible: str) -> Any:
        """A connection set up as the class docstring says, with ``visible`` as the
        filter of ``system.processes``."""
        request = self._request
        self._connection = connection = self._connect()
        if request.database:
            self._execute(f"USE `{request.database.replace('`', '')}`")
        for name, value in self._limits.session_settings().items():
            self._execute(f"SET {setting_literal(name, str(value))}")
        before, after = analyst_settings(request.settings, self._limits)
        for name, value in before.items():
            self._execute(f"SET {setting_literal(name, value)}")
        self._execute("SET log_comment = "
                      + quoted(marker(self._analyst, request.query_id)))
        # other sessions' query texts and results are shown by no system table
        self._execute("SET additional_table_filters = {'system.processes': "
                      + quoted(visible) + ", 'system.user_query_log': '0', "
                      "'system.query_cache': '0'}")
        self._execute("SET readonly = 1")
        for name, value in after.items():
            self._execute(f"SET {setting_literal(name, value)}")
        return connection

    def _run(self) -> Reply:
        request = self._request
        self._open(self._visible_filter())
        sql = self._single_statement(request.sql)
        fmt = output_format(sql, request.format)
        root, tables = self._judge(sql)
        if root == "KillQueryQuery":
            return self._kill(sql, fmt)
        if root in analyst_policy.SELECT_ROOTS:  # system.processes as the session sees it
            sql = session_view.rewrite(sql, self._analyst.user,
                                       tables.count(session_view.PROCESSES))
        result = self._call(sql, fmt)
        return Reply(request.id, bytes(result.bytes()), fmt, int(result.rows_read()),
                     int(result.bytes_read()), float(result.elapsed()))

    def _judge(self, sql: str) -> tuple[str, list[str]]:
        """The policy's verdict on ``sql`` (raises ClickHouseError): its root's kind and,
        for a SELECT, the tables it reads (one name for each read)."""
        explained = _TRAILING_FORMAT.sub("", sql)
        root = analyst_policy.check_syntax(self._query(f"EXPLAIN AST {explained}",
                                                       "TabSeparatedRaw"))
        if root not in analyst_policy.SELECT_ROOTS:
            return root, []
        return root, analyst_policy.check_columns(self._query(
            f"EXPLAIN QUERY TREE {explained}", "TabSeparatedRaw"))

    def _visible_filter(self, named: tuple[str, ...] = ()) -> str:
        condition = f"{marked('session')} = {quoted(self._session)}"
        if named:
            ids = ", ".join(quoted(query_id) for query_id in named)
            condition += (f" OR ({marked('user')} = {quoted(self._analyst.user)} "
                          f"AND {marked('query_id')} IN ({ids}))")
        return condition

    def _single_statement(self, sql: str) -> str:
        """ClickHouse's own formatting of ``sql``: one statement (a second is a syntax
        error), comments dropped; what is judged is exactly what runs."""
        try:
            formatted = self._call(f"SELECT formatQuery({quoted(sql)})", "RawBLOB")
        except ClickHouseError as error:  # the analyst's syntax error, not our wrapper's
            message = re.sub(r":? In scope SELECT formatQuery\(.*$", "", error.message,
                             flags=re.DOTALL).rstrip(" .:")
            raise ClickHouseError(error.code, error.name, message) from None
        text = bytes(formatted.bytes()).decode().strip()
        if text[:6].upper() == "INSERT":  # its inline data is not part of the statement
            raise ClickHouseError(164, "READONLY", "Cannot execute query in readonly mode")
        return text

    def _kill(self, sql: str, fmt: str) -> Reply:
        """``KILL QUERY WHERE <condition>``, where ``query_id`` is the client's id."""
        match = re.match(r"(?is)^KILL QUERY\s+WHERE\s+(.*?)(?:\s+(SYNC|ASYNC|TEST))?"
                         r"(?:\s+FORMAT\s+\w+)?$", sql)
        if match is None:
            raise ClickHouseError(497, "ACCESS_DENIED", "Not enough privileges: analysts "
                                  "kill queries with KILL QUERY WHERE <condition>")
        condition, mode = match.group(1), (match.group(2) or "SYNC").upper()
        named = tuple(re.findall(r"'((?:[^'\\]|\\.)*)'", condition))
        self._connection.close()  # the same session, seeing the queries it names too
        visible = self._visible_filter(named)
        self._open(visible)
        rows = functools.partial(
            "SELECT {columns} FROM {view} AS processes WHERE ({condition}) "
            "AND query_id != {own}".format, view=session_view.view(self._analyst.user),
            condition=condition, own=quoted(self._request.query_id))
        self._judge(rows(columns="query"))
        markers = self._query(rows(columns="Settings['log_comment']"),
                              "TabSeparatedRaw").splitlines()
        listing = self._call(rows(
            columns=f"'{'waiting' if mode != 'TEST' else 'test'}' AS kill_status, query_id, "
                    "user, query"), fmt)
        if markers and mode != "TEST":
            _KILLER.kill(markers, sync=mode == "SYNC")
        return Reply(self._request.id, bytes(listing.bytes()), fmt)

    def _execute(self, statement: str) -> None:
        self._call(statement, "TabSeparated")

    def _query(self, sql: str, fmt: str) -> str:
        return bytes(self._call(sql, fmt).bytes()).decode()

    def _call(self, sql: str, fmt: str) -> Any:
        try:
            return self._connection.query(sql, fmt, params=self._request.params or {})
        except Exception as exc:  # the engine's own error, passed on
            raise ClickHouseError.from_engine(exc) from None


class _Killer:
    """Kills queries by their marker, from a trusted connection of its own."""

    def __init__(self) -> None:
        self.connection: Any = None
        self._lock = threading.Lock()

    def kill(self, markers: list[str], *, sync: bool) -> None:
        listed = ", ".join(quoted(marker) for marker in markers)
        with self._lock:
            self.connection.query(f"KILL QUERY WHERE Settings['log_comment'] IN ({listed}) "
                                  f"{'SYNC' if sync else 'ASYNC'}", "TabSeparated")


_KILLER = _Killer()


class EngineHost:
    """Answers requests on ``path``'s engine (see the module docstring)."""

    def __init__(self, connect: Callable[[], Any], path: Path, limits: SqlLimits,
                 sandbox_error: str | None) -> None:
        self._connect, self._limits, self._sandbox_error = connect, limits, sandbox_error
        self._handles: dict[int, Any] = {}
        self._inputs = path / "tmp" / "ept-input"
        self._inputs.mkdir(parents=True, exist_ok=True)

    def answer(self, request: Request) -> Reply:
        """The reply to ``request``; ClickHouse's refusals become error replies."""
        try:
            return self._dispatch(request)
        except ClickHouseError as error:
            return Reply(request.id, error_code=error.code, error_name=error.name,
                         error_message=str(error))
        except Exception as exc:  # the engine's own error, passed on
            engine_error = ClickHouseError.from_engine(exc)
            return Reply(request.id, error_code=engine_error.code,
                         error_name=engine_error.name, error_message=str(engine_error))

    def _dispatch(self, request: Request) -> Reply:
        if request.op == "status":
            return Reply(request.id, (self._sandbox_error or "").encode())
        if request.op == "open":
            self._handles[request.handle] = self._connect()
            return Reply(request.id)
        if request.op == "close":
            connection = self._handles.pop(request.handle, None)
            if connection is not None:
                connection.close()
            return Reply(request.id)
        if request.op == "query":
            return self._trusted(request)
        if request.op == "analyst" and request.analyst is not None:
            if self._sandbox_error is not None:
                raise ClickHouseError(
                    497, "ACCESS_DENIED", "analysts' SQL is off: the engine host could not "
                    f"be sandboxed ({self._sandbox_error})")
            return AnalystSession(self._connect, self._limits, request,
                                  request.analyst).run()
        if request.op == "cancel" and request.analyst is not None:
            _KILLER.kill([marker(request.analyst, request.query_id)], sync=False)
            return Reply(request.id)
        raise ClickHouseError(1, "UNSUPPORTED_METHOD", f"unknown request {request.op!r}")

    def _trusted(self, request: Request) -> Reply:
        sql = request.sql
        path = None
        if request.input_path:
            path = self._inputs / uuid.uuid4().hex
            path.write_bytes(request.input)
            sql = sql.replace(quoted(request.input_path), quoted(str(path)))
        try:
            result = self._handles[request.handle].query(sql, request.format,
                                                         params=request.params)
        finally:
            if path is not None:
                path.unlink(missing_ok=True)
        return Reply(request.id, bytes(result.bytes()), request.format,
                     int(result.rows_read()), int(result.bytes_read()),
                     float(result.elapsed()))


def serve(connection: Connection, host: EngineHost, workers: int) -> None:
    """Answers requests until the other end closes the socket (its process ended or was
    killed); returns then at once, leaving requests still running to the caller's exit,
    so a restarted sink finds the data directory free within milliseconds."""
    send_lock = threading.Lock()

    def answer(request: Request) -> None:
        reply = encode(host.answer(request))
        with send_lock, contextlib.suppress(OSError):  # the asker is gone: nobody to tell
            connection.send_bytes(reply)

    pool = concurrent.futures.ThreadPoolExecutor(workers, "ept-engine")
    while True:
        try:
            frame = connection.recv_bytes()
        except (EOFError, OSError):
            return
        pool.submit(answer, decode_request(frame))


def loaded_library_dirs() -> set[Path]:
    """The directories of the shared libraries this process has loaded (the C library's
    among them): the engine's own system dependencies (``librt``, ``libdl``, ...) are
    found there, wherever Python is installed (a pyenv Python's prefix is not ``/usr``)."""
    with open(f"/proc/{os.getpid()}/maps") as maps:
        files = {line.split()[-1] for line in maps if line.count(" ") >= 5}
    return {Path(file).resolve().parent for file in files
            if file.startswith("/") and ".so" in Path(file).name}


def sandbox(path: Path, scratch: Path) -> None:
    """Confines this process (still one thread: the engine is not loaded yet) to ``path``
    and ``scratch`` (read-write) and, read-only, what Python and the engine load: the
    Python installation and virtualenv, the directories of the shared libraries loaded
    so far, ept's own packages, ``/proc/<this pid>/maps`` (the engine reads its stack
    from it) and the cgroup limits. Raises LandlockUnavailable or OSError."""
    import ept

    # ept's SDK package and this package's parent, ept.processors (not imported from
    # here: storage stands below the other processors)
    packages = [*map(Path, ept.__path__), Path(__file__).resolve().parents[1]]
    landlock.restrict_to(
        [path, scratch],
        [Path(sys.prefix), Path(sys.base_prefix), *loaded_library_dirs(), *packages,
         Path(f"/proc/{os.getpid()}/maps"), Path("/sys/fs/cgroup")])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ept-engine-host")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--limits", required=True, help="JSON of SqlLimits")
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = args.data.resolve()
    path.mkdir(parents=True, exist_ok=True)
    scratch = Path(os.environ.get("TMPDIR", "/nonexistent"))  # the engine's temp files
    sandbox_error = None
    try:
        sandbox(path, scratch)
    except (landlock.LandlockUnavailable, OSError) as exc:
        sandbox_error = str(exc)
        log.error("engine host: analysts' SQL is OFF, this process could not be sandboxed: "
                  "%s", exc)
    import chdb  # only now: loading the engine starts its threads, which must be confined

    def connect() -> Any:
        return chdb.connect(str(path))

    _KILLER.connection = connect()  # opens the engine
    host = EngineHost(connect, path, SqlLimits(**json.loads(args.limits)), sandbox_error)
    serve(Connection(args.fd), host, args.workers)
    # Now, not after the requests still running: the engine's parts are safe at any
    # point, as when the sink itself is killed (a retried insert is deduplicated).
    os._exit(0)


if __name__ == "__main__":
    main()
