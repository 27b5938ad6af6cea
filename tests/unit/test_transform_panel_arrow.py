"""panel_from_arrow (vectorized, the jobs' path) against the row path and the previous per-row
implementation, with hand-computed panels: gaps, several venues, a venue without trades (mark
price stands in), OI carried at most ffill_max_minutes, a linear and an inverse contract of one
base on one venue, a dated future and a spot market (left out of the panel)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

import apache_beam as beam
import duckdb
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from pipelines.transforms.bars import ts_to_micros
from pipelines.transforms.config import USD_MICROS, AnalyticsConfig
from pipelines.transforms.panel import (
    ReadBasePanels,
    SymbolPanel,
    base_bars_from_arrow,
    build_symbol_panel,
    columns_from_rows,
    ffill_limited,
    panel_from_arrow,
    read_bar_files,
    venue_series_from_columns,
)
from tests.unit.test_transform_bars import Collect

M0 = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
CFG = AnalyticsConfig(ffill_max_minutes=2)
NAN = np.nan


def bar(m: int, exchange: str, symbol: str, base: str = "BTC", kind: str = "perpetual", close: float | None = None,
        high: float | None = None, low: float | None = None, mark: float | None = None, vb: float = 0.0,
        vusd: float = 0.0, tc: int = 0, long_usd: float = 0.0, long_n: int = 0, short_usd: float = 0.0,
        short_n: int = 0, max_liq: float | None = None, oi_usd: float | None = None, oi: float | None = None,
        funding: float | None = None, depth_bid: float | None = None, depth_ask: float | None = None) -> dict:
    """A complete bars_1m row (every NOT NULL column of the mart filled)."""
    return {
        "minute_ts": M0 + dt.timedelta(minutes=m), "exchange": exchange, "symbol": symbol, "base": base,
        "quote": "USD", "kind": kind, "open": close, "high": high if high is not None else close,
        "low": low if low is not None else close, "close": close, "first_trade_ts": None, "last_trade_ts": None,
        "volume_base": vb, "volume_usd": vusd, "trade_count": tc, "taker_buy_usd": vusd / 2,
        "taker_sell_usd": vusd / 2, "long_liq_count": long_n, "long_liq_usd": long_usd, "short_liq_count": short_n,
        "short_liq_usd": short_usd, "max_liq_usd": max_liq, "oi_first": oi, "oi_last": oi, "oi_first_usd": oi_usd,
        "oi_last_usd": oi_usd, "oi_first_ts": None, "oi_last_ts": None, "funding_rate_last": funding,
        "mark_price_last": mark, "index_price_last": None, "funding_ts": None, "liquidation_events": long_n + short_n,
        "oi_events": 0 if oi_usd is None else 1, "funding_events": 0 if funding is None else 1,
        "depth_bid_usd_100bp": depth_bid, "depth_ask_usd_100bp": depth_ask, "depth_ts": None,
        "depth_events": int(depth_bid is not None or depth_ask is not None),
    }


def hand_bars() -> list[dict]:
    return [
        # bybit linear contract
        bar(0, "bybit", "BTCUSDT", close=100, high=101, low=99, vb=10, vusd=1000.5, tc=3, long_usd=250.25, long_n=1,
            max_liq=250.25, oi_usd=1_000_000, oi=10_000, funding=0.0001),
        bar(1, "bybit", "BTCUSDT", close=101, high=101, low=100, vb=20, vusd=2000.0, tc=2),
        bar(2, "bybit", "BTCUSDT", close=102, high=102, low=101, vb=5, vusd=510.0, tc=1),
        bar(6, "bybit", "BTCUSDT", close=106, high=107, low=105, vb=4, vusd=424.0, tc=1, short_usd=1000.0, short_n=2,
            max_liq=600.0),
        # bybit inverse contract of the same base: more USD traded (5930 vs 3934.5) -> the reference
        bar(0, "bybit", "BTCUSD", close=99, high=100, low=98, vb=50, vusd=4950.0, tc=5, long_usd=100.0, long_n=1,
            max_liq=100.0),
        bar(1, "bybit", "BTCUSD", close=98, high=99, low=97, vb=10, vusd=980.0, tc=1, oi_usd=2_000_000, oi=20_000,
            funding=0.0003),
        # a venue without trades: mark price only
        bar(0, "hyperliquid", "BTC", mark=97.5, oi_usd=500_000, oi=5_000),
        bar(5, "hyperliquid", "BTC", mark=104.0),
        # a dated future (OI venue series only) and a spot market (neither)
        bar(0, "binance-delivery", "BTCUSD_260327", kind="future", close=110, vb=1, vusd=110.0, tc=1,
            oi_usd=300_000, oi=2_727),
        bar(2, "binance-delivery", "BTCUSD_260327", kind="future", close=112, vb=1, vusd=112.0, tc=1),
        bar(0, "binance", "BTCUSDT", kind="spot", close=100, vb=999, vusd=99_900.0, tc=9),
        # ETH: its only venue has no trade in its first minute
        bar(0, "hyperliquid", "ETH", base="ETH", mark=2000.0, oi_usd=100_000, oi=50),
        bar(1, "hyperliquid", "ETH", base="ETH", close=2001, high=2002, low=2000, mark=2000.5, vb=1, vusd=2001.0,
            tc=1),
    ]


def of(base: str, rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["base"] == base]


def assert_array(actual: np.ndarray, expected: list) -> None:
    np.testing.assert_allclose(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float), rtol=1e-12,
                               equal_nan=True)


def test_btc_panel_computed_by_hand() -> None:
    p = panel_from_arrow("BTC", pa.Table.from_pylist(of("BTC", hand_bars())), CFG)
    assert p is not None
    assert (p.minutes - ts_to_micros(M0)).tolist() == [i * 60_000_000 for i in range(7)]  # gap minutes 3-4 kept
    # the future and the spot market are not part of the panel
    assert p.venues == [("bybit", "BTCUSD"), ("bybit", "BTCUSDT"), ("hyperliquid", "BTC")]
    assert p.has_bar.tolist() == [True, True, True, False, False, True, True]
    assert p.venues_with_bar.tolist() == [3, 2, 1, 0, 0, 1, 1]
    assert p.reference_venue == "bybit:BTCUSD"
    # reference close 99, 98, carried to minutes 2-3 (limit 2); minute 6 has no reference close
    # within 2 minutes -> VWAP 424/4; minutes 4-5 carry the price of minute 3 (second carry)
    assert_array(p.price, [99, 98, 98, 98, 98, 98, 106])
    assert_array(p.price_vwap, [5950.5 / 60, 2980 / 30, 102, NAN, NAN, NAN, 106])
    assert_array(p.high, [100, 99, 98, 98, 98, 98, 106])
    assert_array(p.low, [98, 97, 98, 98, 98, 98, 106])
    assert p.volume_usd_micros.tolist() == [5_950_500_000, 2_980_000_000, 510_000_000, 0, 0, 0, 424_000_000]
    assert_array(p.volume_base, [60, 30, 5, 0, 0, 0, 4])
    assert p.trade_count.tolist() == [8, 3, 1, 0, 0, 0, 1]
    assert p.long_liq_usd_micros.tolist() == [350_250_000, 0, 0, 0, 0, 0, 0]
    assert p.long_liq_count.tolist() == [2, 0, 0, 0, 0, 0, 0]
    assert p.short_liq_usd_micros.tolist() == [0, 0, 0, 0, 0, 0, 1_000_000_000]
    assert p.max_liq_usd_micros.tolist() == [250_250_000, 0, 0, 0, 0, 0, 600_000_000]
    assert p.venue_long_liq_micros[:, 0].tolist() == [100_000_000, 250_250_000, 0]
    # OI: linear 1M (minute 0, carried to 2), inverse 2M (minute 1, carried to 3), hyperliquid 0.5M (0 -> 2)
    assert_array(p.oi_usd, [1.5e6, 3.5e6, 3.5e6, 2e6, NAN, NAN, NAN])
    assert_array(p.oi_base, [15_000, 35_000, 35_000, 20_000, NAN, NAN, NAN])
    assert p.oi_venues.tolist() == [2, 3, 3, 1, 0, 0, 0]
    # funding weighted by the venues' OI: (0.0001 x 1M + 0.0003 x 2M) / 3M
    mixed = (0.0001 * 1e6 + 0.0003 * 2e6) / 3e6
    assert_array(p.funding_rate, [0.0001, mixed, mixed, 0.0003, NAN, NAN, NAN])


def test_mark_price_stands_in_for_a_venue_without_trades() -> None:
    p = panel_from_arrow("ETH", pa.Table.from_pylist(of("ETH", hand_bars())), CFG)
    assert p is not None and p.reference_venue == "hyperliquid:ETH"
    assert_array(p.price, [2000.0, 2001.0])
    assert_array(p.price_vwap, [NAN, 2001.0])
    assert_array(p.high, [2000.0, 2002.0])
    assert_array(p.oi_usd, [100_000, 100_000])


def test_panel_is_none_without_a_bar_of_the_symbol_kinds() -> None:
    rows = [r for r in hand_bars() if r["kind"] != "perpetual"]
    assert panel_from_arrow("BTC", pa.Table.from_pylist(rows), CFG) is None
    assert build_symbol_panel("BTC", rows, CFG) is None


def test_venue_series_include_futures_with_mark_fallback_and_carry_limit() -> None:
    series = venue_series_from_columns("BTC", columns_from_rows(of("BTC", hand_bars())), CFG)
    by = {(s.exchange, s.symbol): s for s in series}
    assert sorted(by) == [("binance-delivery", "BTCUSD_260327"), ("bybit", "BTCUSD"), ("bybit", "BTCUSDT"),
                          ("hyperliquid", "BTC")]
    fut = by[("binance-delivery", "BTCUSD_260327")]
    assert len(fut.minutes) == 3
    assert_array(fut.oi_usd, [300_000, 300_000, 300_000])
    assert_array(fut.price, [110, 110, 112])
    hl = by[("hyperliquid", "BTC")]
    assert_array(hl.oi_usd, [500_000, 500_000, 500_000, NAN, NAN, NAN])
    assert_array(hl.price, [97.5, 97.5, 97.5, NAN, NAN, 104.0])


# ---- the previous per-row implementation (kept here as the reference of the vectorized one) ----
def _f(v):
    return np.nan if v is None else float(v)


def _micros(v):
    return 0 if v is None else int(round(float(v) * USD_MICROS))


def reference_panel(base: str, rows: list[dict], config: AnalyticsConfig) -> SymbolPanel | None:
    rows = [r for r in rows if r["kind"] in config.symbol_kinds]
    if not rows:
        return None
    bar_us = config.bar_us
    mins = [ts_to_micros(r["minute_ts"]) for r in rows]
    m0, m1 = min(mins), max(mins)
    n = (m1 - m0) // bar_us + 1
    minutes = m0 + np.arange(n, dtype=np.int64) * bar_us
    venues = sorted({(r["exchange"], r["symbol"]) for r in rows})
    vidx = {v: i for i, v in enumerate(venues)}
    nv = len(venues)

    def mat():
        return np.full((nv, n), np.nan)

    close, high, low, oi_usd, oi_base, funding = mat(), mat(), mat(), mat(), mat(), mat()
    has = np.zeros((nv, n), dtype=bool)
    keys = ("volume_usd", "taker_buy_usd", "taker_sell_usd", "long_liq_usd", "short_liq_usd", "max_liq_usd")
    ints = {k: np.zeros((nv, n), dtype=np.int64) for k in (*keys, "trade_count", "long_liq_count", "short_liq_count")}
    vol_base = np.zeros((nv, n))
    for r, m in zip(rows, mins, strict=True):
        i, j = vidx[(r["exchange"], r["symbol"])], (m - m0) // bar_us
        has[i, j] = True
        close[i, j], high[i, j], low[i, j] = _f(r.get("close")), _f(r.get("high")), _f(r.get("low"))
        if r.get("close") is None and r.get("mark_price_last") is not None:
            close[i, j] = float(r["mark_price_last"])
        oi_usd[i, j], oi_base[i, j] = _f(r.get("oi_last_usd")), _f(r.get("oi_last"))
        funding[i, j] = _f(r.get("funding_rate_last"))
        for k in keys:
            ints[k][i, j] = _micros(r.get(k))
        for k in ("trade_count", "long_liq_count", "short_liq_count"):
            ints[k][i, j] = int(r.get(k) or 0)
        vol_base[i, j] = float(r.get("volume_base") or 0.0)
    lim = config.ffill_max_minutes
    # depth: each venue's last known value, at most depth_max_stale_minutes old, summed over the
    # venues that have one (a plain loop, not ffill_limited)
    depth = {}
    for side in ("bid", "ask"):
        tot = np.full(n, np.nan)
        for v in venues:
            last, age = np.nan, 10**9
            for j in range(n):
                r = next((r for r, m in zip(rows, mins, strict=True) if (r["exchange"], r["symbol"]) == v
                          and (m - m0) // bar_us == j), None)
                if r is not None and r.get(f"depth_{side}_usd_100bp") is not None:
                    last, age = float(r[f"depth_{side}_usd_100bp"]), 0
                elif j > 0:
                    age += 1
                if age <= config.depth_max_stale_minutes and not np.isnan(last):
                    tot[j] = last if np.isnan(tot[j]) else tot[j] + last
        depth[side] = tot
    close_ff, oi_ff, oib_ff, fund_ff = (ffill_limited(a, lim) for a in (close, oi_usd, oi_base, funding))
    present = {v[0] for v in venues}
    ref_ex = next((e for e in config.price_reference_venues if e in present), None)
    vol_usd, vbase = ints["volume_usd"].sum(axis=0), vol_base.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = np.where(vbase > 0, (vol_usd / USD_MICROS) / vbase, np.nan)
    if ref_ex is not None:
        cands = [i for i, v in enumerate(venues) if v[0] == ref_ex]
        ri = max(cands, key=lambda i: (ints["volume_usd"][i].sum(), venues[i][1]))
        price, hi, lo = close_ff[ri].copy(), high[ri].copy(), low[ri].copy()
    else:
        ri, price, hi, lo = None, np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    price = ffill_limited(np.where(np.isnan(price), vwap, price), lim)
    hi, lo = np.where(np.isnan(hi), price, hi), np.where(np.isnan(lo), price, lo)
    oi_any = ~np.isnan(oi_ff)
    w = np.where(~np.isnan(fund_ff) & oi_any, oi_ff, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        fmean = np.where(w.sum(axis=0) > 0, np.nansum(np.nan_to_num(fund_ff) * w, axis=0) / w.sum(axis=0), np.nan)
    cnt = (~np.isnan(fund_ff)).sum(axis=0)
    fmean = np.where(np.isnan(fmean), np.where(cnt > 0, np.nansum(fund_ff, axis=0) / np.maximum(cnt, 1), np.nan),
                     fmean)
    return SymbolPanel(
        base=base, minutes=minutes, venues=venues, has_bar=has.any(axis=0), price=price, price_vwap=vwap, high=hi,
        low=lo, reference_venue=None if ri is None else f"{venues[ri][0]}:{venues[ri][1]}",
        volume_usd_micros=vol_usd, volume_base=vbase, trade_count=ints["trade_count"].sum(axis=0),
        taker_buy_usd_micros=ints["taker_buy_usd"].sum(axis=0), taker_sell_usd_micros=ints["taker_sell_usd"].sum(axis=0),
        long_liq_usd_micros=ints["long_liq_usd"].sum(axis=0), short_liq_usd_micros=ints["short_liq_usd"].sum(axis=0),
        long_liq_count=ints["long_liq_count"].sum(axis=0), short_liq_count=ints["short_liq_count"].sum(axis=0),
        max_liq_usd_micros=ints["max_liq_usd"].max(axis=0),
        oi_usd=np.where(oi_any.any(axis=0), np.nansum(oi_ff, axis=0), np.nan),
        oi_base=np.where((~np.isnan(oib_ff)).any(axis=0), np.nansum(oib_ff, axis=0), np.nan),
        bid_depth_usd=depth["bid"], ask_depth_usd=depth["ask"],
        oi_venues=oi_any.sum(axis=0), funding_rate=fmean, venue_long_liq_micros=ints["long_liq_usd"],
        venue_short_liq_micros=ints["short_liq_usd"], venues_with_bar=has.sum(axis=0),
    )


def assert_same_panel(a: SymbolPanel | None, b: SymbolPanel | None) -> None:
    assert (a is None) == (b is None)
    if a is None:
        return
    for f in dataclasses.fields(SymbolPanel):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype.kind == np.asarray(y).dtype.kind, f.name
            np.testing.assert_array_equal(x, y, err_msg=f.name)  # bit-equal (NaN == NaN here)
        else:
            assert x == y, f.name


def random_bars(seed: int, minutes: int = 90) -> list[dict]:
    """Bars of 2 bases over 5 venue symbols with gaps, missing closes/OI/funding, odd USD cents."""
    rnd = random.Random(seed)
    venues = [("binance-futures", "BTCUSDT", "BTC", "perpetual"), ("okx", "BTC-USD-SWAP", "BTC", "perpetual"),
              ("okx", "BTC-USDT-SWAP", "BTC", "perpetual"), ("deribit", "BTC-27MAR26", "BTC", "future"),
              ("bybit", "ETHUSDT", "ETH", "perpetual"), ("hyperliquid", "ETH", "ETH", "perpetual")]
    rows = []
    for ex, sym, base, kind in venues:
        for m in range(minutes):
            if rnd.random() < 0.25:
                continue  # gap
            traded = rnd.random() < 0.8
            px = 100 + rnd.random()
            rows.append(bar(m, ex, sym, base=base, kind=kind, close=px if traded else None,
                            high=px + 0.5 if traded else None, low=px - 0.5 if traded else None,
                            mark=px if rnd.random() < 0.7 else None, vb=rnd.random() * 3 if traded else 0.0,
                            vusd=round(rnd.random() * 1e4, 6) if traded else 0.0, tc=rnd.randint(0, 9),
                            long_usd=round(rnd.random() * 500, 6), long_n=rnd.randint(0, 3),
                            short_usd=round(rnd.random() * 500, 6), short_n=rnd.randint(0, 3),
                            max_liq=round(rnd.random() * 300, 6) if rnd.random() < 0.9 else None,
                            oi_usd=rnd.random() * 1e7 if rnd.random() < 0.3 else None,
                            oi=rnd.random() * 1e5 if rnd.random() < 0.3 else None,
                            funding=rnd.random() * 1e-4 if rnd.random() < 0.1 else None,
                            depth_bid=rnd.random() * 1e8 if rnd.random() < 0.3 else None,
                            depth_ask=rnd.random() * 1e8 if rnd.random() < 0.3 else None))
    return rows


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_arrow_and_row_paths_equal_the_per_row_reference(seed: int) -> None:
    rows = random_bars(seed)
    rnd = random.Random(seed)
    rnd.shuffle(rows)  # the order of rows must not matter
    cfg = AnalyticsConfig(ffill_max_minutes=5)
    for base in ("BTC", "ETH"):
        mine = of(base, rows)
        ref = reference_panel(base, mine, cfg)
        assert_same_panel(panel_from_arrow(base, pa.Table.from_pylist(mine), cfg), ref)
        assert_same_panel(build_symbol_panel(base, mine, cfg), ref)


def test_job_export_per_base_reads_back_the_same_panels(tmp_path) -> None:
    """bars_1m in DuckDB (DECIMAL money, TIMESTAMPTZ minutes) -> export_bars_by_base -> ReadBasePanels:
    the same panels and venue series as the row path; the spot market is not exported."""
    from pipelines.jobs.load import export_bars_by_base
    from pipelines.warehouse import migrate

    # plus a base whose partition directory name needs URL-encoding
    rows = hand_bars() + [{**r, "base": "A/B", "symbol": "A/B"} for r in of("ETH", hand_bars())]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    migrate(con)
    con.register("src", pa.Table.from_pylist(rows))
    con.execute("INSERT INTO bars_1m BY NAME SELECT * FROM src")
    by_base = export_bars_by_base(con, tmp_path / "bars", CFG, since_us=ts_to_micros(M0))
    assert sorted(by_base) == ["A/B", "BTC", "ETH"]
    btc = read_bar_files(by_base["BTC"])
    assert "spot" not in set(btc.column("kind").to_pylist())
    got = base_bars_from_arrow("BTC", btc, CFG)
    assert_same_panel(got.panel, reference_panel("BTC", of("BTC", hand_bars()), CFG))
    assert len(got.venue_series) == 4
    # minutes from `since_us` on only
    later = export_bars_by_base(con, tmp_path / "later", CFG, since_us=ts_to_micros(M0) + 5 * 60_000_000)
    assert sorted(later) == ["BTC"]

    out: list = []
    with TestPipeline(runner="FnApiRunner") as p:
        (p | ReadBasePanels(by_base, CFG)
         | beam.Map(lambda kv: (kv[0], None if kv[1].panel is None else kv[1].panel.reference_venue))
         | Collect(out))
    assert sorted(out) == [("A/B", "hyperliquid:A/B"), ("BTC", "bybit:BTCUSD"), ("ETH", "hyperliquid:ETH")]
