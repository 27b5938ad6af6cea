"""The liquidation-map estimator's arithmetic on small hand-computed cases (ADR 015)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import subprocess
import sys

import numpy as np
import pytest

from pipelines.transforms.config import AnalyticsConfig
from pipelines.transforms.liqmap import (
    FUEL_TAG,
    LEVELS_TAG,
    STATE_TAG,
    Estimator,
    Grid,
    MinuteInputs,
    VenueBook,
    estimate_base,
    fuel_row,
    liquidation_distance,
)
from pipelines.transforms.panel import base_bars_from_columns, columns_from_rows

ONE_TIER = dataclasses.replace(
    AnalyticsConfig(), liqmap_leverage_tiers=(10.0,), liqmap_leverage_weights=(1.0,), liqmap_turnover_per_day=0.0,
    liqmap_calibration_rate=0.0, liqmap_mmr=0.005, liqmap_bucket_bp=20.0, liqmap_initial_entry_spread=0.0)


def _bucket_of(grid: Grid, price: float) -> int:
    """The bucket whose [low, high) holds ``price``, found by scanning edges (not by the grid's formula)."""
    lows = grid.low(np.arange(grid.nb + 1))
    return int(np.flatnonzero(lows <= price)[-1])


def _inputs(n: int, price, vwap, low, high, buy, sell, oi, long_liq=None, short_liq=None) -> MinuteInputs:
    def arr(v):
        return np.asarray(v, dtype=float)

    z = np.zeros((1, n))
    return MinuteInputs(
        minutes=np.arange(n, dtype=np.int64) * 60_000_000, price=arr(price), vwap=arr(vwap), high=arr(high),
        low=arr(low), taker_buy_usd=arr(buy), taker_sell_usd=arr(sell), venues=[("bybit", "BTCUSDT")],
        oi_base=arr([oi]), long_liq_usd=z if long_liq is None else arr([long_liq]),
        short_liq_usd=z if short_liq is None else arr([short_liq]))


def test_liquidation_distance_by_hand():
    # 10x: 1/10 - 0.005 = 0.095; 100x: 1/100 - 0.005 = 0.005 < 1/200 = 0.005 -> 0.005; 150x: floor 1/300
    assert liquidation_distance(np.array([10.0, 100.0, 150.0]), 0.005) == pytest.approx([0.095, 0.005, 1 / 300])


def test_one_oi_step_opens_at_vwap_split_by_taker_imbalance():
    # minute 0: first OI 100 BTC at price 100 -> 50 long (liq 90.5) / 50 short (liq 109.5)
    # minute 1: OI +10 at VWAP 102, taker buy 300 / sell 100 -> long share 0.5 + 0.5/2 = 0.75:
    #           7.5 long liquidated at 102 * 0.905 = 92.31, 2.5 short at 102 * 1.095 = 111.69
    inp = _inputs(2, price=[100, 102], vwap=[100, 102], low=[100, 101.5], high=[100, 102.5], buy=[0, 300],
                  sell=[0, 100], oi=[100, 110])
    est = Estimator.create(inp, 0, ONE_TIER)
    est.step(inp, 0)
    est.step(inp, 1)
    book = est.books[("bybit", "BTCUSDT")].book()
    g = est.grid
    assert book[0, _bucket_of(g, 90.5)] == pytest.approx(50)
    assert book[1, _bucket_of(g, 109.5)] == pytest.approx(50)
    assert book[0, _bucket_of(g, 92.31)] == pytest.approx(7.5)
    assert book[1, _bucket_of(g, 111.69)] == pytest.approx(2.5)
    assert book.sum() == pytest.approx(110)


def test_crossing_removes_exposure_and_oi_drop_closes_the_rest_pro_rata():
    # as above, then minute 2: low 92.0 crosses the longs at 92.31 (7.5 BTC) but not those at 90.5;
    # OI falls 110 -> 100 with 2.5 BTC (2.5 * 95 USD) of realized long liquidations at price 95:
    # closed = 10 - 2.5 = 7.5 of the 102.5 BTC left -> every bucket x (1 - 7.5 / 102.5)
    inp = _inputs(3, price=[100, 102, 95], vwap=[100, 102, 95], low=[100, 101.5, 92.0], high=[100, 102.5, 102],
                  buy=[0, 300, 0], sell=[0, 100, 0], oi=[100, 110, 100], long_liq=[0, 0, 2.5 * 95])
    est = Estimator.create(inp, 0, ONE_TIER)
    for t in range(3):
        est.step(inp, t)
    book = est.books[("bybit", "BTCUSDT")].book()
    g = est.grid
    keep = 1 - 7.5 / 102.5
    assert book[0, _bucket_of(g, 92.31)] == 0.0
    assert book[0, _bucket_of(g, 90.5)] == pytest.approx(50 * keep)
    assert book[1, _bucket_of(g, 109.5)] == pytest.approx(50 * keep)
    assert book[1, _bucket_of(g, 111.69)] == pytest.approx(2.5 * keep)
    assert book.sum() == pytest.approx(95.0)


def test_crossing_the_short_side_and_a_miss():
    g = Grid.around(100.0, ONE_TIER)
    b = VenueBook(g, np.array([10.0]), np.array([1.0]), 0.005)
    b.open(4.0, 100.0, 0.25)  # 1 long liq 90.5, 3 short liq 109.5
    removed = b.cross(low=91.0, high=109.0)  # neither bucket reached
    assert removed.sum() == 0 and b.total_base() == pytest.approx(4.0)
    removed = b.cross(low=91.0, high=109.6)  # the short bucket reached
    assert removed[1, 0] == pytest.approx(3.0) and removed[0, 0] == 0.0
    assert b.total_base() == pytest.approx(1.0)


def test_partial_crossing_takes_the_part_of_the_bucket_the_price_reached():
    # ADR 034. 1 BTC long at 100 (10x: level 90.5) and 3 BTC short (level 109.5); L, S = the lows of
    # their buckets, a price at p(x) = exp((lo + b + x) w) lies x of the bucket's width into bucket b
    g = Grid.around(100.0, ONE_TIER)
    bl, bs = _bucket_of(g, 90.5), _bucket_of(g, 109.5)

    def at(b: int, x: float) -> float:
        return math.exp((g.lo + b + x) * g.w)

    assert g.position1(at(bl, 0.25)) == (bl, pytest.approx(0.25))
    b = VenueBook(g, np.array([10.0]), np.array([1.0]), 0.005)
    b.open(4.0, 100.0, 0.25)
    assert (b.top_long, b.edge_long, b.bottom_short, b.edge_short) == (bl, bl + 1.0, bs, float(bs))
    # a low a quarter into the long bucket: its levels spread evenly, the 3/4 above the low go
    removed = b.cross(low=at(bl, 0.25), high=100.0, partial=True)
    assert removed[0, 0] == pytest.approx(0.75) and b.book()[0, bl] == pytest.approx(0.25)
    assert b.edge_long == pytest.approx(bl + 0.25) and b.top_long == bl
    # a low above that edge (the levels there are gone already): nothing
    assert b.cross(low=at(bl, 0.5), high=100.0, partial=True).sum() == 0.0
    # a low at 0.1: the 0.25 left lie in [0, 0.25) of the bucket; (0.25 - 0.1) / 0.25 = 0.6 of them go
    removed = b.cross(low=at(bl, 0.1), high=100.0, partial=True)
    assert removed[0, 0] == pytest.approx(0.15) and b.book()[0, bl] == pytest.approx(0.1)
    # 1 BTC more at 100 lands in the same (frontier) bucket: taken as lying in its uncrossed part,
    # [0, 0.1): a low at 0.05 takes half of the 1.1 BTC
    b.open(1.0, 100.0, 1.0)
    assert b.edge_long == pytest.approx(bl + 0.1)
    removed = b.cross(low=at(bl, 0.05), high=100.0, partial=True)
    assert removed[0, 0] == pytest.approx(0.55) and b.book()[0, bl] == pytest.approx(0.55)
    # shorts: a high 0.4 into the bucket takes 0.4 of the 3 BTC; a high at 0.3 nothing; one at 0.7 takes
    # (0.7 - 0.4) / (1 - 0.4) = 1/2 of the 1.8 left
    removed = b.cross(low=100.0, high=at(bs, 0.4), partial=True)
    assert removed[1, 0] == pytest.approx(1.2) and b.edge_short == pytest.approx(bs + 0.4) and b.bottom_short == bs
    assert b.cross(low=100.0, high=at(bs, 0.3), partial=True).sum() == 0.0
    removed = b.cross(low=100.0, high=at(bs, 0.7), partial=True)
    assert removed[1, 0] == pytest.approx(0.9) and b.book()[1, bs] == pytest.approx(0.9)
    # a high in the next bucket up: this one goes whole, and 0.2 of the next (empty: nothing more)
    removed = b.cross(low=100.0, high=at(bs + 1, 0.2), partial=True)
    assert removed[1, 0] == pytest.approx(0.9) and b.book()[1].sum() == 0.0
    assert b.edge_short == pytest.approx(bs + 1.2) and b.bottom_short == bs + 1
    # new levels above the frontier bucket: the frontier moves out to whole buckets again, and a low
    # at 0.5 of the old bucket takes the new bucket whole and half of the old one (its levels now
    # taken as spread over it all: the partial state of a bucket behind the frontier is not kept)
    b.open(1.0, at(bl + 1, 0.5) / 0.905, 1.0)  # level in bucket bl + 1
    assert b.top_long == bl + 1 and b.edge_long == bl + 2.0
    removed = b.cross(low=at(bl, 0.5), high=100.0, partial=True)
    assert removed[0, 0] == pytest.approx(1.0 + 0.55 * 0.5)
    # whole buckets (partial False, as before ADR 034): the low's bucket goes whole
    removed = b.cross(low=at(bl, 0.25), high=100.0)
    assert removed[0, 0] == pytest.approx(0.275) and b.book()[0].sum() == 0.0 and b.edge_long == float(bl)


def test_partial_crossing_in_the_minute_step_and_its_state():
    # the step crosses partially by default; the estimator's state carries the edges (migration 0022)
    # and a continued estimator crosses the frontier bucket as the unbroken one would
    g = Grid.around(100.0, ONE_TIER)
    bl = _bucket_of(g, 90.5)
    low = math.exp((g.lo + bl + 0.6) * g.w)
    inp = _inputs(3, price=[100, 95, 95], vwap=[100, 95, 95], low=[100, low, math.exp((g.lo + bl + 0.3) * g.w)],
                  high=[100, 96, 96], buy=[0, 0, 0], sell=[0, 0, 0], oi=[100, 100, 100])
    est = Estimator.create(inp, 0, ONE_TIER)
    est.step(inp, 0)
    est.step(inp, 1)
    assert est.books[("bybit", "BTCUSDT")].book()[0, bl] == pytest.approx(50 * 0.6)
    rows = est.state_rows("BTC")
    assert rows[0]["edge_long"] == pytest.approx(bl + 0.6)
    cont = Estimator.from_state(rows, ONE_TIER)
    for e in (est, cont):
        e.step(inp, 2)  # (0.6 - 0.3) / 0.6: half of the 30 BTC left
        assert e.books[("bybit", "BTCUSDT")].book()[0, bl] == pytest.approx(15.0)
    assert cont.state_rows("BTC") == est.state_rows("BTC")
    # a state from before migration 0022 (no edges): the frontiers from its books, whole buckets
    old = [{k: (None if k in ("edge_long", "edge_short") else v) for k, v in r.items()} for r in rows]
    b = Estimator.from_state(old, ONE_TIER).books[("bybit", "BTCUSDT")]
    assert (b.top_long, b.edge_long) == (bl, bl + 1.0)


def test_calibration_relative_to_the_venue_ratio_before_adr_041():
    # the rule before ADR 041 (liqmap_calibration_keep_uncrossed False), kept reachable.
    # tiers 10x / 100x at 1/2 each, 1 BTC long per tier (levels 90.5 and 99.5).
    g = Grid.around(100.0, ONE_TIER)
    b = VenueBook(g, np.array([10.0, 100.0]), np.array([0.5, 0.5]), 0.005)
    b.open(2.0, 100.0, 1.0)
    # before the venue's first realized liquidation a crossing is no evidence (it may publish none):
    # the removed USD count in the scale, the EM sums stay 0, the mix does not move
    b.calibrate(np.array([0.0, 30.0]), 0.0, rate=1.0, keep_uncrossed=False)
    assert (b.seen_removed, b.seen_realized) == (30.0, 0.0) and b.em_exposure.tolist() == [0.0, 0.0]
    assert b.weights.tolist() == [0.5, 0.5]
    # liquidations where the map removed nothing: no tier to attribute them to, nothing changes
    b.calibrate(np.array([0.0, 0.0]), 40.0, rate=1.0, keep_uncrossed=False)
    assert (b.seen_removed, b.seen_realized) == (30.0, 0.0) and b.weights.tolist() == [0.5, 0.5]
    # 1st: 100x removes 50 USD, 120 realized: c = 120 / 80 = 1.5; exposure (0, 50 / 0.5) = (0, 100),
    # attributed (0, 120): target 100x = 120 / (1.5 x 100) = 0.8, 10x (never crossed) keeps 0.5
    # -> (0.5, 0.8) / 1.3
    b.calibrate(np.array([0.0, 50.0]), 120.0, rate=1.0, keep_uncrossed=False)
    assert b.em_exposure.tolist() == [0.0, 100.0] and b.em_usd.tolist() == [0.0, 120.0]
    assert b.weights == pytest.approx([0.5 / 1.3, 0.8 / 1.3])
    # the tier books follow the weights: 1 BTC x (w_new / 0.5)
    assert b.book()[0, _bucket_of(g, 90.5)] == pytest.approx(1 / 1.3)
    assert b.book()[0, _bucket_of(g, 99.5)] == pytest.approx(1.6 / 1.3)
    # 2nd: both tiers remove 40 USD, 40 realized: c = 160 / 160 = 1; exposure += 40 / w, attributed
    # += 40 x (1/2, 1/2): 10x 20 / (1 x 40 x 1.3 / 0.5) = 0.1923, 100x 140 / (1 x (100 + 40 x 1.3 /
    # 0.8)) = 140 / 165 = 0.8485; normalized; rate 1/2 moves half way there
    w0 = b.weights.copy()
    b.calibrate(np.array([40.0, 40.0]), 40.0, rate=0.5, keep_uncrossed=False)
    t = np.array([20 / (40 * 1.3 / 0.5), 140 / (100 + 40 * 1.3 / 0.8)])
    assert b.weights == pytest.approx(w0 + 0.5 * (t / t.sum() - w0))


def test_calibration_tiers_never_crossed_keep_their_share():
    # ADR 041, the same steps as above. tiers 10x / 100x at 1/2 each, 1 BTC long per tier.
    g = Grid.around(100.0, ONE_TIER)
    b = VenueBook(g, np.array([10.0, 100.0]), np.array([0.5, 0.5]), 0.005)
    b.open(2.0, 100.0, 1.0)
    b.calibrate(np.array([0.0, 30.0]), 0.0, rate=1.0, keep_uncrossed=True)  # before any liquidation
    b.calibrate(np.array([0.0, 0.0]), 40.0, rate=1.0, keep_uncrossed=True)  # nothing removed
    assert b.weights.tolist() == [0.5, 0.5]
    # 1st evidence: 100x removes 50 USD, 120 realized. Only 100x was crossed: its rate 120 / 100 is
    # the only one, so it keeps the crossed tiers' share (1/2) and 10x, never crossed, its 1/2.
    # (The old rule: c = 120 / 80 counts the 30 USD removed before the evidence, 100x -> 0.8, and
    # the 10x tier is renormalized down to 0.385 though nothing was learnt about it.)
    b.calibrate(np.array([0.0, 50.0]), 120.0, rate=1.0, keep_uncrossed=True)
    assert b.em_exposure.tolist() == [0.0, 100.0] and b.em_usd.tolist() == [0.0, 120.0]
    assert b.weights.tolist() == [0.5, 0.5]
    # the same evidence 5 times more: still nothing about 10x (the old rule shrank it every time)
    for _ in range(5):
        b.calibrate(np.array([0.0, 50.0]), 120.0, rate=1.0, keep_uncrossed=True)
    assert b.weights.tolist() == [0.5, 0.5]
    assert b.em_exposure.tolist() == [0.0, 600.0] and b.em_usd.tolist() == [0.0, 720.0]
    # both tiers remove 40 USD, 40 realized: exposure (80, 680), attributed (20, 740); rates
    # 20 / 80 = 0.25 and 740 / 680 = 1.0882 share the crossed tiers' 1: (0.18681, 0.81319); rate 1/2
    # moves half way: (0.3434, 0.6566); the tier books follow (1 BTC x w / 0.5)
    b.calibrate(np.array([40.0, 40.0]), 40.0, rate=0.5, keep_uncrossed=True)
    t = np.array([0.25, 740 / 680]) / (0.25 + 740 / 680)
    assert t == pytest.approx([0.18681, 0.81319], abs=1e-5)
    assert b.weights == pytest.approx(0.5 + 0.5 * (t - 0.5))
    assert b.book()[0, _bucket_of(g, 90.5)] == pytest.approx(2 * (0.5 + 0.5 * (t[0] - 0.5)))


def test_calibration_crossed_tiers_share_what_they_hold():
    # three tiers 5x / 20x / 100x at 0.5 / 0.3 / 0.2; only 20x and 100x are ever crossed. The
    # crossed pair holds 0.5 and keeps it; within it the rates decide: 20x removes 30 USD (per unit
    # weight 100), 100x 20 USD (100), 10 USD realized attributed 6 / 4: rates 0.06 / 0.04 -> 0.3 /
    # 0.2 (the weights were right); a 2nd crossing where only 100x removes 20 USD and nothing is
    # realized: 100x exposure 200, rate 4 / 200 = 0.02 -> (0.06, 0.02) x 0.5 / 0.08 = (0.375, 0.125)
    g = Grid.around(100.0, ONE_TIER)
    b = VenueBook(g, np.array([5.0, 20.0, 100.0]), np.array([0.5, 0.3, 0.2]), 0.005)
    b.calibrate(np.array([0.0, 30.0, 20.0]), 10.0, rate=1.0, keep_uncrossed=True)
    assert b.weights == pytest.approx([0.5, 0.3, 0.2])
    b.calibrate(np.array([0.0, 0.0, 20.0]), 0.0, rate=1.0, keep_uncrossed=True)
    assert b.weights == pytest.approx([0.5, 0.375, 0.125])
    # the old rule on the same crossings: c = 10 / 70, 5x (never crossed) no longer 0.5
    o = VenueBook(g, np.array([5.0, 20.0, 100.0]), np.array([0.5, 0.3, 0.2]), 0.005)
    o.calibrate(np.array([0.0, 30.0, 20.0]), 10.0, rate=1.0, keep_uncrossed=False)
    o.calibrate(np.array([0.0, 0.0, 20.0]), 0.0, rate=1.0, keep_uncrossed=False)
    assert o.weights[0] != pytest.approx(0.5, abs=0.01)


def test_positions_from_before_the_data_are_spread_and_crossed_levels_dropped():
    # one 10x tier (d = 0.095), 2 BTC at price 100, entries spread 5 %: the entries 2.5 std above
    # (100 e^0.125 = 113.3) put long levels at 102.5 > 100, already crossed: dropped; the long side
    # still holds 1 BTC (its OI share); the short side keeps entries whose level 1.095 x entry > 100
    g = Grid.around(100.0, ONE_TIER)
    b = VenueBook(g, np.array([10.0]), np.array([1.0]), 0.005)
    b.open_spread(2.0, 100.0, 0.05)
    book = b.book()
    pb = _bucket_of(g, 100.0)
    assert book[0].sum() == pytest.approx(1.0) and book[1].sum() == pytest.approx(1.0)
    assert book[0, pb:].sum() == 0.0 and book[1, : pb + 1].sum() == 0.0
    assert book[0, _bucket_of(g, 100 * math.exp(0.125) * 0.905)] == 0.0
    # the spread's middle entry (100) sits at 90.5 and is the largest long bucket
    assert int(np.argmax(book[0])) == _bucket_of(g, 90.5)
    assert b.top_long == int(np.flatnonzero(book[0])[-1]) and b.bottom_short == int(np.flatnonzero(book[1])[0])



def test_positions_from_before_the_data_fill_every_bucket_of_their_spread():
    # spread 1 % on 20 bp buckets: 5 x 0.01 / 0.002 + 1 = 26 entry points, e^(0.01 x 0.2) apart in
    # price = one bucket, so the 10x levels (d = 0.095 > 2.5 std: none crossed) fill 26 consecutive
    # buckets, none empty between (21 points would be 0.0025 apart and leave gaps); the middle one
    # holds the largest share, exp(0) / sum(exp(-z^2 / 2)) of the side's 1 BTC
    g = Grid.around(100.0, ONE_TIER)
    b = VenueBook(g, np.array([10.0]), np.array([1.0]), 0.005)
    b.open_spread(2.0, 100.0, 0.01)
    longs = np.flatnonzero(b.book()[0])
    assert len(longs) == 26 and longs[-1] - longs[0] == 25
    z = np.linspace(-2.5, 2.5, 26)
    assert b.book()[0].max() == pytest.approx(1.0 * np.exp(-0.5 * z * z).max() / np.exp(-0.5 * z * z).sum())
    assert b.book()[0].sum() == pytest.approx(1.0) and b.book()[1].sum() == pytest.approx(1.0)

def test_positions_from_before_the_data_keep_a_margin_gap():
    # one 100x tier (d = max(0.01 - 0.005, 1/200) = 0.005), 2 BTC at price 100, entries spread 1 %:
    # 26 entries 100 e^(0.01 z), z = -2.5, -2.3, ..., 2.5; long levels 99.5 e^(0.01 z). Gap 2 %: a
    # long survives only below the bucket of 98 (ln(98) / 0.002 = 2292.5 -> bucket 2292): z = -1.5
    # (98.02, ln / 0.002 = 2292.6) shares 98's bucket and is gone, z = -1.7 (97.82, 2291.6) survives:
    # z in {-2.5, -2.3, -2.1, -1.9, -1.7}, weights e^(-z^2/2) = .04394 .07100 .11025 .16447 .23575
    # (sum .62541), scaled to the side's 1 BTC: 97.82 holds .23575 / .62541 = 0.37695 BTC.
    # Shorts mirrored (100.5 e^(0.01 z) above 102's bucket: z >= 1.7, 102.22). Gap 0 (the old rule)
    # keeps every long level below 100, 98.02 included.
    g = Grid.around(100.0, ONE_TIER)
    b = VenueBook(g, np.array([100.0]), np.array([1.0]), 0.005)
    b.open_spread(2.0, 100.0, 0.01, 0.02)
    book = b.book()
    assert book[0].sum() == pytest.approx(1.0) and book[1].sum() == pytest.approx(1.0)
    assert book[0, _bucket_of(g, 98.0):].sum() == 0.0 and book[1, : _bucket_of(g, 102.0) + 1].sum() == 0.0
    assert len(np.flatnonzero(book[0])) == 5 and len(np.flatnonzero(book[1])) == 5
    assert book[0, _bucket_of(g, 99.5 * math.exp(-0.017))] == pytest.approx(0.37695, abs=1e-5)
    assert book[1, _bucket_of(g, 100.5 * math.exp(0.017))] == pytest.approx(0.37695, abs=1e-5)
    assert book[0, _bucket_of(g, 99.5 * math.exp(-0.025))] == pytest.approx(0.04394 / 0.62541, abs=1e-5)
    old = VenueBook(g, np.array([100.0]), np.array([1.0]), 0.005)
    old.open_spread(2.0, 100.0, 0.01)
    assert old.book()[0, _bucket_of(g, 99.5 * math.exp(-0.015))] > 0.0


def test_the_default_first_book_keeps_levels_near_the_price():
    # ADR 050: the default gap is 0, so a venue's first book drops only the levels the price has
    # crossed (longs at or above the price's bucket). One 100x tier (d = 0.005), 2 BTC at 100, spread
    # 1 %: long levels 99.5 e^(0.01 z), z = -2.5, -2.3, ..., 2.5, in buckets floor(ln(99.5) / 0.002
    # + 5 z) = 2300.08 + 5 z; the price's bucket is floor(ln(100) / 0.002) = 2302, so z <= 0.3
    # survive (15 levels; z = 0.5, 99.999, lies in 2302). Weights e^(-z^2/2) for z = -2.5 .. 0.3:
    # .04394 .07100 .11025 .16447 .23575 .32465 .42956 .54607 .66698 .78270 .88250 .95600 .99501
    # .99501 .95600, sum 8.15990; the nearest level, 99.799 (0.2 % below the price), holds
    # .95600 / 8.15990 = 0.11716 of the side's 1 BTC. ADR 048's 3 % gap kept nothing above 97.
    cfg = AnalyticsConfig()
    g = Grid.around(100.0, ONE_TIER)
    b = VenueBook(g, np.array([100.0]), np.array([1.0]), 0.005)
    b.open_spread(2.0, 100.0, 0.01, cfg.liqmap_initial_margin_gap)
    book = b.book()
    assert len(np.flatnonzero(book[0])) == 15 and len(np.flatnonzero(book[1])) == 15
    assert book[0].sum() == pytest.approx(1.0) and book[0, _bucket_of(g, 100.0):].sum() == 0.0
    assert book[0, _bucket_of(g, 99.5 * math.exp(0.003))] == pytest.approx(0.11716, abs=1e-5)
    assert book[0, _bucket_of(g, 99.5 * math.exp(-0.025))] == pytest.approx(0.04394 / 8.15990, abs=1e-5)
    # shorts mirrored: 100.5 e^(0.01 z) above the price's bucket, the nearest (z = -0.3) at 100.201
    assert book[1, _bucket_of(g, 100.5 * math.exp(-0.003))] == pytest.approx(0.11716, abs=1e-5)


def test_fuel_by_hand():
    # price 100; longs: 10 BTC liquidated near 99.5 (within 1 %), 20 near 97 (within 5 % only);
    # shorts: 5 near 101.5 (within 2 %)
    cfg = dataclasses.replace(ONE_TIER, liqmap_cluster_multiple=3.0)
    g = Grid.around(100.0, cfg)
    book = np.zeros((2, g.nb))
    mids = g.mid()
    for side, px, qty in ((0, 99.5, 10.0), (0, 97.0, 20.0), (1, 101.5, 5.0)):
        book[side, _bucket_of(g, px)] += qty
    row = fuel_row("BTC", None, book, g, 100.0, 0.5, cfg)
    b995, b97, b1015 = (_bucket_of(g, p) for p in (99.5, 97.0, 101.5))
    assert row["long_usd_1pct"] == pytest.approx(10 * mids[b995])
    assert row["long_usd_2pct"] == pytest.approx(10 * mids[b995])
    assert row["long_usd_5pct"] == pytest.approx(10 * mids[b995] + 20 * mids[b97])
    assert row["short_usd_1pct"] == 0.0 and row["short_usd_2pct"] == pytest.approx(5 * mids[b1015])
    # nearest long cluster: both long buckets are > 3x the mean over the 10 % range: the 99.5 one
    assert row["long_cluster_price"] == pytest.approx(mids[b995])
    d = (1 - mids[b995] / 100) * 100
    assert row["long_cluster_distance_pct"] == pytest.approx(d)
    assert row["long_cluster_distance_vol"] == pytest.approx(d / 0.5)


def _bar_rows(n: int, seed: int = 3) -> list[dict]:
    rng = np.random.default_rng(seed)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    price = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    oi = 1000 + np.cumsum(rng.normal(0, 5, n))
    rows = []
    for i in range(n):
        p = float(price[i])
        rows.append({
            "base": "BTC", "exchange": "bybit", "symbol": "BTCUSDT", "kind": "perpetual",
            "minute_ts": t0 + dt.timedelta(minutes=i), "close": p, "high": p * 1.003, "low": p * 0.997,
            "mark_price_last": p, "oi_last_usd": float(oi[i]) * p, "oi_last": float(oi[i]), "funding_rate_last": 1e-4,
            "volume_base": 10.0, "volume_usd": 10 * p, "taker_buy_usd": 6 * p, "taker_sell_usd": 4 * p,
            "long_liq_usd": 50.0 if i % 97 == 0 else 0.0, "short_liq_usd": 0.0, "max_liq_usd": 50.0,
            "trade_count": 10, "long_liq_count": 0, "short_liq_count": 0,
        })
    return rows


def _minute_us(row: dict) -> int:
    return int(row["minute_ts"].timestamp()) * 1_000_000


def test_a_run_continued_from_its_stored_state_equals_an_unbroken_run():
    # a streaming cycle stores the books after its settled minute; the next one reads only the
    # ffill_max_minutes before the minute after it and steps on: the rows equal one long run's
    cfg = dataclasses.replace(AnalyticsConfig(), liqmap_warmup_minutes=60, liqmap_every_minutes=30, ffill_max_minutes=5)
    rows = _bar_rows(300)
    for r in rows[150:153]:  # a gap of OI: carried across the cut
        r["oi_last"] = r["oi_last_usd"] = None
    rows[160]["long_liq_usd"] = 5e4  # a calibration step after the cut
    full = [r for r in estimate_base(base_bars_from_columns("BTC", columns_from_rows(rows), cfg), cfg, None)]
    settled = _minute_us(rows[151])
    first = list(estimate_base(base_bars_from_columns("BTC", columns_from_rows(rows[:200]), cfg), cfg, None,
                               settled_us=settled))
    state = [r for tag, r in first if tag == STATE_TAG]
    assert state and {r["last_minute_us"] for r in state} == {settled}
    data_from = _minute_us(rows[152 - 5])
    emit = _minute_us(rows[215])  # its hour of volatility (+ carry) lies within the bars read
    rest = list(estimate_base(base_bars_from_columns("BTC", columns_from_rows(rows[152 - 5:]), cfg), cfg, emit,
                              state=state, data_from_us=data_from))
    want = [(tag, r) for tag, r in full if _minute_us({"minute_ts": r.get("minute_ts", r.get("as_of_ts"))}) >= emit]
    assert rest and {tag for tag, _ in rest} == {LEVELS_TAG, FUEL_TAG}
    assert rest == want
    # without the state, the same short window warms up from less history: other rows (the check can fail)
    cold = list(estimate_base(base_bars_from_columns("BTC", columns_from_rows(rows[152 - 5:]), cfg), cfg, emit,
                              data_from_us=data_from))
    assert cold != want
    # a state the bars do not reach back to (data_from after its next minute's carry) is not used
    late = list(estimate_base(base_bars_from_columns("BTC", columns_from_rows(rows[152 - 4:]), cfg), cfg, emit,
                              state=state, data_from_us=_minute_us(rows[152 - 4])))
    assert late != want


def test_the_state_rejects_books_of_another_grid_or_tier_set():
    cfg = dataclasses.replace(AnalyticsConfig(), liqmap_warmup_minutes=60)
    rows = _bar_rows(40)
    out = list(estimate_base(base_bars_from_columns("BTC", columns_from_rows(rows), cfg), cfg, None,
                             settled_us=_minute_us(rows[30])))
    state = [r for tag, r in out if tag == STATE_TAG]
    est = Estimator.from_state(state, cfg)
    assert est is not None and est.last_us == _minute_us(rows[30])
    assert np.array_equal(est.books[("bybit", "BTCUSDT")].store.shape, (2, len(cfg.liqmap_leverage_tiers), est.grid.nb))
    assert Estimator.from_state(state, dataclasses.replace(cfg, liqmap_bucket_bp=10.0)) is None
    assert Estimator.from_state(state, dataclasses.replace(cfg, liqmap_leverage_tiers=(10.0,) * 7)) is None
    assert Estimator.from_state([], cfg) is None
    # the calibration's EM sums travel with the books (migration 0021); states from before have none
    book = est.books[("bybit", "BTCUSDT")]
    book.em_usd[:] = np.arange(len(book.tiers)) * 2.0
    book.em_exposure[:] = np.arange(len(book.tiers)) * 3.0
    back = Estimator.from_state(est.state_rows("BTC"), cfg).books[("bybit", "BTCUSDT")]
    assert back.em_usd.tolist() == book.em_usd.tolist() and back.em_exposure.tolist() == book.em_exposure.tolist()
    old = [{**r, "em_usd": None, "em_exposure": None} for r in est.state_rows("BTC")]
    assert Estimator.from_state(old, cfg).books[("bybit", "BTCUSDT")].em_usd.tolist() == [0.0] * len(book.tiers)


def test_estimator_never_imports_the_simulator():
    code = ("import sys, pipelines.transforms.liqmap, pipelines.transforms.graph; "
            "bad = [m for m in sys.modules if m.startswith('connectors.simulator')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config_from_env_parses_the_leverage_mixes():
    cfg = AnalyticsConfig.from_env({"LIQSTREAM_LIQMAP_LEVERAGE_TIERS": "10,100",
                                    "LIQSTREAM_LIQMAP_LEVERAGE_WEIGHTS": "3,1",
                                    "LIQSTREAM_LIQMAP_VENUE_LEVERAGE_WEIGHTS": "bybit:1,1; okx:0,1"})
    assert cfg.liqmap_leverage_tiers == (10.0, 100.0) and cfg.liqmap_leverage_weights == (3.0, 1.0)
    assert cfg.liqmap_venue_leverage_weights == (("bybit", (1.0, 1.0)), ("okx", (0.0, 1.0)))
    assert math.isclose(sum(cfg.liqmap_leverage_weights), 4.0)


def test_missing_prices_and_oi_neither_crash_nor_drop_the_minutes_that_have_them():
    cfg = dataclasses.replace(AnalyticsConfig(), liqmap_warmup_minutes=60, liqmap_every_minutes=30,
                              ffill_max_minutes=2)
    rows = _bar_rows(120)
    for r in rows[10:20]:  # no OI for 10 minutes (beyond the carry): the book only ages by crossings
        r["oi_last"] = r["oi_last_usd"] = None
    for r in rows[40:50]:  # no trades and no mark: no price (beyond the carry)
        r["close"] = r["high"] = r["low"] = r["mark_price_last"] = None
        r["volume_base"] = r["volume_usd"] = r["taker_buy_usd"] = r["taker_sell_usd"] = 0.0
    bb = base_bars_from_columns("BTC", columns_from_rows(rows), cfg)
    fuel = [r for tag, r in estimate_base(bb, cfg, None) if tag == FUEL_TAG]
    minutes = {int(r["minute_ts"].timestamp()) // 60 - int(rows[0]["minute_ts"].timestamp()) // 60 for r in fuel}
    # every minute with a price has its row; the priceless ones have none (the panel carries the close
    # 2 minutes, then the price 2 more: minutes 40-43 keep one)
    assert minutes == set(range(0, 44)) | set(range(50, 120))
    assert all(r["long_usd_5pct"] >= 0 and math.isfinite(r["short_usd_5pct"]) for r in fuel)
