"""The engine's Native output rewritten for a client's protocol version
(processors/web/sql/native.py): what clickhouse-go reads over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ept.processors.storage.analyst import ClickHouseError
from ept.processors.web.sql import native

# One column of each type the walker knows, three rows each.
COLUMNS = {
    "n": "number", "s": "toString(number)", "fs": "toFixedString(toString(number), 3)",
    "lc": "toLowCardinality(toString(number % 2))",
    "lcn": "toLowCardinality(toNullable(if(number = 1, NULL, toString(number))))",
    "a": "[number, number]", "aa": "[[toString(number)], []]",
    "nul": "if(number = 1, NULL, number * 1.5)", "t": "tuple(number, toString(number))",
    "nt": "CAST((number, 'x'), 'Tuple(a UInt64, `b c` String)')",
    "m": "map(toString(number), number)", "d": "toDate('2026-12-05') + number",
    "dt": "toDateTime('2026-12-05 10:00:00', 'UTC')",
    "dt64": "toDateTime64('2026-12-05 10:00:00.123', 3, 'UTC')",
    "dec": "toDecimal64(number, 4)", "dec2": "CAST(number AS Decimal(40, 2))",
    "u": "toUUID('61f0c404-5cb3-11e7-907b-a6006ad3dba0')",
    "e": "CAST('b', 'Enum8(\\'a, (b)\\' = 1, \\'b\\' = 2)')", "b": "number = 1",
    "ip": "toIPv4('1.2.3.4')", "nothing": "NULL",
    "alc": "[toLowCardinality(toString(number))]", "pt": "CAST((1.5, 2.5), 'Point')",
    "f32": "toFloat32(number)", "after": "7",
}
PROBE = """
import json, sys, chdb
columns = json.loads(sys.argv[1])
native = lambda sql: chdb.query(sql, "Native").bytes().hex()
every = ", ".join(f"{expression} AS {name}" for name, expression in columns.items())
out = {name: native(f"SELECT {expression} AS {name} FROM numbers(3)")
       for name, expression in columns.items()}
out["*"] = native(f"SELECT {every} FROM numbers(3)")
out["big"] = native("SELECT number, toString(number) AS s FROM numbers(200000)")
out["json"] = native("SELECT '{}'::JSON AS j, 1 AS x")
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def engine_output() -> dict[str, bytes]:
    """The embedded engine's own Native output (a process of its own: the engine is one
    per process)."""
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(COLUMNS)],
                            capture_output=True, text=True, timeout=120, check=True)
    return {name: bytes.fromhex(value) for name, value in json.loads(result.stdout).items()}


def _with_kind_byte(single_column: bytes) -> bytes:
    """A one-column block's column (name, type, data) with the serialization-kind byte."""
    position = 2  # one column, three rows: one byte each
    for _ in range(2):  # the name, then the type: short strings, a one-byte length
        position += 1 + single_column[position]
    return single_column[2:position] + b"\x00" + single_column[position:]


def test_blocks_get_block_info_and_a_kind_byte_after_each_columns_type(
        engine_output: dict[str, bytes]) -> None:
    expected = native.BLOCK_INFO + bytes([len(COLUMNS), 3]) + b"".join(
        _with_kind_byte(engine_output[name]) for name in COLUMNS)
    assert native.for_revision(engine_output["*"], 54460) == expected


def test_revisions_before_custom_serialization_get_block_info_only(
        engine_output: dict[str, bytes]) -> None:
    one = engine_output["s"]
    assert native.for_revision(one, 54453) == native.BLOCK_INFO + one
    assert native.for_revision(one, 0) == one
    assert native.for_revision(b"", 54460) == b""


def test_every_block_of_a_large_result_is_rewritten(engine_output: dict[str, bytes]) -> None:
    original = engine_output["big"]
    rewritten = native.for_revision(original, 54460)
    blocks = rewritten.count(native.BLOCK_INFO + b"\x02")
    assert blocks > 1 and len(rewritten) == len(original) + blocks * (8 + 2)


def test_a_type_it_cannot_walk_is_clickhouses_error(engine_output: dict[str, bytes]) -> None:
    with pytest.raises(ClickHouseError) as error:
        native.for_revision(engine_output["json"], 54460)
    assert (error.value.code, error.value.name) == (48, "NOT_IMPLEMENTED")
    assert "type JSON" in str(error.value)
    with pytest.raises(ClickHouseError) as error:
        native.for_revision(engine_output["s"][:-2], 54460)
    assert error.value.name == "CANNOT_READ_ALL_DATA"
