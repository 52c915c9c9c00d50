"""Tracker logic (validation, consent, measurement) with deliveries recorded in memory."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ept import Thresholds, Tracker
from ept.core.settings import load_settings
from ept.schemas import Decoder
from tests.recording import RecordingDelivery


def make_tracker(strict: bool = True, **options: Any) -> tuple[Tracker, RecordingDelivery]:
    delivery = RecordingDelivery()
    tracker = Tracker(load_settings(topic_prefix="unit."), strict=strict, service="svc",
                      environment="test", delivery=delivery, **options)  # type: ignore[arg-type]
    return tracker, delivery


def decoded(delivery: RecordingDelivery) -> list[tuple[str, str, dict[str, Any]]]:
    decoder = Decoder()
    return [(topic, (key or b"").decode(), decoder.decode(value).record)
            for topic, key, value in delivery.sent]


def test_render_failed_is_encoded_with_envelope_topic_and_key() -> None:
    tracker, delivery = make_tracker()
    tracker.track_render_failed("render_001", "timeout", "timed out after 30 s",
                                "template_hero_001", 30000, 0)
    [(topic, key, record)] = decoded(delivery)
    assert topic == "unit.render_failed" and key == "template_hero_001"
    assert record["service"] == "svc" and record["environment"] == "test"
    assert record["reason"] == "timeout" and record["duration_ms"] == 30000
    assert record["user_id"] is None
    assert tracker.get_error_performance_stats().renders_failed == 1


@pytest.mark.parametrize(("call", "error", "argument"), [
    (lambda t: t.track_render_failed("r", "exploded", "m", "t", 1), ValueError, "reason"),
    (lambda t: t.track_render_failed("r", "timeout", "m", "t", -5), ValueError, "duration_ms"),
    (lambda t: t.track_render_failed("r", "timeout", "m", "t", "5"), TypeError, "duration_ms"),
    (lambda t: t.track_render_failed("", "timeout", "m", "t", 1), ValueError, "render_id"),
    (lambda t: t.track_render_failed("r", "timeout", "m", None, 1), TypeError, "template_id"),
    (lambda t: t.track_render_failed("r", "timeout", 42, "t", 1), TypeError, "error_message"),
    (lambda t: t.track_render_failed("r", "timeout", "m", "t", 1, -1), ValueError,
     "retry_attempt"),
    (lambda t: t.track_api_error("/x", 700, "m"), ValueError, "status_code"),
    (lambda t: t.track_api_error("", 500, "m"), ValueError, "endpoint"),
    (lambda t: t.track_slow_render("r", "gif", 10, 5, "t"), ValueError, "render_type"),
    (lambda t: t.track_slow_render("r", "still", 10, 0, "t"), ValueError, "threshold_ms"),
    (lambda t: t.track_render_completed("r", "t", "still", 1, {"width": -1, "height": 2}),
     ValueError, "width"),
    (lambda t: t.track_render_completed("r", "t", "still", 1, "1920x1080"), TypeError,
     "dimensions"),
    (lambda t: t.track_api_request_completed("/x", "GET", 200, float("nan")), ValueError,
     "duration_ms"),
])
def test_strict_mode_names_the_bad_argument(call, error, argument) -> None:  # type: ignore[no-untyped-def]
    tracker, delivery = make_tracker(strict=True)
    with pytest.raises(error, match=argument):
        call(tracker)
    assert delivery.sent == []

    lenient, lenient_delivery = make_tracker(strict=False)
    call(lenient)  # never raises
    assert lenient_delivery.sent == []
    assert lenient.get_error_performance_stats().rejected == 1


def test_messages_are_sanitized_and_request_ids_generated() -> None:
    tracker, delivery = make_tracker()
    tracker.track_api_error("/api/render", 500, "upstream said: Bearer abcdefghijklmnop", None, 12)
    [(_, key, record)] = decoded(delivery)
    assert key == "/api/render"
    assert "abcdefghijklmnop" not in record["error_message"]
    assert len(record["request_id"]) == 36 and record["rate_limited"] is False


def test_identifiers_lose_secrets_but_keep_their_ids() -> None:
    tracker, delivery = make_tracker()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    tracker.track_api_error("/users/bob@example.com/orders", 500, "m", trace_id, 1)
    tracker.track_render_failed("r1", "timeout", "m", "tpl?token=abcdef123", 1.0)
    (_, api_key, api), (_, render_key, render) = decoded(delivery)
    assert api["endpoint"] == api_key == "/users/[REDACTED:email]/orders"
    assert api["request_id"] == trace_id  # a 32-hex trace id is an id, not a secret
    assert render["template_id"] == render_key == "tpl?token=[REDACTED]"


def test_rate_limiting_is_recognised() -> None:
    tracker, delivery = make_tracker()
    tracker.track_api_error("api.openai.com/v1/images", 429, "Too Many Requests", "r1", 80)
    tracker.track_api_error("api.openai.com/v1/images", 503, "busy", "r2", 80, retry_after_s=2)
    tracker.track_api_error("api.openai.com/v1/images", 503, "down", "r3", 80)
    assert [r["rate_limited"] for _, _, r in decoded(delivery)] == [True, True, False]


def test_consent_keeps_or_drops_only_the_user_fields() -> None:
    consenting = {"u1"}
    tracker, delivery = make_tracker(consent=lambda user, account: user in consenting)
    tracker.track_render_failed("r1", "timeout", "m", "t", 1, user_id="u1", account_id="a1")
    tracker.track_render_failed("r2", "timeout", "m", "t", 1, user_id="u2", account_id="a2")
    no_callback, delivery2 = make_tracker()
    no_callback.track_render_failed("r3", "timeout", "m", "t", 1, user_id="u1", account_id="a1")
    records = [r for _, _, r in decoded(delivery) + decoded(delivery2)]
    assert [(r["render_id"], r["user_id"], r["account_id"]) for r in records] == [
        ("r1", "u1", "a1"), ("r2", None, None), ("r3", None, None)]


def test_measure_render_three_ways_and_slow_render() -> None:
    tracker, delivery = make_tracker(thresholds=Thresholds({"render_still": 0.0001}))
    from ept.measure import RenderMeasurement

    complete = RenderMeasurement(tracker, "r1", "still", "t1")
    complete(True)
    complete(False, "timeout", "late")  # completes at most once

    with pytest.raises(MemoryError), RenderMeasurement(tracker, "r2", "video", "t2"):
        raise MemoryError("Memory limit exceeded")

    @RenderMeasurement(tracker, None, "still", "t3")
    def render(x: int) -> int:
        return x * 2

    assert render(21) == 42

    @RenderMeasurement(tracker, None, "batch", "t4")
    async def render_async() -> None:
        raise FileNotFoundError("Missing image logo.png")

    with pytest.raises(FileNotFoundError):
        asyncio.run(render_async())

    events = [(topic.split(".")[1], r.get("template_id"), r.get("reason"))
              for topic, _, r in decoded(delivery)]
    assert events == [
        ("render_completed", "t1", None), ("slow_render", "t1", None),
        ("render_failed", "t2", "memory_exceeded"),
        ("render_completed", "t3", None), ("slow_render", "t3", None),
        ("render_failed", "t4", "missing_asset"),
    ]


def test_measure_api_treats_5xx_as_error() -> None:
    tracker, delivery = make_tracker()
    from ept.measure import ApiMeasurement

    ApiMeasurement(tracker, "/api/render", "q1", "POST")(True, 201)
    ApiMeasurement(tracker, "/api/render", "q2", "POST")(True, 502)
    ApiMeasurement(tracker, "/api/render", "q3", "POST")(False, None, "connection reset")
    with pytest.raises(TimeoutError), ApiMeasurement(tracker, "/api/x", None):
        raise TimeoutError("read timeout")
    events = [(topic.split(".")[1], r["status_code"]) for topic, _, r in decoded(delivery)]
    assert events == [("api_request_completed", 201), ("api_error", 502), ("api_error", None),
                      ("api_error", None)]
