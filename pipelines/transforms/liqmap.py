"""EstimateLiquidationMap: bars -> ``liquidation_levels`` and ``liquidation_fuel`` (the liquidation map,
estimated from public data only; the model is ADR 015, the definitions docs/analytics.md).

Per base and venue (one perpetual exchange symbol) the estimator keeps a book of open leveraged
exposure (base units) by **liquidation price** on a log-price grid (``liqmap_bucket_bp``), one per
side and leverage tier. Every minute, in this order:

1. **crossing**: exposure whose liquidation price the minute's low (longs) / high (shorts) reached
   (the bucket holding the low/high included, as a venue's liquidation engine would) is removed;
2. **calibration**: the venue's realized liquidated USD of the side is compared with the USD the
   map just removed; the tiers that were crossed are re-weighted by that ratio (exponentiated
   gradient, rate ``liqmap_calibration_rate``) and their books rescaled, so the leverage mix learns
   from where liquidations did (and did not) happen. Realized liquidations where the map had
   nothing count for the highest tier (the map was too far from the price: more leverage);
3. **closing**: an OI drop not explained by the realized liquidations (``-dOI - liq/price``) closes
   that much exposure pro rata over both sides and every bucket (nobody knows whose position closed);
4. **turnover**: ``liqmap_turnover_per_day`` of the book closes and reopens at the minute's VWAP
   (net OI hides gross flow: positions age even when OI is flat);
5. **opening**: an OI rise (plus the turnover) opens at the minute's cross-venue VWAP, split long /
   short by the minute's taker imbalance (``0.5 + liqmap_taker_tilt * (buy - sell) / (buy + sell) / 2``)
   and over the venue's leverage tiers by its current mix; a tier-``L`` long is liquidated at
   ``VWAP * (1 - d(L))``, a short at ``VWAP * (1 + d(L))`` with ``d(L) = max(1/L - mmr, 1/(2L))``.

A venue's first OI value is opened at its first price (its positions' entries are unknown).

**State across cycles, exactly once.** The book is rebuilt from bars, not stored: the value for a
minute t is always computed from the aligned anchor ``floor(t / W) * W - W`` (``W =
liqmap_warmup_minutes``), so a streaming cycle and a backfill produce the same rows whatever window
they read, and an upsert by key replaces a minute's rows with identical values. A cycle reads
``2 W`` minutes of bars back (``lookback_minutes()['liquidation_map']``).

The estimator never imports the simulator (tests/unit/test_liqmap.py enforces it).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import numpy as np

from pipelines.transforms.bars import micros_to_ts
from pipelines.transforms.config import USD_MICROS, AnalyticsConfig
from pipelines.transforms.panel import AnalyticsTransform, BaseBars, BasePanels, SymbolPanel, VenueSeries

LEVELS_TAG = "liquidation_levels"
FUEL_TAG = "liquidation_fuel"
SIDES = ("long", "short")
FUEL_PCTS = (1, 2, 5)
ALL = "all"


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

    def low(self, b: np.ndarray | int) -> np.ndarray:
        return np.exp((self.lo + np.asarray(b, dtype=float)) * self.w)

    def mid(self) -> np.ndarray:
        return np.exp((self.lo + np.arange(self.nb) + 0.5) * self.w)


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
    dist: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.store = np.zeros((2, len(self.tiers), self.grid.nb))
        self.dist = liquidation_distance(self.tiers, self.mmr)
        self._k = np.arange(len(self.tiers))

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

    def close_fraction(self, frac: float) -> None:
        frac = min(max(frac, 0.0), 1.0)
        if frac >= 1.0:
            self.store[:] = 0.0
            self.scale = 1.0
            return
        self.scale *= 1.0 - frac
        if self.scale < 1e-9:  # renormalize before the float runs out of range
            self.store *= self.scale
            self.scale = 1.0

    def cross(self, low: float, high: float) -> np.ndarray:
        """Remove the exposure whose liquidation price [low, high] reached; (2, tiers) base units removed."""
        removed = np.zeros((2, len(self.tiers)))
        if low > 0 and math.isfinite(low):
            b = self.grid.index1(low)
            seg = self.store[0, :, b:]
            removed[0] = seg.sum(axis=1) * self.scale
            seg[:] = 0.0
        if high > 0 and math.isfinite(high):
            b = self.grid.index1(high)
            seg = self.store[1, :, : b + 1]
            removed[1] = seg.sum(axis=1) * self.scale
            seg[:] = 0.0
        return removed

    def calibrate(self, removed_usd: np.ndarray, realized_usd: float, rate: float) -> None:
        """Re-weight the tiers of one side's crossing by realized / estimated liquidated USD.

        ``removed_usd``: (tiers,) USD the map removed at this crossing. Tier k's weight is multiplied
        by ``ratio ** (rate * share_k)`` (share_k: its part of the removed USD), then the weights
        are renormalized and every tier book rescaled to the new weights."""
        if rate <= 0 or realized_usd < 0:
            return
        est = float(removed_usd.sum())
        if est <= 0 and realized_usd <= 0:
            return  # nothing crossed, nothing liquidated: no evidence
        if est <= 0:
            share = np.zeros(len(self.tiers))
            share[int(np.argmax(self.tiers))] = 1.0  # liquidations where the map had none: more leverage
            ratio = 2.0
        else:
            share = removed_usd / est
            ratio = min(max(realized_usd / est, 0.1), 10.0)  # one minute moves a weight by at most 10x^rate
        new = self.weights * ratio ** (rate * share)
        new /= new.sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            factor = np.where(self.weights > 0, new / self.weights, 1.0)
        self.store *= factor[None, :, None]
        self.weights = new


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
    """Runs the minute rule over one base's inputs from index ``start``; ``books`` per venue."""

    config: AnalyticsConfig
    grid: Grid
    books: list[VenueBook]
    last_oi: np.ndarray

    @classmethod
    def create(cls, inp: MinuteInputs, start: int, config: AnalyticsConfig) -> Estimator | None:
        ok = np.flatnonzero(np.isfinite(inp.price[start:]) & (inp.price[start:] > 0))
        if not len(ok):
            return None
        grid = Grid.around(float(inp.price[start + ok[0]]), config)
        tiers = np.asarray(config.liqmap_leverage_tiers, dtype=float)
        books = [VenueBook(grid, tiers, leverage_mix(config, ex), config.liqmap_mmr) for ex, _ in inp.venues]
        return cls(config, grid, books, np.full(len(inp.venues), np.nan))

    def step(self, inp: MinuteInputs, t: int) -> None:
        cfg = self.config
        price, vwap = float(inp.price[t]), float(inp.vwap[t])
        if not (price > 0 and math.isfinite(price)):
            return  # no price this minute: nothing can be placed or crossed
        if not (vwap > 0 and math.isfinite(vwap)):
            vwap = price
        low = float(inp.low[t]) if math.isfinite(inp.low[t]) else price
        high = float(inp.high[t]) if math.isfinite(inp.high[t]) else price
        share = long_share(float(inp.taker_buy_usd[t]), float(inp.taker_sell_usd[t]), cfg.liqmap_taker_tilt)
        turnover = cfg.liqmap_turnover_per_day / 1440.0
        for v, book in enumerate(self.books):
            removed = book.cross(low, high)
            realized = (float(inp.long_liq_usd[v, t]), float(inp.short_liq_usd[v, t]))
            # crossed longs were liquidated around the low, shorts around the high
            book.calibrate(removed[0] * low, realized[0], cfg.liqmap_calibration_rate)
            book.calibrate(removed[1] * high, realized[1], cfg.liqmap_calibration_rate)
            oi = float(inp.oi_base[v, t])
            if not math.isfinite(oi):
                continue  # no (carried) OI: the book only ages by crossings
            prev = self.last_oi[v]
            self.last_oi[v] = oi
            if not math.isfinite(prev):
                book.open(oi, price, 0.5)  # first value: entries unknown, placed at the price
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

    def books_by_scope(self, venues: list[tuple[str, str]]) -> Iterator[tuple[str, str, np.ndarray]]:
        """(exchange, symbol, (2, nb) base units) per venue, then the sum as exchange 'all'."""
        total = np.zeros((2, self.grid.nb))
        for (ex, sym), book in zip(venues, self.books, strict=True):
            b = book.book()
            total += b
            yield ex, sym, b
        yield ALL, "", total


def anchor_index(minutes: np.ndarray, t_us: int, warmup_us: int) -> int:
    """Index of the aligned warm-up anchor of minute t (``floor(t / W) * W - W``), clipped to 0."""
    a = (t_us // warmup_us) * warmup_us - warmup_us
    return max(0, int((a - int(minutes[0])) // int(minutes[1] - minutes[0]))) if len(minutes) > 1 else 0


def _f(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def level_rows(base: str, ts: Any, exchange: str, symbol: str, book: np.ndarray, grid: Grid, price: float,
               range_pct: float) -> list[dict]:
    """liquidation_levels rows of one scope's book: buckets within ``range_pct`` of the price with USD > 0."""
    lo_b = int(grid.index(price * (1 - range_pct / 100.0)))
    hi_b = int(grid.index(price * (1 + range_pct / 100.0)))
    mids = grid.mid()
    out = []
    for side in (0, 1):
        usd = book[side, lo_b : hi_b + 1] * mids[lo_b : hi_b + 1]
        for j in np.flatnonzero(usd >= 0.005).tolist():
            b = lo_b + j
            low = float(grid.low(b))
            out.append({"as_of_ts": ts, "base": base, "exchange": exchange, "symbol": symbol or base,
                        "side": SIDES[side], "price_low": low, "price_high": float(grid.low(b + 1)),
                        "usd": float(usd[j]), "price": price, "distance_pct": (low / price - 1.0) * 100.0})
    return out


def fuel_row(base: str, ts: Any, book: np.ndarray, grid: Grid, price: float, vol_1h_pct: float | None,
             config: AnalyticsConfig) -> dict:
    """liquidation_fuel: USD within 1/2/5 % of the price per side and the nearest cluster each way.

    A bucket counts "within x %" when its mid price is; a cluster is a bucket holding at least
    ``liqmap_cluster_multiple`` x the side's mean bucket USD within ``liqmap_range_pct``."""
    mids = grid.mid()
    dist = (mids / price - 1.0) * 100.0
    row: dict[str, Any] = {"minute_ts": ts, "base": base, "price": price, "vol_1h_pct": vol_1h_pct}
    rng = config.liqmap_range_pct
    for side, name, sel in ((0, "long", (dist <= 0) & (dist >= -rng)), (1, "short", (dist >= 0) & (dist <= rng))):
        usd = book[side] * mids
        for pct in FUEL_PCTS:
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


def hourly_vol_pct(price: np.ndarray, t: int, minutes: int) -> float | None:
    """Std of the 1-minute log returns over the ``minutes`` before t, scaled to an hour, in %."""
    p = price[max(0, t - minutes) : t + 1]
    p = p[np.isfinite(p) & (p > 0)]
    if len(p) < 3:
        return None
    r = np.diff(np.log(p))
    return _f(float(r.std(ddof=1)) * math.sqrt(60.0) * 100.0)


def estimate_base(bb: BaseBars, config: AnalyticsConfig, emit_from_us: int | None, fuel: bool = True,
                  venues: bool = True) -> Iterator[tuple[str, dict]]:
    """(tag, row) of one base: liquidation_levels every ``liqmap_every_minutes`` (aligned) and
    liquidation_fuel every minute, from ``emit_from_us`` on (each minute from its aligned anchor).
    ``fuel`` / ``venues`` False: no fuel rows / only the ``all`` scope's levels (the scorer's needs)."""
    panel = bb.panel
    if panel is None or len(panel.minutes) == 0:
        return
    inp = minute_inputs(panel, bb.venue_series)
    minutes = inp.minutes
    bar_us = int(minutes[1] - minutes[0]) if len(minutes) > 1 else config.bar_us
    warm_us = config.liqmap_warmup_minutes * bar_us
    every_us = config.liqmap_every_minutes * bar_us
    first = 0 if emit_from_us is None else int(np.searchsorted(minutes, emit_from_us))
    t = first
    n = len(minutes)
    while t < n:
        # one pass per anchor period: every minute of [period start, period end) shares its anchor
        m = int(minutes[t])
        period_end = (m // warm_us + 1) * warm_us
        stop = int(np.searchsorted(minutes, period_end))
        start = anchor_index(minutes, m, warm_us)
        est = Estimator.create(inp, start, config)
        if est is None:  # no price from the anchor on: nothing to place in this period
            t = stop
            continue
        for k in range(start, stop):
            est.step(inp, k)
            if k < t or not panel.has_bar[k]:
                continue
            price = float(inp.price[k])
            if not (price > 0 and math.isfinite(price)):
                continue
            mk = int(minutes[k])
            snapshot = mk % every_us == 0
            if not (fuel or snapshot):
                continue
            ts = micros_to_ts(mk)
            scopes = list(est.books_by_scope(inp.venues))
            if fuel:
                yield FUEL_TAG, fuel_row(panel.base, ts, scopes[-1][2], est.grid, price,
                                         hourly_vol_pct(inp.price, k, config.liqmap_vol_minutes), config)
            if snapshot:
                for ex, sym, book in scopes if venues else scopes[-1:]:
                    for row in level_rows(panel.base, ts, ex, sym, book, est.grid, price, config.liqmap_range_pct):
                        yield LEVELS_TAG, row
        t = stop


class _EstimateFn(beam.DoFn):
    def __init__(self, config: AnalyticsConfig, emit_from_us: int | None) -> None:
        self.config, self.emit_from_us = config, emit_from_us

    def process(self, keyed: tuple[str, BaseBars]):
        for tag, row in estimate_base(keyed[1], self.config, self.emit_from_us):
            yield row if tag == LEVELS_TAG else beam.pvalue.TaggedOutput(FUEL_TAG, row)


class LiquidationMapFromPanels(AnalyticsTransform):
    """(base, BaseBars) -> {"liquidation_levels", "liquidation_fuel"} (one DoFn per base: the book
    is sequential over minutes and needs nothing of the other bases)."""

    def expand(self, panels: beam.PCollection) -> dict[str, beam.PCollection]:
        out = panels | "EstimateLiquidationMap" >> beam.ParDo(
            _EstimateFn(self.config, self.emit_from_us)).with_outputs(FUEL_TAG, main=LEVELS_TAG)
        return {LEVELS_TAG: out[LEVELS_TAG], FUEL_TAG: out[FUEL_TAG]}


class EstimateLiquidationMap(AnalyticsTransform):
    """bars_1m rows (touched minutes + ``lookback_minutes()['liquidation_map']``) -> the two marts."""

    def expand(self, bars: beam.PCollection) -> dict[str, beam.PCollection]:
        return bars | "BasePanels" >> BasePanels(self.config) | "LiquidationMap" >> LiquidationMapFromPanels(
            self.config, self.emit_from_us)
