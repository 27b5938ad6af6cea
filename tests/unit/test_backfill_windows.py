"""The windowed backfill's carried pieces (ADR 036) give the whole range's numbers to the last bit:
the market index continued from carried growth factors, the cascades' reference OI and prefix sums
from a carried history, and oi_deltas made from 5-minute samples gathered window by window."""

from __future__ import annotations

import numpy as np

from pipelines.jobs.backfill import _carried, _carry_into
from pipelines.transforms.cascades import LONG, SHORT, carry_table, detect_scope, market_growth
from pipelines.transforms.config import MINUTE_US, AnalyticsConfig
from pipelines.transforms.oi import (
    _samples,
    delta_rows,
    market_delta_rows,
    oi_delta_rows_from_samples,
    sample_stride,
)

T0 = 1_704_067_200_000_000  # 2024-01-01 00:00 UTC


def _series(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    oi = 1e9 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    oi[rng.random(n) < 0.05] = np.nan  # minutes without a (carried) value
    price = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    price[rng.random(n) < 0.05] = np.nan
    return oi, oi / price, price


def test_market_growth_continued_from_carried_factors_is_bitwise_the_whole_ones():
    rng = np.random.default_rng(1)
    prices = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, (3, 5000)), axis=1))
    oi = rng.uniform(1e8, 1e9, (3, 5000))
    whole = market_growth(prices, oi)
    cut, known = 3100, 40  # the window begins at `cut`; the windows before computed `known` minutes of it
    window = market_growth(prices[:, cut:], oi[:, cut:], whole[cut:cut + known])
    assert np.array_equal(window, whole[cut:])
    # without the carried factors the product restarts at 1: the same index up to rounding only
    restarted = market_growth(prices[:, cut:], oi[:, cut:]) * whole[cut]
    assert np.allclose(restarted, whole[cut:]) and not np.array_equal(restarted, whole[cut:])


def test_detection_with_a_carried_history_equals_the_whole_range_row_for_row():
    cfg = AnalyticsConfig(oi_reference_minutes=600, vol_lookback_minutes=120, max_episode_minutes=60)
    n, cut = 4000, 2000
    rng = np.random.default_rng(7)
    minutes = T0 + np.arange(n, dtype=np.int64) * MINUTE_US
    long_ = (rng.random(n) < 0.02) * rng.uniform(1e5, 5e6, n)
    short = (rng.random(n) < 0.02) * rng.uniform(1e5, 5e6, n)
    long_[3000:3004] = 4e7  # an episode after the cut
    long_m, short_m = np.round(long_ * 1e6).astype(np.int64), np.round(short * 1e6).astype(np.int64)
    zeros = np.zeros(n, dtype=np.int64)
    price = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    price[3000:3004] *= 0.97
    oi = 1e9 * np.exp(np.cumsum(rng.normal(0, 0.003, n)))
    args = ("BTC", minutes, long_m, short_m, zeros + 1, zeros + 1, price, price, price, oi, ["binance"],
            long_m[None, :], short_m[None, :], cfg)
    sums: dict = {}
    whole = detect_scope(*args, sums_out=sums)
    table = carry_table("BTC", minutes, oi, None, sums, int(minutes[0]), int(minutes[cut + 10]))
    carry: dict = {}
    _carry_into(carry, table)
    carried = _carried(carry["BTC"], None)
    sl = slice(cut, None)
    history = carried.history(int(minutes[cut]), n - cut, cfg)
    window = detect_scope("BTC", minutes[sl], long_m[sl], short_m[sl], zeros[sl] + 1, zeros[sl] + 1, price[sl],
                          price[sl], price[sl], oi[sl], ["binance"], long_m[None, sl], short_m[None, sl], cfg,
                          history=history)
    after = int(minutes[cut]) + cfg.lookback_minutes()["cascades"] * MINUTE_US  # past the lookback: emitted

    def emitted(rows: list[dict], col: str) -> list[dict]:
        return sorted((r for r in rows if r[col].timestamp() * 1e6 > after), key=lambda r: sorted(r.items()))

    assert emitted(whole[0], "start_ts"), "the case has an episode to compare"
    assert emitted(window[0], "start_ts") == emitted(whole[0], "start_ts")
    assert emitted(window[1], "alert_ts") == emitted(whole[1], "alert_ts")
    assert set(sums) == {LONG, SHORT}


def test_oi_deltas_from_samples_gathered_over_windows_equal_the_dense_series():
    cfg = AnalyticsConfig()
    assert sample_stride(cfg) == 5
    n = 50 * 1440  # 50 days: the 30-day span has rows
    first = T0 + 3 * MINUTE_US  # a grid that does not begin on a sampled minute
    minutes = first + np.arange(n, dtype=np.int64) * MINUTE_US
    oi, oi_base, price = _series(n, 3)
    emit = T0 + 35 * 1440 * MINUTE_US
    dense = delta_rows("venue", "binance", "BTCUSDT", "BTC", minutes, oi, oi_base, price, cfg, emit)
    # windows of 7 days from the start, each seeing its days plus 1.5 days before (its own grid start)
    cuts = list(range(int(minutes[0]), int(minutes[-1]) + 1, 7 * 1440 * MINUTE_US))
    rows = []
    for i, c0 in enumerate(cuts):
        c1 = cuts[i + 1] if i + 1 < len(cuts) else None
        lo = max(0, (c0 - int(minutes[0])) // MINUTE_US - 2160)
        hi = n if c1 is None else min(n, (c1 - int(minutes[0])) // MINUTE_US + 2160)
        rows.append(_samples("venue", "binance", "BTCUSDT", "BTC", minutes[lo:hi], oi[lo:hi], oi_base[lo:hi],
                             price[lo:hi], c0, c1, cfg))
    series = ("venue", "binance", "BTCUSDT", "BTC", min(r["first_us"] for r in rows), True,
              *(np.concatenate([r[k] for r in rows]) for k in ("minute_us", "oi_usd", "oi_base", "price")))
    got = oi_delta_rows_from_samples(series, cfg, emit)
    assert dense and got == dense


def test_market_oi_deltas_from_samples_equal_the_dense_ones():
    cfg = AnalyticsConfig()
    n = 32 * 1440
    parts, series = [], []
    for k, (base, shift) in enumerate((("BTC", 0), ("ETH", 7))):
        minutes = T0 + (shift + np.arange(n - shift, dtype=np.int64)) * MINUTE_US
        oi, oi_base, price = _series(n - shift, 10 + k)
        parts.append((base, minutes, oi, price))
        every = sample_stride(cfg) * MINUTE_US
        keep = minutes % every == 0
        series.append(("symbol", "all", base, base, int(minutes[0]), True, minutes[keep], oi[keep], oi_base[keep],
                       price[keep]))
    emit = T0 + 31 * 1440 * MINUTE_US
    dense = market_delta_rows(parts, cfg, emit)
    assert dense and oi_delta_rows_from_samples(("market", series), cfg, emit) == dense
