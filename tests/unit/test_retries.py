"""Retries by failure type: which failures are retried, how often, with what pauses, and
what is tracked for each attempt."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ept import (
    RetryPolicy,
    Tracker,
    retry_attempts,
    retrying,
    with_retries,
    with_retries_async,
)
from ept.core.settings import load_settings
from ept.schemas import Decoder
from tests.recording import RecordingDelivery

ERRORS = {  # an exception of each reason, as classify_failure sees it
    "timeout": lambda: TimeoutError("render timed out"),
    "memory_exceeded": lambda: MemoryError("out of memory"),
    "codec_error": lambda: RuntimeError("codec failure in ffmpeg"),
    "unknown": lambda: RuntimeError("boom"),
    "invalid_composition": lambda: ValueError("invalid composition"),
    "missing_asset": lambda: FileNotFoundError("asset.png"),
}


def tracker_and_events() -> tuple[Tracker, RecordingDelivery]:
    delivery = RecordingDelivery()
    tracker = Tracker(load_settings(topic_prefix="unit."), strict=True, service="svc",
                      environment="test", delivery=delivery)  # type: ignore[arg-type]
    tracker.is_template_enabled = lambda template_id: True  # type: ignore[method-assign]
    return tracker, delivery


def tracked(delivery: RecordingDelivery) -> list[tuple[str, str | None, int | None]]:
    """(event, reason, retry_attempt) of each tracked event, in order."""
    decoder = Decoder()
    out = []
    for topic, _, value in delivery.sent:
        record = decoder.decode(value).record
        out.append((topic.split(".", 1)[1], record.get("reason"), record.get("retry_attempt")))
    return out


class Flaky:
    """Raises the given reasons' exceptions in turn, then returns "done"."""

    def __init__(self, *reasons: str) -> None:
        self.reasons, self.calls, self.raised = list(reasons), 0, []

    def __call__(self, scene: str = "") -> str:
        self.calls += 1
        if self.reasons:
            error = ERRORS[self.reasons.pop(0)]()
            self.raised.append(error)
            raise error
        return f"done {scene}".strip()


def test_transient_failures_are_retried_and_each_attempt_tracked() -> None:
    tracker, delivery = tracker_and_events()
    pauses: list[float] = []
    render = Flaky("timeout", "timeout")
    assert with_retries(render, "s1", template_id="tpl", tracker=tracker,
                        sleep=pauses.append, render_id="r1") == "done s1"
    assert render.calls == 3 and len(pauses) == 2
    assert tracked(delivery) == [("render_failed", "timeout", 0),
                                 ("render_failed", "timeout", 1),
                                 ("render_completed", None, None)]
    # a limit counts every attempt so far: a codec error on the 2nd of 2 allowed ends it
    with pytest.raises(RuntimeError, match="codec"):
        with_retries(Flaky("timeout", "codec_error"), template_id="tpl", tracker=tracker,
                     sleep=pauses.append)


def test_permanent_failures_are_never_retried_and_raise_unchanged() -> None:
    tracker, _ = tracker_and_events()
    for reason in ("invalid_composition", "missing_asset"):
        render = Flaky(reason)
        with pytest.raises(Exception) as raised:
            with_retries(render, template_id="tpl", tracker=tracker, sleep=lambda s: None)
        assert raised.value is render.raised[0] and render.calls == 1


def test_the_last_failure_is_re_raised_once_attempts_run_out() -> None:
    tracker, _ = tracker_and_events()
    render = Flaky("timeout", "timeout", "timeout", "timeout")
    with pytest.raises(TimeoutError) as raised:
        with_retries(render, template_id="tpl", tracker=tracker, sleep=lambda s: None)
    assert render.calls == 3 and raised.value is render.raised[-1]


def test_a_template_disabled_meanwhile_is_not_retried() -> None:
    tracker, _ = tracker_and_events()
    tracker.is_template_enabled = lambda template_id: False  # type: ignore[method-assign]
    render = Flaky("timeout")
    with pytest.raises(TimeoutError):
        with_retries(render, template_id="tpl", tracker=tracker, sleep=lambda s: None)
    assert render.calls == 1


def test_decorator_loop_and_async_forms() -> None:
    tracker, _ = tracker_and_events()
    flaky = Flaky("memory_exceeded")

    @retrying(template_id="tpl", tracker=tracker, sleep=lambda s: None)
    def render(scene: str) -> str:
        return flaky(scene)

    assert render("a") == "done a" and flaky.calls == 2

    loop_render, calls = Flaky("timeout", "timeout"), []
    for attempt in retry_attempts(template_id="tpl", tracker=tracker, sleep=lambda s: None):
        with attempt:
            calls.append(attempt.number)
            loop_render()
    assert calls == [0, 1, 2]

    async_flaky = Flaky("timeout")

    async def render_async(scene: str) -> str:
        return async_flaky(scene)

    policy = RetryPolicy(base_delay_s=0.0)
    assert asyncio.run(with_retries_async(render_async, "b", template_id="tpl",
                                          tracker=tracker, policy=policy)) == "done b"
    decorated = retrying(template_id="tpl", tracker=tracker, policy=policy)(render_async)
    async_flaky.reasons = ["codec_error"]
    assert asyncio.run(decorated("c")) == "done c" and async_flaky.calls == 4


def test_pauses_back_off_exponentially_with_full_jitter() -> None:
    policy = RetryPolicy(attempts={"timeout": 6}, base_delay_s=1.0, multiplier=2.0,
                         max_delay_s=5.0)
    rng = random.Random(3)
    for retry, ceiling in enumerate([1.0, 2.0, 4.0, 5.0, 5.0], start=1):
        pauses = [policy.delay_s(retry, rng) for _ in range(200)]
        assert all(0.0 <= pause <= ceiling for pause in pauses)
        assert max(pauses) > 0.8 * ceiling  # jitter spreads over the whole range
    with pytest.raises(ValueError, match="unknown reason 'flaky'"):
        RetryPolicy(attempts={"flaky": 2})
    with pytest.raises(ValueError, match="must be >= 1"):
        RetryPolicy(attempts={"timeout": 0})


reasons = st.sampled_from(sorted(ERRORS))


@settings(max_examples=200, deadline=None)
@given(limits=st.dictionaries(reasons, st.integers(1, 4)),
       failures=st.lists(reasons, max_size=8))
def test_attempts_never_exceed_the_policy(limits: dict[str, int], failures: list[str]) -> None:
    """Attempt n + 1 happens only if attempt n failed with a reason allowing more than
    n + 1 attempts; so never more than the largest limit."""
    policy = RetryPolicy(attempts=limits, base_delay_s=0.0)
    tracker, _ = tracker_and_events()
    render = Flaky(*failures)
    outcome: Any
    try:
        outcome = with_retries(render, template_id="tpl", tracker=tracker, policy=policy,
                               sleep=lambda s: None)
    except Exception as error:
        outcome = error
    expected = 1
    while expected <= len(failures) and expected < policy.attempts_for(failures[expected - 1]):
        expected += 1
    assert render.calls == expected
    assert render.calls <= max([1, *limits.values()])
    if render.calls <= len(failures):
        assert outcome is render.raised[-1]  # the last failure, unchanged
    else:
        assert outcome == "done"
