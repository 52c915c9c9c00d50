"""Alert rules: what to watch, when to fire, when to resolve. Loaded from a TOML file.

An invalid file stops the worker at start with :class:`RulesError`, whose message names
the file, the rule and the field.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ept.processors.alerts.notice import SEVERITIES

# The label of each scope type but the overall one (as in the alert's labels).
LABEL_OF_SCOPE_TYPE = {"template": "template_id", "endpoint": "endpoint",
                       "render_type": "render_type"}
KINDS: dict[str, tuple[str, ...]] = {
    # kind: the scopes it can be evaluated for
    "render_error_rate": ("overall", "template"),
    "api_errors": ("overall", "endpoint"),
    "slow_render_ratio": ("overall", "render_type"),
    "template_failures": ("template",),
    "duration_regression": ("render_type", "template"),
    "render_volume_drop": ("overall",),
    "api_volume_drop": ("overall",),
}
REGRESSION = "duration_regression"
VOLUME_DROPS = ("render_volume_drop", "api_volume_drop")
RATIOS = ("render_error_rate", "slow_render_ratio")
COUNTS = ("template_failures", "api_errors")
# Kinds judged against a baseline of the blocks before the judged instant.
BASELINE_KINDS = (REGRESSION, *VOLUME_DROPS)
# Fields of the baseline kinds only: (type, default).
_BASELINE_FIELDS: dict[str, tuple[type | tuple[type, ...], float]] = {
    "quantile": ((int, float), 0.95), "baseline_days": (int, 7),
    "baseline_min_samples": (int, 100),
}
REGRESSION_THRESHOLD, REGRESSION_RESOLVE = 1.5, 1.2  # default factors over the baseline
VOLUME_THRESHOLD, VOLUME_RESOLVE = 10.0, 50.0  # default percentages of the baseline volume
# What a rule does when its window holds less evidence than its floor (Grafana's no-data
# state): stay as it is (a firing alert keeps firing and says so), resolve, or fire.
NO_DATA_POLICIES = ("keep_firing", "resolve", "alert")
# One-sided confidence of the Wilson bounds (docs/alerts.md, "Evidence"): to fire, the
# rate's lower bound must pass the threshold at CONFIDENCE; to resolve, its upper bound
# must be at or below the resolve threshold at RESOLVE_CONFIDENCE.
CONFIDENCE, RESOLVE_CONFIDENCE = 0.99, 0.8
DISABLE_TEMPLATE = "disable_template"  # the action a rule may take itself (auto_action)
RUNBOOK_BASE = "https://github.com/ept-project/ept/blob/main/docs/runbooks"


class RulesError(ValueError):
    """The rules file is invalid; the message names the rule and the field."""


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str
    scopes: tuple[str, ...]
    threshold: float
    resolve_threshold: float
    window_minutes: int
    min_samples: int
    pending_seconds: int
    renotify_minutes: int
    severity: str
    action: str
    runbook_url: str
    enabled: bool = True
    # With ``action = "disable_template"``: the worker disables the template itself when
    # the alert fires (re-enabling stays a person's decision).
    auto_action: bool = False
    # duration_regression: the window's ``quantile`` of render duration against the same
    # quantile over the ``baseline_days`` days before the judged instant (in six-hour
    # blocks: the block of the instant is left out).
    quantile: float = 0.95
    baseline_days: int = 7
    baseline_min_samples: int = 100
    no_data: str = "keep_firing"  # one of NO_DATA_POLICIES
    # How long (event time) a firing alert must read "cleared" at every judged instant
    # before it resolves: a run of clean renders at thin traffic is not a fix.
    resolve_pending_seconds: int = 0
    # Ratio rules, and count rules with a min_rate: the confidence of the rate's bounds
    # (0: the measured rate itself, no interval).
    confidence: float = CONFIDENCE
    resolve_confidence: float = RESOLVE_CONFIDENCE
    # Count rules: the failure rate (percent of the scope's renders or calls) that must be
    # exceeded, with confidence, too — a popular template failing 0.1% of its renders
    # fails more than 3 times an hour without being broken.
    min_rate: float = 0.0
    # (scope type, label value, the rule for that scope) from ``[[rules.overrides]]``
    overrides: tuple[tuple[str, str, Rule], ...] = ()

    def for_scope(self, scope_type: str, value: str) -> Rule | None:
        """The rule as it applies to one scope (``template``, ``tpl_1``): its override if
        it has one, None when the override disables it there."""
        for overridden_type, overridden_value, rule in self.overrides:
            if overridden_type == scope_type and overridden_value == value:
                return rule if rule.enabled else None
        return self

    @property
    def variants(self) -> list[Rule]:
        """The rule and each of its overrides."""
        return [self, *(rule for _, _, rule in self.overrides)]

    @property
    def is_ratio(self) -> bool:
        return self.kind in RATIOS

    @property
    def is_volume_drop(self) -> bool:
        return self.kind in VOLUME_DROPS

    @property
    def fires_ahead(self) -> bool:
        """Whether the rule may fire ahead of the frontier (a count or a ratio without a
        pending period;
        :meth:`~ept.processors.worker.logic.scope_evaluation.Evaluator.judge_ahead`)."""
        return self.kind in (*COUNTS, *RATIOS) and not self.pending_seconds

    @property
    def is_final_once_crossed(self) -> bool:
        """Whether late events can only keep the rule holding once it holds: a count
        without a rate condition (late events only add to it)."""
        return self.kind in COUNTS and not self.min_rate

    @property
    def judged_at_minute_ends(self) -> bool:
        """Regressions and volume drops are judged at minute ends only; counts and ratios
        at every second holding an event they count too."""
        return self.kind in BASELINE_KINDS


_FIELDS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    # field: (type, required)
    "name": (str, True), "kind": (str, True), "scopes": (list, False),
    "threshold": ((int, float), False), "resolve_threshold": ((int, float), False),
    "window_minutes": (int, True), "min_samples": (int, False),
    "pending_seconds": (int, False), "resolve_pending_seconds": (int, False),
    "renotify_minutes": (int, False), "severity": (str, True), "action": (str, False),
    "runbook_url": (str, False),
    "enabled": (bool, False), "auto_action": (bool, False),
    **{field: (kind, False) for field, (kind, _) in _BASELINE_FIELDS.items()},
    "no_data": (str, False), "confidence": ((int, float), False),
    "resolve_confidence": ((int, float), False), "min_rate": ((int, float), False),
    "overrides": (list, False),
}
# What an override may change for its scope (the rule's kind, scopes, name and action stay).
_OVERRIDABLE = ("threshold", "resolve_threshold", "window_minutes", "min_samples",
                "pending_seconds", "resolve_pending_seconds", "renotify_minutes", "severity",
                "enabled",
                "no_data", "confidence", "resolve_confidence", "min_rate",
                *_BASELINE_FIELDS)


def _rule(raw: dict[str, Any], where: str) -> Rule:
    def fail(field: str, problem: str) -> RulesError:
        return RulesError(f"{where}: field {field!r}: {problem}")

    if not isinstance(raw, dict):
        raise RulesError(f"{where}: must be a table")
    for field in raw:
        if field not in _FIELDS:
            raise fail(field, f"unknown field (known: {', '.join(_FIELDS)})")
    for field, (kind, required) in _FIELDS.items():
        if field not in raw:
            if required:
                raise fail(field, "is required")
            continue
        value = raw[field]
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            raise fail(field, f"must be {_type_name(kind)}, got {value!r}")
    if raw["kind"] not in KINDS:
        raise fail("kind", f"must be one of {', '.join(KINDS)}, got {raw['kind']!r}")
    allowed = KINDS[raw["kind"]]
    scopes = tuple(raw.get("scopes", allowed[:1]))
    for scope in scopes:
        if scope not in allowed:
            raise fail("scopes",
                       f"{scope!r} is not a scope of {raw['kind']} ({', '.join(allowed)})")
    kind = raw["kind"]
    regression, volume = kind == REGRESSION, kind in VOLUME_DROPS
    if "threshold" not in raw and not (regression or volume):
        raise fail("threshold", "is required")
    threshold = float(raw.get("threshold",
                              REGRESSION_THRESHOLD if regression else VOLUME_THRESHOLD))
    if threshold < 0 or (kind in (*RATIOS, *VOLUME_DROPS) and threshold > 100):
        raise fail("threshold", f"out of range: {threshold}")
    if regression and threshold <= 1:
        raise fail("threshold", f"a factor over the baseline must be > 1, got {threshold}")
    if volume:
        # A drop fires below its threshold and resolves at or above its resolve threshold.
        resolve = float(raw.get("resolve_threshold", max(VOLUME_RESOLVE, threshold)))
        if not threshold <= resolve <= 100:
            raise fail("resolve_threshold",
                       f"must be between threshold ({threshold}) and 100, got {resolve}")
    else:
        resolve = float(raw.get("resolve_threshold", min(REGRESSION_RESOLVE, threshold)
                                if regression else threshold))
        if resolve > threshold:
            raise fail("resolve_threshold",
                       f"must be <= threshold ({threshold}), got {resolve}")
    evidence = _evidence_fields(raw, fail)
    for field in ("window_minutes",):
        if not 1 <= raw[field] <= 24 * 60:
            raise fail(field, f"must be 1..1440, got {raw[field]}")
    for field in ("min_samples", "pending_seconds", "resolve_pending_seconds",
                  "renotify_minutes"):
        if raw.get(field, 0) < 0:
            raise fail(field, f"must be >= 0, got {raw[field]}")
    baseline_fields = _baseline_fields(raw, regression or volume, fail)
    if raw["severity"] not in SEVERITIES:
        raise fail("severity", f"must be one of {', '.join(SEVERITIES)}, got {raw['severity']!r}")
    runbook = raw.get("runbook_url")
    if runbook is not None and not runbook.lower().startswith(("https://", "http://")):
        raise fail("runbook_url", f"must be an http(s):// URL, got {runbook!r}")
    action = raw.get("action", "notify_oncall")
    if raw.get("auto_action") and (action != DISABLE_TEMPLATE or "template" not in scopes):
        raise fail("auto_action", f"needs action = {DISABLE_TEMPLATE!r} and the template "
                   f"scope (this rule: action {action!r}, scopes {list(scopes)})")
    name = raw["name"]
    return Rule(
        name=name, kind=raw["kind"], scopes=scopes, threshold=threshold,
        resolve_threshold=resolve, window_minutes=raw["window_minutes"],
        min_samples=raw.get("min_samples", 0), pending_seconds=raw.get("pending_seconds", 0),
        resolve_pending_seconds=raw.get("resolve_pending_seconds", 0),
        renotify_minutes=raw.get("renotify_minutes", 60), severity=raw["severity"],
        action=action,
        runbook_url=raw.get("runbook_url", f"{RUNBOOK_BASE}/{name.replace('_', '-')}.md"),
        enabled=raw.get("enabled", True), auto_action=raw.get("auto_action", False),
        **baseline_fields, **evidence,
        overrides=_overrides(raw, scopes, where, fail),
    )


def _overrides(raw: dict[str, Any], scopes: tuple[str, ...], where: str,
               fail: Callable[[str, str], RulesError]) -> tuple[tuple[str, str, Rule], ...]:
    """``[[rules.overrides]]``: each names one scope of the rule (``template = "tpl_1"``,
    ``endpoint = "/api/x"`` or ``render_type = "video"``) and the fields it changes there;
    each is validated as the whole rule it makes."""
    base = {field: value for field, value in raw.items() if field != "overrides"}
    overrides: list[tuple[str, str, Rule]] = []
    for number, override in enumerate(raw.get("overrides", []), 1):
        if not isinstance(override, dict):
            raise fail("overrides", f"#{number} must be a table, got {override!r}")
        selectors = [field for field in override if field in LABEL_OF_SCOPE_TYPE]
        if len(selectors) != 1:
            raise fail("overrides", f"#{number} must name exactly one of "
                       f"{', '.join(LABEL_OF_SCOPE_TYPE)} (the scope it applies to)")
        scope_type, value = selectors[0], override[selectors[0]]
        if scope_type not in scopes:
            raise fail("overrides", f"#{number}: {scope_type!r} is not a scope of this rule "
                       f"(scopes: {list(scopes)})")
        if not isinstance(value, str) or not value:
            raise fail("overrides", f"#{number}: {scope_type} must be a non-empty string")
        if any(t == scope_type and v == value for t, v, _ in overrides):
            raise fail("overrides", f"#{number}: {scope_type} {value!r} is overridden twice")
        changes = {field: v for field, v in override.items() if field != scope_type}
        for field in changes:
            if field not in _OVERRIDABLE:
                raise fail("overrides", f"#{number}: {field!r} cannot be overridden "
                           f"(these can: {', '.join(_OVERRIDABLE)})")
        rule = _rule({**base, **changes}, f"{where}: override {scope_type} = {value!r}")
        overrides.append((scope_type, value, rule))
    return tuple(overrides)


def _evidence_fields(raw: dict[str, Any], fail: Callable[[str, str], RulesError]
                     ) -> dict[str, Any]:
    no_data = raw.get("no_data", "keep_firing")
    if no_data not in NO_DATA_POLICIES:
        raise fail("no_data", f"must be one of {', '.join(NO_DATA_POLICIES)}, got {no_data!r}")
    fields: dict[str, Any] = {"no_data": no_data}
    for field, default in (("confidence", CONFIDENCE),
                           ("resolve_confidence", RESOLVE_CONFIDENCE)):
        value = float(raw.get(field, default))
        if not 0 <= value < 1:
            raise fail(field, f"must be 0 (no interval) or a confidence below 1 (0.99 is "
                              f"99%), got {value}")
        regression = (REGRESSION,) if field == "confidence" else ()
        if field in raw and raw["kind"] not in (*RATIOS, *COUNTS, *regression):
            raise fail(field, f"only for the rate kinds {', '.join(RATIOS)}, the count "
                              f"kinds' min_rate{''.join(' and ' + k for k in regression)}")
        fields[field] = value
    min_rate = float(raw.get("min_rate", 0.0))
    if "min_rate" in raw and raw["kind"] not in COUNTS:
        raise fail("min_rate", f"only for the count kinds {', '.join(COUNTS)}")
    if not 0 <= min_rate <= 100:
        raise fail("min_rate", f"must be a percentage 0..100, got {min_rate}")
    return {**fields, "min_rate": min_rate}


def _baseline_fields(raw: dict[str, Any], baseline: bool,
                     fail: Callable[[str, str], RulesError]) -> dict[str, Any]:
    given = {field: raw[field] for field in _BASELINE_FIELDS if field in raw}
    if "quantile" in given and raw["kind"] != REGRESSION:
        raise fail("quantile", f"only for kind {REGRESSION!r}")
    if given and not baseline:
        raise fail(next(iter(given)), f"only for the kinds {', '.join(BASELINE_KINDS)}")
    fields = {field: given.get(field, default)
              for field, (_, default) in _BASELINE_FIELDS.items()}
    if not 0 < fields["quantile"] < 1:
        raise fail("quantile", f"must be between 0 and 1 (0.95 is p95), got {fields['quantile']}")
    if not 1 <= fields["baseline_days"] <= 30:
        raise fail("baseline_days", f"must be 1..30, got {fields['baseline_days']}")
    if fields["baseline_min_samples"] < 1:
        raise fail("baseline_min_samples", f"must be >= 1, got {fields['baseline_min_samples']}")
    return {**fields, "quantile": float(fields["quantile"])}


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names[k] for k in kinds)


def parse_rules(text: str, source: str) -> list[Rule]:
    """Rules from TOML ``text``. Raises RulesError naming ``source``, rule and field."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{source}: not valid TOML: {exc}") from None
    raw_rules = document.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise RulesError(f"{source}: expected one or more [[rules]] tables")
    rules: list[Rule] = []
    for index, raw in enumerate(raw_rules):
        label = raw.get("name", f"#{index + 1}") if isinstance(raw, dict) else f"#{index + 1}"
        rules.append(_rule(raw, f"{source}: rule {label!r}"))
    names = [rule.name for rule in rules]
    duplicates = {name for name in names if names.count(name) > 1}
    if duplicates:
        raise RulesError(f"{source}: rule names must be unique; repeated: {sorted(duplicates)}")
    return [rule for rule in rules if rule.enabled]


def load_rules(path: Path | None) -> list[Rule]:
    """The rules of ``path``, or the defaults (the specification's four) when None."""
    if path is None:
        text = (resources.files("ept.processors.worker.logic") / "rules.default.toml").read_text()
        return parse_rules(text, "default rules")
    try:
        text = path.read_text()
    except OSError as exc:
        raise RulesError(f"{path}: cannot read rules file: {exc.strerror}") from None
    return parse_rules(text, str(path))
