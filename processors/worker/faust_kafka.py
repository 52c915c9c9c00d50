"""Faust's consumption of the signals, with the fixes that make a rebalance lose none.

Found by recording, per signals offset, what reached Faust's consumer callback and what
was handed to the agent while a second worker process joined a backlog (faust-streaming
0.15, aiokafka 0.14): in two rounds out of three the process that kept its partitions
never evaluated dozens of signals in a row (37, 73, 141...). Four faults, each fixed here:

1. **Read again, dropped as already read.** When the flow stops for a rebalance, the batch
   being handed over is cut and the rest of it dropped; after the rebalance each partition
   is sought back to its committed offset. But Faust also drops any fetched message at or
   below the offset it read last, and a message from before the seek, still being handed
   over, sets that offset back up: the messages read again from the committed offset are
   then dropped as duplicates, and the fetch goes on past them. For the topics agents
   consume, :class:`Consumer` keeps no last read offset (a message read twice reaches the
   agent twice, which the worker tolerates); for table changelogs it keeps Faust's.
2. **Buffers emptied after the seek.** ``FlowControlEvent.resume`` empties every agent's
   buffer, also when the flow was already running (it runs during the table's recovery,
   before the seek): what was fetched from the committed offset meanwhile is dropped.
   :class:`BufferKeepingFlowControl` empties them only when the flow resumes from a stop.
3. **Committed past a missing offset.** ``Consumer._new_offset`` commits the acknowledged
   run that follows the committed offset even when the message *at* that offset was never
   acknowledged (an off-by-one: a gap of one is not seen). :class:`Consumer` commits
   nothing past a missing offset, and reads the partition again from it if it is still
   missing after :data:`MISSING_GRACE_S`.
4. **Skipped messages acknowledged.** A stream that takes a message from its buffer while
   the flow is stopped, or that was fetched in an earlier consumer generation, skips it
   without handing it to the agent and (the pure-Python stream) acknowledges it. A stream
   marks each message it hands to an agent as ``tracked`` first; :class:`Consumer` does
   not count the acknowledgement of an untracked one.

Reading a message twice is harmless to the worker, which applies each source offset once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from faust.transport.drivers import aiokafka
from faust.types import TP, AppT, Message
from mode.utils.queues import FlowControlEvent

log = logging.getLogger("ept.worker")

MISSING_GRACE_S = 5.0  # a missing offset not read again by then is sought


class BufferKeepingFlowControl(FlowControlEvent):
    """Faust's flow control, except that resuming a running flow keeps the agents'
    buffers (the module's second fault)."""

    def resume(self) -> None:
        stopped = not self.is_active()
        self._suspend.clear()
        self._resume.set()
        if stopped:
            self.clear()


class ChangelogReadOffsets(defaultdict[TP, int | None]):
    """Faust's last read offset per partition, kept only for the topics no agent acks
    (table changelogs); None, so nothing is dropped, for the others (the first fault)."""

    def __init__(self, acked_topic: Callable[[str], bool]) -> None:
        super().__init__(lambda: None)
        self._acked_topic = acked_topic

    def __getitem__(self, tp: TP) -> int | None:
        if self._acked_topic(tp.topic):
            return None
        return super().__getitem__(tp)


class Consumer(aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_offset = ChangelogReadOffsets(self.app.topics.acks_enabled_for)
        # partition -> (the committed offset missing from its acknowledgements, since when)
        self._missing: dict[TP, tuple[int, float]] = {}
        self._seeking: asyncio.Future[None] | None = None

    def ack(self, message: Message) -> bool:
        """Count ``message`` towards the committable offset if an agent was handed it."""
        if message.tracked:
            return bool(super().ack(message))
        message.acked = True  # skipped: settled, but not committable
        return False

    def _new_offset(self, tp: TP) -> int | None:
        """The offset to commit for ``tp``: past the acknowledged run that starts at the
        committed offset; None while the message at that offset is not acknowledged."""
        committed = self._committed_offset[tp]
        acked = self._acked[tp]
        if committed is not None and acked and min(acked) > committed:
            self._read_again_if_still_missing(tp, committed)
            return None
        self._missing.pop(tp, None)
        return super()._new_offset(tp)

    def _read_again_if_still_missing(self, tp: TP, offset: int) -> None:
        """Seek ``tp`` back to ``offset`` once it has been missing for MISSING_GRACE_S
        (a rebalance's own seek reads it again sooner), and again after each grace."""
        now = time.monotonic()
        missing, since = self._missing.get(tp, (None, now))
        if missing != offset:
            self._missing[tp] = (offset, now)
        elif now - since >= MISSING_GRACE_S:
            self._missing[tp] = (offset, now)
            log.warning("%s: offset %d was never handed to the agent; reading the partition "
                        "again from it", tp, offset)
            self._seeking = asyncio.ensure_future(self.seek_wait({tp: offset}))


class Transport(aiokafka.Transport):
    Consumer = Consumer


def use_fixed_consumption(app: AppT) -> None:
    """Make ``app`` consume through :class:`Transport` and :class:`BufferKeepingFlowControl`.

    Call before anything touches ``app.transport`` or ``app.flow_control`` (declaring a
    topic or a table does).
    """
    app.transport = Transport(app.conf.broker_consumer, app)
    app.flow_control = BufferKeepingFlowControl()
