import json
import time
import uuid

import pytest

from ept.schemas import (
    CorruptPayloadError,
    Decoder,
    SingleObjectEncoder,
    UnknownFramingError,
    UnknownSchemaError,
    current_schemas,
)
from ept.schemas.compatibility import incompatibilities
from ept.schemas.registry import ENVELOPE_FIELDS, EVENT_NAMES, released_schemas


def render_failed_record() -> dict:
    return {
        "event_id": str(uuid.uuid4()), "event_time": int(time.time() * 1000),
        "service": "render", "environment": "test", "sdk_version": "0.1.0",
        "user_id": None, "account_id": None, "render_id": "r1", "template_id": "t1",
        "reason": "timeout", "error_message": "timed out", "duration_ms": 30000.0,
        "retry_attempt": 1, "render_type": "video",
    }


def test_round_trip_and_single_object_header() -> None:
    record = render_failed_record()
    payload = SingleObjectEncoder().encode("render_failed", record)
    assert payload[:2] == b"\xc3\x01"
    assert payload[2:10] == current_schemas()["render_failed"].fingerprint
    decoded = Decoder().decode(payload)
    assert decoded.name == "render_failed"
    assert str(decoded.record["event_id"]) == record["event_id"]
    assert int(decoded.record["event_time"].timestamp() * 1000) == record["event_time"]
    assert decoded.record["reason"] == "timeout"


@pytest.mark.parametrize(("mutate", "error"), [
    (lambda p: b"", UnknownFramingError),
    (lambda p: b"garbage!", UnknownFramingError),
    (lambda p: p[:6], CorruptPayloadError),
    (lambda p: p[:-4], CorruptPayloadError),
    (lambda p: p + b"\x00", CorruptPayloadError),
    (lambda p: p[:2] + b"\xff" * 8 + p[10:], UnknownSchemaError),
    (lambda p: b"\x00\x00\x00\x00\x07" + p[10:], UnknownSchemaError),
])
def test_bad_payloads_raise_typed_errors(mutate, error) -> None:  # type: ignore[no-untyped-def]
    payload = SingleObjectEncoder().encode("render_failed", render_failed_record())
    with pytest.raises(error):
        Decoder().decode(mutate(payload))


def test_every_schema_shares_the_envelope_and_documents_every_field() -> None:
    for name in EVENT_NAMES:
        definition = current_schemas()[name].definition
        fields = definition["fields"]
        assert tuple(f["name"] for f in fields[: len(ENVELOPE_FIELDS)]) == ENVELOPE_FIELDS
        assert definition["namespace"] == "io.ept.events"
        for field in fields:
            assert field.get("doc"), f"{name}.{field['name']} has no doc"


def test_current_schemas_read_every_released_version() -> None:
    assert released_schemas(), "no released schemas found"
    for released in released_schemas():
        current = current_schemas()[released.name].definition
        assert incompatibilities(released.definition, current) == [], released


def test_an_incompatible_change_is_detected() -> None:
    old = current_schemas()["api_error"].definition
    new_field = json.loads(json.dumps(old))
    new_field["fields"].append({"name": "region", "type": "string"})
    assert any("region" in problem for problem in incompatibilities(old, new_field))

    narrowed = json.loads(json.dumps(old))
    for field in narrowed["fields"]:
        if field["name"] == "duration_ms":
            field["type"] = "int"
    assert incompatibilities(old, narrowed)

    with_default = json.loads(json.dumps(old))
    with_default["fields"].append({"name": "region", "type": "string", "default": "eu"})
    assert incompatibilities(old, with_default) == []
