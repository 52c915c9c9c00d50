"""The SDK's encoders write fastavro's bytes exactly, in both framings.

The tracker encodes each event with the compiled encoder of :mod:`schemas.compiled`,
the framing header and its envelope (service, environment, SDK version) encoded once.
These tests hold its output to fastavro's ``schemaless_writer`` behind the same header,
for randomized records of every event: unicode, nulls, optional fields, lengths across
the varint boundaries, the extremes of int and long, NaN and infinities.
"""

from __future__ import annotations

import io
from functools import cache
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ept.classification import FAILURE_REASONS
from ept.core.settings import load_sdk_settings
from ept.schemas.codec import (
    CONFLUENT_MAGIC,
    SINGLE_OBJECT_MAGIC,
    ConfluentEncoder,
    EventEncode,
    SingleObjectEncoder,
    event_encoders,
    registry_client,
)
from ept.schemas.registry import ENVELOPE_FIELDS, EVENT_NAMES, current_schemas
from ept.thresholds import RENDER_TYPES
from ept.tracker import SDK_VERSION, Tracker
from tests.recording import RecordingDelivery

pytestmark = pytest.mark.unit

REGISTRY = "mock://ept-sdk-encoding"
TOPICS = {name: f"unit.{name}" for name in EVENT_NAMES}
CONSTANT_FIELDS = ("service", "environment", "sdk_version")
# Unicode of every plane (surrogates cannot be encoded as UTF-8, so none), and lengths
# that cross the one-to-two byte varint boundary (64) and the length table (2048).
TEXT = (st.text(st.characters(exclude_categories=["Cs"]), max_size=80)
        | st.text(alphabet="xé😀", min_size=2040, max_size=2060))
INT32 = st.integers(-(1 << 31), (1 << 31) - 1)
INT64 = st.integers(-(1 << 63), (1 << 63) - 1)
DOUBLE = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.0, -0.0, 5e-324, 1.7976931348623157e308])


def value_strategy(node: Any) -> st.SearchStrategy[Any]:
    if isinstance(node, list):
        return st.none() | value_strategy(node[1])
    kind = node["type"] if isinstance(node, dict) else node
    if kind == "enum":
        return st.sampled_from(node["symbols"])
    return {"string": TEXT, "long": INT64 | st.integers(0, 3000) | st.integers(
        1_500_000_000_000, 2_000_000_000_000), "int": INT32 | st.integers(0, 3000),
        "double": DOUBLE, "boolean": st.booleans()}[kind]


def records(name: str) -> st.SearchStrategy[dict[str, Any]]:
    """Records of ``name`` without the constant envelope fields."""
    fields = current_schemas()[name].definition["fields"]
    return st.fixed_dictionaries({field["name"]: value_strategy(field["type"])
                                  for field in fields if field["name"] not in CONSTANT_FIELDS})


def fastavro_frame(header: bytes, name: str, record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO(header)
    buffer.seek(len(header))
    schemaless_writer(buffer, current_schemas()[name].parsed_plain, record)
    return buffer.getvalue()


ENCODERS = {"single-object": SingleObjectEncoder(),
            "confluent": ConfluentEncoder(REGISTRY, TOPICS)}


# Service, environment, SDK version: empty, unicode, and long enough for two-byte lengths.
ENVELOPES = (("svc", "prod", "0.1.0"), ("", "", ""), ("rendú-😀", "tést", "1.0.0-β"),
             ("s" * 70, "e" * 3000, "v"))


@cache
def encoders(framing: str, envelope: int) -> dict[str, EventEncode]:
    return event_encoders(ENCODERS[framing], dict(zip(CONSTANT_FIELDS, ENVELOPES[envelope],
                                                      strict=True)))


@cache
def header_of(framing: str, name: str) -> bytes:
    """The documented header (docs/wire-format.md), from the schema or the registry."""
    if framing == "single-object":
        return SINGLE_OBJECT_MAGIC + current_schemas()[name].fingerprint
    registered = registry_client(REGISTRY).get_latest_version(f"{TOPICS[name]}-value")
    return bytes([CONFLUENT_MAGIC]) + registered.schema_id.to_bytes(4, "big")


@pytest.mark.parametrize("framing", list(ENCODERS))
@pytest.mark.parametrize("name", EVENT_NAMES)
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_sdks_encoder_writes_fastavros_bytes(framing: str, name: str,
                                                 data: st.DataObject) -> None:
    envelope = data.draw(st.integers(0, len(ENVELOPES) - 1), label="envelope")
    constants = dict(zip(CONSTANT_FIELDS, ENVELOPES[envelope], strict=True))
    record = data.draw(records(name), label="record")
    encode = encoders(framing, envelope)[name]
    expected = fastavro_frame(header_of(framing, name), name, {**record, **constants})
    assert encode(dict(record)) == expected


# -- through the tracker: what a track_* call hands to delivery ---------------------------

IDENTIFIER = st.text(st.characters(exclude_categories=["Cs", "Zs", "Cc"]), min_size=1,
                     max_size=40)
DURATION = st.floats(0, 1e12) | st.integers(0, (1 << 53))
OPTIONAL_ID = st.none() | IDENTIFIER
CALLS = {
    "render_failed": lambda data: ("track_render_failed", dict(
        render_id=data.draw(IDENTIFIER), reason=data.draw(st.sampled_from(FAILURE_REASONS)),
        error_message=data.draw(TEXT), template_id=data.draw(IDENTIFIER),
        duration_ms=data.draw(DURATION), retry_attempt=data.draw(st.integers(0, (1 << 31) - 1)),
        render_type=data.draw(st.none() | st.sampled_from(RENDER_TYPES)))),
    "render_completed": lambda data: ("track_render_completed", dict(
        render_id=data.draw(IDENTIFIER), template_id=data.draw(IDENTIFIER),
        render_type=data.draw(st.sampled_from(RENDER_TYPES)),
        duration_ms=data.draw(DURATION), dimensions=data.draw(
            st.none() | st.tuples(INT32.filter(lambda n: n >= 0),
                                  INT32.filter(lambda n: n >= 0))))),
    "slow_render": lambda data: ("track_slow_render", dict(
        render_id=data.draw(IDENTIFIER), render_type=data.draw(st.sampled_from(RENDER_TYPES)),
        duration_ms=data.draw(DURATION), threshold_ms=data.draw(st.floats(0.001, 1e9)),
        template_id=data.draw(IDENTIFIER))),
    "api_error": lambda data: ("track_api_error", dict(
        endpoint=data.draw(IDENTIFIER), status_code=data.draw(st.none() | st.integers(100, 599)),
        error_message=data.draw(TEXT), request_id=data.draw(OPTIONAL_ID),
        duration_ms=data.draw(DURATION), retry_attempt=data.draw(st.integers(0, 50)),
        method=data.draw(st.none() | st.sampled_from(["GET", "POST"])),
        retry_after_s=data.draw(st.none() | st.floats(0, 3600)))),
    "api_request_completed": lambda data: ("track_api_request_completed", dict(
        endpoint=data.draw(IDENTIFIER), method=data.draw(st.sampled_from(["GET", "PUT"])),
        status_code=data.draw(st.integers(100, 599)), duration_ms=data.draw(DURATION),
        request_id=data.draw(OPTIONAL_ID))),
}
TRACKERS: dict[str, tuple[Tracker, RecordingDelivery]] = {}


def tracker_for(framing: str) -> tuple[Tracker, RecordingDelivery]:
    if framing not in TRACKERS:
        delivery = RecordingDelivery()
        registry = REGISTRY if framing == "confluent" else None
        tracker = Tracker(load_sdk_settings(topic_prefix="unit.", schema_registry_url=registry),
                          strict=True, service="svc-ü", environment="tést", delivery=delivery)
        TRACKERS[framing] = tracker, delivery
    return TRACKERS[framing]


@pytest.mark.parametrize("framing", list(ENCODERS))
@pytest.mark.parametrize("name", EVENT_NAMES)
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_tracked_event_is_fastavros_bytes_of_what_was_tracked(
        framing: str, name: str, data: st.DataObject) -> None:
    tracker, delivery = tracker_for(framing)
    method, arguments = CALLS[name](data)
    delivery.sent.clear()
    getattr(tracker, method)(**arguments)
    [(topic, key, payload)] = delivery.sent
    header = header_of(framing, name)
    assert topic == TOPICS[name] and payload.startswith(header)
    record = schemaless_reader(io.BytesIO(payload[len(header):]),
                               current_schemas()[name].parsed_plain, None)
    assert isinstance(record, dict)
    assert payload == fastavro_frame(header, name, record)
    assert list(record)[:len(ENVELOPE_FIELDS)] == list(ENVELOPE_FIELDS)
    assert (record["service"], record["environment"], record["sdk_version"]) == (
        "svc-ü", "tést", SDK_VERSION)
    for field in ("render_id", "reason", "render_type", "status_code", "method",
                  "retry_attempt", "duration_ms", "retry_after_s"):
        if field in arguments and arguments[field] is not None:
            assert record[field] == arguments[field], field
    assert key == record["template_id" if "template_id" in record else "endpoint"].encode()


class Name(str):
    """A str subclass: the checked encoder refuses it, the rules accept it."""


def test_a_value_the_checked_encoder_refuses_but_the_rules_accept_is_sent() -> None:
    tracker, delivery = tracker_for("single-object")
    delivery.sent.clear()
    tracker.track_render_failed(Name("r1"), "timeout", Name("failed"), Name("tpl_1"), 5)
    tracker.track_render_failed("r1", "timeout", "failed", "tpl_1", 5)
    [(_, key_a, a), (_, key_b, b)] = delivery.sent
    header = header_of("single-object", "render_failed")
    fields = current_schemas()["render_failed"].parsed_plain
    first, second = (schemaless_reader(io.BytesIO(p[len(header):]), fields, None)
                     for p in (a, b))
    assert isinstance(first, dict) and isinstance(second, dict)
    different = {"event_id", "event_time"}
    assert {k: v for k, v in first.items() if k not in different} == {
        k: v for k, v in second.items() if k not in different}
    assert key_a == key_b == b"tpl_1"
