"""Minute panels: bar rows of one base (all its venues) -> contiguous per-minute numpy arrays.

Cross-venue aggregation lives here once and is reused by bars_1m_symbol, DetectCascades,
ComputeOIDeltas and ScoreContagion, so every analytic sees the same cross-venue numbers:

* USD sums (volume, liquidations) are summed as int64 micro-USD, so they are exact.
* OI: each venue's last OI snapshot is carried forward at most ``ffill_max_minutes`` (venues
  send OI every few seconds to minutes), then summed in USD across venues.
* price: the close of the reference venue (first of ``price_reference_venues`` present for the
  base), forward-filled; where it has none, the minute's volume-weighted price across venues.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np

from pipelines.transforms.bars import micros_to_ts, ts_to_micros
from pipelines.transforms.config import MINUTE_US, USD_MICROS, AnalyticsConfig


class PerpetualBarsByBase(beam.PTransform):
    """bars_1m rows -> (base, rows of its configured kinds across venues): the grouping every
    cross-venue analytic (symbol bars, cascades, OI deltas, contagion) starts from."""

    def __init__(self, config: AnalyticsConfig) -> None:
        super().__init__()
        self.kinds = config.symbol_kinds

    def expand(self, bars: beam.PCollection) -> beam.PCollection:
        kinds = self.kinds
        return (
            bars
            | "Perpetuals" >> beam.Filter(lambda r: r["kind"] in kinds)
            | "ByBase" >> beam.Map(lambda r: (r["base"], r))
            | "GroupByBase" >> beam.GroupByKey()
        )


def ffill_limited(values: np.ndarray, limit: int) -> np.ndarray:
    """Forward-fill NaNs along the last axis, at most ``limit`` steps past the last value."""
    values = np.asarray(values, dtype=float)
    n = values.shape[-1]
    idx = np.where(~np.isnan(values), np.arange(n), -1)
    last = np.maximum.accumulate(idx, axis=-1)
    filled = np.take_along_axis(values, np.maximum(last, 0), axis=-1)
    ok = (last >= 0) & (np.arange(n) - last <= limit)
    return np.where(ok, filled, np.nan)


def _micros(v: Any) -> int:
    return 0 if v is None else int(round(float(v) * USD_MICROS))


def _f(v: Any) -> float:
    return np.nan if v is None else float(v)


@dataclass
class SymbolPanel:
    """Per-minute arrays of one base aggregated across its venues (minutes contiguous)."""

    base: str
    minutes: np.ndarray  # int64 epoch micros, step one bar
    venues: list[tuple[str, str]]  # (exchange, symbol), row order of the per-venue matrices
    has_bar: np.ndarray  # bool: any venue bar in that minute
    price: np.ndarray
    price_vwap: np.ndarray
    high: np.ndarray
    low: np.ndarray
    reference_venue: str | None
    volume_usd_micros: np.ndarray
    volume_base: np.ndarray
    trade_count: np.ndarray
    taker_buy_usd_micros: np.ndarray
    taker_sell_usd_micros: np.ndarray
    long_liq_usd_micros: np.ndarray
    short_liq_usd_micros: np.ndarray
    long_liq_count: np.ndarray
    short_liq_count: np.ndarray
    max_liq_usd_micros: np.ndarray
    oi_usd: np.ndarray  # NaN when no venue has a (carried) OI
    oi_base: np.ndarray
    oi_venues: np.ndarray
    funding_rate: np.ndarray  # OI-weighted mean of the venues' last funding rates
    venue_long_liq_micros: np.ndarray  # (venues, minutes)
    venue_short_liq_micros: np.ndarray
    venues_with_bar: np.ndarray  # int: venues with a bar in that minute

    @property
    def long_liq_usd(self) -> np.ndarray:
        return self.long_liq_usd_micros / USD_MICROS

    @property
    def short_liq_usd(self) -> np.ndarray:
        return self.short_liq_usd_micros / USD_MICROS

    @property
    def volume_usd(self) -> np.ndarray:
        return self.volume_usd_micros / USD_MICROS

    def index_of(self, minute_us: int) -> int:
        return int((minute_us - int(self.minutes[0])) // MINUTE_US)


def build_symbol_panel(base: str, rows: Iterable[dict], config: AnalyticsConfig) -> SymbolPanel | None:
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

    def mat(fill: float = np.nan) -> np.ndarray:
        return np.full((nv, n), fill)

    close, high, low = mat(), mat(), mat()
    oi_usd, oi_base, funding = mat(), mat(), mat()
    has = np.zeros((nv, n), dtype=bool)
    ints = {k: np.zeros((nv, n), dtype=np.int64) for k in (
        "volume_usd", "taker_buy_usd", "taker_sell_usd", "long_liq_usd", "short_liq_usd", "max_liq_usd",
        "trade_count", "long_liq_count", "short_liq_count",
    )}
    vol_base = np.zeros((nv, n))
    for r, m in zip(rows, mins, strict=True):
        i, j = vidx[(r["exchange"], r["symbol"])], (m - m0) // bar_us
        has[i, j] = True
        close[i, j], high[i, j], low[i, j] = _f(r.get("close")), _f(r.get("high")), _f(r.get("low"))
        if r.get("close") is None and r.get("mark_price_last") is not None:
            close[i, j] = float(r["mark_price_last"])  # a minute without trades: the venue's mark
        oi_usd[i, j], oi_base[i, j] = _f(r.get("oi_last_usd")), _f(r.get("oi_last"))
        funding[i, j] = _f(r.get("funding_rate_last"))
        for k in ("volume_usd", "taker_buy_usd", "taker_sell_usd", "long_liq_usd", "short_liq_usd", "max_liq_usd"):
            ints[k][i, j] = _micros(r.get(k))
        for k in ("trade_count", "long_liq_count", "short_liq_count"):
            ints[k][i, j] = int(r.get(k) or 0)
        vol_base[i, j] = float(r.get("volume_base") or 0.0)

    lim = config.ffill_max_minutes
    close_ff = ffill_limited(close, lim)
    oi_ff = ffill_limited(oi_usd, lim)
    oib_ff = ffill_limited(oi_base, lim)
    fund_ff = ffill_limited(funding, lim)

    present = {v[0] for v in venues}
    ref_ex = next((e for e in config.price_reference_venues if e in present), None)
    vol_usd = ints["volume_usd"].sum(axis=0)
    vbase = vol_base.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = np.where(vbase > 0, (vol_usd / USD_MICROS) / vbase, np.nan)
    if ref_ex is not None:
        # a venue can list several contracts of one base (linear + inverse): the most traded one
        cands = [i for i, v in enumerate(venues) if v[0] == ref_ex]
        ri = max(cands, key=lambda i: (ints["volume_usd"][i].sum(), venues[i][1]))
        price = close_ff[ri].copy()
        hi, lo = high[ri].copy(), low[ri].copy()
    else:
        ri, price, hi, lo = None, np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    price = np.where(np.isnan(price), vwap, price)
    price = ffill_limited(price, lim)
    hi = np.where(np.isnan(hi), price, hi)
    lo = np.where(np.isnan(lo), price, lo)

    oi_any = ~np.isnan(oi_ff)
    oi_sum = np.where(oi_any.any(axis=0), np.nansum(oi_ff, axis=0), np.nan)
    oib_sum = np.where((~np.isnan(oib_ff)).any(axis=0), np.nansum(oib_ff, axis=0), np.nan)
    w = np.where(~np.isnan(fund_ff) & oi_any, oi_ff, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        fmean = np.where(w.sum(axis=0) > 0, np.nansum(np.nan_to_num(fund_ff) * w, axis=0) / w.sum(axis=0), np.nan)
    cnt = (~np.isnan(fund_ff)).sum(axis=0)
    unweighted = np.where(cnt > 0, np.nansum(fund_ff, axis=0) / np.maximum(cnt, 1), np.nan)
    fmean = np.where(np.isnan(fmean), unweighted, fmean)

    return SymbolPanel(
        base=base,
        minutes=minutes,
        venues=venues,
        has_bar=has.any(axis=0),
        price=price,
        price_vwap=vwap,
        high=hi,
        low=lo,
        reference_venue=None if ri is None else f"{venues[ri][0]}:{venues[ri][1]}",
        volume_usd_micros=vol_usd,
        volume_base=vbase,
        trade_count=ints["trade_count"].sum(axis=0),
        taker_buy_usd_micros=ints["taker_buy_usd"].sum(axis=0),
        taker_sell_usd_micros=ints["taker_sell_usd"].sum(axis=0),
        long_liq_usd_micros=ints["long_liq_usd"].sum(axis=0),
        short_liq_usd_micros=ints["short_liq_usd"].sum(axis=0),
        long_liq_count=ints["long_liq_count"].sum(axis=0),
        short_liq_count=ints["short_liq_count"].sum(axis=0),
        max_liq_usd_micros=ints["max_liq_usd"].max(axis=0),
        oi_usd=oi_sum,
        oi_base=oib_sum,
        oi_venues=oi_any.sum(axis=0),
        funding_rate=fmean,
        venue_long_liq_micros=ints["long_liq_usd"],
        venue_short_liq_micros=ints["short_liq_usd"],
        venues_with_bar=has.sum(axis=0),
    )


def _none(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)


def symbol_bar_rows(panel: SymbolPanel, emit_from_us: int | None = None) -> list[dict[str, Any]]:
    """bars_1m_symbol rows: one per base and minute that has at least one venue bar."""
    out = []
    for j, m in enumerate(panel.minutes):
        if not panel.has_bar[j] or (emit_from_us is not None and m < emit_from_us):
            continue
        out.append(
            {
                "minute_ts": micros_to_ts(int(m)),
                "base": panel.base,
                "venues": int(panel.venues_with_bar[j]),
                "reference_venue": panel.reference_venue,
                "price": _none(panel.price[j]),
                "price_vwap": _none(panel.price_vwap[j]),
                "high": _none(panel.high[j]),
                "low": _none(panel.low[j]),
                "volume_base": float(panel.volume_base[j]),
                "volume_usd": int(panel.volume_usd_micros[j]) / USD_MICROS,
                "trade_count": int(panel.trade_count[j]),
                "taker_buy_usd": int(panel.taker_buy_usd_micros[j]) / USD_MICROS,
                "taker_sell_usd": int(panel.taker_sell_usd_micros[j]) / USD_MICROS,
                "long_liq_count": int(panel.long_liq_count[j]),
                "long_liq_usd": int(panel.long_liq_usd_micros[j]) / USD_MICROS,
                "short_liq_count": int(panel.short_liq_count[j]),
                "short_liq_usd": int(panel.short_liq_usd_micros[j]) / USD_MICROS,
                "max_liq_usd": int(panel.max_liq_usd_micros[j]) / USD_MICROS,
                "oi_usd": _none(panel.oi_usd[j]),
                "oi_base": _none(panel.oi_base[j]),
                "oi_venues": int(panel.oi_venues[j]),
                "funding_rate": _none(panel.funding_rate[j]),
            }
        )
    return out


class _SymbolBarsFn:
    def __init__(self, config: AnalyticsConfig, emit_from_us: int | None) -> None:
        self.config = config
        self.emit_from_us = emit_from_us

    def __call__(self, keyed: tuple[str, Iterable[dict]]) -> list[dict[str, Any]]:
        base, rows = keyed
        panel = build_symbol_panel(base, rows, self.config)
        return [] if panel is None else symbol_bar_rows(panel, self.emit_from_us)


class ComputeSymbolBars(beam.PTransform):
    """bars_1m rows -> bars_1m_symbol rows (one per base and minute, perpetuals across venues).

    Grouped per base (GroupByKey) because the OI carry-forward is sequential over minutes; the
    input should hold ``ffill_max_minutes`` of lookback before ``emit_from_us``.
    """

    def __init__(self, config: AnalyticsConfig | None = None, emit_from_us: int | None = None) -> None:
        super().__init__()
        self.config = config or AnalyticsConfig()
        self.emit_from_us = emit_from_us

    def expand(self, bars: beam.PCollection) -> beam.PCollection:
        return (
            bars
            | "PerpetualsByBase" >> PerpetualBarsByBase(self.config)
            | "Aggregate" >> beam.FlatMap(_SymbolBarsFn(self.config, self.emit_from_us))
        )
