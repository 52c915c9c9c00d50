"""Slow thresholds tuned on the control topic: records, precedence over static ones, and
the suggestions: rounded, shown next to today's thresholds, applied as tuned ones."""

from __future__ import annotations

import datetime as dt

import pytest

from ept.processors.storage.slow_thresholds import (
    Suggestion,
    as_thresholds,
    in_force_today,
    quantile_label,
    round_up,
)
from ept.threshold_controls import BadSlowThreshold, SlowThreshold
from ept.thresholds import Thresholds


def test_a_threshold_round_trips_and_is_keyed_by_operation_and_template() -> None:
    one = SlowThreshold("render_video", "tpl_1", 42_000.0, "perf-team", 1, "p95 of 900")
    assert one.key == "render_video/tpl_1"
    assert SlowThreshold.decode(one.encode()) == one
    assert SlowThreshold("render_video", None, None, "x", 1).key == "render_video"


@pytest.mark.parametrize(("payload", "message"), [
    (b"{", "not JSON"),
    (b"[]", "not a JSON object"),
    (b'{"operation": "render_video"}', "missing fields: template_id, threshold_ms, by, at_ms"),
    (b'{"operation": "render_gif", "template_id": null, "threshold_ms": 5, "by": "x", '
     b'"at_ms": 1}', "operation: must be one of render_still"),
    (b'{"operation": "render_video", "template_id": null, "threshold_ms": -5, "by": "x", '
     b'"at_ms": 1}', "threshold_ms: must be a number > 0, got -5"),
    (b'{"operation": "render_video", "template_id": "", "threshold_ms": 5, "by": "x", '
     b'"at_ms": 1}', "template_id: must not be empty"),
])
def test_a_bad_record_is_refused_with_what_is_wrong(payload: bytes, message: str) -> None:
    with pytest.raises(BadSlowThreshold) as error:
        SlowThreshold.decode(payload)
    assert message in str(error.value)


def test_tuned_thresholds_win_at_their_own_reach() -> None:
    static = Thresholds({"render_video": 40_000}, {"tpl_static": {"render_video": 50_000}})
    tuned = {("render_video", "tpl_tuned"): 20_000.0, ("render_video", None): 35_000.0}
    assert static.threshold("render_video", "tpl_tuned", tuned) == 20_000  # tuned template
    assert static.threshold("render_video", "tpl_static", tuned) == 50_000  # static template
    assert static.threshold("render_video", "tpl_other", tuned) == 35_000  # tuned operation
    assert static.threshold("render_video", "tpl_other") == 40_000  # static operation
    assert static.threshold("render_still", "tpl_tuned", tuned) == 5_000  # the default


@pytest.mark.parametrize(("ms", "rounded"), [(23_412, 24_000), (50, 50), (50.2, 51),
                                              (7.3, 8), (0.2, 1), (120_000, 120_000)])
def test_suggestions_round_up_to_two_significant_digits(ms: float, rounded: float) -> None:
    assert round_up(ms) == rounded


SUGGESTIONS = [Suggestion("tpl_tuned", "render_video", 120, 18_312.5, 19_000),
               Suggestion("tpl_static", "render_video", 400, 41_000.0, 41_000),
               Suggestion("tpl_other", "render_still", 20, 50.0, 50)]


def test_each_suggestion_is_shown_next_to_the_threshold_in_force_today() -> None:
    static = Thresholds({"render_video": 40_000}, {"tpl_static": {"render_video": 50_000}})
    tuned = {("render_video", "tpl_tuned"): 20_000.0, ("render_still", None): 7_000.0,
             ("render_video", "tpl_other"): 1.0}
    assert in_force_today(SUGGESTIONS, static, tuned) == [20_000, 50_000, 7_000]
    assert in_force_today(SUGGESTIONS, static, {}) == [40_000, 50_000, 5_000]


def test_applied_suggestions_are_tuned_thresholds_that_say_what_they_come_from() -> None:
    since = dt.datetime(2026, 11, 29, 10, 0, 59, tzinfo=dt.UTC)
    applied = as_thresholds(SUGGESTIONS[:2], 0.95, since, "perf-team", 1_700_000_000_000)
    assert [(t.key, t.threshold_ms, t.by, t.at_ms) for t in applied] == [
        ("render_video/tpl_tuned", 19_000, "perf-team", 1_700_000_000_000),
        ("render_video/tpl_static", 41_000, "perf-team", 1_700_000_000_000)]
    assert applied[0].reason == "p95 of 120 renders since 2026-11-29 10:00 UTC"
    assert quantile_label(0.999) == "p99.9"
