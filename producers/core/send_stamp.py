"""The SDK's send stamp: a Kafka header on each event record saying when, by the host's
clock, the record was handed to the producer, and which producer process sent it.

The worker compares it with the broker's timestamp of the record (LogAppendTime):
broker time - send time is the host's clock error plus the transport delay (see
:mod:`ept.processors.collection`), while send time - event time is how long the event
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


def stamp_headers() -> list[tuple[str, str | bytes | None]]:
    """The headers of a record handed to the producer now. About a microsecond."""
    return [(HEADER, _FORMAT.pack(time.time_ns() // 1_000_000, PRODUCER_ID))]


def read_stamp(value: bytes | None) -> SendStamp | None:
    """The stamp in a header value; None when absent or malformed (never raises)."""
    if value is None or len(value) != _FORMAT.size:
        return None
    sent_ms, producer = _FORMAT.unpack(value)
    return SendStamp(sent_ms, producer)
