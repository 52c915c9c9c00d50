"""The control topics' shared parts: every record's JSON decoding, and a view keeping only
records keyed by their own key (no broker: a view that is not started reads nothing)."""

from __future__ import annotations

import logging

import pytest

from ept.core.deletions import ACCOUNT, BadDeletion, Deletion, DeletionView
from ept.core.json_record import JsonRecord
from ept.core.settings import Settings
from ept.core.template_controls import (
    DISABLED,
    ENABLED,
    BadTemplateControl,
    TemplateControl,
    TemplateControlView,
)
from ept.processors.alerts.notice import AlertNotice, BadAlertRecord
from ept.threshold_controls import BadSlowThreshold, SlowThreshold

pytestmark = pytest.mark.unit

T0 = 1_700_000_000_000
NOTICE = AlertNotice("fp", "r", "error_rate", "firing", "high", {"endpoint": "/a"}, 0.5, 10,
                     0.2, 0.1, "5m", "2026-01-01T00:00:00Z", None, "s", "", "notify_oncall",
                     extra={"future_field": 1})
RECORDS: list[tuple[JsonRecord, type[ValueError]]] = [
    (TemplateControl("tpl_a", DISABLED, "failing", "me", T0, "fp"), BadTemplateControl),
    (SlowThreshold("render_video", "tpl_1", 42_000.0, "perf-team", T0, "p95"),
     BadSlowThreshold),
    (Deletion(ACCOUNT, "acct_1", T0, "me"), BadDeletion),
    (NOTICE, BadAlertRecord),
]


@pytest.mark.parametrize(("record", "invalid"), RECORDS)
def test_every_record_round_trips_and_says_what_is_wrong(record: JsonRecord,
                                                         invalid: type[ValueError]) -> None:
    assert type(record).decode(record.encode()) == record
    for payload, message in [(b"{", "not JSON"), (b"[1]", "not a JSON object"),
                             (b"{}", "missing fields: ")]:
        with pytest.raises(invalid, match=message):
            type(record).decode(payload)


def test_a_field_s_own_check_and_a_bad_type_are_told() -> None:
    with pytest.raises(BadDeletion, match="kind: must be account or user, got 'team'"):
        Deletion.decode(b'{"kind": "team", "subject_id": "x", "at_ms": 1, "by": "me"}')
    with pytest.raises(BadDeletion, match="bad field: invalid literal for int"):
        Deletion.decode(b'{"kind": "user", "subject_id": "x", "at_ms": "soon", "by": "me"}')
    assert AlertNotice.decode(NOTICE.encode()).extra == {"future_field": 1}


class Message:
    """What a view reads of a Kafka message."""

    def __init__(self, key: bytes | None, value: bytes) -> None:
        self._key, self._value = key, value

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes:
        return self._value

    def topic(self) -> str:
        return "controls"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 7


def test_a_view_keeps_records_under_their_own_key_and_skips_the_rest(
        caplog: pytest.LogCaptureFixture) -> None:
    updates: list[TemplateControl] = []
    view = TemplateControlView(Settings(), on_update=updates.append)
    disabled = TemplateControl("tpl_a", DISABLED, "failing", "me", T0)
    enabled = TemplateControl("tpl_a", ENABLED, "fixed", "me", T0 + 1)
    with caplog.at_level(logging.WARNING, "ept.compacted"):
        view._on_message(Message(b"tpl_a", disabled.encode()), False)  # type: ignore[arg-type]
        view._on_message(Message(b"tpl_b", enabled.encode()), False)  # type: ignore[arg-type]
        view._on_message(Message(b"tpl_a", b"\x00"), False)  # type: ignore[arg-type]
    assert not view.is_enabled("tpl_a") and view.controls() == [disabled]
    assert [record.getMessage() for record in caplog.records] == [
        "controls[0]@7: a record skipped: key b'tpl_b' is not its key 'tpl_a'",
        "controls[0]@7: a record skipped: not JSON: Expecting value: line 1 column 1 (char 0)"]
    assert updates == []  # not loaded yet: nothing is told
    view._loaded.set()
    view._on_message(Message(None, enabled.encode()), True)  # type: ignore[arg-type]
    assert view.is_enabled("tpl_a") and updates == [enabled]


def test_a_deletion_view_tells_deletions_recorded_once_loaded() -> None:
    told: list[Deletion] = []
    view = DeletionView(Settings(), on_deleted=told.append)
    first, second = Deletion(ACCOUNT, "acct_1", T0, "me"), Deletion("user", "u_2", T0, "me")
    view._on_message(Message(first.key.encode(), first.encode()), False)  # type: ignore[arg-type]
    view._loaded.set()
    view._on_message(Message(second.key.encode(), second.encode()), True)  # type: ignore[arg-type]
    assert told == [second]
    assert view.may_hold(b'{"account_id": "acct_1"}') and not view.may_hold(b"acct_2")
    assert view.is_deleted({"user_id": "u_2"}) and not view.is_deleted({"user_id": "u_3"})
