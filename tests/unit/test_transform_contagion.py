"""ScoreContagion: beta, dominance, exposure and ranking computed by hand."""

from __future__ import annotations

import datetime as dt
import math

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.transforms.config import AnalyticsConfig
from pipelines.transforms.contagion import ScoreContagion
from tests.unit.test_transform_bars import Collect

M0 = dt.datetime(2024, 8, 5)
CFG = AnalyticsConfig(beta_windows_minutes=(30,), beta_min_points=10, contagion_every_minutes=30,
                      dominance_oi_weight=0.5, leverage_exponent=0.5, funding_norm=0.0001, funding_weight=0.25,
                      liq_intensity_weight=1.0)

# BTC minute log returns: +1 % on odd minutes, -0.5 % on even ones
G = np.array([0.0] + [0.01 if m % 2 else -0.005 for m in range(1, 31)])
# base: (return multiple of BTC, constant extra return, OI USD, volume USD per minute, funding, liq USD/minute)
SPEC = {
    "BTC": (1.0, 0.0, 60e9, 1.0e9, 0.0001, 0.0),
    "ETH": (1.5, 0.0, 20e9, 0.5e9, 0.0001, 0.0),
    "SOL": (2.0, 0.001, 5e9, 0.05e9, 0.0003, 0.5e6),  # 30 x 0.5M = 15M = 0.3 % of OI
    "BNB": (0.5, 0.0, 1e9, 0.1e9, 0.0, 0.0),
}


def rows() -> list[dict]:
    out = []
    for base, (mult, extra, oi, vol, fund, liq) in SPEC.items():
        logp = np.log(100.0) + np.cumsum(mult * G + np.where(np.arange(31) > 0, extra, 0.0))
        for m in range(31):
            px = float(np.exp(logp[m]))
            out.append({
                "minute_ts": M0 + dt.timedelta(minutes=m), "exchange": "binance-futures", "symbol": f"{base}USDT",
                "base": base, "quote": "USDT", "kind": "perpetual", "open": px, "high": px, "low": px, "close": px,
                "volume_base": vol / px, "volume_usd": vol, "trade_count": 10, "taker_buy_usd": vol / 2,
                "taker_sell_usd": vol / 2, "long_liq_count": 1 if liq else 0, "long_liq_usd": liq,
                "short_liq_count": 0, "short_liq_usd": 0.0, "max_liq_usd": liq, "oi_first": oi / px,
                "oi_last": oi / px, "oi_first_usd": oi, "oi_last_usd": oi, "funding_rate_last": fund,
                "mark_price_last": px, "index_price_last": px,
            })
    return out


def test_contagion_by_hand() -> None:
    out: list[dict] = []
    with TestPipeline(runner="FnApiRunner") as p:
        p | beam.Create(rows()) | ScoreContagion(CFG) | Collect(out)
    got = {r["base"]: r for r in out}
    assert set(got) == {"ETH", "SOL", "BNB"}  # BTC is the reference, as_of minute 30 only
    assert all(r["as_of_ts"] == M0 + dt.timedelta(minutes=30) for r in out)

    d_oi = 60 / 86
    d_vol = 1.0 / (1.0 + 0.5 + 0.05 + 0.1)
    dom = 0.5 * d_oi + 0.5 * d_vol
    lev_btc = 60e9 / (1.0e9 * 1440)
    btc_move = (math.exp(G.sum()) - 1) * 100  # 15 x 1 % - 15 x 0.5 % in log terms
    expect = {
        # beta, leverage relative to BTC, crowding, liquidation multiplier
        "ETH": (1.5, (20e9 / (0.5e9 * 1440)) / lev_btc, 1 + 0.25 * 1, 1.0),
        "SOL": (2.0, (5e9 / (0.05e9 * 1440)) / lev_btc, 1 + 0.25 * 3, 1 + 0.3),
        "BNB": (0.5, (1e9 / (0.1e9 * 1440)) / lev_btc, 1.0, 1.0),
    }
    for base, (beta, lev_rel, crowd, liq_mult) in expect.items():
        r = got[base]
        assert r["beta"] == pytest.approx(beta)
        assert r["btc_dominance_oi"] == pytest.approx(d_oi)
        assert r["btc_dominance_volume"] == pytest.approx(d_vol)
        assert r["leverage_rel_btc"] == pytest.approx(lev_rel)
        assert r["exposure"] == pytest.approx(math.sqrt(lev_rel) * crowd * liq_mult)
        assert r["contagion_score"] == pytest.approx(beta * dom * math.sqrt(lev_rel) * crowd * liq_mult)
        assert r["btc_move_pct"] == pytest.approx(btc_move)
        assert r["expected_move_pct"] == pytest.approx(beta * btc_move)
    assert got["SOL"]["liq_intensity_pct"] == pytest.approx(0.3)
    assert got["SOL"]["correlation"] == pytest.approx(1.0)
    assert [b for b, _ in sorted(got.items(), key=lambda kv: kv[1]["rank"])] == ["SOL", "ETH", "BNB"]


def test_not_enough_history_or_no_reference_gives_nothing() -> None:
    short = [r for r in rows() if r["minute_ts"] < M0 + dt.timedelta(minutes=20)]
    no_btc = [r for r in rows() if r["base"] != "BTC"]
    with TestPipeline(runner="FnApiRunner") as p:
        assert_that(p | "S" >> beam.Create(short) | "SS" >> ScoreContagion(CFG), equal_to([]), label="Short")
        assert_that(p | "N" >> beam.Create(no_btc) | "SN" >> ScoreContagion(CFG), equal_to([]), label="NoBTC")
        assert_that(p | "E" >> beam.Create([]) | "SE" >> ScoreContagion(CFG), equal_to([]), label="Empty")
