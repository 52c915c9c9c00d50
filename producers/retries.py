"""Retries by failure type: a failed render is retried when its reason is transient.

Transient reasons (``timeout``, ``memory_exceeded``, ``codec_error``) are retried with
exponential backoff and full jitter, up to a per-reason number of attempts; permanent
ones (``invalid_composition``, ``missing_asset``) never are. Every attempt is measured and
tracked like ``measure_render_performance`` does, with its ``retry_attempt``; a template
disabled meanwhile (the kill switch) is not retried; the last exception is re-raised
unchanged. Three forms, each sync and async::

    with_retries(render, scene, template_id="tpl_1")           # call it now
    await with_retries_async(render_async, scene, template_id="tpl_1")

    @retrying(template_id="tpl_1", policy=RetryPolicy(...))    # a decorator
    def render(scene): ...

    for attempt in retry_attempts(template_id="tpl_1"):       # a loop of attempts
        with attempt:
            render(scene)
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, ParamSpec, TypeVar

from ept.classification import FAILURE_REASONS, classify_failure
from ept.ids import new_id
from ept.measure import RenderMeasurement
from ept.tracker import Dimensions, Tracker

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_ATTEMPTS: Mapping[str, int] = MappingProxyType({
    # total attempts (the first included) per reason
    "timeout": 3, "memory_exceeded": 2, "codec_error": 2, "unknown": 2,
    "invalid_composition": 1, "missing_asset": 1,
})


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts each failure reason gets, and the pause before each retry:
    ``uniform(0, min(max_delay_s, base_delay_s * multiplier ** (retry - 1)))`` (full
    jitter, so many failing workers do not retry in step). Raises ValueError for an
    unknown reason or a negative figure."""

    attempts: Mapping[str, int] = field(default_factory=lambda: DEFAULT_ATTEMPTS)
    base_delay_s: float = 0.5
    multiplier: float = 2.0
    max_delay_s: float = 30.0

    def __post_init__(self) -> None:
        for reason, count in self.attempts.items():
            if reason not in FAILURE_REASONS:
                raise ValueError(f"attempts: unknown reason {reason!r} "
                                 f"(one of {', '.join(FAILURE_REASONS)})")
            if count < 1:
                raise ValueError(f"attempts[{reason!r}]: must be >= 1, got {count}")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or self.multiplier < 1:
            raise ValueError("delays must be >= 0 and the multiplier >= 1")

    def attempts_for(self, reason: str) -> int:
        return self.attempts.get(reason, 1)

    def delay_s(self, retry: int, rng: random.Random) -> float:
        """The pause before retry number ``retry`` (1 for the second attempt)."""
        ceiling = min(self.max_delay_s, self.base_delay_s * self.multiplier ** (retry - 1))
        return rng.uniform(0.0, ceiling)


class Attempt:
    """One attempt of :func:`retry_attempts`: a context manager that measures and tracks
    it; a failure is swallowed when another attempt follows, and re-raised otherwise."""

    def __init__(self, loop: _Retrying, number: int) -> None:
        self._loop, self.number = loop, number

    def __enter__(self) -> Attempt:
        self._measurement = self._loop.measurement(self.number)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> bool:
        if error is None:
            self._measurement.complete(True)
            self._loop.done = True
            return False
        if not isinstance(error, Exception):
            return False  # KeyboardInterrupt, cancellation: not a render failure
        reason = classify_failure(error)
        self._measurement.complete(False, reason, f"{type(error).__name__}: {error}")
        return self._loop.retry_after(reason, self.number)

    async def __aenter__(self) -> Attempt:
        return self.__enter__()

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> bool:
        return self.__exit__(kind, error, traceback)


class _Retrying:
    """The state of one render's attempts."""

    def __init__(self, tracker: Tracker, policy: RetryPolicy, render_id: str | None,
                 template_id: str, render_type: str, dimensions: Dimensions,
                 rng: random.Random | None) -> None:
        self._tracker, self._policy = tracker, policy
        self._render_id = render_id or new_id()
        self._template_id, self._render_type, self._dimensions = (
            template_id, render_type, dimensions)
        self._rng = rng or random.Random()
        self.done = False
        self.pause_s = 0.0

    def measurement(self, number: int) -> RenderMeasurement:
        return RenderMeasurement(self._tracker, self._render_id, self._render_type,
                                 self._template_id, self._dimensions, retry_attempt=number)

    def retry_after(self, reason: str, number: int) -> bool:
        """Whether a failure of attempt ``number`` (0 first) with ``reason`` is retried;
        sets the pause before it."""
        if number + 1 >= self._policy.attempts_for(reason):
            return False
        if not self._tracker.is_template_enabled(self._template_id):
            return False  # disabled meanwhile: the render would be refused anyway
        self.pause_s = self._policy.delay_s(number + 1, self._rng)
        return True

    def attempts(self) -> Iterator[Attempt]:
        number = 0
        while not self.done:
            yield Attempt(self, number)
            if self.done:
                return
            number += 1


def _retrying(tracker: Tracker | None, policy: RetryPolicy | None, render_id: str | None,
              template_id: str, render_type: str, dimensions: Dimensions,
              rng: random.Random | None) -> _Retrying:
    from ept.default import get_tracker

    return _Retrying(tracker or get_tracker(), policy or RetryPolicy(), render_id,
                     template_id, render_type, dimensions, rng)


def retry_attempts(*, render_id: str | None = None, template_id: str = "unknown",
                   render_type: str = "still", dimensions: Dimensions = None,
                   policy: RetryPolicy | None = None, tracker: Tracker | None = None,
                   sleep: Callable[[float], None] = time.sleep,
                   rng: random.Random | None = None) -> Iterator[Attempt]:
    """The attempts of one render; run each inside ``with attempt:``. Pauses (blocks, with
    ``sleep``) between them. The loop ends after a success, or re-raises the last failure."""
    loop = _retrying(tracker, policy, render_id, template_id, render_type, dimensions, rng)
    for attempt in loop.attempts():
        yield attempt
        if not loop.done:
            sleep(loop.pause_s)


async def retry_attempts_async(*, render_id: str | None = None, template_id: str = "unknown",
                               render_type: str = "still", dimensions: Dimensions = None,
                               policy: RetryPolicy | None = None,
                               tracker: Tracker | None = None,
                               rng: random.Random | None = None) -> AsyncIterator[Attempt]:
    """:func:`retry_attempts` for ``async for`` and ``async with``: pauses with
    ``asyncio.sleep``."""
    loop = _retrying(tracker, policy, render_id, template_id, render_type, dimensions, rng)
    for attempt in loop.attempts():
        yield attempt
        if not loop.done:
            await asyncio.sleep(loop.pause_s)


def with_retries(render: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``render(*args, **kwargs)`` with retries; returns its result or re-raises its
    last exception unchanged. Keyword arguments of :func:`retry_attempts` (``template_id``,
    ``policy``, ...) are taken out of ``kwargs``."""
    options = {name: kwargs.pop(name) for name in _OPTIONS if name in kwargs}
    for attempt in retry_attempts(**options):
        with attempt:
            return render(*args, **kwargs)
    raise AssertionError("unreachable: the last attempt returns or raises")


async def with_retries_async(render: Callable[..., Awaitable[T]], *args: Any,
                             **kwargs: Any) -> T:
    """:func:`with_retries` for a coroutine function."""
    options = {name: kwargs.pop(name) for name in _OPTIONS if name in kwargs}
    async for attempt in retry_attempts_async(**{k: v for k, v in options.items()
                                                 if k != "sleep"}):
        async with attempt:
            return await render(*args, **kwargs)
    raise AssertionError("unreachable: the last attempt returns or raises")


def retrying(**options: Any) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """A decorator: each call of the function (sync or async) is retried per ``options``
    (those of :func:`retry_attempts`)."""

    def decorate(function: Callable[P, T]) -> Callable[P, T]:
        if inspect.iscoroutinefunction(function):
            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return await with_retries_async(function, *args, **kwargs, **options)
            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return with_retries(function, *args, **kwargs, **options)
        return wrapper

    return decorate


_OPTIONS = ("render_id", "template_id", "render_type", "dimensions", "policy", "tracker",
            "sleep", "rng")
