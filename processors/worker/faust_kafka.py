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
   missing after :data:`MISSING_GRACE_S` (up to :data:`MAX_REREADS` times: then, with an
   error, it commits past it).
4. **Skipped messages acknowledged.** A stream that takes a message from its buffer while
   the flow is stopped, or that was fetched in an earlier consumer generation, skips it
   without handing it to the agent and (the pure-Python stream) acknowledges it.
   :class:`Consumer` does not count the acknowledgement of a message that was not handed
   to an agent (``tracked``) while the flow was stopped or of an older generation.

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
MAX_REREADS = 3  # seeks back to a missing offset before it is taken as unreadable
# How long the broker may hold a fetch of the signals with nothing new (Faust sets 1,500
# ms). aiokafka sends one fetch per broker at a time, leaving out the partitions that
# still had records buffered when it was sent: signals sent to those meanwhile waited for
# that fetch to end, up to 1.5 s (a backlog's last batch was evaluated 1.4 s after it
# was acknowledged, the worker idle).
FETCH_MAX_WAIT_MS = 100


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


class ConsumerThread(aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by its fetcher at start
        return consumer


class Consumer(aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_offset = ChangelogReadOffsets(self.app.topics.acks_enabled_for)
        # partition -> (the committed offset missing from its acknowledgements, since when,
        # seeks back to it so far)
        self._missing: dict[TP, tuple[int, float, int]] = {}
        self._reread: asyncio.Future[None] | None = None

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def ack(self, message: Message) -> bool:
        """Count ``message`` towards the committable offset, unless a stream skipped it
        (it is read again). A message that could not be decoded counts: read again, it
        would fail again."""
        if not message.tracked and self._skipped(message):
            message.acked = True  # settled, but not committable
            return False
        return bool(super().ack(message))

    def _skipped(self, message: Message) -> bool:
        """What makes a stream skip ``message`` (``faust/streams.py``): the flow stopped,
        or a message fetched in an earlier consumer generation."""
        return (not self.app.flow_control.is_active()
                or message.generation_id != self.app.consumer_generation_id)

    def _new_offset(self, tp: TP) -> int | None:
        """The offset to commit for ``tp``: past the acknowledged run that starts at the
        committed offset; None while the message at that offset is not acknowledged."""
        committed = self._committed_offset[tp]
        acked = self._acked[tp]
        if committed is not None and acked and min(acked) > committed:
            if not self._given_up(tp, committed, min(acked)):
                return None
        else:
            self._missing.pop(tp, None)
        return super()._new_offset(tp)

    def _given_up(self, tp: TP, offset: int, next_acked: int) -> bool:
        """Whether the missing ``offset`` of ``tp`` is passed over: read again (sought
        each MISSING_GRACE_S it stays missing: a rebalance's own seek reads it sooner),
        and after MAX_REREADS seeks taken as unreadable (removed by retention, say), with
        an error, so that commits go on. Then the offsets up to ``next_acked`` count as
        acknowledged."""
        now = time.monotonic()
        missing, since, seeks = self._missing.get(tp, (None, now, 0))
        if missing != offset:
            self._missing[tp] = (offset, now, 0)
            return False
        if now - since < MISSING_GRACE_S:
            return False
        if seeks >= MAX_REREADS:
            log.error("%s: offsets %d to %d were never handed to the agent, though read "
                      "again %d times; committed past them", tp, offset, next_acked - 1,
                      seeks)
            self._missing.pop(tp, None)
            self._acked[tp].extend(range(offset, next_acked))
            return True
        self._missing[tp] = (offset, now, seeks + 1)
        log.warning("%s: offset %d was never handed to the agent; reading the partition "
                    "again from it", tp, offset)
        self._reread = asyncio.ensure_future(self._read_again(tp, offset))
        return False

    async def _read_again(self, tp: TP, offset: int) -> None:
        if self.app.rebalancing or tp not in self.assignment():
            return  # the rebalance seeks it to its committed offset
        try:
            await self.seek_wait({tp: offset})
        except Exception as exc:  # revoked meanwhile: read from the committed offset
            log.warning("%s: not sought back to %d (%s: %s)", tp, offset,
                        type(exc).__name__, exc)


class Transport(aiokafka.Transport):
    Consumer = Consumer


def use_fixed_consumption(app: AppT) -> None:
    """Make ``app`` consume through :class:`Transport` and :class:`BufferKeepingFlowControl`.

    Call before anything touches ``app.transport`` or ``app.flow_control`` (declaring a
    topic or a table does).
    """
    app.transport = Transport(app.conf.broker_consumer, app)
    app.flow_control = BufferKeepingFlowControl()
