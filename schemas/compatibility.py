"""Backward-compatibility check of a schema change, by Avro schema resolution on real data.

Random records written with the old (writer) schema must be readable with the new
(reader) schema. fastavro's resolution raises on every incompatible change: a new field
without a default, a removed enum symbol without a default, a type that cannot be promoted.
"""

from __future__ import annotations

import io
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.utils import generate_many


def incompatibilities(writer: dict[str, Any], reader: dict[str, Any], samples: int = 200
                      ) -> list[str]:
    """Why data written with ``writer`` cannot be read with ``reader``; empty when it can."""
    old = parse_schema(writer)
    new = parse_schema(reader)
    found: set[str] = set()
    for record in generate_many(old, samples):
        buffer = io.BytesIO()
        schemaless_writer(buffer, old, record)
        buffer.seek(0)
        try:
            schemaless_reader(buffer, old, new)
        except Exception as exc:
            found.add(f"{type(exc).__name__}: {exc}")
    return sorted(found)
