"""Measurement helpers, each usable three ways.

* As in the specification: ``complete = measure_render_performance(...)`` then
  ``complete(True)`` or ``complete(False, reason, message)``.
* As a context manager: ``with measure_render_performance(...):`` — an exception is
  classified, tracked and re-raised unchanged.
* As a decorator (sync or async functions): ``@measure_render_performance(...)``.

On success they emit the success event (and ``slow_render`` over the threshold); on
failure the failure event. A measurement completes at most once.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from ept.classification import classify_failure
from ept.core.http_status import is_error_status
from ept.ids import new_id
from ept.thresholds import operation_for_render_type
from ept.tracker import Dimensions, Tracker

F = TypeVar("F", bound=Callable[..., Any])


class _Measurement:
    """Shared timing, once-only completion and the three usage forms."""

    def __init__(self, tracker: Tracker) -> None:
        self._tracker = tracker
        self._started = time.perf_counter()
        self._completed = False

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self._started) * 1000.0

    def _claim(self) -> bool:
        if self._completed:
            return False
        self._completed = True
        return True

    def _restart(self) -> None:
        self._started = time.perf_counter()
        self._completed = False

    def _fail_with(self, error: BaseException) -> None:
        raise NotImplementedError

    def _succeed(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> _Measurement:
        self._restart()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if error is None:
            self._succeed()
        elif isinstance(error, Exception):
            self._fail_with(error)
        # BaseExceptions (KeyboardInterrupt, cancellation) are not render failures.

    def _fresh(self) -> _Measurement:
        raise NotImplementedError

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and not kwargs and callable(args[0]) and not isinstance(args[0], bool):
            return self._decorate(args[0])
        return self.complete(*args, **kwargs)

    def complete(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError

    def _decorate(self, function: F) -> F:
        if inspect.iscoroutinefunction(function):
            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with self._fresh():
                    return await function(*args, **kwargs)
            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._fresh():
                return function(*args, **kwargs)
        return wrapper  # type: ignore[return-value]


class RenderMeasurement(_Measurement):
    """Measures one render; see :func:`producers.measure_render_performance`."""

    def __init__(self, tracker: Tracker, render_id: str | None, render_type: str,
                 template_id: str, dimensions: Dimensions = None, retry_attempt: int = 0,
                 enforce_template_controls: bool = False) -> None:
        if enforce_template_controls:
            tracker.refuse_disabled_template(template_id)
        super().__init__(tracker)
        self.enforce_template_controls = enforce_template_controls
        self._fixed_render_id = render_id
        self.render_id = render_id or new_id()
        self.render_type = render_type
        self.template_id = template_id
        self.dimensions = dimensions
        self.retry_attempt = retry_attempt

    def _fresh(self) -> RenderMeasurement:
        return RenderMeasurement(self._tracker, self._fixed_render_id, self.render_type,
                                 self.template_id, self.dimensions, self.retry_attempt,
                                 self.enforce_template_controls)

    def complete(self, success: bool, reason: str | None = None,
                 error_message: str | None = None) -> None:
        """Record the outcome. ``reason`` defaults to the classification of the message."""
        if not self._claim():
            return
        duration = self.elapsed_ms()
        tracker = self._tracker
        if success:
            tracker.track_render_completed(self.render_id, self.template_id, self.render_type,
                                           duration, self.dimensions)
            try:
                operation = operation_for_render_type(self.render_type)
                threshold = tracker.slow_threshold(operation, self.template_id)
            except KeyError:
                return  # invalid render type: already rejected by track_render_completed
            if duration > threshold:
                tracker.track_slow_render(self.render_id, self.render_type, duration, threshold,
                                          self.template_id, self.dimensions)
            return
        message = error_message or "render failed"
        tracker.track_render_failed(
            self.render_id, reason or classify_failure(message), message, self.template_id,
            duration, self.retry_attempt, render_type=self.render_type,
        )

    def _succeed(self) -> None:
        self.complete(True)

    def _fail_with(self, error: BaseException) -> None:
        self.complete(False, classify_failure(error), f"{type(error).__name__}: {error}")


class ApiMeasurement(_Measurement):
    """Measures one API call; see :func:`producers.measure_api_performance`."""

    def __init__(self, tracker: Tracker, endpoint: str, request_id: str | None,
                 method: str = "GET", retry_attempt: int = 0) -> None:
        super().__init__(tracker)
        self.endpoint = endpoint
        self._fixed_request_id = request_id
        self.request_id = request_id or new_id()
        self.method = method
        self.retry_attempt = retry_attempt
        self.status_code: int | None = None

    def _fresh(self) -> ApiMeasurement:
        return ApiMeasurement(self._tracker, self.endpoint, self._fixed_request_id, self.method,
                              self.retry_attempt)

    def complete(self, success: bool, status_code: int | None = None,
                 error_message: str | None = None, retry_after_s: float | None = None) -> None:
        """Record the outcome. A 5xx or 429 status counts as an error even on ``success``."""
        if not self._claim():
            return
        duration = self.elapsed_ms()
        if success and status_code is not None and is_error_status(status_code):
            success = False
            error_message = error_message or f"HTTP {status_code}"
        if success:
            self._tracker.track_api_request_completed(
                self.endpoint, self.method, status_code or 200, duration, self.request_id)
            return
        self._tracker.track_api_error(
            self.endpoint, status_code, error_message or "request failed", self.request_id,
            duration, self.retry_attempt, method=self.method, retry_after_s=retry_after_s,
        )

    def _succeed(self) -> None:
        self.complete(True, self.status_code)

    def _fail_with(self, error: BaseException) -> None:
        self.complete(False, self.status_code, f"{type(error).__name__}: {error}")
