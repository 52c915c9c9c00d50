import threading

import pytest

from ept.stats import StatsRecorder
from ept.thresholds import (
    PERFORMANCE_THRESHOLDS,
    Thresholds,
    calculate_error_rate,
    is_slow,
)


def test_specification_thresholds() -> None:
    assert PERFORMANCE_THRESHOLDS["render_still"] == 5000
    assert PERFORMANCE_THRESHOLDS["render_video"] == 30000
    assert PERFORMANCE_THRESHOLDS["api_call"] == 3000
    assert PERFORMANCE_THRESHOLDS["image_generation"] == 10000
    assert PERFORMANCE_THRESHOLDS["voice_generation"] == 15000
    with pytest.raises(TypeError):
        PERFORMANCE_THRESHOLDS["render_still"] = 1  # type: ignore[index]


def test_is_slow_is_strictly_greater() -> None:
    assert not is_slow("render_still", 5000)
    assert is_slow("render_still", 5000.1)
    assert is_slow("api_call", 3001)


def test_overrides_per_environment_and_template(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EPT_THRESHOLDS", '{"render_still": 8000, '
                       '"templates": {"tpl_heavy": {"render_still": 20000}}}')
    thresholds = Thresholds.from_environment()
    assert thresholds.threshold("render_still") == 8000
    assert thresholds.threshold("render_still", "tpl_heavy") == 20000
    assert thresholds.threshold("render_video", "tpl_heavy") == 30000
    assert thresholds.is_slow("render_still", 9000)
    assert not thresholds.is_slow("render_still", 9000, "tpl_heavy")


@pytest.mark.parametrize(("overrides", "message"), [
    ({"render_gif": 1}, "unknown operation 'render_gif'"),
    ({"render_still": 0}, "must be a number > 0"),
    ({"render_still": "fast"}, "must be a number > 0"),
])
def test_invalid_overrides_name_the_operation(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Thresholds(overrides)


def test_invalid_environment_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EPT_THRESHOLDS", "{nope")
    with pytest.raises(ValueError, match="EPT_THRESHOLDS: not valid JSON"):
        Thresholds.from_environment()


@pytest.mark.parametrize(("total", "errors", "rate"), [
    (100, 5, 5.0), (0, 0, 0.0), (3, 1, 33.33), (200, 200, 100.0), (7, 0, 0.0),
])
def test_error_rate(total: int, errors: int, rate: float) -> None:
    assert calculate_error_rate(total, errors) == rate


@pytest.mark.parametrize(("total", "errors"), [(-1, 0), (5, -1), (5, 6)])
def test_error_rate_rejects_impossible_counts(total: int, errors: int) -> None:
    with pytest.raises(ValueError):
        calculate_error_rate(total, errors)


def test_stats_are_exact_under_concurrent_threads() -> None:
    stats = StatsRecorder()
    per_thread = 20_000

    def work() -> None:
        for _ in range(per_thread):
            stats.record_event("render_failed")
            stats.record_event("api_error")
            stats.record_event("slow_render")
            stats.add("delivered")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snapshot = stats.snapshot()
    total = 8 * per_thread
    assert snapshot.renders_failed == snapshot.api_errors == snapshot.slow_renders == total
    assert snapshot.total_errors == 2 * total
    assert snapshot.total_performance_issues == total
    assert snapshot.delivered == total
    assert snapshot.as_spec_dict() == {
        "rendersFailed": total, "apiErrors": total, "slowRenders": total,
        "totalErrors": 2 * total, "totalPerformanceIssues": total,
    }
    stats.reset()
    assert stats.snapshot().total_errors == 0
