"""Step: drop deleted subjects — events of a deleted account or user are never stored, and
a deletion recorded while the sink runs removes the subject's rows already stored
(:mod:`ept.core.deletions`)."""

from __future__ import annotations

import logging
import threading

from clickhouse_connect.driver.client import Client
from confluent_kafka import Message

from ept.core.deletions import Deletion, DeletionView
from ept.core.settings import Settings
from ept.processors.sink.counters import SinkCounters
from ept.processors.storage.deletion import delete_stored
from ept.schemas.codec import DecodeError, Decoder

log = logging.getLogger("ept.sink")


class DropDeleted:
    """Follows the deletions topic (a daemon thread) and filters runs of messages.

    :meth:`submit` never blocks or raises. :meth:`apply_new` blocks on ClickHouse; the
    caller stores everything consumed before calling it (a deleted subject's rows may
    still be in a batch).
    """

    def __init__(self, settings: Settings, decoder: Decoder, client: Client,
                 client_lock: threading.Lock, counters: SinkCounters) -> None:
        self._settings = settings
        self._decoder = decoder
        self._client = client
        self._client_lock = client_lock
        self._counters = counters
        # Deletions recorded while running, appended by the view's thread.
        self._new: list[Deletion] = []
        self._view = DeletionView(settings, on_deleted=self._new.append)

    def start(self) -> None:
        self._view.start()

    def wait_loaded(self, timeout_s: float) -> bool:
        """True once every deletion recorded before the start is known (blocks up to
        ``timeout_s``): nothing deleted may be stored again."""
        return self._view.wait_loaded(timeout_s)

    def close(self) -> None:
        self._view.close()

    def submit(self, messages: list[Message]) -> list[Message]:
        """``messages`` without the events of deleted subjects. A message that is no
        event at all is kept: validation sends it to the dead letters."""
        may_hold = self._view.may_hold
        kept = []
        for message in messages:
            payload = message.value() or b""
            if may_hold(payload) and self._of_deleted_subject(payload):
                self._counters.dropped_deleted += 1
            else:
                kept.append(message)
        return kept

    @property
    def has_new(self) -> bool:
        """A deletion was recorded since the last :meth:`apply_new`."""
        return bool(self._new)

    def apply_new(self) -> bool:
        """Remove the stored rows of each deletion recorded while running, in order.
        False when ClickHouse refused one (logged): it and those after it are kept for
        the next call."""
        while self._new:
            deletion = self._new[0]
            try:
                with self._client_lock:
                    removed = delete_stored(self._client, deletion.kind, deletion.subject_id,
                                            self._settings.clickhouse_cluster)
            except Exception as exc:
                log.warning("sink: deleting %s failed (%s); retrying", deletion.key, exc)
                return False
            log.info("sink: %s deleted: %s", deletion.key, removed)
            self._new.pop(0)
        return True

    def _of_deleted_subject(self, payload: bytes) -> bool:
        try:
            return self._view.is_deleted(self._decoder.decode(payload).record)
        except DecodeError:
            return False
