"""Binance USDⓈ-M normalizer: real captured messages and documented examples, every field asserted."""

from __future__ import annotations

import json

import pytest

from connectors.avro import AvroDecoder, AvroEncoder
from connectors.exchanges.binance import BinanceFuturesNormalizer
from connectors.normalize import Ignored, Malformed, route
from connectors.sources.capture import RawMessage, read_capture
from tests.conftest import FIXTURES

EXCERPT = FIXTURES / "venues" / "binance-futures" / "BINANCE_FUTURES.ws.excerpt"
RECV = 1_700_000_000_000_000


@pytest.fixture(scope="module")
def norm():
    return BinanceFuturesNormalizer()


def _roundtrip(event_type, record):
    return AvroDecoder(event_type).decode(AvroEncoder(event_type).encode(record))


def test_real_aggtrade_lines_from_capture(norm):
    msgs = [m for m in read_capture(EXCERPT, venue="binance-futures") if isinstance(m, RawMessage)]
    out = route(norm, msgs[0].raw, msgs[0].received_at_us, msgs[0].source)
    # line: {"e":"aggTrade","E":1626992741575,"a":16599292,"s":"CTKUSDT","p":"1.01100","q":"10","T":1626992741421,"m":false}
    assert out.records == [("trade", {
        "exchange": "binance-futures", "symbol": "CTKUSDT", "base": "CTK", "quote": "USDT", "kind": "perpetual",
        "expiry": None, "event_time": 1626992741421000, "ingest_time": 1626992742289739,
        "trade_id": "16599292", "price": 1.011, "size": 10.0, "notional_usd": pytest.approx(10.11),
        "taker_side": "buy",  # m=false: the buyer was the taker
    })]
    second = route(norm, msgs[1].raw, msgs[1].received_at_us).records[0][1]
    assert second["taker_side"] == "sell" and second["symbol"] == "AKROUSDT" and second["base"] == "AKRO"
    assert second["notional_usd"] == pytest.approx(0.01731 * 312)
    assert _roundtrip("trade", second) == second


def test_unused_streams_are_counted_as_ignored(norm):
    msgs = [m for m in read_capture(EXCERPT, venue="binance-futures") if isinstance(m, RawMessage)]
    reasons = [route(norm, m.raw, m.received_at_us).ignored for m in msgs[3:]]
    assert reasons == ["bookTicker", "book_buffered", "kline"]  # a diff depth waits for its REST snapshot


# The forceOrder example of Binance's documentation ("Liquidation Order Streams").
DOC_FORCE_ORDER = {"e": "forceOrder", "E": 1568014460893, "o": {
    "s": "BTCUSDT", "S": "SELL", "o": "LIMIT", "f": "IOC", "q": "0.014", "p": "9910", "ap": "9910",
    "X": "FILLED", "l": "0.014", "z": "0.014", "T": 1568014460893}}


def test_force_order_sell_liquidates_a_long(norm):
    (et, rec), = norm.normalize(DOC_FORCE_ORDER, RECV)
    assert et == "liquidation"
    assert rec == {
        "exchange": "binance-futures", "symbol": "BTCUSDT", "base": "BTC", "quote": "USDT", "kind": "perpetual",
        "expiry": None, "event_time": 1568014460893000, "ingest_time": RECV, "side": "long",
        "price": 9910.0, "size": 0.014, "notional_usd": pytest.approx(138.74), "order_id": None,
    }
    assert _roundtrip("liquidation", rec) == rec


def test_force_order_buy_liquidates_a_short_and_uses_average_fill_price(norm):
    msg = json.loads(json.dumps(DOC_FORCE_ORDER))
    msg["o"].update({"S": "BUY", "p": "10000", "ap": "10050.5", "q": "2", "z": "1.5"})
    wrapped = {"stream": "btcusdt@forceOrder", "data": msg}
    (_, rec), = norm.normalize(wrapped, RECV)
    assert rec["side"] == "short"
    assert rec["price"] == 10050.5 and rec["size"] == 1.5
    assert rec["notional_usd"] == pytest.approx(15075.75)


def test_force_order_not_yet_filled_falls_back_to_order_price_and_quantity(norm):
    msg = json.loads(json.dumps(DOC_FORCE_ORDER))
    msg["o"].update({"ap": "0", "z": "0", "p": "9000", "q": "0.5"})
    (_, rec), = norm.normalize(msg, RECV)
    assert (rec["price"], rec["size"], rec["notional_usd"]) == (9000.0, 0.5, 4500.0)


def test_dated_future_symbol_gets_kind_and_expiry(norm):
    msg = json.loads(json.dumps(DOC_FORCE_ORDER))
    msg["o"]["s"] = "BTCUSDT_240329"
    (_, rec), = norm.normalize(msg, RECV)
    assert rec["kind"] == "future" and rec["base"] == "BTC"
    assert rec["expiry"] == 1711699200000  # 2024-03-29 08:00 UTC, Binance's delivery time


def test_mark_price_update_is_funding(norm):
    # documented example of <symbol>@markPrice
    msg = {"e": "markPriceUpdate", "E": 1562305380000, "s": "BTCUSDT", "p": "11794.15000000",
           "i": "11784.62659091", "P": "11784.25641265", "r": "0.00038167", "T": 1562306400000}
    (et, rec), = norm.normalize(msg, RECV)
    assert et == "funding"
    assert rec == {
        "exchange": "binance-futures", "symbol": "BTCUSDT", "base": "BTC", "quote": "USDT", "kind": "perpetual",
        "expiry": None, "event_time": 1562305380000000, "ingest_time": RECV, "mark_price": 11794.15,
        "index_price": 11784.62659091, "funding_rate": 0.00038167, "next_funding_time": 1562306400000,
    }


def test_open_interest_rest_payloads(norm):
    (et, rec), = norm.normalize({"openInterest": "10659.509", "symbol": "BTCUSDT", "time": 1589437530011}, RECV)
    assert et == "open_interest"
    assert rec["open_interest"] == 10659.509 and rec["open_interest_usd"] is None
    assert rec["event_time"] == 1589437530011000
    hist = [{"symbol": "BTCUSDT", "sumOpenInterest": "20403.63700000", "sumOpenInterestValue": "150570784.07809979",
             "timestamp": "1583127900000"},
            {"symbol": "BTCUSDT", "sumOpenInterest": "20401.36700000", "sumOpenInterestValue": "149940752.14464448",
             "timestamp": "1583128200000"}]
    out = norm.normalize(hist, RECV)
    assert [(r["open_interest"], r["open_interest_usd"], r["event_time"]) for _, r in out] == [
        (20403.637, 150570784.07809979, 1583127900000000), (20401.367, 149940752.14464448, 1583128200000000)]


@pytest.mark.parametrize("mutate, reason", [
    (lambda m: m["o"].update(S="HOLD"), "bad_value"),
    (lambda m: m["o"].pop("s"), "missing_field"),
    (lambda m: m["o"].update(ap="abc", p="abc"), "bad_value"),
    (lambda m: m["o"].update(T=12), "bad_value"),
    (lambda m: m.update(o="x"), "bad_value"),
])
def test_malformed_force_orders_are_dead_lettered_with_reason(norm, mutate, reason):
    msg = json.loads(json.dumps(DOC_FORCE_ORDER))
    mutate(msg)
    out = route(norm, json.dumps(msg), RECV, "test:1")
    assert out.records == [] and out.dead is not None
    assert out.dead.reason == reason and out.dead.event_type == "liquidation"
    assert out.dead.topic == "liquidations.v1.dlq" and json.loads(out.dead.raw) == msg


def test_unknown_message_and_invalid_json(norm):
    unknown = route(norm, '{"e":"someNewEvent","E":1}', RECV)
    assert unknown.dead.reason == "unknown_message" and unknown.dead.topic == "raw.v1.dlq"
    bad = route(norm, b'{"e":"forceOrder","o":{"s', RECV)
    assert bad.dead.reason == "invalid_json"
    with pytest.raises(Ignored):
        norm.normalize({"result": None, "id": 1}, RECV)
    with pytest.raises(Malformed):
        norm.normalize("just a string", RECV)
