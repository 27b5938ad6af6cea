"""Instrument history (issue 19, fix 7): the terms of expired instruments stay resolvable.

A refresh never forgets an instrument: the ones the new listing lacks or lists with other terms move to
the file's history with the refresh that stopped seeing them. An OKX dated future missing from the book
takes the terms its series' futures agree on; anything else unknown is a dead letter whose detail names
the command that fixes it. Expected terms come from OKX's instrument payloads (BTC-USD-* inverse 100 USD
per contract, BTC-USDT-* linear 0.01 BTC) and are worked out by hand.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

import connectors.instruments_refresh as ir
from connectors.exchanges.binance import BinanceFuturesNormalizer
from connectors.exchanges.bybit import BybitNormalizer
from connectors.exchanges.okx import OkxNormalizer
from connectors.instruments import InstrumentBook
from connectors.normalize import route

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "venues" / "okx"
RECV = 1_700_000_000_000_000


def _ms(y: int, m: int, d: int, h: int = 8) -> int:
    return int(datetime(y, m, d, h, tzinfo=UTC).timestamp() * 1000)


def _pages() -> dict:
    return {p["url"]: p["payload"] for p in json.loads((FIX / "instruments.json").read_text())}


def _refresh(monkeypatch: pytest.MonkeyPatch, pages: dict, path: Path, at: str) -> InstrumentBook:
    monkeypatch.setattr(ir, "fetch_json", lambda url, timeout=ir.HTTP_TIMEOUT_S: pages[url])
    monkeypatch.setattr(ir, "_now_iso", lambda: at)
    ir.refresh("okx", path)
    return InstrumentBook.load("okx", path=path)


def test_refresh_keeps_expired_and_changed_instruments_in_history(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "okx.json"
    first = _pages()
    book = _refresh(monkeypatch, first, path, "2022-05-13T00:00:00Z")
    assert book.history == {}  # nothing forgotten yet
    futures_url = next(u for u in first if u.endswith("FUTURES"))
    swap_url = next(u for u in first if u.endswith("SWAP"))
    gone = first[futures_url]["data"][0]["instId"]
    second = copy.deepcopy(first)
    second[futures_url]["data"] = second[futures_url]["data"][1:]  # the first future expired and left the list
    for row in second[swap_url]["data"]:
        if row["instId"] == "BTC-USD-SWAP":
            row["ctVal"] = "200"  # the venue changed the contract's terms
    book = _refresh(monkeypatch, second, path, "2022-06-01T00:00:00Z")
    assert gone not in {i.symbol for i in book}
    assert book.get(gone).contract_value == 100.0 and book.get(gone).kind == "future"  # from the history
    assert book.get("BTC-USD-SWAP").contract_value == 200.0  # the current listing wins
    assert book.history["BTC-USD-SWAP"].contract_value == 100.0  # the earlier period is kept
    doc = json.loads(path.read_text())
    assert sorted((r["symbol"], r["listed_until"]) for r in doc["history"]) == \
        sorted([(gone, "2022-06-01T00:00:00Z"), ("BTC-USD-SWAP", "2022-06-01T00:00:00Z")])
    # refreshing again with the same listing adds nothing; the history never shrinks
    _refresh(monkeypatch, second, path, "2022-07-01T00:00:00Z")
    assert json.loads(path.read_text())["history"] == doc["history"]


@pytest.mark.parametrize(("inst_id", "quote", "contract_value", "inverse", "expiry"), [
    ("BTC-USD-230630", "USD", 100.0, True, _ms(2023, 6, 30)),  # listed after the bundled file (2022)
    ("BTC-USD-201225", "USD", 100.0, True, _ms(2020, 12, 25)),  # expired before it
    ("BTC-USDT-210326", "USDT", 0.01, False, _ms(2021, 3, 26)),
])
def test_okx_dated_future_takes_its_series_terms(inst_id: str, quote: str, contract_value: float, inverse: bool,
                                                 expiry: int) -> None:
    # v5 liquidation-orders (docs' shape): 10 contracts at the bankruptcy price 30000, net mode sell = a long
    msg = {"arg": {"channel": "liquidation-orders", "instType": "FUTURES"},
           "data": [{"instId": inst_id, "instType": "FUTURES", "uly": "BTC-USD",
                     "details": [{"bkLoss": "0", "bkPx": "30000", "ccy": "", "posSide": "", "side": "sell",
                                  "sz": "10", "ts": "1608280339753"}]}]}
    [(et, rec)] = route(OkxNormalizer(), json.dumps(msg), RECV).records
    assert (et, rec["symbol"], rec["base"], rec["quote"], rec["kind"], rec["expiry"], rec["side"]) == \
        ("liquidation", inst_id, "BTC", quote, "future", expiry, "long")
    if inverse:  # 10 x 100 USD = 1000 USD; 1000 / 30000 BTC
        assert rec["notional_usd"] == 1000.0 and rec["size"] == pytest.approx(1000 / 30000, rel=1e-12)
    else:  # 10 x 0.01 BTC = 0.1 BTC; x 30000 = 3000 USDT
        assert rec["size"] == pytest.approx(0.1, rel=1e-12) and rec["notional_usd"] == pytest.approx(3000, rel=1e-12)
    assert contract_value == OkxNormalizer().instruments.get(inst_id).contract_value


@pytest.mark.parametrize(("norm", "msg"), [
    (OkxNormalizer, {"arg": {"channel": "trades", "instId": "NOPE-USD-230630"},
                     "data": [{"instId": "NOPE-USD-230630", "px": "1", "sz": "1", "side": "buy", "ts": "1608280339753"}]}),
    (OkxNormalizer, {"arg": {"channel": "trades", "instId": "BTC-USD-231399"},  # not a date
                     "data": [{"instId": "BTC-USD-231399", "px": "1", "sz": "1", "side": "buy", "ts": "1608280339753"}]}),
    (BinanceFuturesNormalizer, {"e": "aggTrade", "s": "NOPE", "p": "1", "q": "1", "m": True, "T": 1608280339753}),
    (BybitNormalizer, {"topic": "publicTrade.NOPE", "data": [{"s": "NOPE", "p": "1", "v": "1", "S": "Buy",
                                                             "T": 1608280339753}]}),
])
def test_unknown_instrument_dead_letter_names_the_fix(norm, msg: dict) -> None:
    n = norm()
    out = route(n, json.dumps(msg).encode(), RECV)
    assert out.dead is not None and out.dead.reason == "unknown_symbol"
    assert f"liqstream instruments refresh {n.venue}" in out.dead.detail
