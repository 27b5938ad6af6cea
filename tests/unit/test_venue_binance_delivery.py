"""Binance COIN-M normalizer: golden lines from the 2021 capture, documented examples, inverse units.

Expected values are worked out by hand from the message fields and the contract
sizes in the captured exchangeInfo (BTC 100 USD, others 10 USD per contract).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors.exchanges import normalizer_for
from connectors.exchanges.binance_delivery import BinanceDeliveryNormalizer, parse_coinm_symbol
from connectors.instruments import InstrumentBook
from connectors.instruments_refresh import convert_binance_delivery
from connectors.normalize import Ignored, Malformed, route
from tests.venue_helpers import assert_all_encode, capture_lines, epoch_ms

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "venues" / "binance-delivery"
RECV = 1_700_000_000_123_456


def _lines() -> list[tuple[int, dict]]:
    return capture_lines(FIX / "ws_excerpt.txt")


_ms = epoch_ms


_encode = assert_all_encode


@pytest.fixture
def norm() -> BinanceDeliveryNormalizer:
    return BinanceDeliveryNormalizer()


def test_registered() -> None:
    assert isinstance(normalizer_for("binance-delivery"), BinanceDeliveryNormalizer)


# --- golden: real capture lines --------------------------------------------------------------


def test_golden_agg_trade_perpetual(norm: BinanceDeliveryNormalizer) -> None:
    recv, msg = _lines()[0]  # bchusd_perp@aggTrade: p 427.91, q 3 contracts, m true
    [(et, rec)] = norm.normalize(msg, recv)
    assert et == "trade"
    assert rec == {
        "exchange": "binance-delivery", "symbol": "BCHUSD_PERP", "base": "BCH", "quote": "USD",
        "kind": "perpetual", "expiry": None,
        "event_time": 1626916403852000, "ingest_time": recv, "trade_id": "11285749",
        "price": 427.91,
        "size": pytest.approx(30.0 / 427.91),  # 3 contracts x 10 USD = 30 USD, / price
        "notional_usd": 30.0,
        "taker_side": "sell",  # buyer is maker -> taker sold
    }
    _encode([(et, rec)])


def test_golden_agg_trades_quarterly(norm: BinanceDeliveryNormalizer) -> None:
    (r1, m1), (r2, m2) = _lines()[1:3]
    [(_, a)] = norm.normalize(m1, r1)
    [(_, b)] = norm.normalize(m2, r2)
    # ETHUSD_210924 delivers 2021-09-24 08:00 UTC; 10 USD contracts
    for rec in (a, b):
        assert (rec["symbol"], rec["base"], rec["quote"], rec["kind"]) == ("ETHUSD_210924", "ETH", "USD", "future")
        assert rec["expiry"] == _ms(2021, 9, 24, 8)
        assert rec["taker_side"] == "sell"
    assert (a["event_time"], a["trade_id"], a["price"], a["notional_usd"]) == (1626916405049000, "7297361", 1992.17, 600.0)
    assert a["size"] == pytest.approx(600 / 1992.17)
    assert (b["event_time"], b["trade_id"], b["price"], b["notional_usd"]) == (1626916405075000, "7297362", 1992.07, 700.0)
    assert b["size"] == pytest.approx(700 / 1992.07)


def test_golden_ignored_streams(norm: BinanceDeliveryNormalizer) -> None:
    reasons = []
    for recv, msg in _lines()[3:]:
        with pytest.raises(Ignored) as exc:
            norm.normalize(msg, recv)
        reasons.append(exc.value.reason)
    assert reasons == ["bookTicker", "book_buffered", "kline"]  # a diff depth waits for its REST snapshot


# --- documented examples ---------------------------------------------------------------------

FORCE_ORDER_DOC = {  # developers.binance.com coin-margined-futures Liquidation-Order-Streams
    "e": "forceOrder", "E": 1591154240950,
    "o": {"s": "BTCUSD_200925", "ps": "BTCUSD", "S": "SELL", "o": "LIMIT", "f": "IOC", "q": "1", "p": "9425.5",
          "ap": "9496.5", "X": "FILLED", "l": "1", "z": "1", "T": 1591154240949},
}


def test_force_order_doc_example(norm: BinanceDeliveryNormalizer) -> None:
    [(et, rec)] = norm.normalize(FORCE_ORDER_DOC, RECV)
    assert et == "liquidation"
    assert rec == {
        "exchange": "binance-delivery", "symbol": "BTCUSD_200925", "base": "BTC", "quote": "USD",
        "kind": "future", "expiry": _ms(2020, 9, 25, 8),  # not in the 2021 metadata: symbol grammar
        "event_time": 1591154240949000, "ingest_time": RECV,
        "side": "long",  # SELL force-sells a long
        "price": 9496.5,  # average fill price
        "size": pytest.approx(100 / 9496.5),  # 1 contract x 100 USD
        "notional_usd": 100.0,
        "order_id": None,
    }
    _encode([(et, rec)])


def test_force_order_buy_closes_short_in_combined_envelope(norm: BinanceDeliveryNormalizer) -> None:
    o = dict(FORCE_ORDER_DOC["o"], s="ETHUSD_PERP", S="BUY", q="7", z="5", ap="2000", p="1990")
    msg = {"stream": "ethusd_perp@forceOrder", "data": {"e": "forceOrder", "E": 1591154240950, "o": o}}
    [(_, rec)] = norm.normalize(msg, RECV)
    assert rec["side"] == "short"
    # filled 5 of 7 contracts x 10 USD = 50 USD at 2000
    assert (rec["notional_usd"], rec["price"], rec["kind"], rec["expiry"]) == (50.0, 2000.0, "perpetual", None)
    assert rec["size"] == pytest.approx(0.025)


MARK_PRICE_PAIR_DOC = [  # <pair>@markPrice: a bare array
    {"e": "markPriceUpdate", "E": 1596095725000, "s": "BTCUSD_201225", "p": "10934.62615417",
     "P": "10962.17178236", "i": "10933.62615417", "r": "", "T": 0},
    {"e": "markPriceUpdate", "E": 1596095725000, "s": "BTCUSD_PERP", "p": "11012.31359011",
     "P": "10962.17178236", "i": "10933.62615417", "r": "0.00000000", "T": 1596096000000},
]


def test_mark_price_pair_array(norm: BinanceDeliveryNormalizer) -> None:
    out = norm.normalize(MARK_PRICE_PAIR_DOC, RECV)
    assert [et for et, _ in out] == ["funding", "funding"]
    fut, perp = out[0][1], out[1][1]
    assert fut == {
        "exchange": "binance-delivery", "symbol": "BTCUSD_201225", "base": "BTC", "quote": "USD",
        "kind": "future", "expiry": _ms(2020, 12, 25, 8), "event_time": 1596095725000000, "ingest_time": RECV,
        "mark_price": 10934.62615417, "index_price": 10933.62615417,
        "funding_rate": None, "next_funding_time": None,  # delivery symbols: r "" and T 0
    }
    assert (perp["symbol"], perp["kind"], perp["mark_price"], perp["index_price"], perp["funding_rate"],
            perp["next_funding_time"]) == ("BTCUSD_PERP", "perpetual", 11012.31359011, 10933.62615417, 0.0,
                                           1596096000000)
    _encode(out)


OPEN_INTEREST_DOC = {"symbol": "BTCUSD_PERP", "pair": "BTCUSD", "openInterest": "23211",
                     "contractType": "PERPETUAL", "time": 1591261042378}


def test_open_interest_needs_a_mark_then_converts_contracts(norm: BinanceDeliveryNormalizer) -> None:
    out = route(norm, json.dumps(OPEN_INTEREST_DOC), RECV)
    assert out.dead is not None and out.dead.reason == "no_reference_price"
    norm.normalize(MARK_PRICE_PAIR_DOC, RECV)  # BTCUSD_PERP mark 11012.31359011
    [(et, rec)] = norm.normalize(OPEN_INTEREST_DOC, RECV)
    assert et == "open_interest"
    assert rec["event_time"] == 1591261042378000
    assert rec["open_interest_usd"] == 2321100.0  # 23211 contracts x 100 USD
    assert rec["open_interest"] == pytest.approx(2321100 / 11012.31359011)
    _encode([(et, rec)])


PREMIUM_INDEX_DOC = {"symbol": "BTCUSD_PERP", "pair": "BTCUSD", "markPrice": "11029.69574559",
                     "indexPrice": "10979.14437500", "estimatedSettlePrice": "10981.74168236",
                     "lastFundingRate": "0.00071003", "interestRate": "0.00010000",
                     "nextFundingTime": 1596096000000, "time": 1596094042000}


def test_premium_index_rest(norm: BinanceDeliveryNormalizer) -> None:
    [(et, rec)] = norm.normalize(PREMIUM_INDEX_DOC, RECV)
    assert et == "funding"
    assert (rec["event_time"], rec["mark_price"], rec["index_price"], rec["funding_rate"],
            rec["next_funding_time"]) == (1596094042000000, 11029.69574559, 10979.144375, 0.00071003, 1596096000000)
    # and it feeds the price used by REST openInterest
    [(_, oi)] = norm.normalize(OPEN_INTEREST_DOC, RECV)
    assert oi["open_interest"] == pytest.approx(2321100 / 11029.69574559)


def _hist_row(contract_type: str, ts: int) -> dict:
    # docs' example values; timestamp moved into the 2021 window of the bundled metadata
    return {"pair": "BTCUSD", "contractType": contract_type, "sumOpenInterest": "20403",
            "sumOpenInterestValue": "176196512.23400000", "timestamp": ts}


def test_open_interest_hist_units_and_quarter_resolution(norm: BinanceDeliveryNormalizer) -> None:
    ts = 1626916402000  # 2021-07-22: live quarters are 210924 and 211231
    out = norm.normalize([_hist_row("CURRENT_QUARTER", ts), _hist_row("NEXT_QUARTER", ts),
                          _hist_row("PERPETUAL", ts)], RECV)
    assert [r["symbol"] for _, r in out] == ["BTCUSD_210924", "BTCUSD_211231", "BTCUSD_PERP"]
    for _, r in out:
        assert r["open_interest"] == 176196512.234  # sumOpenInterestValue: base asset
        assert r["open_interest_usd"] == 2040300.0  # 20403 contracts x 100 USD
        assert r["event_time"] == ts * 1000
    _encode(out)


def test_open_interest_hist_after_expiry_rolls_quarters(norm: BinanceDeliveryNormalizer) -> None:
    after = _ms(2021, 9, 24, 8) + 1
    [(_, r)] = norm.normalize([_hist_row("CURRENT_QUARTER", after)], RECV)
    assert r["symbol"] == "BTCUSD_211231"
    with pytest.raises(Malformed) as exc:
        norm.normalize([_hist_row("NEXT_QUARTER", after)], RECV)
    assert exc.value.reason == "unknown_symbol"


def test_acks_and_unknown(norm: BinanceDeliveryNormalizer) -> None:
    with pytest.raises(Ignored):
        norm.normalize({"result": None, "id": 1}, RECV)
    with pytest.raises(Malformed) as exc:
        norm.normalize({"e": "somethingNew", "s": "BTCUSD_PERP"}, RECV)
    assert exc.value.reason == "unknown_message"
    with pytest.raises(Malformed):
        norm.normalize("hello", RECV)
    bad = dict(FORCE_ORDER_DOC, o=dict(FORCE_ORDER_DOC["o"], S="HOLD"))
    assert route(norm, json.dumps(bad), RECV).dead.reason == "bad_value"


# --- metadata ----------------------------------------------------------------------------------


def test_convert_exchange_info_capture() -> None:
    insts = {i.symbol: i for i in convert_binance_delivery(json.loads((FIX / "exchangeInfo.json").read_text()))}
    assert sorted(insts) == ["BCHUSD_PERP", "BTCUSD_210924", "BTCUSD_211231", "BTCUSD_PERP", "ETCUSD_PERP",
                             "ETHUSD_210924", "ETHUSD_PERP"]
    btc = insts["BTCUSD_PERP"]
    assert (btc.base, btc.quote, btc.kind, btc.expiry_ms, btc.contract_value, btc.inverse) == (
        "BTC", "USD", "perpetual", None, 100.0, True)
    eth_q = insts["ETHUSD_210924"]
    assert (eth_q.kind, eth_q.expiry_ms, eth_q.contract_value) == ("future", 1632470400000, 10.0)


def test_bundled_metadata_and_grammar_fallback() -> None:
    book = InstrumentBook.load("binance-delivery", parse_coinm_symbol)
    assert book.get("BTCUSD_PERP").contract_value == 100.0
    assert book.get("XRPUSD_PERP").contract_value == 10.0
    new = book.get("BTCUSD_240329")  # listed after the capture: grammar, Binance's 100 USD convention
    assert (new.kind, new.expiry_ms, new.contract_value, new.inverse) == ("future", _ms(2024, 3, 29, 8), 100.0, True)
    assert book.get("SOLUSD_PERP").contract_value == 10.0
    assert parse_coinm_symbol("BTCUSDT") is None and parse_coinm_symbol("BTCUSD_FOO") is None
