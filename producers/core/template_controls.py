"""The template kill switch: each template's state on the compacted ``template_controls``
topic, keyed by template id, and the one reader and writer of that topic.

A person (``ept templates``, the dashboard) or a rule with ``auto_action`` writes a
:class:`TemplateControl`; render services ask a :class:`TemplateControlView`, which keeps
the latest control of every template in memory, fed by a background consumer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ept.core.compacted import CompactedTopicFollower, publish_record
from ept.core.settings import SdkSettings

log = logging.getLogger("ept.templates")

DISABLED, ENABLED = "disabled", "enabled"
STATES = (DISABLED, ENABLED)


class BadTemplateControl(ValueError):
    """A template control is invalid (given, or read from the topic); the message says why."""


class TemplateDisabledError(RuntimeError):
    """A render was refused: its template is disabled (``control`` says why and by whom)."""

    def __init__(self, control: TemplateControl) -> None:
        self.control = control
        super().__init__(f"template {control.template_id!r} is disabled by {control.by}: "
                         f"{control.reason} (`ept templates enable {control.template_id}` "
                         f"re-enables it)")


@dataclass(frozen=True)
class TemplateControl:
    """One message of the template controls topic (JSON), keyed by ``template_id``."""

    template_id: str
    state: str  # DISABLED or ENABLED
    reason: str
    by: str  # a person, or ``rule:<name>`` for an automatic action
    at_ms: int  # wall-clock time of the decision (ms since the epoch)
    alert_fingerprint: str | None = None  # the alert that caused it, if any

    def __post_init__(self) -> None:
        if not self.template_id:
            raise BadTemplateControl("template_id: must not be empty")
        if self.state not in STATES:
            raise BadTemplateControl(f"state: must be one of {', '.join(STATES)}, "
                                     f"got {self.state!r}")

    @property
    def disabled(self) -> bool:
        return self.state == DISABLED

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def encode(self) -> bytes:
        return json.dumps(self.to_json()).encode()

    @classmethod
    def decode(cls, payload: bytes | None) -> TemplateControl:
        """Raises BadTemplateControl when ``payload`` is not a JSON template control."""
        try:
            data = json.loads(payload or b"")
        except ValueError as exc:
            raise BadTemplateControl(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise BadTemplateControl("not a JSON object")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [name for name in names[:5] if name not in data]
        if missing:
            raise BadTemplateControl(f"missing fields: {', '.join(missing)}")
        try:
            return cls(str(data["template_id"]), str(data["state"]), str(data["reason"]),
                       str(data["by"]), int(data["at_ms"]), data.get("alert_fingerprint"))
        except (TypeError, ValueError) as exc:
            raise BadTemplateControl(f"bad field: {exc}") from None


def publish_control(settings: SdkSettings, control: TemplateControl, timeout_s: float = 30.0
                    ) -> None:
    """Write ``control`` and wait until the broker acknowledged it. Blocks.

    Raises KafkaException when it was not delivered within ``timeout_s``.
    """
    publish_record(settings, settings.topics.template_controls, control.template_id,
                   control.encode(), timeout_s)


def read_controls(settings: SdkSettings, timeout_s: float = 20.0) -> list[TemplateControl]:
    """Every template's latest control, read to the topic's end. Blocks; raises
    TimeoutError when the broker did not answer within ``timeout_s``."""
    view = TemplateControlView(settings).start()
    try:
        if not view.wait_loaded(timeout_s):
            raise TimeoutError(f"{settings.topics.template_controls} on "
                               f"{settings.kafka_bootstrap} not read within {timeout_s:.0f} s")
        return view.controls()
    finally:
        view.close()


class TemplateControlView:
    """The latest control of every template, kept by a daemon thread that follows the topic
    from its start.

    :meth:`is_enabled` is a set lookup: it never blocks nor raises. Until the topic has
    been read to the end seen at start (:attr:`loaded`), templates count as enabled:
    tracking never stops a render service that cannot reach Kafka. ``on_update`` is called
    (in the view's thread) with each control read after that.
    """

    def __init__(self, settings: SdkSettings, poll_s: float = 0.2,
                 on_update: Callable[[TemplateControl], None] | None = None) -> None:
        self._on_update = on_update
        self._controls: dict[str, TemplateControl] = {}
        self._disabled: set[str] = set()  # the hot path's answer, kept beside the controls
        self._follower = CompactedTopicFollower(settings, settings.topics.template_controls,
                                                self._apply, poll_s)

    def start(self) -> TemplateControlView:
        self._follower.start()
        return self

    def close(self, timeout_s: float = 5.0) -> None:
        self._follower.close(timeout_s)

    @property
    def loaded(self) -> bool:
        return self._follower.loaded

    def wait_loaded(self, timeout_s: float | None = None) -> bool:
        """Block until the topic was read to its end (True) or ``timeout_s`` passed."""
        return self._follower.wait_loaded(timeout_s)

    def is_enabled(self, template_id: str) -> bool:
        return template_id not in self._disabled

    def control(self, template_id: str) -> TemplateControl | None:
        return self._controls.get(template_id)

    def controls(self) -> list[TemplateControl]:
        """Every template's latest control, by template id."""
        return [self._controls[key] for key in sorted(self._controls)]

    def _apply(self, key: bytes | None, value: bytes | None, live: bool) -> None:
        try:
            control = TemplateControl.decode(value)
        except BadTemplateControl as exc:
            log.warning("template controls: a record skipped: %s", exc)
            return
        if key is not None and key.decode(errors="replace") != control.template_id:
            log.warning("template controls: a record skipped: key %r is not its template %r",
                        key, control.template_id)
            return
        self._controls[control.template_id] = control
        if control.disabled:
            self._disabled.add(control.template_id)
        else:
            self._disabled.discard(control.template_id)
        if self._on_update is not None and live:
            self._on_update(control)
