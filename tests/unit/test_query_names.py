"""Query names as a user types them."""

import pytest

from ept.processors.storage import queries
from ept.processors.storage.queries import QUERIES, UnknownQueryError, canonical_name


@pytest.mark.parametrize("typed", ["render-failure-rate", "render_failure_rate",
                                   " Render_Failure_Rate "])
def test_hyphens_underscores_and_case_name_the_same_query(typed: str) -> None:
    assert canonical_name(typed) == "render-failure-rate"


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(UnknownQueryError) as raised:
        canonical_name("render_failures")
    message = str(raised.value)
    assert "'render_failures'" in message
    assert all(name in message for name in QUERIES)


def test_the_analyst_docs_show_the_specification_queries_verbatim() -> None:
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "queries.md").read_text()
    for query in (queries.SPEC_RENDER_FAILURE_RATE, queries.SPEC_API_ERROR_TRENDS,
                  queries.SPEC_PERFORMANCE_DEGRADATION, queries.SPEC_ERROR_RATE_BY_TEMPLATE):
        assert f"```sql{query.rstrip()}\n```" in docs


def test_absurd_time_parameters_are_clear_errors() -> None:
    from ept.processors.storage.queries import parse_time

    for absurd in ("-999999999999d", "-99999999h", "+3d", "yesterday"):
        with pytest.raises(ValueError, match="since: "):
            parse_time(absurd, "since")
    assert parse_time("-2h", "since") is not None
