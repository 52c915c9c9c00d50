"""``ept sql``'s interactive prompt: lines typed become statements (deploy/sql_prompt.py)."""

from __future__ import annotations

import pytest

from ept.deploy.sql_prompt import StatementLines


def test_a_statement_spans_lines_until_one_ends_with_a_semicolon() -> None:
    lines = StatementLines()
    assert lines.prompt == "ept> "
    assert lines.add("SELECT 1") is None
    assert lines.prompt == "...> "
    assert not lines.ends_session("exit")  # within a statement: a column named exit
    assert lines.add("  AS exit;  ") == "SELECT 1\n  AS exit"
    assert lines.prompt == "ept> "
    assert lines.add("SELECT 2;;") == "SELECT 2"


@pytest.mark.parametrize(("line", "leaves"), [("exit", True), (" QUIT ", True),
                                              ("exit;", False), ("SELECT 1;", False)])
def test_exit_or_quit_leaves_between_statements(line: str, leaves: bool) -> None:
    assert StatementLines().ends_session(line) is leaves
