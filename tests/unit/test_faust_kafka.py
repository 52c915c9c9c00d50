"""The worker's Faust consumer commits no offset an agent was not handed."""

from __future__ import annotations

from collections.abc import Iterator

import faust
import pytest
from faust.transport.drivers import aiokafka
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from ept.processors.worker.faust_kafka import Consumer, use_transport

PARTITION = TP("events", 0)


def _app(fixed: bool) -> faust.App:
    app = faust.App("commit-test", broker="kafka://127.0.0.1:9")  # never connects
    if fixed:
        use_transport(app)
    return app


def _consumer(fixed: bool, monkeypatch: pytest.MonkeyPatch, committed: int
              ) -> aiokafka.Consumer:
    app = _app(fixed)
    monkeypatch.setattr(app.topics, "acks_enabled_for", lambda topic: True)
    consumer = app.consumer
    consumer._committed_offset[PARTITION] = committed  # the next offset to read
    return consumer


@pytest.fixture(params=[True, False], ids=["ept", "stock"])
def consumer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
             ) -> Iterator[aiokafka.Consumer]:
    yield _consumer(request.param, monkeypatch, committed=5)


def _ack(consumer: aiokafka.Consumer, offset: int, handed_to_agent: bool) -> None:
    message = ConsumerMessage(PARTITION.topic, PARTITION.partition, offset, 0.0, 0, None,
                              b"key", b"value", None)
    message.tracked = handed_to_agent  # what a stream does before it yields a message
    message.ack(consumer)


def test_the_worker_consumes_through_the_fixed_transport() -> None:
    assert isinstance(_app(fixed=True).consumer, Consumer)


def test_processed_messages_are_committed(consumer: aiokafka.Consumer) -> None:
    for offset in (5, 6, 7):
        _ack(consumer, offset, handed_to_agent=True)
    assert consumer._new_offset(PARTITION) == 8


def test_a_skipped_message_is_not_committed(consumer: aiokafka.Consumer) -> None:
    _ack(consumer, 5, handed_to_agent=True)
    _ack(consumer, 6, handed_to_agent=False)  # taken from the buffer during a rebalance
    committable = consumer._new_offset(PARTITION)
    if isinstance(consumer, Consumer):
        assert committable == 6  # offset 6 is read again after the rebalance
    else:
        # Faust's own consumer commits past it (the message is lost). If this fails,
        # Faust fixed it and processors/worker/faust_kafka.py can go.
        assert committable == 7


def test_a_skipped_message_read_again_and_processed_is_committed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = _consumer(True, monkeypatch, committed=6)
    _ack(consumer, 6, handed_to_agent=False)
    assert consumer._new_offset(PARTITION) is None
    _ack(consumer, 6, handed_to_agent=True)
    _ack(consumer, 7, handed_to_agent=True)
    assert consumer._new_offset(PARTITION) == 8
