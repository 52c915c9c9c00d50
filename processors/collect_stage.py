"""The worker's first stage around :class:`~ept.processors.collection.Collector`: event
batches from Faust become signals on the internal signals topic, followed by progress
reports of this worker's source partitions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import faust

from ept.core.send_stamp import HEADER, SendStamp, read_stamp
from ept.core.settings import Settings
from ept.processors.collection import Collector, SourceEvent
from ept.processors.event_time import source_of
from ept.processors.recent_events import recent_event_ids
from ept.processors.records import Source
from ept.processors.signals import scope_partition
from ept.schemas.codec import DecodeError, Decoder

log = logging.getLogger("ept.worker")

DEDUP_HORIZON_MS = 5 * 60_000  # a producer's re-send comes within seconds, not minutes
# At most this often after a batch (and each second by the heartbeat): every report is
# a message to each signals partition and a judgement of each live scope there.
PROGRESS_INTERVAL_S = 0.2


def wall_ms() -> int:
    return int(time.time() * 1000)


class CollectStage:
    """``collect``'s state: the signals of the scope ``families`` some rule judges. Its
    coroutines send on ``signals`` (they may wait for the producer's buffer); nothing
    here raises for any message."""

    def __init__(self, app: faust.App, settings: Settings, signals: faust.TopicT,
                 families: frozenset[str]) -> None:
        self._app, self._signals = app, signals
        self._settings = settings
        self._partitions = settings.topic_partitions
        self._decoder = Decoder(settings.schema_registry_url, raw=True)
        self._recent_decoder = Decoder(settings.schema_registry_url, raw=True)  # its thread's
        self.collector = Collector(settings.max_clock_skew_s * 1000,
                                   int(settings.source_idle_s * 1000), DEDUP_HORIZON_MS,
                                   families)
        self.event_of_topic = {topic: name for name, topic in settings.topics.events.items()}
        self.events = Counter[str]()
        self.decode_errors = 0
        self._read_up_to: dict[Any, int] = {}  # partition -> last offset handed to collect
        # Sources assigned by the last rebalance, handed to the collector once the tables
        # are recovered and streams flow again: their silence must not count from the
        # assignment, or a long recovery would make them look idle with a backlog unread.
        self._assigned: list[Source] = []
        # Event partitions taken over whose recent event ids are yet to be read back
        # (before their first batch is counted: a re-send of one of them is a duplicate).
        self._unremembered: set[Any] = set()
        # Held while a batch is turned into signals and sent: a report made meanwhile (by
        # the heartbeat) would carry the batch's watermarks ahead of its signals, and
        # evaluate would judge past events it has not counted yet.
        self._batch_in_flight = asyncio.Lock()
        self._last_report = 0.0

    def on_assigned(self, assigned: set[Any]) -> None:
        self._assigned = self._sources(assigned)
        self._unremembered |= {tp for tp in assigned if tp.topic in self.event_of_topic
                               and self._source(tp) not in self.collector.sources}

    def on_revoked(self, revoked: set[Any]) -> None:
        self.collector.revoke(self._sources(revoked))
        for tp in revoked:
            self._read_up_to.pop(tp, None)
            self._unremembered.discard(tp)

    def reads_events(self) -> bool:
        """Whether this worker is assigned any event partition."""
        return any(tp.topic in self.event_of_topic for tp in self._app.consumer.assignment())

    async def handle_batch(self, events: list[Any]) -> None:
        """Count a batch of Faust events into signals, then report progress (at most every
        :data:`PROGRESS_INTERVAL_S`)."""
        async with self._batch_in_flight:
            await self._send_signals(events)
        if time.monotonic() - self._last_report >= PROGRESS_INTERVAL_S:
            await self.report_progress()

    async def report_progress(self) -> None:
        """Tell every signals partition how far this worker's sources are (nothing while a
        rebalance or its recovery is in progress)."""
        async with self._batch_in_flight:
            if self._app.rebalancing:
                return
            self._last_report = time.monotonic()
            if self._assigned:
                self.collector.assign(self._assigned, wall_ms())
                self._assigned = []
            for tp in self._app.consumer.assignment():
                if tp.topic in self.event_of_topic:
                    self.collector.caught_up(self._source(tp), await self._caught_up(tp))
            progress = self.collector.progress(wall_ms()).to_json()
            for partition in range(self._partitions):
                await self._signals.send(key=b"progress", partition=partition, value=progress)

    async def _send_signals(self, events: list[Any]) -> None:
        batch = []
        for event in events:
            message = event.message
            if message.tp in self._unremembered:
                await self._remember_recent(message)
            self._read_up_to[message.tp] = message.offset
            try:
                decoded = self._decoder.decode(event.value)
            except DecodeError:
                self.decode_errors += 1
                continue
            self.events[decoded.name] += 1
            batch.append(SourceEvent(decoded.name, message.partition, message.offset,
                                     int(message.timestamp * 1000), decoded.record,
                                     _stamp_of(message.headers)))
        for signal in self.collector.collect(batch, wall_ms()):
            await self._signals.send(key=signal.scope.encode(), value=signal.to_json(),
                                     partition=scope_partition(signal.scope, self._partitions))

    async def _remember_recent(self, message: Any) -> None:
        """Read back the event ids of ``message``'s partition of the dedup horizon before
        it (once per assignment); a broker that cannot be asked is logged, not fatal: the
        events are counted, a re-send of an older one perhaps twice."""
        self._unremembered.discard(message.tp)
        since_ms = int(message.timestamp * 1000) - DEDUP_HORIZON_MS
        try:
            recent = await asyncio.get_running_loop().run_in_executor(
                None, recent_event_ids, self._settings, message.tp.topic,
                message.tp.partition, message.offset, since_ms, self._event_id_of)
        except Exception as exc:  # the broker away: counted as before, not stopped
            log.warning("%s: recent event ids not read back (%s: %s)", message.tp,
                        type(exc).__name__, exc)
            return
        self.collector.remember(self._source(message.tp), recent)

    def _event_id_of(self, value: bytes) -> tuple[str, int] | None:
        try:
            record = self._recent_decoder.decode(value).record
        except DecodeError:
            return None
        return str(record.get("event_id", "")), int(record["event_time"])

    async def _caught_up(self, tp: Any) -> bool:
        """Whether everything of ``tp`` up to its high-water mark was handed to collect.

        A partition nothing was read from since the assignment is behind until the
        fetcher shows there is nothing to read: a backlog partition that Faust serves late
        must not pass for idle while its events wait.
        """
        highwater = self._app.consumer.highwater(tp)
        if highwater is None:
            return False  # not fetched yet: it may hold anything
        if tp in self._read_up_to:
            return self._read_up_to[tp] + 1 >= highwater
        position = await self._app.consumer.position(tp)
        return position is not None and position >= highwater

    def _source(self, tp: Any) -> Source:
        return source_of(self.event_of_topic[tp.topic], tp.partition)

    def _sources(self, tps: set[Any]) -> list[Source]:
        return [self._source(tp) for tp in tps if tp.topic in self.event_of_topic]


def _stamp_of(headers: Any) -> SendStamp | None:
    """The SDK's send stamp among a record's headers (Faust gives a list of pairs or a
    mapping), or None."""
    if not headers:
        return None
    if isinstance(headers, Mapping):
        return read_stamp(headers.get(HEADER))
    return next((read_stamp(value) for key, value in headers if key == HEADER), None)
