"""The generated Avro writer: byte-identical to fastavro on valid records, strict on invalid ones.

Records are drawn by hypothesis from each schema's JSON (every file in
``schemas/`` plus a synthetic schema using the types no event has yet), and
the reference bytes come from ``fastavro.schemaless_writer``, an independent
implementation of the Avro binary encoding.
"""

from __future__ import annotations

import json
import math
import pickle
from io import BytesIO
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas
from connectors.avro import MAGIC, AvroDecoder, AvroEncoder, compile_writer

LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
INT_MIN, INT_MAX = -(2**31), 2**31 - 1

#: types no liqstream event uses yet, so that the generator's other branches are covered too
SYNTHETIC = {
    "type": "record", "name": "Everything", "namespace": "test",
    "fields": [
        {"name": "i", "type": "int"},
        {"name": "f", "type": "float"},
        {"name": "flag", "type": "boolean"},
        {"name": "blob", "type": "bytes"},
        {"name": "nothing", "type": "null"},
        {"name": "opt_last", "type": ["string", "null"]},
        {"name": "colour", "type": {"type": "enum", "name": "Colour", "symbols": ["red", "green", "blue"]}},
        {"name": "maybe_colour", "type": ["null", "Colour"], "default": None},
        {"name": "d_then_f", "type": "double"},
        {"name": "f2", "type": "float"},
        {"name": "opt_double", "type": ["null", "double"], "default": None},
        {"name": "opt_int", "type": ["null", "int"], "default": None},
        {"name": "opt_bool", "type": ["null", "boolean"], "default": None},
        {"name": "opt_bytes", "type": ["null", "bytes"], "default": None},
        {"name": "label", "type": "string", "default": "none"},
        {"name": "l", "type": "long"},
    ],
}
ALL_SCHEMAS = {f"{sv.event_type}.v{sv.version}": sv.raw for sv in schemas.all_versions()} | {"synthetic": SYNTHETIC}

_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=90)  # Cs: lone surrogates
_key_text = st.sampled_from(["binance-futures", "BTCUSDT", "BTC", "USDT", "ETH-PERPETUAL"])


def _value_strategy(t: Any, enums: dict[str, list[str]], allow_nan: bool) -> st.SearchStrategy:
    if isinstance(t, list):
        return st.one_of(*(_value_strategy(b, enums, allow_nan) for b in t))
    if isinstance(t, dict):
        if t["type"] == "enum":
            enums[t["name"]] = t["symbols"]
            return st.sampled_from(t["symbols"])
        t = t["type"]  # a logical type over a primitive
    if t in enums:
        return st.sampled_from(enums[t])
    return {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": st.integers(INT_MIN, INT_MAX),
        # epoch micros / millis are what liqstream writes; the full range checks the general varint
        "long": st.one_of(st.integers(LONG_MIN, LONG_MAX), st.integers(2**48, 2**55 - 1),
                          st.integers(-300, 20_000)),
        "float": st.floats(width=32, allow_nan=allow_nan),
        "double": st.floats(allow_nan=allow_nan),
        "bytes": st.binary(max_size=200),
        "string": st.one_of(_key_text, _text),
    }[t]


def _records(schema: dict, allow_nan: bool = False, omit_defaults: bool = True) -> st.SearchStrategy:
    enums: dict[str, list[str]] = {}
    fields = {f["name"]: _value_strategy(f["type"], enums, allow_nan) for f in schema["fields"]}
    full = st.fixed_dictionaries(fields)
    if not omit_defaults:
        return full
    defaulted = [f["name"] for f in schema["fields"] if "default" in f]
    # a field with a default may be left out of the record: the default is written (as fastavro does)
    return st.tuples(full, st.sets(st.sampled_from(defaulted)) if defaulted else st.just(set())).map(
        lambda rec_drop: {k: v for k, v in rec_drop[0].items() if k not in rec_drop[1]})


_PARSED: dict[str, dict] = {}


def _fastavro_bytes(schema: dict, record: dict) -> bytes:
    key = json.dumps(schema, sort_keys=True)
    if key not in _PARSED:
        _PARSED[key] = parse_schema(json.loads(key))
    buf = BytesIO()
    schemaless_writer(buf, _PARSED[key], record)
    return buf.getvalue()


def test_every_liqstream_schema_and_the_synthetic_one_compile():
    for name, schema in ALL_SCHEMAS.items():
        assert compile_writer(schema) is not None, name
    for et in sorted({sv.event_type for sv in schemas.all_versions()}):
        assert AvroEncoder(et).compiled


@pytest.mark.parametrize("name", sorted(ALL_SCHEMAS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_generated_bytes_equal_fastavro_bytes(name, data):
    schema = ALL_SCHEMAS[name]
    record = data.draw(_records(schema, allow_nan=True))
    write = compile_writer(schema, b"HDR")
    assert write(record) == b"HDR" + _fastavro_bytes(schema, record)


@pytest.mark.parametrize("event_type", sorted({sv.event_type for sv in schemas.all_versions()}))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_decode_of_encode_is_the_record(event_type, data):
    sv = schemas.latest(event_type)
    record = data.draw(_records(sv.raw, omit_defaults=False))
    value = AvroEncoder(event_type).encode(record)
    assert value[:2] == MAGIC and value[2:10] == sv.fingerprint
    assert AvroDecoder(event_type).decode(value) == record


def test_hand_computed_bytes_from_the_avro_spec():
    # Avro 1.11 spec, "Binary Encoding": long 0 -> 00, -1 -> 01, 1 -> 02, -64 -> 7f, 64 -> 80 01;
    # string "foo" -> 06 66 6f 6f; union ["null","string"] branch 1 -> 02 before the string.
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "a", "type": "long"}, {"name": "b", "type": "long"}, {"name": "c", "type": "long"},
        {"name": "d", "type": "long"}, {"name": "e", "type": "long"}, {"name": "s", "type": "string"},
        {"name": "o", "type": ["null", "string"]}, {"name": "n", "type": ["null", "string"]},
        {"name": "x", "type": "double"}, {"name": "k", "type": {"type": "enum", "name": "K", "symbols": ["p", "q"]}},
    ]}
    write = compile_writer(schema)
    got = write({"a": 0, "b": -1, "c": 1, "d": -64, "e": 64, "s": "foo", "o": "foo", "n": None, "x": 1.0, "k": "q"})
    assert got == bytes.fromhex("00" "01" "02" "7f" "8001" "06666f6f" "02" "06666f6f" "00"
                                "000000000000f03f" "02")
    # 1_700_000_000_000_000 us, zigzagged (x2), in 7-bit groups low first with continuation bits
    z = 3_400_000_000_000_000
    groups = []
    while z >= 0x80:
        groups.append((z & 0x7F) | 0x80)
        z >>= 7
    groups.append(z)
    assert len(groups) == 8
    rec = {"a": 1_700_000_000_000_000, "b": 0, "c": 0, "d": 0, "e": 0, "s": "", "o": None, "n": None, "x": 0.0, "k": "p"}
    assert write(rec)[:8] == bytes(groups)
    # extremes of the long range take ten bytes
    rec.update(a=LONG_MAX, b=LONG_MIN)
    assert write(rec)[:20] == b"\xfe" + b"\xff" * 8 + b"\x01" + b"\xff" * 9 + b"\x01"


def test_a_string_longer_than_63_bytes_gets_a_two_byte_length():
    schema = {"type": "record", "name": "R", "fields": [{"name": "s", "type": "string"}]}
    assert compile_writer(schema)({"s": "é" * 40}) == b"\xa0\x01" + "é".encode() * 40  # 80 bytes: zigzag 160


TRADE = {"exchange": "binance-futures", "symbol": "BTCUSDT", "base": "BTC", "quote": "USDT", "kind": "perpetual",
         "expiry": None, "event_time": 1_700_000_000_123_000, "ingest_time": 1_700_000_000_200_000,
         "trade_id": "42", "price": 37000.5, "size": 0.25, "notional_usd": 9250.125, "taker_side": "buy"}

INVALID = [
    ("missing required field", {k: v for k, v in TRADE.items() if k != "price"}),
    ("missing exchange", {k: v for k, v in TRADE.items() if k != "exchange"}),
    ("int for string", {**TRADE, "symbol": 123}),
    ("bytes for string", {**TRADE, "base": b"BTC"}),
    ("None for string", {**TRADE, "quote": None}),
    ("int for optional string", {**TRADE, "trade_id": 42}),
    ("string for double", {**TRADE, "price": "37000.5"}),
    ("None for double", {**TRADE, "size": None}),
    ("bool for double", {**TRADE, "notional_usd": True}),
    ("int too big for double", {**TRADE, "price": 10**400}),
    ("float for long", {**TRADE, "event_time": 1.7e15}),
    ("string for long", {**TRADE, "event_time": "1700000000123000"}),
    ("bool for long", {**TRADE, "ingest_time": True}),
    ("long overflow", {**TRADE, "ingest_time": 2**63}),
    ("long underflow", {**TRADE, "ingest_time": -(2**63) - 1}),
    ("optional long overflow", {**TRADE, "expiry": 2**64}),
    ("float for optional long", {**TRADE, "expiry": 1.5}),
    ("unknown enum symbol", {**TRADE, "taker_side": "BUY"}),
    ("unhashable enum value", {**TRADE, "kind": ["perpetual"]}),
    ("lone surrogate", {**TRADE, "symbol": "BTC\ud800USDT"}),
    ("lone surrogate in optional string", {**TRADE, "trade_id": "\udcff"}),
    ("not a mapping", ["binance-futures"]),
]


@pytest.mark.parametrize("why,record", INVALID, ids=[i[0] for i in INVALID])
def test_records_that_do_not_fit_raise_value_or_type_error(why, record):
    with pytest.raises((ValueError, TypeError)):
        AvroEncoder("trade").encode(record)


def test_lone_surrogate_is_rejected_even_after_the_string_cache_is_warm():
    enc = AvroEncoder("trade")
    enc.encode(TRADE)
    with pytest.raises(UnicodeEncodeError):
        enc.encode({**TRADE, "symbol": "\ud800"})
    assert enc.encode(TRADE) == AvroEncoder("trade").encode(TRADE)


def test_dead_letter_bytes_accept_bytearray_and_reject_str():
    rec = {"exchange": None, "event_type": None, "reason": "invalid_json", "detail": "x", "source": None,
           "received_at": 1_700_000_000_000_000, "raw": bytearray(b"{oops")}
    enc = AvroEncoder("dead_letter")
    assert AvroDecoder("dead_letter").decode(enc.encode(rec))["raw"] == b"{oops"
    with pytest.raises(TypeError):
        enc.encode({**rec, "raw": "{oops"})


def test_numpy_style_integral_and_real_values_are_accepted():
    class Micros(int):  # e.g. numpy.int64 / an int subclass: an integral value, not a coercion
        pass

    rec = {**TRADE, "event_time": Micros(TRADE["event_time"]), "price": 37000}
    assert AvroEncoder("trade").encode(rec) == AvroEncoder("trade").encode({**TRADE, "price": 37000.0})


@pytest.mark.parametrize("unsupported", [
    {"name": "xs", "type": {"type": "array", "items": "long"}},
    {"name": "m", "type": {"type": "map", "values": "string"}},
    {"name": "u", "type": ["null", "string", "long"]},
    {"name": "r", "type": {"type": "record", "name": "Inner", "fields": [{"name": "a", "type": "long"}]}},
    {"name": "fx", "type": {"type": "fixed", "name": "F", "size": 4}},
    {"name": "dec", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}},
])
def test_shapes_outside_the_generator_fall_back_to_fastavro(unsupported, tmp_path, monkeypatch):
    raw = json.loads((schemas.SCHEMA_DIR / "trade.v1.avsc").read_text())
    assert compile_writer({**raw, "fields": raw["fields"] + [unsupported]}) is None
    # and AvroEncoder still writes such a schema, through fastavro
    if unsupported["name"] != "xs":
        return
    raw["fields"].append({**unsupported, "default": [], "doc": "v2"})
    for p in schemas.SCHEMA_DIR.glob("*.avsc"):
        (tmp_path / p.name).write_text(p.read_text())
    (tmp_path / "trade.v2.avsc").write_text(json.dumps(raw))
    monkeypatch.setattr(schemas, "SCHEMA_DIR", tmp_path)
    schemas.all_versions.cache_clear()
    try:
        enc = AvroEncoder("trade")
        assert not enc.compiled
        value = enc.encode({**TRADE, "xs": [1, 2]})
        assert AvroDecoder("trade").decode(value) == {**TRADE, "xs": [1, 2]}
    finally:
        schemas.all_versions.cache_clear()


def test_nan_and_infinities_are_written_like_fastavro():
    for x in (math.nan, math.inf, -math.inf, -0.0):
        rec = {**TRADE, "price": x}
        assert AvroEncoder("trade").encode(rec)[10:] == _fastavro_bytes(schemas.latest("trade").raw, rec)


def test_an_encoder_survives_pickling_as_a_runner_would_ship_it():
    enc = AvroEncoder("trade")
    clone = pickle.loads(pickle.dumps(enc))
    assert clone.compiled and clone.encode(TRADE) == enc.encode(TRADE)


# --- the writer's caches: one writer, many records, as a replay uses it ------------------------------

_IDENTITY = st.tuples(st.sampled_from(["binance-futures", "okx"]), st.sampled_from(["BTCUSDT", "BTC-USD-SWAP"]),
                      st.sampled_from(["BTC", "ETH"]), st.sampled_from(["USDT", "USD"]),
                      st.sampled_from(["perpetual", "future"]))
#: epoch micros around 2**27-us boundaries (where the cached high varint bytes change) and the 8-byte edges
_EPOCH_US = st.one_of(st.integers(2**48, 2**55 - 1),
                      st.builds(lambda k, d: k * 2**27 + d, st.integers(2**21, 2**28 - 1), st.integers(-3, 3)),
                      st.sampled_from([2**48 - 1, 2**48, 2**55 - 1, 2**55, 1_700_000_000_000_000]))


_WARM_WRITER = compile_writer(schemas.latest("trade").raw, b"")


@settings(max_examples=300, deadline=None)
@given(identity=_IDENTITY, event_time=_EPOCH_US, ingest_time=_EPOCH_US)
def test_a_warm_writer_still_equals_fastavro(identity, event_time, ingest_time):
    # the same writer across examples: its identity-prefix and high-varint caches are hit and missed,
    # and a record sharing exchange+symbol with a cached one but not base/quote/kind gets its own bytes
    exchange, symbol, base, quote, kind = identity
    rec = {**TRADE, "exchange": exchange, "symbol": symbol, "base": base, "quote": quote, "kind": kind,
           "event_time": event_time, "ingest_time": ingest_time}
    assert _WARM_WRITER(rec) == _fastavro_bytes(schemas.latest("trade").raw, rec)


def test_successive_times_across_cache_buckets_equal_fastavro():
    # a stream's times: steps of 1 us .. 5 ms over many 8192-us buckets of the upper-bytes cache,
    # with ids of 1..70 characters (one- and two-byte length prefixes)
    write = compile_writer(schemas.latest("trade").raw, b"")
    t = 2**48 - 20_000  # starts below the 8-byte range, so the general varint path is crossed too
    for i in range(6_000):
        t += (i * 7919) % 5_000 + 1
        rec = {**TRADE, "event_time": t, "ingest_time": t + 1_000 + i % 3, "trade_id": "9" * (1 + i % 70)}
        assert write(rec) == _fastavro_bytes(schemas.latest("trade").raw, rec), (i, t)


def test_identity_prefix_cache_checks_values_and_stays_bounded():
    from connectors import avro

    write = compile_writer(schemas.latest("trade").raw, b"")
    assert write({**TRADE, "kind": "future"}) == _fastavro_bytes(schemas.latest("trade").raw, {**TRADE, "kind": "future"})
    with pytest.raises(ValueError, match="enum"):  # a miss validates each field as the field writers do
        write({**TRADE, "kind": "swap"})
    with pytest.raises(TypeError):
        write({**TRADE, "base": 5})
    for i in range(avro._STR_CACHE_MAX + 10):  # many symbols: the cache is cleared, never grows past its bound
        rec = {**TRADE, "symbol": f"S{i}"}
        assert write(rec) == _fastavro_bytes(schemas.latest("trade").raw, rec)
    cache = next(v for k, v in write.__globals__.items() if isinstance(v, dict) and k.startswith("_k")
                 and v and isinstance(next(iter(v)), tuple))
    assert len(cache) <= avro._STR_CACHE_MAX
