"""DetectCascades: episodes, alerts and the feedback measure on hand-built minute bars."""

from __future__ import annotations

import datetime as dt
import json

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.transforms.cascades import LONG, DetectCascades, episode_id, feedback_ratio
from pipelines.transforms.config import AnalyticsConfig

M0 = dt.datetime(2024, 8, 5, 0, 0)
CFG = AnalyticsConfig(
    trigger_window_minutes=3,
    baseline_minutes=10,
    baseline_multiple=5.0,
    floor_usd_symbol=1_000_000.0,
    floor_usd_market=1_500_000.0,
    min_adverse_move_pct=0.5,
    quiet_fraction=0.2,  # quiet minute: < 0.2 * 1M / 3 = 66 666.67 USD (symbol scope)
    quiet_gap_minutes=3,
    severity_tiers=(1.0, 2.0, 4.0),
    feedback_min_points=1000,  # feedback tested on its own below
)


def bar(m: int, exchange: str, close: float, low: float, long_usd: float, long_n: int, oi_usd: float,
        base: str = "BTC", short_usd: float = 0.0) -> dict:
    return {
        "minute_ts": M0 + dt.timedelta(minutes=m), "exchange": exchange, "symbol": f"{base}USDT", "base": base,
        "quote": "USDT", "kind": "perpetual", "open": close, "high": max(close, low), "low": low, "close": close,
        "volume_base": 1.0, "volume_usd": close, "trade_count": 1, "taker_buy_usd": 0.0, "taker_sell_usd": close,
        "long_liq_count": long_n, "long_liq_usd": long_usd, "short_liq_count": 0, "short_liq_usd": short_usd,
        "max_liq_usd": long_usd, "oi_first": None, "oi_last": oi_usd / close, "oi_first_usd": None,
        "oi_last_usd": oi_usd, "funding_rate_last": None, "mark_price_last": None, "index_price_last": None,
    }


# binance: price, low, long liquidations (USD, count), OI USD per minute 0..24
BINANCE = {m: (100.0, 100.0, 10_000.0, 1, 1e9) for m in range(15)}
BINANCE.update({
    15: (99.8, 99.7, 300_000.0, 3, 0.99e9),
    16: (99.0, 98.9, 500_000.0, 5, 0.97e9),
    17: (98.5, 97.9, 400_000.0, 4, 0.96e9),
    18: (98.0, 97.6, 800_000.0, 6, 0.95e9),
})
BINANCE.update({m: (98.6, 98.5, 10_000.0, 1, 0.95e9) for m in range(19, 25)})


def scenario(price_moves: bool = True) -> list[dict]:
    rows = []
    for m, (close, low, usd, n, oi) in BINANCE.items():
        if not price_moves:
            close, low = 100.0, 100.0
        rows.append(bar(m, "binance-futures", close, low, usd, n, oi))
        rows.append(bar(m, "bybit", close + 0.1, close, 100_000.0 if m == 16 else 0.0, 1 if m == 16 else 0, 5e8))
    return rows


def run(rows: list[dict], cfg: AnalyticsConfig = CFG, emit_from_us: int | None = None) -> tuple[list, list]:
    episodes: list = []
    alerts: list = []
    from tests.unit.test_transform_bars import Collect

    with TestPipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(rows) | DetectCascades(cfg, emit_from_us=emit_from_us)
        out["cascades"] | "CE" >> Collect(episodes)
        out["cascade_alerts"] | "CA" >> Collect(alerts)
    return sorted(episodes, key=lambda e: e["scope"]), sorted(alerts, key=lambda a: (a["scope"], a["alert_ts"]))


def _us(m: int) -> int:
    return int((M0 + dt.timedelta(minutes=m) - dt.datetime(1970, 1, 1)).total_seconds()) * 1_000_000


def test_long_cascade_episode_by_hand() -> None:
    episodes, _ = run(scenario())
    btc, market = episodes
    # trigger at minute 17: trailing 3 min = 300k + 600k + 400k = 1.3M >= 1M floor, >= 5 x baseline
    # (10 quiet minutes of 10k -> 30k per window -> 150k), price 98.5 vs 100 at minute 14 = -1.5%.
    # start = first non-quiet minute of the window (15); minute 18 (800k) active; 19-21 quiet -> end 18.
    assert btc["scope"] == "BTC" and btc["direction"] == LONG and btc["status"] == "closed"
    assert btc["episode_id"] == episode_id("BTC", LONG, _us(15))
    assert btc["start_ts"] == M0 + dt.timedelta(minutes=15)
    assert btc["detected_ts"] == M0 + dt.timedelta(minutes=18)  # close of the trigger minute
    assert btc["peak_ts"] == M0 + dt.timedelta(minutes=18)  # 800k
    assert btc["end_ts"] == M0 + dt.timedelta(minutes=19)
    assert btc["duration_minutes"] == 4
    assert btc["long_liq_usd"] == 2_100_000.0 and btc["short_liq_usd"] == 0.0
    assert btc["liq_count"] == 3 + 6 + 4 + 6
    assert (btc["price_start"], btc["price_extreme"], btc["price_end"]) == (100.0, 97.6, 98.0)
    assert btc["drawdown_pct"] == pytest.approx(-2.4)
    # OI: 1.0e9 + 0.5e9 before, 0.95e9 + 0.5e9 at the end
    assert btc["oi_change_usd"] == pytest.approx(-50e6)
    assert btc["oi_change_pct"] == pytest.approx(-50 / 1500 * 100)
    assert json.loads(btc["venue_share"]) == {"binance-futures": round(2.0 / 2.1, 4), "bybit": round(0.1 / 2.1, 4)}
    assert btc["severity"] == pytest.approx(2.1) and btc["severity_level"] == 2
    # market: floor 1.5M first reached at minute 18 (600k + 400k + 800k = 1.8M); the OI-weighted
    # index of a single base is its price: 98.0 / 99.8 - 1 = -1.8%; start = 16.
    assert market["scope"] == "market"
    assert market["start_ts"] == M0 + dt.timedelta(minutes=16)
    assert market["detected_ts"] == M0 + dt.timedelta(minutes=19)
    assert market["long_liq_usd"] == 1_800_000.0
    assert market["severity"] == pytest.approx(1.2) and market["severity_level"] == 1


def test_alerts_at_start_and_escalation() -> None:
    _, alerts = run(scenario())
    got = [(a["scope"], a["alert_type"], a["severity_level"], a["minute_ts"].minute, a["liq_usd"]) for a in alerts]
    assert got == [
        ("BTC", "start", 1, 17, 1_300_000.0),  # 1.3M >= 1 x floor
        ("BTC", "escalation", 2, 18, 2_100_000.0),  # 2.1M >= 2 x floor
        ("market", "start", 1, 18, 1_800_000.0),
    ]


def test_no_episode_without_adverse_price_move() -> None:
    episodes, alerts = run(scenario(price_moves=False))
    assert episodes == [] and alerts == []


def test_empty_window() -> None:
    with TestPipeline(runner="FnApiRunner") as p:
        out = p | beam.Create([]) | DetectCascades(CFG)
        assert_that(out["cascades"], equal_to([]), label="NoEpisodes")
        assert_that(out["cascade_alerts"], equal_to([]), label="NoAlerts")


def test_open_episode_and_stable_id_across_windows() -> None:
    rows = scenario()
    # a cycle that only saw bars up to minute 19: the episode is still open (1 quiet minute)
    partial, _ = run([r for r in rows if r["minute_ts"] <= M0 + dt.timedelta(minutes=19)])
    btc_open = next(e for e in partial if e["scope"] == "BTC")
    assert btc_open["status"] == "open"
    # a later cycle reading back from minute 2 (baseline still covered) closes the same id
    later, _ = run([r for r in rows if r["minute_ts"] >= M0 + dt.timedelta(minutes=2)], emit_from_us=_us(19))
    btc_closed = next(e for e in later if e["scope"] == "BTC")
    assert btc_closed["episode_id"] == btc_open["episode_id"] and btc_closed["status"] == "closed"
    # a window after the episode emits nothing again
    none, alerts = run(rows, emit_from_us=_us(23))
    assert none == [] and alerts == []


def test_short_squeeze_direction() -> None:
    rows = []
    for m in range(20):
        up = m >= 12
        close = 100.0 + (m - 11) * 1.0 if up else 100.0
        rows.append(bar(m, "okx", close, close, 0.0, 0, 1e9, base="SOL", short_usd=600_000.0 if 12 <= m <= 13 else 0.0))
    episodes, _ = run(rows)
    sol = next(e for e in episodes if e["scope"] == "SOL")
    # trigger at 13: 1.2M, price 102 vs 100 at minute 10 = +2%; extreme = max high = 108 at 19? no:
    # the episode ends at 13 (14-16 quiet), so the extreme is the high of 12-13 = 102.
    assert sol["direction"] == "short_squeeze"
    assert sol["start_ts"] == M0 + dt.timedelta(minutes=12)
    assert sol["short_liq_usd"] == 1_200_000.0
    assert sol["price_extreme"] == 102.0 and sol["drawdown_pct"] == pytest.approx(2.0)


def test_feedback_ratio_recovers_a_known_branching_ratio() -> None:
    rng = np.random.default_rng(1)
    n = 3000  # OLS of an AR process is biased down in short samples; 3000 minutes settle it
    liq = np.zeros(n)
    ret = np.zeros(n)
    liq[0] = 1e6
    for t in range(1, n):  # L_t = 0.2M + 0.3 L_{t-1} + 0.25M * A_{t-1} ; A_t = 0.8 %/M * L_t + noise
        liq[t] = 0.2e6 + 0.3 * liq[t - 1] + 0.25e6 * ret[t - 1] + rng.normal(0, 0.05e6)
        ret[t] = 0.8 * liq[t] / 1e6 + rng.normal(0, 0.3)
    # expected: alpha + gamma * kappa = 0.3 + 0.25 * 0.8 = 0.5
    assert feedback_ratio(liq, ret, 8) == pytest.approx(0.5, abs=0.05)
    assert feedback_ratio(liq[:5], ret[:5], 8) is None  # too few minutes
