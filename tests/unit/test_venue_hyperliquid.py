"""Hyperliquid normalizer: the documented websocket shapes (no public capture holds Hyperliquid),
every normalized field asserted against values computed by hand from the raw fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.exchanges import NORMALIZERS
from connectors.exchanges.hyperliquid import (
    HyperliquidNormalizer,
    instruments_from_meta,
    next_funding_time_ms,
    parse_hyperliquid_coin,
)
from connectors.instruments_refresh import REFRESHERS, convert_hyperliquid
from connectors.normalize import route
from tests.venue_helpers import assert_encodes, doc_example

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "venues" / "hyperliquid"
RECV = 1_733_800_000_500_000  # 2024-12-10T03:06:40.5Z in epoch microseconds


def _doc(name: str) -> dict:
    return doc_example(FIX, name)


@pytest.fixture(scope="module")
def norm() -> HyperliquidNormalizer:
    return HyperliquidNormalizer()


_encodes = assert_encodes


def test_registered() -> None:
    assert isinstance(NORMALIZERS["hyperliquid"](), HyperliquidNormalizer)
    assert "hyperliquid" in REFRESHERS


def test_trades_side_b_is_taker_buy_a_is_taker_sell(norm: HyperliquidNormalizer) -> None:
    out = norm.normalize(_doc("trades"), RECV)
    assert [et for et, _ in out] == ["trade", "trade"]
    common = {"exchange": "hyperliquid", "symbol": "BTC", "base": "BTC", "quote": "USDC",
              "kind": "perpetual", "expiry": None, "ingest_time": RECV}
    assert out[0][1] == {**common, "event_time": 1733800000123000, "trade_id": "912345678901234",
                         "price": 97432.5, "size": 0.12, "notional_usd": pytest.approx(97432.5 * 0.12),
                         "taker_side": "buy"}
    assert out[1][1] == {**common, "event_time": 1733800000456000, "trade_id": "912345678901235",
                         "price": 97430.0, "size": 1.5, "notional_usd": pytest.approx(146145.0),
                         "taker_side": "sell"}
    for et, rec in out:
        _encodes(et, rec)


def test_spot_trade_by_index_name(norm: HyperliquidNormalizer) -> None:
    [(et, rec)] = norm.normalize(_doc("trades_spot"), RECV)
    assert (rec["symbol"], rec["base"], rec["quote"], rec["kind"]) == ("@107", "HYPE", "USDC", "spot")
    assert rec["notional_usd"] == pytest.approx(245.0) and rec["taker_side"] == "sell"
    _encodes(et, rec)


def test_k_prefixed_coin_is_thousand_units(norm: HyperliquidNormalizer) -> None:
    [(et, rec)] = norm.normalize(_doc("trades_kpepe"), RECV)
    assert (rec["base"], rec["price"], rec["size"]) == ("1000PEPE", 0.02, 1000.0)
    assert rec["notional_usd"] == pytest.approx(20.0)


def test_active_asset_ctx_open_interest_and_funding(norm: HyperliquidNormalizer) -> None:
    out = dict(norm.normalize(_doc("active_asset_ctx"), RECV))
    common = {"exchange": "hyperliquid", "symbol": "ETH", "base": "ETH", "quote": "USDC",
              "kind": "perpetual", "expiry": None,
              # no timestamp in activeAssetCtx: event time = receive time
              "event_time": RECV, "ingest_time": RECV}
    assert out["open_interest"] == {**common, "open_interest": 200000.5,
                                    "open_interest_usd": pytest.approx(200000.5 * 4000.0)}
    assert out["funding"] == {**common, "mark_price": 4000.0, "index_price": 3998.0,
                              "funding_rate": 0.0000125,
                              # next full hour after 03:06:40.5Z = 04:00:00Z
                              "next_funding_time": 1733803200000}
    _encodes("open_interest", out["open_interest"])
    _encodes("funding", out["funding"])


def test_next_funding_time_on_the_hour() -> None:
    assert next_funding_time_ms(1733803200000000) == 1733806800000  # exactly 04:00 -> 05:00
    assert next_funding_time_ms(1733803199999999) == 1733803200000


def test_market_liquidation_from_liquidated_users_own_fill(norm: HyperliquidNormalizer) -> None:
    # the user's own sell with liquidatedUser == user: a LONG was closed; the second fill
    # (no liquidation object) is an ordinary fill and gives nothing
    [(et, rec)] = norm.normalize(_doc("user_fills_market_liquidation"), RECV)
    assert et == "liquidation"
    assert rec == {"exchange": "hyperliquid", "symbol": "SOL", "base": "SOL", "quote": "USDC",
                   "kind": "perpetual", "expiry": None, "event_time": 1733800003000000,
                   "ingest_time": RECV, "side": "long", "price": 180.5, "size": 20.0,
                   "notional_usd": pytest.approx(3610.0), "order_id": "777"}
    _encodes(et, rec)


def test_backstop_liquidation_seen_from_the_liquidator_vault(norm: HyperliquidNormalizer) -> None:
    # the vault SOLD (took over a short position): the liquidated account bought, closing a SHORT
    [(et, rec)] = norm.normalize(_doc("user_fills_backstop"), RECV)
    assert (rec["side"], rec["price"], rec["size"], rec["order_id"]) == ("short", 3500.0, 2.5, "779")
    assert rec["notional_usd"] == pytest.approx(8750.0) and rec["event_time"] == 1733800004000000
    _encodes(et, rec)


@pytest.mark.parametrize(("fill_side", "own", "expected"), [
    ("A", True, "long"), ("B", True, "short"), ("A", False, "short"), ("B", False, "long"),
])
def test_liquidation_side_mapping(norm: HyperliquidNormalizer, fill_side: str, own: bool, expected: str) -> None:
    user = "0x" + "ab" * 20
    liquidated = user if own else "0x" + "cd" * 20
    msg = {"channel": "userFills", "data": {"user": user, "fills": [
        {"coin": "BTC", "px": "1", "sz": "1", "side": fill_side, "time": 1733800000000, "tid": 1,
         "liquidation": {"liquidatedUser": liquidated, "markPx": "1", "method": "market"}}]}}
    [(_, rec)] = norm.normalize(msg, RECV)
    assert rec["side"] == expected


def test_user_events_fills_channel_and_non_fill_events(norm: HyperliquidNormalizer) -> None:
    fills = _doc("user_fills_backstop")["data"]
    out = route(norm, {"channel": "user", "data": {"fills": fills["fills"]}}, RECV)
    # no "user" in userEvents: the fill is taken as the liquidated account's own (sell -> long)
    assert [rec["side"] for _, rec in out.records] == ["long"]
    liq_summary = {"channel": "user", "data": {"liquidation": {"lid": 1, "liquidator": "0x1", "liquidated_user": "0x2",
                                                               "liquidated_ntl_pos": "100", "liquidated_account_value": "5"}}}
    assert route(norm, liq_summary, RECV).ignored == "user_event_not_fills"


def test_fills_without_liquidation_ignored(norm: HyperliquidNormalizer) -> None:
    msg = _doc("user_fills_market_liquidation")
    msg["data"]["fills"] = msg["data"]["fills"][1:]
    assert route(norm, msg, RECV).ignored == "fills_without_liquidation"


@pytest.mark.parametrize("name", ["subscription_response", "pong"])
def test_control_messages_ignored(norm: HyperliquidNormalizer, name: str) -> None:
    out = route(norm, _doc(name), RECV)
    assert out.ignored is not None and not out.records and out.dead is None


def test_spot_asset_ctx_ignored_and_errors_dead_lettered(norm: HyperliquidNormalizer) -> None:
    spot = {"channel": "activeSpotAssetCtx", "data": {"coin": "@107", "ctx": {"markPx": "24", "circulatingSupply": "1"}}}
    assert route(norm, spot, RECV).ignored == "activeSpotAssetCtx"
    err = route(norm, {"channel": "error", "data": "Invalid subscription"}, RECV)
    assert err.dead is not None and err.dead.reason == "venue_error"


def test_bad_side_and_unknown_coin_dead_lettered(norm: HyperliquidNormalizer) -> None:
    msg = _doc("trades")
    msg["data"][0]["side"] = "S"
    assert route(norm, msg, RECV).dead.reason == "bad_value"
    msg = _doc("trades")
    msg["data"][0]["coin"] = "@99999"  # spot index not in the bundled spotMeta
    assert route(norm, msg, RECV).dead.reason == "unknown_symbol"


def test_coin_grammar() -> None:
    assert parse_hyperliquid_coin("WIF").base == "WIF"
    assert (parse_hyperliquid_coin("PURR/USDC").kind, parse_hyperliquid_coin("PURR/USDC").quote) == ("spot", "USDC")
    assert parse_hyperliquid_coin("xyz:TSLA").base == "TSLA"
    assert parse_hyperliquid_coin("@5") is None
    assert parse_hyperliquid_coin("bad coin!") is None


def test_convert_meta_and_spot_meta() -> None:
    meta = {"universe": [{"name": "BTC", "szDecimals": 5, "maxLeverage": 40}, {"name": "kPEPE", "szDecimals": 0}]}
    spot = {"tokens": [{"name": "USDC", "index": 0}, {"name": "HYPE", "index": 150}],
            "universe": [{"name": "@107", "tokens": [150, 0], "index": 107}]}
    got = {i.symbol: i for i in convert_hyperliquid({"meta": meta, "spotMeta": spot})}
    assert (got["BTC"].kind, got["BTC"].quote, got["BTC"].contract_value) == ("perpetual", "USDC", 1.0)
    assert got["kPEPE"].base == "1000PEPE"
    assert (got["@107"].base, got["@107"].quote, got["@107"].kind) == ("HYPE", "USDC", "spot")
    assert instruments_from_meta(None) == []
