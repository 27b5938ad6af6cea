"""ComputeOIDeltas: hand-computed deltas/regimes and a plain-SQL reference over generated events."""

from __future__ import annotations

import dataclasses
import datetime as dt

import apache_beam as beam
import duckdb
import numpy as np
import pandas as pd
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.transforms.bars import ComputeBars, records_to_batches
from pipelines.transforms.config import AnalyticsConfig
from pipelines.transforms.oi import ComputeOIDeltas, regime
from tests.unit.test_transform_bars import Collect, oi, trade

M0 = dt.datetime(2024, 3, 1)
CFG = AnalyticsConfig(oi_spans_minutes=(("1h", 60), ("2h", 120)), oi_every_minutes=60, ffill_max_minutes=30)


def bar(m: int, exchange: str, base: str, close: float | None, oi_usd: float | None, kind: str = "perpetual") -> dict:
    return {
        "minute_ts": M0 + dt.timedelta(minutes=m), "exchange": exchange, "symbol": f"{base}-{exchange}", "base": base,
        "quote": "USDT", "kind": kind, "open": close, "high": close, "low": close, "close": close,
        "volume_base": 1.0 if close else 0.0, "volume_usd": close or 0.0, "trade_count": 1 if close else 0,
        "taker_buy_usd": 0.0, "taker_sell_usd": 0.0, "long_liq_count": 0, "long_liq_usd": 0.0, "short_liq_count": 0,
        "short_liq_usd": 0.0, "max_liq_usd": 0.0, "oi_first": None, "oi_last": None if oi_usd is None else oi_usd / 100,
        "oi_first_usd": None, "oi_last_usd": oi_usd, "funding_rate_last": None, "mark_price_last": None,
        "index_price_last": None,
    }


def run(rows: list[dict], cfg: AnalyticsConfig = CFG, emit_from_us: int | None = None) -> list[dict]:
    out: list[dict] = []
    with TestPipeline(runner="FnApiRunner") as p:
        p | beam.Create(rows) | ComputeOIDeltas(cfg, emit_from_us) | Collect(out)
    return out


def _key(r: dict) -> tuple:
    return (r["level"], r["exchange"], r["symbol"], r["as_of_ts"], r["span"])


def test_regime_labels() -> None:
    assert regime(-5.0, -3.0, 0.25) == "deleveraging"
    assert regime(-5.0, 0.0, 0.25) == "deleveraging"
    assert regime(-5.0, 2.0, 0.25) == "short_squeeze"
    assert regime(3.0, -1.0, 0.25) == "leverage_buildup"
    assert regime(0.2, -9.0, 0.25) == "flat"


def test_venue_symbol_market_deltas_by_hand() -> None:
    rows = []
    # BTC on binance: OI 10.0B at minutes 0..59, 9.5B from 60, 9.0B from 120 (every minute);
    # price 60 000 -> 57 000 -> 58 000.
    for m in range(121):
        px, o = (60_000.0, 10.0e9) if m < 60 else (57_000.0, 9.5e9) if m < 120 else (58_000.0, 9.0e9)
        rows.append(bar(m, "binance-futures", "BTC", px, o))
    # BTC on okx: OI snapshot only at minutes 0 (2.0B), 50 (2.5B) and 110 (2.2B); carried <= 30 min,
    # so at minute 120 it is 2.2B (10 min old), at minute 60 it is 2.5B.
    okx_oi = {0: 2.0e9, 50: 2.5e9, 110: 2.2e9}
    for m in range(121):  # trades every minute, OI only now and then
        rows.append(bar(m, "okx", "BTC", 60_000.0, okx_oi.get(m)))
    # SOL on bybit, single venue: OI 1.0B -> 1.1B at minute 60 -> 1.1B; price 150 -> 140 -> 150
    for m in range(121):
        px, o = (150.0, 1.0e9) if m < 60 else (140.0, 1.1e9) if m < 120 else (150.0, 1.1e9)
        rows.append(bar(m, "bybit", "SOL", px, o))
    got = {_key(r): r for r in run(rows)}

    v = got[("venue", "binance-futures", "BTC-binance-futures", M0 + dt.timedelta(minutes=60), "1h")]
    assert (v["oi_start_usd"], v["oi_end_usd"], v["oi_change_usd"]) == (10.0e9, 9.5e9, -0.5e9)
    assert v["oi_change_pct"] == pytest.approx(-5.0) and v["price_change_pct"] == pytest.approx(-5.0)
    assert v["regime"] == "deleveraging"
    v2 = got[("venue", "binance-futures", "BTC-binance-futures", M0 + dt.timedelta(minutes=120), "2h")]
    assert v2["oi_change_pct"] == pytest.approx(-10.0) and v2["price_change_pct"] == pytest.approx(-100 / 30)
    # okx at minute 60: as-of 2.5B (minute 50); at minute 0: 2.0B -> +25 %, price flat
    o = got[("venue", "okx", "BTC-okx", M0 + dt.timedelta(minutes=60), "1h")]
    assert o["oi_change_pct"] == pytest.approx(25.0) and o["regime"] == "leverage_buildup"
    # okx at minute 120: as-of 2.2B (minute 110) vs minute 60 as-of 2.5B
    o2 = got[("venue", "okx", "BTC-okx", M0 + dt.timedelta(minutes=120), "1h")]
    assert o2["oi_start_usd"] == 2.5e9 and o2["oi_end_usd"] == 2.2e9

    s = got[("symbol", "all", "BTC", M0 + dt.timedelta(minutes=120), "1h")]
    assert (s["oi_start_usd"], s["oi_end_usd"]) == (9.5e9 + 2.5e9, 9.0e9 + 2.2e9)
    assert s["oi_change_pct"] == pytest.approx((11.2 / 12.0 - 1) * 100)
    assert s["price_change_pct"] == pytest.approx((58_000 / 57_000 - 1) * 100)  # reference venue binance
    assert s["regime"] == "short_squeeze"
    sol = got[("symbol", "all", "SOL", M0 + dt.timedelta(minutes=60), "1h")]
    assert sol["oi_change_pct"] == pytest.approx(10.0) and sol["regime"] == "leverage_buildup"

    mk = got[("market", "all", "market", M0 + dt.timedelta(minutes=60), "1h")]
    assert (mk["oi_start_usd"], mk["oi_end_usd"]) == (10.0e9 + 2.0e9 + 1.0e9, 9.5e9 + 2.5e9 + 1.1e9)
    assert mk["price_change_pct"] == pytest.approx(-5.0)  # BTC is the market's reference price
    # only as-of minutes aligned to 60 with a full span behind them
    assert {(k[0], k[3].hour, k[3].minute, k[4]) for k in got if k[0] == "market"} == {
        ("market", 1, 0, "1h"), ("market", 2, 0, "1h"), ("market", 2, 0, "2h")}


def test_empty_window_and_emit_from() -> None:
    with TestPipeline(runner="FnApiRunner") as p:
        assert_that(p | beam.Create([]) | ComputeOIDeltas(CFG), equal_to([]))
    rows = [bar(m, "bybit", "SOL", 150.0, 1e9) for m in range(121)]
    emit = int((M0 + dt.timedelta(minutes=61) - dt.datetime(1970, 1, 1)).total_seconds()) * 1_000_000
    got = run(rows, emit_from_us=emit)
    assert {(r["level"], r["as_of_ts"].hour) for r in got} == {("venue", 2), ("symbol", 2), ("market", 2)}
    assert all(r["regime"] == "flat" for r in got)


# ---------------------------------------------------------------------------------------------
T0 = int((M0 - dt.datetime(1970, 1, 1)).total_seconds()) * 1_000_000
S = 1_000_000


def generate(seed: int, minutes: int = 200) -> dict[str, list[dict]]:
    rng = np.random.default_rng(seed)
    venues = [("binance-futures", "BTCUSDT", "BTC", 60_000.0, 8e9), ("bybit", "BTCUSDT", "BTC", 60_010.0, 4e9),
              ("okx", "ETH-USDT-SWAP", "ETH", 3_000.0, 2e9)]
    out: dict[str, list[dict]] = {"trade": [], "open_interest": []}
    for ex, sym, base, px, o in venues:
        inst = {"exchange": ex, "symbol": sym, "base": base}
        n = minutes * 6
        ts = np.sort(T0 + rng.choice(minutes * 60 * S, size=n, replace=False))
        path = px * np.exp(np.cumsum(rng.normal(0, 4e-4, n)))
        for t, p in zip(ts, path, strict=True):
            out["trade"].append(trade(int(t), float(p), float(rng.lognormal(-3, 1)), **inst))
        # OI every ~4 minutes on average, with gaps longer than the carry limit now and then
        k = minutes // 4
        ts = T0 + rng.choice(minutes * 60 * S, size=k, replace=False)
        for t, x in zip(ts, o * np.exp(np.cumsum(rng.normal(0, 3e-3, k))), strict=True):
            out["open_interest"].append(oi(int(t), float(x / px), float(x), **inst))
    return out


SQL = """
WITH grid AS (
  SELECT v.exchange, v.symbol, v.base, g.t
  FROM (SELECT DISTINCT exchange, symbol, base FROM ois) v,
       (SELECT unnest(range($t0::BIGINT, $t1::BIGINT, $step::BIGINT)) AS t) g),
oi_asof AS (
  SELECT exchange, symbol, base, t,
    (SELECT open_interest_usd FROM ois o WHERE o.exchange = grid.exchange AND o.symbol = grid.symbol
       AND o.event_time < t + 60000000 AND o.event_time >= t - $ffill::BIGINT * 60000000
     ORDER BY event_time DESC LIMIT 1) AS oi_usd,
    (SELECT price FROM trades x WHERE x.exchange = grid.exchange AND x.symbol = grid.symbol
       AND x.event_time < t + 60000000 AND x.event_time >= t - $ffill::BIGINT * 60000000
     ORDER BY event_time DESC LIMIT 1) AS price
  FROM grid),
venue AS (
  SELECT 'venue' AS level, e.exchange, e.symbol, e.t AS as_of, s.oi_usd AS oi_start, e.oi_usd AS oi_end,
         s.price AS p_start, e.price AS p_end
  FROM oi_asof e JOIN oi_asof s ON s.exchange = e.exchange AND s.symbol = e.symbol AND s.t = e.t - $span::BIGINT * 60000000),
sym AS (
  SELECT base, t, sum(oi_usd ORDER BY exchange, symbol) AS oi_usd,  -- in a fixed order, as the panel sums venues
         max(price) FILTER (WHERE exchange = 'binance-futures' OR base = 'ETH') AS price
  FROM oi_asof GROUP BY base, t),
symbol AS (
  SELECT 'symbol', 'all', e.base, e.t, s.oi_usd, e.oi_usd, s.price, e.price
  FROM sym e JOIN sym s ON s.base = e.base AND s.t = e.t - $span::BIGINT * 60000000)
SELECT level, exchange, symbol, as_of, round(oi_end - oi_start, 2), round((oi_end / oi_start - 1) * 100, 6),
       round((p_end / p_start - 1) * 100, 6)
FROM (SELECT * FROM venue UNION ALL SELECT * FROM symbol)
WHERE oi_start IS NOT NULL AND oi_end IS NOT NULL
ORDER BY 1, 2, 3, 4
"""


class _Read(beam.DoFn):
    def __init__(self, events: dict[str, list[dict]]) -> None:
        self.events = events

    def process(self, _):
        for et, recs in self.events.items():
            for i in range(0, len(recs), 500):
                yield records_to_batches(et, recs[i:i + 500])


def test_oi_deltas_equal_plain_sql_reference_to_the_cent() -> None:
    events = generate(seed=4)
    cfg = dataclasses.replace(CFG, oi_spans_minutes=(("1h", 60),), oi_every_minutes=5, ffill_max_minutes=6)
    out: list[dict] = []
    with TestPipeline(runner="FnApiRunner") as p:
        bars = p | beam.Create([None]) | beam.ParDo(_Read(events)) | ComputeBars(cfg)
        bars | ComputeOIDeltas(cfg) | Collect(out)
    mine = sorted(
        (r["level"], r["exchange"], r["symbol"],
         (r["as_of_ts"] - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1),
         round(r["oi_change_usd"], 2), round(r["oi_change_pct"], 6), round(r["price_change_pct"], 6))
        for r in out if r["level"] != "market"
    )
    con = duckdb.connect()
    ois = pd.DataFrame(events["open_interest"])  # noqa: F841 - read by DuckDB's replacement scan
    trades = pd.DataFrame(events["trade"])  # noqa: F841
    con.execute("CREATE TABLE ois AS SELECT * FROM ois; CREATE TABLE trades AS SELECT * FROM trades")
    ref = con.execute(SQL, {"t0": T0, "t1": T0 + 200 * 60 * S, "step": 5 * 60 * S, "ffill": 6, "span": 60}).fetchall()
    assert len(ref) > 50
    assert [tuple(x) for x in ref] == mine
