"""Step: validate — tell the events to store from the messages that cannot be stored.

A body the compiled scan of the topic's event (:mod:`ept.schemas.scan`) finds valid is
stored as it is; anything else is decoded to store it in the current schema or to say
what is wrong with it.
"""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import Message

from ept.processors.sink.batching import Batching
from ept.processors.sink.dlq import DeadLetters
from ept.processors.sink.runs import PartitionRun
from ept.schemas.codec import SINGLE_OBJECT_MAGIC, DecodeError, Decoder, current_body
from ept.schemas.registry import current_schemas
from ept.schemas.scan import scanner
from ept.schemas.validation import latest_event_time_ms, problems

#: Adds a current-schema Avro body read from an offset to the batch.
Add = Callable[[int, bytes], None]


class Validate:
    """Validates runs of an event topic's messages: by the compiled scan of the topic
    event's current schema (behind that schema's single-object header) or, failing
    that, by decoding them and checking the rules.

    :meth:`submit` forwards each message of a run either to the batch (its body, in the
    current schema) or to the dead letters (with what is wrong), never both. It raises
    on no payload; it blocks only when a message framed for the schema registry names a
    schema id not seen before (the decoder fetches it).
    """

    def __init__(self, topic_of: Callable[[str], str], decoder: Decoder,
                 dead_letters: DeadLetters, batching: Batching) -> None:
        self._decoder = decoder
        self._reject = dead_letters.send
        self._batching = batching
        self._scan_by_topic = {
            topic_of(name): (name, SINGLE_OBJECT_MAGIC + schema.fingerprint, scanner(name))
            for name, schema in current_schemas().items()}

    def submit(self, run: PartitionRun, messages: list[Message]) -> None:
        """Validate ``messages``, what the steps before left of ``run``; the run counts
        as consumed by the batch. The hot loop of the sink."""
        event, header, scan = self._scan_by_topic[run.topic]
        add = self._batching.submit(run, event).add
        body_start = len(header)
        latest_ms = latest_event_time_ms()
        for message in messages:
            payload = message.value() or b""
            if (scan is not None and payload.startswith(header)
                    and scan(payload, body_start, latest_ms)):
                add(message.offset() or 0, payload[body_start:])
            else:
                self._checked(message, payload, event, add)

    def _checked(self, message: Message, payload: bytes, expected: str, add: Add) -> None:
        try:
            event = self._decoder.decode(payload)
        except DecodeError as exc:
            self._reject(message, type(exc).__name__, str(exc))
            return
        if event.name != expected:
            self._reject(message, "WrongTopic", f"a {event.name} event on topic "
                         f"{message.topic()} (expected {expected})")
            return
        found = problems(event.name, event.record)
        if found:
            self._reject(message, "InvalidValues", "; ".join(found))
            return
        body = event.body
        if body is None:  # an older schema or the registry framing: store the current one
            try:
                body = current_body(event.name, event.record)
            except (TypeError, ValueError) as exc:
                self._reject(message, "NotStorable", f"{type(exc).__name__}: {exc}")
                return
        add(message.offset() or 0, body)
