"""The compiled encoders and decoders agree with fastavro byte for byte (hypothesis)."""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from ept.schemas.compiled import MalformedBody, build_decoder, build_encoder, compilable
from ept.schemas.registry import EVENT_NAMES, current_schemas

INT32 = st.integers(-(1 << 31), (1 << 31) - 1)
INT64 = st.integers(-(1 << 63), (1 << 63) - 1)
# Lengths around 2048 cross from one-byte to two-byte varints and the lookup table.
TEXT = st.text(max_size=40) | st.text(alphabet="x", min_size=2040, max_size=2060)
ENCODERS = {name: build_encoder(s.definition) for name, s in current_schemas().items()}
DECODERS = {name: build_decoder(s.definition) for name, s in current_schemas().items()}


def value_strategy(node: Any) -> st.SearchStrategy[Any]:
    if isinstance(node, list):
        return st.none() | value_strategy(node[1])
    kind = node["type"] if isinstance(node, dict) else node
    if kind == "enum":
        return st.sampled_from(node["symbols"])
    return {"string": TEXT, "long": INT64 | st.integers(0, 2000), "int": INT32,
            "double": st.floats(allow_nan=True), "boolean": st.booleans()}[kind]


def records(name: str) -> st.SearchStrategy[dict[str, Any]]:
    fields = current_schemas()[name].definition["fields"]
    return st.fixed_dictionaries({f["name"]: value_strategy(f["type"]) for f in fields})


def fastavro_bytes(name: str, record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, current_schemas()[name].parsed_plain, record)
    return buffer.getvalue()


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal, counting NaN as equal to NaN."""
    return a.keys() == b.keys() and all(
        x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x)
                   and math.isnan(y)) for x, y in zip(a.values(), b.values(), strict=True))


@pytest.mark.parametrize("name", EVENT_NAMES)
def test_every_event_schema_is_compilable(name: str) -> None:
    assert compilable(current_schemas()[name].definition)


@pytest.mark.parametrize("name", EVENT_NAMES)
@settings(max_examples=200)
@given(data=st.data())
def test_encoder_writes_fastavros_bytes_and_decoder_reads_them_back(
        name: str, data: st.DataObject) -> None:
    record = data.draw(records(name))
    expected = fastavro_bytes(name, record)
    assert ENCODERS[name](record) == expected
    decoded = DECODERS[name](b"pad" + expected, 3)
    reference = schemaless_reader(io.BytesIO(expected),
                                  current_schemas()[name].parsed_plain, None)
    assert same(decoded, reference)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", EVENT_NAMES)
@settings(max_examples=200)
@given(data=st.data())
def test_decoder_rejects_every_truncation_and_extension(name: str, data: st.DataObject) -> None:
    encoded = fastavro_bytes(name, data.draw(records(name)))
    decode = DECODERS[name]
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(MalformedBody):
        decode(encoded[:cut], 0)
    with pytest.raises(MalformedBody, match="trailing"):
        decode(encoded + data.draw(st.binary(min_size=1, max_size=4)), 0)


@settings(max_examples=2000)
@given(st.sampled_from(EVENT_NAMES), st.binary(max_size=200))
def test_random_bodies_decode_as_fastavro_does_or_raise_malformed(name: str,
                                                                  body: bytes) -> None:
    schema = current_schemas()[name]
    try:
        decoded = DECODERS[name](body, 0)
    except MalformedBody:
        return
    stream = io.BytesIO(body)
    reference = schemaless_reader(stream, schema.parsed_plain, None)
    assert stream.tell() == len(body)
    assert same(decoded, reference)  # type: ignore[arg-type]


@pytest.mark.parametrize(("field", "value"), [
    ("retry_attempt", 1 << 31), ("retry_attempt", 1.5), ("retry_attempt", True),
    ("service", 7), ("reason", "not-a-reason"), ("event_time", None),
])
def test_encoder_refuses_what_it_cannot_write_exactly(field: str, value: Any) -> None:
    """The codec then hands the record to fastavro, which writes it or names the error."""
    record = {"event_id": "e", "event_time": 1, "service": "s", "environment": "e",
              "sdk_version": "1", "user_id": None, "account_id": None, "render_id": "r",
              "template_id": "t", "reason": "timeout", "error_message": "m",
              "duration_ms": 1.0, "retry_attempt": 0, "render_type": None, field: value}
    with pytest.raises(Exception):  # noqa: B017 - any refusal means fastavro decides
        ENCODERS["render_failed"](record)
