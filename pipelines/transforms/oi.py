"""ComputeOIDeltas: bars -> ``oi_deltas`` (OI change over 1h/4h/24h/7d/30d, % and USD, with the
price change over the same span and a regime label).

Levels: ``venue`` (one exchange symbol), ``symbol`` (one base across its perpetual venues, as in
bars_1m_symbol) and ``market`` (every base summed; price = the reference base, BTC).

OI "as of" minute t = the last OI snapshot at or before the end of minute t, carried at most
``ffill_max_minutes``; the change over span S compares as-of t with as-of t - S. A row is emitted
every ``oi_every_minutes`` (aligned) for each span whose start has a value; the job must read bars
back ``lookback_minutes()['oi_deltas']`` before the first touched minute.

Regime: |OI change| < ``oi_flat_pct`` -> flat; OI up -> leverage_buildup; OI down with price
down (or unchanged) -> deleveraging; OI down with price up -> short_squeeze.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa

from pipelines.transforms.bars import micros_to_ts
from pipelines.transforms.config import AnalyticsConfig
from pipelines.transforms.panel import (
    AnalyticsTransform,
    BaseBars,
    BasePanels,
    columns_from_rows,
    venue_series_from_columns,
)
from pipelines.transforms.params import resolve


def regime(oi_change_pct: float, price_change_pct: float | None, flat_pct: float) -> str:
    if abs(oi_change_pct) < flat_pct:
        return "flat"
    if oi_change_pct > 0:
        return "leverage_buildup"
    if price_change_pct is not None and price_change_pct > 0:
        return "short_squeeze"
    return "deleveraging"


def _f(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _opt(values: np.ndarray) -> list[float | None]:
    """Floats as Python values, non-finite -> None (``_f`` per value)."""
    return [v if math.isfinite(v) else None for v in values.tolist()]


def delta_rows(
    level: str,
    exchange: str,
    symbol: str,
    base: str,
    minutes: np.ndarray,
    oi_usd: np.ndarray,
    oi_base: np.ndarray | None,
    price: np.ndarray,
    config: AnalyticsConfig,
    emit_from_us: int | None,
    stride: int = 1,
) -> list[dict[str, Any]]:
    """Rows for one series; arrays are per contiguous minute and already carried forward.
    ``stride`` > 1: the arrays hold every ``stride``-th minute only (:func:`sample_stride`), from
    the first such minute at or after the series' first minute (the windowed backfill's samples,
    ADR 036): every as-of minute and span start is one of them, so the rows are the same.

    Vectorized over the as-of minutes of each span (elementwise numpy arithmetic rounds exactly
    as the same expression on scalars, so the values are those of a per-minute loop)."""
    out: list[dict[str, Any]] = []
    if len(minutes) == 0:
        return out
    bar_us = config.bar_us * stride
    step = config.oi_every_minutes * config.bar_us
    m0 = int(minutes[0])
    first = m0 if emit_from_us is None else max(m0, emit_from_us)
    first = -(-first // step) * step  # align up
    t_us = np.arange(first, int(minutes[-1]) + 1, step, dtype=np.int64)
    oi_usd = np.asarray(oi_usd, dtype=float)
    price = np.asarray(price, dtype=float)
    jj = (t_us - m0) // bar_us
    keep = np.isfinite(oi_usd[jj])
    t_us, jj = t_us[keep], jj[keep]
    stamps: dict[int, Any] = {}
    for span, span_min in config.oi_spans_minutes:
        ii = jj - span_min // stride
        ok = ii >= 0
        start = oi_usd[np.where(ok, ii, 0)]
        ok &= np.isfinite(start) & (start != 0)
        if not ok.any():
            continue
        i, j = ii[ok], jj[ok]
        o0, o1, p0, p1 = oi_usd[i], oi_usd[j], price[i], price[j]
        chg = (o1 / o0 - 1.0) * 100.0
        with np.errstate(invalid="ignore", divide="ignore"):
            p_chg = (p1 / p0 - 1.0) * 100.0
        p_ok = (np.isfinite(p1) & np.isfinite(p0)).tolist()
        none = [None] * len(i)
        b0 = none if oi_base is None else _opt(np.asarray(oi_base, dtype=float)[i])
        b1 = none if oi_base is None else _opt(np.asarray(oi_base, dtype=float)[j])
        for t, s_usd, e_usd, d_usd, c, sb, eb, ps, pe, pc_raw, pc_ok in zip(
            t_us[ok].tolist(), o0.tolist(), o1.tolist(), (o1 - o0).tolist(), chg.tolist(), b0, b1, _opt(p0),
            _opt(p1), p_chg.tolist(), p_ok, strict=True,
        ):
            pc = pc_raw if pc_ok else None
            ts = stamps.get(t)
            if ts is None:
                ts = stamps[t] = micros_to_ts(t)
            out.append(
                {
                    "level": level,
                    "exchange": exchange,
                    "symbol": symbol,
                    "base": base,
                    "as_of_ts": ts,
                    "span": span,
                    "span_minutes": span_min,
                    "oi_start_usd": s_usd,
                    "oi_end_usd": e_usd,
                    "oi_change_usd": d_usd,
                    "oi_change_pct": c,
                    "oi_start_base": sb,
                    "oi_end_base": eb,
                    "price_start": ps,
                    "price_end": pe,
                    "price_change_pct": _f(pc) if pc is not None else None,
                    "regime": regime(c, pc, config.oi_flat_pct),
                }
            )
    return out


def venue_series(rows: list[dict], config: AnalyticsConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(minutes, oi_usd, oi_base, price) of one venue symbol's rows, carried forward."""
    rows = [{**r, "kind": "perpetual"} for r in rows]  # the caller chose the rows: keep every one
    (vs,) = venue_series_from_columns(rows[0]["base"], columns_from_rows(rows), config)
    return vs.minutes, vs.oi_usd, vs.oi_base, vs.price


class _BaseParts(beam.DoFn):
    """One base's venue series and panel arrays, on to the one market-level element: every
    oi_deltas row is made after the GroupByKey, so rows go straight to the sink (a Flatten of
    per-base and market rows is materialized by the runner: every row pickled)."""

    def process(self, keyed: tuple[str, BaseBars]):
        base, bb = keyed
        panel = bb.panel
        sym = None if panel is None else (panel.minutes, panel.oi_usd, panel.oi_base, panel.price)
        if sym is not None or bb.venue_series:
            yield ("market", (base, sym, bb.venue_series))


class _Deltas(beam.DoFn):
    def __init__(self, config: AnalyticsConfig, emit_from_us: int | None) -> None:
        self.config, self.emit_from_us = config, emit_from_us

    def process(self, keyed: tuple[str, Iterable[tuple]]):
        cfg, emit = self.config, resolve(self.emit_from_us)
        parts = sorted(keyed[1], key=lambda p: p[0])
        for base, sym, venues in parts:
            for vs in venues:
                yield from delta_rows("venue", vs.exchange, vs.symbol, vs.base, vs.minutes, vs.oi_usd, vs.oi_base,
                                      vs.price, cfg, emit)
            if sym is not None:
                minutes, oi_usd, oi_base, price = sym
                yield from delta_rows("symbol", "all", base, base, minutes, oi_usd, oi_base, price, cfg, emit)
        market = [(base, sym[0], sym[1], sym[3]) for base, sym, _ in parts if sym is not None]
        if market:
            yield from market_delta_rows(market, cfg, emit)


def market_delta_rows(parts: list[tuple], config: AnalyticsConfig, emit_from_us: int | None, stride: int = 1,
                      has_oi: list[bool] | None = None) -> list[dict]:
    """The market level from each base's (base, minutes, oi_usd, price), sorted by base. ``stride``
    as :func:`delta_rows`; ``has_oi``: per part, whether the base has an OI value anywhere in the
    window (else read from the arrays: with ``stride`` > 1 they do not hold every minute)."""
    bar_us = config.bar_us * stride
    m0 = min(int(p[1][0]) for p in parts)
    m1 = max(int(p[1][-1]) for p in parts)
    n = (m1 - m0) // bar_us + 1
    oi = np.full((len(parts), n), np.nan)
    price = np.full(n, np.nan)
    for k, (base, minutes, oi_usd, px) in enumerate(parts):
        o = (int(minutes[0]) - m0) // bar_us
        oi[k, o : o + len(minutes)] = oi_usd
        if base == config.reference_base:
            price[o : o + len(minutes)] = px
    # a base without an OI value at a minute would read as a drop: the market total needs
    # every base that has OI anywhere in the window to have a (carried) value
    has_any = np.isfinite(oi).any(axis=1) if has_oi is None else np.asarray(has_oi, dtype=bool)
    complete = np.isfinite(oi[has_any]).all(axis=0)
    total = np.where(complete, np.nansum(oi[has_any], axis=0), np.nan)
    minutes = m0 + np.arange(n, dtype=np.int64) * bar_us
    return delta_rows("market", "all", "market", "market", minutes, total, None, price, config, emit_from_us, stride)


# ---- the windowed backfill (ADR 036): oi_deltas from narrow samples ----------------------------
#: one row per series and window: its values at the sampled minutes of the window (lists), where
#: its grid begins in the window and whether its OI has a value anywhere in it
OI_SAMPLE_SCHEMA = pa.schema([("level", pa.string()), ("exchange", pa.string()), ("symbol", pa.string()),
                              ("base", pa.string()), ("first_us", pa.int64()), ("any_oi", pa.bool_()),
                              ("minute_us", pa.list_(pa.int64())), ("oi_usd", pa.list_(pa.float64())),
                              ("oi_base", pa.list_(pa.float64())), ("price", pa.list_(pa.float64()))])


def sample_stride(config: AnalyticsConfig) -> int:
    """Minutes between the samples oi_deltas needs: every as-of minute (``oi_every_minutes``) and
    every span start is a multiple of it."""
    return math.gcd(config.oi_every_minutes, *(m for _, m in config.oi_spans_minutes))


def _samples(level: str, exchange: str, symbol: str, base: str, minutes: np.ndarray, oi_usd: np.ndarray,
             oi_base: np.ndarray | None, price: np.ndarray | None, lo_us: int, hi_us: int | None,
             config: AnalyticsConfig) -> dict[str, Any]:
    """One series' row of :data:`OI_SAMPLE_SCHEMA`: its values at its sampled minutes in
    [lo_us, hi_us) (multiples of :func:`sample_stride`)."""
    every = sample_stride(config) * config.bar_us
    m0 = int(minutes[0])
    first = -(-max(m0, lo_us) // every) * every
    last = int(minutes[-1]) if hi_us is None else min(int(minutes[-1]), hi_us - 1)
    t = np.arange(first, last + 1, every, dtype=np.int64)
    j = (t - m0) // config.bar_us

    def col(values: np.ndarray | None) -> np.ndarray:
        return np.full(len(t), np.nan) if values is None else np.asarray(values, dtype=float)[j]

    return {"level": level, "exchange": exchange, "symbol": symbol, "base": base, "first_us": m0,
            "any_oi": bool(np.isfinite(oi_usd).any()), "minute_us": t, "oi_usd": col(oi_usd),
            "oi_base": col(oi_base), "price": col(price)}


class OISamplesFromPanels(beam.PTransform):
    """(base, BaseBars) -> Arrow tables of the oi_deltas inputs (the venue series and the base's
    panel) at the sampled minutes in [lo_us, hi_us), with each series' grid start and whether it
    has OI: a windowed backfill (ADR 036) gathers them over its windows and makes every oi_deltas
    row from them at the end (:func:`oi_delta_rows_from_samples`), so no window needs the 30-day
    span's dense panels."""

    def __init__(self, config: AnalyticsConfig, lo_us: int, hi_us: int | None) -> None:
        super().__init__()
        self.config, self.lo_us, self.hi_us = config, lo_us, hi_us

    def expand(self, panels: beam.PCollection) -> beam.PCollection:
        return panels | "OISamples" >> beam.FlatMap(_base_samples, self.config, self.lo_us, self.hi_us)


def _base_samples(keyed: tuple[str, BaseBars], config: AnalyticsConfig, lo_us: int, hi_us: int | None):
    base, bb = keyed
    tables = [_samples("venue", vs.exchange, vs.symbol, vs.base, vs.minutes, vs.oi_usd, vs.oi_base, vs.price,
                       lo_us, hi_us, config) for vs in bb.venue_series if len(vs.minutes)]
    p = bb.panel
    if p is not None:
        tables.append(_samples("symbol", "all", base, base, p.minutes, p.oi_usd, p.oi_base, p.price, lo_us, hi_us,
                               config))
    if tables:
        yield pa.Table.from_pylist(tables, schema=OI_SAMPLE_SCHEMA)


def oi_delta_rows_from_samples(series: tuple, config: AnalyticsConfig, emit_from_us: int | None) -> list[dict]:
    """oi_deltas rows of one series gathered from a windowed backfill's samples: ``series`` =
    (level, exchange, symbol, base, first_us, any_oi, minutes, oi_usd, oi_base, price), ``minutes``
    the sorted distinct sampled minutes and ``first_us`` the earliest grid start of any window; or
    ("market", [symbol series sorted by base]). Each series is rebuilt on its sampled grid (NaN where
    no window had a value), so the rows are those of the whole range's panels."""
    stride = sample_stride(config)
    every = stride * config.bar_us
    if series[0] == "market":
        parts, has_oi = [], []
        for _, _, _, base, first_us, any_oi, minutes, oi_usd, _, price in series[1]:
            g, (o, p) = _on_grid(first_us, minutes, (oi_usd, price), every)
            parts.append((base, g, o, p))
            has_oi.append(any_oi)
        return market_delta_rows(parts, config, emit_from_us, stride, has_oi=has_oi) if parts else []
    level, exchange, symbol, base, first_us, _, minutes, oi_usd, oi_base, price = series
    g, (o, ob, p) = _on_grid(first_us, minutes, (oi_usd, oi_base, price), every)
    return delta_rows(level, exchange, symbol, base, g, o, ob, p, config, emit_from_us, stride)


def _on_grid(first_us: int, minutes: np.ndarray, values: tuple, every: int) -> tuple[np.ndarray, tuple]:
    """Sampled values onto the contiguous sampled grid from the first sampled minute at or after
    ``first_us`` (the series' first minute) to its last sample (at least that first one); NaN where
    no window had a value."""
    g0 = -(-int(first_us) // every) * every
    minutes = np.asarray(minutes, dtype=np.int64)
    n = (int(minutes[-1]) - g0) // every + 1 if len(minutes) else 1
    grid = g0 + np.arange(n, dtype=np.int64) * every
    j = (minutes - g0) // every
    out = []
    for v in values:
        a = np.full(n, np.nan)
        a[j] = v
        out.append(a)
    return grid, tuple(out)


class OIDeltasFromPanels(AnalyticsTransform):
    """(base, BaseBars) -> oi_deltas rows for every level: each base's venue series and panel
    arrays gathered with one GroupByKey, every row made after it (see ``_BaseParts``)."""

    def expand(self, panels: beam.PCollection) -> beam.PCollection:
        return (
            panels
            | "BaseParts" >> beam.ParDo(_BaseParts())
            | "GroupMarket" >> beam.GroupByKey()
            | "Deltas" >> beam.ParDo(_Deltas(self.config, self.emit_from_us))
        )


class ComputeOIDeltas(AnalyticsTransform):
    """bars_1m rows (touched minutes + lookback) -> oi_deltas rows for every level."""

    def expand(self, bars: beam.PCollection) -> beam.PCollection:
        return (
            bars
            | "BasePanels" >> BasePanels(self.config)
            | "Deltas" >> OIDeltasFromPanels(self.config, self.emit_from_us)
        )
