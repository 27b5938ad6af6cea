"""Bybit normalizer: golden v2 trade lines (2021 capture), v5 documented examples, side mapping,
ticker delta state, linear vs inverse units. Expected values are computed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors.exchanges import normalizer_for
from connectors.exchanges.bybit import BybitNormalizer, parse_bybit_symbol
from connectors.instruments import INSTRUMENT_DIR
from connectors.instruments_refresh import convert_bybit
from connectors.normalize import Ignored, route
from tests.venue_helpers import assert_all_encode, capture_lines, epoch_ms

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "venues" / "bybit"
RECV = 1_700_000_000_654_321


def _lines() -> list[tuple[int, dict]]:
    return capture_lines(FIX / "ws_v2_excerpt.txt")


_ms = epoch_ms


_encode = assert_all_encode


@pytest.fixture
def norm() -> BybitNormalizer:
    return BybitNormalizer()


def test_registered() -> None:
    assert isinstance(normalizer_for("bybit"), BybitNormalizer)


# --- golden: v2 capture (2021) ---------------------------------------------------------------


def test_golden_v2_inverse_trades(norm: BybitNormalizer) -> None:
    recv, msg = _lines()[1]  # trade.BTCUSD, several fills; size in 1-USD contracts
    out = norm.normalize(msg, recv)
    assert len(out) == len(msg["data"])
    et, first = out[0]
    assert et == "trade"
    assert first == {
        "exchange": "bybit", "symbol": "BTCUSD", "base": "BTC", "quote": "USD", "kind": "perpetual", "expiry": None,
        "event_time": 1618677786614000, "ingest_time": recv, "trade_id": "5ffb8b77-900c-507d-97a2-0922557ffe54",
        "price": 60621.5,
        "size": pytest.approx(4 / 60621.5),  # 4 contracts = 4 USD
        "notional_usd": 4.0,
        "taker_side": "sell",
    }
    _, second_line = _lines()[2]
    recs = [r for _, r in norm.normalize(second_line, recv)]
    assert (recs[0]["notional_usd"], recs[0]["taker_side"], recs[0]["price"]) == (77.0, "buy", 60622.0)
    _encode(out)


def test_golden_v2_linear_trade(norm: BybitNormalizer) -> None:
    recv, msg = _lines()[3]  # trade.BCHUSDT: size in BCH, trade_time_ms as a string
    [(_, rec)] = norm.normalize(msg, recv)
    assert rec == {
        "exchange": "bybit", "symbol": "BCHUSDT", "base": "BCH", "quote": "USDT", "kind": "perpetual",
        "expiry": None, "event_time": 1618677785116000, "ingest_time": recv,
        "trade_id": "01cacfe9-8d1c-5ee4-995d-d79a43f955a6", "price": 1053.9, "size": 0.14,
        "notional_usd": pytest.approx(147.546),  # 0.14 x 1053.90
        "taker_side": "buy",
    }
    [(_, sell)] = norm.normalize(_lines()[4][1], recv)
    assert (sell["taker_side"], sell["size"], sell["notional_usd"]) == ("sell", 0.82, pytest.approx(0.82 * 1054.45))


def test_golden_v2_acks_and_books_ignored(norm: BybitNormalizer) -> None:
    lines = _lines()
    for idx, reason in ((0, "subscription_reply"), (5, "book_throttled")):  # 5: a book snapshot, its slot open
        with pytest.raises(Ignored) as exc:
            norm.normalize(lines[idx][1], lines[idx][0])
        assert exc.value.reason == reason


# --- v5 documented examples ------------------------------------------------------------------

PUBLIC_TRADE_DOC = {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1672304486868,
                    "data": [{"T": 1672304486865, "s": "BTCUSDT", "S": "Buy", "v": "0.001", "p": "16578.50",
                              "L": "PlusTick", "i": "20f43950-d8dd-5b31-9112-a178eb6023af", "BT": False}]}


def test_v5_public_trade_linear(norm: BybitNormalizer) -> None:
    [(et, rec)] = norm.normalize(PUBLIC_TRADE_DOC, RECV)
    assert (et, rec["symbol"], rec["event_time"], rec["trade_id"], rec["price"], rec["size"], rec["taker_side"]) == (
        "trade", "BTCUSDT", 1672304486865000, "20f43950-d8dd-5b31-9112-a178eb6023af", 16578.5, 0.001, "buy")
    assert rec["notional_usd"] == pytest.approx(16.5785)


def test_v5_public_trade_inverse(norm: BybitNormalizer) -> None:
    msg = {"topic": "publicTrade.BTCUSD", "type": "snapshot", "ts": 1672304486868,
           "data": [{"T": 1672304486865, "s": "BTCUSD", "S": "Sell", "v": "100", "p": "50000", "i": "x1"}]}
    [(_, rec)] = norm.normalize(msg, RECV)
    assert (rec["notional_usd"], rec["size"], rec["taker_side"]) == (100.0, pytest.approx(0.002), "sell")


ALL_LIQ_DOC = {"topic": "allLiquidation.ROSEUSDT", "type": "snapshot", "ts": 1739502303204,
               "data": [{"T": 1739502302929, "s": "ROSEUSDT", "S": "Sell", "v": "20000", "p": "0.04499"}]}


def test_v5_all_liquidation_doc_example(norm: BybitNormalizer) -> None:
    [(et, rec)] = norm.normalize(ALL_LIQ_DOC, RECV)
    assert et == "liquidation"
    assert rec == {
        "exchange": "bybit", "symbol": "ROSEUSDT", "base": "ROSE", "quote": "USDT", "kind": "perpetual",
        "expiry": None, "event_time": 1739502302929000, "ingest_time": RECV,
        "side": "short",  # docs: S is the position side, "Buy" update = a long was liquidated; so Sell = short
        "price": 0.04499, "size": 20000.0, "notional_usd": pytest.approx(899.8), "order_id": None,
    }
    _encode([(et, rec)])


def test_v5_all_liquidation_buy_is_long_and_inverse_units(norm: BybitNormalizer) -> None:
    msg = {"topic": "allLiquidation.BTCUSD", "type": "snapshot", "ts": 1739502303204,
           "data": [{"T": 1739502302929, "s": "BTCUSD", "S": "Buy", "v": "1000", "p": "40000"},
                    {"T": 1739502302930, "s": "BTCUSD", "S": "Sell", "v": "500", "p": "40000"}]}
    (_, a), (_, b) = norm.normalize(msg, RECV)
    assert (a["side"], a["notional_usd"], a["size"]) == ("long", 1000.0, pytest.approx(0.025))
    assert (b["side"], b["notional_usd"], b["size"]) == ("short", 500.0, pytest.approx(0.0125))


def test_v5_legacy_liquidation_doc_example(norm: BybitNormalizer) -> None:
    msg = {"topic": "liquidation.BTCUSDT", "type": "snapshot", "ts": 1703485237953,
           "data": {"updatedTime": 1703485237953, "symbol": "BTCUSDT", "side": "Sell", "size": "0.003",
                    "price": "43511.70"}}
    [(_, rec)] = norm.normalize(msg, RECV)
    assert (rec["side"], rec["price"], rec["size"], rec["event_time"]) == ("short", 43511.7, 0.003, 1703485237953000)
    assert rec["notional_usd"] == pytest.approx(130.5351)
    msg["data"]["side"] = "Buy"
    assert norm.normalize(msg, RECV)[0][1]["side"] == "long"
    msg["data"]["side"] = "Long"
    assert route(norm, json.dumps(msg), RECV).dead.reason == "bad_value"


TICKER_SNAPSHOT_DOC = {"topic": "tickers.BTCUSDT", "type": "snapshot", "cs": 24987956059, "ts": 1673272861686,
                       "data": {"symbol": "BTCUSDT", "tickDirection": "PlusTick", "price24hPcnt": "0.017103",
                                "lastPrice": "17216.00", "markPrice": "17217.33", "indexPrice": "17227.36",
                                "openInterest": "68744.761", "openInterestValue": "1183601235.91",
                                "turnover24h": "1570383121.943499", "volume24h": "91705.276",
                                "nextFundingTime": "1673280000000", "fundingRate": "-0.000212",
                                "bid1Price": "17215.50", "bid1Size": "84.489", "ask1Price": "17216.00",
                                "ask1Size": "83.020"}}


def test_v5_ticker_snapshot_then_deltas(norm: BybitNormalizer) -> None:
    out = norm.normalize(TICKER_SNAPSHOT_DOC, RECV)
    assert [et for et, _ in out] == ["funding", "open_interest"]
    f, oi = out[0][1], out[1][1]
    assert f == {
        "exchange": "bybit", "symbol": "BTCUSDT", "base": "BTC", "quote": "USDT", "kind": "perpetual",
        "expiry": None, "event_time": 1673272861686000, "ingest_time": RECV,
        "mark_price": 17217.33, "index_price": 17227.36, "funding_rate": -0.000212,
        "next_funding_time": 1673280000000,
    }
    assert (oi["open_interest"], oi["open_interest_usd"], oi["event_time"]) == (68744.761, 1183601235.91,
                                                                               1673272861686000)
    _encode(out)
    # a delta with only the mark: Funding keeps rate/index/next time from the snapshot
    delta = {"topic": "tickers.BTCUSDT", "type": "delta", "ts": 1673272861786,
             "data": {"symbol": "BTCUSDT", "markPrice": "17220.00", "bid1Price": "17215.00"}}
    [(et, f2)] = norm.normalize(delta, RECV)
    assert (et, f2["mark_price"], f2["funding_rate"], f2["index_price"], f2["next_funding_time"],
            f2["event_time"]) == ("funding", 17220.0, -0.000212, 17227.36, 1673280000000, 1673272861786000)
    # a delta with only openInterest: USD from base x the merged mark, not the stale openInterestValue
    delta_oi = {"topic": "tickers.BTCUSDT", "type": "delta", "ts": 1673272861886,
                "data": {"symbol": "BTCUSDT", "openInterest": "68750"}}
    [(et, oi2)] = norm.normalize(delta_oi, RECV)
    assert (et, oi2["open_interest"]) == ("open_interest", 68750.0)
    assert oi2["open_interest_usd"] == pytest.approx(68750 * 17220.0)
    with pytest.raises(Ignored) as exc:
        norm.normalize({"topic": "tickers.BTCUSDT", "type": "delta", "ts": 1673272861986,
                        "data": {"symbol": "BTCUSDT", "bid1Price": "17214.00"}}, RECV)
    assert exc.value.reason == "ticker_no_change"


def test_v5_ticker_delta_before_snapshot_is_incomplete(norm: BybitNormalizer) -> None:
    with pytest.raises(Ignored) as exc:
        norm.normalize({"topic": "tickers.ETHUSDT", "type": "delta", "ts": 1673272861686,
                        "data": {"symbol": "ETHUSDT", "openInterest": "1000"}}, RECV)
    assert exc.value.reason == "ticker_incomplete"


def test_v5_ticker_inverse_open_interest_in_usd_contracts(norm: BybitNormalizer) -> None:
    snap = {"topic": "tickers.BTCUSD", "type": "snapshot", "ts": 1673272861686,
            "data": {"symbol": "BTCUSD", "markPrice": "30000", "indexPrice": "30010", "openInterest": "373504107",
                     "openInterestValue": "12450.14", "fundingRate": "0.0001", "nextFundingTime": "1673280000000"}}
    (_, f), (_, oi) = norm.normalize(snap, RECV)
    assert (f["quote"], f["mark_price"], f["funding_rate"]) == ("USD", 30000.0, 0.0001)
    assert oi["open_interest_usd"] == 373504107.0  # contracts of 1 USD
    assert oi["open_interest"] == pytest.approx(373504107 / 30000)


def test_rest_tickers_and_open_interest(norm: BybitNormalizer) -> None:
    rest = {"retCode": 0, "retMsg": "OK", "time": 1672376496682, "retExtInfo": {},
            "result": {"category": "linear", "list": [dict(TICKER_SNAPSHOT_DOC["data"])]}}
    out = norm.normalize(rest, RECV)
    assert [et for et, _ in out] == ["funding", "open_interest"]
    assert out[0][1]["event_time"] == 1672376496682000 and out[1][1]["open_interest_usd"] == 1183601235.91
    oi_lin = {"retCode": 0, "retMsg": "OK", "time": 1669571415000, "retExtInfo": {},
              "result": {"symbol": "ETHUSDT", "category": "linear", "nextPageCursor": "",
                         "list": [{"openInterest": "50000.5", "timestamp": "1669571400000"}]}}
    [(_, r)] = norm.normalize(oi_lin, RECV)
    assert (r["open_interest"], r["open_interest_usd"], r["event_time"]) == (50000.5, None, 1669571400000000)
    oi_inv = {"retCode": 0, "retMsg": "OK", "time": 1669571415000, "retExtInfo": {},
              "result": {"symbol": "ETHUSD", "category": "inverse", "nextPageCursor": "",
                         "list": [{"openInterest": "1000000", "timestamp": "1669571400000"}]}}
    assert route(norm, json.dumps(oi_inv), RECV).dead.reason == "no_reference_price"
    assert route(norm, json.dumps({"retCode": 10001, "retMsg": "bad", "result": {}}), RECV).dead.reason == "rest_error"


def test_control_frames(norm: BybitNormalizer) -> None:
    for msg, reason in (({"success": True, "ret_msg": "pong", "conn_id": "c", "req_id": "", "op": "ping"}, "pong"),
                        ({"op": "pong", "args": ["1675418560633"], "conn_id": "c"}, "pong"),
                        ({"success": True, "ret_msg": "", "conn_id": "c", "req_id": "", "op": "subscribe"},
                         "subscription_reply"),
                        ({"topic": "orderbook.50.BTCUSDT", "type": "delta", "ts": 1672304486868,
                          "data": {"s": "BTCUSDT", "b": [], "a": [], "u": 7, "seq": 1}}, "book_resyncing"),
                        ({"topic": "kline.5.BTCUSDT", "type": "snapshot", "ts": 1, "data": []}, "kline")):
        with pytest.raises(Ignored) as exc:
            norm.normalize(msg, RECV)
        assert exc.value.reason == reason
    failed = {"success": False, "ret_msg": "error:handler not found,topic:foo", "conn_id": "c", "op": "subscribe"}
    assert route(norm, json.dumps(failed), RECV).dead.reason == "subscription_failed"
    assert route(norm, json.dumps({"topic": "newThing.BTCUSDT", "data": []}), RECV).dead.reason == "unknown_message"
    assert route(norm, "[1,2]", RECV).dead.reason == "unknown_message"


# --- metadata ----------------------------------------------------------------------------------


def test_convert_instruments_info_doc_shape() -> None:
    linear = {"retCode": 0, "retMsg": "OK", "time": 1, "result": {"category": "linear", "nextPageCursor": "", "list": [
        {"symbol": "BTCUSDT", "contractType": "LinearPerpetual", "status": "Trading", "baseCoin": "BTC",
         "quoteCoin": "USDT", "settleCoin": "USDT", "launchTime": "1585526400000", "deliveryTime": "0"},
        {"symbol": "BTC-26DEC25", "contractType": "LinearFutures", "status": "Trading", "baseCoin": "BTC",
         "quoteCoin": "USDC", "settleCoin": "USDC", "launchTime": "1", "deliveryTime": "1766736000000"}]}}
    inverse = {"retCode": 0, "retMsg": "OK", "time": 1, "result": {"category": "inverse", "nextPageCursor": "", "list": [
        {"symbol": "BTCUSDH25", "contractType": "InverseFutures", "status": "Trading", "baseCoin": "BTC",
         "quoteCoin": "USD", "settleCoin": "BTC", "launchTime": "1", "deliveryTime": "1743148800000"},
        {"symbol": "XBTUSD", "contractType": "InversePerpetual", "status": "Trading", "baseCoin": "XBT",
         "quoteCoin": "USD", "settleCoin": "BTC", "launchTime": "1", "deliveryTime": "0"}]}}
    got = {i.symbol: i for i in convert_bybit([linear, inverse])}
    assert (got["BTCUSDT"].kind, got["BTCUSDT"].inverse, got["BTCUSDT"].contract_value, got["BTCUSDT"].expiry_ms) == (
        "perpetual", False, 1.0, None)
    assert (got["BTC-26DEC25"].kind, got["BTC-26DEC25"].quote, got["BTC-26DEC25"].expiry_ms) == (
        "future", "USDC", 1766736000000)
    assert (got["BTCUSDH25"].inverse, got["BTCUSDH25"].contract_value, got["BTCUSDH25"].expiry_ms) == (
        True, 1.0, 1743148800000)
    assert got["XBTUSD"].base == "BTC"


def test_bundled_file_is_marked_hand_made() -> None:
    doc = json.loads((INSTRUMENT_DIR / "bybit.json").read_text())
    assert doc["source"].startswith("HAND-MADE")
    symbols = {r["symbol"]: r for r in doc["instruments"]}
    for coin in ("BTC", "ETH", "SOL", "XRP", "DOGE", "BNB", "ADA", "AVAX"):
        assert symbols[coin + "USDT"]["inverse"] is False and symbols[coin + "USD"]["inverse"] is True


def test_symbol_grammar() -> None:
    inv_fut = parse_bybit_symbol("BTCUSDH25")  # H = March; last Friday of March 2025 is the 28th
    assert (inv_fut.kind, inv_fut.inverse, inv_fut.expiry_ms) == ("future", True, _ms(2025, 3, 28, 8))
    lin_fut = parse_bybit_symbol("ETHUSDT-26DEC25")
    assert (lin_fut.base, lin_fut.quote, lin_fut.expiry_ms, lin_fut.inverse) == ("ETH", "USDT", _ms(2025, 12, 26, 8),
                                                                                False)
    assert parse_bybit_symbol("BTC-26DEC25").quote == "USDC"
    assert parse_bybit_symbol("BTCPERP").quote == "USDC"
    assert parse_bybit_symbol("XBTUSD").base == "BTC"
    assert parse_bybit_symbol("???") is None
