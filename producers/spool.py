"""A bounded on-disk spool for encoded events that Kafka cannot take right now.

Layout: ``<root>/<owner>/`` per process, holding ``lock`` (flock'ed while the owner
lives) and segment files ``<n>.seg`` of length-prefixed records. A new process adopts
the directories of dead owners, so spooled events survive a crash or restart.

Records are written with buffered I/O and flushed to the OS every ``flush_interval``
seconds by the owner's background thread (:meth:`Spool.flush_to_os`); no fsync, so a
machine crash (not a process crash) can lose the last unflushed writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_HEADER = struct.Struct("<IHi")  # record length, topic length, key length (-1: no key)
_SEGMENT_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SpooledMessage:
    topic: str
    key: bytes | None
    value: bytes


class Spool:
    """Bounded append-only spool. Thread-safe; ``append`` never raises on a full spool."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)
        self._dir = root / uuid.uuid4().hex
        self._dir.mkdir()
        self._lock_file = open(self._dir / "lock", "wb")  # noqa: SIM115 - held for life
        fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._next_segment = 0
        self._writer: BinaryIO | None = None
        self._writer_path: Path | None = None
        self._bytes = 0
        self._adopt_orphans(root)
        self._bytes = sum(path.stat().st_size for path in self._segments())

    def _adopt_orphans(self, root: Path) -> None:
        for other in root.iterdir():
            if other == self._dir or not other.is_dir():
                continue
            try:
                with open(other / "lock", "ab") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    for segment in sorted(other.glob("*.seg"), key=_segment_number):
                        segment.rename(self._new_segment_path())
                    (other / "lock").unlink()
                other.rmdir()
            except OSError:
                continue  # its owner is alive, or another process adopts it

    def _new_segment_path(self) -> Path:
        self._next_segment += 1
        return self._dir / f"{self._next_segment:010d}.seg"

    def _segments(self) -> list[Path]:
        return sorted(self._dir.glob("*.seg"), key=_segment_number)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __bool__(self) -> bool:
        return self._bytes > 0

    def append(self, topic: str, key: bytes | None, value: bytes) -> bool:
        """Store one message; False (nothing written) when the spool is full or disk fails."""
        encoded_topic = topic.encode()
        record_length = _HEADER.size + len(encoded_topic) + len(key or b"") + len(value)
        with self._lock:
            if self._bytes + record_length > self.max_bytes:
                return False
            try:
                if self._writer is None:
                    self._writer_path = self._new_segment_path()
                    self._writer = open(self._writer_path, "ab")  # noqa: SIM115
                self._writer.write(_HEADER.pack(
                    record_length, len(encoded_topic), -1 if key is None else len(key)
                ))
                self._writer.write(encoded_topic)
                if key:
                    self._writer.write(key)
                self._writer.write(value)
            except OSError:
                return False
            self._bytes += record_length
            if self._writer.tell() >= _SEGMENT_BYTES:
                self._close_writer()
            return True

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def flush_to_os(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.flush()

    def take_segment(self) -> tuple[Path, list[SpooledMessage]] | None:
        """The oldest segment and its messages, or None when empty.

        The segment stays on disk until :meth:`release` — call it once every message
        was delivered or spooled again, so a crash in between loses nothing.
        """
        with self._lock:
            segments = self._segments()
            if not segments:
                return None
            if segments[0] == self._writer_path:
                self._close_writer()
            path = segments[0]
            return path, list(_read_segment(path))

    def release(self, segment: Path) -> None:
        with self._lock:
            try:
                size = segment.stat().st_size
                segment.unlink()
            except FileNotFoundError:
                return
            if segment == self._writer_path:
                self._writer_path = None
            self._bytes -= size

    def close(self) -> None:
        """Flush and unlock; the directory stays for the next process when not empty."""
        with self._lock:
            self._close_writer()
            empty = not self._segments()
            if empty:
                (self._dir / "lock").unlink(missing_ok=True)
            self._lock_file.close()
            if empty:
                with contextlib.suppress(OSError):
                    self._dir.rmdir()


def _segment_number(path: Path) -> int:
    return int(path.stem)


def _read_segment(path: Path) -> Iterator[SpooledMessage]:
    data = path.read_bytes()
    position = 0
    while position + _HEADER.size <= len(data):
        length, topic_length, key_length = _HEADER.unpack_from(data, position)
        if length < _HEADER.size or position + length > len(data):
            break  # a torn final write of a crashed process
        cursor = position + _HEADER.size
        topic = data[cursor:cursor + topic_length].decode()
        cursor += topic_length
        key = None
        if key_length >= 0:
            key = data[cursor:cursor + key_length]
            cursor += key_length
        yield SpooledMessage(topic, key, data[cursor:position + length])
        position += length


def default_spool_root(state_dir: Path) -> Path:
    return state_dir / "spool" / f"{os.getuid()}"
