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

from collections.abc import Iterable
from typing import Any

import apache_beam as beam
import numpy as np

from pipelines.transforms.bars import micros_to_ts
from pipelines.transforms.config import AnalyticsConfig
from pipelines.transforms.panel import BaseBars, BasePanels, columns_from_rows, venue_series_from_columns

_MARKET = "market_parts"


def regime(oi_change_pct: float, price_change_pct: float | None, flat_pct: float) -> str:
    if abs(oi_change_pct) < flat_pct:
        return "flat"
    if oi_change_pct > 0:
        return "leverage_buildup"
    if price_change_pct is not None and price_change_pct > 0:
        return "short_squeeze"
    return "deleveraging"


def _f(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


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
) -> list[dict[str, Any]]:
    """Rows for one series; arrays are per contiguous minute and already carried forward."""
    out: list[dict[str, Any]] = []
    if len(minutes) == 0:
        return out
    bar_us = config.bar_us
    step = config.oi_every_minutes * bar_us
    first = int(minutes[0]) if emit_from_us is None else max(int(minutes[0]), emit_from_us)
    first = -(-first // step) * step  # align up
    for t_us in range(first, int(minutes[-1]) + 1, step):
        j = (t_us - int(minutes[0])) // bar_us
        if not np.isfinite(oi_usd[j]):
            continue
        for span, span_min in config.oi_spans_minutes:
            i = j - span_min
            if i < 0 or not np.isfinite(oi_usd[i]) or oi_usd[i] == 0:
                continue
            chg_pct = (oi_usd[j] / oi_usd[i] - 1.0) * 100.0
            p_chg = (price[j] / price[i] - 1.0) * 100.0 if np.isfinite(price[j]) and np.isfinite(price[i]) else None
            out.append(
                {
                    "level": level,
                    "exchange": exchange,
                    "symbol": symbol,
                    "base": base,
                    "as_of_ts": micros_to_ts(t_us),
                    "span": span,
                    "span_minutes": span_min,
                    "oi_start_usd": float(oi_usd[i]),
                    "oi_end_usd": float(oi_usd[j]),
                    "oi_change_usd": float(oi_usd[j] - oi_usd[i]),
                    "oi_change_pct": float(chg_pct),
                    "oi_start_base": None if oi_base is None else _f(oi_base[i]),
                    "oi_end_base": None if oi_base is None else _f(oi_base[j]),
                    "price_start": _f(price[i]),
                    "price_end": _f(price[j]),
                    "price_change_pct": _f(p_chg) if p_chg is not None else None,
                    "regime": regime(chg_pct, p_chg, config.oi_flat_pct),
                }
            )
    return out


def venue_series(rows: list[dict], config: AnalyticsConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(minutes, oi_usd, oi_base, price) of one venue symbol's rows, carried forward."""
    rows = [{**r, "kind": "perpetual"} for r in rows]  # the caller chose the rows: keep every one
    (vs,) = venue_series_from_columns(rows[0]["base"], columns_from_rows(rows), config)
    return vs.minutes, vs.oi_usd, vs.oi_base, vs.price


class _BaseDeltas(beam.DoFn):
    """Venue rows (each perpetual/future venue symbol of the base) and symbol rows (its panel);
    the panel's OI and price go on to the market level."""

    def __init__(self, config: AnalyticsConfig, emit_from_us: int | None) -> None:
        self.config, self.emit_from_us = config, emit_from_us

    def process(self, keyed: tuple[str, BaseBars]):
        base, bb = keyed
        for vs in bb.venue_series:
            yield from delta_rows("venue", vs.exchange, vs.symbol, vs.base, vs.minutes, vs.oi_usd, vs.oi_base,
                                  vs.price, self.config, self.emit_from_us)
        panel = bb.panel
        if panel is None:
            return
        yield from delta_rows("symbol", "all", base, base, panel.minutes, panel.oi_usd, panel.oi_base, panel.price,
                              self.config, self.emit_from_us)
        yield beam.pvalue.TaggedOutput(_MARKET, ("market", (base, panel.minutes, panel.oi_usd, panel.price)))


class _MarketDeltas(beam.DoFn):
    def __init__(self, config: AnalyticsConfig, emit_from_us: int | None) -> None:
        self.config, self.emit_from_us = config, emit_from_us

    def process(self, keyed: tuple[str, Iterable[tuple]]):
        parts = sorted(keyed[1], key=lambda p: p[0])
        bar_us = self.config.bar_us
        m0 = min(int(p[1][0]) for p in parts)
        m1 = max(int(p[1][-1]) for p in parts)
        n = (m1 - m0) // bar_us + 1
        oi = np.full((len(parts), n), np.nan)
        price = np.full(n, np.nan)
        for k, (base, minutes, oi_usd, px) in enumerate(parts):
            o = (int(minutes[0]) - m0) // bar_us
            oi[k, o : o + len(minutes)] = oi_usd
            if base == self.config.reference_base:
                price[o : o + len(minutes)] = px
        # a base without an OI value at a minute would read as a drop: the market total needs
        # every base that has OI anywhere in the window to have a (carried) value
        has_any = np.isfinite(oi).any(axis=1)
        complete = np.isfinite(oi[has_any]).all(axis=0)
        total = np.where(complete, np.nansum(oi[has_any], axis=0), np.nan)
        minutes = m0 + np.arange(n, dtype=np.int64) * bar_us
        yield from delta_rows("market", "all", "market", "market", minutes, total, None, price, self.config,
                              self.emit_from_us)


class OIDeltasFromPanels(beam.PTransform):
    """(base, BaseBars) -> oi_deltas rows for every level (the market level: one GroupByKey of
    each base's OI and price arrays)."""

    def __init__(self, config: AnalyticsConfig | None = None, emit_from_us: int | None = None) -> None:
        super().__init__()
        self.config = config or AnalyticsConfig()
        self.emit_from_us = emit_from_us

    def expand(self, panels: beam.PCollection) -> beam.PCollection:
        cfg, emit = self.config, self.emit_from_us
        per_base = panels | "BaseDeltas" >> beam.ParDo(_BaseDeltas(cfg, emit)).with_outputs(_MARKET, main="rows")
        market = (
            per_base[_MARKET]
            | "GroupMarket" >> beam.GroupByKey()
            | "MarketDeltas" >> beam.ParDo(_MarketDeltas(cfg, emit))
        )
        return (per_base.rows, market) | "AllLevels" >> beam.Flatten()


class ComputeOIDeltas(beam.PTransform):
    """bars_1m rows (touched minutes + lookback) -> oi_deltas rows for every level."""

    def __init__(self, config: AnalyticsConfig | None = None, emit_from_us: int | None = None) -> None:
        super().__init__()
        self.config = config or AnalyticsConfig()
        self.emit_from_us = emit_from_us

    def expand(self, bars: beam.PCollection) -> beam.PCollection:
        return (
            bars
            | "BasePanels" >> BasePanels(self.config)
            | "Deltas" >> OIDeltasFromPanels(self.config, self.emit_from_us)
        )
