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

The names below are imported on first use (PEP 562): ``import ept.schemas`` or
``import ept.core.settings`` loads neither the tracker nor confluent_kafka.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what mypy and IDEs see; at run time, __getattr__ below
    from ept.classification import FAILURE_REASONS, classify_failure, register_failure_rule
    from ept.core.template_controls import TemplateDisabledError
    from ept.default import (
        configure,
        flush,
        get_error_performance_stats,
        get_tracker,
        is_template_enabled,
        measure_api_performance,
        measure_render_performance,
        reset_error_performance_stats,
        track_api_error,
        track_api_request_completed,
        track_render_completed,
        track_render_failed,
        track_slow_render,
        wait_for_template_controls,
    )
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

# The module defining each public name (the names imported above, and __all__).
_MODULES: dict[str, tuple[str, ...]] = {
    "ept.classification": ("FAILURE_REASONS", "classify_failure", "register_failure_rule"),
    "ept.core.template_controls": ("TemplateDisabledError",),
    "ept.default": ("configure", "flush", "get_error_performance_stats", "get_tracker",
        "is_template_enabled", "measure_api_performance", "measure_render_performance",
        "reset_error_performance_stats", "track_api_error", "track_api_request_completed",
        "track_render_completed", "track_render_failed", "track_slow_render",
        "wait_for_template_controls"),
    "ept.measure": ("ApiMeasurement", "RenderMeasurement"),
    "ept.retries": ("RetryPolicy", "retry_attempts", "retry_attempts_async", "retrying",
        "with_retries", "with_retries_async"),
    "ept.sanitization": ("sanitize",),
    "ept.stats": ("ErrorPerformanceStats",),
    "ept.thresholds": ("PERFORMANCE_THRESHOLDS", "RENDER_TYPES", "Thresholds",
        "calculate_error_rate", "is_slow"),
    "ept.tracker": ("SDK_VERSION", "ConsentCheck", "Dimensions", "Tracker"),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "FAILURE_REASONS",
    "PERFORMANCE_THRESHOLDS",
    "RENDER_TYPES",
    "SDK_VERSION",
    "ApiMeasurement",
    "ConsentCheck",
    "Dimensions",
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

def __getattr__(name: str) -> Any:
    """The public ``name``, imported from its module on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ept' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
