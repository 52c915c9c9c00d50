"""Performance thresholds: when an operation counts as slow.

The specification's five thresholds are the defaults (plus ``render_batch``, which the
specification's render types need). They can be overridden for an environment
(``EPT_THRESHOLDS``, JSON) and per template, and tuned while services run (the slow
thresholds topic: :mod:`ept.threshold_controls`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from types import MappingProxyType

PERFORMANCE_THRESHOLDS: Mapping[str, float] = MappingProxyType({
    "render_still": 5000,       # 5 seconds
    "render_video": 30000,      # 30 seconds
    "api_call": 3000,           # 3 seconds
    "image_generation": 10000,  # 10 seconds
    "voice_generation": 15000,  # 15 seconds
    "render_batch": 120000,     # 2 minutes (not in the specification: its batch render type)
})

RENDER_TYPES: tuple[str, ...] = ("still", "video", "batch")


def operation_for_render_type(render_type: str) -> str:
    return f"render_{render_type}"


class Thresholds:
    """Thresholds in milliseconds: defaults < environment overrides < per-template overrides.

    ``overrides`` maps operation -> ms; ``per_template`` maps template id -> {operation: ms}.
    Raises ValueError naming the operation for unknown operations or non-positive values.
    """

    def __init__(
        self,
        overrides: Mapping[str, float] | None = None,
        per_template: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        self._base = {**PERFORMANCE_THRESHOLDS, **_checked(overrides or {}, "overrides")}
        self._per_template = {
            template: _checked(values, f"per_template[{template!r}]")
            for template, values in (per_template or {}).items()
        }

    @classmethod
    def from_environment(cls) -> Thresholds:
        """Read ``EPT_THRESHOLDS``: ``{"render_still": 8000, "templates": {"t1": {...}}}``."""
        raw = os.environ.get("EPT_THRESHOLDS")
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"EPT_THRESHOLDS: not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("EPT_THRESHOLDS: must be a JSON object")
        templates = data.pop("templates", {})
        return cls(data, templates)

    def threshold(self, operation: str, template_id: str | None = None,
                  tuned: Mapping[tuple[str, str | None], float] | None = None) -> float:
        """The threshold in ms. Raises KeyError for an unknown operation.

        ``tuned`` (the slow thresholds topic, keyed (operation, template or None)) wins
        over the static value of the same reach: a template's tuned threshold, then its
        static one, then the operation's tuned one, then its static one.
        """
        tuned = tuned or {}
        if template_id is not None:
            if (operation, template_id) in tuned:
                return tuned[(operation, template_id)]
            specific = self._per_template.get(template_id)
            if specific is not None and operation in specific:
                return specific[operation]
        if (operation, None) in tuned:
            return tuned[(operation, None)]
        return self._base[operation]

    def is_slow(self, operation: str, duration_ms: float, template_id: str | None = None) -> bool:
        return duration_ms > self.threshold(operation, template_id)


def _checked(values: Mapping[str, float], where: str) -> dict[str, float]:
    checked: dict[str, float] = {}
    for operation, value in values.items():
        if operation not in PERFORMANCE_THRESHOLDS:
            raise ValueError(
                f"{where}: unknown operation {operation!r}; known: "
                f"{', '.join(PERFORMANCE_THRESHOLDS)}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError(f"{where}[{operation!r}]: must be a number > 0, got {value!r}")
        checked[operation] = float(value)
    return checked


def is_slow(operation: str, duration_ms: float) -> bool:
    """Whether ``duration_ms`` exceeds the default threshold of ``operation``."""
    return duration_ms > PERFORMANCE_THRESHOLDS[operation]


def calculate_error_rate(total: int, errors: int) -> float:
    """Errors as a percentage of total, rounded to 2 decimals; 0.0 when total is 0.

    ``calculate_error_rate(100, 5) == 5.0``. Raises ValueError for negative counts or
    more errors than total.
    """
    if total < 0 or errors < 0:
        raise ValueError(f"counts must be >= 0, got total={total}, errors={errors}")
    if errors > total:
        raise ValueError(f"errors ({errors}) cannot exceed total ({total})")
    if total == 0:
        return 0.0
    return round(100.0 * errors / total, 2)
