"""Slow thresholds tuned while services run: the compacted ``slow_thresholds`` topic, keyed
by operation (and template), and its one reader and writer.

``ept thresholds suggest --apply`` (or a person) writes a :class:`SlowThreshold`; the SDK's
measuring helpers ask a :class:`SlowThresholdView`, which keeps the latest of each key in
memory, fed by a background consumer. A threshold of None clears the key: the static
configuration (``EPT_THRESHOLDS``, ``Thresholds(...)``) applies again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ept.core.compacted import ControlView, publish
from ept.core.json_record import ControlRecord
from ept.core.settings import SdkSettings
from ept.thresholds import PERFORMANCE_THRESHOLDS

TunedKey = tuple[str, str | None]
"""(operation, template id or None for every template of the operation)."""


class BadSlowThreshold(ValueError):
    """A slow threshold is invalid (given, or read from the topic); the message says why."""


@dataclass(frozen=True)
class SlowThreshold(ControlRecord):
    """One message of the slow thresholds topic (JSON), keyed by :attr:`key`."""

    invalid = BadSlowThreshold

    operation: str  # render_video, api_call, ... (a key of PERFORMANCE_THRESHOLDS)
    template_id: str | None  # None: every template of the operation
    threshold_ms: float | None  # None: cleared, the static configuration applies
    by: str  # a person, or the command that computed it
    at_ms: int  # wall-clock time of the decision (ms since the epoch)
    reason: str = ""

    def __post_init__(self) -> None:
        if self.operation not in PERFORMANCE_THRESHOLDS:
            raise BadSlowThreshold(f"operation: must be one of "
                                   f"{', '.join(PERFORMANCE_THRESHOLDS)}, got {self.operation!r}")
        if self.template_id == "":
            raise BadSlowThreshold("template_id: must not be empty (None: every template)")
        value = self.threshold_ms
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not 0 < value < float("inf")):
            raise BadSlowThreshold(f"threshold_ms: must be a number > 0, got {value!r}")

    @property
    def key(self) -> str:
        """``render_video`` for every template, ``render_video/tpl_1`` for one."""
        return self.operation if self.template_id is None else \
            f"{self.operation}/{self.template_id}"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SlowThreshold:
        return cls(str(data["operation"]), data["template_id"], data["threshold_ms"],
                   str(data["by"]), int(data["at_ms"]), str(data.get("reason", "")))


def publish_threshold(settings: SdkSettings, threshold: SlowThreshold, timeout_s: float = 30.0
                      ) -> None:
    """Write ``threshold`` and wait until the broker acknowledged it. Blocks.

    Raises KafkaException when it was not delivered within ``timeout_s``.
    """
    publish(settings, settings.topics.slow_thresholds, threshold, timeout_s)


def read_thresholds(settings: SdkSettings, timeout_s: float = 20.0) -> list[SlowThreshold]:
    """Every key's latest threshold (cleared ones left out), read to the topic's end.
    Blocks; raises TimeoutError when the broker did not answer within ``timeout_s``."""
    return SlowThresholdView(settings).read_to_end(timeout_s).thresholds()


class SlowThresholdView(ControlView[SlowThreshold]):
    """The tuned thresholds, kept by a daemon thread that follows the topic from its start
    (:class:`~ept.core.compacted.ControlView`).

    :attr:`tuned` is a plain mapping (operation, template or None) -> ms, read without a
    lock: it never blocks nor raises. Until the topic has been read it is empty, and the
    static thresholds apply.
    """

    def __init__(self, settings: SdkSettings, poll_s: float = 0.5) -> None:
        super().__init__(settings, settings.topics.slow_thresholds, SlowThreshold, poll_s)
        self._latest: dict[str, SlowThreshold] = {}
        self._tuned: dict[TunedKey, float] = {}

    @property
    def tuned(self) -> Mapping[TunedKey, float]:
        return self._tuned

    def thresholds(self) -> list[SlowThreshold]:
        """The thresholds in force (not cleared), by key."""
        return [self._latest[key] for key in sorted(self._latest)
                if self._latest[key].threshold_ms is not None]

    def keep(self, threshold: SlowThreshold, live: bool) -> None:
        self._latest[threshold.key] = threshold
        tuned_key = (threshold.operation, threshold.template_id)
        if threshold.threshold_ms is None:
            self._tuned.pop(tuned_key, None)
        else:
            self._tuned[tuned_key] = float(threshold.threshold_ms)
