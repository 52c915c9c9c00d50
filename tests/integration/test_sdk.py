"""The SDK against the real broker: topics, decoding, outage survival, foreign consumers."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from fastavro import parse_schema, schemaless_reader

from ept import Thresholds, Tracker
from ept.core.settings import Settings
from ept.deploy.broker import LocalBroker
from ept.measure import ApiMeasurement, RenderMeasurement
from ept.schemas import Decoder
from ept.schemas.registry import EVENT_NAMES
from tests.helpers import read_topics

REPO = Path(__file__).resolve().parents[2]


def topics(settings: Settings) -> list[str]:
    return [settings.topics.event(name) for name in EVENT_NAMES]


def test_every_track_and_measure_function_lands_on_its_topic(settings: Settings) -> None:
    tracker = Tracker(settings, thresholds=Thresholds({"render_still": 0.001}))
    tracker.track_render_failed("r1", "codec_error", "Encoding failed", "tpl_a", 1200.5, 2,
                                render_type="video")
    tracker.track_api_error("/api/render", 500, "Internal server error", "req_001", 2500, 0,
                            method="POST")
    tracker.track_slow_render("r3", "still", 7000, 5000, "tpl_b", {"width": 1920, "height": 1080})
    tracker.track_render_completed("r4", "tpl_b", "video", 25000, (1280, 720))
    tracker.track_api_request_completed("/api/render", "POST", 201, 85.5, "req_002")
    RenderMeasurement(tracker, "r5", "still", "tpl_c")(True)  # completed + slow (tiny threshold)
    ApiMeasurement(tracker, "/api/ads/generate-variants", "req_003", "POST")(
        False, 429, "rate limited", 1.5)
    assert tracker.flush(30) == 0

    messages = read_topics(settings.kafka_bootstrap, topics(settings), expected=8)
    decoder = Decoder()
    by_id = {}
    for message in messages:
        event = decoder.decode(message.value())
        assert message.topic() == settings.topics.event(event.name)
        by_id[event.record.get("render_id") or event.record["request_id"]] = (
            event.name, message.key().decode(), event.record)
    assert len(messages) == 8

    name, key, record = by_id["r1"]
    assert (name, key) == ("render_failed", "tpl_a")
    assert (record["reason"], record["error_message"], record["duration_ms"],
            record["retry_attempt"], record["render_type"]) == (
        "codec_error", "Encoding failed", 1200.5, 2, "video")
    name, key, record = by_id["req_001"]
    assert (name, key, record["status_code"], record["method"]) == (
        "api_error", "/api/render", 500, "POST")
    name, key, record = by_id["r3"]
    assert name == "slow_render" and record["slowness_factor"] == pytest.approx(1.4)
    assert (record["width"], record["height"]) == (1920, 1080)
    assert by_id["r4"][2]["width"] == 1280
    assert by_id["req_002"][0] == "api_request_completed"
    name, _, record = by_id["req_003"]
    assert name == "api_error" and record["rate_limited"] and record["retry_after_s"] == 1.5
    assert by_id["r5"][0] in {"render_completed", "slow_render"}
    tracker.close()


def test_broker_outage_loses_and_duplicates_nothing(settings: Settings,
                                                    native_broker: LocalBroker) -> None:
    tracker = Tracker(settings)
    tracker.track_render_completed("warmup", "tpl", "still", 1)
    assert tracker.flush(30) == 0
    native_broker.stop()
    try:
        started = time.perf_counter()
        for index in range(10_000):
            tracker.track_render_failed(f"r{index}", "timeout", "timed out", f"tpl{index % 50}",
                                        index, 0)
        elapsed = time.perf_counter() - started
        # Promptly: nothing waits on the dead broker (generous bound for a loaded CI box).
        assert elapsed < 5.0, f"10,000 calls took {elapsed:.1f}s with the broker down"
        assert tracker.get_error_performance_stats().dropped == 0
    finally:
        native_broker.start()
    assert tracker.flush(120) == 0
    messages = read_topics(settings.kafka_bootstrap, [settings.topics.event("render_failed")],
                           expected=10_000, timeout=120)
    decoder = Decoder()
    ids = [str(decoder.decode(m.value()).record["event_id"]) for m in messages]
    assert len(ids) == 10_000, f"{10_000 - len(set(ids))} lost"
    assert len(set(ids)) == 10_000, f"{len(ids) - len(set(ids))} duplicated"
    tracker.close()


def test_spool_carries_events_when_the_memory_queue_is_full(settings: Settings,
                                                            native_broker: LocalBroker) -> None:
    small = settings.replace(producer_queue_max=100)
    tracker = Tracker(small)
    native_broker.stop()
    try:
        for index in range(1_000):
            tracker.track_api_error("/api/x", 503, "down", f"q{index}", 1)
        stats = tracker.get_error_performance_stats()
        assert stats.spooled >= 800 and stats.dropped == 0
    finally:
        native_broker.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and tracker.get_error_performance_stats().spooled > 0:
        time.sleep(0.5)
    assert tracker.flush(60) == 0
    messages = read_topics(settings.kafka_bootstrap,
                           [settings.topics.event("api_error")], expected=1000)
    request_ids = {Decoder().decode(m.value()).record["request_id"] for m in messages}
    assert len(messages) == 1000 and len(request_ids) == 1000
    tracker.close()


def test_a_consumer_written_from_the_wire_format_alone(settings: Settings) -> None:
    """Plain confluent-kafka + fastavro + the .avsc files: no ept code on the read side."""
    tracker = Tracker(settings)
    tracker.track_slow_render("r9", "video", 45000, 30000, "tpl_z", (3840, 2160))
    assert tracker.flush(30) == 0
    [message] = read_topics(settings.kafka_bootstrap,
                           [settings.topics.event("slow_render")], expected=1)

    from fastavro.schema import fingerprint, to_parsing_canonical_form

    schema = json.loads((REPO / "schemas" / "slow_render.avsc").read_text())
    value = message.value()
    assert value[:2] == b"\xc3\x01"
    expected = bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))
    assert value[2:10] == expected
    record = schemaless_reader(io.BytesIO(value[10:]), parse_schema(schema), None)
    assert (record["render_id"], record["slowness_factor"], record["width"]) == (
        "r9", 1.5, 3840)
    tracker.close()


def test_schema_registry_framing_with_mock_registry(settings: Settings) -> None:
    registry = settings.replace(schema_registry_url="mock://ept-test")
    tracker = Tracker(registry)
    tracker.track_api_error("/api/render", 504, "Gateway timeout", "req_x", 30000)
    assert tracker.flush(30) == 0
    [message] = read_topics(settings.kafka_bootstrap,
                           [settings.topics.event("api_error")], expected=1)
    assert message.value()[0] == 0
    event = Decoder("mock://ept-test").decode(message.value())
    assert event.name == "api_error" and event.record["status_code"] == 504
    tracker.close()
