"""Message versions of past years (issue 19): Bybit v2 and OKX v3, chosen by the message's own shape.

Per venue and version, a table of documented messages (the shapes of the venues' v2/v3 docs, as
recorded in the archives of 2019-2021 and in tardis-dev's mapper tests) and the exact records expected.
Units as for today's versions: contracts x contract value, inverse contracts in USD; a liquidation's
side is the position closed. Expected numbers are worked out by hand in the comments; epoch times are
the ISO times of the messages (checked with the stdlib's datetime).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from connectors.exchanges.bybit import BybitNormalizer
from connectors.exchanges.okx import OkxNormalizer
from connectors.normalize import route
from tests.venue_helpers import assert_all_encode

RECV = 1_700_000_000_123_456

BTCUSD = {"exchange": "bybit", "symbol": "BTCUSD", "base": "BTC", "quote": "USD", "kind": "perpetual", "expiry": None}
ETHUSD = {**BTCUSD, "symbol": "ETHUSD", "base": "ETH"}
BTCUSDT = {**BTCUSD, "symbol": "BTCUSDT", "quote": "USDT"}
BTCUSDM21 = {**BTCUSD, "symbol": "BTCUSDM21", "kind": "future", "expiry": 1624608000000}  # last Friday of June 08:00


def _trade(common: dict, t_us: int, tid: str | None, price: float, size: float, usd: float, side: str) -> tuple:
    return ("trade", {**common, "event_time": t_us, "ingest_time": RECV, "trade_id": tid, "price": price,
                      "size": size, "notional_usd": usd, "taker_side": side})


def _liq(common: dict, t_us: int, side: str, price: float, size: float, usd: float, order_id: str | None = None):
    return ("liquidation", {**common, "event_time": t_us, "ingest_time": RECV, "side": side, "price": price,
                            "size": size, "notional_usd": usd, "order_id": order_id})


def _funding(common: dict, t_us: int, mark: float, index: float | None, rate: float | None, nft: int | None):
    return ("funding", {**common, "event_time": t_us, "ingest_time": RECV, "mark_price": mark, "index_price": index,
                        "funding_rate": rate, "next_funding_time": nft})


def _oi(common: dict, t_us: int, base: float, usd: float | None) -> tuple:
    return ("open_interest", {**common, "event_time": t_us, "ingest_time": RECV, "open_interest": base,
                              "open_interest_usd": usd})


def _check(norm: Any, msg: dict, expected: Any) -> None:
    """Route the message as bytes (fast paths first) and compare with the expected place and records."""
    out = route(norm, json.dumps(msg).encode(), RECV)
    if isinstance(expected, tuple) and expected[0] in ("ignored", "dead"):
        got = ("ignored", out.ignored) if out.ignored is not None else \
            ("dead", out.dead.reason if out.dead else None)
        assert got == expected, out
        return
    assert out.dead is None and out.ignored is None, out
    assert len(out.records) == len(expected)
    for (et, rec), (want_et, want) in zip(out.records, expected, strict=True):
        assert et == want_et
        assert rec.keys() == want.keys()
        for k, v in want.items():
            assert rec[k] == (pytest.approx(v, rel=1e-12) if isinstance(v, float) else v), k
    assert_all_encode(out.records)


# --- Bybit v2 (inverse and linear) -------------------------------------------------------------------------

BYBIT_V2 = [
    ("trade.BTCUSD 2019: ISO time only, inverse contracts of 1 USD",
     {"topic": "trade.BTCUSD", "data": [{"timestamp": "2019-11-06T12:50:52.000Z", "symbol": "BTCUSD", "side": "Buy",
                                         "size": 6000, "price": 9366, "tick_direction": "ZeroPlusTick",
                                         "trade_id": "8c53dd53-2df5-563d-8e3b-e0dbba7c55a0", "cross_seq": 794201989}]},
     # 6000 contracts = 6000 USD; 6000 / 9366 BTC
     [_trade(BTCUSD, 1573044652000000, "8c53dd53-2df5-563d-8e3b-e0dbba7c55a0", 9366.0, 6000 / 9366, 6000.0, "buy")]),
    ("trade.BTCUSDT 2020: linear, trade_time_ms as a string",
     {"topic": "trade.BTCUSDT", "data": [{"symbol": "BTCUSDT", "tick_direction": "MinusTick", "price": "9452.00",
                                          "size": 0.001, "timestamp": "2020-05-28T16:31:02.000Z",
                                          "trade_time_ms": "1590683462124", "side": "Sell",
                                          "trade_id": "bfbbb893-0971-5733-8eb2-aab164d0a552"}]},
     [_trade(BTCUSDT, 1590683462124000, "bfbbb893-0971-5733-8eb2-aab164d0a552", 9452.0, 0.001, 9.452, "sell")]),
    ("trade.ETHUSD 2020: inverse, trade_time_ms as an int",
     {"topic": "trade.ETHUSD", "data": [{"trade_time_ms": 1590683463041, "timestamp": "2020-05-28T16:31:03.000Z",
                                         "symbol": "ETHUSD", "side": "Buy", "size": 1, "price": 215.15,
                                         "tick_direction": "PlusTick",
                                         "trade_id": "52079383-86f0-52bf-ab1f-f943a34a8aeb", "cross_seq": 736789193}]},
     [_trade(ETHUSD, 1590683463041000, "52079383-86f0-52bf-ab1f-f943a34a8aeb", 215.15, 1 / 215.15, 1.0, "buy")]),
    ("liquidation.BTCUSD v2: side Sell = a short liquidated; qty in 1-USD contracts",
     {"topic": "liquidation.BTCUSD", "data": {"symbol": "BTCUSD", "side": "Sell", "price": "45171.00", "qty": "2329",
                                              "time": 1632123949005}},
     [_liq(BTCUSD, 1632123949005000, "short", 45171.0, 2329 / 45171, 2329.0)]),
    ("liquidation.BTCUSDT v2: linear qty in BTC",
     {"topic": "liquidation.BTCUSDT", "data": {"symbol": "BTCUSDT", "side": "Sell", "price": "45212.50",
                                               "qty": "0.009", "time": 1632123952732}},
     [_liq(BTCUSDT, 1632123952732000, "short", 45212.5, 0.009, 406.9125)]),  # 0.009 x 45212.5
    ("liquidation.BTCUSD v2 REST rows (a list with ids): side Buy = a long liquidated",
     {"topic": "liquidation.BTCUSD", "generated": True,
      "data": [{"id": 10759329, "qty": 1257079, "side": "Buy", "time": 1632123292903, "symbol": "BTCUSD",
                "price": 44662.5},
               {"id": 10759323, "qty": 2314, "side": "Buy", "time": 1632123294901, "symbol": "BTCUSD",
                "price": 44593}]},
     [_liq(BTCUSD, 1632123292903000, "long", 44662.5, 1257079 / 44662.5, 1257079.0, "10759329"),
      _liq(BTCUSD, 1632123294901000, "long", 44593.0, 2314 / 44593, 2314.0, "10759323")]),
    ("instrument_info ETHUSD snapshot 2019: e4/e6 scaled, inverse open interest in USD",
     {"topic": "instrument_info.100ms.ETHUSD", "type": "snapshot",
      "data": {"id": 2, "symbol": "ETHUSD", "last_price_e4": 1906500, "mark_price_e4": 1905000,
               "index_price_e4": 1904900, "open_interest": 13793020, "open_value_e8": 7302549080059,
               "funding_rate_e6": 100, "predicted_funding_rate_e6": 100, "cross_seq": 311869653,
               "created_at": "2019-01-25T09:12:06Z", "updated_at": "2019-11-06T12:49:56Z",
               "next_funding_time": "2019-11-06T16:00:00Z", "countdown_hour": 4},
      "cross_seq": 311872222, "timestamp_e6": 1573044649041458},
     # mark 1905000 / 1e4 = 190.5; index 190.49; rate 100 / 1e6 = 0.0001; OI 13,793,020 USD = / 190.5 ETH
     [_funding(ETHUSD, 1573044649041458, 190.5, 190.49, 0.0001, 1573056000000),
      _oi(ETHUSD, 1573044649041458, 13793020 / 190.5, 13793020.0)]),
    ("instrument_info EOSUSD delta with volume fields only",
     {"topic": "instrument_info.100ms.EOSUSD", "type": "delta",
      "data": {"delete": [], "update": [{"id": 4, "symbol": "EOSUSD", "last_tick_direction": "ZeroMinusTick",
                                         "total_volume": 8223153999, "volume_24h": 65324494, "cross_seq": 344634644,
                                         "created_at": "2018-10-17T11:53:15Z",
                                         "updated_at": "2019-11-06T12:59:58Z"}], "insert": []},
      "cross_seq": 344634644, "timestamp_e6": 1573045198449619},
     ("ignored", "ticker_no_change")),
    ("instrument_info BTCUSDM21 delta: an inverse future has mark and index, no funding",
     {"topic": "instrument_info.100ms.BTCUSDM21", "type": "delta",
      "data": {"delete": [], "update": [{"id": 1, "symbol": "BTCUSDM21", "symbol_name": "BTCUSD0625",
                                         "contract_type": "InverseFutures", "mark_price_e4": 608243538,
                                         "index_price_e4": 565850800, "fair_basis_e8": 429342000000,
                                         "cross_seq": 7182433}], "insert": []},
      "cross_seq": 7182693, "timestamp_e6": 1615467900200258},
     [_funding(BTCUSDM21, 1615467900200258, 60824.3538, 56585.08, None, None)]),
    ("a Bybit v2 error reply", {"success": False, "ret_msg": "error:topic:liquidation.NOPE not found",
                                "request": {"op": "subscribe", "args": ["liquidation.NOPE"]}},
     ("dead", "subscription_failed")),
    ("a v2 liquidation without qty", {"topic": "liquidation.BTCUSD",
                                      "data": {"symbol": "BTCUSD", "side": "Sell", "price": "1", "time": 1632123949005}},
     ("dead", "missing_field")),
    ("a v2 trade with a broken ISO time", {"topic": "trade.BTCUSD", "data": [{"timestamp": "2019-13-06T12:50:52Z",
                                                                             "symbol": "BTCUSD", "side": "Buy",
                                                                             "size": 1, "price": 1}]},
     ("dead", "bad_value")),
]


@pytest.mark.parametrize(("name", "msg", "expected"), BYBIT_V2, ids=[c[0] for c in BYBIT_V2])
def test_bybit_v2(name: str, msg: dict, expected: Any) -> None:
    _check(BybitNormalizer(), msg, expected)


def test_bybit_v2_linear_ticker_snapshot_then_delta_merges() -> None:
    norm = BybitNormalizer()
    snapshot = {"topic": "instrument_info.100ms.BTCUSDT", "type": "snapshot",
                "data": {"id": 1, "symbol": "BTCUSDT", "last_price_e4": "94695000", "mark_price_e4": "94751300",
                         "index_price_e4": "94739400", "open_interest_e8": "447123000000",
                         "funding_rate_e6": "93", "predicted_funding_rate_e6": "100", "cross_seq": "176990247",
                         "created_at": "1970-01-01T00:00:00.000Z", "updated_at": "2020-05-28T16:14:34.000Z"},
                "cross_seq": "176990933", "timestamp_e6": "1590682502904608"}
    # mark 9475.13, index 9473.94, rate 93e-6; OI 447123000000 / 1e8 = 4471.23 BTC, x mark 9475.13 USD
    _check(norm, snapshot, [_funding(BTCUSDT, 1590682502904608, 9475.13, 9473.94, 0.000093, None),
                            _oi(BTCUSDT, 1590682502904608, 4471.23, 4471.23 * 9475.13)])
    delta = {"topic": "instrument_info.100ms.BTCUSDT", "type": "delta",
             "data": {"update": [{"id": 1, "symbol": "BTCUSDT", "index_price_e4": "94496200", "cross_seq": "177025335",
                                  "created_at": "1970-01-01T00:00:00.000Z", "updated_at": "2020-05-28T16:31:02.000Z"}]},
             "cross_seq": "177025391", "timestamp_e6": "1590683462401579"}
    # only the index changed: the mark and the rate come from the merged snapshot
    _check(norm, delta, [_funding(BTCUSDT, 1590683462401579, 9475.13, 9449.62, 0.000093, None)])


# --- OKX v3 (swap, futures, spot) --------------------------------------------------------------------------

BTC_USD_SWAP = {"exchange": "okx", "symbol": "BTC-USD-SWAP", "base": "BTC", "quote": "USD", "kind": "perpetual",
                "expiry": None}
BTC_USDT_SWAP = {**BTC_USD_SWAP, "symbol": "BTC-USDT-SWAP", "quote": "USDT"}
UNI_USD_SWAP = {**BTC_USD_SWAP, "symbol": "UNI-USD-SWAP", "base": "UNI"}
BCH_USD_SWAP = {**BTC_USD_SWAP, "symbol": "BCH-USD-SWAP", "base": "BCH"}
ETH_USDT = {**BTC_USD_SWAP, "symbol": "ETH-USDT", "base": "ETH", "quote": "USDT", "kind": "spot"}
BTC_USD_190628 = {**BTC_USD_SWAP, "symbol": "BTC-USD-190628", "kind": "future", "expiry": 1561708800000}
BTC_USD_210326 = {**BTC_USD_190628, "symbol": "BTC-USD-210326", "expiry": 1616745600000}
ETH_USD_210326 = {**BTC_USD_210326, "symbol": "ETH-USD-210326", "base": "ETH"}

OKX_V3 = [
    ("futures/trade 2019: qty, numbers, a dated future of the BTC-USD series (100 USD contracts)",
     {"table": "futures/trade", "data": [{"side": "sell", "trade_id": "2578238628528131", "price": 4061.94, "qty": 4,
                                          "instrument_id": "BTC-USD-190628",
                                          "timestamp": "2019-03-31T23:59:59.388Z"}]},
     [_trade(BTC_USD_190628, 1554076799388000, "2578238628528131", 4061.94, 400 / 4061.94, 400.0, "sell")]),
    ("swap/trade: inverse swap, size in contracts",
     {"table": "swap/trade", "data": [{"instrument_id": "BTC-USD-SWAP", "price": "9337.7", "side": "buy",
                                       "size": "3", "timestamp": "2020-01-31T23:59:53.276Z", "trade_id": "4238862"}]},
     [_trade(BTC_USD_SWAP, 1580515193276000, "4238862", 9337.7, 300 / 9337.7, 300.0, "buy")]),
    ("swap/trade: linear swap, 0.01 BTC contracts",
     {"table": "swap/trade", "data": [{"instrument_id": "BTC-USDT-SWAP", "price": "22376.9", "side": "sell",
                                       "size": "2", "timestamp": "2020-12-18T00:30:58.374Z", "trade_id": "77"}]},
     [_trade(BTC_USDT_SWAP, 1608251458374000, "77", 22376.9, 0.02, 447.538, "sell")]),  # 0.02 x 22376.9
    ("spot/trade: base units",
     {"table": "spot/trade", "data": [{"instrument_id": "ETH-USDT", "price": "162.12", "side": "buy",
                                       "size": "11.085", "timestamp": "2019-08-01T00:00:20.773Z",
                                       "trade_id": "1210447366"}]},
     [_trade(ETH_USDT, 1564617620773000, "1210447366", 162.12, 11.085, 11.085 * 162.12, "buy")]),
    ("swap/liquidation: type 3 = a long closed; UNI-USD-SWAP 10 USD contracts",
     {"table": "swap/liquidation", "generated": True,
      "data": [{"loss": "0", "size": "8", "price": "3.523", "created_at": "2020-12-18T00:30:58.374Z", "type": "3",
                "instrument_id": "UNI-USD-SWAP"}]},
     [_liq(UNI_USD_SWAP, 1608251458374000, "long", 3.523, 80 / 3.523, 80.0)]),
    ("swap/liquidation: linear, 30 contracts = 0.3 BTC",
     {"table": "swap/liquidation", "data": [{"loss": "0", "size": "30", "price": "22376.9",
                                             "created_at": "2020-12-18T00:30:58.374Z", "type": "3",
                                             "instrument_id": "BTC-USDT-SWAP"}]},
     [_liq(BTC_USDT_SWAP, 1608251458374000, "long", 22376.9, 0.3, 6713.07)]),  # 0.3 x 22376.9
    ("futures/liquidation: type 4 = a short closed, and a type 3 of the ETH-USD series (10 USD contracts)",
     {"table": "futures/liquidation", "generated": True,
      "data": [{"loss": "0.00013667", "size": "8", "price": "24515.8", "created_at": "2020-12-18T08:32:34.576Z",
                "type": "4", "instrument_id": "BTC-USD-210326"},
               {"loss": "0.05612247", "size": "475", "price": "655.308", "created_at": "2020-12-18T00:30:58.374Z",
                "type": "3", "instrument_id": "ETH-USD-210326"}]},
     [_liq(BTC_USD_210326, 1608280354576000, "short", 24515.8, 800 / 24515.8, 800.0),
      _liq(ETH_USD_210326, 1608251458374000, "long", 655.308, 4750 / 655.308, 4750.0)]),
    ("swap/ticker 2020 with open_interest: contracts x 100 USD, base at the ticker's last price",
     {"table": "swap/ticker", "data": [{"last": "9337.7", "open_24h": "9508.4", "best_bid": "9336.6",
                                        "high_24h": "9525.3", "low_24h": "9189", "volume_24h": "6004144",
                                        "volume_token_24h": "64331.636", "best_ask": "9336.7",
                                        "open_interest": "2233398", "instrument_id": "BTC-USD-SWAP",
                                        "timestamp": "2020-01-31T23:59:53.276Z"}]},
     [_oi(BTC_USD_SWAP, 1580515193276000, 223339800 / 9337.7, 223339800.0)]),
    ("swap/ticker 2019 without open_interest",
     {"table": "swap/ticker", "data": [{"best_ask": "329.3", "best_bid": "329.29", "high_24h": "337.89",
                                        "instrument_id": "BCH-USD-SWAP", "last": "329.3", "low_24h": "318.13",
                                        "timestamp": "2019-08-01T00:00:02.483Z", "volume_24h": "2099540"}]},
     ("ignored", "v3_ticker")),
    ("swap/depth", {"table": "swap/depth", "action": "update",
                    "data": [{"instrument_id": "XRP-USD-SWAP", "asks": [], "bids": [],
                              "timestamp": "2019-08-01T00:00:08.930Z", "checksum": 1}]}, ("ignored", "v3_depth")),
    ("v3 subscribe ack", {"event": "subscribe", "channel": "swap/trade:BTC-USD-SWAP"},
     ("ignored", "subscription_reply")),
    ("v3 error", {"event": "error", "message": "Channel swap/trade:NOPE doesn't exist", "errorCode": 30040},
     ("dead", "subscription_failed")),
    ("v3 liquidation of an unknown type", {"table": "swap/liquidation", "data": [
        {"loss": "0", "size": "8", "price": "3.523", "created_at": "2020-12-18T00:30:58.374Z", "type": "5",
         "instrument_id": "UNI-USD-SWAP"}]}, ("dead", "bad_value")),
    ("v3 trade without timestamp", {"table": "swap/trade", "data": [
        {"instrument_id": "BTC-USD-SWAP", "price": "1", "side": "buy", "size": "3"}]}, ("dead", "missing_field")),
    ("an unknown v3 market", {"table": "bogus/trade", "data": []}, ("dead", "unknown_message")),
]


@pytest.mark.parametrize(("name", "msg", "expected"), OKX_V3, ids=[c[0] for c in OKX_V3])
def test_okx_v3(name: str, msg: dict, expected: Any) -> None:
    _check(OkxNormalizer(), msg, expected)


def test_okx_v3_funding_rate_goes_out_with_the_next_mark_price() -> None:
    norm = OkxNormalizer()
    rate = {"table": "swap/funding_rate", "data": [{"estimated_rate": "0.00037", "funding_rate": "0.00023534",
                                                    "funding_time": "2019-08-01T04:00:00.000Z",
                                                    "instrument_id": "BCH-USD-SWAP", "interest_rate": "0"}]}
    mark = {"table": "swap/mark_price",
            "data": [{"instrument_id": "BCH-USD-SWAP", "mark_price": "329.3", "timestamp": "2019-08-01T00:00:20.773Z"}]}
    _check(norm, mark, [_funding(BCH_USD_SWAP, 1564617620773000, 329.3, None, None, None)])
    _check(norm, rate, ("ignored", "funding_rate_buffered"))  # v3 rows have no time of their own
    _check(norm, mark, [_funding(BCH_USD_SWAP, 1564617620773000, 329.3, None, 0.00023534, 1564632000000)])
