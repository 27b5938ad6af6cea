"""OKX normalizer: golden lines from the 2022 capture, v5 documented examples, contract values
(ctVal) for linear and inverse, liquidation side mapping. Expected values are computed by hand from
the message fields and the captured instruments (BTC-USD-* 100 USD, UNI-USD-SWAP 10 USD,
BTC-USDT-SWAP 0.01 BTC, IOST-USDT-SWAP 1000 IOST per contract)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors.exchanges import normalizer_for
from connectors.exchanges.okx import OkxNormalizer, parse_okx_symbol
from connectors.instruments_refresh import convert_okx
from connectors.normalize import Ignored, route
from tests.venue_helpers import assert_all_encode, capture_lines

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "venues" / "okx"
RECV = 1_700_000_000_111_222


def _lines() -> list[tuple[int, dict]]:
    return capture_lines(FIX / "ws_excerpt.txt")


_encode = assert_all_encode


@pytest.fixture
def norm() -> OkxNormalizer:
    return OkxNormalizer()


def test_registered() -> None:
    assert isinstance(normalizer_for("okx"), OkxNormalizer)


# --- golden: real capture lines --------------------------------------------------------------


def test_golden_inverse_future_trade(norm: OkxNormalizer) -> None:
    recv, msg = _lines()[1]  # BTC-USD-220527: px 30218.8, sz 1 contract of 100 USD
    [(et, rec)] = norm.normalize(msg, recv)
    assert et == "trade"
    assert rec == {
        "exchange": "okx", "symbol": "BTC-USD-220527", "base": "BTC", "quote": "USD", "kind": "future",
        "expiry": 1653638400000,  # expTime of the captured instrument (2022-05-27 08:00 UTC)
        "event_time": 1652459199958000, "ingest_time": recv, "trade_id": "7849",
        "price": 30218.8, "size": pytest.approx(100 / 30218.8), "notional_usd": 100.0, "taker_side": "buy",
    }
    _encode([(et, rec)])


def test_golden_inverse_swap_trade(norm: OkxNormalizer) -> None:
    recv, msg = _lines()[2]  # UNI-USD-SWAP: 100 contracts x 10 USD
    [(_, rec)] = norm.normalize(msg, recv)
    assert (rec["symbol"], rec["base"], rec["quote"], rec["kind"], rec["expiry"]) == (
        "UNI-USD-SWAP", "UNI", "USD", "perpetual", None)
    assert (rec["event_time"], rec["trade_id"], rec["price"], rec["taker_side"]) == (
        1652459215150000, "12883020", 5.123, "sell")
    assert rec["notional_usd"] == 1000.0
    assert rec["size"] == pytest.approx(1000 / 5.123)


def test_golden_spot_trade(norm: OkxNormalizer) -> None:
    recv, msg = _lines()[3]  # BTC-USDT spot: sz is BTC
    [(_, rec)] = norm.normalize(msg, recv)
    assert (rec["symbol"], rec["kind"], rec["quote"], rec["size"], rec["price"], rec["taker_side"]) == (
        "BTC-USDT", "spot", "USDT", 0.0002, 30236.0, "buy")
    assert rec["notional_usd"] == pytest.approx(6.0472)


def test_golden_ignored(norm: OkxNormalizer) -> None:
    lines = _lines()
    for idx, reason in ((0, "subscription_reply"), (4, "tickers"), (5, "book_resyncing")):  # 5: a books update, no snapshot before it
        with pytest.raises(Ignored) as exc:
            norm.normalize(lines[idx][1], lines[idx][0])
        assert exc.value.reason == reason


# --- documented examples ---------------------------------------------------------------------

LIQ_DOC = {"id": "1512", "arg": {"channel": "liquidation-orders", "instType": "SWAP"},
           "data": [{"details": [{"bkLoss": "0", "bkPx": "0.007831", "ccy": "", "posSide": "short", "side": "buy",
                                  "sz": "13", "ts": "1692266434010"}],
                     "instFamily": "IOST-USDT", "instId": "IOST-USDT-SWAP", "instType": "SWAP", "uly": "IOST-USDT"}]}


def test_liquidation_doc_example(norm: OkxNormalizer) -> None:
    [(et, rec)] = norm.normalize(LIQ_DOC, RECV)
    assert et == "liquidation"
    assert rec == {
        "exchange": "okx", "symbol": "IOST-USDT-SWAP", "base": "IOST", "quote": "USDT", "kind": "perpetual",
        "expiry": None, "event_time": 1692266434010000, "ingest_time": RECV,
        "side": "short",  # posSide short (the buy order closed it)
        "price": 0.007831,
        "size": 13000.0,  # 13 contracts x 1000 IOST
        "notional_usd": pytest.approx(101.803),  # 13000 x 0.007831
        "order_id": None,
    }
    _encode([(et, rec)])


@pytest.mark.parametrize(("pos_side", "order_side", "expected"), [
    ("long", "sell", "long"), ("short", "buy", "short"),
    ("net", "sell", "long"), ("net", "buy", "short"),  # net mode: a sell closes a long
    ("", "buy", "short"),
])
def test_liquidation_side_mapping(norm: OkxNormalizer, pos_side: str, order_side: str, expected: str) -> None:
    msg = {"arg": {"channel": "liquidation-orders", "instType": "SWAP"},
           "data": [{"instId": "BTC-USDT-SWAP", "instType": "SWAP", "details": [
               {"bkPx": "30000", "posSide": pos_side, "side": order_side, "sz": "2", "ts": "1692266434010"}]}]}
    [(_, rec)] = norm.normalize(msg, RECV)
    assert rec["side"] == expected
    assert (rec["size"], rec["notional_usd"]) == (pytest.approx(0.02), pytest.approx(600.0))  # 2 x 0.01 BTC x 30000


def test_liquidation_inverse_and_bad_side(norm: OkxNormalizer) -> None:
    msg = {"arg": {"channel": "liquidation-orders", "instType": "SWAP"},
           "data": [{"instId": "BTC-USD-SWAP", "instType": "SWAP", "details": [
               {"bkPx": "25000", "posSide": "long", "side": "sell", "sz": "5", "ts": "1692266434010"},
               {"bkPx": "25000", "posSide": "net", "side": "", "sz": "5", "ts": "1692266434011"}]}]}
    assert route(norm, json.dumps(msg), RECV).dead.reason == "bad_value"
    msg["data"][0]["details"].pop()
    [(_, rec)] = norm.normalize(msg, RECV)
    assert (rec["notional_usd"], rec["size"], rec["side"]) == (500.0, pytest.approx(0.02), "long")  # 5 x 100 USD


OI_DOC = {"arg": {"channel": "open-interest", "instId": "BTC-USDT-SWAP"},
          "data": [{"instId": "BTC-USDT-SWAP", "instType": "SWAP", "oi": "2216113.01000000309",
                    "oiCcy": "22161.1301000000309", "oiUsd": "1939251795.54769270396321", "ts": "1743041250440"}]}


def test_open_interest_doc_example(norm: OkxNormalizer) -> None:
    [(et, rec)] = norm.normalize(OI_DOC, RECV)
    assert et == "open_interest"
    assert rec == {
        "exchange": "okx", "symbol": "BTC-USDT-SWAP", "base": "BTC", "quote": "USDT", "kind": "perpetual",
        "expiry": None, "event_time": 1743041250440000, "ingest_time": RECV,
        "open_interest": 22161.1301000000309, "open_interest_usd": 1939251795.54769270396321,
    }
    _encode([(et, rec)])


def test_open_interest_without_usd(norm: OkxNormalizer) -> None:
    inverse = {"arg": {"channel": "open-interest", "instId": "BTC-USD-SWAP"},
               "data": [{"instId": "BTC-USD-SWAP", "instType": "SWAP", "oi": "1000", "oiCcy": "3.3",
                         "ts": "1743041250440"}]}
    [(_, r)] = norm.normalize(inverse, RECV)
    assert (r["open_interest"], r["open_interest_usd"]) == (3.3, 100000.0)  # 1000 x 100 USD
    linear = {"arg": {"channel": "open-interest", "instId": "ETH-USDT-SWAP"},
              "data": [{"instId": "ETH-USDT-SWAP", "instType": "SWAP", "oi": "500", "oiCcy": "",
                        "ts": "1743041250440"}]}
    [(_, r)] = norm.normalize(linear, RECV)
    assert (r["open_interest"], r["open_interest_usd"]) == (pytest.approx(50.0), None)  # 500 x 0.1 ETH


FUNDING_DOC = {"arg": {"channel": "funding-rate", "instId": "BTC-USD-SWAP"},
               "data": [{"formulaType": "noRate", "fundingRate": "0.0001875391284828", "fundingTime": "1700726400000",
                         "impactValue": "", "instId": "BTC-USD-SWAP", "instType": "SWAP", "interestRate": "",
                         "method": "current_period", "maxFundingRate": "0.00375", "minFundingRate": "-0.00375",
                         "nextFundingRate": "", "nextFundingTime": "1700755200000",
                         "premium": "0.0001233824646391", "settFundingRate": "0.0001699799259033",
                         "settState": "settled", "ts": "1700724675402"}]}
MARK = {"arg": {"channel": "mark-price", "instId": "BTC-USD-SWAP"},
        "data": [{"instType": "SWAP", "instId": "BTC-USD-SWAP", "markPx": "37000.5", "ts": "1700724680000"}]}


def test_funding_rate_and_mark_price_are_joined(norm: OkxNormalizer) -> None:
    with pytest.raises(Ignored) as exc:
        norm.normalize(FUNDING_DOC, RECV)
    assert exc.value.reason == "funding_rate_buffered"
    [(et, f)] = norm.normalize(MARK, RECV)
    assert et == "funding"
    assert f == {
        "exchange": "okx", "symbol": "BTC-USD-SWAP", "base": "BTC", "quote": "USD", "kind": "perpetual",
        "expiry": None, "event_time": 1700724680000000, "ingest_time": RECV, "mark_price": 37000.5,
        "index_price": None, "funding_rate": 0.0001875391284828,
        "next_funding_time": 1700726400000,  # fundingTime: when the current rate settles
    }
    [(_, f2)] = norm.normalize(FUNDING_DOC, RECV)  # now a mark is known: emitted at the funding ts
    assert (f2["event_time"], f2["mark_price"], f2["funding_rate"]) == (1700724675402000, 37000.5, 0.0001875391284828)
    _encode([(et, f), ("funding", f2)])


def test_mark_price_doc_example_unknown_contract_is_dead_lettered(norm: OkxNormalizer) -> None:
    doc = {"arg": {"channel": "mark-price", "instId": "NOPE-USD-190628"},
           "data": [{"instType": "FUTURES", "instId": "NOPE-USD-190628", "markPx": "0.1", "ts": "1597026383085"}]}
    out = route(norm, json.dumps(doc), RECV)
    assert out.dead.reason == "unknown_symbol"  # ctVal cannot be guessed: never silently 1
    assert "liqstream instruments refresh okx" in out.dead.detail  # the command that fixes it


def test_rest_payloads(norm: OkxNormalizer) -> None:
    rest_oi = {"code": "0", "msg": "", "data": [{"instType": "SWAP", "instId": "BTC-USDT-SWAP", "oi": "5000",
                                                 "oiCcy": "50", "oiUsd": "1500000", "ts": "1597026383085"}]}
    [(et, r)] = norm.normalize(rest_oi, RECV)
    assert (et, r["open_interest"], r["open_interest_usd"], r["event_time"]) == (
        "open_interest", 50.0, 1500000.0, 1597026383085000)
    rest_mark = {"code": "0", "msg": "", "data": [{"instType": "SWAP", "instId": "BTC-USDT-SWAP", "markPx": "30000",
                                                   "ts": "1597026383085"}]}
    [(et, r)] = norm.normalize(rest_mark, RECV)
    assert (et, r["mark_price"], r["funding_rate"]) == ("funding", 30000.0, None)
    assert route(norm, json.dumps({"code": "51001", "msg": "Instrument ID does not exist", "data": []}),
                 RECV).dead.reason == "rest_error"


def test_control_frames(norm: OkxNormalizer) -> None:
    with pytest.raises(Ignored):
        norm.normalize("pong", RECV)  # OKX answers the text "ping" with the text "pong"
    with pytest.raises(Ignored):
        norm.normalize({"event": "channel-conn-count", "channel": "trades", "connCount": "2", "connId": "a"}, RECV)
    err = {"event": "error", "code": "60012", "msg": "Invalid request", "connId": "a4d3ae55"}
    assert route(norm, json.dumps(err), RECV).dead.reason == "subscription_failed"
    assert route(norm, json.dumps({"arg": {"channel": "what"}, "data": []}), RECV).dead.reason == "unknown_message"
    assert route(norm, json.dumps({"foo": 1}), RECV).dead.reason == "unknown_message"


# --- metadata ----------------------------------------------------------------------------------


def test_convert_instruments_capture() -> None:
    pages = [p["payload"] for p in json.loads((FIX / "instruments.json").read_text())]
    got = {i.symbol: i for i in convert_okx(pages)}
    assert "BTC-USD-220514-22000-C" not in got  # options skipped
    lin = got["BTC-USDT-SWAP"]
    assert (lin.base, lin.quote, lin.kind, lin.contract_value, lin.inverse) == ("BTC", "USDT", "perpetual", 0.01, False)
    inv = got["BTC-USD-SWAP"]
    assert (inv.quote, inv.contract_value, inv.inverse) == ("USD", 100.0, True)
    assert (got["UNI-USD-SWAP"].contract_value, got["UNI-USD-SWAP"].inverse) == (10.0, True)
    fut = got["BTC-USD-220527"]
    assert (fut.kind, fut.expiry_ms, fut.contract_value) == ("future", 1653638400000, 100.0)
    spot = got["BTC-USDT"]
    assert (spot.kind, spot.contract_value, spot.inverse) == ("spot", 1.0, False)
    with pytest.raises(ValueError):
        convert_okx({"code": "50011", "msg": "rate limited", "data": []})


def test_symbol_grammar_only_for_spot() -> None:
    assert parse_okx_symbol("ETH-USDC").quote == "USDC"
    assert parse_okx_symbol("BTC-USDT-SWAP") is None


def test_refresh_writes_a_loadable_file_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import connectors.instruments_refresh as ir
    from connectors.instruments import InstrumentBook

    pages = {p["url"]: p["payload"] for p in json.loads((FIX / "instruments.json").read_text())}
    monkeypatch.setattr(ir, "fetch_json", lambda url, timeout=ir.HTTP_TIMEOUT_S: pages[url])
    path = ir.refresh("okx", tmp_path / "okx.json")
    book = InstrumentBook.load("okx", path=path)
    assert book.get("BTC-USD-220527").contract_value == 100.0
    assert book.get("BTC-USDT-SWAP").contract_value == 0.01
    assert {"okx", "bybit", "binance-delivery"} <= set(ir.REFRESHERS)
    with pytest.raises(KeyError):
        ir.refresh("no-such-venue", tmp_path / "x.json")
