"""The sink's compiled validity scan agrees with decode + ``problems`` (hypothesis).

The contract that matters is one-sided — the scan says "valid" only for bodies the slow
path would store — but valid events must also pass it, or the sink loses its speed.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ept.schemas.compiled import MalformedBody, build_decoder, build_encoder, zigzag
from ept.schemas.registry import EVENT_NAMES, current_schemas
from ept.schemas.scan import scanner
from ept.schemas.validation import EARLIEST_MS, latest_event_time_ms, problems

DECODERS = {name: build_decoder(s.definition) for name, s in current_schemas().items()}
ENCODERS = {name: build_encoder(s.definition) for name, s in current_schemas().items()}
NOW_MS = int(latest_event_time_ms()) - 86_400_000

# Values on both sides of every rule: blank and over-long text, negative, zero, NaN and
# infinite numbers, HTTP statuses around 100..599, times around the accepted range.
EDGE_TEXT = st.sampled_from(["", " ", "\t\n", "x", "é", "a" * 512, "a" * 513, "é" * 512,
                             "m" * 8192, "m" * 8193]) | st.text(max_size=12)
EDGE_IDS = st.sampled_from(["", "not-a-uuid", str(uuid.uuid4()).upper(),
                            str(uuid.uuid4())[:-1] + "g", str(uuid.uuid4()) + "\n"])
EDGE_TIMES = st.sampled_from([EARLIEST_MS - 1, EARLIEST_MS, NOW_MS + 86_400_000 - 1000,
                              NOW_MS + 2 * 86_400_000, -1, 0])
EDGE_DOUBLES = st.sampled_from([0.0, -0.0, -1.0, 1e-300, float("nan"), float("inf"),
                                float("-inf")]) | st.floats(-10, 1e6)
EDGE_INTS = st.sampled_from([0, -1, 1, 99, 100, 599, 600, (1 << 31) - 1, -(1 << 31)])
# Values every rule accepts.
VALID_TEXT = st.text(alphabet="abcé-_/0123456789", min_size=1, max_size=20)
VALID_TIMES = st.integers(EARLIEST_MS, NOW_MS)
VALID_DOUBLES = st.floats(0.5, 1e6)
VALID_INTS = st.integers(100, 599)


def value_strategy(name: str, node: Any, edge: bool) -> st.SearchStrategy[Any]:
    if isinstance(node, list):
        return st.none() | value_strategy(name, node[1], edge) if edge else value_strategy(
            name, node[1], edge)
    kind = node["type"] if isinstance(node, dict) else node
    if kind == "enum":
        return st.sampled_from(node["symbols"])
    if name == "event_id":
        return EDGE_IDS if edge else st.builds(lambda: str(uuid.uuid4()))
    if name == "event_time":
        return EDGE_TIMES if edge else VALID_TIMES
    if edge:
        return {"string": EDGE_TEXT, "long": EDGE_INTS, "int": EDGE_INTS,
                "double": EDGE_DOUBLES, "boolean": st.booleans()}[kind]
    return {"string": VALID_TEXT, "long": VALID_INTS, "int": VALID_INTS,
            "double": VALID_DOUBLES, "boolean": st.booleans()}[kind]


def records(name: str, data: st.DataObject) -> dict[str, Any]:
    """A valid record with up to two fields replaced by values at the rules' edges."""
    fields = {f["name"]: f["type"] for f in current_schemas()[name].definition["fields"]}
    record = data.draw(st.fixed_dictionaries(
        {field: value_strategy(field, node, edge=False) for field, node in fields.items()}))
    for field in data.draw(st.lists(st.sampled_from(sorted(fields)), max_size=2)):
        record[field] = data.draw(value_strategy(field, fields[field], edge=True))
    return record


def slow_path_stores(name: str, body: bytes, latest_ms: float) -> bool:
    """What the sink's slow path decides: the body decodes and breaks no rule."""
    try:
        record = DECODERS[name](body, 0)
    except MalformedBody:
        return False
    return not problems(name, record) and record["event_time"] <= latest_ms


@pytest.mark.parametrize("name", EVENT_NAMES)
@settings(max_examples=300)
@given(data=st.data())
def test_scan_accepts_exactly_the_records_the_rules_accept(name: str,
                                                           data: st.DataObject) -> None:
    record = records(name, data)
    body = ENCODERS[name](record)
    latest = latest_event_time_ms()
    scan = scanner(name)
    assert scan is not None
    assert scan(b"head" + body, 4, latest) == slow_path_stores(name, body, latest)


EDGES = {"string": ["", " ", "\t\n", "x", "é", "a" * 512, "a" * 513, "é" * 512, "é" * 513,
                    "m" * 8192, "m" * 8193],
         "double": [0.0, -0.0, -1.0, 1e-300, 0.5, float("nan"), float("inf"), float("-inf")],
         "long": [0, -1, 1, 99, 100, 599, 600, EARLIEST_MS - 1, EARLIEST_MS, NOW_MS,
                  NOW_MS + 86_400_000 - 1000, NOW_MS + 2 * 86_400_000],
         "int": [0, -1, 1, 99, 100, 599, 600, (1 << 31) - 1, -(1 << 31)]}


@pytest.mark.parametrize("name", EVENT_NAMES)
def test_scan_agrees_with_the_rules_on_every_edge_of_every_field(name: str) -> None:
    """Deterministic: each field of a valid record set in turn to each edge value of its
    type (and to None where the schema allows it)."""
    base = {"event_id": str(uuid.uuid4()), "event_time": NOW_MS, "service": "s",
            "environment": "e", "sdk_version": "1", "user_id": "u", "account_id": "a",
            "render_id": "r", "template_id": "t", "reason": "timeout", "error_message": "m",
            "duration_ms": 1.0, "retry_attempt": 0, "render_type": "video", "width": 1,
            "height": 1, "threshold_ms": 1.0, "slowness_factor": 1.5, "endpoint": "/x",
            "method": "GET", "status_code": 200, "request_id": "q", "rate_limited": False,
            "retry_after_s": 1.0}
    schema = current_schemas()[name].definition
    record = {field["name"]: base[field["name"]] for field in schema["fields"]}
    scan = scanner(name)
    assert scan is not None
    latest = latest_event_time_ms()
    assert scan(ENCODERS[name](record), 0, latest)
    checked = 0
    for field in schema["fields"]:
        node = field["type"][1] if isinstance(field["type"], list) else field["type"]
        kind = node["type"] if isinstance(node, dict) else node
        values = EDGES.get(kind, []) + ([None] if isinstance(field["type"], list) else [])
        if field["name"] == "event_id":
            values = ["", "not-a-uuid", str(uuid.uuid4()).upper(), str(uuid.uuid4()) + "\n"]
        for value in values:
            body = ENCODERS[name]({**record, field["name"]: value})
            assert scan(body, 0, latest) == slow_path_stores(name, body, latest), (
                field["name"], value)
            checked += 1
    assert checked > 50


@pytest.mark.parametrize("name", EVENT_NAMES)
@settings(max_examples=200)
@given(data=st.data())
def test_scan_never_accepts_a_damaged_body_the_slow_path_refuses(name: str,
                                                                 data: st.DataObject) -> None:
    body = bytearray(ENCODERS[name](records(name, data)))
    damage = data.draw(st.sampled_from(["truncate", "extend", "flip", "length"]))
    if damage == "truncate":
        body = body[:data.draw(st.integers(0, len(body) - 1))]
    elif damage == "extend":
        body += data.draw(st.binary(min_size=1, max_size=4))
    elif damage == "flip":
        body[data.draw(st.integers(0, len(body) - 1))] ^= data.draw(st.integers(1, 255))
    else:  # a string length that overruns or falls short of the body
        body[0] = zigzag(data.draw(st.integers(0, 63)))[0]
    latest = latest_event_time_ms()
    scan = scanner(name)
    assert scan is not None
    if scan(bytes(body), 0, latest):
        assert slow_path_stores(name, bytes(body), latest)


@settings(max_examples=2000)
@given(st.sampled_from(EVENT_NAMES), st.binary(max_size=200))
def test_scan_of_random_bytes_never_raises_and_never_accepts_what_is_refused(
        name: str, body: bytes) -> None:
    scan = scanner(name)
    assert scan is not None
    if scan(body, 0, latest_event_time_ms()):
        assert slow_path_stores(name, body, latest_event_time_ms())


def test_the_horizon_is_the_callers() -> None:
    """An event time just past ``latest_ms`` is refused; the slow path then decides with
    the current time."""
    record = {"event_id": str(uuid.uuid4()), "event_time": NOW_MS, "service": "s",
              "environment": "e", "sdk_version": "1", "user_id": None, "account_id": None,
              "endpoint": "/x", "method": "GET", "status_code": 200, "duration_ms": 1.0,
              "request_id": "q"}
    body = ENCODERS["api_request_completed"](record)
    scan = scanner("api_request_completed")
    assert scan is not None
    assert scan(body, 0, NOW_MS)
    assert not scan(body, 0, NOW_MS - 1)


@given(st.integers(-(1 << 63), (1 << 63) - 1) | st.integers(-(1 << 29), 1 << 29))
def test_zigzag_matches_the_avro_reference(value: int) -> None:
    import io

    from fastavro import schemaless_writer

    buffer = io.BytesIO()
    schemaless_writer(buffer, "long", value)
    assert zigzag(value) == buffer.getvalue()
