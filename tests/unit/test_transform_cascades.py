"""DetectCascades: episodes, alerts and the feedback measure on hand-built minute bars."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.transforms.cascades import LONG, SHORT, DetectCascades, episode_id, feedback_ratio
from pipelines.transforms.config import AnalyticsConfig
from tests.unit.test_transform_bars import Collect

M0 = dt.datetime(2024, 8, 5, 0, 0)
CFG = AnalyticsConfig(
    hot_oi_bp=1.0,  # BTC OI 10B -> hot minute >= 1M USD
    episode_oi_bp=5.0,  # -> episode once the run reaches 5M USD
    floor_usd_symbol=100_000.0,
    floor_usd_market=200_000.0,
    quiet_gap_minutes=3,
    severity_tiers=(1.0, 2.0, 4.0),
    feedback_min_points=1000,  # feedback tested on its own below
    # the USD mechanics alone (the flat hand-made prices have no volatility); cascade vs burst
    # is tested with its own bars below
    cascade_move_z=0.0,
    cascade_min_move_pct_per_bp=0.0,
    cascade_min_impact_z=0.0,
)


def bar(m: int, exchange: str, close: float, low: float, long_usd: float, long_n: int, oi_usd: float,
        base: str = "BTC", short_usd: float = 0.0, high: float | None = None) -> dict:
    return {
        "minute_ts": M0 + dt.timedelta(minutes=m), "exchange": exchange, "symbol": f"{base}USDT", "base": base,
        "quote": "USDT", "kind": "perpetual", "open": close, "high": high or max(close, low), "low": low,
        "close": close, "volume_base": 1.0, "volume_usd": close, "trade_count": 1, "taker_buy_usd": 0.0,
        "taker_sell_usd": close, "long_liq_count": long_n, "long_liq_usd": long_usd,
        "short_liq_count": 1 if short_usd else 0, "short_liq_usd": short_usd, "max_liq_usd": long_usd,
        "oi_first": None, "oi_last": oi_usd / close, "oi_first_usd": None, "oi_last_usd": oi_usd,
        "funding_rate_last": None, "mark_price_last": None, "index_price_last": None,
    }


# binance BTC: close, low, long liquidations USD (one order each minute), OI USD; bybit: OI 4B
BINANCE = {m: (100.0, 100.0, 100_000.0, 6e9) for m in range(15)}
BINANCE.update({
    15: (99.6, 99.5, 2_000_000.0, 6e9),  # hot (>= 1M): the run starts
    16: (99.0, 98.8, 2_500_000.0, 5.9e9),  # + bybit 0.5M: run = 5.0M -> episode, level 1
    17: (99.1, 98.9, 300_000.0, 5.9e9),  # quiet
    18: (99.2, 99.0, 200_000.0, 5.9e9),  # quiet (gap of 2 < 3: bridged)
    19: (97.5, 97.0, 6_000_000.0, 5.8e9),  # hot: run = 11.5M >= 2 x 5M -> escalation, level 2
})
BINANCE.update({m: (98.0, 98.0, 100_000.0, 5.8e9) for m in range(20, 26)})  # 20-22 quiet: ends


def scenario(scale: float = 1.0) -> list[dict]:
    rows = []
    for m, (close, low, usd, oi) in BINANCE.items():
        rows.append(bar(m, "binance-futures", close, low, usd * scale, 1, oi))
        rows.append(bar(m, "bybit", close + 0.1, close, 500_000.0 * scale if m == 16 else 0.0, 1 if m == 16 else 0,
                        4e9))
    return rows


def run(rows: list[dict], cfg: AnalyticsConfig = CFG, emit_from_us: int | None = None) -> tuple[list, list]:
    episodes: list = []
    alerts: list = []
    with TestPipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(rows) | DetectCascades(cfg, emit_from_us=emit_from_us)
        out["cascades"] | "CE" >> Collect(episodes)
        out["cascade_alerts"] | "CA" >> Collect(alerts)
    return sorted(episodes, key=lambda e: e["scope"]), sorted(alerts, key=lambda a: (a["scope"], a["alert_ts"]))


def _us(m: int) -> int:
    return int((M0 + dt.timedelta(minutes=m) - dt.datetime(1970, 1, 1)).total_seconds()) * 1_000_000


def _at(m: int) -> dt.datetime:
    return M0 + dt.timedelta(minutes=m)


def test_long_cascade_episode_by_hand() -> None:
    episodes, _ = run(scenario())
    btc, market = episodes
    assert btc["scope"] == "BTC" and btc["direction"] == LONG and btc["status"] == "closed"
    assert btc["episode_id"] == episode_id("BTC", LONG, _us(15))
    assert (btc["start_ts"], btc["detected_ts"], btc["peak_ts"]) == (_at(15), _at(17), _at(19))
    assert (btc["end_ts"], btc["closed_ts"], btc["duration_minutes"]) == (_at(20), _at(23), 5)
    assert btc["threshold_usd"] == 5_000_000.0  # 5 bp of 10B (OI of minute 14)
    assert btc["long_liq_usd"] == 2.0e6 + 3.0e6 + 0.3e6 + 0.2e6 + 6.0e6 and btc["short_liq_usd"] == 0.0
    assert btc["liq_count"] == 6
    assert (btc["price_start"], btc["price_extreme"], btc["price_end"]) == (100.0, 97.0, 97.5)
    assert btc["drawdown_pct"] == pytest.approx(-3.0)
    assert btc["oi_change_usd"] == pytest.approx(-0.2e9)  # 10.0B -> 5.8B + 4.0B
    assert btc["oi_change_pct"] == pytest.approx(-2.0)
    assert json.loads(btc["venue_share"]) == {"binance-futures": round(11.0 / 11.5, 4), "bybit": round(0.5 / 11.5, 4)}
    assert btc["severity"] == pytest.approx(11.5 / 5) and btc["severity_level"] == 2
    # market: one base, the same OI, so the same thresholds and run
    assert market["scope"] == "market" and market["episode_id"] == episode_id("market", LONG, _us(15))
    assert (market["start_ts"], market["end_ts"], market["long_liq_usd"]) == (_at(15), _at(20), 11.5e6)


def test_alerts_at_start_and_escalation() -> None:
    _, alerts = run(scenario())
    got = [(a["scope"], a["alert_type"], a["severity_level"], a["minute_ts"], a["liq_usd"]) for a in alerts]
    assert got == [
        ("BTC", "watch", 0, _at(15), 2.0e6),  # first hot minute: early warning
        ("BTC", "start", 1, _at(16), 5.0e6),
        ("BTC", "escalation", 2, _at(19), 11.5e6),
        ("market", "watch", 0, _at(15), 2.0e6),
        ("market", "start", 1, _at(16), 5.0e6),
        ("market", "escalation", 2, _at(19), 11.5e6),
    ]
    assert alerts[1]["price_move_pct"] == pytest.approx(-1.0)  # 99.0 vs 100.0
    assert alerts[0]["alert_ts"] == _at(16)  # the close of minute 15


def test_run_below_threshold_is_no_episode() -> None:
    # x 0.3: only minute 19 (1.8M) is hot, and 1.8M < 5M: a watch alert, then nothing
    episodes, alerts = run(scenario(scale=0.3))
    assert episodes == []
    assert [(a["scope"], a["alert_type"], a["minute_ts"]) for a in alerts] == [
        ("BTC", "watch", _at(19)), ("market", "watch", _at(19))]


def test_adverse_move_filter_delays_confirmation() -> None:
    cfg = dataclasses.replace(CFG, min_adverse_move_pct=2.0)
    episodes, alerts = run(scenario(), cfg)
    btc = next(e for e in episodes if e["scope"] == "BTC")
    # at minute 16 the close is only -1 %; at 19 it is -2.5 % and the run is already 11.5M
    assert (btc["start_ts"], btc["detected_ts"]) == (_at(15), _at(20))
    assert [(a["alert_type"], a["severity_level"]) for a in alerts if a["scope"] == "BTC"] == [
        ("watch", 0), ("start", 2)]


def test_supplied_oi_reference_raises_the_bar() -> None:
    # the job says BTC held 20B of OI in the week before: hot >= 2M, episode >= 10M. Minutes 15
    # (2.0M), 16 (3.0M) and 19 (6.0M) are hot; the run reaches 11.5M >= 10M only at minute 19.
    with TestPipeline(runner="FnApiRunner") as p:
        ref = p | "Ref" >> beam.Create([("BTC", 20e9), ("market", 20e9)])
        out = p | beam.Create(scenario()) | DetectCascades(CFG, oi_reference=ref)
        episodes: list = []
        out["cascades"] | Collect(episodes)
    btc = next(e for e in episodes if e["scope"] == "BTC")
    assert (btc["start_ts"], btc["detected_ts"], btc["threshold_usd"]) == (_at(15), _at(20), 10e6)
    assert btc["severity_level"] == 1


def test_empty_window() -> None:
    with TestPipeline(runner="FnApiRunner") as p:
        out = p | beam.Create([]) | DetectCascades(CFG)
        assert_that(out["cascades"], equal_to([]), label="NoEpisodes")
        assert_that(out["cascade_alerts"], equal_to([]), label="NoAlerts")


def test_open_episode_and_stable_id_across_windows() -> None:
    rows = scenario()
    # a cycle that saw bars up to minute 20 only: one quiet minute, the episode is still open
    partial, _ = run([r for r in rows if r["minute_ts"] <= _at(20)])
    btc_open = next(e for e in partial if e["scope"] == "BTC")
    assert btc_open["status"] == "open" and btc_open["closed_ts"] is None
    # a later cycle (touched minutes from 21, bars read back from minute 5) closes the same id
    later, alerts = run([r for r in rows if r["minute_ts"] >= _at(5)], emit_from_us=_us(21))
    btc_closed = next(e for e in later if e["scope"] == "BTC")
    assert btc_closed["episode_id"] == btc_open["episode_id"] and btc_closed["status"] == "closed"
    assert alerts == []  # the alerts were emitted by the earlier cycle
    # a window after the episode was closed emits nothing again
    assert run(rows, emit_from_us=_us(24)) == ([], [])


def test_short_squeeze_direction() -> None:
    rows = []
    for m in range(20):
        close = {12: 101.0, 13: 102.0}.get(m, 100.0 if m < 12 else 101.5)
        short = 300_000.0 if m in (12, 13) else 0.0  # SOL OI 1B: hot >= 100k, episode >= 500k
        rows.append(bar(m, "okx", close, close, 0.0, 0, 1e9, base="SOL", short_usd=short))
    episodes, _ = run(rows)
    sol = next(e for e in episodes if e["scope"] == "SOL")
    assert sol["direction"] == SHORT
    assert (sol["start_ts"], sol["end_ts"], sol["detected_ts"]) == (_at(12), _at(14), _at(14))
    assert sol["short_liq_usd"] == 600_000.0
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


# -- cascade or liquidation burst (ADR 011) ------------------------------------------------------
# the volatility is median |return| / 0.6745 here (the estimator before ADR 027): _noisy_then's
# sawtooth has two return values, whose MAD about their median is 0 (no scale); the ADR 027
# estimator is tested on its own below (test_reference_sigma_*)
KIND_CFG = dataclasses.replace(CFG, cascade_move_z=6.0, cascade_min_move_pct_per_bp=0.02,
                               cascade_impact_pct_per_bp=0.08, cascade_min_impact_z=3.0,
                               vol_net_of_impact=False, vol_centered=False, vol_trim_sigmas=0.0)
SIGMA = 0.1 / 0.6745  # the volatility of _noisy_then's first 60 minutes (median |return| / 0.6745)


def _noisy_then(last_close: float, last_low: float) -> list[dict]:
    """60 minutes of BTC alternating 100.0 / 100.1 (|1-minute return| ~0.1 %: volatility ~0.148 %),
    then minute 60 with 6M USD of longs liquidated (OI 10B: 6 bp >= the 5 bp episode threshold)."""
    rows = [bar(m, "binance-futures", 100.0 + 0.1 * (m % 2), 100.0, 0.0, 0, 10e9) for m in range(60)]
    rows.append(bar(60, "binance-futures", last_close, last_low, 6_000_000.0, 1, 10e9))
    rows += [bar(m, "binance-futures", last_close, last_close, 0.0, 0, 10e9) for m in range(61, 66)]
    return rows


def test_liquidations_absorbed_without_a_move_are_a_burst_never_at_cascade_severity() -> None:
    # the USD is there (6 bp of OI), price dips 0.05 % from the close before (100.1 at minute 59)
    episodes, alerts = run(_noisy_then(100.05, 100.05), KIND_CFG)
    btc = [e for e in episodes if e["scope"] == "BTC"]
    assert len(btc) == 1 and btc[0]["kind"] == "liquidation_burst" and btc[0]["severity_level"] == -1
    sigma = 0.1 / 0.6745  # median |return| / 0.6745 (returns of +-0.1 % and -0.0999 %)
    move = (1 - 100.05 / 100.1) * 100
    assert btc[0]["vol_1m_pct"] == pytest.approx(sigma, rel=2e-3)
    assert btc[0]["price_move_pct"] == pytest.approx(move)
    assert btc[0]["price_move_z"] == pytest.approx(move / sigma, rel=2e-3)  # ~0.34 < 6
    assert btc[0]["move_pct_per_liq_bp"] == pytest.approx(move / 6.0)  # 6 bp of OI liquidated
    kinds = {(a["alert_type"], a["severity_level"], a["kind"]) for a in alerts if a["scope"] == "BTC"}
    assert kinds == {("watch", 0, "watch"), ("burst", -1, "liquidation_burst")}


def test_liquidations_that_move_price_far_beyond_its_volatility_are_a_cascade() -> None:
    # the same USD with price 3 % down in the minute: z ~ 20 >= 6, 0.5 % per bp >= 0.02
    episodes, alerts = run(_noisy_then(97.2, 97.1), KIND_CFG)
    (btc,) = [e for e in episodes if e["scope"] == "BTC"]
    assert btc["kind"] == "cascade" and btc["severity_level"] == 1
    assert btc["price_move_z"] == pytest.approx((1 - 97.1 / 100.1) * 100 / (0.1 / 0.6745), rel=2e-3)
    kinds = {(a["alert_type"], a["severity_level"], a["kind"]) for a in alerts if a["scope"] == "BTC"}
    assert kinds == {("watch", 0, "watch"), ("start", 1, "cascade")}
    # with the criteria off (0) the same run is a cascade by USD alone, and so is the burst
    (flat,) = [e for e in run(_noisy_then(100.05, 100.05), CFG)[0] if e["scope"] == "BTC"]
    assert flat["kind"] == "cascade" and flat["severity_level"] == 1


# -- the stream job's open minute (ADR 018) -------------------------------------------------------
def test_closed_minutes_give_the_marts_and_the_open_minute_gives_its_cascade_starts() -> None:
    from pipelines.transforms.cascades import DetectCascadesOnPanels
    from pipelines.transforms.panel import BasePanels

    rows = [r for r in scenario() if r["minute_ts"] <= _at(16)]  # minute 16 is still open
    got: dict[str, list] = {"cascades": [], "cascade_alerts": [], "cascade_open_starts": []}
    with TestPipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(rows) | BasePanels(CFG) | DetectCascadesOnPanels(CFG, closed_before_us=_us(16))
        for name, rows_out in out.items():
            rows_out | f"C_{name}" >> Collect(got[name])
    # the marts' rows are those of the closed minutes alone: a detection over minutes 0-15
    closed_eps, closed_alerts = run([r for r in rows if r["minute_ts"] < _at(16)])
    assert sorted(got["cascades"], key=lambda e: e["scope"]) == closed_eps == []
    assert sorted(got["cascade_alerts"], key=lambda a: (a["scope"], a["alert_ts"])) == closed_alerts
    assert {(a["scope"], a["alert_type"], a["minute_ts"]) for a in closed_alerts} == {
        ("BTC", "watch", _at(15)), ("market", "watch", _at(15))}
    # minute 16 so far: 2M (15) + 2.5M + 0.5M = 5M = 5 bp of the 10B OI: the run becomes an episode there
    starts = sorted(got["cascade_open_starts"], key=lambda a: a["scope"])
    assert [(a["scope"], a["alert_type"], a["minute_ts"], a["severity_level"]) for a in starts] == [
        ("BTC", "start", _at(16), 1), ("market", "start", _at(16), 1)]
    assert [a["liq_usd"] for a in starts] == [pytest.approx(5_000_000.0)] * 2
    assert {a["episode_id"] for a in starts} == {episode_id(s, LONG, _us(15)) for s in ("BTC", "market")}
def _noisy_then_minutes(tail: list[tuple[float, float, float]]) -> list[dict]:
    """_noisy_then's 60 minutes (close 100.1 at minute 59), then one bar per (close, low, long USD)
    of ``tail`` from minute 60 (OI 10B: 1 bp = 1M USD), then 5 quiet minutes at the last close."""
    rows = [bar(m, "binance-futures", 100.0 + 0.1 * (m % 2), 100.0, 0.0, 0, 10e9) for m in range(60)]
    rows += [bar(60 + i, "binance-futures", c, lo, usd, 1 if usd else 0, 10e9) for i, (c, lo, usd) in enumerate(tail)]
    last = tail[-1][0]
    rows += [bar(60 + len(tail) + i, "binance-futures", last, last, 0.0, 0, 10e9) for i in range(5)]
    return rows


def test_liquidations_that_lead_the_move_are_a_cascade() -> None:
    # 25 bp of OI force-closed in the minute price falls 3 %, 10 bp more as it falls another 1 %:
    # the closes are large enough to have made the move (impact z at confirmation
    # 0.08 x 25 / SIGMA ~ 13.5 >= 3), move z ~ 20 >= 6
    episodes, alerts = run(_noisy_then_minutes([(97.1, 97.0, 25e6), (96.1, 96.0, 10e6)]), KIND_CFG)
    (btc,) = [e for e in episodes if e["scope"] == "BTC"]
    assert btc["kind"] == "cascade" and btc["severity_level"] >= 1
    starts = [a for a in alerts if a["scope"] == "BTC" and a["alert_type"] == "start"]
    assert len(starts) == 1 and starts[0]["minute_ts"] == M0 + dt.timedelta(minutes=60)


def test_an_exogenous_move_that_liquidations_follow_is_a_burst_not_a_cascade() -> None:
    # price slides 0.7 % a minute for 6 minutes (the move comes first, every minute), liquidating
    # 1.1 bp of OI a minute: the run reaches the 5 bp threshold at its 5th minute with a 3.5 %
    # move (z = 3.5 / (SIGMA x sqrt 5) ~ 10.6 >= 6, 0.64 % per bp >= 0.02), but 5.5 bp closed
    # could only have moved price 0.08 x 5.5 = 0.44 %: impact z = 0.44 / (SIGMA x sqrt 5) ~ 1.3 < 3,
    # and it stays below at every later minute (the closes do not keep up with sqrt(minutes))
    tail = [(round(100.1 * (1 - 0.007 * (i + 1)), 4),) * 2 + (1.1e6,) for i in range(6)]
    rows = _noisy_then_minutes(tail)
    episodes, alerts = run(rows, KIND_CFG)
    (btc,) = [e for e in episodes if e["scope"] == "BTC"]
    assert btc["kind"] == "liquidation_burst" and btc["severity_level"] == -1
    assert btc["price_move_z"] == pytest.approx(
        (1 - tail[-1][1] / 100.1) * 100 / (SIGMA * 6 ** 0.5), rel=2e-3) and btc["price_move_z"] > 6
    assert btc["move_pct_per_liq_bp"] > 0.02
    kinds = {a["alert_type"] for a in alerts if a["scope"] == "BTC"}
    assert kinds == {"watch", "burst"}
    # the impact criterion is what decides: without it the same run is a cascade
    (casc,) = [e for e in run(rows, dataclasses.replace(KIND_CFG, cascade_min_impact_z=0.0))[0] if e["scope"] == "BTC"]
    assert casc["kind"] == "cascade"


def test_a_flat_burst_fails_the_impact_criterion_too() -> None:
    # 6 bp closed with price 0.05 % down: a burst by the move; and with the move criteria off, 6 bp is
    # too little to pass the impact criterion with a stricter threshold (0.08 x 6 / SIGMA ~ 3.2 < 4)
    rows = _noisy_then(100.05, 100.05)
    only_impact = dataclasses.replace(KIND_CFG, cascade_move_z=0.0, cascade_min_move_pct_per_bp=0.0,
                                      cascade_min_impact_z=4.0)
    (btc,) = [e for e in run(rows, only_impact)[0] if e["scope"] == "BTC"]
    assert btc["kind"] == "liquidation_burst"
    (btc,) = [e for e in run(rows, KIND_CFG)[0] if e["scope"] == "BTC"]
    assert btc["kind"] == "liquidation_burst"


# -- impact from the book's depth (ADR 024) ------------------------------------------------------
def test_expected_move_from_a_known_depth_by_hand() -> None:
    from pipelines.transforms.cascades import expected_impact_pct

    cfg = AnalyticsConfig(cascade_book_walk_coef=1.0, cascade_impact_pct_per_bp=0.08)
    liq = np.array([2e6, 0.0, 3e6, 5e6])
    depth = np.array([100e6, 100e6, np.nan, 0.0])  # known, known, unknown, empty (unknown too)
    oi = np.full(4, 10e9)
    got = expected_impact_pct(liq, depth, oi, cfg)
    # 2M into 100M within 1 %: 0.02 %; minute 2 and 3 the prior: 0.08 % x 3 bp, 0.08 % x 5 bp
    np.testing.assert_allclose(got, [0.02, 0.0, 0.24, 0.40])
    half = dataclasses.replace(cfg, cascade_book_walk_coef=0.5)
    assert expected_impact_pct(liq, depth, oi, half)[0] == pytest.approx(0.01)
    # no depth at all: the prior everywhere (the old detector), NaN without OI
    np.testing.assert_allclose(expected_impact_pct(liq, None, oi, cfg), [0.16, 0.0, 0.24, 0.40])
    assert np.isnan(expected_impact_pct(liq, None, np.full(4, np.nan), cfg)).all()


def test_scope_depth_carries_each_venue_forward_until_stale_and_sums_the_known_ones() -> None:
    from pipelines.transforms.panel import scope_depth

    nan = np.nan
    venues = np.array([[10.0, nan, nan, nan, nan, nan],   # A: one record at minute 0
                       [nan, nan, 5.0, nan, nan, nan]])   # B: one record at minute 2
    # limit 2: A known at 0-2, B at 2-4; the sum over the venues known; none -> NaN
    np.testing.assert_array_equal(scope_depth(venues, 2), [10.0, 10.0, 15.0, 5.0, 5.0, nan])
    np.testing.assert_array_equal(scope_depth(venues, 0), [10.0, nan, 5.0, nan, nan, nan])


def _with_depth(rows: list[dict], minute: int, bid: float, ask: float) -> list[dict]:
    out = [dict(r) for r in rows]
    (r,) = [r for r in out if r["minute_ts"] == M0 + dt.timedelta(minutes=minute)]
    r["depth_bid_usd_100bp"], r["depth_ask_usd_100bp"] = bid, ask
    return out


def test_the_book_decides_whether_the_closes_could_make_the_move() -> None:
    # minute 60: 6M of longs closed (6 bp of OI 10B) while price falls 2 % (move z ~13.5, 0.33 % per
    # bp). The prior: 0.08 % x 6 bp = 0.48 % -> impact z 0.48 / SIGMA ~ 3.24 >= 3: a cascade
    rows = _noisy_then(98.0, 98.0)
    (btc,) = [e for e in run(rows, KIND_CFG)[0] if e["scope"] == "BTC"]
    assert btc["kind"] == "cascade"
    # a thin bid book, 10M within 1 % (4 minutes old: carried): 6M / 10M = 0.6 % -> z ~4.05: a cascade
    thin = _with_depth(rows, 56, bid=10e6, ask=1e12)
    (btc,) = [e for e in run(thin, KIND_CFG)[0] if e["scope"] == "BTC"]
    assert btc["kind"] == "cascade"
    # a deep bid book, 300M: 0.02 % -> z ~0.14: the closes cannot have made the move, a burst
    deep = _with_depth(rows, 56, bid=300e6, ask=10e6)  # the thin asks are not what longs sell into
    (btc,) = [e for e in run(deep, KIND_CFG)[0] if e["scope"] == "BTC"]
    assert btc["kind"] == "liquidation_burst" and btc["severity_level"] == -1
    # the same deep book 10 minutes old (> depth_max_stale_minutes 5): unknown, the prior decides
    stale = _with_depth(rows, 50, bid=300e6, ask=300e6)
    (btc,) = [e for e in run(stale, KIND_CFG)[0] if e["scope"] == "BTC"]
    assert btc["kind"] == "cascade"
    # ... and within a longer staleness limit the book decides again
    (btc,) = [e for e in run(stale, dataclasses.replace(KIND_CFG, depth_max_stale_minutes=15))[0]
              if e["scope"] == "BTC"]
    assert btc["kind"] == "liquidation_burst"


# -- the volatility reference (ADR 027) -----------------------------------------------------------
def _mad_sigma(x: np.ndarray) -> float:
    """Independent reference: the MAD about the median / 0.6745, with the statistics module."""
    import statistics

    med = statistics.median(x.tolist())
    return statistics.median([abs(v - med) for v in x.tolist()]) / 0.6745


def test_reference_sigma_by_hand() -> None:
    from pipelines.transforms.cascades import reference_sigma

    rng = np.random.default_rng(7)
    ret = np.concatenate([[np.nan], 0.02 + rng.normal(0.0, 0.1, 199)])  # minute 0 has no return
    ret[150:155] = 0.7  # a scheduled +3.5 % shock, 5 minutes of 0.7 %
    cfg = AnalyticsConfig(vol_lookback_minutes=100, vol_min_points=30, vol_net_of_impact=True,
                          vol_centered=True, vol_trim_sigmas=4.0)
    legacy = dataclasses.replace(cfg, vol_centered=False, vol_trim_sigmas=0.0)
    untrimmed = dataclasses.replace(cfg, vol_trim_sigmas=0.0)
    w = ret[60:160]  # the 100 minutes before minute 160, the shock among them
    assert reference_sigma(ret, 160, legacy) == pytest.approx(float(np.median(np.abs(w))) / 0.6745)
    assert reference_sigma(ret, 160, untrimmed) == pytest.approx(_mad_sigma(w))
    # trimmed: the first pass's scale, then the MAD of the minutes within 4 of it -- the shock out
    s0 = _mad_sigma(w)
    med = float(np.median(w))
    kept = np.abs(w - med)[np.abs(w - med) <= 4 * s0]
    assert kept.size == 95
    assert reference_sigma(ret, 160, cfg) == pytest.approx(float(np.median(kept)) / 0.6745)
    # fewer than vol_min_points before (minute 20: 19 returns): the window so far; none: NaN
    assert reference_sigma(ret, 20, cfg) == pytest.approx(
        float(np.median(np.abs(ret[1:20] - np.median(ret[1:20])))) / 0.6745, rel=0.5)
    assert np.isnan(reference_sigma(ret, 1, cfg)) and np.isnan(reference_sigma(ret, 0, cfg))
    # a window with fewer than vol_min_points finite returns beyond the lookback: all before
    gappy = ret.copy()
    gappy[100:180] = np.nan
    assert reference_sigma(gappy, 180, untrimmed) == pytest.approx(_mad_sigma(gappy[1:100]))


def test_a_run_after_a_price_only_shock_is_judged_against_the_noise_not_the_shock() -> None:
    """Held-out D-13's mechanism (docs/analytics.md, "The volatility reference"): an hour of
    history holding a +5 % exogenous move (10 of its 59 returns at +0.5 %) inflates median
    |return| and the first-pass MAD alike (0.083 against the noise's 0.066 here), so the closes that follow look smaller against it than they are. The
    reference net of the closes' own impact, about its median and without the shock minutes is
    the noise; against it the same run is a cascade. Expected values computed here by hand."""
    rng = np.random.default_rng(3)
    closes = [100.0]
    for m in range(1, 66):
        r = 0.5 if 50 <= m < 60 else rng.normal(0.0, 0.08)
        closes.append(closes[-1] * (1 + r / 100))
    rows = [bar(m, "binance-futures", c, c, 0.0, 0, 10e9, high=c) for m, c in enumerate(closes[:60])]
    # minutes 60-62: 2.2 bp of OI of shorts squeezed a minute (6.6 bp >= 5), price +0.2 % a minute
    p = closes[59]
    for m in range(60, 63):
        p *= 1.002
        rows.append(bar(m, "binance-futures", p, p, 0.0, 0, 10e9, short_usd=2.2e6, high=p))
    rows += [bar(m, "binance-futures", p, p, 0.0, 0, 10e9, high=p) for m in range(63, 68)]
    cfg = dataclasses.replace(CFG, cascade_move_z=0.0, cascade_min_move_pct_per_bp=0.0,
                              cascade_impact_pct_per_bp=0.08, cascade_min_impact_z=4.2)
    legacy = dataclasses.replace(cfg, vol_net_of_impact=False, vol_centered=False, vol_trim_sigmas=0.0)
    ret = np.diff(np.array(closes[:60])) / np.array(closes[:59]) * 100  # the returns before minute 60
    sig_legacy = float(np.median(np.abs(ret))) / 0.6745
    first = _mad_sigma(ret)
    dev = np.abs(ret - np.median(ret))
    sig_new = float(np.median(dev[dev <= 4 * first])) / 0.6745
    # the run's closes at the prior: 0.08 % per bp; judged at its 3rd minute (6.6 bp): 0.528 %,
    # impact z 3.67 against median |return|, 4.64 against the trimmed MAD (cut 4.2 between)
    impact = 0.08 * 6.6
    assert impact / (sig_legacy * 3 ** 0.5) < 4.2 <= impact / (sig_new * 3 ** 0.5)
    assert sig_new < 0.9 * first  # the trim, not the centring, removes the shock here
    (old,) = [e for e in run(rows, legacy)[0] if e["scope"] == "BTC"]
    (new,) = [e for e in run(rows, cfg)[0] if e["scope"] == "BTC"]
    assert old["kind"] == "liquidation_burst" and old["vol_1m_pct"] == pytest.approx(sig_legacy, rel=1e-9)
    assert new["kind"] == "cascade" and new["vol_1m_pct"] == pytest.approx(sig_new, rel=1e-9)
