"""The sink's steps (processors/sink/) on their own: no broker, no ClickHouse."""

from __future__ import annotations

import threading
import time
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from ept.core.deletions import ACCOUNT, Deletion
from ept.core.settings import Settings, load_settings
from ept.processors.sink import backoff, dlq
from ept.processors.sink import consumer as sink_consumer
from ept.processors.sink.batching import Batching
from ept.processors.sink.commit import Commit
from ept.processors.sink.counters import SinkCounters
from ept.processors.sink.deleted import DropDeleted
from ept.processors.sink.insert import Insert
from ept.processors.sink.pause import Pause
from ept.processors.sink.runs import PartitionRun, partition_runs
from ept.processors.sink.stored import SkipStored
from ept.processors.sink.validate import Validate
from ept.schemas import SingleObjectEncoder
from ept.schemas.codec import Decoder

ENCODER = SingleObjectEncoder()


@pytest.fixture
def settings() -> Settings:
    return load_settings(kafka_bootstrap="127.0.0.1:1", topic_prefix="steps.")


def render_failed(index: int, **fields: Any) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "event_time": int(time.time() * 1000),
            "service": "t", "environment": "t", "sdk_version": "x", "user_id": None,
            "account_id": None, "render_id": f"r{index}", "template_id": "tpl",
            "reason": "timeout", "error_message": "m", "duration_ms": 1.0,
            "retry_attempt": 0, "render_type": None, **fields}


def message(topic: str, partition: int, offset: int, value: bytes = b"x") -> Message:
    return Message(topic=topic, partition=partition, offset=offset, value=value)


class Letters:
    """The dead-letter step, recorded."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, str, str]] = []

    def send(self, message: Message, error_type: str, error: str) -> None:
        self.sent.append((message.offset() or 0, error_type, error))

    def flush(self, timeout: float) -> bool:
        return True


def test_runs_split_by_partition_and_leave_out_errors() -> None:
    eof = Message(topic="a", partition=0, error=KafkaError(KafkaError._PARTITION_EOF))
    messages = [message("a", 0, 5), message("a", 0, 6), eof, message("a", 0, 7),
                message("a", 1, 3), message("b", 1, 9), message("a", 0, 8)]
    runs = [(run.source, [m.offset() for m in run.messages], run.next_offset)
            for run in partition_runs(messages)]
    assert runs == [(("a", 0), [5, 6, 7], 8), (("a", 1), [3], 4), (("b", 1), [9], 10),
                    (("a", 0), [8], 9)]
    assert list(partition_runs([eof])) == []


def test_skip_stored_skips_each_stored_offset_once() -> None:
    counters = SinkCounters()
    skip = SkipStored(None, None, counters)  # type: ignore[arg-type]
    skip._stored[("a", 0)] = {5, 7}
    run = PartitionRun("a", 0, [message("a", 0, offset) for offset in (5, 6, 7, 8)], 9)
    assert [m.offset() for m in skip.submit(run)] == [6, 8]
    assert counters.skipped_already_stored == 2
    assert [m.offset() for m in skip.submit(run)] == [5, 6, 7, 8]  # each skipped once
    other = PartitionRun("a", 1, [message("a", 1, 5)], 6)
    assert skip.submit(other) is other.messages
    skip.revoked([TopicPartition("a", 0)])
    assert skip._stored == {}


def test_drop_deleted_drops_only_the_events_of_deleted_subjects(settings: Settings) -> None:
    counters = SinkCounters()
    drop = DropDeleted(settings, Decoder(None, raw=True), None,  # type: ignore[arg-type]
                       None, counters)  # type: ignore[arg-type]
    drop._view.keep(Deletion(ACCOUNT, "acct_gone", 0, "test"), live=False)
    topic = settings.topics.event("render_failed")
    gone = ENCODER.encode("render_failed", render_failed(1, account_id="acct_gone"))
    kept = ENCODER.encode("render_failed", render_failed(2, account_id="acct_kept"))
    not_an_event = b"\xffacct_gone"  # holds the id, decodes to nothing: validation's call
    messages = [message(topic, 0, 0, gone), message(topic, 0, 1, kept),
                message(topic, 0, 2, not_an_event)]
    assert [m.offset() for m in drop.submit(messages)] == [1, 2]
    assert counters.dropped_deleted == 1
    assert not drop.has_new


def test_validate_forwards_each_message_to_the_batch_or_the_dead_letters(
        settings: Settings) -> None:
    letters = Letters()
    batching = Batching(rows=1000, seconds=60)
    validate = Validate(settings.topics.event, Decoder(None, raw=True),
                        letters, batching)  # type: ignore[arg-type]
    topic = settings.topics.event("render_failed")
    payloads = [
        ENCODER.encode("render_failed", render_failed(0)),
        b"\xff" + bytes(40),
        ENCODER.encode("render_failed", render_failed(1, duration_ms=-5.0)),
        ENCODER.encode("render_completed", {
            **render_failed(2), "render_type": "still", "width": 1, "height": 1}),
        ENCODER.encode("render_failed", render_failed(3))[:-6],
        ENCODER.encode("render_failed", render_failed(4)),
    ]
    run = PartitionRun(topic, 3, [message(topic, 3, 10 + index, payload)
                                  for index, payload in enumerate(payloads)], 16)
    validate.submit(run, run.messages)
    assert [(offset, kind) for offset, kind, _ in letters.sent] == [
        (11, "UnknownFramingError"), (12, "InvalidValues"), (13, "WrongTopic"),
        (14, "CorruptPayloadError")]
    assert "duration_ms" in letters.sent[1][2]
    rows = batching.batch.rows_of((topic, 3), "render_failed")
    assert (len(rows), rows.first, rows.last) == (2, 10, 15)
    assert batching.batch.next_offsets == {(topic, 3): 16}


def test_batching_is_due_when_an_insert_is_full_or_the_batch_old(monkeypatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    batching = Batching(rows=3, seconds=5)
    run = PartitionRun("a", 0, [], 1)
    assert not batching.due() and batching.room() == 3
    rows = batching.submit(run, "render_failed")
    assert batching.consumed and not batching.due()  # consumed, nothing stored: not full
    rows.add(0, b"x")
    rows.add(1, b"y")
    assert batching.room() == 1 and not batching.due()
    clock[0] += 5
    assert batching.due()
    batch = batching.take()
    assert len(batch) == 2 and not batching.consumed and batching.room() == 3
    batching.submit(run, "render_failed").add(2, b"z")
    batching.submit(PartitionRun("b", 0, [], 1), "render_failed").add(0, b"z")
    batching.submit(PartitionRun("c", 0, [], 1), "render_failed").add(0, b"z")
    assert batching.due() and batching.room() == 1  # 3 rows of one event type
    batching.forget()
    assert not batching.consumed


def test_backoff_doubles_up_to_its_cap_and_gives_up_when_told() -> None:
    waited: list[float] = []
    failures = iter(range(9))

    def attempt() -> str:
        if next(failures) < 8:
            raise ConnectionError("down")
        return "done"

    assert backoff.retry(attempt, failed=lambda error, delay: True,
                         wait=waited.append) == "done"
    assert waited == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    told: list[tuple[str, float]] = []

    def give_up(error: Exception, delay: float) -> bool:
        told.append((str(error), delay))
        return False

    assert backoff.retry(lambda: 1 / 0, failed=give_up, wait=waited.append) is None
    assert told == [("division by zero", 0.5)] and len(waited) == 8


class FakeConsumer:
    """What the steps ask of a consumer, recorded. Like confluent-kafka's (2.16), it
    refuses to seek a partition not assigned, and a partition stays paused until resumed,
    through revocations and assignments; ``consume`` serves the rebalance scheduled
    (:meth:`rebalance`), then returns the next message of each assigned partition not
    paused (``delivered``)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.positions: dict[tuple[str, int], int] = {("a", 0): 42}  # the assignment
        self.paused: set[tuple[str, int]] = set()
        self.delivered: list[tuple[str, int, int]] = []
        self._rebalance: Any = None

    def rebalance(self, sink: Any, assigned: dict[tuple[str, int], int]) -> None:
        """At the next consume, an eager rebalance as confluent-kafka serves it to
        ``sink``: everything revoked (unassigned once ``on_revoke`` returns), then
        ``assigned`` (partition -> committed offset) assigned."""

        def serve() -> None:
            sink._on_revoke(self, self.assignment())
            self.positions = {}
            if assigned:
                self._committed = assigned
                sink._on_assign(self, [TopicPartition(t, p) for t, p in assigned])

        self._rebalance = serve

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(topic, partition) for topic, partition in self.positions]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(p.topic, p.partition, self.positions[(p.topic, p.partition)])
                for p in partitions]

    def committed(self, partitions: list[TopicPartition], timeout: float
                  ) -> list[TopicPartition]:
        return [TopicPartition(p.topic, p.partition, self._committed[(p.topic, p.partition)])
                for p in partitions]

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(("assign", [(p.topic, p.partition, p.offset) for p in partitions]))
        self.positions = {(p.topic, p.partition): p.offset for p in partitions}

    def pause(self, partitions: list[TopicPartition]) -> None:
        keys = [(p.topic, p.partition) for p in partitions]
        self.paused.update(keys)
        self.calls.append(("pause", keys))

    def resume(self, partitions: list[TopicPartition]) -> None:
        keys = [(p.topic, p.partition) for p in partitions]
        self.paused.difference_update(keys)
        self.calls.append(("resume", keys))

    def seek(self, partition: TopicPartition) -> None:
        if (partition.topic, partition.partition) not in self.positions:
            raise KafkaException(KafkaError(KafkaError._STATE, "Failed to seek"))
        self.positions[(partition.topic, partition.partition)] = partition.offset
        self.calls.append(("seek", (partition.topic, partition.partition, partition.offset)))

    def consume(self, count: int, timeout: float) -> list[Message]:
        time.sleep(0.001)
        if self._rebalance is not None:
            serve, self._rebalance = self._rebalance, None
            serve()
        fetched = []
        for (topic, partition), offset in self.positions.items():
            if (topic, partition) not in self.paused:
                fetched.append(message(topic, partition, offset))
                self.delivered.append((topic, partition, offset))
                self.positions[(topic, partition)] = offset + 1
        return fetched

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.calls.append(("commit", [(p.topic, p.partition, p.offset) for p in offsets]))


class FlakyClickHouse:
    """Refuses the first ``failures`` inserts."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.tokens: list[str] = []

    def raw_insert(self, table: str, columns: list[str], insert_block: bytes, fmt: str,
                   settings: dict[str, Any]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("ClickHouse down")
        self.tokens.append(settings["insert_deduplication_token"])

    def query(self, query: str, parameters: dict[str, Any]) -> Any:
        """Nothing is stored (what a newly assigned partition's step asks)."""
        return SimpleNamespace(result_rows=[])


def inserting(failures: int, stopping: bool = False
              ) -> tuple[Insert, FakeConsumer, FlakyClickHouse, SinkCounters]:
    consumer, clickhouse, counters = FakeConsumer(), FlakyClickHouse(failures), SinkCounters()
    commit = Commit(consumer, Letters(), counters)  # type: ignore[arg-type]
    insert = Insert(clickhouse, threading.Lock(), Pause(consumer),  # type: ignore[arg-type]
                    commit, counters, lambda: stopping)
    return insert, consumer, clickhouse, counters


def one_batch() -> Any:
    batching = Batching(rows=10, seconds=1)
    batching.submit(PartitionRun("a", 0, [], 8), "render_failed").add(7, b"\x00")
    return batching.take()


def test_an_insert_refused_pauses_retries_then_resumes_and_commits(monkeypatch) -> None:
    monkeypatch.setattr(backoff, "FIRST_DELAY_S", 0.01)
    insert, consumer, clickhouse, counters = inserting(failures=2)
    try:
        assert insert.store(one_batch())
    finally:
        insert.close()
    assert consumer.calls == [("pause", [("a", 0)]), ("resume", [("a", 0)]),
                              ("seek", ("a", 0, 42)), ("commit", [("a", 0, 8)])]
    assert counters.insert_failures == 2 and counters.inserted == 1
    assert len(clickhouse.tokens) == 1


def test_an_insert_not_retried_leaves_nothing_paused_or_committed() -> None:
    for retry, stopping in ((False, False), (True, True)):
        insert, consumer, _, counters = inserting(failures=1, stopping=stopping)
        try:
            assert not insert.store(one_batch(), retry=retry)
        finally:
            insert.close()
        assert consumer.calls == [] and counters.insert_failures == 1


def test_the_batch_in_flight_is_retried_when_joined_and_committed_once(monkeypatch) -> None:
    monkeypatch.setattr(backoff, "FIRST_DELAY_S", 0.01)
    insert, consumer, clickhouse, counters = inserting(failures=2)
    try:
        insert.submit(one_batch())
        assert not insert.join(retry=False)  # failed in the background and once here
        assert insert.join()  # still in flight: tried again here, then committed
        assert insert.join()  # nothing in flight
    finally:
        insert.close()
    assert [call for call, _ in consumer.calls] == ["commit"]
    # The background failure counts at each join that meets it, the one here once.
    assert counters.insert_failures == 3 and len(clickhouse.tokens) == 1


class Down:
    """A ClickHouse client whose every call fails."""

    def __getattr__(self, name: str) -> Any:
        raise ConnectionError("ClickHouse down")


def test_a_deletion_clickhouse_refuses_is_retried_with_the_partitions_paused(
        monkeypatch, settings: Settings) -> None:
    """Waiting to retry the deletion polls the consumer: unpaused, what that poll fetched
    would be dropped and its offsets committed past by the next batch."""
    consumer = FakeConsumer()
    monkeypatch.setattr(sink_consumer, "Consumer", lambda config: consumer)
    monkeypatch.setattr(dlq, "Producer", lambda config: None)
    sink = sink_consumer.Sink(settings, Down())  # type: ignore[arg-type]
    sink._deleted._new.append(Deletion(ACCOUNT, "acct_gone", 0, "test"))
    sink.stop()  # the wait ends at once
    sink._apply_deletions()
    assert consumer.calls == [("pause", [("a", 0)]), ("resume", [("a", 0)]),
                              ("seek", ("a", 0, 42))]
    assert sink._deleted.has_new  # kept for the next loop


def sink_on(consumer: FakeConsumer, client: Any, monkeypatch: pytest.MonkeyPatch,
            settings: Settings) -> sink_consumer.Sink:
    monkeypatch.setattr(sink_consumer, "Consumer", lambda config: consumer)
    monkeypatch.setattr(dlq, "Producer", lambda config: SimpleNamespace(flush=lambda t: 0))
    return sink_consumer.Sink(settings, client)


@pytest.mark.parametrize("in_flight", [False, True])
@pytest.mark.parametrize("assigned", [{("a", 1): 5}, {("a", 0): 8}, {}],
                         ids=["moved", "back at its commit", "taken away"])
def test_a_rebalance_while_an_insert_waits_holds_what_is_assigned_and_forgets_the_batch(
        monkeypatch, settings: Settings, in_flight: bool,
        assigned: dict[tuple[str, int], int]) -> None:
    """The wait polls the consumer, which serves the rebalance. Unpaused, a partition
    assigned then would have been read by the wait and its messages dropped; sought to
    where it stood before, a partition assigned again would have skipped what the sink
    forgot on revoke; resuming one revoked raised. And the batch, forgotten, is not
    retried: its partitions' next owner reads it again."""
    monkeypatch.setattr(backoff, "FIRST_DELAY_S", 0.01)
    consumer, clickhouse = FakeConsumer(), FlakyClickHouse(failures=3)
    sink = sink_on(consumer, clickhouse, monkeypatch, settings)
    consumer.rebalance(sink, assigned)
    if in_flight:
        sink._insert.submit(one_batch())
        assert not sink._insert.join()
    else:
        assert not sink._insert.store(one_batch())
    assert consumer.delivered == [] and clickhouse.tokens == []
    resumed = [(t, p) for t, p in assigned]
    assert consumer.calls == [
        ("pause", [("a", 0)]), ("resume", [("a", 0)]),  # as it is revoked
        *([("assign", [(t, p, o) for (t, p), o in assigned.items()]),
           ("pause", resumed), ("resume", resumed),
           *[("seek", (t, p, o)) for (t, p), o in assigned.items()]] if assigned else []),
    ]
    assert consumer.paused == set() and sink._insert.join()  # nothing left in flight


def test_a_rebalance_while_a_deletion_waits_resumes_only_what_is_assigned(
        monkeypatch, settings: Settings) -> None:
    consumer = FakeConsumer()
    sink = sink_on(consumer, Down(), monkeypatch, settings)
    sink._deleted._new.append(Deletion(ACCOUNT, "acct_gone", 0, "test"))
    consumer.rebalance(sink, {})
    sink._apply_deletions()
    assert consumer.calls == [("pause", [("a", 0)]), ("resume", [("a", 0)])]
    assert consumer.delivered == [] and consumer.paused == set() and sink._deleted.has_new


def test_what_a_wait_reads_from_a_partition_not_held_is_read_again() -> None:
    consumer = FakeConsumer()
    pause = Pause(consumer)  # type: ignore[arg-type]
    with pause.outage():
        pause.hold()
        consumer.positions[("a", 1)] = 3  # assigned without the pause being told
        pause.wait(0.01, lambda: False)
    assert consumer.delivered[0] == ("a", 1, 3)
    assert consumer.calls[:2] == [("pause", [("a", 0)]), ("pause", [("a", 1)])]
    assert ("seek", ("a", 1, 3)) in consumer.calls and consumer.paused == set()
