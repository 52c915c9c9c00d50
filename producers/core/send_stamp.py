"""The SDK's send stamp: a Kafka header on each event record saying when, by the host's
clock, the record was handed to the producer, and which producer process sent it.

The worker compares it with the broker's timestamp of the record (LogAppendTime):
broker time - send time is the host's clock error plus the transport delay (see
:mod:`ept.processors.worker.logic.collector`), while send time - event time is how long the event
waited in the SDK's spool, which is real and kept.

Wire format: header ``ept-sent``, 16 bytes: the send time in ms since the epoch and the
producer's random 64-bit id, both big-endian.
"""

from __future__ import annotations

import random
import struct
import time
from dataclasses import dataclass

HEADER = "ept-sent"
_FORMAT = struct.Struct(">qQ")
# One id per process: a fork keeps it, and rightly so (same host, same clock).
PRODUCER_ID = random.SystemRandom().getrandbits(64)


@dataclass(frozen=True, slots=True)
class SendStamp:
    sent_ms: int
    producer: int


Headers = list[tuple[str, str | bytes | None]]
# The headers of the current millisecond, built once for every record sent within it.
_current: tuple[int, Headers] = (0, [])


def stamp_headers() -> Headers:
    """The headers of a record handed to the producer now. Records of one millisecond
    share one list: the caller hands it to ``produce()`` and must not change it."""
    global _current
    sent_ms = time.time_ns() // 1_000_000
    built_ms, headers = _current
    if built_ms != sent_ms:
        headers = [(HEADER, _FORMAT.pack(sent_ms, PRODUCER_ID))]
        _current = (sent_ms, headers)  # one assignment: threads see either pair whole
    return headers


def read_stamp(value: bytes | None) -> SendStamp | None:
    """The stamp in a header value; None when absent or malformed (never raises)."""
    if value is None or len(value) != _FORMAT.size:
        return None
    sent_ms, producer = _FORMAT.unpack(value)
    return SendStamp(sent_ms, producer)
