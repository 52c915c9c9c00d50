"""``ept delete-account``'s order (storage/deletion.py): the deletion is recorded before
any stored row is removed, and nothing is removed when it could not be recorded."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from ept.core.deletions import ACCOUNT, Deletion
from ept.core.settings import Settings
from ept.processors.storage import deletion as module
from ept.processors.storage.connection import EngineHeldElsewhere

DELETION = Deletion(ACCOUNT, "acct_gone", 1_700_000_000_000, "dpo")


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The steps delete_subject takes, in order; ClickHouse opens unless told otherwise."""
    done: list[str] = []
    monkeypatch.setattr(module, "publish_deletion",
                        lambda settings, deletion: done.append(f"publish {deletion.key}"))
    monkeypatch.setattr(module, "clickhouse_client", lambda settings: done.append("open"))

    def delete_stored(client: Any, kind: str, subject_id: str, cluster: str | None
                      ) -> dict[str, int]:
        done.append(f"remove {kind} {subject_id} on {cluster}")
        return {"events": 3}

    monkeypatch.setattr(module, "delete_stored", delete_stored)
    return done


def test_the_deletion_is_recorded_before_the_rows_are_removed(steps: list[str]) -> None:
    settings = Settings(clickhouse_cluster="shards")
    removed = module.delete_subject(settings, DELETION,
                                    lambda deletion: steps.append(f"told {deletion.key}"))
    assert removed == {"events": 3}
    assert steps == ["publish account:acct_gone", "told account:acct_gone", "open",
                     "remove account acct_gone on shards"]


def test_an_engine_held_by_the_sink_is_left_to_it(steps: list[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def held(settings: Settings) -> None:
        raise EngineHeldElsewhere("the sink has it")

    monkeypatch.setattr(module, "clickhouse_client", held)
    assert module.delete_subject(Settings(), DELETION, lambda deletion: None) is None
    assert steps == ["publish account:acct_gone"]


def test_nothing_is_removed_when_the_deletion_was_not_recorded(
        steps: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(settings: Settings, deletion: Deletion) -> None:
        raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT))

    monkeypatch.setattr(module, "publish_deletion", refused)
    with pytest.raises(KafkaException):
        module.delete_subject(Settings(), DELETION, lambda deletion: steps.append("told"))
    assert steps == []
