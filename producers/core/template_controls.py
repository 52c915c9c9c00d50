"""The template kill switch: each template's state on the compacted ``template_controls``
topic, keyed by template id, and the one reader and writer of that topic.

A person (``ept templates``: :func:`change_state`; the dashboard) or a rule with
``auto_action`` writes a :class:`TemplateControl`; render services ask a
:class:`TemplateControlView`, which keeps the latest control of every template in memory,
fed by a background consumer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ept.core.compacted import ControlView, publish
from ept.core.json_record import ControlRecord
from ept.core.settings import SdkSettings

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
class TemplateControl(ControlRecord):
    """One message of the template controls topic (JSON), keyed by ``template_id``."""

    invalid = BadTemplateControl

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
    def key(self) -> str:
        return self.template_id

    @property
    def disabled(self) -> bool:
        return self.state == DISABLED

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TemplateControl:
        return cls(str(data["template_id"]), str(data["state"]), str(data["reason"]),
                   str(data["by"]), int(data["at_ms"]), data.get("alert_fingerprint"))


def publish_control(settings: SdkSettings, control: TemplateControl, timeout_s: float = 30.0
                    ) -> None:
    """Write ``control`` and wait until the broker acknowledged it. Blocks.

    Raises KafkaException when it was not delivered within ``timeout_s``.
    """
    publish(settings, settings.topics.template_controls, control, timeout_s)


def read_controls(settings: SdkSettings, timeout_s: float = 20.0) -> list[TemplateControl]:
    """Every template's latest control, read to the topic's end. Blocks; raises
    TimeoutError when the broker did not answer within ``timeout_s``."""
    return TemplateControlView(settings).read_to_end(timeout_s).controls()


def changes_nothing(control: TemplateControl, current: TemplateControl | None) -> bool:
    """Whether writing ``control`` would leave its template as it is: ``current`` (the
    template's latest control; None: never controlled, so enabled) has its state already."""
    return current.state == control.state if current is not None else not control.disabled


@dataclass(frozen=True)
class StateChange:
    """What :func:`change_state` did. ``published``: the control was written; else the
    template already was in its state, as ``current`` says (None: never controlled)."""

    current: TemplateControl | None
    published: bool


def change_state(settings: SdkSettings, control: TemplateControl, timeout_s: float = 20.0
                 ) -> StateChange:
    """Write ``control`` unless the template's latest control, read to the topic's end,
    already has its state (:func:`changes_nothing`). Blocks; raises TimeoutError when the
    topic could not be read within ``timeout_s``, KafkaException when ``control`` was not
    delivered (:func:`publish_control`)."""
    current = {c.template_id: c for c in read_controls(settings, timeout_s)}.get(
        control.template_id)
    if changes_nothing(control, current):
        return StateChange(current, published=False)
    publish_control(settings, control)
    return StateChange(current, published=True)


class TemplateControlView(ControlView[TemplateControl]):
    """The latest control of every template, kept by a daemon thread that follows the topic
    from its start (:class:`~ept.core.compacted.ControlView`).

    :meth:`is_enabled` is a set lookup: it never blocks nor raises. Until the topic has
    been read to the end seen at start (:attr:`loaded`), templates count as enabled:
    tracking never stops a render service that cannot reach Kafka. ``on_update`` is called
    (in the view's thread) with each control read after that.
    """

    def __init__(self, settings: SdkSettings, poll_s: float = 0.2,
                 on_update: Callable[[TemplateControl], None] | None = None) -> None:
        super().__init__(settings, settings.topics.template_controls, TemplateControl, poll_s)
        self._on_update = on_update
        self._controls: dict[str, TemplateControl] = {}
        self._disabled: set[str] = set()  # the hot path's answer, kept beside the controls

    def is_enabled(self, template_id: str) -> bool:
        return template_id not in self._disabled

    def control(self, template_id: str) -> TemplateControl | None:
        return self._controls.get(template_id)

    def controls(self) -> list[TemplateControl]:
        """Every template's latest control, by template id."""
        return [self._controls[key] for key in sorted(self._controls)]

    def keep(self, control: TemplateControl, live: bool) -> None:
        self._controls[control.template_id] = control
        if control.disabled:
            self._disabled.add(control.template_id)
        else:
            self._disabled.discard(control.template_id)
        if self._on_update is not None and live:
            self._on_update(control)
