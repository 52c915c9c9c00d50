"""Event and request ids: UUID strings, unique across threads and forked processes."""

from __future__ import annotations

import os
import threading
import uuid

import pytest

from ept.ids import new_id
from ept.schemas.validation import UUID_PATTERN

pytestmark = pytest.mark.unit


def test_an_id_is_a_version_8_uuid_the_sink_accepts() -> None:
    for value in (new_id() for _ in range(1000)):
        assert UUID_PATTERN.fullmatch(value)
        parsed = uuid.UUID(value)
        assert (parsed.version, parsed.variant, str(parsed)) == (8, uuid.RFC_4122, value)


def test_ids_drawn_by_many_threads_are_distinct() -> None:
    drawn: list[list[str]] = [[] for _ in range(4)]

    def draw(into: list[str]) -> None:
        into.extend(new_id() for _ in range(50_000))

    threads = [threading.Thread(target=draw, args=(into,)) for into in drawn]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [value for into in drawn for value in into]
    assert len(set(every)) == len(every) == 200_000


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then exit without running the parent's code
        os.write(write, "\n".join(new_id() for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split("\n"))
    os.waitpid(pid, 0)
    parent = {new_id() for _ in range(100)}
    assert len(child) == 100 and not child & parent
    assert {value[:24] for value in child}.isdisjoint({value[:24] for value in parent})
