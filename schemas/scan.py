"""A compiled validity scan per event schema: is this Avro body storable as it is?

The sink stores an event's Avro body untouched once it has decoded it and checked it
against :mod:`schemas.validation`. Building the decoded dict and calling every rule costs
more than reading the bytes; the scan built here fuses the two — straight-line code that
reads each field (the lines of :func:`schemas.compiled.field_reads`) and tests it with
its rules' inlined ``valid_when`` expressions, building nothing.

Contract: ``scan(data, start, latest_ms)`` returns True only when ``data[start:]`` is
exactly one well-formed record of the schema that the compiled decoder reads into a
record :func:`schemas.validation.problems` finds nothing wrong with (``latest_ms`` is
the event-time horizon, :func:`schemas.validation.latest_event_time_ms`). It returns
False otherwise and never raises; the caller then takes the slow path (decode, then
``problems``) to learn and report what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from ept.schemas.compiled import compilable, field_reads, reader_namespace
from ept.schemas.registry import current_schemas
from ept.schemas.validation import EARLIEST_MS, UUID_PATTERN, rules

Scan = Callable[[bytes, int, float], bool]


def scan_source(event_name: str) -> str:
    definition = current_schemas()[event_name].definition
    conditions: dict[str, list[str]] = {}
    for rule in rules(event_name):
        conditions.setdefault(rule.field, []).append(rule.valid_when)
    lines = ["def scan(data, position, latest_ms):", "    length = len(data)", "    try:"]
    for name, reads in field_reads(definition, checked=False):
        lines += [f"        {line}" for line in reads]
        for condition in conditions.pop(name, []):
            lines += [f"        if not ({condition}):", "            return False"]
    # Any exception is a malformed body (or a value a condition cannot compare): not
    # provably valid, so the slow path decides.
    lines += ["    except Exception:", "        return False",
              "    if position != length:", "        return False"]
    for condition in (c for remaining in conditions.values() for c in remaining):
        # A rule on a field the schema lacks judges None, as ``record.get`` would.
        lines += ["    value = None", f"    if not ({condition}):", "        return False"]
    lines.append("    return True")
    return "\n".join(lines) + "\n"


@cache
def scanner(event_name: str) -> Scan | None:
    """The scan of ``event_name``'s current schema, or None when it is not compilable."""
    definition = current_schemas()[event_name].definition
    if not compilable(definition):
        return None
    namespace = {**reader_namespace(definition), "_UUID": UUID_PATTERN,
                 "_EARLIEST_MS": EARLIEST_MS, "_INF": float("inf")}
    exec(compile(scan_source(event_name), f"<ept scan {event_name}>", "exec"), namespace)
    scan: Scan = namespace["scan"]
    return scan
