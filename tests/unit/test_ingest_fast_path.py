"""The ingest fast paths give what the general path gives (ADR 005).

Three accelerations, each checked against the path it short-cuts:

* ``parse_json`` (msgspec, stdlib fallback) against ``json.loads(bytes.decode())``:
  same value (type included: big ints stay ints, -0.0 stays -0.0), or the same
  exception class, on random documents and random bytes;
* Binance ``_trade`` (dict fast path) against ``_trade_checked``: the same record
  or the same dead-letter reason, on generated well-formed and edge aggTrades;
* every venue's ``normalize_raw`` (typed msgspec decode of the trade frame)
  against ``normalize`` on the parsed message: None, or the same records; and
  ``route`` (which tries it first) against ``route`` of the parsed object (which
  never does): the same records / reason / ignore.

Hand-computed cases pin the values themselves and the edge inputs where msgspec
and json.loads differ (NaN/Infinity, 1e400, big ints, duplicate keys, invalid
UTF-8, lone surrogates, nesting deeper than the parsers): each lands in exactly
one place.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.avro import AvroEncoder
from connectors.exchanges import NORMALIZERS
from connectors.exchanges.binance import BinanceFuturesNormalizer
from connectors.exchanges.fast_trades import LAX_FLOATS
from connectors.normalize import Ignored, Malformed, Outcome, parse_json, route

RECV = 1_700_000_000_000_000
T_MS = 1_700_000_000_100
_SETTINGS = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _canon(v: Any) -> Any:
    """A value with its JSON types made explicit (1 != 1.0 != True here, -0.0 != 0.0, NaN == NaN)."""
    if isinstance(v, bool) or v is None:
        return (type(v).__name__, v)
    if isinstance(v, int):
        return ("int", v)
    if isinstance(v, float):
        return ("float", repr(v))
    if isinstance(v, str):
        return ("str", v)
    if isinstance(v, list):
        return ("list", [_canon(x) for x in v])
    return ("dict", [(k, _canon(x)) for k, x in v.items()])  # key order kept: it is part of the value


def _stdlib(raw: bytes) -> Any:
    return json.loads(raw.decode("utf-8"))


def _result(fn, raw: bytes) -> tuple:
    try:
        return ("value", _canon(fn(raw)))
    except (ValueError, RecursionError) as exc:
        return ("error", type(exc))


# --- parse_json == json.loads --------------------------------------------------------------------

_json_numbers = st.one_of(
    st.integers(), st.integers(min_value=-(10**40), max_value=10**40), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**30, 5e-324, 1.7976931348623157e308, -0.0]),
)
_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), _json_numbers, st.text(max_size=12)),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=4)),
    max_leaves=16,
)
_number_texts = st.builds(
    lambda sign, whole, frac, exp: f"{sign}{whole}{frac}{exp}",
    st.sampled_from(["", "-"]), st.from_regex(r"0|[1-9][0-9]{0,30}", fullmatch=True),
    st.one_of(st.just(""), st.from_regex(r"\.[0-9]{1,25}", fullmatch=True)),
    st.one_of(st.just(""), st.from_regex(r"[eE][+-]?[0-9]{1,3}", fullmatch=True)),
)


@settings(max_examples=300, **_SETTINGS)
@given(value=_json_values, ascii_only=st.booleans(), numbers=st.lists(_number_texts, max_size=4))
def test_parse_json_equals_json_loads_on_valid_documents(value: Any, ascii_only: bool, numbers: list[str]) -> None:
    # numbers as a venue writes them (any digits, exponents up to 1e999: inf for both) beside the value
    text = json.dumps([value, *map(json.loads, numbers)], ensure_ascii=ascii_only)
    raw = text.encode()
    assert _result(parse_json, raw) == _result(_stdlib, raw)


_edits = st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe0\x80\xaf", b"\x80",
                          b"NaN", b"-Infinity", b"1e400", b"\\ud800", b'"\\udc00"', b",", b"}", b" ", b"\x00"])


@settings(max_examples=300, **_SETTINGS)
@given(value=_json_values, edits=st.lists(st.tuples(st.integers(min_value=0), _edits), max_size=3),
       junk=st.binary(max_size=24))
def test_parse_json_equals_json_loads_on_damaged_bytes(value: Any, edits: list, junk: bytes) -> None:
    raw = json.dumps(value, ensure_ascii=False).encode()
    for at, piece in edits:
        at %= len(raw) + 1
        raw = raw[:at] + piece + raw[at:]
    for candidate in (raw, junk, raw + junk):
        assert _result(parse_json, candidate) == _result(_stdlib, candidate)


@pytest.mark.parametrize(("raw", "expected"), [
    (b'{"a":NaN}', ("dict", [("a", ("float", "nan"))])),  # msgspec refuses NaN: the stdlib reads it
    (b"-Infinity", ("float", "-inf")),
    (b"1e400", ("float", "inf")),
    (b"123456789012345678901234567890", ("int", 123456789012345678901234567890)),  # not a float (orjson would)
    (b'{"p":"1","p":"2"}', ("dict", [("p", ("str", "2"))])),  # the last duplicate wins, as in json.loads
    (b'"\\ud800"', ("str", "\ud800")),  # a lone surrogate escape: json.loads keeps it
    (b'"\\ud83d\\ude00"', ("str", "\U0001f600")),
])
def test_parse_json_edge_values(raw: bytes, expected: Any) -> None:
    assert _canon(parse_json(raw)) == expected


@pytest.mark.parametrize(("raw", "error"), [
    (b'"\xff"', UnicodeDecodeError), (b'"\xed\xa0\x80"', UnicodeDecodeError),  # CESU-8 surrogate: strict UTF-8
    (b"[1,]", json.JSONDecodeError), (b"\xef\xbb\xbf{}", json.JSONDecodeError), (b"", json.JSONDecodeError),
])
def test_parse_json_errors_are_the_stdlib_errors(raw: bytes, error: type) -> None:
    with pytest.raises(error):
        parse_json(raw)


class _LaxFloat(msgspec.Struct):
    p: float


_decode_lax = msgspec.json.Decoder(_LaxFloat, **LAX_FLOATS).decode


@settings(max_examples=400, **_SETTINGS)
@given(text=st.one_of(_number_texts, st.text(alphabet="0123456789.eE+-_ infatyINFATY\u0661", max_size=12),
                      st.floats().map(repr), st.sampled_from(["-0", "-0.0", "+1", "1.", ".5", " 1", "1 ", "1_0"])))
def test_lax_float_fields_read_strings_as_float_does(text: str) -> None:
    # the typed trade decoders read decimal strings into floats (fast_trades.LAX_FLOATS): where they take
    # a string, float() takes it too and gives the same value, or both values are refused as not > 0
    try:
        lax = _decode_lax(json.dumps({"p": text}).encode()).p
    except msgspec.ValidationError:
        return
    expected = float(text)  # must not raise: msgspec accepted nothing float() refuses
    if 0.0 < expected < math.inf or 0.0 < lax < math.inf:
        assert repr(lax) == repr(expected), text


# --- where edge inputs land: exactly one place, by hand -------------------------------------------


def _agg(**data: Any) -> dict:
    base = {"e": "aggTrade", "E": T_MS + 5, "a": 26129, "s": "BTCUSDT", "p": "40000.5", "q": "0.25", "f": 100,
            "l": 105, "T": T_MS, "m": True}
    base.update(data)
    return {"stream": "btcusdt@aggTrade", "data": {k: v for k, v in base.items() if v is not _DROP}}


_DROP = object()


def _text(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"))


def _place(out: Outcome) -> tuple:
    places = bool(out.records) + (out.dead is not None) + (out.ignored is not None)
    assert places == 1, out
    if out.records:
        return ("records", out.records)
    if out.dead is not None:
        return ("dead", out.dead.reason)
    return ("ignored", out.ignored)


def _well_formed_btc(trade_id: str | None = "26129", price: float = 40000.5, size: float = 0.25,
                     taker: str = "sell") -> dict:
    return {"exchange": "binance-futures", "symbol": "BTCUSDT", "base": "BTC", "quote": "USDT", "kind": "perpetual",
            "expiry": None, "event_time": T_MS * 1000, "ingest_time": RECV, "trade_id": trade_id, "price": price,
            "size": size, "notional_usd": price * size, "taker_side": taker}


@pytest.mark.parametrize(("raw", "expected"), [
    # the hand-computed record: 40000.5 x 0.25 = 10000.125 USD, m=true: the buyer made, the taker sold
    (_text(_agg()), ("records", [("trade", {**_well_formed_btc(), "notional_usd": 10000.125})])),
    (_text(_agg()).replace('"T":1700000000100', '"T":NaN'), ("dead", "bad_value")),
    (_text(_agg()).replace('"p":"40000.5"', '"p":Infinity'), ("dead", "bad_value")),
    (_text(_agg()).replace('"T":1700000000100', '"T":1e400'), ("dead", "bad_value")),
    (_text(_agg()).replace('"q":"0.25"', '"q":-0.25'), ("dead", "bad_value")),
    # a 30-digit id stays an int through the parser, so the id is its digits
    (_text(_agg(a=123456789012345678901234567890)),
     ("records", [("trade", _well_formed_btc(trade_id="123456789012345678901234567890"))])),
    # duplicate keys: the last wins, in the typed fast path as in json.loads
    (_text(_agg()).replace('"p":"40000.5"', '"p":"1","p":"30000"'),
     ("records", [("trade", _well_formed_btc(price=30000.0))])),
    (_text(_agg()).replace('"m":true', '"m":false,"m":true'), ("records", [("trade", _well_formed_btc())])),
    # a lone surrogate in a field the record does not use: msgspec refuses, json.loads reads, the trade stands
    (_text(_agg()).replace('"f":100', '"f":"\\ud800"'), ("records", [("trade", _well_formed_btc())])),
    (_text(_agg(s="\ud800")), ("dead", "unknown_symbol")),
    (_text(_agg()).encode()[:-3] + b"\xff}}", ("dead", "invalid_json")),
    (_text(_agg(s="BTC\u00e9USDT")).encode("utf-8").replace(b"\\u00e9", b"\xed\xa0\x80"), ("dead", "invalid_json")),
    ("[" * 100_000 + "]" * 100_000, ("dead", "invalid_json")),  # deeper than either parser: a dead letter
    ("NaN", ("dead", "unknown_message")),
    ('{"stream":"x","data":{"e":"\ud800"}}', ("dead", "invalid_json")),  # text holding a lone surrogate itself
    (" ping ", ("ignored", "heartbeat")),
    (_text({"result": None, "id": 1}), ("ignored", "subscription_reply")),
])
def test_edge_inputs_land_in_one_place(raw: str | bytes, expected: tuple) -> None:
    out = route(BinanceFuturesNormalizer(), raw, RECV)
    place = _place(out)
    assert place[0] == expected[0]
    if place[0] != "records":
        assert place == expected
        return
    assert len(place[1]) == len(expected[1])
    for (et, rec), (want_et, want) in zip(place[1], expected[1], strict=True):
        assert et == want_et
        assert rec.keys() == want.keys()
        for k, v in want.items():
            assert rec[k] == (pytest.approx(v, rel=1e-12) if isinstance(v, float) else v), k
        AvroEncoder(et).encode(rec)


# --- Binance: the dict fast path == the checked path ----------------------------------------------

_decimal_texts = st.one_of(
    st.decimals(min_value=0, max_value=10**7, allow_nan=False, places=6).map(str),
    st.floats(min_value=1e-9, max_value=1e9).map(repr),
    st.sampled_from(["0", "-1", "0.0", "-0.0", "1e400", "1e-400", "nan", "NaN", "inf", "-inf", " 12.5 ", "1_000",
                     "abc", "", "0x10", "5e-324"]),
)
_prices = st.one_of(_decimal_texts, st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 10**6),
                    st.sampled_from([None, True, [], {}, 10**400]))
_times = st.one_of(
    st.integers(min_value=1_230_768_000_000, max_value=4_102_444_800_000),
    st.sampled_from([1_230_768_000_000 - 1, 4_102_444_800_000 + 1, 0, -1, 2**63, T_MS * 1000, True, None,
                     float(T_MS), float("inf"), str(T_MS), "x", 10**30]),
)
_ids = st.one_of(st.integers(min_value=0, max_value=2**64), st.text(max_size=8), st.none(),
                 st.sampled_from([1.5, [1], {"x": 1}, 10**30, True]))
_symbols = st.one_of(st.sampled_from(["BTCUSDT", "ETHUSDT", "1000PEPEUSDT", "BTCUSDT_240329", "NOPE", "BTCUSD", ""]),
                     st.sampled_from([None, 5, ["BTCUSDT"]]))
_makers = st.one_of(st.booleans(), st.sampled_from([0, 1, "true", None]))


@st.composite
def agg_trade_payloads(draw: st.DrawFn) -> dict:
    """aggTrade / trade payloads: mostly well-formed, each field sometimes an edge value or missing."""
    def pick(strategy: st.SearchStrategy, good: Any) -> Any:
        roll = draw(st.integers(0, 9))
        if roll < 6:
            return good
        return _DROP if roll == 9 else draw(strategy)

    t = draw(st.integers(min_value=1_230_768_000_000, max_value=4_102_444_800_000))
    price = draw(st.decimals(min_value="0.0000001", max_value=10**6, places=7, allow_nan=False))
    payload = {
        "e": draw(st.sampled_from(["aggTrade", "aggTrade", "trade"])),
        "E": t + 3,
        "s": pick(_symbols, draw(st.sampled_from(["BTCUSDT", "ETHUSDT", "BTCUSDT_240329"]))),
        "p": pick(_prices, str(price)),
        "q": pick(_prices, draw(st.sampled_from(["0.001", "1", "250000", "0.5"]))),
        "m": pick(_makers, draw(st.booleans())),
        "T": pick(_times, t),
    }
    # X, the fill type of a ``trade``: MARKET or none is a book trade; off-book and unknown types leave the fast path
    fill_type = draw(st.sampled_from([_DROP, _DROP, _DROP, "MARKET", "INSURANCE_FUND", "ADL", "NA", None, "LIQ", 5]))
    if fill_type is not _DROP:
        payload["X"] = fill_type
    id_key = draw(st.sampled_from(["a", "t", "both", "none"]))
    if id_key in ("a", "both"):
        payload["a"] = draw(_ids)
    if id_key in ("t", "both"):
        payload["t"] = draw(_ids)
    return {k: v for k, v in payload.items() if v is not _DROP}


def _call(fn, *args: Any) -> tuple:
    try:
        return ("records", fn(*args))
    except Ignored as ign:
        return ("ignored", ign.reason)
    except Malformed as bad:
        return ("dead", bad.reason, bad.event_type)


def _same(a: tuple, b: tuple) -> bool:
    """Equal outcomes, NaN-safe and type-strict for the record values."""
    if a[0] != b[0] or a[0] != "records":
        return a == b
    return _canon(json.loads(json.dumps(a[1]))) == _canon(json.loads(json.dumps(b[1]))) and all(
        type(x) is type(y) for ra, rb in zip(a[1], b[1], strict=True) for x, y in zip(ra[1].values(), rb[1].values(),
                                                                                      strict=True))


@settings(max_examples=400, **_SETTINGS)
@given(payload=agg_trade_payloads())
def test_binance_trade_fast_path_equals_checked_path(payload: dict) -> None:
    norm = BinanceFuturesNormalizer()
    fast = _call(lambda m, r: [norm._trade(m, r)], payload, RECV)
    checked = _call(lambda m, r: [norm._trade_checked(m, r)], payload, RECV)
    assert _same(fast, checked), (payload, fast, checked)


@pytest.mark.parametrize("payload", [
    {"e": "aggTrade", "s": "BTCUSDT", "p": "40000.5", "q": "0.25", "m": True, "T": T_MS, "a": 7},
    {"e": "trade", "s": "BTCUSDT_240329", "p": 38105, "q": "2", "m": False, "T": T_MS, "t": "x1"},
    {"e": "aggTrade", "s": "BTCUSDT", "p": "40000.5", "q": "0.25", "m": True, "T": T_MS, "a": None, "t": 9},
    {"e": "aggTrade", "s": "BTCUSDT", "p": " 1_000.5 ", "q": "0.25", "m": True, "T": T_MS},
    {"e": "aggTrade", "s": "BTCUSDT", "p": "NaN", "q": "0.25", "m": True, "T": T_MS},
    {"e": "aggTrade", "s": "BTCUSDT", "p": "1e400", "q": "0.25", "m": True, "T": T_MS},
    {"e": "aggTrade", "s": "BTCUSDT", "p": "0", "q": "0.25", "m": True, "T": T_MS},
    {"e": "aggTrade", "s": "BTCUSDT", "p": "1", "q": "0.25", "m": 1, "T": T_MS},
    {"e": "aggTrade", "s": "BTCUSDT", "p": "1", "q": "0.25", "m": True, "T": float(T_MS)},
    {"e": "aggTrade", "s": "BTCUSDT", "p": "1", "q": "0.25", "m": True, "T": str(T_MS)},
    {"e": "aggTrade", "s": "BTCUSDT", "p": "1", "q": "0.25", "m": True, "T": 4_102_444_800_001},
    {"e": "aggTrade", "s": "BTCUSDT", "p": "1", "q": "0.25", "m": True, "T": 1_230_768_000_000},
    {"e": "aggTrade", "s": "NOPE", "p": "1", "q": "0.25", "m": True, "T": T_MS},
    {"e": "aggTrade", "s": 5, "p": "1", "q": "0.25", "m": True, "T": T_MS},
    {"e": "aggTrade", "p": "1", "q": "0.25", "m": True, "T": T_MS},
    {"e": "trade", "s": "BTCUSDT", "p": "1", "q": "0.25", "m": True, "T": T_MS, "X": "MARKET"},
    {"e": "trade", "s": "BTCUSDT", "p": "1", "q": "0.25", "m": True, "T": T_MS, "X": "INSURANCE_FUND"},
    {"e": "trade", "s": "BTCUSDT", "p": "1", "q": "0.25", "m": True, "T": T_MS, "X": "ADL"},
    {"e": "trade", "s": "BTCUSDT", "p": "1", "q": "0.25", "m": True, "T": T_MS, "X": "NA"},
    {"e": "trade", "s": "BTCUSDT", "p": "1", "q": "0.25", "m": True, "T": T_MS, "X": None},
    {"e": "trade", "s": "BTCUSDT", "p": "1", "q": "0.25", "m": True, "T": T_MS, "X": ["MARKET"]},
    {"e": "trade", "s": "NOPE", "p": "1", "q": "0.25", "m": True, "T": T_MS, "X": "ADL"},
])
def test_binance_trade_fast_path_equals_checked_path_on_edges(payload: dict) -> None:
    norm = BinanceFuturesNormalizer()
    fast = _call(lambda m, r: [norm._trade(m, r)], payload, RECV)
    checked = _call(lambda m, r: [norm._trade_checked(m, r)], payload, RECV)
    assert _same(fast, checked), (fast, checked)


# --- every venue: normalize_raw (typed decode) == normalize, and route == route of the object -------


def _frame(venue: str, trades: list[dict]) -> dict:
    if venue in ("binance-futures", "binance-delivery"):
        return {"stream": "x@aggTrade", "data": trades[0]}
    if venue == "bybit":
        return {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": T_MS, "data": trades}
    if venue == "okx":
        return {"arg": {"channel": "trades", "instId": "BTC-USDT-SWAP"}, "data": trades}
    if venue == "hyperliquid":
        return {"channel": "trades", "data": trades}
    raise ValueError(venue)


_VENUE_TRADE = {  # (a well-formed trade, symbols to draw from) per venue with a typed trade fast path
    "binance-futures": ({"e": "trade", "E": T_MS + 3, "t": 1, "s": "BTCUSDT", "p": "40000.5", "q": "0.25",
                         "T": T_MS, "m": True, "X": "MARKET"}, "s", ["BTCUSDT", "BTCUSDT_240329", "NOPE"]),
    "binance-delivery": ({"e": "aggTrade", "E": T_MS + 3, "a": 1, "s": "BTCUSD_PERP", "p": "40000.5", "q": "3",
                          "f": 1, "l": 1, "T": T_MS, "m": False}, "s", ["BTCUSD_PERP", "ETHUSD_PERP", "NOPE"]),
    "bybit": ({"T": T_MS, "s": "BTCUSDT", "S": "Buy", "v": "0.25", "p": "40000.5", "L": "PlusTick", "i": "ab-1",
               "BT": False}, "s", ["BTCUSDT", "BTCUSD", "ETHUSDT", "NOPE"]),
    "okx": ({"instId": "BTC-USDT-SWAP", "tradeId": "130639474", "px": "40000.5", "sz": "2", "side": "sell",
             "ts": str(T_MS), "count": "1"}, "instId", ["BTC-USDT-SWAP", "BTC-USD-SWAP", "NOPE"]),
    "hyperliquid": ({"coin": "BTC", "side": "A", "px": "40000.5", "sz": "0.25", "time": T_MS, "hash": "0x0",
                     "tid": 29331, "users": ["0xa", "0xb"]}, "coin", ["BTC", "ETH", "PURR/USDC", "@1", "NOPE"]),
}
#: top-level keys the venues' normalize() dispatch on (a fast path must read a frame holding them as normalize does)
_DISPATCH_KEYS = ["markPrice", "symbol", "e", "event", "topic", "channel", "arg", "retCode", "result", "id", "op",
                  "success", "code", "stream", "data", "type", "ret_msg", "jsonrpc", "method", "params"]
_edge_values = st.one_of(_prices, _times, _ids, st.sampled_from(["Buy", "Sell", "buy", "sell", "A", "B", "X",
                                                                 "INSURANCE_FUND", "ADL", "NA", "MARKET"]))


@st.composite
def venue_frames(draw: st.DrawFn, venue: str) -> bytes:
    good, symbol_key, symbols = _VENUE_TRADE[venue]
    trades = []
    for _ in range(draw(st.integers(1, 3))):
        t = dict(good)
        t[symbol_key] = draw(st.sampled_from(symbols))
        for key in draw(st.lists(st.sampled_from(sorted(good)), max_size=2)):
            if draw(st.booleans()):
                t.pop(key, None)
            else:
                t[key] = draw(_edge_values)
        trades.append(t)
    frame = _frame(venue, trades)
    for key in draw(st.lists(st.sampled_from(_DISPATCH_KEYS), max_size=3)):  # keys any dispatcher reads first
        frame[key] = draw(st.one_of(st.sampled_from([None, "1", "trades", "subscribe", True, 0]), st.just(frame.get(key))))
    if draw(st.integers(0, 9)) == 0:  # the frame itself: another channel, an ack key, no data
        key = draw(st.sampled_from(sorted(frame)))
        frame[key] = draw(st.sampled_from([None, [], "trades", "publicTrade", "allLiquidation.BTCUSDT", {}]))
        if draw(st.booleans()):
            frame["event"] = "subscribe"
    return json.dumps(frame, allow_nan=True).encode()


def _general(norm: Any, raw: bytes) -> tuple:
    return _call(norm.normalize, json.loads(raw), RECV)


@pytest.mark.parametrize("venue", sorted(_VENUE_TRADE))
def test_normalize_raw_is_none_or_the_general_records(venue: str) -> None:
    norm = NORMALIZERS[venue]()
    taken = []

    @settings(max_examples=150, **_SETTINGS)
    @given(raw=venue_frames(venue))
    def run(raw: bytes) -> None:
        fast = norm.normalize_raw(raw, RECV)
        general = _general(NORMALIZERS[venue](), raw)
        if fast is not None:
            taken.append(1)
            assert _same(("records", fast), general), (raw, fast, general)
        # route (fast path first) and route of the parsed object (general path only) agree
        via_bytes, via_object = route(norm, raw, RECV), route(NORMALIZERS[venue](), json.loads(raw), RECV)
        a, b = _place(via_bytes), _place(via_object)
        assert _same(a, b) if a[0] == "records" else a == b, (raw, a, b)

    run()
    assert taken, f"{venue}: no generated frame took the fast path"


def test_normalize_raw_values_by_hand() -> None:
    # Bybit inverse BTCUSD: 3 contracts of 1 USD at 40000 -> 3 USD, 3/40000 = 0.000075 BTC; S=Sell: taker sold
    bybit = NORMALIZERS["bybit"]()
    raw = _text(_frame("bybit", [{"T": T_MS, "s": "BTCUSD", "S": "Sell", "v": "3", "p": "40000", "i": "z"}])).encode()
    [(et, rec)] = bybit.normalize_raw(raw, RECV)
    assert (et, rec["symbol"], rec["base"], rec["quote"], rec["taker_side"], rec["trade_id"]) == \
        ("trade", "BTCUSD", "BTC", "USD", "sell", "z")
    assert rec["notional_usd"] == 3.0 and rec["size"] == pytest.approx(0.000075, rel=1e-12)
    assert rec["event_time"] == T_MS * 1000 and rec["ingest_time"] == RECV
    # OKX BTC-USD-SWAP: inverse, 100 USD contracts: 3 -> 300 USD, 300/40000 = 0.0075 BTC; ts is a string
    okx = NORMALIZERS["okx"]()
    raw = _text(_frame("okx", [{"instId": "BTC-USD-SWAP", "tradeId": "9", "px": "40000", "sz": "3", "side": "buy",
                                "ts": str(T_MS)}])).encode()
    [(_, rec)] = okx.normalize_raw(raw, RECV)
    assert (rec["notional_usd"], rec["size"], rec["taker_side"], rec["trade_id"]) == (300.0, 0.0075, "buy", "9")
    # OKX BTC-USDT-SWAP: linear, ctVal 0.01 BTC: 2 contracts = 0.02 BTC, x 50000 = 1000 USD
    raw = _text(_frame("okx", [{"instId": "BTC-USDT-SWAP", "px": "50000", "sz": "2", "side": "sell",
                                "ts": str(T_MS)}])).encode()
    [(_, rec)] = okx.normalize_raw(raw, RECV)
    assert rec["size"] == pytest.approx(0.02, rel=1e-12) and rec["notional_usd"] == pytest.approx(1000.0, rel=1e-12)
    assert rec["trade_id"] is None
    # Hyperliquid: side A = the ask side aggressed = taker sold; notional 40000.5 x 0.25 = 10000.125
    hl = NORMALIZERS["hyperliquid"]()
    raw = _text(_frame("hyperliquid", [_VENUE_TRADE["hyperliquid"][0]])).encode()
    [(_, rec)] = hl.normalize_raw(raw, RECV)
    assert (rec["symbol"], rec["quote"], rec["taker_side"], rec["trade_id"], rec["notional_usd"]) == \
        ("BTC", "USDC", "sell", "29331", 10000.125)
    # Binance COIN-M BTCUSD_PERP: 3 contracts of 100 USD = 300 USD at 40000.5 -> 300/40000.5 BTC
    delivery = NORMALIZERS["binance-delivery"]()
    raw = _text(_frame("binance-delivery", [_VENUE_TRADE["binance-delivery"][0]])).encode()
    [(_, rec)] = delivery.normalize_raw(raw, RECV)
    assert rec["notional_usd"] == 300.0 and math.isclose(rec["size"], 300 / 40000.5, rel_tol=1e-15)
    assert rec["taker_side"] == "buy"  # m=false: the buyer was the taker
    # a dated USDⓈ-M future: expiry 2024-03-29 08:00 UTC in ms
    futures = NORMALIZERS["binance-futures"]()
    raw = _text(_agg(s="BTCUSDT_240329")).encode()
    [(_, rec)] = futures.normalize_raw(raw, RECV)
    assert (rec["kind"], rec["expiry"]) == ("future", 1_711_699_200_000)


@pytest.mark.parametrize("raw", [
    _text({"stream": "btcusdt@markPrice", "data": {"e": "markPriceUpdate", "E": T_MS, "s": "BTCUSDT", "p": "1"}}),
    _text(_agg()["data"]),  # a bare payload: the general path takes it
    _text({"topic": "allLiquidation.BTCUSDT", "data": [{"T": T_MS, "s": "BTCUSDT", "S": "Buy", "v": "1", "p": "1"}]}),
    _text({"event": "subscribe", "arg": {"channel": "trades", "instId": "BTC-USDT-SWAP"},
           "data": [{"instId": "BTC-USDT-SWAP", "px": "1", "sz": "1", "side": "buy", "ts": str(T_MS)}]}),
    _text({"channel": "trades", "data": []}),
])
def test_normalize_raw_leaves_other_messages_to_the_general_path(raw: str) -> None:
    for venue in _VENUE_TRADE:
        assert NORMALIZERS[venue]().normalize_raw(raw.encode(), RECV) is None, venue


def test_coin_m_premium_index_keys_beside_an_envelope_keep_the_general_reading() -> None:
    # COIN-M's normalize() reads top-level markPrice + symbol (no "e") as a REST premiumIndex before any
    # envelope, so its fast path must not take the aggTrade inside; USDⓈ-M reads the envelope first
    frame = {**_frame("binance-delivery", [_VENUE_TRADE["binance-delivery"][0]]), "markPrice": "40000.5",
             "symbol": "BTCUSD_PERP", "time": T_MS}
    raw = _text(frame).encode()
    delivery = NORMALIZERS["binance-delivery"]()
    assert delivery.normalize_raw(raw, RECV) is None
    [(et, rec)] = route(delivery, raw, RECV).records
    assert (et, rec["mark_price"]) == ("funding", 40000.5)
    futures_frame = {**_agg(), "markPrice": "40000.5", "symbol": "BTCUSDT"}
    [(et, _)] = NORMALIZERS["binance-futures"]().normalize_raw(_text(futures_frame).encode(), RECV)
    assert et == "trade" and _place(route(NORMALIZERS["binance-futures"](), futures_frame, RECV))[0] == "records"
