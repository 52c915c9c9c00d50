"""The Tracker: validates, sanitizes, encodes and hands events to delivery.

Every ``track_*`` method returns in microseconds and never waits on the network. In
lenient mode (the default) it never raises: invalid arguments are logged (rate-limited)
and counted as ``rejected``. In strict mode (``EPT_STRICT=true``, on in tests) invalid
arguments raise ValueError or TypeError naming the argument.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from ept.classification import FAILURE_REASONS
from ept.core.http_status import is_rate_limited
from ept.core.kafka import ProducerRole, producer_config
from ept.core.settings import SdkSettings, SettingsError, is_set_true, load_sdk_settings
from ept.core.template_controls import TemplateControlView, TemplateDisabledError
from ept.delivery import Delivery, DiscardingDelivery, KafkaDelivery, RateLimitedLog
from ept.ids import new_id
from ept.sanitization import sanitize, sanitize_identifier
from ept.schemas.codec import Encoder, encoder_for, event_encoders
from ept.schemas.compiled import Refused
from ept.schemas.registry import EVENT_NAMES
from ept.schemas.validation import MAX_TEXT, field_problems
from ept.spool import Spool, default_spool_root
from ept.stats import ErrorPerformanceStats, StatsRecorder
from ept.threshold_controls import SlowThresholdView
from ept.thresholds import RENDER_TYPES, Thresholds

SDK_VERSION = "0.1.0"
log = logging.getLogger("ept.producers")

ConsentCheck = Callable[[str | None, str | None], bool]
"""``consent(user_id, account_id)``: True when the user is logged in and has not opted out."""

Dimensions = dict[str, int] | tuple[int, int] | None

# Per event: the field that is its Kafka key, and the free-text identifiers a caller (or an
# HTTP client hook, from a URL) may fill with a secret.
_KEY_FIELD = {"render_failed": "template_id", "render_completed": "template_id",
              "slow_render": "template_id", "api_error": "endpoint",
              "api_request_completed": "endpoint"}
_IDENTIFIERS = {name: ("endpoint", "request_id") if key == "endpoint" else ("template_id",)
                for name, key in _KEY_FIELD.items()}


def _thresholds_from_environment() -> Thresholds:
    """``EPT_THRESHOLDS`` read; raises SettingsError when it is invalid."""
    try:
        return Thresholds.from_environment()
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def _dimensions(value: Dimensions) -> tuple[int | None, int | None]:
    if value is None:
        return None, None
    if isinstance(value, dict):
        return value.get("width"), value.get("height")
    if isinstance(value, tuple) and len(value) == 2:
        return value[0], value[1]
    raise TypeError(f"dimensions: expected {{'width': w, 'height': h}} or (w, h), got {value!r}")


class Tracker:
    """Publishes tracking events to Kafka. Thread-safe; one per process is typical.

    ``delivery`` may be given to share a producer; otherwise one is created from
    ``settings``. Creating a Tracker does not contact Kafka (with a schema registry
    configured, it registers the schemas: blocks on HTTP).

    Without ``settings``, the SDK's own settings (:class:`SdkSettings`) and
    ``EPT_THRESHOLDS`` are read from the environment, and no other component's. When one
    of them is invalid, strict mode (``strict=True`` or ``EPT_STRICT=true``) raises
    SettingsError here; otherwise the problem is logged once and tracking is disabled:
    every call still returns at once and counts, nothing is sent (counted as dropped),
    templates count as enabled and thresholds are the static defaults.
    """

    def __init__(
        self,
        settings: SdkSettings | None = None,
        *,
        service: str | None = None,
        environment: str | None = None,
        strict: bool | None = None,
        consent: ConsentCheck | None = None,
        thresholds: Thresholds | None = None,
        encoder: Encoder | None = None,
        delivery: Delivery | None = None,
    ) -> None:
        self.enabled = True
        try:
            self.settings = settings or load_sdk_settings()
            self.thresholds = thresholds or _thresholds_from_environment()
        except SettingsError as exc:
            if is_set_true("strict") if strict is None else strict:
                raise
            log.error("ept: tracking disabled: %s", exc)
            self.enabled = False
            self.settings, self.thresholds = SdkSettings(), thresholds or Thresholds()
        self.service = service or self.settings.service
        self.environment = environment or self.settings.environment
        self.strict = self.settings.strict if strict is None else strict
        self.consent = consent
        self.debug = os.environ.get("DEBUG_TRACKING", "").lower() in ("1", "true", "yes")
        self.stats = StatsRecorder()
        self._topics = {name: self.settings.topics.event(name) for name in EVENT_NAMES}
        self._encoder = encoder or encoder_for(self.settings.schema_registry_url, self._topics)
        self._envelope = {"service": self.service, "environment": self.environment,
                          "sdk_version": SDK_VERSION}
        encoders = event_encoders(self._encoder, self._envelope, checked=True)
        # Per event, all the hot path looks up: (topic, checked encode, key field,
        # identifiers, count)
        self._events = {name: (self._topics[name], encoders[name], _KEY_FIELD[name],
                               _IDENTIFIERS[name], self.stats.event_counter(name))
                        for name in EVENT_NAMES}
        self._warn = RateLimitedLog()
        if not self.enabled:
            delivery = DiscardingDelivery(self.stats)
        elif delivery is None:
            spool = None
            if self.settings.spool_max_bytes > 0:
                spool = Spool(default_spool_root(self.settings.state_dir),
                              self.settings.spool_max_bytes)
            delivery = KafkaDelivery(producer_config(self.settings, ProducerRole.SDK), spool,
                                     self.stats, self.settings.producer_queue_max)
        self._delivery: Delivery = delivery
        self._template_view: TemplateControlView | None = None
        self._threshold_view: SlowThresholdView | None = None
        self._template_view_lock = threading.Lock()
        self._closed = False
        _live_trackers.add(self)

    # -- the specification's track functions ------------------------------------------

    def track_render_failed(
        self, render_id: str, reason: str, error_message: str, template_id: str,
        duration_ms: float, retry_attempt: int = 0, *, render_type: str | None = None,
        user_id: str | None = None, account_id: str | None = None,
    ) -> None:
        """A render failed. ``reason`` is one of the classification reasons."""
        if reason not in FAILURE_REASONS:
            self._invalid(ValueError(
                f"reason: must be one of {', '.join(FAILURE_REASONS)}, got {reason!r}"))
            return
        if render_type is not None and self._render_shape(render_type, None) is None:
            return
        self._emit("render_failed", {
            "render_id": render_id, "template_id": template_id, "reason": reason,
            "error_message": error_message, "duration_ms": duration_ms,
            "retry_attempt": retry_attempt, "render_type": render_type,
        }, user_id, account_id)

    def track_render_completed(
        self, render_id: str, template_id: str, render_type: str, duration_ms: float,
        dimensions: Dimensions = None, *, user_id: str | None = None,
        account_id: str | None = None,
    ) -> None:
        """A render succeeded (the denominator of error rates)."""
        shape = self._render_shape(render_type, dimensions)
        if shape is None:
            return
        width, height = shape
        self._emit("render_completed", {
            "render_id": render_id, "template_id": template_id, "render_type": render_type,
            "duration_ms": duration_ms, "width": width, "height": height,
        }, user_id, account_id)

    def track_slow_render(
        self, render_id: str, render_type: str, duration_ms: float, threshold_ms: float,
        template_id: str, dimensions: Dimensions = None, *, user_id: str | None = None,
        account_id: str | None = None,
    ) -> None:
        """A render exceeded ``threshold_ms``; the slowness factor is computed here."""
        shape = self._render_shape(render_type, dimensions)
        if shape is None:
            return
        width, height = shape
        try:
            factor = float(duration_ms) / float(threshold_ms)
        except (TypeError, ValueError, ZeroDivisionError) as exc:
            self._invalid(TypeError(f"duration_ms/threshold_ms: {exc}")
                          if not isinstance(exc, ZeroDivisionError)
                          else ValueError("threshold_ms: must be > 0"))
            return
        self._emit("slow_render", {
            "render_id": render_id, "template_id": template_id, "render_type": render_type,
            "duration_ms": duration_ms, "threshold_ms": threshold_ms,
            "slowness_factor": factor, "width": width, "height": height,
        }, user_id, account_id)

    def track_api_error(
        self, endpoint: str, status_code: int | None, error_message: str,
        request_id: str | None = None, duration_ms: float = 0.0, retry_attempt: int = 0, *,
        method: str | None = None, rate_limited: bool | None = None,
        retry_after_s: float | None = None, user_id: str | None = None,
        account_id: str | None = None,
    ) -> None:
        """An API call failed. ``status_code`` is None when no response came back.

        ``rate_limited`` defaults to True for 429 and for 503 with ``retry_after_s``.
        """
        if rate_limited is None:
            rate_limited = is_rate_limited(status_code, retry_after_s)
        self._emit("api_error", {
            "endpoint": endpoint, "method": method, "status_code": status_code,
            "error_message": error_message, "request_id": request_id or new_id(),
            "duration_ms": duration_ms, "retry_attempt": retry_attempt,
            "rate_limited": bool(rate_limited),
            "retry_after_s": None if retry_after_s is None else float(retry_after_s),
        }, user_id, account_id)

    def track_api_request_completed(
        self, endpoint: str, method: str, status_code: int, duration_ms: float,
        request_id: str | None = None, *, user_id: str | None = None,
        account_id: str | None = None,
    ) -> None:
        """An API call was answered (the denominator of API error rates)."""
        self._emit("api_request_completed", {
            "endpoint": endpoint, "method": method, "status_code": status_code,
            "duration_ms": duration_ms, "request_id": request_id or new_id(),
        }, user_id, account_id)

    # -- internals --------------------------------------------------------------------

    def _render_shape(self, render_type: str, dimensions: Dimensions
                      ) -> tuple[int | None, int | None] | None:
        """(width, height) after checking the render type and dimensions; None (reported
        as invalid) when either is wrong."""
        if render_type not in RENDER_TYPES:
            self._invalid(ValueError(
                f"render_type: must be one of {', '.join(RENDER_TYPES)}, got {render_type!r}"))
            return None
        try:
            return _dimensions(dimensions)
        except TypeError as exc:
            self._invalid(exc)
            return None

    def _emit(self, event_name: str, fields: dict[str, Any],
              user_id: str | None, account_id: str | None) -> None:
        topic, encode, key_field, identifiers, count = self._events[event_name]
        try:
            message = fields.get("error_message")
            if isinstance(message, str):
                fields["error_message"] = sanitize(message[:MAX_TEXT])
            for name in identifiers:
                value = fields[name]
                if isinstance(value, str):
                    fields[name] = sanitize_identifier(value)
            if user_id is not None or account_id is not None:
                user_id, account_id = self._consented(user_id, account_id)
            record = fields  # the encoder reads fields by name: no copy needed
            record["event_id"] = new_id()
            record["event_time"] = time.time_ns() // 1_000_000
            record["user_id"] = user_id
            record["account_id"] = account_id
            try:
                payload = encode(record)  # the field rules checked on the way
            except Refused:
                payload = self._encode_refused(event_name, record)
            key = record[key_field].encode()  # the template id or endpoint, sanitized
        except (TypeError, ValueError) as exc:
            if self.strict:
                raise
            self._reject(exc)
            return
        except Exception as exc:  # tracking must never break the caller
            self._reject(exc)
            return
        self._delivery.send(topic, key, payload)
        count()
        if self.debug:
            log.debug("ept: tracked %s %s", event_name, record)

    def _encode_refused(self, event_name: str, record: dict[str, Any]) -> bytes:
        """The payload of a record the checked encoder refused: it may break a field rule.
        Raises TypeError or ValueError naming each broken rule; a record that breaks none
        (a value of an unusual type, such as a ``str`` subclass) is encoded unchecked."""
        found = field_problems(event_name, record)
        if found:
            kind = TypeError if any(problem.wrong_type for problem in found) else ValueError
            raise kind(f"{event_name}: " + "; ".join(map(str, found)))
        return self._encoder.encode(event_name, {**record, **self._envelope})

    def _consented(self, user_id: str | None, account_id: str | None
                   ) -> tuple[str | None, str | None]:
        if self.consent is None:
            return None, None
        try:
            allowed = bool(self.consent(user_id, account_id))
        except Exception as exc:
            self._warn.warning("consent", "ept: consent callback raised %r; user dropped", exc)
            return None, None
        return (user_id, account_id) if allowed else (None, None)

    def _invalid(self, error: Exception) -> None:
        if self.strict:
            raise error
        self._reject(error)

    def _reject(self, error: Exception) -> None:
        self.stats.add("rejected")
        self._warn.warning("rejected", "ept: tracking call rejected: %s", error)

    # -- the template kill switch -----------------------------------------------------

    def is_template_enabled(self, template_id: str) -> bool:
        """False when ``template_id`` is disabled (``ept templates``, or a rule's
        auto_action). A lookup in a local view, fed by a background consumer started on
        first use: never waits on the network, never raises. True until the view has read
        the controls topic (see :meth:`wait_for_template_controls`)."""
        view = self._template_view
        if view is None:
            view = self._start_template_view()
        return view.is_enabled(template_id)

    def wait_for_template_controls(self, timeout_s: float = 10.0) -> bool:
        """Start the template view and block until it has read the controls topic, or
        ``timeout_s`` passed (False). For a service's start-up, before its first render.
        False at once when tracking is disabled."""
        if not self.enabled:
            return False
        return (self._template_view or self._start_template_view()).wait_loaded(timeout_s)

    def refuse_disabled_template(self, template_id: str) -> None:
        """Raise TemplateDisabledError when ``template_id`` is disabled; the refusal is
        counted (``renders_refused``) and logged (rate-limited)."""
        view = self._template_view or self._start_template_view()
        if view.is_enabled(template_id):
            return
        control = view.control(template_id)
        assert control is not None  # disabled templates have a control
        self.stats.add("renders_refused")
        self._warn.warning("refused", "ept: render refused: template %s is "
                           "disabled by %s: %s", template_id, control.by, control.reason)
        raise TemplateDisabledError(control)

    # -- slow thresholds ----------------------------------------------------------------

    def slow_threshold(self, operation: str, template_id: str | None = None) -> float:
        """The threshold (ms) above which ``operation`` is slow: tuned on the slow
        thresholds topic (``ept thresholds``), else :attr:`thresholds`. A lookup in a local
        view fed by a background consumer started on first use: never waits on the
        network. Raises KeyError for an unknown operation."""
        view = self._threshold_view or self._start_threshold_view()
        return self.thresholds.threshold(operation, template_id, view.tuned)

    def wait_for_slow_thresholds(self, timeout_s: float = 10.0) -> bool:
        """Block until the tuned thresholds were read, or ``timeout_s`` passed (False);
        False at once when tracking is disabled."""
        if not self.enabled:
            return False
        return (self._threshold_view or self._start_threshold_view()).wait_loaded(timeout_s)

    def _start_threshold_view(self) -> SlowThresholdView:
        with self._template_view_lock:
            if self._threshold_view is None:
                self._threshold_view = SlowThresholdView(self.settings)
                if self.enabled:
                    self._threshold_view.start()
            return self._threshold_view

    def _start_template_view(self) -> TemplateControlView:
        with self._template_view_lock:
            if self._template_view is None:
                self._template_view = TemplateControlView(self.settings)
                if self.enabled:
                    self._template_view.start()
            return self._template_view

    # -- statistics and lifecycle -----------------------------------------------------

    def get_error_performance_stats(self) -> ErrorPerformanceStats:
        return self.stats.snapshot(queued=self._delivery.pending())

    def reset_error_performance_stats(self) -> None:
        self.stats.reset()

    def flush(self, timeout: float | None = None) -> int:
        """Wait until queued events are delivered (up to ``timeout`` s); returns the rest."""
        return self._delivery.flush(self.settings.flush_timeout_s if timeout is None else timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush within ``timeout`` s, spool what remains, stop the delivery thread."""
        if self._closed:
            return
        self._closed = True
        _live_trackers.discard(self)
        for view in (self._template_view, self._threshold_view):
            if view is not None:
                view.close()
        self._delivery.close(self.settings.flush_timeout_s if timeout is None else timeout)


_live_trackers: weakref.WeakSet[Tracker] = weakref.WeakSet()


@atexit.register
def _close_all_at_exit() -> None:
    for tracker in list(_live_trackers):
        try:
            tracker.close()
        except Exception:  # pragma: no cover - exit must go on
            log.exception("ept: closing tracker at exit failed")
