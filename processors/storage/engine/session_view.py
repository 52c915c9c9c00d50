"""``system.processes`` as an analyst's session shows it: its own queries, under the ids
and the user the analyst knows.

The embedded engine runs every query under an id of its own (a UUID the client never
sent) and as its own user (``default``). The marker the engine host puts on an analyst's
query (``log_comment``: user, session, the client's query id) says whose it is. The
session's ``additional_table_filters`` keep other sessions' rows out, and ept's own
queries too (they carry no marker); :func:`rewrite` then reads each ``FROM`` / ``JOIN
system.processes`` of ClickHouse's formatting of the query through :func:`view`, where
``query_id`` and ``initial_query_id`` are the client's ids and ``user`` and
``initial_user`` the analyst's, so what the analyst sees is what a ``KILL QUERY`` of
theirs (or a driver's cancel) names.
"""

from __future__ import annotations

import re

from ept.processors.storage.analyst import ClickHouseError

PROCESSES = "system.processes"
# Quoted text is matched first and kept whole, so a literal or an identifier that spells
# "FROM system.processes" is never rewritten; group 1 is a read of the table, group 2 its
# alias.
_TOKENS = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|`(?:[^`\\]|\\.)*`"
                     r"|\b(FROM|JOIN) system\.processes\b"
                     r"(?: AS (`(?:[^`\\]|\\.)*`|[A-Za-z_][A-Za-z0-9_]*))?")


def quoted(text: str) -> str:
    """``text`` as a ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def marked(field: str) -> str:
    """The expression reading ``field`` (user, session, query_id) of a query's marker."""
    return f"JSONExtractString(Settings['log_comment'], {quoted(field)})"


def view(user: str) -> str:
    """A subquery of ``system.processes`` with the client's query ids and ``user``."""
    client_id = marked("query_id")
    return (f"(SELECT * REPLACE ({client_id} AS query_id, {client_id} AS initial_query_id, "
            f"{quoted(user)} AS user, {quoted(user)} AS initial_user) FROM {PROCESSES})")


def rewrite(sql: str, user: str, reads: int) -> str:
    """``sql`` (ClickHouse's formatting of one statement) with each ``FROM``/``JOIN
    system.processes`` read through :func:`view`, keeping its alias (``processes`` when
    it has none, so ``processes.query_id`` still resolves). ``reads`` is how many times
    the query's tree reads the table; when the text names it fewer or more times (under
    ``database=system`` as ``FROM processes``, say) ClickHouseError(497) is raised:
    a read this could not rewrite would show the engine's ids."""
    found = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal found
        if match.group(1) is None:
            return match.group(0)
        found += 1
        return f"{match.group(1)} {view(user)} AS {match.group(2) or 'processes'}"

    rewritten = _TOKENS.sub(replace, sql)
    if found != reads:
        raise ClickHouseError(497, "ACCESS_DENIED", "Not enough privileges: analysts read "
                              f"{PROCESSES} by that name, in FROM or JOIN, once for each "
                              "read of it")
    return rewritten
