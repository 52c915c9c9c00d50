"""Avro binary encoders and decoders compiled into straight-line Python per schema.

fastavro interprets a parsed schema on every call (~5 us per ept event); the functions
built here do the same work with the schema's decisions taken once, at build time
(~1-2 us). They cover the types ept's event schemas use — string, long, int, double,
boolean, enum and unions of null with one of those — and are built only for schemas
made of them (:func:`compilable`).

Contracts, relied upon by :mod:`schemas.codec`, which keeps fastavro as the fallback:

* an encoder returns exactly fastavro's bytes, or raises (any exception) — the caller
  then lets fastavro encode the record, so unusual values get fastavro's own handling
  and errors;
* a decoder returns exactly what fastavro's ``schemaless_reader`` returns for the same
  schema without logical types, or raises :class:`MalformedBody` for bytes that are not
  one well-formed record (truncated, bad union branch or enum index, invalid UTF-8,
  over-long varint, trailing bytes).

The generated source of any schema can be read with :func:`encoder_source` /
:func:`decoder_source`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

_PRIMITIVES = frozenset({"string", "long", "int", "double", "boolean"})
_INT32 = (-(1 << 31), (1 << 31) - 1)
_INT64 = (-(1 << 63), (1 << 63) - 1)

Encode = Callable[[dict[str, Any]], bytes]
Decode = Callable[[bytes, int], dict[str, Any]]


class MalformedBody(ValueError):
    """The bytes are not one well-formed record of the schema."""


class Refused(ValueError):
    """A record failed one of the checks its encoder was built with (see
    :func:`build_encoder`)."""


def _kind(node: Any) -> str | None:
    """The compilable type of a (non-union) schema node, or None."""
    if isinstance(node, str):
        return node if node in _PRIMITIVES else None
    if isinstance(node, dict):
        if node.get("type") == "enum":
            return "enum"
        if node.get("type") in _PRIMITIVES:
            return str(node["type"])
    return None


def _field_type(node: Any) -> tuple[str, bool] | None:
    """(kind, nullable) of a field's type: a compilable type or ["null", it]."""
    if isinstance(node, list):
        if len(node) == 2 and node[0] == "null" and _kind(node[1]) is not None:
            return str(_kind(node[1])), True
        return None
    kind = _kind(node)
    return None if kind is None else (kind, False)


def compilable(definition: dict[str, Any]) -> bool:
    """True when every field of the record schema ``definition`` has a compilable type."""
    return definition.get("type") == "record" and all(
        _field_type(field["type"]) is not None for field in definition["fields"])


def _fields(definition: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(name, kind, nullable) of every field of a compilable record schema."""
    fields = []
    for field in definition["fields"]:
        field_type = _field_type(field["type"])
        if field_type is None:
            raise ValueError(f"{definition.get('name')}.{field['name']}: not compilable")
        fields.append((field["name"], *field_type))
    return fields


def _enums(definition: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(field name, symbols) of every enum field, nullable or not."""
    found = []
    for field in definition["fields"]:
        field_type = _field_type(field["type"])
        if field_type is not None and field_type[0] == "enum":
            node = field["type"][1] if field_type[1] else field["type"]
            found.append((field["name"], list(node["symbols"])))
    return found


# -- encoding ---------------------------------------------------------------------------

def _varint(number: int) -> bytes:
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


# Varints of 0..2**14-1 (one or two bytes), and the low 14 bits of larger numbers as two
# continued bytes: a zigzag below 2**42 (longs in -2**41 .. 2**41-1, epoch milliseconds
# included) is at most three lookups. Kafka offsets, string lengths and event times are
# written this way for every row.
_VARINTS = tuple(_varint(n) for n in range(1 << 14))
_LOW_14 = tuple(bytes(((n & 0x7F) | 0x80, (n >> 7) | 0x80)) for n in range(1 << 14))


def zigzag(value: int) -> bytes:
    """The Avro varint of a long, already range-checked."""
    number = (value << 1) ^ (value >> 63)
    if number < 1 << 14:
        return _VARINTS[number]
    if number < 1 << 28:
        return _LOW_14[number & 0x3FFF] + _VARINTS[number >> 14]
    if number < 1 << 42:
        return (_LOW_14[number & 0x3FFF] + _LOW_14[(number >> 14) & 0x3FFF]
                + _VARINTS[number >> 28])
    return _varint(number)


# Varints of 0..2047, so short strings (nearly all) and small numbers cost a lookup.
_LENGTHS = tuple(zigzag(n) for n in range(2048))


def _long(value: int, low: int, high: int) -> bytes:
    if value.__class__ is not int or not low <= value <= high:
        raise ValueError(f"not an integer in {low}..{high}: {value!r}")
    return zigzag(value)


def _long_bytes(kind: str, value: str) -> str:
    """An expression: the encoding of the long or int ``value`` (a local). Inline for
    0..2047 (one lookup) and 2**27..2**41-1 (epoch milliseconds: zigzag's three lookups,
    the zigzag of a non-negative ``v`` being ``v << 1``); by a call otherwise."""
    low, high = _INT64 if kind == "long" else _INT32
    return (f"_LENGTHS[{value}] if {value}.__class__ is int and 0 <= {value} < 2048 "
            f"else _LOW_14[({value} << 1) & 0x3FFF] + _LOW_14[({value} >> 13) & 0x3FFF] "
            f"+ _VARINTS[{value} >> 27] if {value}.__class__ is int "
            f"and {1 << 27} <= {value} <= {min(high, (1 << 41) - 1)} "
            f"else _long({value}, {low}, {high})")


def _encode_field(index: int, name: str, kind: str, nullable: bool, read: str | None = None
                  ) -> tuple[list[str], list[str]]:
    """(statements, expressions) writing field ``name`` (read by the expression ``read``,
    by default from ``record``): the statements run first, the expressions are its pieces
    of the body, in order. Locals end in ``index``."""
    read = read or (f"record.get({name!r})" if nullable else f"record[{name!r}]")
    value = f"v{index}"
    if kind == "string":
        lengths = "_UNION_LENGTHS" if nullable else "_LENGTHS"
        long_length = f"b'\\x02' + zigzag(n{index})" if nullable else f"zigzag(n{index})"
        if nullable:
            statements = [f"{value} = {read}", f"if {value} is None:",
                          f"    h{index} = b'\\x00'", f"    {value} = b''", "else:",
                          f"    {value} = {value}.encode()"]
        else:
            statements = [f"{value} = {read}.encode()"]
        indent = "    " if nullable else ""
        statements += [f"{indent}n{index} = len({value})",
                       f"{indent}h{index} = {lengths}[n{index}] if n{index} < 2048 "
                       f"else {long_length}"]
        return statements, [f"h{index}", value]
    if kind == "long" and not nullable:
        # Nearly always epoch milliseconds: their range tested first, and zigzag's three
        # lookups are three pieces of the body (not concatenated into one).
        low, high = _INT64
        return [f"{value} = {read}",
                f"if {value}.__class__ is int and {1 << 27} <= {value} <= {(1 << 41) - 1}:",
                f"    a{index} = _LOW_14[({value} << 1) & 0x3FFF]",
                f"    b{index} = _LOW_14[({value} >> 13) & 0x3FFF]",
                f"    c{index} = _VARINTS[{value} >> 27]",
                "else:",
                f"    a{index} = _LENGTHS[{value}] if {value}.__class__ is int "
                f"and 0 <= {value} < 2048 else _long({value}, {low}, {high})",
                f"    b{index} = c{index} = b''"], [f"a{index}", f"b{index}", f"c{index}"]
    if kind in ("long", "int"):
        encoded = _long_bytes(kind, value)
    elif kind == "double":
        encoded = f"_double({value})"
    elif kind == "enum":
        encoded = f"_ENUM_{name}[{value}]"
    else:  # boolean: exactly True or False (fastavro writes any truthy value as true)
        encoded = (f"b'\\x01' if {value} is True else b'\\x00' if {value} is False "
                   "else _not_boolean()")
    if nullable:
        return [f"{value} = {read}"], [f"b'\\x00' if {value} is None "
                                       f"else b'\\x02' + ({encoded})"]
    return [f"{value} = {read}"], [encoded]


def _not_boolean() -> bytes:
    raise TypeError("not a boolean")


# The module-level names the generated code uses, bound as default arguments: a local
# is read faster than a global on every field of every call.
_ENCODER_NAMES = ("_LENGTHS", "_UNION_LENGTHS", "_LOW_14", "_VARINTS", "zigzag", "_long",
                  "_double", "_not_boolean", "_PREFIX")
# The union branch of a present value and the length of a short string, as one piece.
_UNION_LENGTHS = tuple(b"\x02" + length for length in _LENGTHS)


def _constant_runs(definition: dict[str, Any], constants: dict[str, Any]
                   ) -> dict[int, list[str]]:
    """Consecutive fields named in ``constants``, by the index of the first of each run."""
    runs: dict[int, list[str]] = {}
    previous = None
    for index, field in enumerate(definition["fields"]):
        if field["name"] in constants:
            if previous is not None and previous + 1 == index:
                runs[max(runs)].append(field["name"])
            else:
                runs[index] = [field["name"]]
            previous = index
    return runs


def encoder_source(definition: dict[str, Any], constants: dict[str, Any] | None = None,
                   fallback: bool = False, checks: dict[str, list[str]] | None = None) -> str:
    """The source of ``encode(record)``: the fields read into locals, then the body
    joined from its pieces once (no growing buffer). Each run of consecutive
    ``constants`` fields is one piece, ``_CONSTANT_<index>`` (bytes that
    :func:`build_encoder` computes). A field of ``checks`` is read as ``value`` and each
    of its expressions must be true, else Refused is raised (also when a field is absent
    or an enum symbol unknown: KeyError). With
    ``fallback``, a record the code cannot write (any other exception) is handed to
    ``_FALLBACK``."""
    constants, checks = constants or {}, checks or {}
    runs = _constant_runs(definition, constants)
    bound = [*_ENCODER_NAMES, *(f"_ENUM_{field}" for field, _ in _enums(definition)),
             *(f"_CONSTANT_{index}" for index in runs), *(["_FALLBACK"] if fallback else [])]
    statements: list[str] = []
    pieces = ["_PREFIX"]
    for index, (name, kind, nullable) in enumerate(_fields(definition)):
        if index in runs:
            pieces.append(f"_CONSTANT_{index}")
        if name in constants:
            continue
        read = None
        if name in checks:
            statements.append(f"value = record[{name!r}]")
            for condition in checks[name]:
                statements += [f"if not ({condition}):", f"    raise Refused({name!r})"]
            read = "value"
        field_statements, field_pieces = _encode_field(index, name, kind, nullable, read)
        statements += field_statements
        pieces += field_pieces
    statements.append("return b''.join((" + ", ".join(pieces) + ",))")
    lines = ["def encode(record, " + ", ".join(f"{name}={name}" for name in bound) + "):"]
    if fallback:
        lines.append("    try:")
        lines += [f"        {line}" for line in statements]
        lines += ["    except Refused:", "        raise"]
        if checks:  # a checked field absent (or an unknown enum symbol): not judged here
            lines += ["    except KeyError as missing:",
                      "        raise Refused(str(missing)) from None"]
        lines += ["    except Exception:", "        return _FALLBACK(record)"]
    else:
        lines += [f"    {line}" for line in statements]
    return "\n".join(lines) + "\n"


def build_encoder(definition: dict[str, Any], *, prefix: bytes = b"",
                  constants: dict[str, Any] | None = None,
                  fallback: Encode | None = None,
                  checks: dict[str, list[str]] | None = None,
                  names: dict[str, Any] | None = None) -> Encode:
    """The compiled encoder of the record schema ``definition`` (see :func:`compilable`).

    ``encode(record)`` returns ``prefix`` followed by the Avro body of ``record`` with the
    fields named in ``constants`` taken from there (encoded once, here): exactly
    ``prefix`` + fastavro's bytes of ``{**record, **constants}``. A record it cannot
    write exactly raises, or with ``fallback`` is handed to it: its bytes or its
    exception are then the encoder's. ``checks``: per field, Python expressions over
    ``value`` (the field; ``names`` are their globals) that must all be true, else
    :class:`Refused` is raised (never handed to ``fallback``; so is a record lacking a
    field or with an unknown enum symbol, which the caller judges). Building raises
    what the encoder would for a constant it cannot write exactly, ValueError for a check
    on a constant or on no field of the schema.
    """
    constants = constants or {}
    unchecked = set(checks or {}) - ({field["name"] for field in definition["fields"]}
                                     - set(constants))
    if unchecked:
        raise ValueError(f"checks on constants or on no field: {sorted(unchecked)}")
    namespace: dict[str, Any] = {
        "_LENGTHS": _LENGTHS, "_UNION_LENGTHS": _UNION_LENGTHS, "_LOW_14": _LOW_14,
        "_VARINTS": _VARINTS, "zigzag": zigzag,
        "_long": _long, "_double": struct.Struct("<d").pack, "_not_boolean": _not_boolean,
        "_PREFIX": bytes(prefix), "_FALLBACK": fallback, "Refused": Refused,
        **(names or {}),
    }
    for field, symbols in _enums(definition):
        namespace[f"_ENUM_{field}"] = {symbol: _LENGTHS[index]
                                       for index, symbol in enumerate(symbols)}
    by_name = {field["name"]: field for field in definition["fields"]}
    for index, run_names in _constant_runs(definition, constants).items():
        run = {**definition, "fields": [by_name[name] for name in run_names]}
        namespace[f"_CONSTANT_{index}"] = build_encoder(run)(
            {name: constants[name] for name in run_names})
    source = encoder_source(definition, constants, fallback is not None, checks)
    exec(compile(source, f"<ept encoder {definition['name']}>", "exec"), namespace)
    encode: Encode = namespace["encode"]
    return encode


# -- decoding ---------------------------------------------------------------------------

def _read_unsigned(data: bytes, position: int) -> tuple[int, int]:
    """(unsigned number, next position) of the varint at ``position``."""
    number = shift = 0
    while True:
        byte = data[position]  # IndexError when truncated: reported by the decoder
        position += 1
        number |= (byte & 0x7F) << shift
        if byte < 0x80:
            return number, position
        shift += 7
        if shift > 63:
            raise MalformedBody(f"varint longer than 10 bytes at byte {position}")


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    """(zigzag-decoded long, next position) of the varint at ``position``."""
    number, position = _read_unsigned(data, position)
    return (number >> 1) ^ -(number & 1), position


def _read_string(data: bytes, position: int) -> tuple[str, int]:
    size, position = _read_varint(data, position)
    end = position + size
    if size < 0 or end > len(data):
        raise MalformedBody(f"string of {size} bytes at byte {position} overruns the body")
    return data[position:end].decode(), end


def _long_reader(inline_bytes: int = 7) -> list[str]:
    """Lines reading a zigzag varint: up to ``inline_bytes`` bytes unrolled (timestamps
    in epoch milliseconds take six), longer ones by a call."""
    lines = ["value = data[position]", "if value < 0x80:",
             "    value = (value >> 1) ^ -(value & 1)", "    position += 1", "else:",
             "    number = value & 0x7F"]
    indent = "    "
    for index in range(1, inline_bytes):
        lines += [f"{indent}value = data[position + {index}]",
                  f"{indent}number |= (value & 0x7F) << {7 * index}",
                  f"{indent}if value < 0x80:", f"{indent}    position += {index + 1}",
                  f"{indent}else:"]
        indent += "    "
    lines += [f"{indent}number, position = _read_unsigned(data, position)",
              "    value = (number >> 1) ^ -(number & 1)"]
    return lines


# Each reader sets ``value`` and advances ``position``; one-byte varints (short strings,
# small numbers, enum indexes, union branches) and two-byte numbers are read inline,
# longer ones by a call.
def _string_reader(checked: bool) -> list[str]:
    """Lines reading a string. Unless ``checked``, a short string overrunning the body is
    not caught here: it then shows as an IndexError or as ``position`` ending beyond the
    body, which only a yes/no check can settle for (a decoder must say where)."""
    overrun = ["    if end > length:",
               "        raise MalformedBody('string overruns the body at byte %d' % position)"]
    return ["size = data[position]",
            "if size < 0x80 and not size & 1:",
            "    end = position + 1 + (size >> 1)",
            *(overrun if checked else []),
            "    value = data[position + 1:end].decode()",
            "    position = end",
            "else:",
            "    value, position = _read_string(data, position)"]


_READERS: dict[str, list[str]] = {
    "string": _string_reader(checked=True),
    "long": _long_reader(),
    "double": [
        "value = _unpack_double(data, position)[0]",
        "position += 8",
    ],
    "boolean": [
        "value = data[position]",
        "if value > 1:",
        "    raise MalformedBody('invalid boolean at byte %d' % position)",
        "value = value == 1",
        "position += 1",
    ],
}
_READERS["int"] = _READERS["long"] + [
    f"if not {_INT32[0]} <= value <= {_INT32[1]}:",
    "    raise MalformedBody('int out of range: %d' % value)",
]


def _reader_lines(kind: str, field: str, checked: bool) -> list[str]:
    if kind == "string" and not checked:
        return _string_reader(checked=False)
    if kind != "enum":
        return _READERS[kind]
    return _READERS["long"] + [
        f"if not 0 <= value < len(_ENUM_{field}):",
        f"    raise MalformedBody('{field}: enum index %d out of range' % value)",
        f"value = _ENUM_{field}[value]",
    ]


def field_reads(definition: dict[str, Any], *, checked: bool = True
                ) -> list[tuple[str, list[str]]]:
    """Per field of a compilable record schema, in order: its name and the lines that
    read it from ``data`` at ``position`` into ``value`` and advance ``position``. The
    lines expect ``length = len(data)`` and the names of :func:`reader_namespace`; on
    malformed bytes they raise MalformedBody, IndexError, struct.error or
    UnicodeDecodeError. Unless ``checked``, a short string overrunning the body is not
    caught where it is read: the caller must then treat ``position`` ending anywhere but
    at ``length`` as malformed (a yes/no check may; a decoder reporting why may not)."""
    reads = []
    for name, kind, nullable in _fields(definition):
        body = _reader_lines(kind, name, checked)
        if nullable:
            lines = ["branch = data[position]", "position += 1", "if branch == 0:",
                     "    value = None", "elif branch == 2:"]
            lines += [f"    {line}" for line in body]
            lines += ["else:", f"    raise MalformedBody('{name}: union branch byte %d' % branch)"]
        else:
            lines = list(body)
        reads.append((name, lines))
    return reads


def reader_namespace(definition: dict[str, Any]) -> dict[str, Any]:
    """The globals the lines of :func:`field_reads` use."""
    namespace: dict[str, Any] = {
        "_read_unsigned": _read_unsigned, "_read_string": _read_string,
        "_unpack_double": struct.Struct("<d").unpack_from, "_StructError": struct.error,
        "MalformedBody": MalformedBody,
    }
    for field, symbols in _enums(definition):
        namespace[f"_ENUM_{field}"] = tuple(symbols)
    return namespace


def decoder_source(definition: dict[str, Any]) -> str:
    lines = ["def decode(data, position):", "    length = len(data)", "    try:"]
    names = []
    for number, (name, reads) in enumerate(field_reads(definition)):
        lines += [f"        {line}" for line in reads]
        lines.append(f"        field_{number} = value")
        names.append(name)
    lines += [
        "    except IndexError:",
        "        raise MalformedBody('truncated: the record needs more than %d bytes' % length)"
        " from None",
        "    except _StructError:",
        "        raise MalformedBody('truncated double at byte %d' % position) from None",
        "    except UnicodeDecodeError as exc:",
        "        raise MalformedBody('invalid UTF-8 in a string: %s' % exc) from None",
        "    if position != length:",
        "        raise MalformedBody('%d trailing bytes after the record' % (length - position))",
        "    return {" + ", ".join(f"{name!r}: field_{n}" for n, name in enumerate(names)) + "}",
    ]
    return "\n".join(lines) + "\n"


def build_decoder(definition: dict[str, Any]) -> Decode:
    """The compiled decoder of the record schema ``definition``: ``decode(data, start)``
    reads one record from ``data[start:]``, which must end exactly where it ends."""
    namespace = reader_namespace(definition)
    exec(compile(decoder_source(definition), f"<ept decoder {definition['name']}>", "exec"),
         namespace)
    decode: Decode = namespace["decode"]
    return decode
