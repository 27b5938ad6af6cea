"""Deribit normalizer: golden tests on real capture lines and on the documented message shapes.

Expected values are computed by hand here from the raw fields (see the comments),
never copied from the normalizer's output.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors.exchanges import NORMALIZERS
from connectors.exchanges.deribit import DeribitNormalizer, liquidated_sides, parse_deribit_symbol
from connectors.instruments_refresh import REFRESHERS, convert_deribit
from connectors.normalize import route
from tests.venue_helpers import assert_encodes, capture_raw_lines, doc_example

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "venues" / "deribit"
RECV = 1_700_000_000_000_000


def _capture_lines(name: str) -> list[tuple[int, str]]:
    return capture_raw_lines(FIX / name)


def _doc(name: str) -> dict:
    return doc_example(FIX, name)


@pytest.fixture(scope="module")
def norm() -> DeribitNormalizer:
    return DeribitNormalizer()


_encodes = assert_encodes


def test_registered() -> None:
    assert isinstance(NORMALIZERS["deribit"](), DeribitNormalizer)
    assert "deribit" in REFRESHERS


# --- golden: real capture lines -----------------------------------------------------------------


def test_golden_option_ticker_eth_call(norm: DeribitNormalizer) -> None:
    (recv, raw), = [x for x in _capture_lines("DERIBIT.ws.excerpt.txt") if "\"channel\":\"ticker.ETH-30JUL21-2800-C" in x[1]]
    out = route(norm, raw, recv)
    assert out.dead is None and out.ignored is None
    assert len(out.records) == 1  # options have no funding: OI only
    et, rec = out.records[0]
    assert et == "open_interest"
    assert rec == {
        "exchange": "deribit",
        "symbol": "ETH-30JUL21-2800-C",
        "base": "ETH",
        "quote": "ETH",  # coin-settled option, premium quoted in ETH
        "kind": "option",
        "expiry": 1627632000000,  # 2021-07-30 08:00 UTC
        "event_time": 1626993723632 * 1000,
        "ingest_time": 1626993723804855,
        "open_interest": 12685.0,  # ETH (options: base coins)
        "open_interest_usd": pytest.approx(12685.0 * 2006.72),  # x index_price
    }
    _encodes(et, rec)


def test_golden_option_ticker_btc_put(norm: DeribitNormalizer) -> None:
    (recv, raw), = [x for x in _capture_lines("DERIBIT.ws.excerpt.txt") if "\"channel\":\"ticker.BTC-31DEC21-34000-P" in x[1]]
    [(et, rec)] = norm.normalize(json.loads(raw), recv)
    assert rec == {
        "exchange": "deribit", "symbol": "BTC-31DEC21-34000-P", "base": "BTC", "quote": "BTC",
        "kind": "option", "expiry": 1640937600000,  # 2021-12-31 08:00 UTC
        "event_time": 1626993722933000, "ingest_time": 1626993723808149,
        "open_interest": 4.6, "open_interest_usd": pytest.approx(4.6 * 32201.67),
    }
    _encodes(et, rec)


def test_capture_subscribe_result_and_book_are_ignored(norm: DeribitNormalizer) -> None:
    lines = _capture_lines("DERIBIT.ws.excerpt.txt")
    sub = [raw for _, raw in lines if '"result"' in raw]
    book = [raw for _, raw in lines if '"channel":"book.' in raw]
    assert route(norm, sub[0], RECV).ignored == "rpc_result"
    assert route(norm, book[0], RECV).ignored == "book_option"  # the capture's books are options'


# --- documented shapes: trades, liquidations, tickers --------------------------------------------


def test_inverse_perpetual_trade_amount_is_usd(norm: DeribitNormalizer) -> None:
    [(et, rec)] = norm.normalize(_doc("trade_perpetual"), RECV)
    assert et == "trade"
    assert rec == {
        "exchange": "deribit", "symbol": "BTC-PERPETUAL", "base": "BTC", "quote": "USD",
        "kind": "perpetual", "expiry": None,
        "event_time": 1590484156350000, "ingest_time": RECV,
        "trade_id": "48079269", "price": 8950.0,
        "size": pytest.approx(10.0 / 8950.0),  # 10 USD of BTC at 8950
        "notional_usd": 10.0,
        "taker_side": "sell",
    }
    _encodes(et, rec)


def test_taker_liquidation_sell_closes_a_long(norm: DeribitNormalizer) -> None:
    out = norm.normalize(_doc("trade_liquidation_taker"), RECV)
    assert [et for et, _ in out] == ["trade", "liquidation"]
    trade, liq = out[0][1], out[1][1]
    assert trade["taker_side"] == "sell"
    assert liq == {
        "exchange": "deribit", "symbol": "BTC-PERPETUAL", "base": "BTC", "quote": "USD",
        "kind": "perpetual", "expiry": None,
        "event_time": 1590484156351000, "ingest_time": RECV,
        "side": "long", "price": 8940.0, "size": pytest.approx(1.0),  # 8940 USD / 8940
        "notional_usd": 8940.0, "order_id": "48079270",
    }
    _encodes("liquidation", liq)
    _encodes("trade", trade)


def test_maker_liquidation_on_linear_perp(norm: DeribitNormalizer) -> None:
    out = norm.normalize(_doc("trade_liquidation_maker_linear"), RECV)
    assert [et for et, _ in out] == ["trade", "liquidation"]
    trade, liq = out[0][1], out[1][1]
    # linear USDC: amount 0.25 BTC, notional 0.25 * 30000 = 7500 USDC
    assert trade["size"] == 0.25 and trade["notional_usd"] == pytest.approx(7500.0)
    assert trade["quote"] == "USDC" and trade["kind"] == "perpetual"
    # taker sold into a resting liquidation order: the maker bought, closing a SHORT
    assert liq["side"] == "short"
    assert (liq["price"], liq["size"], liq["notional_usd"], liq["order_id"]) == (30000.0, 0.25, pytest.approx(7500.0), "USDC-1234")
    _encodes("liquidation", liq)


def test_both_sides_liquidated_option(norm: DeribitNormalizer) -> None:
    out = norm.normalize(_doc("trade_liquidation_both_option"), RECV)
    assert [et for et, _ in out] == ["trade", "liquidation", "liquidation"]
    trade = out[0][1]
    assert trade["kind"] == "option" and trade["expiry"] == 1695974400000  # 2023-09-29 08:00 UTC
    assert trade["price"] == 0.05 and trade["quote"] == "BTC"
    assert trade["size"] == 2.0 and trade["notional_usd"] == pytest.approx(2.0 * 26000.0)  # underlying notional
    # taker bought (closing a short), maker sold (closing a long)
    assert sorted(rec["side"] for _, rec in out[1:]) == ["long", "short"]
    for et, rec in out:
        _encodes(et, rec)


@pytest.mark.parametrize(("flag", "direction", "sides"), [
    ("T", "sell", ["long"]), ("T", "buy", ["short"]),
    ("M", "buy", ["long"]), ("M", "sell", ["short"]),
    ("MT", "buy", ["long", "short"]), ("MT", "sell", ["short", "long"]),
])
def test_liquidation_side_mapping(flag: str, direction: str, sides: list[str]) -> None:
    assert liquidated_sides(flag, direction) == sides


def test_bad_liquidation_flag_is_dead_lettered(norm: DeribitNormalizer) -> None:
    raw = _doc("trade_perpetual")
    raw["params"]["data"][0]["liquidation"] = "X"
    out = route(norm, raw, RECV)
    assert out.dead is not None and out.dead.reason == "bad_value"


def test_inverse_perpetual_ticker_oi_usd_and_funding(norm: DeribitNormalizer) -> None:
    out = dict(norm.normalize(_doc("ticker_perpetual"), RECV))
    oi, fund = out["open_interest"], out["funding"]
    assert oi == {
        "exchange": "deribit", "symbol": "BTC-PERPETUAL", "base": "BTC", "quote": "USD",
        "kind": "perpetual", "expiry": None,
        "event_time": 1623060194301000, "ingest_time": RECV,
        "open_interest": pytest.approx(502097590 / 36446.51),  # USD OI / mark -> BTC
        "open_interest_usd": 502097590.0,
    }
    assert fund == {
        "exchange": "deribit", "symbol": "BTC-PERPETUAL", "base": "BTC", "quote": "USD",
        "kind": "perpetual", "expiry": None,
        "event_time": 1623060194301000, "ingest_time": RECV,
        "mark_price": 36446.51, "index_price": 36441.64,
        "funding_rate": 0.0001, "next_funding_time": None,
    }
    _encodes("open_interest", oi)
    _encodes("funding", fund)


def test_linear_perpetual_ticker_oi_in_base(norm: DeribitNormalizer) -> None:
    out = dict(norm.normalize(_doc("ticker_linear"), RECV))
    assert out["open_interest"]["open_interest"] == 1500.5
    assert out["open_interest"]["open_interest_usd"] == pytest.approx(1500.5 * 2000.0)
    assert out["funding"]["funding_rate"] == -0.00005
    assert out["funding"]["quote"] == "USDC"


def test_dated_future_ticker_has_mark_but_no_funding_rate(norm: DeribitNormalizer) -> None:
    out = dict(norm.normalize(_doc("ticker_future"), RECV))
    assert out["open_interest"]["kind"] == "future"
    assert out["open_interest"]["expiry"] == 1648195200000  # from the bundled get_instruments
    assert out["open_interest"]["open_interest"] == pytest.approx(40000000 / 50000.0)
    assert out["funding"]["funding_rate"] is None and out["funding"]["mark_price"] == 50000.0


@pytest.mark.parametrize(("name", "reason"), [("heartbeat", "heartbeat"), ("test_request", "test_request")])
def test_heartbeats_ignored(norm: DeribitNormalizer, name: str, reason: str) -> None:
    assert route(norm, _doc(name), RECV).ignored == reason


def test_rpc_error_dead_lettered(norm: DeribitNormalizer) -> None:
    out = route(norm, _doc("error_reply"), RECV)
    assert out.dead is not None and out.dead.reason == "rpc_error"


def test_unknown_instrument_dead_lettered(norm: DeribitNormalizer) -> None:
    raw = _doc("trade_perpetual")
    raw["params"]["data"][0]["instrument_name"] = "NOT AN INSTRUMENT"
    out = route(norm, raw, RECV)
    assert out.dead is not None and out.dead.reason == "unknown_symbol"


# --- symbols and metadata ---------------------------------------------------------------------


def test_symbol_grammar() -> None:
    p = parse_deribit_symbol("ETH-PERPETUAL")
    assert (p.base, p.quote, p.kind, p.inverse, p.expiry_ms) == ("ETH", "USD", "perpetual", True, None)
    p = parse_deribit_symbol("SOL_USDC-PERPETUAL")
    assert (p.base, p.quote, p.kind, p.inverse) == ("SOL", "USDC", "perpetual", False)
    p = parse_deribit_symbol("BTC-27DEC24")
    assert (p.kind, p.inverse, p.expiry_ms) == ("future", True, 1735286400000)  # 2024-12-27 08:00 UTC
    p = parse_deribit_symbol("BTC_USDC-27DEC24-100000-P")
    assert (p.kind, p.quote, p.expiry_ms) == ("option", "USDC", 1735286400000)
    p = parse_deribit_symbol("ETH_USDC")
    assert (p.kind, p.base, p.quote) == ("spot", "ETH", "USDC")
    assert parse_deribit_symbol("BTC-31FOO24") is None
    assert parse_deribit_symbol("BTC-31FEB24") is None  # no such day
    assert parse_deribit_symbol("") is None


def test_convert_get_instruments_capture() -> None:
    pages = []
    for line in (FIX / "DERIBIT.instruments.excerpt.txt").read_text().splitlines():
        pages.append(json.loads(line.split(": ", 1)[1]))
    got = {i.symbol: i for i in convert_deribit(pages)}
    btc = got["BTC-PERPETUAL"]
    assert (btc.base, btc.quote, btc.kind, btc.expiry_ms, btc.contract_value, btc.inverse) == (
        "BTC", "USD", "perpetual", None, 1.0, True)
    fut = got["BTC-25MAR22"]
    assert (fut.kind, fut.expiry_ms, fut.inverse) == ("future", 1648195200000, True)
    lin = got["BTC_USDC-PERPETUAL"]
    assert (lin.quote, lin.inverse, lin.contract_value) == ("USDC", False, 1.0)
    sol = got["SOL-PERPETUAL"]  # future_type "reversed"
    assert (sol.quote, sol.inverse) == ("USD", True)
    opt = got["ETH-30JUL21-2800-C"]
    assert (opt.kind, opt.quote, opt.expiry_ms) == ("option", "ETH", 1627632000000)
    # the bundled metadata agrees with the grammar for every instrument in the excerpt
    for sym, inst in got.items():
        parsed = parse_deribit_symbol(sym)
        assert (parsed.base, parsed.quote, parsed.kind, parsed.expiry_ms, parsed.inverse) == (
            inst.base, inst.quote, inst.kind, inst.expiry_ms, inst.inverse), sym


def test_option_marked_at_zero_still_gives_open_interest(norm: DeribitNormalizer) -> None:
    (recv, raw), = [x for x in _capture_lines("DERIBIT.ws.excerpt.txt") if "\"channel\":\"ticker.BTC-31DEC21-34000-P" in x[1]]
    msg = json.loads(raw)
    msg["params"]["data"]["mark_price"] = 0.0
    [(et, rec)] = norm.normalize(msg, recv)
    assert et == "open_interest" and rec["open_interest"] == 4.6
    msg["params"]["data"]["mark_price"] = -0.1
    assert route(norm, msg, recv).dead.reason == "bad_value"
