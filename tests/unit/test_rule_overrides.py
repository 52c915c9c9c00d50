"""Per-scope overrides in the rules file: validation, and the rule each scope is judged by."""

from __future__ import annotations

import re

import pytest

from ept.processors.worker.logic.records import ScopeState, Signal
from ept.processors.worker.logic.rules import RulesError, parse_rules
from ept.processors.worker.logic.scope_evaluation import Evaluator
from ept.processors.worker.logic.scopes import Scope

T0 = 1_800_000_000_000 // 60_000 * 60_000
RULES = """
[[rules]]
name = "api_degradation"
kind = "api_errors"
scopes = ["overall", "endpoint"]
threshold = 10
resolve_threshold = 8
window_minutes = 5
severity = "high"

[[rules.overrides]]
endpoint = "/api/bulk-export"     # retried by its clients: 30 errors in 10 minutes is normal
threshold = 30
resolve_threshold = 20
window_minutes = 10
severity = "medium"

[[rules.overrides]]
endpoint = "/api/legacy"
enabled = false
"""


def errors_fired(endpoint: str, errors: int) -> list[tuple[str, str, float]]:
    """The notices of ``errors`` API errors on ``endpoint``, one every 10 s."""
    evaluator = Evaluator(parse_rules(RULES, "rules.toml"))
    scope, state = Scope("api", "endpoint", endpoint), ScopeState()
    evaluator.add(scope, state, Signal.of(scope.key, [(T0 + i * 10_000, "api_error:0", i, "errors")
                                                      for i in range(errors)]))
    return [(n.note.status, n.rule.severity, n.rule.threshold)
            for n in evaluator.judge(scope, state, T0 + 30 * 60_000)]


def test_an_overridden_scope_is_judged_by_its_own_threshold_window_and_severity() -> None:
    assert errors_fired("/api/render", 20)[0] == ("firing", "high", 10)
    assert errors_fired("/api/bulk-export", 20) == []  # under its own 30
    assert errors_fired("/api/bulk-export", 40)[0] == ("firing", "medium", 30)
    assert errors_fired("/api/legacy", 100) == []  # disabled there


def test_the_longest_overridden_window_is_kept() -> None:
    assert Evaluator(parse_rules(RULES, "rules.toml")).retain_s == 10 * 60


@pytest.mark.parametrize(("override", "message"), [
    ('endpoint = "/a"\nthreshold = 5', "override endpoint = '/a': field 'resolve_threshold': "
                                       "must be <= threshold"),
    ('template = "t"\nthreshold = 5', "'template' is not a scope of this rule"),
    ('threshold = 5', "must name exactly one of template, endpoint, render_type"),
    ('endpoint = "/a"\nrender_type = "video"', "must name exactly one of"),
    ('endpoint = "/a"\nkind = "template_failures"', "'kind' cannot be overridden"),
    ('endpoint = "/a"\nthreshold = "many"', "field 'threshold': must be an integer or a number"),
    ('endpoint = ""', "endpoint must be a non-empty string"),
])
def test_a_bad_override_names_the_rule_the_scope_and_the_field(override: str,
                                                               message: str) -> None:
    text = RULES.split("[[rules.overrides]]")[0] + "[[rules.overrides]]\n" + override
    with pytest.raises(RulesError, match=re.escape("rules.toml: rule 'api_degradation'")
                       ) as error:
        parse_rules(text, "rules.toml")
    assert message in str(error.value)


def test_a_scope_overridden_twice_is_refused() -> None:
    twice = RULES + '\n[[rules.overrides]]\nendpoint = "/api/legacy"\nthreshold = 12\n'
    with pytest.raises(RulesError, match=re.escape("endpoint '/api/legacy' is overridden twice")):
        parse_rules(twice, "rules.toml")
