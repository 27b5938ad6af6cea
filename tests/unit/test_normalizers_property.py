"""Property tests: every venue normalizer in ``NORMALIZERS`` survives random and mutated input.

For each registered venue (the registry is read at run time, so venues added later
are covered without touching this file) hypothesis feeds ``connectors.normalize.route``:

* random JSON values (recursive strategy: scalars incl. NaN/inf, lists, objects),
* real messages from ``tests/fixtures`` (captures and documented examples) mutated:
  a key dropped, a value replaced by another type, huge / negative / NaN numbers,
  nested garbage; sent as an object, as JSON text or as bytes,
* bytes that are not UTF-8 and truncated JSON,
* the inputs where the JSON parser (msgspec, ADR 005) and json.loads differ:
  NaN / Infinity / 1e400 tokens, 30-digit integers, duplicate keys, lone
  surrogate escapes, nesting deeper than the parsers go.

Properties: nothing escapes ``route``; each input lands in exactly one place
(records, dead letter, ignore); no dead letter is a ``normalizer_error`` (that is
an unexpected exception inside a normalizer, i.e. a bug); every record validates
against its Avro schema, encodes, and has finite, non-negative prices, sizes and
notionals.
"""

from __future__ import annotations

import copy
import gzip
import json
import math
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from fastavro.validation import validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas
from connectors.avro import AvroEncoder
from connectors.exchanges import NORMALIZERS
from connectors.normalize import TOPICS, Outcome, route

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RECV = 1_700_000_000_000_000
VENUES = sorted(NORMALIZERS)
#: ~200 examples per venue across the three strategies keeps the file to a few seconds.
EXAMPLES = {"random": 60, "mutated": 110, "bytes": 30, "edge": 40}
#: Record fields that are amounts or prices: finite and >= 0 when present.
NON_NEGATIVE = ("price", "size", "notional_usd", "open_interest", "open_interest_usd", "mark_price", "index_price")
#: Fields that may be negative but must be finite.
FINITE = ("funding_rate",)
_CAPTURE_LINE = re.compile(r"^(?:\S+ -> )?\d+(?:\.\d+)?: (?P<json>[\[{].*)$", re.S)
_MAX_SEED_FILE = 300_000
_MAX_SEEDS = 60

#: Documented shapes for the Binance template venue, whose fixtures hold no liquidation / OI messages.
_BUILTIN_SEEDS: dict[str, list[Any]] = {
    "binance-futures": [
        {"e": "forceOrder", "E": 1568014460893, "o": {"s": "BTCUSDT", "S": "SELL", "o": "LIMIT", "f": "IOC",
                                                      "q": "0.014", "p": "9910", "ap": "9910", "X": "FILLED",
                                                      "l": "0.014", "z": "0.014", "T": 1568014460893}},
        {"openInterest": "10659.509", "symbol": "BTCUSDT", "time": 1589437530011},
        [{"symbol": "BTCUSDT", "sumOpenInterest": "20403.63700000", "sumOpenInterestValue": "150570784.07809979",
          "timestamp": "1583127900000"}],
    ],
}


# --- seeds: real messages per venue ---------------------------------------------------------------


def _messages_in_line(line: str) -> list[Any]:
    line = line.strip()
    if not line:
        return []
    try:
        doc = json.loads(line)
    except ValueError:
        m = _CAPTURE_LINE.match(line)
        if not m:
            return []
        try:
            return [json.loads(m["json"])]
        except ValueError:
            return []
    if isinstance(doc, dict) and "raw" in doc:  # liqstream JSONL capture or {"name","raw"} doc example
        raw = doc["raw"]
        if isinstance(raw, str):
            try:
                return [json.loads(raw)]
            except ValueError:
                return []
        return [raw]
    return [doc]


def _fixture_files(venue: str) -> list[Path]:
    files = [p for p in sorted((FIXTURES / "venues" / venue).rglob("*")) if p.is_file()]
    files += sorted((FIXTURES / "ws").glob(f"{venue}.*"))
    files += sorted((FIXTURES / "demo").glob(f"{venue}*.jsonl*"))
    return [p for p in files if p.stat().st_size <= _MAX_SEED_FILE or p.suffix == ".gz"]


def _shape(msg: Any) -> str:
    """A coarse signature so the seed list keeps one message per message kind."""
    if isinstance(msg, dict):
        inner = msg.get("data", msg.get("params", msg))
        if isinstance(inner, list) and inner:
            inner = inner[0]
        tag = ""
        for k in ("e", "channel", "topic", "arg", "method", "event"):
            if isinstance(msg, dict) and k in msg:
                tag += f"{k}={str(msg[k])[:40]};"
        if isinstance(inner, dict):
            for k in ("e", "channel", "liquidation", "coin"):
                if k in inner:
                    tag += f"{k}={str(inner[k])[:20]};"
            return tag + ",".join(sorted(inner)[:12])
        return tag + ",".join(sorted(msg)[:12])
    return type(msg).__name__


@cache
def seeds(venue: str) -> tuple[Any, ...]:
    normalizer = NORMALIZERS[venue]()
    found: dict[str, Any] = {}
    candidates: list[Any] = list(_BUILTIN_SEEDS.get(venue, []))
    for path in _fixture_files(venue):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", errors="replace") as fh:
            text = fh.read(_MAX_SEED_FILE * 4)
        if path.suffix == ".json":
            try:
                candidates.append(json.loads(text))
            except ValueError:
                pass
            continue
        for line in text.splitlines():
            candidates.extend(_messages_in_line(line))
    for msg in candidates:
        sig = _shape(msg)
        if sig in found:
            continue
        # keep messages the venue accepts or knowingly ignores: those reach the deep code paths
        out = route(normalizer, copy.deepcopy(msg), RECV)
        if out.records or out.ignored:
            found[sig] = msg
        if len(found) >= _MAX_SEEDS:
            break
    return tuple(found.values()) or ({},)


# --- strategies -----------------------------------------------------------------------------------

_numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1e308, -1e308, 10**400, -(10**400), 2**63, 1e-320, float("nan"), float("inf")]),
)
_scalars = st.one_of(st.none(), st.booleans(), _numbers, st.text(max_size=20),
                     st.sampled_from(["", "NaN", "-1", "1e400", "inf", "B", "A", "buy", "sell", "T", "M", "MT"]))
json_values = st.recursive(
    _scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=12,
)


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:5]):
            out.extend(_paths(v, (*prefix, i)))
    return out


def _type_swap(v: Any) -> Any:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return [v]
    if isinstance(v, list):
        return {"0": v[0]} if v else {}
    if isinstance(v, dict):
        return list(v.values())
    return 0


@st.composite
def mutated_messages(draw: st.DrawFn, venue: str) -> bytes | str | dict | list:
    doc = copy.deepcopy(draw(st.sampled_from(seeds(venue))))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["drop", "replace", "special", "swap", "garbage"]))
        if not path:
            if op in ("replace", "garbage"):
                doc = draw(json_values)
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        if op == "drop":
            if isinstance(parent, dict):
                del parent[key]
            else:
                parent.pop(key)
        elif op == "replace":
            parent[key] = draw(json_values)
        elif op == "special":
            parent[key] = draw(_numbers)
        elif op == "swap":
            parent[key] = _type_swap(parent[key])
        else:
            parent[key] = {"x": [parent[key], draw(json_values)], "": draw(json_values)}
    form = draw(st.sampled_from(["object", "text", "bytes"]))
    if form == "object" and isinstance(doc, (dict, list)):
        return doc
    text = json.dumps(doc)  # NaN / Infinity tokens allowed: json.loads reads them back
    return text if form == "text" else text.encode()


@st.composite
def raw_bytes(draw: st.DrawFn, venue: str) -> bytes:
    kind = draw(st.sampled_from(["binary", "bad_utf8", "truncated"]))
    if kind == "binary":
        return draw(st.binary(max_size=64))
    text = json.dumps(draw(st.sampled_from(seeds(venue)))).encode()
    if kind == "bad_utf8":
        at = draw(st.integers(min_value=0, max_value=len(text)))
        return text[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80\x80"])) + text[at:]
    return text[: draw(st.integers(min_value=0, max_value=max(0, len(text) - 1)))]


_NUMBER_TOKEN = re.compile(rb"(?<=[:\[,])-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?=[,\]}])")
_STRING_VALUE = re.compile(rb'(?<=:)"[^"\\]*"')


@st.composite
def parser_edge_texts(draw: st.DrawFn, venue: str) -> bytes:
    """Seed messages with the inputs where msgspec and json.loads differ (ADR 005), as a venue might send them.

    A number becomes NaN / Infinity / 1e400 / a 30-digit int, a key is duplicated
    with another value in front, a string value becomes a lone surrogate escape,
    or the message is nested deeper than either parser goes.
    """
    text = json.dumps(draw(st.sampled_from(seeds(venue))), separators=(",", ":")).encode()
    for _ in range(draw(st.integers(min_value=1, max_value=2))):
        op = draw(st.sampled_from(["number", "number", "duplicate", "surrogate", "deep"]))
        if op == "number" and (spans := [m.span() for m in _NUMBER_TOKEN.finditer(text)]):
            a, b = draw(st.sampled_from(spans))
            token = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400",
                                          b"123456789012345678901234567890", b"-0", b"1E-400"]))
            text = text[:a] + token + text[b:]
        elif op == "duplicate" and (keys := re.findall(rb'(?<=[{,])"([^"\\]*)":', text)):
            key = draw(st.sampled_from(keys))
            at = text.index(b"{")
            value = draw(st.sampled_from([b"null", b"1", b'"x"', b"[]", b"NaN"]))
            text = text[: at + 1] + b'"' + key + b'":' + value + b"," + text[at + 1:]  # the seed's own value wins
        elif op == "surrogate" and (spans := [m.span() for m in _STRING_VALUE.finditer(text)]):
            a, b = draw(st.sampled_from(spans))
            text = text[:a] + draw(st.sampled_from([b'"\\ud800"', b'"\\udc00x"', b'"a\\ud83d"'])) + text[b:]
        elif op == "deep":
            depth = draw(st.sampled_from([50, 5_000, 200_000]))
            text = b'{"x":' + b"[" * depth + text + b"]" * depth + b"}"
    return text


# --- the properties -------------------------------------------------------------------------------


@cache
def _encoder(event_type: str) -> AvroEncoder:
    return AvroEncoder(event_type)


def check_outcome(venue: str, raw: Any, out: Outcome) -> None:
    places = bool(out.records) + (out.dead is not None) + (out.ignored is not None)
    assert places == 1, f"{venue}: input landed in {places} places: {out!r}"
    if out.dead is not None:
        assert out.dead.reason != "normalizer_error", (
            f"{venue} normalizer bug: {out.dead.detail} on input {str(raw)[:500]}")
        assert isinstance(out.dead.raw, bytes)
        return
    for event_type, rec in out.records:
        assert event_type in TOPICS, f"{venue}: unknown event type {event_type!r}"
        assert rec["exchange"] == venue
        validate(rec, schemas.latest(event_type).parsed, raise_errors=True)
        _encoder(event_type).encode(rec)
        for field in NON_NEGATIVE:
            v = rec.get(field)
            if v is not None:
                assert math.isfinite(v) and v >= 0, f"{venue} {event_type}.{field}={v!r} from {str(raw)[:300]}"
        for field in FINITE:
            v = rec.get(field)
            if v is not None:
                assert math.isfinite(v), f"{venue} {event_type}.{field}={v!r} from {str(raw)[:300]}"


_SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                 database=None)


@pytest.mark.parametrize("venue", VENUES)
def test_seeds_exist_and_are_accounted(venue: str) -> None:
    normalizer = NORMALIZERS[venue]()
    for msg in seeds(venue):
        check_outcome(venue, msg, route(normalizer, copy.deepcopy(msg), RECV))


@pytest.mark.parametrize("venue", VENUES)
def test_random_json_never_escapes(venue: str) -> None:
    normalizer = NORMALIZERS[venue]()

    @settings(max_examples=EXAMPLES["random"], **_SETTINGS)
    @given(value=json_values, form=st.sampled_from(["object", "text", "bytes"]))
    def run(value: Any, form: str) -> None:
        # route() takes what a transport delivers: text, bytes, or an already-parsed object/array
        raw = value if form == "object" and isinstance(value, (dict, list)) else json.dumps(value)
        raw = raw.encode() if form == "bytes" else raw
        check_outcome(venue, raw, route(normalizer, raw, RECV))

    run()


@pytest.mark.parametrize("venue", VENUES)
def test_mutated_real_messages_never_escape(venue: str) -> None:
    normalizer = NORMALIZERS[venue]()

    @settings(max_examples=EXAMPLES["mutated"], **_SETTINGS)
    @given(raw=mutated_messages(venue))
    def run(raw: Any) -> None:
        check_outcome(venue, raw, route(normalizer, raw, RECV))

    run()


@pytest.mark.parametrize("venue", VENUES)
def test_non_utf8_and_truncated_bytes_never_escape(venue: str) -> None:
    normalizer = NORMALIZERS[venue]()

    @settings(max_examples=EXAMPLES["bytes"], **_SETTINGS)
    @given(raw=raw_bytes(venue))
    def run(raw: bytes) -> None:
        out = route(normalizer, raw, RECV)
        check_outcome(venue, raw, out)

    run()


def _has_lone_surrogate(v: Any) -> bool:
    return isinstance(v, str) and any("\ud800" <= c <= "\udfff" for c in v)


@pytest.mark.parametrize("venue", VENUES)
def test_parser_edge_inputs_never_escape(venue: str) -> None:
    normalizer = NORMALIZERS[venue]()

    @settings(max_examples=EXAMPLES["edge"], **_SETTINGS)
    @given(raw=parser_edge_texts(venue), form=st.sampled_from(["text", "bytes"]))
    def run(raw: bytes, form: str) -> None:
        raw_in = raw.decode() if form == "text" else raw
        out = route(normalizer, raw_in, RECV)
        if any(_has_lone_surrogate(v) for _, rec in out.records for v in rec.values()):
            # json.loads keeps a lone surrogate escape (in an id, say); no Avro string can hold it, so
            # publish_raw_stream dead-letters the message as "unencodable": still exactly one place
            assert out.dead is None and out.ignored is None
            for et, rec in out.records:
                if any(_has_lone_surrogate(v) for v in rec.values()):
                    with pytest.raises(UnicodeEncodeError):
                        _encoder(et).encode(rec)
                else:
                    _encoder(et).encode(rec)
            return
        check_outcome(venue, raw, out)

    run()


def test_every_registered_venue_is_covered() -> None:
    # the parametrization reads the registry: a venue added to NORMALIZERS is tested automatically
    assert set(VENUES) == set(NORMALIZERS)
    assert {"binance-futures", "hyperliquid", "deribit"} <= set(VENUES)


@pytest.mark.parametrize(("venue", "raw"), [
    # found by test_mutated_real_messages_never_escape[hyperliquid]: two finite numbers, an infinite product
    ("hyperliquid", {"channel": "userFills", "data": {"user": "0xabc", "fills": [
        {"coin": "SOL", "px": 8.98846567431158e306, "sz": "20", "side": "A", "time": 1_733_800_003_000,
         "tid": 777, "liquidation": {"liquidatedUser": "0xabc", "markPx": "180.7", "method": "market"}}]}}),
    ("hyperliquid", {"channel": "trades", "data": [
        {"coin": "BTC", "side": "B", "px": "1e300", "sz": "1e10", "time": 1_733_800_003_000, "tid": 1}]}),
    # the Binance aggTrade fast path (msgspec frames) and its checked path must agree on it too
    ("binance-futures", {"stream": "btcusdt@aggTrade", "data": {
        "e": "aggTrade", "E": 1_733_800_003_000, "s": "BTCUSDT", "a": 1, "p": "1e300", "q": "1e10",
        "f": 1, "l": 1, "T": 1_733_800_003_000, "m": False}}),
])
def test_amounts_that_overflow_are_dead_letters(venue: str, raw: dict) -> None:
    for form in (raw, json.dumps(raw).encode()):  # an object, and bytes (the fast paths take those)
        out = route(NORMALIZERS[venue](), copy.deepcopy(form) if isinstance(form, dict) else form, RECV)
        assert out.dead is not None and out.dead.reason == "bad_value", out
        assert "out of range" in out.dead.detail
