"""Fuzzing the shared decoder and the SDK's argument handling (hypothesis)."""

from __future__ import annotations

import contextlib
import time
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ept.schemas import DecodeError, Decoder, SingleObjectEncoder
from tests.recording import recording_tracker

VALID = SingleObjectEncoder().encode("api_error", {
    "event_id": str(uuid.uuid4()), "event_time": int(time.time() * 1000), "service": "s",
    "environment": "e", "sdk_version": "1", "user_id": None, "account_id": None,
    "endpoint": "/api/render", "method": "POST", "status_code": 500, "error_message": "boom",
    "request_id": "r", "duration_ms": 1.0, "retry_attempt": 0, "rate_limited": False,
    "retry_after_s": None})
DECODER = Decoder()
RAW_DECODER = Decoder(raw=True)


def decodes_or_raises_typed_error(payload: bytes) -> None:
    """Also: ``decode_record`` (the worker's path) reads what ``decode`` reads, and
    raises what it raises."""
    with contextlib.suppress(DecodeError):  # anything else fails the test
        DECODER.decode(payload)
    try:
        decoded = RAW_DECODER.decode(payload)
    except DecodeError as exc:
        with pytest.raises(type(exc)):
            RAW_DECODER.decode_record(payload)
    else:  # compared as text: a flipped double may read as NaN, unequal to itself
        assert repr(RAW_DECODER.decode_record(payload)) == repr((decoded.name,
                                                                 decoded.record))


@settings(max_examples=1000)
@given(st.binary(max_size=300))
def test_random_bytes_give_a_typed_error_or_an_event(payload: bytes) -> None:
    decodes_or_raises_typed_error(payload)


@settings(max_examples=1000)
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=8),
       st.integers(0, len(VALID)))
def test_mutated_valid_payloads_give_a_typed_error_or_an_event(
        flips: list[tuple[int, int]], cut: int) -> None:
    payload = bytearray(VALID)
    for position, value in flips:
        payload[position] = value
    decodes_or_raises_typed_error(bytes(payload[:cut] if cut else payload))


ANYTHING = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                     st.text(max_size=30), st.binary(max_size=10),
                     st.lists(st.integers(), max_size=3), st.dictionaries(st.text(), st.integers()))


@settings(max_examples=1000)
@given(st.tuples(ANYTHING, ANYTHING, ANYTHING, ANYTHING, ANYTHING, ANYTHING))
def test_lenient_sdk_never_raises_and_strict_raises_only_value_or_type_errors(args: tuple) -> None:
    lenient, _ = recording_tracker(strict=False)
    strict, _ = recording_tracker(strict=True)
    calls = ("track_render_failed", "track_api_error", "track_render_completed",
             "track_slow_render", "track_api_request_completed")
    for name in calls:
        arity = {"track_render_failed": 6, "track_api_error": 6, "track_render_completed": 5,
                 "track_slow_render": 6, "track_api_request_completed": 5}[name]
        getattr(lenient, name)(*args[:arity])  # must not raise
        try:
            getattr(strict, name)(*args[:arity])
        except (ValueError, TypeError) as error:
            assert str(error), "errors must say what is wrong"
