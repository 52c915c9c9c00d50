"""Starting the engine host, and talking to it from ept's own processes.

:func:`start_engine_host` runs :mod:`~ept.processors.storage.engine.host` as a child
with a scrubbed environment and one end of a Unix socket pair; :class:`EngineLink` is
this side's end. Any number of threads call :meth:`EngineLink.call` at once: requests
are tagged, one reader thread hands each reply to its caller, so a long analyst query
never holds back the writer's insert.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from itertools import count
from multiprocessing.connection import Connection
from pathlib import Path

from ept.processors.storage.analyst import ClickHouseError, SqlLimits
from ept.processors.storage.engine.protocol import Reply, Request, decode_reply, encode

# What the engine and Python need from the environment; nothing else is passed on.
_KEPT_ENVIRONMENT = ("PATH", "TZ", "LANG", "LC_ALL", "PYTHONPATH")


class EngineHostGone(RuntimeError):
    """The engine host exited; nothing more can be asked of it."""


class EngineLink:
    """This process's end of the socket to an engine host.

    ``call`` blocks until the reply comes and raises EngineHostGone once the host is
    gone; ``close`` ends the host (it closes the socket, then waits for the child).
    """

    def __init__(self, connection: Connection, process: subprocess.Popen[bytes] | None,
                 home: Path | None = None) -> None:
        self._connection, self._process, self._home = connection, process, home
        self._ids = count(1)
        self._send_lock = threading.Lock()
        self._pending: dict[int, tuple[threading.Event, list[Reply]]] = {}
        self._pending_lock = threading.Lock()
        self._gone = False
        self._reader = threading.Thread(target=self._read, name="ept-engine-link",
                                        daemon=True)
        self._reader.start()

    def call(self, request: Request) -> Reply:
        """``request`` answered (its ``id`` is set here)."""
        request = dataclasses.replace(request, id=next(self._ids))
        done: tuple[threading.Event, list[Reply]] = (threading.Event(), [])
        with self._pending_lock:
            if self._gone:
                raise EngineHostGone("the engine host has exited")
            self._pending[request.id] = done
        try:
            with self._send_lock:
                self._connection.send_bytes(encode(request))
        except OSError:
            with self._pending_lock:
                self._pending.pop(request.id, None)
            raise EngineHostGone("the engine host has exited") from None
        done[0].wait()
        if not done[1]:
            raise EngineHostGone("the engine host exited during a request")
        return done[1][0]

    def checked(self, request: Request) -> Reply:
        """``call``, raising ClickHouseError for an error reply."""
        reply = self.call(request)
        if reply.error_code:
            raise ClickHouseError.from_engine(RuntimeError(reply.error_message))
        return reply

    def sandbox_error(self) -> str | None:
        """Why analysts' SQL is off in the host (it could not be sandboxed), or None."""
        return self.call(Request(0, "status")).body.decode() or None

    def _read(self) -> None:
        while True:
            try:
                reply = decode_reply(self._connection.recv_bytes())
            except (EOFError, OSError, ValueError, TypeError):
                break
            with self._pending_lock:
                waiter = self._pending.pop(reply.id, None)
            if waiter is not None:
                waiter[1].append(reply)
                waiter[0].set()
        with self._pending_lock:
            self._gone = True
            for event, _ in self._pending.values():
                event.set()
            self._pending.clear()

    def close(self) -> None:
        self._connection.close()
        if self._process is not None:
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)


def start_engine_host(path: Path, limits: SqlLimits) -> EngineLink:
    """An engine host on the data directory ``path``, started and answering.

    The host logs to this process's stderr. Raises RuntimeError when it does not start
    (the directory is held by another process, say).
    """
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    home = Path(tempfile.mkdtemp(prefix="ept-engine-home-"))
    environment = {name: os.environ[name] for name in _KEPT_ENVIRONMENT
                   if name in os.environ}
    environment["HOME"] = environment["TMPDIR"] = str(home)
    process = subprocess.Popen(
        [sys.executable, "-m", "ept.processors.storage.engine.host", "--data", str(path),
         "--fd", str(theirs.fileno()), "--limits", json.dumps(dataclasses.asdict(limits))],
        env=environment, cwd=home, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL)
    theirs.close()
    link = EngineLink(Connection(ours.detach()), process, home)
    try:
        link.sandbox_error()
    except EngineHostGone:
        raise RuntimeError(f"the engine host on {path} did not start (exit code "
                           f"{process.wait(30)}; its error is logged above)") from None
    return link
