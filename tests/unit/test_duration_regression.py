"""The duration_regression rule: sketches, rule validation and judgements in event time."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ept.processors.worker.logic import durations
from ept.processors.worker.logic.alert_state import alert_notice
from ept.processors.worker.logic.event_time import Frontiers
from ept.processors.worker.logic.partition_judge import PartitionJudge
from ept.processors.worker.logic.records import Progress, ScopeState, Signal, SourceProgress
from ept.processors.worker.logic.rules import RulesError, parse_rules
from ept.processors.worker.logic.scope_evaluation import DecidedNotice, Evaluator, measured
from ept.processors.worker.logic.scopes import Scope, signals_of
from ept.processors.worker.logic.state_table import StateTable, stored_scopes

MINUTE_MS, HOUR_MS, DAY_MS = 60_000, 3_600_000, 86_400_000
START_MS = 20_000 * DAY_MS  # a UTC midnight
VIDEO = Scope("duration", "render_type", "video")

RULE = """
[[rules]]
name = "duration_regression"
kind = "duration_regression"
scopes = ["render_type"]
window_minutes = 60
min_samples = 30
severity = "medium"
action = "check_recent_deploys"
"""


def exact_quantile(values: list[float], q: float) -> float:
    """DDSketch's definition: the value of rank floor(q * (n - 1)) in sorted order."""
    return sorted(values)[math.floor(q * (len(values) - 1))]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=1.0, max_value=86_400_000.0), min_size=1, max_size=300),
       st.sampled_from([0.5, 0.9, 0.95, 0.99]))
def test_a_quantile_read_from_buckets_is_within_the_stated_accuracy(values: list[float],
                                                                    q: float) -> None:
    histogram: dict[str, int] = {}
    for value in values:
        bucket = durations.bucket_of(value)
        histogram[bucket] = histogram.get(bucket, 0) + 1
    estimate = durations.sketch([histogram]).get_quantile_value(q)
    exact = exact_quantile(values, q)
    assert abs(estimate - exact) <= durations.RELATIVE_ACCURACY * exact * 1.0001


def test_sketches_merge_by_adding_counters_and_stay_bounded() -> None:
    rng = random.Random(1)
    a = [rng.lognormvariate(8, 1) for _ in range(500)]
    b = [rng.lognormvariate(9, 0.5) for _ in range(500)]

    def histogram(values: list[float]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for value in values:
            counts[durations.bucket_of(value)] = counts.get(durations.bucket_of(value), 0) + 1
        return counts

    both = durations.sketch([histogram(a), histogram(b), {"failed": 3}])
    whole = durations.sketch([histogram(a + b)])
    assert both.count == whole.count == 1000
    for q in (0.5, 0.95, 0.99):
        assert both.get_quantile_value(q) == whole.get_quantile_value(q)
    # every duration, however absurd, lands in one of MAX_BUCKETS counters
    keys = {durations.bucket_of(v) for v in (-5, 0, 0.3, 1, 1e12, float("inf"), float("nan"))}
    assert keys <= {durations.bucket_of(durations.MIN_MS), durations.bucket_of(durations.MAX_MS)}
    assert 400 < durations.MAX_BUCKETS < 500  # 1 ms .. 1 day at 2%


def test_render_completed_signals_its_duration_per_render_type_and_template() -> None:
    signals = signals_of("render_completed", {"template_id": "t", "render_type": "video",
                                              "duration_ms": 1500.0})
    bucket = durations.bucket_of(1500.0)
    assert ("duration", Scope("duration", "render_type", "video").key, bucket) in signals
    assert ("duration", Scope("duration", "template_id", "t").key, bucket) in signals


def test_the_rule_has_the_issue_defaults_and_validates_its_fields() -> None:
    [rule] = parse_rules(RULE, "rules.toml")
    assert (rule.threshold, rule.resolve_threshold, rule.quantile, rule.baseline_days,
            rule.baseline_min_samples) == (1.5, 1.2, 0.95, 7, 100)
    bad = {
        'quantile = 1.5': "field 'quantile': must be between 0 and 1",
        'threshold = 0.9': "field 'threshold': a factor over the baseline must be > 1",
        'baseline_days = 0': "field 'baseline_days': must be 1..30",
        'scopes = ["endpoint"]': "'endpoint' is not a scope of duration_regression",
    }
    for line, message in bad.items():
        with pytest.raises(RulesError, match=message):
            parse_rules(RULE.replace('scopes = ["render_type"]', line)
                        if line.startswith("scopes") else RULE + line, "rules.toml")
    with pytest.raises(RulesError, match="field 'quantile': only for kind 'duration_regression'"):
        parse_rules(RULE.replace('kind = "duration_regression"', 'kind = "api_errors"')
                    .replace('scopes = ["render_type"]', "threshold = 3\nquantile = 0.9"),
                    "rules.toml")


def traffic(days: int, duration_at: object, every_ms: int = 30_000,
            seed: int = 7) -> list[tuple[int, float]]:
    """(event time, duration) every ``every_ms`` for ``days`` days (and one more hour)."""
    rng = random.Random(seed)
    end = START_MS + days * DAY_MS + HOUR_MS
    return [(t, duration_at(t, rng)) for t in range(START_MS, end, every_ms)]  # type: ignore[operator]


def judge_hour_by_hour(events: list[tuple[int, float]], hours_after: int = 1
                       ) -> tuple[list[DecidedNotice], ScopeState, Evaluator]:
    """Count the events hour by hour, judging each hour as it ends, and ``hours_after``
    the last one."""
    evaluator = Evaluator(parse_rules(RULE, "rules.toml"))
    state, notices = ScopeState(), []
    for hour_start in range(START_MS, events[-1][0] + hours_after * HOUR_MS, HOUR_MS):
        hour = [(t, "render_completed:0", offset, durations.bucket_of(d))
                for offset, (t, d) in enumerate(events) if hour_start <= t < hour_start + HOUR_MS]
        evaluator.add(VIDEO, state, Signal.of(VIDEO.key, hour))
        notices += evaluator.judge(VIDEO, state, hour_start + HOUR_MS)
    return notices, state, evaluator


def stable(t: int, rng: random.Random) -> float:
    return rng.lognormvariate(math.log(10_000), 0.25)  # ~10 s, with normal noise


def test_an_hour_at_twice_the_durations_after_a_stable_week_fires() -> None:
    incident = START_MS + 7 * DAY_MS

    def durations_at(t: int, rng: random.Random) -> float:
        return stable(t, rng) * (2 if t >= incident else 1)

    notices, _, _ = judge_hour_by_hour(traffic(7, durations_at), hours_after=2)
    # fired during the slow hour, re-notified an hour later; when the renders stop it is
    # not resolved (no renders is no evidence of a fix) but re-notified as "no data"
    assert [n.note.status for n in notices] == ["firing", "firing", "firing"]
    assert notices[2].note.no_data == "0 renders in 60m (min_samples 30)"
    assert not notices[1].note.no_data
    firing, renotified = notices[0], notices[1]
    # as soon as more than 5% of the window's renders are slow, with 99% confidence (the
    # Wilson lower bound: about 15 minutes in, at 30 renders a minute) ...
    assert incident < firing.at_ms <= incident + 20 * MINUTE_MS
    assert firing.note.value > 1.5
    # ... and an hour later, over a window of slow renders only, the p95 is twice its own
    assert 1.8 < renotified.note.value < 2.2
    summary = alert_notice(firing.rule, VIDEO.labels, firing.note, firing.at_ms).summary
    assert summary.startswith("Render duration p95 ") and "x its 7-day baseline (> 1.5x) over " \
        "60m for render_type=video: p95 " in summary, summary


def test_a_stable_week_with_noise_fires_nothing() -> None:
    notices, state, evaluator = judge_hour_by_hour(traffic(8, stable))
    assert notices == []
    assert len(state.blocks) <= evaluator.retain_blocks  # older blocks were dropped


def test_a_drift_of_ten_percent_a_day_is_measured_and_does_not_fire() -> None:
    """Each day's durations are 10% longer than the day before. Against the trailing
    week, today's p95 is ~1.2x (the baseline drifts along): below 1.5, so no alert."""
    def drifting(t: int, rng: random.Random) -> float:
        return stable(t, rng) * 1.1 ** ((t - START_MS) / DAY_MS)

    notices, state, _ = judge_hour_by_hour(traffic(7, drifting), hours_after=0)
    assert notices == []
    [rule] = parse_rules(RULE, "rules.toml")
    measurement = measured(rule, state, state.judged_s)
    assert measurement.samples >= 100 and 1.15 < measurement.value < 1.4, measurement


def test_without_a_baseline_nothing_fires() -> None:
    """A first day of renders, however slow, has nothing to be compared with."""
    notices, _, _ = judge_hour_by_hour(
        traffic(0, lambda t, rng: 100_000.0 if t > START_MS + 30 * MINUTE_MS else 1000.0))
    assert notices == []


def test_a_template_silent_for_longer_than_its_baseline_is_dropped_from_the_table() -> None:
    """Bounded memory: a duration scope outlives its last render by the baseline's days,
    no more; one that renders again keeps its state."""
    source = "render_completed:0"
    evaluator = Evaluator(parse_rules(RULE.replace('["render_type"]', '["template"]'),
                                      "rules.toml"))
    states: dict[str, object] = {}
    judge = PartitionJudge(evaluator, Frontiers({"render_completed": 1}, 0), states, [])
    gone, kept = Scope("duration", "template_id", "gone"), Scope("duration", "template_id", "kept")
    offset = 0
    for hour in range(10 * 24):
        at = START_MS + hour * HOUR_MS
        scopes = [kept] if hour >= 2 else [kept, gone]  # "gone" renders for two hours only
        for scope in scopes:
            offset += 1
            judge.handle(Signal.of(scope.key, [(at, source, offset, durations.bucket_of(9e3))]))
        judge.handle(Progress({source: SourceProgress(at + 1000, False)}, at))
        judge.save()
        if hour == 7 * 24:  # a week after its last render: still its baseline
            assert set(stored_scopes(states)) == {kept.key, gone.key}
    assert stored_scopes(states) == [kept.key]
    assert all(key.endswith(kept.key) for key in states)  # none of its parts left behind
    table = StateTable(states, evaluator.retain_s)
    assert 0 < len(table.load(kept.key).blocks) <= evaluator.retain_blocks


def test_an_unfixed_regression_stays_open_for_days() -> None:
    """Twice as slow from the end of a stable week on, never fixed: the blocks in which it
    fired stay out of its baseline, so three days later it still fires (a trailing
    baseline would have absorbed it after ~30 h and resolved it, still twice as slow)."""
    incident = START_MS + 7 * DAY_MS

    def durations_at(t: int, rng: random.Random) -> float:
        return stable(t, rng) * (2 if t >= incident else 1)

    notices, state, _ = judge_hour_by_hour(traffic(10, durations_at, every_ms=60_000),
                                           hours_after=0)
    assert [n.note.status for n in notices].count("resolved") == 0
    assert notices[0].note.status == "firing" and not notices[0].note.renotify
    assert all(n.note.renotify for n in notices[1:])
    assert len(notices) >= 3 * 24  # re-notified hourly for three days
    assert 1.8 < notices[-1].note.value < 2.2
    assert min(state.excluded) == incident // 1000 // (6 * 3600)
