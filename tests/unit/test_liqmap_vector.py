"""The liquidation-map estimator's vectorized minute step (venue books stacked, issue 21's cost) against
the one-book-at-a-time reference it replaced: the same rows and stored state, bit for bit.

The reference below is the step, the 'all' window, the fuel and the hour's volatility as they were
before the vectorization (commit 629a57d), kept here verbatim on the per-book methods (``VenueBook.cross``,
``open``, ``calibrate``, ``close_fraction``, ``total_base``); since ADR 034 its crossing passes
``liqmap_partial_crossing`` to ``VenueBook.cross`` (the per-book partial crossing, tested by hand in
tests/unit/test_liqmap.py), so both crossings are compared; since ADR 041 its calibration passes
``liqmap_calibration_keep_uncrossed`` to ``VenueBook.calibrate`` likewise, both rules compared. ``estimate_base`` is run once with the
reference patched in and once as it is, on random multi-venue inputs (cascades, gaps, a venue that
publishes no liquidations, a venue silent for half an hour, a venue that appears late, OI flushes that
close whole books and renormalize them, minutes without a price) and, heavy, on a simulator run.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest

from bench.liqmap import synth_columns
from pipelines.transforms import liqmap
from pipelines.transforms.config import AnalyticsConfig
from pipelines.transforms.panel import base_bars_from_columns


class ReferenceEstimator(liqmap.Estimator):
    """The minute step one venue book at a time (the code before the stacked books)."""

    def step(self, inp: liqmap.MinuteInputs, t: int) -> None:
        cfg = self.config
        self.last_us = int(inp.minutes[t])
        price, vwap = float(inp.price[t]), float(inp.vwap[t])
        if not (price > 0 and math.isfinite(price)):
            return
        if not (vwap > 0 and math.isfinite(vwap)):
            vwap = price
        low = float(inp.low[t]) if math.isfinite(inp.low[t]) else price
        high = float(inp.high[t]) if math.isfinite(inp.high[t]) else price
        share = liqmap.long_share(float(inp.taker_buy_usd[t]), float(inp.taker_sell_usd[t]), cfg.liqmap_taker_tilt)
        turnover = cfg.liqmap_turnover_per_day / 1440.0
        index = {key: v for v, key in enumerate(inp.venues)}
        for key in sorted(set(self.books) | set(index)):
            book = self._book(key)
            v = index.get(key)
            removed = book.cross(low, high, cfg.liqmap_partial_crossing)
            realized = (0.0, 0.0) if v is None else (float(inp.long_liq_usd[v, t]), float(inp.short_liq_usd[v, t]))
            if cfg.liqmap_calibration_rate > 0:
                if realized[0] > 0 or removed[0].any():
                    book.calibrate(removed[0] * low, realized[0], cfg.liqmap_calibration_rate,
                                   cfg.liqmap_calibration_keep_uncrossed)
                if realized[1] > 0 or removed[1].any():
                    book.calibrate(removed[1] * high, realized[1], cfg.liqmap_calibration_rate,
                                   cfg.liqmap_calibration_keep_uncrossed)
            oi = float(inp.oi_base[v, t]) if v is not None else math.nan
            if not math.isfinite(oi):
                continue
            prev = self.last_oi.get(key, math.nan)
            self.last_oi[key] = oi
            if not math.isfinite(prev):
                book.open_spread(oi, price, cfg.liqmap_initial_entry_spread, cfg.liqmap_initial_margin_gap)
                continue
            d_oi = oi - prev
            total = book.total_base()
            if d_oi < 0 and total > 0:
                closed = -d_oi - (realized[0] + realized[1]) / price
                if closed > 0:
                    book.close_fraction(closed / total)
            total = book.total_base()
            reopen = total * turnover
            if reopen > 0:
                book.close_fraction(turnover)
            book.open(max(d_oi, 0.0) + reopen, vwap, share)

    def total_book(self, a: int, b: int) -> np.ndarray:
        total = np.zeros((2, self.grid.nb))
        for _, book in sorted(self.books.items()):
            total[:, a:b] += book.store[:, :, a:b].sum(axis=1) * book.scale
        return total[:, a:b]  # (the window alone since ADR 049)


def reference_fuel_row(base: str, ts: Any, book: np.ndarray, grid: liqmap.Grid, price: float,
                       vol_1h_pct: float | None, config: AnalyticsConfig, window: Any = None) -> dict:
    rng = config.liqmap_range_pct
    wa, wb = liqmap.range_window(grid, price, rng)
    mids = grid.mids[wa:wb]
    dist = (mids / price - 1.0) * 100.0
    row: dict[str, Any] = {"minute_ts": ts, "base": base, "price": price, "vol_1h_pct": vol_1h_pct}
    for side, name, sel in ((0, "long", (dist <= 0) & (dist >= -rng)), (1, "short", (dist >= 0) & (dist <= rng))):
        usd = book[side, wa:wb] * mids
        for pct in liqmap.FUEL_PCTS:
            row[f"{name}_usd_{pct}pct"] = float(usd[sel & (np.abs(dist) <= pct)].sum())
        idx = np.flatnonzero(sel)
        mean = float(usd[idx].mean()) if len(idx) else 0.0
        hot = idx[usd[idx] >= config.liqmap_cluster_multiple * mean] if mean > 0 else idx[:0]
        if len(hot):
            b = int(hot[np.argmin(np.abs(dist[hot]))])
            d = abs(float(dist[b]))
            row.update({f"{name}_cluster_price": float(mids[b]), f"{name}_cluster_usd": float(usd[b]),
                        f"{name}_cluster_distance_pct": d,
                        f"{name}_cluster_distance_vol": d / vol_1h_pct if vol_1h_pct else None})
        else:
            row.update({f"{name}_cluster_{k}": None for k in ("price", "usd", "distance_pct", "distance_vol")})
    return row


def reference_fuel_rows(pending: list, grid: liqmap.Grid, config: AnalyticsConfig) -> None:
    """The batch of fuel rows one minute at a time by :func:`reference_fuel_row` (the batch is ADR 049's)."""
    for row, window, wa in pending:
        book = np.zeros((2, grid.nb))
        book[:, wa : wa + window.shape[1]] = window
        row.update(reference_fuel_row(row["base"], row["minute_ts"], book, grid, row["price"], row["vol_1h_pct"],
                                      config))


def reference_vol(price: np.ndarray, t: int, minutes: int) -> float | None:
    p = price[max(0, t - minutes) : t + 1]
    p = p[np.isfinite(p) & (p > 0)]
    if len(p) < 3:
        return None
    r = np.diff(np.log(p))
    v = float(r.std(ddof=1)) * math.sqrt(60.0) * 100.0
    return v if math.isfinite(v) else None


def reference_run(monkeypatch: pytest.MonkeyPatch, *args: Any, **kwargs: Any) -> list:
    with monkeypatch.context() as m:
        m.setattr(liqmap, "Estimator", ReferenceEstimator)
        m.setattr(liqmap, "fuel_row", reference_fuel_row)
        m.setattr(liqmap, "fuel_rows", reference_fuel_rows)
        m.setattr(liqmap, "hourly_vols_pct", lambda p, n: [reference_vol(p, t, n) for t in range(len(p))])
        return list(liqmap.estimate_base(*args, **kwargs))


CONFIGS = {
    "default": AnalyticsConfig(),
    "one-tier, no turnover": dataclasses.replace(
        AnalyticsConfig(), liqmap_leverage_tiers=(10.0,), liqmap_leverage_weights=(1.0,), liqmap_turnover_per_day=0.0,
        liqmap_initial_entry_spread=0.0),
    "whole-bucket crossing (before ADR 034)": dataclasses.replace(AnalyticsConfig(), liqmap_partial_crossing=False),
    "no initial margin gap, turnover 1/day (before ADR 048)": dataclasses.replace(
        AnalyticsConfig(), liqmap_initial_margin_gap=0.0, liqmap_turnover_per_day=1.0),
    "calibration relative to the venue's ratio (before ADR 041)": dataclasses.replace(
        AnalyticsConfig(), liqmap_calibration_keep_uncrossed=False),
    "calibration at half rate, per-venue mix": dataclasses.replace(
        AnalyticsConfig(), liqmap_calibration_rate=0.5, liqmap_every_minutes=7, liqmap_cluster_multiple=1.5,
        liqmap_venue_leverage_weights=(("okx", (1.0,) * 12),)),
}


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_vectorized_step_equals_the_reference_bit_for_bit(monkeypatch, name, seed):
    cfg = dataclasses.replace(CONFIGS[name], liqmap_warmup_minutes=120)
    bb = base_bars_from_columns("BTC", synth_columns("BTC", 900, seed), cfg)
    minutes = bb.panel.minutes
    kw = {"settled_us": int(minutes[600])}
    changed: list[bool] = []  # close_fraction's "the stored numbers changed" (a book closed whole / renormalized)
    close_fraction = liqmap.VenueBook.close_fraction

    def counted(book: liqmap.VenueBook, frac: float) -> bool:
        changed.append(close_fraction(book, frac))
        return changed[-1]

    monkeypatch.setattr(liqmap.VenueBook, "close_fraction", counted)
    # every partial crossing's share of its bucket, the reference's then this run's (sides in another order)
    partial: list[float] = []
    partial_fraction = liqmap.partial_fraction

    def logged(*args: Any) -> float:
        partial.append(partial_fraction(*args))
        return partial[-1]

    monkeypatch.setattr(liqmap, "partial_fraction", logged)
    want = reference_run(monkeypatch, bb, cfg, int(minutes[200]), **kw)
    assert any(changed)
    got = list(liqmap.estimate_base(bb, cfg, int(minutes[200]), **kw))
    tags = {tag for tag, _ in want}
    assert tags == {liqmap.LEVELS_TAG, liqmap.FUEL_TAG, liqmap.STATE_TAG}
    assert len(got) == len(want)
    for (ta, a), (tb, b) in zip(got, want, strict=True):
        assert ta == tb and a == b  # every float equal (the state's books as float64 bytes)
    # the case is not trivial: books crossed and calibrated, fuel found clusters, a book was renormalized
    fuel = [r for t, r in want if t == liqmap.FUEL_TAG]
    assert any(r["long_cluster_usd"] is not None for r in fuel) and any(r["short_cluster_usd"] is not None for r in fuel)
    state = [r for t, r in want if t == liqmap.STATE_TAG]
    assert len(state) == 4
    if cfg.liqmap_calibration_rate > 0 and len(cfg.liqmap_leverage_tiers) > 1:
        assert any(r["em_usd"] and sum(r["em_usd"]) > 0 for r in state)
    # partial crossings took part of a bucket (0 < share < 1), in both runs alike (one 10x tier from
    # the first price: its levels 9.5 % away, not always reached)
    if not cfg.liqmap_partial_crossing:
        assert not partial
    elif len(cfg.liqmap_leverage_tiers) > 1:
        assert any(0.0 < f < 1.0 for f in partial)
    assert sorted(partial[: len(partial) // 2]) == sorted(partial[len(partial) // 2:])


def test_continued_from_a_stored_state_the_vectorized_step_equals_the_reference(monkeypatch):
    cfg = dataclasses.replace(AnalyticsConfig(), liqmap_warmup_minutes=60)
    bb = base_bars_from_columns("ETH", synth_columns("ETH", 400, 7), cfg)
    m = bb.panel.minutes
    state = [r for t, r in liqmap.estimate_base(bb, cfg, None, settled_us=int(m[250])) if t == liqmap.STATE_TAG]
    for fuel, venues in ((True, True), (False, False)):  # the job's and the scorer's calls
        kw = {"state": state, "data_from_us": int(m[240]), "fuel": fuel, "venues": venues}
        got = list(liqmap.estimate_base(bb, cfg, int(m[300]), **kw))
        assert got and got == reference_run(monkeypatch, bb, cfg, int(m[300]), **kw)


def test_fuel_and_volatility_equal_the_reference_on_random_books():
    rng = np.random.default_rng(5)
    cfg = AnalyticsConfig()
    grid = liqmap.Grid.around(100.0, cfg)
    for _ in range(300):
        book = np.where(rng.random((2, grid.nb)) < 0.3, rng.gamma(0.5, 10.0, (2, grid.nb)), 0.0)
        # prices anywhere, and exactly on bucket edges and mids (dist 0 on both sides)
        price = float(rng.choice([100.0 * math.exp(rng.normal(0, 0.02)), grid.lows[350], grid.mids[351]]))
        vol = float(rng.choice([0.0, 0.7]))
        assert liqmap.fuel_row("X", 0, book, grid, price, vol, cfg) == reference_fuel_row(
            "X", 0, book, grid, price, vol, cfg)
    price = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, 500)))
    price[[3, 70, 71, 200]] = np.nan
    price[[150, 400]] = 0.0
    price[300:302] = 55.0  # flat: a zero return
    assert liqmap.hourly_vols_pct(price, 60) == [reference_vol(price, t, 60) for t in range(len(price))]


@pytest.mark.heavy
def test_vectorized_step_equals_the_reference_on_a_simulator_run(monkeypatch):
    """Preset A, seed 1 (a tuning seed), the simulator's low leverage mix: every base's rows, with
    the estimator's and the fixed-tier baseline's config (~1 min for the simulation)."""
    from pipelines.transforms.liqmap_score import baseline_config, simulate
    from pipelines.transforms.panel import columns_from_rows

    out = simulate("A", 1, AnalyticsConfig(), "low")
    by_base: dict[str, list[dict]] = {}
    for r in out["bars_1m"]:
        by_base.setdefault(r["base"], []).append(r)
    for cfg in (AnalyticsConfig(), baseline_config(AnalyticsConfig())):
        for base, rows in sorted(by_base.items()):
            bb = base_bars_from_columns(base, columns_from_rows(rows), cfg)
            kw = {"settled_us": int(bb.panel.minutes[len(bb.panel.minutes) // 2])}
            got = list(liqmap.estimate_base(bb, cfg, None, **kw))
            assert got and got == reference_run(monkeypatch, bb, cfg, None, **kw)
