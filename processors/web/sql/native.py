"""ClickHouse's Native format for the protocol version a client reads.

The embedded engine writes Native as for protocol revision 0 (what ``clickhouse-local``
writes to a file): no block info, no serialization-kind byte. A ClickHouse server answering
an HTTP client that sends ``client_protocol_version`` (clickhouse-go sends its TCP protocol
version, 54460, and reads Native accordingly) writes, for revision > 0, each block's
``BlockInfo`` first and, from revision 54454 (``DBMS_MIN_REVISION_WITH_CUSTOM_SERIALIZATION``),
a byte after each column's type saying whether its serialization is custom (sparse): always
0 here, the engine's data being in the default serialization. Nothing else differs between
revision 0 and the revisions clients send for the types handled here.

:func:`for_revision` rewrites the engine's blocks that way. Inserting those bytes needs each
column's data length, so the blocks are walked by type: numbers, dates and times, decimals,
UUID, IPs, enums, Bool, String, FixedString, Nullable, Array, Tuple, Map, LowCardinality,
Nothing, SimpleAggregateFunction and the geo types. Any other type (JSON, Dynamic,
Variant, AggregateFunction) is ClickHouse's ``NOT_IMPLEMENTED`` (48), asking for a cast.
"""

from __future__ import annotations

import struct

from ept.processors.storage.analyst import ClickHouseError

CUSTOM_SERIALIZATION_REVISION = 54454
# BlockInfo: field 1 is_overflows = false, field 2 bucket_num = -1, field 0 (end).
BLOCK_INFO = b"\x01\x00\x02\xff\xff\xff\xff\x00"

_FIXED = {
    "UInt8": 1, "UInt16": 2, "UInt32": 4, "UInt64": 8, "UInt128": 16, "UInt256": 32,
    "Int8": 1, "Int16": 2, "Int32": 4, "Int64": 8, "Int128": 16, "Int256": 32,
    "Float32": 4, "Float64": 8, "BFloat16": 2, "Bool": 1, "Date": 2, "Date32": 4,
    "DateTime": 4, "DateTime64": 8, "UUID": 16, "IPv4": 4, "IPv6": 16, "Enum8": 1,
    "Enum16": 2, "Nothing": 1, "Decimal32": 4, "Decimal64": 8, "Decimal128": 16,
    "Decimal256": 32, "Time": 4, "Time64": 8,
}
_FIXED.update({f"Interval{unit}": 8 for unit in (
    "Nanosecond", "Microsecond", "Millisecond", "Second", "Minute", "Hour", "Day", "Week",
    "Month", "Quarter", "Year")})
_GEO = {"Point": "Tuple(Float64, Float64)", "Ring": "Array(Point)",
        "LineString": "Array(Point)", "MultiLineString": "Array(LineString)",
        "Polygon": "Array(Ring)", "MultiPolygon": "Array(Polygon)"}
_LC_NEEDS_GLOBAL_DICTIONARY = 1 << 8
_LC_HAS_ADDITIONAL_KEYS = 1 << 9
_LC_INDEX_SIZES = (1, 2, 4, 8)


def for_revision(native: bytes, revision: int) -> bytes:
    """The engine's Native output ``native`` (revision 0) as a server writes it for a
    client of protocol ``revision``. Raises ClickHouseError for a type it cannot walk."""
    if revision <= 0 or not native:
        return native
    reader = _Reader(native)
    out = bytearray()
    while not reader.at_end():
        columns, rows = reader.varint(), reader.varint()
        out += BLOCK_INFO + _varint(columns) + _varint(rows)
        for _ in range(columns):
            start = reader.position
            reader.string()
            type_name = bytes(reader.string()).decode()
            out += native[start:reader.position]
            if revision >= CUSTOM_SERIALIZATION_REVISION:
                out += b"\x00"
            if rows:
                start = reader.position
                column = _parse(type_name)
                reader.skip_prefix(column)
                reader.skip_data(column, rows)
                out += native[start:reader.position]
    return bytes(out)


Type = tuple[str, list[str]]


def _parse(type_name: str) -> Type:
    """``Name(arg, ...)`` as (name, args), args split at top-level commas."""
    type_name = type_name.strip()
    name, bracket, rest = type_name.partition("(")
    if not bracket:
        return _GEO_PARSED.get(name, (name, []))
    args, depth, quoted, current = [], 0, False, ""
    for char in rest[:-1]:
        if quoted:
            quoted = char != "'" or current.endswith("\\")
        elif char == "'":
            quoted = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            args.append(current.strip())
            current = ""
            continue
        current += char
    args.append(current.strip())
    return name.strip(), args


_GEO_PARSED = {name: _parse(definition) for name, definition in _GEO.items()}


def _element(argument: str) -> Type:
    """A Tuple element's type, with or without its name (``a String`` or ``String``)."""
    head = argument.split("(", 1)[0]
    if " " in head.strip() or head.startswith("`"):
        if argument.startswith("`"):
            argument = argument[argument.index("`", 1) + 1:]
        else:
            argument = argument.split(" ", 1)[1]
    return _parse(argument)


def _unsupported(name: str) -> ClickHouseError:
    return ClickHouseError(48, "NOT_IMPLEMENTED", f"Native format for client protocol "
                           f"versions above 0: type {name} is not supported by this "
                           "endpoint; CAST it to String")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.position = 0

    def at_end(self) -> bool:
        return self.position >= len(self.data)

    def take(self, size: int) -> memoryview:
        end = self.position + size
        if end > len(self.data):
            raise ClickHouseError(33, "CANNOT_READ_ALL_DATA", "Cannot read all data in "
                                  "Native format from the engine")
        chunk = self.data[self.position:end]
        self.position = end
        return chunk

    def varint(self) -> int:
        value = shift = 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.take(8))[0])

    def string(self) -> memoryview:
        return self.take(self.varint())

    def skip_prefix(self, column: Type) -> None:
        name, args = column
        if name == "LowCardinality":
            self.u64()  # the keys' serialization version
        elif name in ("Nullable", "Array"):
            self.skip_prefix(_parse(args[0]))
        elif name == "SimpleAggregateFunction":
            self.skip_prefix(_parse(args[-1]))
        elif name == "Tuple":
            for argument in args:
                self.skip_prefix(_element(argument))
        elif name == "Map":
            self.skip_prefix(_parse(args[0]))
            self.skip_prefix(_parse(args[1]))

    def skip_data(self, column: Type, rows: int) -> None:
        name, args = column
        if name in _FIXED:
            self.take(rows * _FIXED[name])
        elif name == "Decimal":
            precision = int(args[0])
            self.take(rows * (4 if precision <= 9 else 8 if precision <= 18
                              else 16 if precision <= 38 else 32))
        elif name == "String":
            for _ in range(rows):
                self.take(self.varint())
        elif name == "FixedString":
            self.take(rows * int(args[0]))
        elif name == "Nullable":
            self.take(rows)
            self.skip_data(_parse(args[0]), rows)
        elif name == "SimpleAggregateFunction":
            self.skip_data(_parse(args[-1]), rows)
        elif name == "Tuple":
            for argument in args:
                self.skip_data(_element(argument), rows)
        elif name in ("Array", "Map"):
            offsets = self.take(rows * 8)
            elements = int.from_bytes(offsets[-8:], "little") if rows else 0
            for argument in (args if name == "Map" else args[:1]):
                self.skip_data(_parse(argument), elements)
        elif name == "LowCardinality":
            self._skip_low_cardinality(_parse(args[0]), rows)
        else:
            raise _unsupported(name)

    def _skip_low_cardinality(self, column: Type, rows: int) -> None:
        keys = _parse(column[1][0]) if column[0] == "Nullable" else column
        read = 0
        while read < rows:
            flags = self.u64()
            if flags & _LC_NEEDS_GLOBAL_DICTIONARY:
                raise _unsupported("LowCardinality with a global dictionary")
            if flags & _LC_HAS_ADDITIONAL_KEYS:
                self.skip_data(keys, self.u64())
            indexes = self.u64()
            self.take(indexes * _LC_INDEX_SIZES[flags & 0xFF])
            read += indexes


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
