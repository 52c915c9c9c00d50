"""The module-level API of ``ept``: each function acts on a default :class:`Tracker`,
created from the environment on first use (:func:`get_tracker`); :func:`configure`
replaces it.

Every ``track_*`` function returns in microseconds, never waits on the network and,
outside strict mode, never raises into the caller — not even when an ``EPT_`` setting is
invalid (tracking is then disabled and the problem logged once; see :class:`Tracker`).
"""

from __future__ import annotations

import threading
from typing import Any

from ept.measure import ApiMeasurement, RenderMeasurement
from ept.stats import ErrorPerformanceStats
from ept.tracker import Dimensions, Tracker

_default: Tracker | None = None
_default_lock = threading.Lock()


def get_tracker() -> Tracker:
    """The default tracker, created from the environment on first use. Raises
    SettingsError only in strict mode (``EPT_STRICT=true``) with an invalid setting."""
    global _default
    tracker = _default
    if tracker is None:
        with _default_lock:
            if _default is None:
                _default = Tracker()
            tracker = _default
    return tracker


def configure(**options: Any) -> Tracker:
    """Replace the default tracker with ``Tracker(**options)``; the old one is closed.

    Raises SettingsError in strict mode (``strict=True`` or ``EPT_STRICT=true``) when an
    ``EPT_`` setting of the SDK is invalid; otherwise tracking is disabled and the
    problem logged once."""
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
