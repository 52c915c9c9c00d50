"""What an analyst's query may use, judged on ClickHouse's own parse of it.

The engine host asks ClickHouse for the query's syntax tree (``EXPLAIN AST``) and, for a
SELECT, its resolved query tree (``EXPLAIN QUERY TREE``, where ``*`` is expanded and
every column names the table it comes from), and this module reads those dumps. Since
ClickHouse parsed the text, comments, quoting, letter case and nesting cannot hide a
function from it. Refused, before anything runs:

* table functions other than pure generators (:data:`TABLE_FUNCTIONS`): ``file``, ``url``,
  ``remote``, ``s3``, ``executable``, ``mysql``, ``python``, ... all read outside the
  tables;
* the scalar functions that read files (:data:`DENIED_FUNCTIONS`) and ``INTO OUTFILE``;
* the columns the server setup withholds from analysts (:data:`WITHHELD_COLUMNS`,
  ``deploy/clickhouse/users.sql``), ``SELECT *`` over them included, as a server does.

This is the first layer; the engine host's Landlock sandbox is what holds if anything
slips by (see docs/security.md). Every function raises ClickHouseError, ClickHouse's own
code for what it refuses (READONLY for a table function, as ``readonly = 1`` does).
"""

from __future__ import annotations

import re

from ept.processors.storage.analyst import ClickHouseError
from ept.processors.storage.tables import RAW_TABLE

TABLE_FUNCTIONS = frozenset({"numbers", "numbers_mt", "zeros", "zeros_mt", "generaterandom",
                             "generate_series", "generateseries", "values", "null", "primes"})
DENIED_FUNCTIONS = frozenset({"file", "catboostevaluate", "addresstoline",
                              "addresstolinewithinlines", "addresstosymbol", "demangle",
                              "getclienthttpheader"})
WITHHELD_COLUMNS = {RAW_TABLE: frozenset({"user_id", "account_id"})}
SELECT_ROOTS = ("SelectWithUnionQuery", "SelectIntersectExceptQuery")

_LINE = re.compile(r"^( *)([A-Z][A-Za-z0-9_]*)(?: (\S+))?")
_TABLE = re.compile(r"^\s*TABLE id: (\d+),.*?table_name: ([^,\s]+)")
_COLUMN = re.compile(r"^\s*COLUMN id: \d+, column_name: (.+?), result_type: .*?source_id: (\d+)")


def check_syntax(ast: str) -> str:
    """Refuses what ``ast`` (``EXPLAIN AST``'s dump) may not use; returns the root node's
    kind (``SelectWithUnionQuery``, ``KillQueryQuery``, ...)."""
    lines = [line for line in ast.splitlines() if line.strip()]
    if not lines:
        raise ClickHouseError(62, "SYNTAX_ERROR", "Empty query")
    root = lines[0].split()[0]
    stack: list[tuple[int, str]] = []  # (depth, kind) of the ancestors of a line
    for line in lines:
        match = _LINE.match(line)
        if match is None:  # not the dump this reads: refuse what could not be judged
            raise ClickHouseError(497, "ACCESS_DENIED", "Not enough privileges: the query "
                                  "could not be checked (an unexpected parse)")
        depth, kind, name = len(match.group(1)), match.group(2), match.group(3) or ""
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        if kind == "Function":
            function = name.lower()
            if parent == "TableExpression" and function not in TABLE_FUNCTIONS:
                raise ClickHouseError(164, "READONLY",  # as ClickHouse's readonly = 1
                                      f"Table function {name} is not allowed in readonly "
                                      "mode: it reads outside the database")
            if function in DENIED_FUNCTIONS:
                raise ClickHouseError(497, "ACCESS_DENIED",
                                      f"Not enough privileges: the function {name} reads "
                                      "the server's files, analysts may not use it")
        if depth == 1 and root in SELECT_ROOTS and kind == "Literal":
            raise ClickHouseError(344, "SUPPORT_IS_DISABLED",
                                  "INTO OUTFILE is not allowed over the HTTP interface")
        if root not in SELECT_ROOTS and (
                kind in ("Asterisk", "QualifiedAsterisk", "ColumnsRegexpMatcher",
                         "ColumnsListMatcher") or (kind == "Identifier" and _withheld_name(name))):
            raise ClickHouseError(497, "ACCESS_DENIED",
                                  "Not enough privileges: analysts read the withheld columns "
                                  f"({_withheld_list()}) and * only in a SELECT")
        stack.append((depth, kind))
    return root


def check_columns(query_tree: str) -> list[str]:
    """Refuses a SELECT whose query tree (``EXPLAIN QUERY TREE``'s dump) reads a withheld
    column, with ClickHouse's ACCESS_DENIED as a server with column grants would; returns
    the tables it reads, one name (``database.table``) for each read."""
    tables: dict[str, str] = {}
    columns: list[tuple[str, str]] = []
    for line in query_tree.splitlines():
        if (table := _TABLE.match(line)) is not None:
            tables[table.group(1)] = table.group(2)
        elif (column := _COLUMN.match(line)) is not None:
            columns.append((column.group(1), column.group(2)))
    for name, source in columns:
        table_name = tables.get(source, "")
        withheld = WITHHELD_COLUMNS.get(table_name.rpartition(".")[2], frozenset())
        if name in withheld:
            raise ClickHouseError(
                497, "ACCESS_DENIED", "Not enough privileges. To execute this query, it's "
                f"necessary to have the grant SELECT({name}) ON {table_name}")
    return list(tables.values())


def _withheld_name(identifier: str) -> bool:
    last = identifier.rpartition(".")[2].strip("`\"")
    return any(last in columns for columns in WITHHELD_COLUMNS.values())


def _withheld_list() -> str:
    return ", ".join(sorted(set().union(*WITHHELD_COLUMNS.values())))
