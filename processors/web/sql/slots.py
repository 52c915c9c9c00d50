"""How many analysts' queries run at once, and how long a further one may wait.

``EPT_SQL_MAX_CONCURRENT`` queries run; as many again wait in line, each at most
:data:`QUEUE_WAIT_S`. A query beyond that, or one that waited its time, gets
ClickHouse's own TOO_MANY_SIMULTANEOUS_QUERIES (202) — at once when the line is full.
A slot is released when its query ends, however it ends (a client that left included).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from ept.processors.storage.analyst import ClickHouseError

QUEUE_WAIT_S = 5.0


class QuerySlots:
    """``async with slots.taken():`` around a query. Used on one event loop."""

    def __init__(self, running: int, queued: int | None = None,
                 wait_s: float = QUEUE_WAIT_S) -> None:
        self._running = asyncio.Semaphore(running)
        self._max_running, self._max_queued = running, running if queued is None else queued
        self._queued = 0
        self._wait_s = wait_s

    @contextlib.asynccontextmanager
    async def taken(self) -> AsyncIterator[None]:
        """Holds a slot for the block; raises ClickHouseError(202) when none comes."""
        if self._running.locked():
            if self._queued >= self._max_queued:
                raise _too_many(self._max_running)
            self._queued += 1
            try:
                await asyncio.wait_for(self._running.acquire(), self._wait_s)
            except TimeoutError:
                raise _too_many(self._max_running) from None
            finally:
                self._queued -= 1
        else:
            await self._running.acquire()
        try:
            yield
        finally:
            self._running.release()


def _too_many(limit: int) -> ClickHouseError:
    return ClickHouseError(202, "TOO_MANY_SIMULTANEOUS_QUERIES",
                           f"Too many simultaneous queries. Maximum: {limit}")
