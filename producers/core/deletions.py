"""Deleted accounts and users: the compacted ``deletions`` topic.

``ept delete-account`` records a :class:`Deletion` here before it deletes the stored rows;
the sink (and ``ept dlq replay``) follow the topic with a :class:`DeletionView` and drop
every event of a deleted subject they read afterwards, including events still waiting in
Kafka, so nothing of it is stored after the deletion completes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ept.core.compacted import ControlView, publish
from ept.core.json_record import ControlRecord
from ept.core.settings import SdkSettings

ACCOUNT, USER = "account", "user"


class BadDeletion(ValueError):
    """A deletion record is invalid; the message says why."""


@dataclass(frozen=True)
class Deletion(ControlRecord):
    """One deleted subject (JSON on the topic, keyed ``<kind>:<subject_id>``)."""

    invalid = BadDeletion

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

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Deletion:
        return cls(str(data["kind"]), str(data["subject_id"]), int(data["at_ms"]),
                   str(data["by"]))


def publish_deletion(settings: SdkSettings, deletion: Deletion) -> None:
    """Record ``deletion``; blocks until the broker acknowledged it (raises KafkaException
    otherwise)."""
    publish(settings, settings.topics.deletions, deletion)


class DeletionView(ControlView[Deletion]):
    """Every deleted account and user, kept by a daemon thread following the topic
    (:class:`~ept.core.compacted.ControlView`).

    :meth:`may_hold` is the cheap test a consumer runs on each raw message (does it
    contain a deleted id at all?); :meth:`is_deleted` the exact one on decoded fields.
    Neither blocks nor raises. ``on_deleted`` is called (in the view's thread) with each
    deletion recorded after the view loaded.
    """

    def __init__(self, settings: SdkSettings,
                 on_deleted: Callable[[Deletion], None] | None = None) -> None:
        super().__init__(settings, settings.topics.deletions, Deletion)
        self._on_deleted = on_deleted
        self._accounts: frozenset[str] = frozenset()
        self._users: frozenset[str] = frozenset()
        self._needles: tuple[bytes, ...] = ()

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

    def keep(self, deletion: Deletion, live: bool) -> None:
        if deletion.kind == ACCOUNT:
            self._accounts = self._accounts | {deletion.subject_id}
        else:
            self._users = self._users | {deletion.subject_id}
        self._needles = tuple(sorted({subject.encode()
                                      for subject in self._accounts | self._users}))
        if live and self._on_deleted is not None:
            self._on_deleted(deletion)
