"""Unique ids for events and requests, cheap enough for the tracking hot path.

An id is a UUID string of RFC 9562's version 8 (a layout of ept's own): 74 random bits
drawn once per process (again in a forked child, from the OS's randomness) and a 48-bit
counter. Two processes share the random part with probability 2**-74 (for a million
processes, about 1e-11 that any two do); one process repeats an id after 2**48 of them.
A fresh random UUID per call costs about four times as much to format.
"""

from __future__ import annotations

import itertools
import os
import secrets


def _random_prefix() -> str:
    """``xxxxxxxx-xxxx-8xxx-Vxxx-``: 74 random bits with the version and variant set."""
    bits = secrets.randbits(74)
    return (f"{bits >> 42:08x}-{(bits >> 26) & 0xFFFF:04x}-8{(bits >> 14) & 0xFFF:03x}-"
            f"{0x8000 | (bits & 0x3FFF):04x}-")


def _start() -> None:
    global _prefix, _counter
    # From 2**48 up: hex() of each is "0x1" and the 12 digits an id ends with.
    _prefix, _counter = _random_prefix(), itertools.count(1 << 48)


_prefix: str
_counter: itertools.count[int]
_start()
os.register_at_fork(after_in_child=_start)  # a child must not repeat its parent's ids


def new_id() -> str:
    """A new unique UUID string. Thread-safe (the counter's step is atomic); never blocks."""
    return _prefix + hex(next(_counter))[3:]
