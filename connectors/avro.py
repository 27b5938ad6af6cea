"""Avro serde for normalized events, in Avro single-object encoding.

Each Kafka message value is ``C3 01`` + the writer schema's 8-byte CRC-64-AVRO
fingerprint (little-endian) + the Avro binary body. A consumer looks the
fingerprint up among every schema version in ``schemas/`` and resolves the
writer schema to the reader schema it was built with, so a v1 consumer keeps
decoding after a compatible v2 is published and vice versa (see ADR 002).

Encoding is on the replay hot path (one call per normalized record), and
``fastavro.schemaless_writer`` spends most of its time per call, not per byte
(~20 us for a 13-field Trade). :class:`AvroEncoder` therefore compiles, once per
schema, a function specialised to that schema's fields: flat records of
string / bytes / long / int / double / float / boolean / null / enum and
two-branch unions with null, which is every liqstream event. A schema of any
other shape (nested records, arrays, maps, fixed, wider unions) is written by
fastavro. The generated writer is stricter than fastavro: it raises
``TypeError`` / ``ValueError`` where fastavro would silently coerce ("1.5" into a
double, 1.9 into a long, True into 1), because such a record is a normalizer bug
and ``connectors.kafka.publish`` turns the error into a dead letter.

Decoding stays with fastavro's C reader, which also performs schema resolution.
"""

from __future__ import annotations

import functools
import numbers
import struct
from collections.abc import Callable
from io import BytesIO
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

import schemas

MAGIC = b"\xc3\x01"
HEADER_LEN = 10


class SchemaDecodeError(ValueError):
    """The bytes are not a liqstream event this consumer can read."""


class AvroEncoder:
    """Encodes records of one event type with the newest schema of that type (or ``version``).

    ``encode(record)`` returns the single-object-encoded bytes; it raises
    ``ValueError`` or ``TypeError`` when the record does not fit the schema (a
    required field missing, a value of the wrong type, an unknown enum symbol, a
    long out of range, a string that is not encodable as UTF-8).
    """

    def __init__(self, event_type: str, version: int | None = None) -> None:
        sv = schemas.latest(event_type) if version is None else _version(event_type, version)
        self.event_type = event_type
        self.version = sv.version
        self.schema = sv.parsed
        self.header = MAGIC + sv.fingerprint
        writer = compile_writer(sv.raw, self.header)
        self.compiled = writer is not None
        self._write = writer if writer is not None else self._encode_with_fastavro
        # Also bound as an instance attribute, so that a hot loop's ``enc.encode(r)`` calls
        # the generated function directly, without this class's method frame in between.
        self.encode = self._write  # type: ignore[method-assign]

    def encode(self, record: dict[str, Any]) -> bytes:
        return self._write(record)

    def __reduce__(self) -> tuple:
        # the generated function is rebuilt rather than pickled (e.g. when a runner ships a DoFn)
        return (AvroEncoder, (self.event_type, self.version))

    def _encode_with_fastavro(self, record: dict[str, Any]) -> bytes:
        buf = BytesIO()
        buf.write(self.header)
        schemaless_writer(buf, self.schema, record)
        return buf.getvalue()


class AvroDecoder:
    """Decodes single-object-encoded events into records of one reader schema.

    ``event_type`` fixes the reader schema (newest version unless ``version`` is
    given); the writer schema comes from the message's fingerprint.
    """

    def __init__(self, event_type: str, version: int | None = None) -> None:
        sv = schemas.latest(event_type) if version is None else _version(event_type, version)
        self.event_type = event_type
        # Times stay epoch integers (micros/millis) inside liqstream: converting
        # every timestamp to datetime would cost more than the rest of the decode.
        self.reader_schema = parse_schema(_strip_logical_types(sv.raw))
        self._writers = {fp: parse_schema(_strip_logical_types(w.raw))
                         for fp, w in schemas.by_fingerprint().items() if w.event_type == event_type}
        self._reader_fp = sv.fingerprint
        #: for batch readers (connectors.kafka.beam_source): a value starting with ``fast_header``
        #: was written with the reader schema itself and decodes with
        #: ``schemaless_reader(body, fast_schema, None)``; anything else goes through decode()
        self.fast_header = MAGIC + sv.fingerprint
        self.fast_schema = self._writers[sv.fingerprint]
        self._other_types = {fp: w.event_type for fp, w in schemas.by_fingerprint().items()}

    def decode(self, value: bytes) -> dict[str, Any]:
        if len(value) < HEADER_LEN or value[:2] != MAGIC:
            raise SchemaDecodeError("not Avro single-object encoded (missing C3 01 marker)")
        fp = value[2:HEADER_LEN]
        writer = self._writers.get(fp)
        if writer is None:
            if fp in self._other_types:
                raise SchemaDecodeError(f"message holds a {self._other_types[fp]}, expected a {self.event_type}")
            raise SchemaDecodeError(
                f"unknown writer schema fingerprint {fp.hex()}: this consumer's schemas/ "
                "folder lacks that version; upgrade liqstream"
            )
        buf = BytesIO(value)
        buf.seek(HEADER_LEN)
        try:
            if fp == self._reader_fp:
                return schemaless_reader(buf, writer, None)
            return schemaless_reader(buf, writer, self.reader_schema)
        except Exception as exc:  # fastavro raises a variety of errors on truncated/garbled bodies
            raise SchemaDecodeError(f"corrupt Avro body: {exc}") from exc


def strip_keys(node: Any, *keys: str) -> Any:
    """A copy of a schema node without the attributes ``keys`` at any depth."""
    if isinstance(node, dict):
        return {k: strip_keys(v, *keys) for k, v in node.items() if k not in keys}
    if isinstance(node, list):
        return [strip_keys(v, *keys) for v in node]
    return node


def _strip_logical_types(node: Any) -> Any:
    return strip_keys(node, "logicalType")


def _version(event_type: str, version: int) -> schemas.SchemaVersion:
    for sv in schemas.all_versions():
        if sv.event_type == event_type and sv.version == version:
            return sv
    raise KeyError(f"no schema {event_type}.v{version}")


# --- Avro binary primitives ------------------------------------------------------------------------
# Avro writes long/int as zigzag varints, float/double little-endian IEEE 754,
# string/bytes as a long length followed by the bytes (Avro 1.11 spec, "Binary Encoding").

_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1
#: one-byte varints (0..127)
_V1 = tuple(bytes((i,)) for i in range(0x80))
#: 14-bit groups as two varint bytes, both with the continuation bit
_V14_CONT = tuple(bytes(((i & 0x7F) | 0x80, ((i >> 7) & 0x7F) | 0x80)) for i in range(1 << 14))
#: a final 8..14-bit group as two varint bytes (only valid when i >= 0x80)
_V14_LAST = tuple(bytes(((i & 0x7F) | 0x80, i >> 7)) for i in range(1 << 14))
#: the first two varint bytes of an 8-byte zigzagged long 2v, by v's low 13 bits
_V13_ZIGZAG = tuple(_V14_CONT[i << 1] for i in range(1 << 13))
#: string/bytes length prefixes for lengths 0..63 (zigzag(n) = 2n fits one byte)
_LEN1 = tuple(bytes((2 * n,)) for n in range(64))
#: per-field cache bound for low-cardinality strings (exchange, symbol, base, quote)
_STR_CACHE_MAX = 4096


def _varint(z: int) -> bytes:
    """Varint of a non-negative int < 2**64 (already zigzagged)."""
    if z < 0x80:
        return _V1[z]
    if z < 0x4000:
        return _V14_LAST[z]
    parts = []
    while z >= 0x4000:
        parts.append(_V14_CONT[z & 0x3FFF])
        z >>= 14
    parts.append(_V14_LAST[z] if z >= 0x80 else _V1[z])
    return b"".join(parts)


def _as_int(v: Any, field: str, lo: int, hi: int, avro_type: str) -> int:
    if v.__class__ is not int:
        # numpy integers are fine; bool, float (even 3.0) and numeric strings are normalizer bugs
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"field {field!r}: {avro_type} expects an int, got {type(v).__name__} {v!r}")
        v = int(v)
    if not lo <= v <= hi:
        raise ValueError(f"field {field!r}: {v} is out of the Avro {avro_type} range")
    return v


def _long(v: Any, field: str) -> bytes:
    if v.__class__ is not int:
        v = _as_int(v, field, _LONG_MIN, _LONG_MAX, "long")
    z = (v << 1) ^ (v >> 63)  # zigzag; >= 2**64 exactly when v is outside the long range
    if z < 0x80:
        return _V1[z]
    # Epoch microseconds zigzag to 52 bits: 8 varint bytes, the common case on the hot path.
    if 1 << 49 <= z < 1 << 56:
        return _V14_CONT[z & 0x3FFF] + _V14_CONT[(z >> 14) & 0x3FFF] + _V14_CONT[(z >> 28) & 0x3FFF] + _V14_LAST[z >> 42]
    if z >> 64:
        raise ValueError(f"field {field!r}: {v} is out of the Avro long range")
    return _varint(z)


def _long_parts(cache: dict, v: Any, field: str) -> tuple[bytes, bytes]:
    """A long as (first two varint bytes, the rest): the generated writers' path off their cache.

    An 8-byte long (2**48 <= v < 2**55: epoch micros) is split at v's 13th bit and its upper six
    bytes (from ``u = v >> 13``: ``2v >> 14 == u``, u's three 14-bit groups) are remembered under
    u; any other value is written whole by :func:`_long`, with its checks.
    """
    if v.__class__ is int and 1 << 48 <= v < 1 << 55:
        u = v >> 13
        upper = _V14_CONT[u & 0x3FFF] + _V14_CONT[(u >> 14) & 0x3FFF] + _V14_LAST[u >> 28]
        if len(cache) >= _STR_CACHE_MAX:
            cache.clear()
        cache[u] = upper
        return _V13_ZIGZAG[v & 0x1FFF], upper
    return _long(v, field), b""


def _int(v: Any, field: str) -> bytes:
    v = _as_int(v, field, _INT_MIN, _INT_MAX, "int")
    return _varint((v << 1) ^ (v >> 31))


def _as_float(v: Any, field: str, avro_type: str) -> float:
    if isinstance(v, float):
        return v
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"field {field!r}: {avro_type} expects a number, got {type(v).__name__} {v!r}")
    try:
        return float(v)
    except OverflowError:
        raise ValueError(f"field {field!r}: {v} is beyond the {avro_type} range") from None


_PACK_D = struct.Struct("<d").pack
_PACK_F = struct.Struct("<f").pack


def _double(v: Any, field: str) -> bytes:
    return _PACK_D(v if v.__class__ is float else _as_float(v, field, "double"))


def _float(v: Any, field: str) -> bytes:
    try:
        return _PACK_F(v if v.__class__ is float else _as_float(v, field, "float"))
    except OverflowError:  # a finite double beyond float32
        raise ValueError(f"field {field!r}: {v} is beyond the float range") from None


def _boolean(v: Any, field: str) -> bytes:
    if v is True:
        return b"\x01"
    if v is False:
        return b"\x00"
    raise TypeError(f"field {field!r}: boolean expects True or False, got {type(v).__name__} {v!r}")


def _null(v: Any, field: str) -> bytes:
    if v is not None:
        raise TypeError(f"field {field!r}: null expects None, got {type(v).__name__} {v!r}")
    return b""


def _length_prefixed(b: bytes) -> bytes:
    n = len(b)
    return (_LEN1[n] if n < 64 else _varint(n << 1)) + b


def _string(v: Any, field: str) -> bytes:
    if not isinstance(v, str):
        raise TypeError(f"field {field!r}: string expects str, got {type(v).__name__} {v!r}")
    # a lone surrogate raises UnicodeEncodeError, a ValueError: the record is dead-lettered
    return _length_prefixed(v.encode("utf-8"))


def _cached_string(cache: dict, v: Any, field: str) -> bytes:
    """Encode a string of a low-cardinality field and remember it (the cache is per field)."""
    encoded = _string(v, field)
    if len(cache) >= _STR_CACHE_MAX:
        cache.clear()
    cache[v] = encoded
    return encoded


def _check_string(field: str, v: Any) -> bytes:
    return _string(v, field)


def _check_enum(table: dict, symbols: tuple[str, ...], field: str, v: Any) -> bytes:
    encoded = table.get(v)
    if encoded is None:
        _bad_enum(v, field, symbols)
    return encoded


def _encode_prefix(cache: dict, values: tuple, writers: tuple) -> bytes:
    """Encode the leading identity fields (see ``_Generator.leading_identity``) and remember them."""
    encoded = b"".join([write(v) for write, v in zip(writers, values, strict=True)])
    if len(cache) >= _STR_CACHE_MAX:
        cache.clear()
    cache[values] = encoded
    return encoded


def _bytes(v: Any, field: str) -> bytes:
    if v.__class__ is not bytes:
        if not isinstance(v, (bytes, bytearray, memoryview)):
            raise TypeError(f"field {field!r}: bytes expects bytes, got {type(v).__name__}")
        v = bytes(v)
    return _length_prefixed(v)


def _bad_enum(v: Any, field: str, symbols: tuple[str, ...]) -> None:
    raise ValueError(f"field {field!r}: {v!r} is not one of the enum symbols {list(symbols)}")


_PRIMITIVE_WRITERS: dict[str, Callable[[Any, str], bytes]] = {
    "string": _string, "bytes": _bytes, "long": _long, "int": _int,
    "double": _double, "float": _float, "boolean": _boolean, "null": _null,
}
_STRUCT_CODES = {"double": "d", "float": "f"}


# --- the code generator -----------------------------------------------------------------------------


class _Unsupported(Exception):
    """The schema has a shape the generator does not handle; fastavro writes it."""


def compile_writer(schema: dict, header: bytes = b"") -> Callable[[dict[str, Any]], bytes] | None:
    """A function writing ``header`` + the Avro binary body of a record of ``schema``.

    ``schema`` is the schema as JSON (a flat record). Returns None when a field's
    type is outside what the generator supports; the caller then uses fastavro.
    """
    try:
        return _Generator(schema, header).build()
    except _Unsupported:
        return None


class _Generator:
    def __init__(self, schema: dict, header: bytes) -> None:
        if not isinstance(schema, dict) or schema.get("type") != "record":
            raise _Unsupported("top level is not a record")
        self.schema = schema
        self.namespace = {
            "_join": b"".join, "_header": header, "_long": _long, "_int": _int, "_double": _double,
            "_float": _float, "_boolean": _boolean, "_null": _null, "_string": _string, "_bytes": _bytes,
            "_cached_string": _cached_string, "_bad_enum": _bad_enum, "_as_float": _as_float,
            "_C": _V14_CONT, "_L": _V14_LAST, "_long_parts": _long_parts, "_CZ": _V13_ZIGZAG, "_encode_prefix": _encode_prefix, "_LEN1": _LEN1, "_varint": _varint,
        }
        self.enums: dict[str, dict] = {}  # named enums, by short and full name, for later references
        self.lines: list[str] = []
        self.parts: list[str] = ["_header"]
        self.pending_struct: list[tuple[str, str]] = []  # (struct code, local var) of consecutive doubles/floats
        self.n = 0

    def const(self, value: Any) -> str:
        name = f"_k{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def build(self) -> Callable[[dict[str, Any]], bytes]:
        fields = self.schema.get("fields")
        if not isinstance(fields, list):
            raise _Unsupported("record without fields")
        n_lead = self.leading_identity(fields)
        for f in fields[n_lead:]:
            self.field(f)
        self.flush_struct()
        name = "".join(c if c.isalnum() else "_" for c in str(self.schema.get("name", "record")))
        body = "\n".join("        " + line for line in self.lines)
        src = (
            f"def encode_{name}(r):\n"
            "    try:\n"
            f"{body}\n"
            f"        return _join(({', '.join(self.parts)},))\n"
            "    except KeyError as exc:\n"
            "        raise ValueError(f'no value and no default for field {exc}') from None\n"
            "    except OverflowError as exc:  # struct: a finite double beyond float32\n"
            "        raise ValueError(str(exc)) from None\n"
        )
        exec(compile(src, f"<avro writer {name}>", "exec"), self.namespace)  # noqa: S102 - our own schema files
        fn = self.namespace[f"encode_{name}"]
        fn.__doc__ = f"Generated Avro writer for {self.schema.get('name')}.\n\n{src}"
        return fn

    def leading_identity(self, fields: list) -> int:
        """One cache lookup for the leading run of required string / enum fields; returns its length.

        Every liqstream event starts with exchange, symbol, base, quote, kind: a few
        hundred distinct combinations, so their encoding is looked up by the tuple of
        values (one hash of a tuple of already-hashed strings) instead of field by field.
        A miss encodes each field with the same checks as :meth:`field` would.
        """
        writers: list[Callable[[Any], bytes]] = []
        for f in fields:
            if not isinstance(f, dict) or not isinstance(f.get("name"), str) or "default" in f:
                break
            ftype = self.resolve(f.get("type"))
            if ftype == "string":
                writers.append(functools.partial(_check_string, f["name"]))
            elif isinstance(ftype, dict):
                table, _ = self.enum_table(ftype)
                writers.append(functools.partial(_check_enum, self.namespace[table], tuple(ftype["symbols"]), f["name"]))
            else:
                break
        if len(writers) < 2:
            return 0
        names = []
        for f in fields[: len(writers)]:
            self.n += 1
            names.append(f"v{self.n}")
            self.lines.append(f"v{self.n} = r[{f['name']!r}]")
        cache: dict = {}
        key = f"({', '.join(names)},)"
        self.lines.append(f"p0 = {self.const(cache.get)}({key})")
        self.lines.append(f"if p0 is None: p0 = _encode_prefix({self.const(cache)}, {key}, {self.const(tuple(writers))})")
        self.parts.append("p0")
        return len(writers)

    def flush_struct(self) -> None:
        if not self.pending_struct:
            return
        fmt = "<" + "".join(code for code, _ in self.pending_struct)
        pack = self.const(struct.Struct(fmt).pack)
        self.parts.append(f"{pack}({', '.join(var for _, var in self.pending_struct)})")
        self.pending_struct = []

    def field(self, f: dict) -> None:
        name = f.get("name")
        if not isinstance(name, str):
            raise _Unsupported(f"field name {name!r}")
        ftype = self.resolve(f.get("type"))
        if "default" in f and ftype == "bytes":  # JSON defaults of bytes are latin-1 strings
            raise _Unsupported("bytes field with a default")
        self.n += 1
        v = f"v{self.n}"
        key = repr(name)
        if "default" in f:
            self.lines.append(f"{v} = r.get({key}, {self.const(f['default'])})")
        else:
            self.lines.append(f"{v} = r[{key}]")
        prim = ftype if isinstance(ftype, str) else None
        if prim in _STRUCT_CODES:
            # consecutive doubles/floats are packed by one struct call
            self.lines.append(f"if {v}.__class__ is not float: {v} = _as_float({v}, {key}, {prim!r})")
            self.pending_struct.append((_STRUCT_CODES[prim], v))
            return
        self.flush_struct()
        if prim == "string":
            cache = {}
            get, cache_name = self.const(cache.get), self.const(cache)
            p = f"p{self.n}"
            self.lines.append(f"{p} = {get}({v})")
            self.lines.append(f"if {p} is None: {p} = _cached_string({cache_name}, {v}, {key})")
            self.parts.append(p)
        elif prim == "long":
            # the 8-byte varint of epoch microseconds (zigzag of a positive v is 2v), inlined: its first
            # byte pair from a table by v's low 13 bits, the other six bytes (v >> 13: they change
            # every 8.192 ms of event time) from a small per-field cache, since the times of a
            # stream's successive events are close. Only in-range values are ever cached, so a hit
            # is also the range check; anything else goes through _long_parts
            p = [f"p{self.n}{c}" for c in "ab"]
            upper_cache = {}
            self.lines.append(f"{p[1]} = {self.const(upper_cache.get)}({v} >> 13) if {v}.__class__ is int else None")
            self.lines.append(f"if {p[1]} is not None: {p[0]} = _CZ[{v} & 0x1FFF]")
            self.lines.append(f"else: {p[0]}, {p[1]} = _long_parts({self.const(upper_cache)}, {v}, {key})")
            self.parts.extend(p)
        elif prim is not None:
            self.parts.append(f"_{prim}({v}, {key})")
        elif isinstance(ftype, dict):  # enum
            table, symbols = self.enum_table(ftype)
            p = f"p{self.n}"
            self.lines.append(f"{p} = {self.const(self.namespace[table].get)}({v})")
            self.lines.append(f"if {p} is None: _bad_enum({v}, {key}, {symbols})")
            self.parts.append(p)
        else:  # two-branch union with null: ("union", index of null, other branch)
            _, null_index, other = ftype
            null_tag, other_tag = (b"\x00", b"\x02") if null_index == 0 else (b"\x02", b"\x00")
            if isinstance(other, dict):
                table, symbols = self.enum_table(other, prefix=other_tag)
                expr = f"({table}.get({v}) or _bad_enum({v}, {key}, {symbols}))"
                self.parts.append(f"({self.const(null_tag)} if {v} is None else {expr})")
            elif other == "string":
                # optional ids (trade_id, order_id): unique values, so encoded inline rather than cached
                p, b = f"p{self.n}", f"b{self.n}"
                self.lines.append(f"if {v} is None: {p} = {self.const(null_tag)}; {b} = b''")
                tagged_len = self.const(tuple(other_tag + n for n in _LEN1))  # branch tag + length, one lookup
                self.lines.append(f"elif {v}.__class__ is str: {b} = {v}.encode(); {p} = {tagged_len}[len({b})] "
                                  f"if len({b}) < 64 else {self.const(other_tag)} + _varint(len({b}) << 1)")
                self.lines.append(f"else: {p} = {self.const(other_tag)} + _string({v}, {key}); {b} = b''")
                self.parts.extend((p, b))
            else:
                expr = f"{self.const(other_tag)} + _{other}({v}, {key})"
                self.parts.append(f"({self.const(null_tag)} if {v} is None else {expr})")

    def enum_table(self, enum: dict, prefix: bytes = b"") -> tuple[str, str]:
        symbols = tuple(enum["symbols"])
        table = {s: prefix + _varint(i << 1) for i, s in enumerate(symbols)}
        return self.const(table), self.const(symbols)

    def resolve(self, t: Any, in_union: bool = False) -> Any:
        """'long' etc. for primitives, the enum dict for enums, ('union', null_index, other) for optionals."""
        if isinstance(t, str):
            if t in _PRIMITIVE_WRITERS:
                return t
            if t in self.enums:
                return self.enums[t]
            raise _Unsupported(f"named type {t!r}")
        if isinstance(t, dict):
            kind = t.get("type")
            if kind == "enum":
                symbols = t.get("symbols")
                if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
                    raise _Unsupported("enum without symbols")
                name = t.get("name", "")
                ns = t.get("namespace") or self.schema.get("namespace")
                self.enums[name] = t
                if ns and "." not in name:
                    self.enums[f"{ns}.{name}"] = t
                return t
            # logical types (timestamp-micros on a long, ...) travel as their underlying type:
            # liqstream records hold epoch integers, never datetime objects
            if kind in _PRIMITIVE_WRITERS and set(t) <= {"type", "logicalType", "doc"} and \
                    t.get("logicalType") in (None, "timestamp-millis", "timestamp-micros"):
                return kind
            raise _Unsupported(f"type {t!r}")
        if isinstance(t, list) and not in_union:
            if len(t) != 2 or "null" not in t:
                raise _Unsupported("union other than [null, X]")
            null_index = t.index("null")
            other = self.resolve(t[1 - null_index], in_union=True)
            if other == "null":
                raise _Unsupported("union of null with null")
            return ("union", null_index, other)
        raise _Unsupported(f"type {t!r}")
