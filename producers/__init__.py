"""ept producer SDK: track render and API failures, slow renders and successes.

Module-level functions use a default :class:`Tracker` configured from ``EPT_*``
environment variables, created on first use; :func:`configure` replaces it. Every
function returns in microseconds, never waits on the network and, outside strict mode,
never raises into the caller.

    import ept

    complete = ept.measure_render_performance("render_002", "still", "template_product_002")
    try:
        render()
        complete(True)
    except Exception as error:
        complete(False, "memory_exceeded", str(error))
"""

from __future__ import annotations

import threading
from typing import Any

from ept.classification import (
    FAILURE_REASONS,
    classify_failure,
    register_failure_rule,
)
from ept.core.template_controls import TemplateDisabledError
from ept.measure import ApiMeasurement, RenderMeasurement
from ept.retries import (
    RetryPolicy,
    retry_attempts,
    retry_attempts_async,
    retrying,
    with_retries,
    with_retries_async,
)
from ept.sanitization import sanitize
from ept.stats import ErrorPerformanceStats
from ept.thresholds import (
    PERFORMANCE_THRESHOLDS,
    RENDER_TYPES,
    Thresholds,
    calculate_error_rate,
    is_slow,
)
from ept.tracker import SDK_VERSION, ConsentCheck, Dimensions, Tracker

_default: Tracker | None = None
_default_lock = threading.Lock()


def get_tracker() -> Tracker:
    """The default tracker, created from the environment on first use."""
    global _default
    tracker = _default
    if tracker is None:
        with _default_lock:
            if _default is None:
                _default = Tracker()
            tracker = _default
    return tracker


def configure(**options: Any) -> Tracker:
    """Replace the default tracker with ``Tracker(**options)``; the old one is closed."""
    global _default
    with _default_lock:
        old, _default = _default, Tracker(**options)
    if old is not None:
        old.close()
    return _default


def track_render_failed(render_id: str, reason: str, error_message: str, template_id: str,
                        duration_ms: float, retry_attempt: int = 0, **extra: Any) -> None:
    get_tracker().track_render_failed(render_id, reason, error_message, template_id,
                                      duration_ms, retry_attempt, **extra)


def track_api_error(endpoint: str, status_code: int | None, error_message: str,
                    request_id: str | None = None, duration_ms: float = 0.0,
                    retry_attempt: int = 0, **extra: Any) -> None:
    get_tracker().track_api_error(endpoint, status_code, error_message, request_id,
                                  duration_ms, retry_attempt, **extra)


def track_slow_render(render_id: str, render_type: str, duration_ms: float, threshold_ms: float,
                      template_id: str, dimensions: Dimensions = None, **extra: Any) -> None:
    get_tracker().track_slow_render(render_id, render_type, duration_ms, threshold_ms,
                                    template_id, dimensions, **extra)


def track_render_completed(render_id: str, template_id: str, render_type: str,
                           duration_ms: float, dimensions: Dimensions = None,
                           **extra: Any) -> None:
    get_tracker().track_render_completed(render_id, template_id, render_type, duration_ms,
                                         dimensions, **extra)


def track_api_request_completed(endpoint: str, method: str, status_code: int,
                                duration_ms: float, request_id: str | None = None,
                                **extra: Any) -> None:
    get_tracker().track_api_request_completed(endpoint, method, status_code, duration_ms,
                                              request_id, **extra)


def measure_render_performance(render_id: str | None = None, render_type: str = "still",
                               template_id: str = "unknown", dimensions: Dimensions = None,
                               retry_attempt: int = 0, *,
                               enforce_template_controls: bool = False) -> RenderMeasurement:
    """Start measuring a render: a completion callable, context manager or decorator.

    As a decorator without ``render_id``, each call gets a generated render id. With
    ``enforce_template_controls``, a disabled template raises TemplateDisabledError here,
    before the render runs (as a decorator: when decorating and at each call), and the
    refusal is counted.
    """
    return RenderMeasurement(get_tracker(), render_id, render_type, template_id, dimensions,
                             retry_attempt, enforce_template_controls)


def is_template_enabled(template_id: str) -> bool:
    """False when ``template_id`` is disabled; a local lookup that never blocks (see
    :meth:`Tracker.is_template_enabled`)."""
    return get_tracker().is_template_enabled(template_id)


def wait_for_template_controls(timeout_s: float = 10.0) -> bool:
    """Block until the template controls are loaded (start-up), or ``timeout_s`` passed."""
    return get_tracker().wait_for_template_controls(timeout_s)


def measure_api_performance(endpoint: str, request_id: str | None = None, method: str = "GET",
                            retry_attempt: int = 0) -> ApiMeasurement:
    """Start measuring an API call: a completion callable, context manager or decorator."""
    return ApiMeasurement(get_tracker(), endpoint, request_id, method, retry_attempt)


def get_error_performance_stats() -> ErrorPerformanceStats:
    return get_tracker().get_error_performance_stats()


def reset_error_performance_stats() -> None:
    get_tracker().reset_error_performance_stats()


def flush(timeout: float | None = None) -> int:
    """Wait for queued events to be delivered; returns how many remain."""
    return get_tracker().flush(timeout)


__all__ = [
    "FAILURE_REASONS",
    "PERFORMANCE_THRESHOLDS",
    "RENDER_TYPES",
    "SDK_VERSION",
    "ApiMeasurement",
    "ConsentCheck",
    "ErrorPerformanceStats",
    "RenderMeasurement",
    "RetryPolicy",
    "TemplateDisabledError",
    "Thresholds",
    "Tracker",
    "calculate_error_rate",
    "classify_failure",
    "configure",
    "flush",
    "get_error_performance_stats",
    "get_tracker",
    "is_slow",
    "is_template_enabled",
    "measure_api_performance",
    "measure_render_performance",
    "register_failure_rule",
    "reset_error_performance_stats",
    "retry_attempts",
    "retry_attempts_async",
    "retrying",
    "sanitize",
    "track_api_error",
    "track_api_request_completed",
    "track_render_completed",
    "track_render_failed",
    "track_slow_render",
    "wait_for_template_controls",
    "with_retries",
    "with_retries_async",
]
