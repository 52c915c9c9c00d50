"""The worker's first stage around :class:`~ept.processors.worker.logic.collector.Collector`: event
batches read in bulk (:class:`~ept.processors.worker.event_reader.EventReader`) become signals
on the internal signals topic, followed by progress reports of this worker's source
partitions; a batch's offsets are committed once its signals are acknowledged.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
from confluent_kafka import KafkaException, Message

from ept.core.send_stamp import HEADER, SendStamp, read_stamp
from ept.core.settings import Settings
from ept.processors.worker.event_reader import Change, EventReader, Partition
from ept.processors.worker.logic.collector import Collector, SourceEvent
from ept.processors.worker.logic.event_time import source_of
from ept.processors.worker.logic.records import Signal, Source
from ept.processors.worker.logic.scopes import scope_partition
from ept.processors.worker.recent_events import newest_records, recent_event_ids
from ept.schemas.codec import DecodeError, Decoder

log = logging.getLogger("ept.worker")

DEDUP_HORIZON_MS = 5 * 60_000  # a producer's re-send comes within seconds, not minutes
# At most this often after a batch (and each second by the heartbeat): every report is
# a message to each signals partition and a judgement of each live scope there.
PROGRESS_INTERVAL_S = 0.2
# A batch: up to this many events, or what came within this wait. Each batch costs a
# signal per scope it touches (a signal of the overall scope carries every event of its
# family) and a save of each: through a backlog, 20,000 a batch made a quarter of the signals
# and a third of the table bytes per event that 5,000 did. Live traffic under
# 100,000 events/s fills none: a batch is what came within the wait.
BATCH_EVENTS = 20_000
BATCH_WAIT_S = 0.2
# A signal with more entries is sent as several (an entry is ~50-60 bytes of JSON: a
# batch's signal of the overall scope can list each event more than once, and one above
# ~1 MB is refused by the producer, which crashed the worker through a backlog).
SIGNAL_EVENTS = 2_000


def wall_ms() -> int:
    return int(time.time() * 1000)


class CollectStage:
    """``collect``'s state: the signals of the scope ``families`` some rule judges, from
    the events ``reader`` reads. Its coroutines send on ``signals`` (they wait for the
    producer's buffer; :meth:`run` for its acknowledgements); nothing here raises for any
    message."""

    def __init__(self, settings: Settings, signals: faust.TopicT,
                 families: frozenset[str]) -> None:
        self._signals = signals
        self._settings = settings
        self._partitions = settings.topic_partitions
        self._decoder = Decoder(settings.schema_registry_url, raw=True)
        self._recent_decoder = Decoder(settings.schema_registry_url, raw=True)  # its thread's
        self.collector = Collector(settings.max_clock_skew_s * 1000,
                                   int(settings.source_idle_s * 1000), DEDUP_HORIZON_MS,
                                   families)
        self.event_of_topic = {topic: name for name, topic in settings.topics.events.items()}
        self.reader = EventReader(settings, list(self.event_of_topic))
        self.events = Counter[str]()
        self.decode_errors = 0
        self.signals_sent = 0  # acknowledged by the broker
        self._assignment: set[Partition] = set()  # as the collector knows it
        self._read_up_to: dict[Partition, int] = {}  # the next offset to hand to collect
        # Event partitions taken over whose recent event ids are yet to be read back
        # (before their first batch is counted: a re-send of one of them is a duplicate).
        self._unremembered: set[Partition] = set()
        # Held while a batch is turned into signals and sent: a report made meanwhile (by
        # the heartbeat) would carry the batch's watermarks ahead of its signals, and
        # evaluate would judge past events it has not counted yet.
        self._batch_in_flight = asyncio.Lock()
        self._last_report = 0.0
        self._clock_readers: set[asyncio.Future[None]] = set()  # of partitions taken over
        # Per partition taken over: its newest record (offset, broker timestamp), which
        # teaches the broker's clock once read past (see _learn_broker_clock).
        self._newest_taken_over: dict[Partition, tuple[int, int]] = {}

    async def run(self) -> None:
        """Read, collect, send, commit until cancelled; then commit and leave the group.
        The consumer blocks in a thread of its own, never the event loop, reading the
        next batch while one is collected and delivered."""
        loop = asyncio.get_running_loop()
        thread = ThreadPoolExecutor(1, thread_name_prefix="ept-events")

        def read_next() -> asyncio.Future[list[Message]]:
            return loop.run_in_executor(thread, self.reader.consume, BATCH_EVENTS,
                                        BATCH_WAIT_S)

        reading = read_next()
        try:
            while True:
                messages = await reading
                # Taken while the reader is idle: the changes that came with ``messages``,
                # none of the next batch's.
                changes = self.reader.changes()
                # The next batch is read while this one is counted and delivered. A
                # partition revoked meanwhile is committed up to the last acknowledged
                # batch, not this one (commit skips it): its next owner reads this
                # batch's part again, which evaluate skips by source offset.
                reading = read_next()
                async with self._batch_in_flight:
                    self._apply(changes)
                    if messages:
                        self.reader.commit(await self._collect(messages))
                if time.monotonic() - self._last_report >= PROGRESS_INTERVAL_S:
                    await self.report_progress()
        finally:
            reading.cancel()
            readers = list(self._clock_readers)
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            await loop.run_in_executor(thread, self.reader.close)
            thread.shutdown()

    def reads_events(self) -> bool:
        """Whether this worker is assigned any event partition."""
        return bool(self._assignment)

    def assignment(self) -> frozenset[Partition]:
        return frozenset(self._assignment)

    async def report_progress(self) -> None:
        """Tell every signals partition how far this worker's sources are."""
        async with self._batch_in_flight:
            self._last_report = time.monotonic()
            for source in self._assignment:
                self.collector.caught_up(self._source(source), self._caught_up(source))
            self._clock_from_taken_over()
            progress = self.collector.progress(wall_ms()).to_json()
            for partition in range(self._partitions):
                await self._signals.send(key=b"progress", partition=partition, value=progress)

    def _apply(self, changes: list[Change]) -> None:
        """Hand the reader's assignments and revocations to the collector, in order."""
        for change in changes:
            sources = [self._source(partition) for partition in change.partitions]
            if change.assigned:
                self._unremembered |= {partition for partition, source
                                       in zip(change.partitions, sources, strict=True)
                                       if source not in self.collector.sources}
                self.collector.assign(sources, wall_ms())
                self._assignment |= change.partitions
                reader = asyncio.ensure_future(self._learn_broker_clock(change.partitions))
                self._clock_readers.add(reader)
                reader.add_done_callback(self._clock_readers.discard)
            else:
                self.collector.revoke(sources)
                self._assignment -= change.partitions
                for partition in change.partitions:
                    self._read_up_to.pop(partition, None)
                    self._unremembered.discard(partition)
                    self._newest_taken_over.pop(partition, None)

    async def _collect(self, messages: list[Message]) -> dict[Partition, int]:
        """Count a batch into signals and deliver them; returns the offsets to commit."""
        batch = []
        next_offsets: dict[Partition, int] = {}
        decode = self._decoder.decode_record
        if self._unremembered:
            await self._remember_first(messages)
        for message in messages:
            partition: Partition = (message.topic(), message.partition())  # type: ignore[assignment]
            offset: int = message.offset()  # type: ignore[assignment]
            next_offsets[partition] = offset + 1
            try:
                name, record = decode(message.value())  # type: ignore[arg-type]
            except DecodeError:
                self.decode_errors += 1
                continue
            batch.append(SourceEvent(name, partition[1], offset, message.timestamp()[1],
                                     record, _stamp_of(message.headers())))
        self._read_up_to.update(next_offsets)
        await self._deliver([part for signal in self.collector.collect(batch, wall_ms())
                             for part in signal.split(SIGNAL_EVENTS)])
        self.events.update(event.event_name for event in batch)  # counted once delivered
        return next_offsets

    async def _deliver(self, signals: list[Signal]) -> None:
        """Send ``signals`` and wait until the broker acknowledged every one. A failure
        sends them all again (backing off up to 30 s): ``evaluate`` applies a source
        offset once, and nothing is committed meanwhile."""
        for attempt in itertools.count():
            try:
                pending = [await self._signals.send(
                    key=signal.scope.encode(), value=signal.to_json(),
                    partition=scope_partition(signal.scope, self._partitions))
                    for signal in signals]
                await asyncio.gather(*pending)
                self.signals_sent += len(signals)
                return
            except Exception as exc:  # the producer's own retries are exhausted
                pause = min(30.0, 2.0 ** attempt)
                log.error("signals not delivered (%s: %s); again in %.0f s",
                          type(exc).__name__, exc, pause)
                await asyncio.sleep(pause)

    async def _learn_broker_clock(self, partitions: frozenset[Partition]) -> None:
        """Read the newest record of each of ``partitions``, just taken over, to start
        the broker's clock from (:mod:`~ept.processors.worker.recent_events` says why):
        applied by :meth:`_clock_from_taken_over`. A broker that cannot be asked is
        asked again, backing off up to 30 s, while any of them is still assigned."""
        loop = asyncio.get_running_loop()
        for attempt in itertools.count():
            try:
                newest = await loop.run_in_executor(None, newest_records, self._settings,
                                                    sorted(partitions))
            except KafkaException as exc:  # the broker away
                pause = min(30.0, 2.0 ** attempt)
                log.warning("the broker's clock not read back from the event partitions "
                            "taken over (%s); again in %.0f s", exc, pause)
                await asyncio.sleep(pause)
                if not partitions & self._assignment:
                    return
                continue
            self._newest_taken_over.update(
                {partition: record for partition, record in newest.items()
                 if partition in self._assignment})
            return

    def _clock_from_taken_over(self) -> None:
        """Teach the collector the broker's clock from the newest record of each
        partition taken over that has been read past: by its predecessor (a partition
        read to its end, the case this is for) or since. Not before: a source counted
        as caught up on a stale high-water mark is settled to the broker's clock, which
        must not be that of a record of its own not counted yet."""
        for partition, (offset, record_ms) in list(self._newest_taken_over.items()):
            position = self._read_up_to.get(partition, self.reader.started_at(partition))
            if position is not None and position > offset:
                self.collector.broker_clock_seen(record_ms)
                del self._newest_taken_over[partition]

    async def _remember_first(self, messages: list[Message]) -> None:
        """Read back the recent event ids of each partition taken over whose first
        message is in ``messages``, all partitions at once."""
        first: dict[Partition, Message] = {}
        for message in messages:
            partition: Partition = (message.topic(), message.partition())  # type: ignore[assignment]
            if partition in self._unremembered:
                first.setdefault(partition, message)
        await asyncio.gather(*(
            self._remember_recent(partition, message.offset(),  # type: ignore[arg-type]
                                  message.timestamp()[1])
            for partition, message in first.items()))

    async def _remember_recent(self, partition: Partition, offset: int,
                               record_ms: int) -> None:
        """Read back the event ids of ``partition`` of the dedup horizon before the
        record at ``offset`` stamped ``record_ms`` (once per assignment); a broker that
        cannot be asked is logged, not fatal: the events are counted, a re-send of an
        older one perhaps twice."""
        self._unremembered.discard(partition)
        since_ms = record_ms - DEDUP_HORIZON_MS
        try:
            recent = await asyncio.get_running_loop().run_in_executor(
                None, recent_event_ids, self._settings, partition[0], partition[1],
                offset, since_ms, self._event_id_of)
        except Exception as exc:  # the broker away: counted as before, not stopped
            log.warning("%s[%d]: recent event ids not read back (%s: %s)", *partition,
                        type(exc).__name__, exc)
            return
        self.collector.remember(self._source(partition), recent)

    def _event_id_of(self, value: bytes) -> tuple[str, int] | None:
        try:
            _, record = self._recent_decoder.decode_record(value)
        except DecodeError:
            return None
        return str(record.get("event_id", "")), int(record["event_time"])

    def _caught_up(self, partition: Partition) -> bool:
        """Whether everything of ``partition`` up to its high-water mark (as of the last
        fetch) was handed to collect. One not fetched yet is behind: it may hold
        anything; so is one revoked while the next batch was read (its revocation not
        applied here yet): its new owner may be reading what came since."""
        highwater = self.reader.highwater(partition)
        if highwater is None:
            return False
        position = self._read_up_to.get(partition, self.reader.started_at(partition))
        return position is not None and position >= highwater

    def _source(self, partition: Partition) -> Source:
        return source_of(self.event_of_topic[partition[0]], partition[1])


def _stamp_of(headers: Any) -> SendStamp | None:
    """The SDK's send stamp among a record's headers (a list of pairs or a mapping), or
    None."""
    if not headers:
        return None
    if isinstance(headers, Mapping):
        return read_stamp(headers.get(HEADER))
    return next((read_stamp(value) for key, value in headers if key == HEADER), None)
