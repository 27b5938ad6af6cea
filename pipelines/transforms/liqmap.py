"""EstimateLiquidationMap: bars -> ``liquidation_levels`` and ``liquidation_fuel`` (the liquidation map,
estimated from public data only; the model is ADR 015, the definitions docs/analytics.md).

Per base and venue (one perpetual exchange symbol) the estimator keeps a book of open leveraged
exposure (base units) by **liquidation price** on a log-price grid (``liqmap_bucket_bp``), one per
side and leverage tier. Every minute, in this order:

1. **crossing**: exposure whose liquidation price the minute's low (longs) / high (shorts) reached
   (the bucket holding the low/high included, as a venue's liquidation engine would) is removed;
2. **calibration**: the venue's realized liquidated USD of the side and the USD each tier's book
   just removed update an online EM of the leverage mix (:meth:`VenueBook.calibrate`, ADR 026): the
   realized USD is attributed to the crossed tiers, and each tier's rate is what it was attributed
   over what its book removed per unit weight; the tiers ever crossed share what they hold by their
   rates, the tiers never crossed keep their share (ADR 041: liquidations say nothing about them);
   the tier books are rescaled to the new weights;
3. **closing**: an OI drop not explained by the realized liquidations (``-dOI - liq/price``) closes
   that much exposure pro rata over both sides and every bucket (nobody knows whose position closed);
4. **turnover**: ``liqmap_turnover_per_day`` of the book closes and reopens at the minute's VWAP
   (net OI hides gross flow: positions age even when OI is flat);
5. **opening**: an OI rise (plus the turnover) opens at the minute's cross-venue VWAP, split long /
   short by the minute's taker imbalance (``0.5 + liqmap_taker_tilt * (buy - sell) / (buy + sell) / 2``)
   and over the venue's leverage tiers by its current mix; a tier-``L`` long is liquidated at
   ``VWAP * (1 - d(L))``, a short at ``VWAP * (1 + d(L))`` with ``d(L) = max(1/L - mmr, 1/(2L))``.

A venue's first OI value (its positions' entries are unknown) is spread over entries log-normal
around its first price (``liqmap_initial_entry_spread``); the levels the price has crossed or lies
within ``liqmap_initial_margin_gap`` of are dropped (ADR 048: liquidated before, or margin added;
0 by default, ADR 050: nothing in the data says how far the unseen past price went).

**State across cycles, exactly once** (ADR 015). A streaming cycle passes the stored books
(``liquidation_map_state``) and its settled minute: the book steps only the minutes after the stored
one and emits its state after the settled minute (STATE_TAG), which the job commits with the marts.
Without a usable state (first run, backfill, a rewind) it warms up over ``liqmap_warmup_minutes``
before the first emitted minute. A cycle reads ``lookback_minutes()['liquidation_map']`` (the hour of
volatility) back, or further to reach the stored minute's carried prices.

The estimator never imports the simulator (tests/unit/test_liqmap.py enforces it).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import numpy as np

from pipelines.transforms.bars import micros_to_ts
from pipelines.transforms.config import USD_MICROS, AnalyticsConfig
from pipelines.transforms.panel import AnalyticsTransform, BaseBars, BasePanels, SymbolPanel, VenueSeries
from pipelines.transforms.params import resolve

LEVELS_TAG = "liquidation_levels"
FUEL_TAG = "liquidation_fuel"
STATE_TAG = "liquidation_map_state"
SIDES = ("long", "short")
FUEL_PCTS = (1, 2, 5)
ALL = "all"
#: the calibration's smallest tier weight: a tier rescaled to 0 would lose its book (and never learn back)
EM_FLOOR = 1e-4


def liquidation_distance(leverage: np.ndarray, mmr: float) -> np.ndarray:
    """Fractional distance from entry to liquidation price: ``1/L - mmr``, floored at ``1/(2L)``
    (venues lower the maintenance margin of their highest-leverage tiers)."""
    leverage = np.asarray(leverage, dtype=float)
    return np.maximum(1.0 / leverage - mmr, 0.5 / leverage)


@dataclass
class Grid:
    """Log-price buckets: bucket b holds prices in [exp((lo + b) w), exp((lo + b + 1) w))."""

    w: float  # bucket width in log price
    lo: int
    nb: int
    #: bucket lows (nb + 1 edges) and mids, computed once: a minute's fuel and a snapshot's levels
    #: read them, and exp over the grid each time was a good part of the estimator's cost
    lows: np.ndarray = field(init=False, repr=False, compare=False)
    mids: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.lows = np.exp((self.lo + np.arange(self.nb + 1, dtype=float)) * self.w)
        self.mids = np.exp((self.lo + np.arange(self.nb) + 0.5) * self.w)

    @classmethod
    def around(cls, price: float, config: AnalyticsConfig) -> Grid:
        w = config.liqmap_bucket_bp / 10_000.0
        half = int(math.ceil(config.liqmap_grid_half_span / w))
        return cls(w, int(math.floor(math.log(price) / w)) - half, 2 * half + 1)

    def index(self, price: float | np.ndarray) -> np.ndarray:
        """Bucket of each price, clipped to the grid (prices beyond it sit in its edge buckets)."""
        b = np.floor(np.log(price) / self.w).astype(np.int64) - self.lo
        return np.minimum(np.maximum(b, 0), self.nb - 1)  # not np.clip: ~3x its cost on small arrays

    def index1(self, price: float) -> int:
        """:meth:`index` of one price (numpy's log, as :meth:`index`: the same bucket at an edge)."""
        return min(max(int(np.floor(np.log(price) / self.w)) - self.lo, 0), self.nb - 1)

    def position1(self, price: float) -> tuple[int, float]:
        """:meth:`index1` of one price and where in that bucket it lies, as a fraction of the bucket's
        width in log price (0 = its low, towards 1 = its high); below the grid (0, 0.0), above it
        (nb - 1, 1.0): beyond the edge buckets every level of theirs is passed."""
        q = float(np.log(price) / self.w)
        f = math.floor(q)
        b = f - self.lo
        if b < 0:
            return 0, 0.0
        if b > self.nb - 1:
            return self.nb - 1, 1.0
        return b, q - f

    def low(self, b: np.ndarray | int) -> np.ndarray:
        return np.exp((self.lo + np.asarray(b, dtype=float)) * self.w)

    def mid(self) -> np.ndarray:
        return self.mids


def leverage_mix(config: AnalyticsConfig, exchange: str) -> np.ndarray:
    """The venue's prior weights over ``liqmap_leverage_tiers`` (normalized)."""
    w = dict(config.liqmap_venue_leverage_weights).get(exchange, config.liqmap_leverage_weights)
    w = np.asarray(w, dtype=float)
    if w.shape != (len(config.liqmap_leverage_tiers),) or not (w >= 0).all() or w.sum() <= 0:
        raise ValueError(f"leverage weights for {exchange!r} must be {len(config.liqmap_leverage_tiers)} "
                         "non-negative numbers, not all 0")
    return w / w.sum()


@dataclass
class VenueBook:
    """One venue's estimated book: ``store * scale`` = base units by (side, tier, liquidation bucket).

    Pro-rata closing multiplies ``scale`` (O(1)), so a minute costs O(tiers) plus the crossed slice."""

    grid: Grid
    tiers: np.ndarray
    weights: np.ndarray
    mmr: float
    store: np.ndarray = field(init=False)
    scale: float = field(init=False, default=1.0)
    #: USD the map removed at crossings and USD realized there, so far (calibration's scale)
    seen_removed: float = field(init=False, default=0.0)
    seen_realized: float = field(init=False, default=0.0)
    #: the calibration's EM sums per tier (ADR 026): realized USD attributed to the tier, and USD
    #: its book removed per unit weight
    em_usd: np.ndarray = field(init=False)
    em_exposure: np.ndarray = field(init=False)
    dist: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.store = np.zeros((2, len(self.tiers), self.grid.nb))
        self.dist = liquidation_distance(self.tiers, self.mmr)
        self.em_usd = np.zeros(len(self.tiers))
        self.em_exposure = np.zeros(len(self.tiers))
        self._k = np.arange(len(self.tiers))
        self.refresh_frontiers()

    def refresh_frontiers(self) -> None:
        """No long exposure above bucket ``top_long``, no short below ``bottom_short`` (bounds, kept
        by open and cross): a minute whose low/high stays inside them crosses nothing, and most
        minutes do, so the crossing need not sum the book's far side every minute.

        ``edge_long`` / ``edge_short``: the same bounds in grid coordinates (bucket b spans [b, b + 1)),
        within the frontier bucket when a partial crossing (ADR 034) reached into it: no long level
        at or above ``edge_long``, no short level below ``edge_short``; always
        ``top_long = ceil(edge_long) - 1`` and ``bottom_short = floor(edge_short)``."""
        longs, shorts = np.flatnonzero(self.store[0].any(axis=0)), np.flatnonzero(self.store[1].any(axis=0))
        self.set_edges(float(longs[-1] + 1) if len(longs) else 0.0, float(shorts[0]) if len(shorts) else float(self.grid.nb))

    def set_edges(self, edge_long: float, edge_short: float) -> None:
        """The frontiers from their coordinates (:meth:`refresh_frontiers`)."""
        self.edge_long, self.edge_short = edge_long, edge_short
        self.top_long, self.bottom_short = math.ceil(edge_long) - 1, math.floor(edge_short)

    def extend(self, top_long: int, bottom_short: int) -> None:
        """New levels up to bucket ``top_long`` (longs) / down to ``bottom_short`` (shorts): a frontier
        moved out by them bounds whole buckets again; within the frontier bucket new levels are taken
        as lying where its uncrossed part is (the bucket's levels are not tracked within it)."""
        if top_long > self.top_long:
            self.top_long, self.edge_long = top_long, float(top_long + 1)
        if bottom_short < self.bottom_short:
            self.bottom_short, self.edge_short = bottom_short, float(bottom_short)

    def total_base(self) -> float:
        return float(self.store.sum()) * self.scale

    def book(self) -> np.ndarray:
        """(2, nb) base units by side and liquidation bucket, tiers summed."""
        return self.store.sum(axis=1) * self.scale

    def open(self, base_units: float, price: float, long_share: float) -> None:
        """Open ``base_units`` at ``price``: long_share of it long, spread over the tiers by the mix."""
        if not base_units > 0 or not price > 0:
            return
        k = self._k
        liq_long = self.grid.index(price * (1.0 - self.dist))
        liq_short = self.grid.index(price * (1.0 + self.dist))
        self.store[0, k, liq_long] += base_units * long_share * self.weights / self.scale
        self.store[1, k, liq_short] += base_units * (1.0 - long_share) * self.weights / self.scale
        self.extend(int(liq_long.max()), int(liq_short.min()))

    def open_spread(self, base_units: float, price: float, spread: float, gap: float = 0.0) -> None:
        """Open ``base_units`` held from before the data began, 50/50: entries log-normal around
        ``price`` (std ``spread``, within +-2.5 std, one point per bucket width and at least 21),
        each over the tiers by the mix; the levels the price has already crossed (longs at or above
        its bucket, shorts at or below) are gone (liquidated before, or their owners added margin),
        and so are those within ``gap`` of it (ADR 048: longs at or above the bucket of
        ``price * (1 - gap)``, shorts at or below that of ``price * (1 + gap)``); the rest is scaled
        up to the OI."""
        if not spread > 0:
            self.open(base_units, price, 0.5)
            return
        if not base_units > 0 or not price > 0:
            return
        # one entry point per bucket width (at least 21): coarser points leave each tier's levels in
        # clumps a bucket-or-more apart, which the crossings then remove in lumps
        z = np.linspace(-2.5, 2.5, max(21, int(math.ceil(5.0 * spread / self.grid.w)) + 1))
        g = np.exp(-0.5 * z * z)
        entries = price * np.exp(spread * z)[:, None]
        mass = (g / g.sum())[:, None] * self.weights[None, :]  # (entries, tiers)
        k = np.broadcast_to(self._k, mass.shape)
        # survivors: longs below the bucket of price x (1 - gap), shorts above that of price x (1 + gap)
        # (gap 0: the price's bucket, the levels it has crossed)
        pl, ps = self.grid.index1(price * (1.0 - gap)), self.grid.index1(price * (1.0 + gap))
        for side, liq in ((0, self.grid.index(entries * (1.0 - self.dist))),
                          (1, self.grid.index(entries * (1.0 + self.dist)))):
            alive = liq < pl if side == 0 else liq > ps
            m = np.where(alive, mass, 0.0)
            if not m.sum() > 0:
                continue
            np.add.at(self.store[side], (k[alive], liq[alive]), (m * (0.5 * base_units / m.sum() / self.scale))[alive])
            if side == 0:
                self.extend(int(liq[alive].max()), self.bottom_short)
            else:
                self.extend(self.top_long, int(liq[alive].min()))

    def close_fraction(self, frac: float) -> bool:
        """Close ``frac`` of every bucket pro rata (``scale``); True when the stored numbers changed
        (all closed, or renormalized), i.e. when ``store.sum()`` is no longer what it was."""
        frac = min(max(frac, 0.0), 1.0)
        if frac >= 1.0:
            self.store[:] = 0.0
            self.scale = 1.0
            return True
        self.scale *= 1.0 - frac
        if self.scale < 1e-9:  # renormalize before the float runs out of range
            self.store *= self.scale
            self.scale = 1.0
            return True
        return False

    def cross(self, low: float, high: float, partial: bool = False) -> np.ndarray:
        """Remove the exposure whose liquidation price [low, high] reached; (2, tiers) base units removed.

        ``partial`` False: the buckets holding the low / high are removed whole. True (ADR 034): of
        the low's bucket only the part above the low (:func:`partial_fraction`), the rest stays."""
        removed = np.zeros((2, len(self.tiers)))
        if low > 0 and math.isfinite(low):
            if partial:
                b, phi = self.grid.position1(low)
                if b + phi < self.edge_long:
                    frac = partial_fraction(0, b, phi, self.top_long, self.edge_long)
                    above = self.store[0, :, b + 1:].sum(axis=1)
                    part = self.store[0, :, b] * frac
                    removed[0] = (above + part) * self.scale
                    self.store[0, :, b + 1:] = 0.0
                    self.store[0, :, b] *= 1.0 - frac
                    self.set_edges(b + phi, self.edge_short)
            else:
                b = self.grid.index1(low)
                if b <= self.top_long:
                    seg = self.store[0, :, b:]
                    removed[0] = seg.sum(axis=1) * self.scale
                    seg[:] = 0.0
                    self.set_edges(float(b), self.edge_short)
        if high > 0 and math.isfinite(high):
            if partial:
                b, phi = self.grid.position1(high)
                if b + phi > self.edge_short:
                    frac = partial_fraction(1, b, phi, self.bottom_short, self.edge_short)
                    below = self.store[1, :, :b].sum(axis=1)
                    part = self.store[1, :, b] * frac
                    removed[1] = (below + part) * self.scale
                    self.store[1, :, :b] = 0.0
                    self.store[1, :, b] *= 1.0 - frac
                    self.set_edges(self.edge_long, b + phi)
            else:
                b = self.grid.index1(high)
                if b >= self.bottom_short:
                    seg = self.store[1, :, : b + 1]
                    removed[1] = seg.sum(axis=1) * self.scale
                    seg[:] = 0.0
                    self.set_edges(self.edge_long, float(b + 1))
        return removed

    def calibrate(self, removed_usd: np.ndarray, realized_usd: float, rate: float,
                  keep_uncrossed: bool = False) -> None:
        """One side's crossing as evidence on the leverage mix: an online EM (ADR 026).

        ``removed_usd``: (tiers,) USD the map removed at this crossing; ``realized_usd``: the venue's
        liquidated USD of the side in the minute. Model: realized = c x sum_k w_k u_k, with u_k =
        removed_k / w_k the USD tier k's book removes per unit weight and c the share of the map's
        OI that is leveraged (unknown; the map counts all OI). The realized USD is attributed to the
        tiers in proportion to what each removed (``em_usd`` += realized x removed_k / removed) and
        ``em_exposure`` += u_k; the EM estimate of tier k is then ``em_usd_k / (c em_exposure_k)``
        with c = realized / removed over every crossing so far (``seen_*``); a tier never crossed
        keeps its weight. Crossings before the venue's first realized liquidation are not evidence
        (a venue may publish none, or only some: silence is not "nothing was liquidated"). The weights move ``rate`` of the way to that estimate (normalized; 1 = to
        it), floored at ``EM_FLOOR`` (a tier at 0 would lose its book for good), and every tier's book
        is rescaled to its new weight. A crossing that removed nothing is no evidence for any tier.

        ``keep_uncrossed`` (``liqmap_calibration_keep_uncrossed``, default on, ADR 041): instead of
        the estimate relative to c, the crossed tiers' rates ``em_usd_k / em_exposure_k`` are
        normalized among themselves to the share the crossed tiers hold, and a tier never crossed
        keeps its weight (:meth:`_target_keeping_uncrossed`). Without it, c counts the USD removed
        before the first realized liquidation, which the EM sums do not, and every renormalization
        shrinks the uncrossed tiers again (their target is their current weight)."""
        if rate <= 0 or realized_usd < 0:
            return
        est = float(removed_usd.sum())
        if est <= 0:
            return  # liquidations where the map had nothing: no tier to attribute them to
        self.seen_removed += est
        self.seen_realized += realized_usd
        if not self.seen_realized > 0:
            return  # the venue has shown no liquidation yet (it may not publish them): no evidence
        # one errstate for the whole update (entering one costs about as much as the arithmetic here)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.em_exposure += np.where(self.weights > 0, removed_usd / self.weights, 0.0)
            self.em_usd += realized_usd * removed_usd / est
            if keep_uncrossed:
                target = self._target_keeping_uncrossed()
            else:
                c = self.seen_realized / self.seen_removed
                target = np.where(self.em_exposure > 0, self.em_usd / (c * self.em_exposure), self.weights)
            target = np.maximum(target / target.sum(), EM_FLOOR)
            new = self.weights + min(rate, 1.0) * (target / target.sum() - self.weights)
            new /= new.sum()
            factor = np.where(self.weights > 0, new / self.weights, 1.0)
        # (the whole store: two slices bounded by the frontiers measured no cheaper than one contiguous multiply)
        self.store *= factor[None, :, None]
        self.weights = new

    def _target_keeping_uncrossed(self) -> np.ndarray:
        """The EM estimate with the tiers never crossed holding their share (ADR 041): the crossed
        tiers' rates ``em_usd_k / em_exposure_k`` (= c w_k) are normalized among themselves and
        share what the crossed tiers hold now; c cancels."""
        crossed = self.em_exposure > 0
        rates = np.where(crossed, self.em_usd / np.where(crossed, self.em_exposure, 1.0), 0.0)
        total = float(rates.sum())
        if not total > 0:
            return self.weights
        return np.where(crossed, float(self.weights[crossed].sum()) * rates / total, self.weights)


def partial_fraction(side: int, b: int, phi: float, frontier: int, edge: float) -> float:
    """The share of bucket ``b``'s exposure a low (side 0) / high (side 1) at ``phi`` of the bucket's
    width crosses (ADR 034). The bucket's levels are taken as spread evenly over its uncrossed part:
    [b, edge) for longs when ``b`` is the frontier bucket (an earlier low reached into it), else
    [b, b + 1); [edge, b + 1) for shorts likewise. Longs: the part above the low, shorts: below the
    high. Requires the level to reach past the edge (longs ``b + phi < edge``, shorts ``> edge``)."""
    if side == 0:
        span = edge - b if b == frontier else 1.0
        return (span - phi) / span
    start = edge - b if b == frontier else 0.0
    return (phi - start) / (1.0 - start)


@dataclass
class MinuteInputs:
    """The public data of one base, per minute (arrays of length n; venue arrays (venues, n))."""

    minutes: np.ndarray
    price: np.ndarray
    vwap: np.ndarray
    high: np.ndarray
    low: np.ndarray
    taker_buy_usd: np.ndarray
    taker_sell_usd: np.ndarray
    venues: list[tuple[str, str]]
    oi_base: np.ndarray  # (venues, n), carried forward; NaN = no value
    long_liq_usd: np.ndarray  # (venues, n)
    short_liq_usd: np.ndarray

    def lists(self) -> dict[str, list]:
        """The arrays as Python lists, per minute (venue arrays transposed: [t][venue]), made once:
        the minute step reads a few numbers each minute, and a list item is cheaper than an array's."""
        cached = self.__dict__.get("_lists")
        if cached is None:
            cached = self._lists = {
                name: getattr(self, name).tolist() for name in ("price", "vwap", "low", "high", "taker_buy_usd",
                                                                "taker_sell_usd")}
            cached.update({name: getattr(self, name).T.tolist() for name in ("oi_base", "long_liq_usd",
                                                                             "short_liq_usd")})
        return cached


def minute_inputs(panel: SymbolPanel, venue_series: list[VenueSeries]) -> MinuteInputs:
    """The estimator's inputs from a base's panel and venue OI series (aligned to the panel minutes)."""
    n = len(panel.minutes)
    m0 = int(panel.minutes[0])
    step = int(panel.minutes[1] - panel.minutes[0]) if n > 1 else 60_000_000
    by_key = {(v.exchange, v.symbol): v for v in venue_series}
    oi = np.full((len(panel.venues), n), np.nan)
    for i, key in enumerate(panel.venues):
        vs = by_key.get(key)
        if vs is None or len(vs.minutes) == 0:
            continue
        base_units = np.where(np.isfinite(vs.oi_base), vs.oi_base, vs.oi_usd / vs.price)
        j = (vs.minutes - m0) // step
        ok = (j >= 0) & (j < n)
        oi[i, j[ok]] = base_units[ok]
    vwap = np.where(np.isfinite(panel.price_vwap), panel.price_vwap, panel.price)
    return MinuteInputs(
        minutes=panel.minutes, price=panel.price, vwap=vwap, high=panel.high, low=panel.low,
        taker_buy_usd=panel.taker_buy_usd_micros / USD_MICROS, taker_sell_usd=panel.taker_sell_usd_micros / USD_MICROS,
        venues=list(panel.venues), oi_base=oi,
        long_liq_usd=panel.venue_long_liq_micros / USD_MICROS, short_liq_usd=panel.venue_short_liq_micros / USD_MICROS,
    )


def long_share(buy_usd: float, sell_usd: float, tilt: float) -> float:
    tot = buy_usd + sell_usd
    if not tot > 0:
        return 0.5
    return min(max(0.5 + tilt * (buy_usd - sell_usd) / tot / 2.0, 0.05), 0.95)


@dataclass
class Estimator:
    """Runs the minute rule over one base's inputs; ``books`` per venue key (exchange, symbol).

    A venue's book is created the first minute the venue is in the inputs (until then it would be
    empty and at its prior); a venue absent from the inputs but holding a book is still crossed
    (and calibrated against no liquidation), so a short window with the stored state steps the
    same as a long one. Venues are visited, and summed into ``all``, in key order."""

    config: AnalyticsConfig
    grid: Grid
    books: dict[tuple[str, str], VenueBook] = field(default_factory=dict)
    last_oi: dict[tuple[str, str], float] = field(default_factory=dict)
    last_us: int | None = None  # the last minute stepped

    @classmethod
    def create(cls, inp: MinuteInputs, start: int, config: AnalyticsConfig) -> Estimator | None:
        ok = np.flatnonzero(np.isfinite(inp.price[start:]) & (inp.price[start:] > 0))
        if not len(ok):
            return None
        return cls(config, Grid.around(float(inp.price[start + ok[0]]), config))

    def _book(self, key: tuple[str, str]) -> VenueBook:
        book = self.books.get(key)
        if book is None:
            tiers = np.asarray(self.config.liqmap_leverage_tiers, dtype=float)
            book = self.books[key] = VenueBook(self.grid, tiers, leverage_mix(self.config, key[0]),
                                               self.config.liqmap_mmr)
        return book

    def _stacked(self, inp: MinuteInputs) -> tuple[list[VenueBook], np.ndarray, list[int | None]]:
        """The books in key order, their stores stacked as one (books, 2, tiers, nb) array (each
        book's ``store`` is a view of its row, so the per-book methods and the vectorized step
        change the same numbers), and each book's venue row in ``inp`` (None: not in the inputs).
        Creates the books of the venues new in ``inp``; rebuilt only when the set of books changes."""
        index = {key: v for v, key in enumerate(inp.venues)}
        for key in index:
            self._book(key)
        keys = sorted(self.books)
        cached = self.__dict__.get("_stack_cache")
        if cached is None or cached[0] != keys or any(
                b.store.base is not cached[2] for b in cached[1]):  # a book's store was replaced
            books = [self.books[k] for k in keys]
            stack = np.zeros((len(keys),) + books[0].store.shape) if keys else np.zeros((0, 2, 0, self.grid.nb))
            for i, b in enumerate(books):
                stack[i] = b.store
                b.store = stack[i]
            cached = self._stack_cache = (keys, books, stack)
        return cached[1], cached[2], [index.get(k) for k in keys]

    def step(self, inp: MinuteInputs, t: int) -> None:
        """One minute for every venue book of the base (the module's order: cross, calibrate, close,
        turn over, open), vectorized over the venues where the arithmetic is per element: the
        crossing's sums, the opening's levels and adds. Each number is computed by the same
        operations in the same order as one book at a time (tests/unit/test_liqmap_vector.py)."""
        cfg = self.config
        self.last_us = int(inp.minutes[t])
        col = inp.lists()
        price, vwap = col["price"][t], col["vwap"][t]
        if not (price > 0 and math.isfinite(price)):
            return  # no price this minute: nothing can be placed or crossed
        if not (vwap > 0 and math.isfinite(vwap)):
            vwap = price
        low = col["low"][t] if math.isfinite(col["low"][t]) else price
        high = col["high"][t] if math.isfinite(col["high"][t]) else price
        share = long_share(col["taker_buy_usd"][t], col["taker_sell_usd"][t], cfg.liqmap_taker_tilt)
        turnover = cfg.liqmap_turnover_per_day / 1440.0
        books, stack, rows = self._stacked(inp)
        n = len(books)
        if not n:
            return
        # 1. crossing: the bucket of the low/high once, the crossed books' slices summed in one call
        removed = None  # (books, 2, tiers) base units removed, when anything was crossed
        crossed = [[False, False] for _ in range(n)]
        for side, level in ((0, low), (1, high)):
            if not (level > 0 and math.isfinite(level)):
                continue
            if cfg.liqmap_partial_crossing:
                removed = self._cross_partial(books, stack, side, level, crossed, removed)
                continue
            b = self.grid.index1(level)
            hit = ([i for i, bk in enumerate(books) if b <= bk.top_long] if side == 0
                   else [i for i, bk in enumerate(books) if b >= bk.bottom_short])
            if not hit:
                continue
            if removed is None:
                removed = np.zeros((n, 2, stack.shape[2]))
            scale = np.array([books[i].scale for i in hit])
            sel = slice(None) if len(hit) == n else hit
            seg = (sel, 0, slice(None), slice(b, None)) if side == 0 else (sel, 1, slice(None), slice(None, b + 1))
            removed[sel, side] = stack[seg].sum(axis=2) * scale[:, None]
            stack[seg] = 0.0
            any_ = removed[sel, side].any(axis=1).tolist()
            for i, a in zip(hit, any_, strict=True):
                crossed[i][side] = a
                if side == 0:
                    books[i].set_edges(float(b), books[i].edge_short)
                else:
                    books[i].set_edges(books[i].edge_long, float(b + 1))
        long_liq, short_liq = col["long_liq_usd"][t], col["short_liq_usd"][t]
        realized = [(0.0, 0.0) if v is None else (long_liq[v], short_liq[v]) for v in rows]
        # 2. calibration, per book (only where there is evidence: few minutes)
        rate, keep = cfg.liqmap_calibration_rate, cfg.liqmap_calibration_keep_uncrossed
        if rate > 0:  # (no crossing and no liquidation: no evidence)
            if removed is None:
                removed = np.zeros((n, 2, stack.shape[2]))
            for i, bk in enumerate(books):
                # crossed longs were liquidated around the low, shorts around the high
                if realized[i][0] > 0 or crossed[i][0]:
                    bk.calibrate(removed[i, 0] * low, realized[i][0], rate, keep)
                if realized[i][1] > 0 or crossed[i][1]:
                    bk.calibrate(removed[i, 1] * high, realized[i][1], rate, keep)
        # 3.-4. closing and turnover, per book (scalars)
        oi_now = col["oi_base"][t]
        opening: list[int] = []
        amounts: list[float] = []
        # each book's stored sum (its total_base() / scale), one row-wise call for all: the same
        # pairwise sum of the same contiguous numbers as each book's store.sum()
        stored_sums = stack.reshape(n, -1).sum(axis=1).tolist()
        for i, (bk, v) in enumerate(zip(books, rows, strict=True)):
            oi = oi_now[v] if v is not None else math.nan
            if not math.isfinite(oi):
                continue  # no (carried) OI: the book only ages by crossings
            key = self._stack_cache[0][i]
            prev = self.last_oi.get(key, math.nan)
            self.last_oi[key] = oi
            if not math.isfinite(prev):
                # first value: entries unknown, spread around the price (or placed at it)
                bk.open_spread(oi, price, cfg.liqmap_initial_entry_spread, cfg.liqmap_initial_margin_gap)
                continue
            d_oi = oi - prev
            stored = stored_sums[i]  # = bk.total_base() / bk.scale until the store changes
            total = stored * bk.scale
            if d_oi < 0 and total > 0:
                closed = -d_oi - (realized[i][0] + realized[i][1]) / price
                if closed > 0 and bk.close_fraction(closed / total):
                    stored = float(stack[i].sum())
            total = stored * bk.scale
            reopen = total * turnover
            if reopen > 0:
                bk.close_fraction(turnover)
            amount = max(d_oi, 0.0) + reopen
            if amount > 0:
                opening.append(i)
                amounts.append(amount)
        # 5. opening at the VWAP: the tiers' levels once, every opening book's adds in one call
        if opening:
            # both sides' levels in one call: (1 - d, 1 + d) per tier made once (the tiers and mmr are
            # the config's), each level the same product as vwap * (1 - d) / vwap * (1 + d) alone
            factors = self.__dict__.get("_level_factors")
            if factors is None:
                dist = books[0].dist
                factors = self._level_factors = np.concatenate((1.0 - dist, 1.0 + dist))
            levels = self.grid.index(vwap * factors)
            liq_long, liq_short = levels[: len(factors) // 2], levels[len(factors) // 2:]
            # flat positions of (book, side, tier, level) in the C-ordered stack: one indexed add per side
            nt, nb = stack.shape[2], stack.shape[3]
            first = (np.asarray(opening)[:, None] * 2 * nt + np.arange(nt)[None, :]) * nb
            amt = np.asarray(amounts)
            weights = np.array([books[i].weights for i in opening])
            scale = np.array([books[i].scale for i in opening])[:, None]
            flat = stack.reshape(-1)  # a view (the stack is C-contiguous)
            flat[(first + liq_long).ravel()] += ((amt * share)[:, None] * weights / scale).ravel()
            flat[(first + nt * nb + liq_short).ravel()] += ((amt * (1.0 - share))[:, None] * weights / scale).ravel()
            top, bottom = int(liq_long.max()), int(liq_short.min())
            for i in opening:
                books[i].extend(top, bottom)

    def _cross_partial(self, books: list[VenueBook], stack: np.ndarray, side: int, level: float,
                       crossed: list[list[bool]], removed: np.ndarray | None) -> np.ndarray | None:
        """The crossing of one side with ``liqmap_partial_crossing`` (:meth:`VenueBook.cross` with
        ``partial``, every book hit at once: the same operations in the same order); ``removed``
        (books, 2, tiers), allocated on the first hit."""
        b, phi = self.grid.position1(level)
        x = b + phi
        hit = ([i for i, bk in enumerate(books) if x < bk.edge_long] if side == 0
               else [i for i, bk in enumerate(books) if x > bk.edge_short])
        if not hit:
            return removed
        n = len(books)
        if removed is None:
            removed = np.zeros((n, 2, stack.shape[2]))
        frac = np.array([partial_fraction(side, b, phi, books[i].top_long, books[i].edge_long) if side == 0
                         else partial_fraction(side, b, phi, books[i].bottom_short, books[i].edge_short)
                         for i in hit])
        scale = np.array([books[i].scale for i in hit])
        sel = slice(None) if len(hit) == n else hit
        near = (sel, side, slice(None), b)
        part = stack[near] * frac[:, None]
        # most crossings reach only into the frontier bucket: nothing beyond it is stored then (the
        # frontier bounds the books), and 0.0 + part == part, so the sum and the zeroing are skipped
        if (b < max(books[i].top_long for i in hit)) if side == 0 else (b > min(books[i].bottom_short for i in hit)):
            far = (sel, 0, slice(None), slice(b + 1, None)) if side == 0 else (sel, 1, slice(None), slice(None, b))
            removed[sel, side] = (stack[far].sum(axis=2) + part) * scale[:, None]
            stack[far] = 0.0
        else:
            removed[sel, side] = part * scale[:, None]
        stack[near] *= (1.0 - frac)[:, None]
        any_ = removed[sel, side].any(axis=1).tolist()
        for i, a in zip(hit, any_, strict=True):
            crossed[i][side] = a
            if side == 0:
                books[i].set_edges(x, books[i].edge_short)
            else:
                books[i].set_edges(books[i].edge_long, x)
        return removed

    def books_by_scope(self) -> Iterator[tuple[str, str, np.ndarray]]:
        """(exchange, symbol, (2, nb) base units) per venue, then the sum as exchange 'all'."""
        total = np.zeros((2, self.grid.nb))
        for (ex, sym), book in sorted(self.books.items()):
            b = book.book()
            total += b
            yield ex, sym, b
        yield ALL, "", total

    def total_book(self, a: int, b: int) -> np.ndarray:
        """:meth:`books_by_scope`'s 'all' book in buckets [a, b) (the same sums): (2, b - a)."""
        cached = self.__dict__.get("_stack_cache")
        if cached is not None and cached[0] == sorted(self.books):  # the stacked stores: one sum for all
            sums = cached[2][:, :, :, a:b].sum(axis=2)
            sums *= np.array([book.scale for book in cached[1]])[:, None, None]
            return np.add.reduce(sums, axis=0)  # book by book, in key order, as below
        total = np.zeros((2, b - a))
        for _, book in sorted(self.books.items()):
            total += book.store[:, :, a:b].sum(axis=1) * book.scale
        return total

    # --- the state stored between cycles (liquidation_map_state, one row per base and venue) --------
    def state_rows(self, base: str) -> list[dict]:
        """The estimator after minute ``last_us``, exactly (float64 bytes), one row per venue book."""
        return [{"base": base, "exchange": ex, "symbol": sym, "last_minute_us": self.last_us,
                 "bucket_bp": self.config.liqmap_bucket_bp, "grid_lo": self.grid.lo, "grid_nb": self.grid.nb,
                 "tiers": [float(x) for x in book.tiers], "mmr": book.mmr,
                 "weights": [float(x) for x in book.weights], "scale": book.scale,
                 "last_oi": _f(self.last_oi.get((ex, sym), math.nan)),
                 "seen_removed_usd": book.seen_removed, "seen_realized_usd": book.seen_realized,
                 "em_usd": [float(x) for x in book.em_usd], "em_exposure": [float(x) for x in book.em_exposure],
                 "edge_long": book.edge_long, "edge_short": book.edge_short,
                 "book": np.ascontiguousarray(book.store, dtype="<f8").tobytes()}
                for (ex, sym), book in sorted(self.books.items())]

    @classmethod
    def from_state(cls, rows: list[dict], config: AnalyticsConfig) -> Estimator | None:
        """The estimator stored by :meth:`state_rows`, or None when there is none or it was made with
        another bucket width, tier set or maintenance margin (its buckets would not mean the same)."""
        if not rows:
            return None
        tiers = np.asarray(config.liqmap_leverage_tiers, dtype=float)
        r0 = rows[0]
        if (r0["bucket_bp"] != config.liqmap_bucket_bp or any(r["mmr"] != config.liqmap_mmr for r in rows)
                or any(list(r["tiers"]) != tiers.tolist() for r in rows)
                or len({(r["grid_lo"], r["grid_nb"], r["last_minute_us"]) for r in rows}) != 1):
            return None
        est = cls(config, Grid(config.liqmap_bucket_bp / 10_000.0, int(r0["grid_lo"]), int(r0["grid_nb"])),
                  last_us=int(r0["last_minute_us"]))
        for r in rows:
            key = (r["exchange"], r["symbol"])
            book = VenueBook(est.grid, tiers, np.asarray(r["weights"], dtype=float), float(r["mmr"]))
            book.store = np.frombuffer(r["book"], dtype="<f8").reshape(2, len(tiers), est.grid.nb).copy()
            if r.get("edge_long") is not None and r.get("edge_short") is not None:
                book.set_edges(float(r["edge_long"]), float(r["edge_short"]))  # (a partial crossing's edges)
            else:  # (NULL in states from before migration 0022)
                book.refresh_frontiers()
            book.seen_removed = float(r.get("seen_removed_usd") or 0.0)
            book.seen_realized = float(r.get("seen_realized_usd") or 0.0)
            for name in ("em_usd", "em_exposure"):  # (NULL in states from before migration 0021)
                if r.get(name) is not None and len(r[name]) == len(tiers):
                    setattr(book, name, np.asarray(r[name], dtype=float))
            book.scale = float(r["scale"])
            est.books[key] = book
            if r["last_oi"] is not None:
                est.last_oi[key] = float(r["last_oi"])
        return est


def _f(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def level_rows(base: str, ts: Any, exchange: str, symbol: str, book: np.ndarray, grid: Grid, price: float,
               range_pct: float) -> list[dict]:
    """liquidation_levels rows of one scope's book: buckets within ``range_pct`` of the price with USD > 0."""
    lo_b = int(grid.index(price * (1 - range_pct / 100.0)))
    hi_b = int(grid.index(price * (1 + range_pct / 100.0)))
    mids, lows = grid.mids, grid.lows.tolist()
    out = []
    for side in (0, 1):
        usd = book[side, lo_b : hi_b + 1] * mids[lo_b : hi_b + 1]
        for j in np.flatnonzero(usd >= 0.005).tolist():
            b = lo_b + j
            low = lows[b]
            out.append({"as_of_ts": ts, "base": base, "exchange": exchange, "symbol": symbol or base,
                        "side": SIDES[side], "price_low": low, "price_high": lows[b + 1],
                        "usd": float(usd[j]), "price": price, "distance_pct": (low / price - 1.0) * 100.0})
    return out


def range_window(grid: Grid, price: float, range_pct: float) -> tuple[int, int]:
    """[a, b): the buckets holding prices within ``range_pct`` of ``price``, one more each side."""
    return (max(int(grid.index1(price * (1 - range_pct / 100.0))) - 1, 0),
            min(int(grid.index1(price * (1 + range_pct / 100.0))) + 2, grid.nb))


#: numpy sums a contiguous float64 run (``np.add.reduce``) of up to this many numbers with 8
#: accumulators, a longer one as the sums of its two halves (:func:`run_sums`)
PAIRWISE_BLOCK = 128


def run_sums(x: np.ndarray) -> np.ndarray:
    """``np.add.reduce`` of every row of ``x`` (rows, n), the same numbers, with a handful of numpy
    calls for all the rows: numpy's pairwise summation, per row, is ``r_j = x_j + x_{j+8} + ...``
    over the whole blocks of 8 (j < 8), ``((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))``, then
    the numbers left one at a time (fewer than 8: all one at a time from 0.0); beyond
    ``PAIRWISE_BLOCK`` numbers the sum of its halves (at a multiple of 8). Pinned against
    ``np.add.reduce`` by tests/unit/test_liqmap_speed.py (a numpy upgrade that changes it fails there)."""
    n = x.shape[1]
    if n > PAIRWISE_BLOCK:
        half = n // 2 - (n // 2) % 8
        return run_sums(x[:, :half]) + run_sums(x[:, half:])
    if n < 8:
        res = np.zeros(x.shape[0])
        for i in range(n):
            res += x[:, i]
        return res
    r = x[:, :8].copy()
    whole = n - n % 8
    for i in range(8, whole, 8):
        r += x[:, i : i + 8]
    res = ((r[:, 0] + r[:, 1]) + (r[:, 2] + r[:, 3])) + ((r[:, 4] + r[:, 5]) + (r[:, 6] + r[:, 7]))
    for i in range(whole, n):
        res += x[:, i]
    return res


def runs_sums(x: np.ndarray, row: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``np.add.reduce(x[row[i], lo[i]:hi[i]])`` of every run i (0.0 for an empty run), bit for bit:
    the runs of each length summed together (:func:`run_sums`; a batch's runs have few lengths)."""
    out = np.zeros(len(lo))
    n = hi - lo
    for m in np.unique(n[n > 0]).tolist():
        sel = np.flatnonzero(n == m)
        out[sel] = run_sums(x[row[sel, None], lo[sel, None] + np.arange(m)])
    return out


def fuel_row(base: str, ts: Any, book: np.ndarray, grid: Grid, price: float, vol_1h_pct: float | None,
             config: AnalyticsConfig, window: tuple[int, int] | None = None) -> dict:
    """liquidation_fuel: USD within 1/2/5 % of the price per side and the nearest cluster each way.

    A bucket counts "within x %" when its mid price is; a cluster is a bucket holding at least
    ``liqmap_cluster_multiple`` x the side's mean bucket USD within ``liqmap_range_pct``.
    ``window``: the caller's :func:`range_window` (every bucket whose mid is within range_pct %;
    the rest of ``book`` is never read). One minute of :func:`fuel_rows`."""
    wa, wb = window or range_window(grid, price, config.liqmap_range_pct)
    row: dict[str, Any] = {"minute_ts": ts, "base": base, "price": price, "vol_1h_pct": vol_1h_pct}
    fuel_rows([(row, book[:, wa:wb], wa)], grid, config)
    return row


def fuel_rows(pending: list[tuple[dict, np.ndarray, int]], grid: Grid, config: AnalyticsConfig) -> None:
    """:func:`fuel_row` of many minutes at once (ADR 049), the same numbers: each of ``pending`` is
    (the minute's row holding ``price`` and ``vol_1h_pct``, its 'all' book in its range window
    (2, wb - wa), wa); the rows are completed in place. The windows are padded to the widest (the
    padding's distance +inf: beyond every bound), the bounds of each "within" run counted (the
    distance rises with the bucket: the count below a value is numpy's ``searchsorted``), the runs
    summed as numpy sums them (:func:`runs_sums`), the clusters found over the padded rows."""
    if not pending:
        return
    rng, nf = config.liqmap_range_pct, len(FUEL_PCTS)
    nt = len(pending)
    wa = np.fromiter((p[2] for p in pending), np.int64, nt)
    width = np.fromiter((p[1].shape[1] for p in pending), np.int64, nt)
    price = np.fromiter((p[0]["price"] for p in pending), float, nt)
    cols = np.arange(int(width.max()))
    inside = cols < width[:, None]
    mids = grid.mids[np.minimum(wa[:, None] + cols, grid.nb - 1)]
    dist = np.where(inside, (mids / price[:, None] - 1.0) * 100.0, np.inf)
    book = np.zeros((nt, 2, len(cols)))
    for t, p in enumerate(pending):
        book[t, :, : p[1].shape[1]] = p[1]
    usd = book * mids[:, None, :]  # (minutes, side, bucket)

    def below(v: float) -> np.ndarray:  # searchsorted(dist, v, side="left")
        return np.count_nonzero(dist < v, axis=1)

    def upto(v: float) -> np.ndarray:  # searchsorted(dist, v, side="right")
        return np.count_nonzero(dist <= v, axis=1)

    # the side's range [a, b) and each pct's run in it: longs -rng <= dist <= 0 (within pct: -pct <=
    # dist), shorts 0 <= dist <= rng (within pct: dist <= pct)
    a = (below(-rng), below(0.0))
    b = (upto(0.0), upto(rng))
    runs = ([(np.maximum(below(-pct), a[0]), b[0]) for pct in FUEL_PCTS],
            [(a[1], np.minimum(upto(pct), b[1])) for pct in FUEL_PCTS])
    # every run of both sides summed in one call: row 2 t + side of the flat (minutes x sides, bucket) usd
    flat = usd.reshape(2 * nt, len(cols))
    run_rows, los, his = [], [], []
    for s in (0, 1):
        for x, y in runs[s] + [(a[s], b[s])]:
            run_rows.append(np.arange(s, 2 * nt, 2))
            los.append(x)
            his.append(y)
    sums = runs_sums(flat, np.concatenate(run_rows), np.concatenate(los), np.concatenate(his))
    sums = sums.reshape(2, nf + 1, nt)  # (side, pct... then the whole range, minute)
    count = (b[0] - a[0], b[1] - a[1])
    out: dict[str, list] = {}
    for s, name in ((0, "long"), (1, "short")):
        for j, pct in enumerate(FUEL_PCTS):
            out[f"{name}_usd_{pct}pct"] = sums[s, j].tolist()
        # = ndarray.mean over the range, its sum / count
        mean = np.where(count[s] > 0, sums[s, nf] / np.maximum(count[s], 1), 0.0)
        hot = ((cols >= a[s][:, None]) & (cols < b[s][:, None]) & (usd[:, s] >= config.liqmap_cluster_multiple
                                                                    * mean[:, None]) & (mean > 0)[:, None])
        found = hot.any(axis=1)
        # the nearest to the price on the side: the last hot bucket of the longs, the first of the shorts
        j = len(cols) - 1 - np.argmax(hot[:, ::-1], axis=1) if s == 0 else np.argmax(hot, axis=1)
        t_ = np.arange(nt)
        out[f"{name}_found"] = found.tolist()
        out[f"{name}_price"] = mids[t_, j].tolist()
        out[f"{name}_usd"] = usd[t_, s, j].tolist()
        out[f"{name}_dist"] = np.abs(dist[t_, j]).tolist()
    for t, (row, _, _) in enumerate(pending):
        vol = row["vol_1h_pct"]
        for name in ("long", "short"):
            for pct in FUEL_PCTS:
                row[f"{name}_usd_{pct}pct"] = out[f"{name}_usd_{pct}pct"][t]
            if out[f"{name}_found"][t]:
                d = out[f"{name}_dist"][t]
                row.update({f"{name}_cluster_price": out[f"{name}_price"][t],
                            f"{name}_cluster_usd": out[f"{name}_usd"][t], f"{name}_cluster_distance_pct": d,
                            f"{name}_cluster_distance_vol": d / vol if vol else None})
            else:
                row.update({f"{name}_cluster_{k}": None for k in ("price", "usd", "distance_pct", "distance_vol")})


def hourly_vol_pct(price: np.ndarray, t: int, minutes: int) -> float | None:
    """Std of the 1-minute log returns over the ``minutes`` before t, scaled to an hour, in %."""
    p = price[max(0, t - minutes) : t + 1]
    p = p[np.isfinite(p) & (p > 0)]
    if len(p) < 3:
        return None
    r = np.diff(np.log(p))
    return _f(float(r.std(ddof=1)) * math.sqrt(60.0) * 100.0)


def hourly_vols_pct(price: np.ndarray, minutes: int) -> list[float | None]:
    """:func:`hourly_vol_pct` of every minute t, the same numbers: the minutes whose whole window of
    ``minutes + 1`` prices is usable in one vectorized pass (the same logs, differences and per-row
    sums), the others (the first ``minutes``, windows with a missing price) one at a time."""
    n = len(price)
    out: list[float | None] = [None] * n
    ok = np.isfinite(price) & (price > 0)
    if n > minutes >= 2:
        full = np.flatnonzero(np.lib.stride_tricks.sliding_window_view(ok, minutes + 1).all(axis=1))
        if len(full):
            r = np.diff(np.log(np.where(ok, price, 1.0)))
            windows = np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(r, minutes)[full])
            vols = (windows.std(axis=1, ddof=1) * math.sqrt(60.0) * 100.0).tolist()
            for j, v in zip((full + minutes).tolist(), vols, strict=True):
                out[j] = v if math.isfinite(v) else None
    for t in range(n):
        if out[t] is None:
            out[t] = hourly_vol_pct(price, t, minutes)
    return out


def vols_from(price: np.ndarray, minutes: int, first: int) -> list[float | None]:
    """:func:`hourly_vols_pct` of the minutes from ``first`` on (None before), the same numbers: each
    minute's window is the ``minutes + 1`` prices up to it, so the prices from ``first - minutes``
    on give them all."""
    lo = max(first - minutes, 0)
    return [None] * lo + hourly_vols_pct(price[lo:], minutes)


def estimate_base(bb: BaseBars, config: AnalyticsConfig, emit_from_us: int | None, fuel: bool = True,
                  venues: bool = True, state: list[dict] | None = None, settled_us: int | None = None,
                  data_from_us: int | None = None) -> Iterator[tuple[str, dict]]:
    """(tag, row) of one base: liquidation_levels every ``liqmap_every_minutes`` (aligned) and
    liquidation_fuel every minute, from ``emit_from_us`` on; with ``settled_us``, also the
    estimator's state after the last minute <= ``settled_us`` (STATE_TAG rows, one per venue).

    ``state``: the stored rows of this base (:meth:`Estimator.state_rows`). It is used when it
    lies before ``emit_from_us`` and the bars (read from ``data_from_us``) hold the
    ``ffill_max_minutes`` before its next minute (the carried prices and OI then equal those of an
    unbroken run); the book then steps only the minutes after it. Otherwise (first run, backfill,
    a rewind) the book warms up from ``liqmap_warmup_minutes`` before ``emit_from_us``.
    ``fuel`` / ``venues`` False: no fuel rows / only the ``all`` scope's levels (the scorer's needs)."""
    panel = bb.panel
    if panel is None or len(panel.minutes) == 0:
        return
    inp = minute_inputs(panel, bb.venue_series)
    minutes = inp.minutes
    bar_us = config.bar_us
    every_us = config.liqmap_every_minutes * bar_us
    est = Estimator.from_state(state or [], config)
    if est is not None and est.last_us is not None and (
            (emit_from_us is not None and emit_from_us <= est.last_us)
            or (data_from_us is not None and est.last_us + bar_us - config.ffill_max_minutes * bar_us < data_from_us)):
        est = None  # a rewind, or the bars to continue it were not read: warm up again
    if est is not None:
        start = int(np.searchsorted(minutes, est.last_us + bar_us))
    else:
        warm_from = (int(minutes[0]) if emit_from_us is None else emit_from_us) - config.liqmap_warmup_minutes * bar_us
        start = int(np.searchsorted(minutes, warm_from))
        est = Estimator.create(inp, start, config)
        if est is None:
            return  # no price from the warm-up on: nothing to place
    save = int(np.searchsorted(minutes, settled_us, side="right")) - 1 if settled_us is not None else -1
    # the hour's volatility of the minutes that can be emitted only (a live cycle's panel holds the
    # whole analytics lookback, a fuel row is made for its last few minutes)
    first = max(start, int(np.searchsorted(minutes, emit_from_us)) if emit_from_us is not None else 0)
    vols = vols_from(inp.price, config.liqmap_vol_minutes, first) if fuel else []
    # the rows in order, held while their batch of fuel rows is incomplete (fuel_rows, ADR 049)
    rows: list[tuple[str, dict]] = []
    pending: list[tuple[dict, np.ndarray, int]] = []
    batch = max(int(config.liqmap_fuel_batch_minutes), 1)
    for k in range(start, len(minutes)):
        est.step(inp, k)
        if k == save:
            rows.extend((STATE_TAG, row) for row in est.state_rows(panel.base))
        mk = int(minutes[k])
        price = float(inp.price[k])
        emit = ((emit_from_us is None or mk >= emit_from_us) and bool(panel.has_bar[k])
                and price > 0 and math.isfinite(price))
        snapshot = emit and mk % every_us == 0
        if emit and (fuel or snapshot):
            ts = micros_to_ts(mk)
            # a minute without a snapshot needs the 'all' book only where the fuel reads it
            window = range_window(est.grid, price, config.liqmap_range_pct)
            scopes = list(est.books_by_scope()) if snapshot else []
            if fuel:
                row = {"minute_ts": ts, "base": panel.base, "price": price, "vol_1h_pct": vols[k]}
                pending.append((row, scopes[-1][2][:, window[0]:window[1]].copy() if snapshot
                                else est.total_book(*window), window[0]))
                rows.append((FUEL_TAG, row))
            if snapshot:
                for ex, sym, book in scopes if venues else scopes[-1:]:
                    rows.extend((LEVELS_TAG, row) for row in level_rows(panel.base, ts, ex, sym, book, est.grid,
                                                                         price, config.liqmap_range_pct))
        if not pending or len(pending) >= batch or k == len(minutes) - 1:  # (nothing held without fuel rows)
            fuel_rows(pending, est.grid, config)
            yield from rows
            rows, pending = [], []


#: the stream job's in-process hand-off of the books (ADR 061), by the cycle's ``state_path``:
#: {"in": the rows by base the job kept from its last committed cycle (None: read the file),
#: "read": the rows by base the graph read, "new": the state rows by base the graph made, which the
#: job stores itself (they are not output then)}. Only a cycle the job opened (:func:`open_handoff`)
#: is here: the backfill and the tests' graphs read and write files only.
_HANDOFF: dict[str, dict[str, Any]] = {}
_HANDOFF_LOCK = threading.Lock()


def open_handoff(state_path: str, kept: dict[str, list[dict]] | None) -> None:
    """Before a cycle's graph runs: its books come from ``kept`` (rows by base, as stored) instead of
    the file at ``state_path`` (None: from the file), and its state rows are handed back in process."""
    with _HANDOFF_LOCK:
        _HANDOFF[state_path] = {"in": kept, "read": {}, "new": {}}


def close_handoff(state_path: str) -> tuple[dict[str, list[dict]], dict[str, list[dict]]] | None:
    """After the graph ran: (the state rows by base it made, to store; the rows by base the table
    holds once they are stored: each base's new rows, else the rows it read), or None when the
    hand-off was not opened."""
    with _HANDOFF_LOCK:
        h = _HANDOFF.pop(state_path, None)
    return None if h is None else (h["new"], {**h["read"], **h["new"]})


def read_state(path: str | None) -> dict[str, list[dict]]:
    """liquidation_map_state rows of a Parquet export, by base ({} without one); the kept rows when
    the stream job handed them over in process for this ``path`` (:func:`open_handoff`)."""
    h = _HANDOFF.get(path) if path else None
    if h is not None and h["in"] is not None:
        return h["in"]
    if not path or not os.path.exists(path):
        return {}
    import pyarrow.parquet as pq

    out: dict[str, list[dict]] = {}
    for row in pq.read_table(path).to_pylist():
        out.setdefault(row["base"], []).append(row)
    return out


class _EstimateFn(beam.DoFn):
    def __init__(self, config: AnalyticsConfig, emit_from_us: int | None, state_path: str | None,
                 settled_us: int | None, data_from_us: int | None) -> None:
        self.config, self.emit_from_us = config, emit_from_us
        self.state_path, self.settled_us, self.data_from_us = state_path, settled_us, data_from_us

    def start_bundle(self) -> None:
        # each run's values (RunParams: read when the graph runs, ADR 045) and its stored books
        self._emit, self._settled, self._data_from = (resolve(v) for v in (self.emit_from_us, self.settled_us,
                                                                           self.data_from_us))
        path = resolve(self.state_path)
        self._state = read_state(path)
        self._handoff = _HANDOFF.get(path) if path else None  # the job keeps the books in process (ADR 061)
        if self._handoff is not None:
            with _HANDOFF_LOCK:
                self._handoff["read"].update(self._state)

    def process(self, keyed: tuple[str, BaseBars]):
        base, bb = keyed
        stored = []
        for tag, row in estimate_base(bb, self.config, self._emit, state=self._state.get(base),
                                      settled_us=self._settled, data_from_us=self._data_from):
            if tag == STATE_TAG and self._handoff is not None:
                stored.append(row)  # the job stores them from here, without a Parquet file
            else:
                yield row if tag == LEVELS_TAG else beam.pvalue.TaggedOutput(tag, row)
        if stored:
            with _HANDOFF_LOCK:  # the job's store replaces the base's rows with these (store_liqmap_state)
                self._handoff["new"][base] = stored


class LiquidationMapFromPanels(AnalyticsTransform):
    """(base, BaseBars) -> {"liquidation_levels", "liquidation_fuel", "liquidation_map_state"} (one
    DoFn per base: the book is sequential over minutes and needs nothing of the other bases).

    ``state_path``: a Parquet export of liquidation_map_state (the books after the last settled
    minute of the previous cycle); ``settled_us``: the last minute no later event can change (the
    state to store is the book after it); ``data_from_us``: where the bars read begin."""

    def __init__(self, config: AnalyticsConfig | None = None, emit_from_us: int | None = None,
                 state_path: str | None = None, settled_us: int | None = None,
                 data_from_us: int | None = None) -> None:
        super().__init__(config, emit_from_us)
        self.state_path, self.settled_us, self.data_from_us = state_path, settled_us, data_from_us

    def expand(self, panels: beam.PCollection) -> dict[str, beam.PCollection]:
        out = panels | "EstimateLiquidationMap" >> beam.ParDo(
            _EstimateFn(self.config, self.emit_from_us, self.state_path, self.settled_us, self.data_from_us)
        ).with_outputs(FUEL_TAG, STATE_TAG, main=LEVELS_TAG)
        return {LEVELS_TAG: out[LEVELS_TAG], FUEL_TAG: out[FUEL_TAG], STATE_TAG: out[STATE_TAG]}


class EstimateLiquidationMap(AnalyticsTransform):
    """bars_1m rows (touched minutes + ``lookback_minutes()['liquidation_map']``) -> the two marts."""

    def expand(self, bars: beam.PCollection) -> dict[str, beam.PCollection]:
        return bars | "BasePanels" >> BasePanels(self.config) | "LiquidationMap" >> LiquidationMapFromPanels(
            self.config, self.emit_from_us)
