"""The values a reference normalizer (tardis-dev) gets right and liqstream got wrong (issue 19, fixes 1-5).

Each test feeds the venue's documented message shape (Binance USDⓈ-M / COIN-M websocket and REST
docs, OKX v5 docs; the same shapes as tardis-dev's mapper tests) and asserts the exact record or the
place the message lands. Expected numbers are worked out by hand in the comments.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from connectors.exchanges.binance import BinanceFuturesNormalizer
from connectors.exchanges.binance_delivery import BinanceDeliveryNormalizer
from connectors.exchanges.okx import OkxNormalizer
from connectors.normalize import route
from tests.venue_helpers import assert_all_encode

RECV = 1_700_000_000_123_456


def _ms(*ymdh: int) -> int:
    return int(datetime(*ymdh, tzinfo=UTC).timestamp() * 1000)


def _place(out) -> tuple:
    if out.dead is not None:
        return ("dead", out.dead.reason)
    if out.ignored is not None:
        return ("ignored", out.ignored)
    return ("records", out.records)


# --- 1. Binance @trade: X = INSURANCE_FUND / ADL / NA are off-book fills, not taker volume --------------

def _usdm_trade(x: object) -> dict:
    # the USDⓈ-M <symbol>@trade payload (as recorded by tardis-dev for 2020-07-29)
    data = {"e": "trade", "E": 1596034530241, "T": 1596034530235, "s": "ETHUSDT", "t": 73701056, "p": "2366.55",
            "q": "0.070", "m": True}
    if x is not None:
        data["X"] = x
    return {"stream": "ethusdt@trade", "data": data}


@pytest.mark.parametrize(("x", "reason"), [("INSURANCE_FUND", "off_book_trade_insurance_fund"),
                                           ("ADL", "off_book_trade_adl"), ("NA", "off_book_trade_na")])
@pytest.mark.parametrize("as_bytes", [True, False])  # bytes: the typed fast path first; object: the dict path
def test_off_book_binance_trades_are_counted_not_volume(x: str, reason: str, as_bytes: bool) -> None:
    msg = _usdm_trade(x)
    out = route(BinanceFuturesNormalizer(), json.dumps(msg).encode() if as_bytes else msg, RECV)
    assert _place(out) == ("ignored", reason)


@pytest.mark.parametrize("as_bytes", [True, False])
def test_market_and_untyped_binance_trades_stay_trades(as_bytes: bool) -> None:
    for x in ("MARKET", None):
        msg = _usdm_trade(x)
        [(et, rec)] = route(BinanceFuturesNormalizer(), json.dumps(msg).encode() if as_bytes else msg, RECV).records
        # 2366.55 x 0.070 = 165.6585 USDT; m=true: the buyer made, the taker sold
        assert (et, rec["price"], rec["size"], rec["taker_side"], rec["trade_id"]) == \
            ("trade", 2366.55, 0.07, "sell", "73701056")
        assert rec["notional_usd"] == pytest.approx(165.6585, rel=1e-12)
        assert rec["event_time"] == 1596034530235000


@pytest.mark.parametrize("x", ["LIQUIDATION", "", 5, ["MARKET"]])
def test_unknown_binance_trade_type_is_a_dead_letter(x: object) -> None:
    for raw in (json.dumps(_usdm_trade(x)).encode(), _usdm_trade(x)):
        out = route(BinanceFuturesNormalizer(), raw, RECV)
        assert _place(out) == ("dead", "bad_value")


def test_coin_m_market_trade_with_x() -> None:
    # COIN-M <symbol>@trade of 2020-06-16: 1 contract of 100 USD at 9504.9; m=false: the taker bought
    msg = {"stream": "btcusd_200925@trade", "data": {"e": "trade", "E": 1592265616654, "T": 1592265616653,
                                                     "s": "BTCUSD_200925", "t": 173906, "p": "9504.9", "q": "1",
                                                     "X": "MARKET", "m": False}}
    [(_, rec)] = route(BinanceDeliveryNormalizer(), json.dumps(msg).encode(), RECV).records
    assert (rec["notional_usd"], rec["taker_side"], rec["kind"]) == (100.0, "buy", "future")
    assert rec["size"] == pytest.approx(100 / 9504.9, rel=1e-12)
    ins = {**msg, "data": {**msg["data"], "X": "INSURANCE_FUND"}}
    assert _place(route(BinanceDeliveryNormalizer(), json.dumps(ins).encode(), RECV)) == \
        ("ignored", "off_book_trade_insurance_fund")


# --- 2. a dated future's markPrice: r "0.00000000" with T 0 is no funding (null), not 0.0 -----------------

def test_usdm_dated_future_mark_price_has_null_funding() -> None:
    msg = {"stream": "btcbusd_210129@markPrice@1s",
           "data": {"e": "markPriceUpdate", "E": 1609830121004, "s": "BTCBUSD_210129", "p": "31799.27730000",
                    "P": "31235.82439517", "i": "31307.03400000", "r": "0.00000000", "T": 0}}
    [(et, rec)] = route(BinanceFuturesNormalizer(), json.dumps(msg), RECV).records
    assert (et, rec) == ("funding", {
        "exchange": "binance-futures", "symbol": "BTCBUSD_210129", "base": "BTC", "quote": "BUSD", "kind": "future",
        "expiry": _ms(2021, 1, 29, 8), "event_time": 1609830121004000, "ingest_time": RECV,
        "mark_price": 31799.2773, "index_price": 31307.034, "funding_rate": None, "next_funding_time": None})
    assert_all_encode([(et, rec)])


def test_perpetual_zero_funding_stays_zero() -> None:
    # a perpetual whose current rate is exactly zero: a real 0.0, with its next funding time
    msg = {"e": "markPriceUpdate", "E": 1609830121004, "s": "BTCUSDT", "p": "31799.2773", "i": "31307.034",
           "r": "0.00000000", "T": 1609833600000}
    [(_, rec)] = BinanceFuturesNormalizer().normalize(msg, RECV)
    assert (rec["funding_rate"], rec["next_funding_time"]) == (0.0, 1609833600000)


def test_coin_m_premium_index_of_a_quarterly_has_null_funding() -> None:
    rest = {"symbol": "BTCUSD_210326", "pair": "BTCUSD", "markPrice": "34000.5", "indexPrice": "33000.1",
            "estimatedSettlePrice": "33010", "lastFundingRate": "0.00000000", "interestRate": "",
            "nextFundingTime": 0, "time": 1609830121004}
    [(_, rec)] = BinanceDeliveryNormalizer().normalize(rest, RECV)
    assert (rec["kind"], rec["funding_rate"], rec["next_funding_time"], rec["index_price"]) == \
        ("future", None, None, 33000.1)


# --- 3. OKX funding-rate without ts: the same outcome whichever of rate and mark came first ---------------

OLD_FUNDING = {"arg": {"channel": "funding-rate", "instId": "BTC-USD-SWAP"},  # the v5 docs' shape of 2021: no ts
               "data": [{"instType": "SWAP", "instId": "BTC-USD-SWAP", "fundingRate": "0.018",
                         "nextFundingRate": "", "fundingTime": "1597026383085"}]}


def _mark(ts: str, px: str) -> dict:
    return {"arg": {"channel": "mark-price", "instId": "BTC-USD-SWAP"},
            "data": [{"instType": "SWAP", "instId": "BTC-USD-SWAP", "markPx": px, "ts": ts}]}


@pytest.mark.parametrize("rate_first", [True, False])
def test_okx_funding_rate_without_ts_is_buffered_in_either_order(rate_first: bool) -> None:
    norm = OkxNormalizer()
    if rate_first:
        first = route(norm, json.dumps(OLD_FUNDING), RECV)
        route(norm, json.dumps(_mark("1597026380000", "11000")), RECV)
    else:
        route(norm, json.dumps(_mark("1597026380000", "11000")), RECV)
        first = route(norm, json.dumps(OLD_FUNDING), RECV)
    assert _place(first) == ("ignored", "funding_rate_buffered")  # never a dead letter for the missing ts
    [(_, rec)] = route(norm, json.dumps(_mark("1597026390000", "11001.5")), RECV).records
    assert (rec["event_time"], rec["mark_price"], rec["funding_rate"], rec["next_funding_time"]) == \
        (1597026390000000, 11001.5, 0.018, 1597026383085)


# --- 4. Binance openInterest without time: the receive time stands in, flagged ------------------------------

def test_usdm_open_interest_without_time_uses_receive_time() -> None:
    msg = {"stream": "btcusdt@openInterest", "generated": True,
           "data": {"symbol": "BTCUSDT", "openInterest": "26286.181"}}
    [(et, rec)] = route(BinanceFuturesNormalizer(), json.dumps(msg), RECV).records
    assert (et, rec["event_time"], rec["ingest_time"], rec["open_interest"], rec["open_interest_usd"]) == \
        ("open_interest", RECV, RECV, 26286.181, None)  # event_time == ingest_time: the flag
    with_time = {"symbol": "BTCUSDT", "openInterest": "26286.181", "time": 1592265372706}
    [(_, rec)] = BinanceFuturesNormalizer().normalize(with_time, RECV)
    assert rec["event_time"] == 1592265372706000


def test_coin_m_open_interest_without_time_uses_receive_time() -> None:
    norm = BinanceDeliveryNormalizer()
    mark = {"e": "markPriceUpdate", "E": 1592265602000, "s": "BTCUSD_200925", "p": "10000", "P": "9429.39675"}
    route(norm, json.dumps(mark), RECV)
    oi = {"symbol": "BTCUSD_200925", "pair": "BTCUSD", "openInterest": "15279", "contractType": "CURRENT_QUARTER"}
    [(_, rec)] = route(norm, json.dumps(oi), RECV).records
    # 15279 contracts x 100 USD = 1,527,900 USD; / mark 10000 = 152.79 BTC
    assert (rec["event_time"], rec["open_interest_usd"], rec["open_interest"]) == (RECV, 1527900.0, 152.79)


# --- 5. COIN-M indexPriceUpdate: kept for the pair's index price, not dead-lettered ------------------------

def test_coin_m_index_price_update_fills_the_index_of_later_marks() -> None:
    norm = BinanceDeliveryNormalizer()
    # the COIN-M markPrice of 2020 has no index "i" (and no r/T: a quarterly)
    mark = {"stream": "btcusd_200925@markPrice@1s",
            "data": {"e": "markPriceUpdate", "E": 1592265602000, "s": "BTCUSD_200925", "p": "9501.15723333",
                     "P": "9429.39675000"}}
    index = {"stream": "btcusd@indexPrice@1s",
             "data": {"e": "indexPriceUpdate", "E": 1592265601001, "i": "BTCUSD", "p": "9429.39675000"}}
    [(_, before)] = route(norm, json.dumps(mark), RECV).records
    assert before["index_price"] is None  # no index seen yet
    assert _place(route(norm, json.dumps(index), RECV)) == ("ignored", "index_price_update")
    [(_, after)] = route(norm, json.dumps(mark), RECV).records
    assert (after["index_price"], after["mark_price"], after["funding_rate"], after["kind"]) == \
        (9429.39675, 9501.15723333, None, "future")
    bad = {"e": "indexPriceUpdate", "E": 1592265601001, "i": "BTCUSD", "p": "-1"}
    assert _place(route(norm, json.dumps(bad), RECV)) == ("dead", "bad_value")
