"""Step: insert — batches into ClickHouse, one in flight in a background thread.

While one batch is being inserted (the engine parses the rows in C++ without holding the
GIL), the next one is consumed, validated and batched. Each insert carries a
deduplication token derived from its exact offset ranges, so an insert retried after an
ambiguous failure (a timeout after the server applied it) is dropped by ClickHouse. While
ClickHouse is unavailable the partitions are paused and the insert is retried with
backoff, until they are revoked: the batch is then forgotten (their next owner reads it
again from the committed offsets and skips whatever of it did get stored).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from clickhouse_connect.driver.client import Client

from ept.processors.sink import backoff
from ept.processors.sink.commit import Commit
from ept.processors.sink.counters import SinkCounters
from ept.processors.sink.pause import Pause
from ept.processors.sink.rows import Batch
from ept.processors.storage import raw_events

log = logging.getLogger("ept.sink")


class Revoked(Exception):
    """The partitions of the batch being retried were revoked while it waited."""


class Insert:
    """Stores batches and forwards each stored one to the commit step, in the order
    they were given.

    :meth:`submit` never blocks; :meth:`join` and :meth:`store` block until the batch is
    stored (retrying while ClickHouse is down, its partitions paused) or, with
    ``retry=False``, once ``stopping()`` or once :meth:`forget` is called (from a rebalance
    callback, inside the wait), give up and return False. Nothing here raises ClickHouse's
    errors; consumer errors while pausing propagate.
    """

    def __init__(self, client: Client, client_lock: threading.Lock, pause: Pause,
                 commit: Commit, counters: SinkCounters,
                 stopping: Callable[[], bool]) -> None:
        self._client = client
        self._client_lock = client_lock
        self._pause = pause
        self._commit = commit
        self._revocations = 0  # how many times forget() was called
        self._counters = counters
        self._stopping = stopping
        self._inserter = ThreadPoolExecutor(1, thread_name_prefix="ept-sink-insert")
        self._in_flight: tuple[Batch, Future[int]] | None = None

    def submit(self, batch: Batch) -> None:
        """Start inserting ``batch`` in the background. Call :meth:`join` first: at most
        one insert is in flight."""
        assert self._in_flight is None
        self._in_flight = (batch, self._inserter.submit(self._insert_once, batch))

    def poll(self) -> None:
        """Complete the batch in flight if its insert has finished."""
        if self._in_flight is not None and self._in_flight[1].done():
            self.join()

    def join(self, retry: bool = True) -> bool:
        """Wait for the batch in flight; when its insert failed, retry it here; then
        commit it. False when it could not be stored; it then stays in flight (a
        rebalance forgets it)."""
        if self._in_flight is None:
            return True
        batch, future = self._in_flight
        try:
            future.result()
        except Exception as exc:
            self._counters.insert_failures += 1
            log.warning("sink: insert of %d rows failed (%s); retrying", len(batch), exc)
            if not self._insert(batch, retry):
                return False
        self._in_flight = None
        return self._commit.submit(batch)

    def store(self, batch: Batch, retry: bool = True) -> bool:
        """Insert ``batch`` and commit it, in this thread. False when it could not
        (nothing lost: the offsets stay uncommitted)."""
        return self._insert(batch, retry) and self._commit.submit(batch)

    def forget(self) -> None:
        """Forget the batch in flight, stored or not, and stop retrying any batch (their
        partitions were revoked: all of them, the assignment being eager)."""
        self._in_flight = None
        self._revocations += 1

    def close(self) -> None:
        """Wait for the insert in flight to finish (not for it to be committed)."""
        self._inserter.shutdown(wait=True)

    def _insert_once(self, batch: Batch) -> int:
        """Insert every event type's rows of ``batch``; raises the first failure."""
        for insert in batch.inserts():
            with self._client_lock:
                raw_events.insert_avro(self._client, insert.columns, insert.data,
                                       insert.deduplication_token)
        return len(batch)

    def _insert(self, batch: Batch, retry: bool) -> bool:
        """Insert ``batch``, retrying with backoff while ``retry``, not stopping and its
        partitions not revoked, the partitions held meanwhile. Inserts that did get
        through before a failure are dropped as duplicates by ClickHouse when retried
        (same tokens)."""
        revocations = self._revocations

        def revoked() -> bool:
            return self._revocations != revocations

        def attempt() -> int:
            if revoked():
                raise Revoked
            return self._insert_once(batch)

        def failed(error: Exception, delay: float) -> bool:
            if revoked():
                log.info("sink: partitions revoked; %d rows left to their next owner",
                         len(batch))
                return False
            self._counters.insert_failures += 1
            log.warning("sink: insert of %d rows failed (%s); retrying in %.1fs",
                        len(batch), error, delay)
            return retry and not self._stopping()

        with self._pause.outage():
            return backoff.retry(attempt, failed=failed, wait=lambda delay: self._pause.wait(
                delay, lambda: self._stopping() or revoked())) is not None
