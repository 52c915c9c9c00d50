"""Deleted accounts and users: the compacted ``deletions`` topic.

``ept delete-account`` records a :class:`Deletion` here before it deletes the stored rows;
the sink (and ``ept dlq replay``) follow the topic with a :class:`DeletionView` and drop
every event of a deleted subject they read afterwards, including events still waiting in
Kafka, so nothing of it is stored after the deletion completes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ept.core.compacted import CompactedTopicFollower, publish_record
from ept.core.settings import SdkSettings

log = logging.getLogger("ept.deletions")

ACCOUNT, USER = "account", "user"


class BadDeletion(ValueError):
    """A deletion record is invalid; the message says why."""


@dataclass(frozen=True)
class Deletion:
    """One deleted subject (JSON on the topic, keyed ``<kind>:<subject_id>``)."""

    kind: str  # ACCOUNT or USER
    subject_id: str
    at_ms: int
    by: str

    def __post_init__(self) -> None:
        if self.kind not in (ACCOUNT, USER):
            raise BadDeletion(f"kind: must be {ACCOUNT} or {USER}, got {self.kind!r}")
        if not self.subject_id.strip():
            raise BadDeletion(f"{self.kind} id: must not be empty")

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.subject_id}"

    def encode(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()

    @classmethod
    def decode(cls, payload: bytes | None) -> Deletion:
        """Raises BadDeletion when ``payload`` is not a JSON deletion."""
        try:
            data = json.loads(payload or b"")
            return cls(str(data["kind"]), str(data["subject_id"]), int(data["at_ms"]),
                       str(data["by"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise BadDeletion(f"not a deletion record: {exc}") from None


def publish_deletion(settings: SdkSettings, deletion: Deletion) -> None:
    """Record ``deletion``; blocks until the broker acknowledged it (raises KafkaException
    otherwise)."""
    publish_record(settings, settings.topics.deletions, deletion.key, deletion.encode())


class DeletionView:
    """Every deleted account and user, kept by a daemon thread following the topic.

    :meth:`may_hold` is the cheap test a consumer runs on each raw message (does it
    contain a deleted id at all?); :meth:`is_deleted` the exact one on decoded fields.
    Neither blocks nor raises. ``on_deleted`` is called (in the view's thread) with each
    deletion recorded after the view loaded.
    """

    def __init__(self, settings: SdkSettings,
                 on_deleted: Callable[[Deletion], None] | None = None) -> None:
        self._on_deleted = on_deleted
        self._accounts: frozenset[str] = frozenset()
        self._users: frozenset[str] = frozenset()
        self._needles: tuple[bytes, ...] = ()
        self._follower = CompactedTopicFollower(settings, settings.topics.deletions,
                                                self._apply)

    def start(self) -> DeletionView:
        self._follower.start()
        return self

    def close(self) -> None:
        self._follower.close()

    def wait_loaded(self, timeout_s: float | None = None) -> bool:
        return self._follower.wait_loaded(timeout_s)

    def may_hold(self, payload: bytes) -> bool:
        """False when ``payload`` cannot belong to a deleted subject (no deleted id occurs
        in its bytes); True means: decode it and ask :meth:`is_deleted`."""
        for needle in self._needles:  # noqa: SIM110 - a loop beats any() on this hot path
            if needle in payload:
                return True
        return False

    def is_deleted(self, record: dict[str, Any]) -> bool:
        return (record.get("account_id") in self._accounts
                or record.get("user_id") in self._users)

    def _apply(self, key: bytes | None, value: bytes | None, live: bool) -> None:
        try:
            deletion = Deletion.decode(value)
        except BadDeletion as exc:
            log.warning("deletions: a record skipped: %s", exc)
            return
        if deletion.kind == ACCOUNT:
            self._accounts = self._accounts | {deletion.subject_id}
        else:
            self._users = self._users | {deletion.subject_id}
        self._needles = tuple(sorted({subject.encode()
                                      for subject in self._accounts | self._users}))
        if live and self._on_deleted is not None:
            self._on_deleted(deletion)
