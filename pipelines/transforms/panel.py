"""Minute panels: bar rows of one base (all its venues) -> contiguous per-minute numpy arrays.

Cross-venue aggregation lives here once and is reused by bars_1m_symbol, DetectCascades,
ComputeOIDeltas and ScoreContagion, so every analytic sees the same cross-venue numbers:

* USD sums (volume, liquidations) are summed as int64 micro-USD, so they are exact.
* OI: each venue's last OI snapshot is carried forward at most ``ffill_max_minutes`` (venues
  send OI every few seconds to minutes), then summed in USD across venues.
* price: the close of the reference venue (first of ``price_reference_venues`` present for the
  base), forward-filled; where it has none, the minute's volume-weighted price across venues.

Each base's bars are grouped and turned into a panel ONCE (:class:`BasePanels` from bar rows,
:class:`ReadBasePanels` from the per-base Parquet files a job exports) and the four analytics run
on the resulting ``(base, BaseBars)`` elements. Why: Beam's data plane pickles row dicts at every
GroupByKey; four GroupByKeys of 40-column rows cost ~70% of the analytics phase (issue 7).
The panel is built vectorized from columns (numpy over Arrow, times as int micros); bar rows are
first turned into the same columns, so both entry points share one implementation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields, replace
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa

from pipelines.transforms.bars import micros_to_ts, ts_to_micros
from pipelines.transforms.config import MINUTE_US, USD_MICROS, AnalyticsConfig
from pipelines.transforms.params import RunParam, resolve, values_at_run

#: kinds whose per-venue OI series feed oi_deltas' venue level (whatever config.symbol_kinds says)
OI_VENUE_KINDS = ("perpetual", "future")
#: bars_1m columns the analytics read (what a job exports per base)
FLOAT_COLUMNS = ("close", "high", "low", "mark_price_last", "oi_last_usd", "oi_last", "funding_rate_last",
                 "volume_base", "depth_bid_usd_100bp", "depth_ask_usd_100bp")
USD_COLUMNS = ("volume_usd", "taker_buy_usd", "taker_sell_usd", "long_liq_usd", "short_liq_usd", "max_liq_usd")
COUNT_COLUMNS = ("trade_count", "long_liq_count", "short_liq_count")
KEY_COLUMNS = ("base", "exchange", "symbol", "kind", "minute_ts")
ANALYTICS_BAR_COLUMNS = KEY_COLUMNS + FLOAT_COLUMNS + USD_COLUMNS + COUNT_COLUMNS

Columns = dict[str, np.ndarray]


def bar_kinds(config: AnalyticsConfig) -> tuple[str, ...]:
    """Instrument kinds the analytics read: the panel's and the OI venue series'."""
    return tuple(sorted(set(config.symbol_kinds) | set(OI_VENUE_KINDS)))


class AnalyticsTransform(beam.PTransform):
    """Base of the analytic composites: ``config`` (default AnalyticsConfig()), ``emit_from_us``
    (rows at or before it are lookback context, not emitted again) and, for the cascade
    detector, ``oi_reference`` (see DetectCascades)."""

    def __init__(
        self,
        config: AnalyticsConfig | None = None,
        emit_from_us: int | None = None,
        oi_reference: beam.PCollection | None = None,
    ) -> None:
        super().__init__()
        self.config = config or AnalyticsConfig()
        self.emit_from_us = emit_from_us
        self.oi_reference = oi_reference


def ffill_limited(values: np.ndarray, limit: int) -> np.ndarray:
    """Forward-fill NaNs along the last axis, at most ``limit`` steps past the last value."""
    values = np.asarray(values, dtype=float)
    n = values.shape[-1]
    idx = np.where(~np.isnan(values), np.arange(n), -1)
    last = np.maximum.accumulate(idx, axis=-1)
    filled = np.take_along_axis(values, np.maximum(last, 0), axis=-1)
    ok = (last >= 0) & (np.arange(n) - last <= limit)
    return np.where(ok, filled, np.nan)


def scope_depth(venue_depth: np.ndarray, max_stale: int) -> np.ndarray:
    """(venues, minutes) of each venue's depth in its minutes with a book_depth record (NaN
    elsewhere) -> the scope's depth per minute: each venue's last depth carried forward at most
    ``max_stale`` minutes, summed over the venues with a known depth; NaN when none has one."""
    ff = ffill_limited(np.asarray(venue_depth, dtype=float), max_stale)
    known = ~np.isnan(ff)
    return np.where(known.any(axis=0), np.nansum(ff, axis=0), np.nan)


def usd_micros(values: np.ndarray) -> np.ndarray:
    """USD floats -> int64 micro-USD, NaN (a null) -> 0: ``int(round(v * 1e6))`` per value
    (numpy's round is half-to-even like Python's, so the sums match the row path exactly)."""
    v = np.asarray(values, dtype=float)
    return np.where(np.isnan(v), 0.0, np.round(v * USD_MICROS)).astype(np.int64)


# ---- columns: the one input shape of the panel builder -------------------------------------------
def _empty_columns() -> Columns:
    cols: Columns = {k: np.array([], dtype=object) for k in ("exchange", "symbol", "kind")}
    cols["minute"] = np.array([], dtype=np.int64)
    for k in FLOAT_COLUMNS + USD_COLUMNS:
        cols[k] = np.array([], dtype=float)
    for k in COUNT_COLUMNS:
        cols[k] = np.array([], dtype=np.int64)
    return cols


def columns_from_rows(rows: Iterable[dict]) -> Columns:
    """Bar row dicts -> columns (None -> NaN for values, 0 for counts; times -> epoch micros)."""
    rows = list(rows)
    if not rows:
        return _empty_columns()
    cols: Columns = {k: np.array([r[k] for r in rows], dtype=object) for k in ("exchange", "symbol", "kind")}
    cols["minute"] = np.array([ts_to_micros(r["minute_ts"]) for r in rows], dtype=np.int64)
    for k in FLOAT_COLUMNS + USD_COLUMNS:
        # None -> NaN (numpy converts it for a float dtype); a missing column reads as None
        cols[k] = np.array([r.get(k) for r in rows], dtype=float)
    for k in COUNT_COLUMNS:
        cols[k] = np.array([r.get(k) or 0 for r in rows], dtype=np.int64)
    return cols


def columns_from_arrow(table: pa.Table) -> Columns:
    """A bars_1m Arrow table (any subset of its columns beyond the keys) -> columns.

    Timestamps become epoch micros and decimals float64 exactly as :func:`pipelines.sinks.plain_columns`
    turns them for the row path, so both paths see the same values."""
    import pyarrow.compute as pc

    n = table.num_rows
    names = set(table.column_names)

    def arr(name: str) -> pa.ChunkedArray | None:
        if name not in names:
            return None
        col = table.column(name)
        t = col.type
        if pa.types.is_dictionary(t):  # e.g. a hive partition column
            col = col.cast(t.value_type)
        elif pa.types.is_timestamp(t):
            col = col.cast(pa.timestamp("us", tz=t.tz)).cast(pa.int64())
        elif pa.types.is_decimal(t):
            col = col.cast(pa.float64())
        return col

    cols: Columns = {}
    for k in ("exchange", "symbol", "kind"):
        cols[k] = np.asarray(arr(k).to_numpy(zero_copy_only=False), dtype=object)
    cols["minute"] = arr("minute_ts").to_numpy().astype(np.int64)
    for k in FLOAT_COLUMNS + USD_COLUMNS:
        a = arr(k)
        cols[k] = np.full(n, np.nan) if a is None else np.asarray(
            pc.fill_null(a.cast(pa.float64()), np.nan).to_numpy(), dtype=float)
    for k in COUNT_COLUMNS:
        a = arr(k)
        cols[k] = np.zeros(n, dtype=np.int64) if a is None else np.asarray(
            pc.fill_null(a.cast(pa.int64()), 0).to_numpy(), dtype=np.int64)
    return cols


def _select(cols: Columns, mask: np.ndarray) -> Columns:
    return {k: v[mask] for k, v in cols.items()}


def _venue_index(cols: Columns) -> tuple[list[tuple[str, str]], np.ndarray]:
    """Sorted distinct (exchange, symbol) pairs and each row's index into them."""
    pairs = list(zip(cols["exchange"].tolist(), cols["symbol"].tolist(), strict=True))
    venues = sorted(set(pairs))
    vidx = {v: i for i, v in enumerate(venues)}
    return venues, np.fromiter((vidx[p] for p in pairs), dtype=np.int64, count=len(pairs))


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
    #: USD resting within 100 bp of the mid, bids / asks, summed over the venues with a known
    #: (carried, config.depth_max_stale_minutes) book_depth; NaN when none (scope_depth)
    bid_depth_usd: np.ndarray
    ask_depth_usd: np.ndarray
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


def panel_before(panel: SymbolPanel, end_us: int) -> SymbolPanel | None:
    """The panel's minutes before ``end_us`` (every per-minute array cut along its last axis),
    None when none is. The stream job's cascade detector reads the closed minutes only: the open
    minute's partial bar goes to the open-minute watch instead (ADR 018)."""
    keep = int(np.searchsorted(panel.minutes, end_us, side="left"))
    if keep == 0:
        return None
    n = len(panel.minutes)
    if keep == n:
        return panel
    cut = {f.name: getattr(panel, f.name)[..., :keep] for f in fields(panel)
           if isinstance(getattr(panel, f.name), np.ndarray) and getattr(panel, f.name).shape[-1:] == (n,)}
    return replace(panel, **cut)


def panel_from_columns(base: str, cols: Columns, config: AnalyticsConfig) -> SymbolPanel | None:
    """The panel of one base from its bar columns (rows of other kinds than symbol_kinds are ignored)."""
    cols = _select(cols, np.isin(cols["kind"], list(config.symbol_kinds)))
    if len(cols["minute"]) == 0:
        return None
    bar_us = config.bar_us
    mins = cols["minute"]
    m0, m1 = int(mins.min()), int(mins.max())
    n = (m1 - m0) // bar_us + 1
    minutes = m0 + np.arange(n, dtype=np.int64) * bar_us
    venues, vi = _venue_index(cols)
    nv = len(venues)
    j = (mins - m0) // bar_us

    def mat(values: np.ndarray, fill: Any = np.nan, dtype: Any = float) -> np.ndarray:
        m = np.full((nv, n), fill, dtype=dtype)
        m[vi, j] = values  # one bar per (venue symbol, minute): the mart's key
        return m

    # a minute without trades has no close: the venue's mark price stands in
    close = mat(np.where(np.isnan(cols["close"]), cols["mark_price_last"], cols["close"]))
    high, low = mat(cols["high"]), mat(cols["low"])
    oi_usd, oi_base, funding = mat(cols["oi_last_usd"]), mat(cols["oi_last"]), mat(cols["funding_rate_last"])
    has = mat(np.ones(len(mins), dtype=bool), False, bool)
    ints = {k: mat(usd_micros(cols[k]), 0, np.int64) for k in USD_COLUMNS}
    ints.update({k: mat(cols[k], 0, np.int64) for k in COUNT_COLUMNS})
    vol_base = mat(np.nan_to_num(cols["volume_base"], nan=0.0), 0.0)

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
        bid_depth_usd=scope_depth(mat(cols["depth_bid_usd_100bp"]), config.depth_max_stale_minutes),
        ask_depth_usd=scope_depth(mat(cols["depth_ask_usd_100bp"]), config.depth_max_stale_minutes),
        oi_venues=oi_any.sum(axis=0),
        funding_rate=fmean,
        venue_long_liq_micros=ints["long_liq_usd"],
        venue_short_liq_micros=ints["short_liq_usd"],
        venues_with_bar=has.sum(axis=0),
    )


def build_symbol_panel(base: str, rows: Iterable[dict], config: AnalyticsConfig) -> SymbolPanel | None:
    """The panel of one base from bar row dicts (the row entry point of :func:`panel_from_arrow`)."""
    return panel_from_columns(base, columns_from_rows(rows), config)


def panel_from_arrow(base: str, table: pa.Table, config: AnalyticsConfig) -> SymbolPanel | None:
    """The panel of one base from an Arrow table of its bars_1m rows (minute_ts a timestamp or
    int micros; money as decimal or float), vectorized: the same panel as :func:`build_symbol_panel`."""
    return panel_from_columns(base, columns_from_arrow(table), config)


# ---- the per-base element every analytic consumes ------------------------------------------------
@dataclass
class VenueSeries:
    """One venue symbol's (perpetual or future) OI and price per contiguous minute, carried forward
    ``ffill_max_minutes``: what oi_deltas' venue level needs."""

    exchange: str
    symbol: str
    base: str
    minutes: np.ndarray
    oi_usd: np.ndarray
    oi_base: np.ndarray
    price: np.ndarray


def venue_series_from_columns(base: str, cols: Columns, config: AnalyticsConfig) -> list[VenueSeries]:
    cols = _select(cols, np.isin(cols["kind"], list(OI_VENUE_KINDS)))
    if len(cols["minute"]) == 0:
        return []
    bar_us, lim = config.bar_us, config.ffill_max_minutes
    venues, vi = _venue_index(cols)
    price_all = np.where(np.isnan(cols["close"]), cols["mark_price_last"], cols["close"])
    out = []
    for k, (exchange, symbol) in enumerate(venues):
        sel = vi == k
        mins = cols["minute"][sel]
        m0 = int(mins.min())
        n = (int(mins.max()) - m0) // bar_us + 1
        j = (mins - m0) // bar_us

        def series(values: np.ndarray, j: np.ndarray = j, n: int = n) -> np.ndarray:
            s = np.full(n, np.nan)
            s[j] = values
            return ffill_limited(s, lim)

        out.append(VenueSeries(exchange, symbol, base, m0 + np.arange(n, dtype=np.int64) * bar_us,
                               series(cols["oi_last_usd"][sel]), series(cols["oi_last"][sel]),
                               series(price_all[sel])))
    return out


@dataclass
class BaseBars:
    """One base's analytics input: its cross-venue panel (None when it has no bar of
    ``symbol_kinds``) and its perpetual/future venue series."""

    base: str
    panel: SymbolPanel | None
    venue_series: list[VenueSeries]


def base_bars_from_columns(base: str, cols: Columns, config: AnalyticsConfig) -> BaseBars:
    return BaseBars(base, panel_from_columns(base, cols, config), venue_series_from_columns(base, cols, config))


def base_bars_from_arrow(base: str, table: pa.Table, config: AnalyticsConfig) -> BaseBars:
    return base_bars_from_columns(base, columns_from_arrow(table), config)


class _ColumnsCombineFn(beam.CombineFn):
    """Bar rows of one base -> its columns. A CombineFn rather than a GroupByKey of rows: the runner
    lifts it before the shuffle, so what crosses the data plane is a few numpy arrays per base and
    bundle (``compact``), not one pickled 40-column dict per bar."""

    _STR = ("exchange", "symbol", "kind")

    def create_accumulator(self) -> list:
        return [[]]  # [pending rows (only the analytics' fields), columns chunks...]

    def add_input(self, acc: list, row: dict) -> list:
        acc[0].append(row)
        return acc

    def compact(self, acc: list) -> list:
        if acc[0]:
            acc = [[], *acc[1:], columns_from_rows(acc[0])]
        return acc

    def merge_accumulators(self, accs: Iterable[list]) -> list:
        merged: list = [[]]
        for a in accs:
            merged[0].extend(a[0])
            merged.extend(a[1:])
        return merged

    def extract_output(self, acc: list) -> Columns:
        chunks = self.compact(acc)[1:]
        if not chunks:
            return _empty_columns()
        return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


class _BaseBarsFn:
    def __init__(self, config: AnalyticsConfig) -> None:
        self.config = config

    def __call__(self, keyed: tuple[str, Columns]) -> tuple[str, BaseBars]:
        base, cols = keyed
        return base, base_bars_from_columns(base, cols, self.config)


class BasePanels(beam.PTransform):
    """bars_1m rows -> (base, BaseBars): every base grouped and aggregated once, for all analytics.

    Keeps rows of ``symbol_kinds`` (the panel) and of perpetuals/futures (OI venue series)."""

    def __init__(self, config: AnalyticsConfig | None = None) -> None:
        super().__init__()
        self.config = config or AnalyticsConfig()

    def expand(self, bars: beam.PCollection) -> beam.PCollection:
        kinds = bar_kinds(self.config)
        return (
            bars
            | "AnalyticsKinds" >> beam.Filter(lambda r: r["kind"] in kinds)
            | "ByBase" >> beam.Map(lambda r: (r["base"], r))
            | "ColumnsPerBase" >> beam.CombinePerKey(_ColumnsCombineFn())
            | "BaseBars" >> beam.Map(_BaseBarsFn(self.config))
        )


def read_bar_files(paths: Iterable[str]) -> pa.Table:
    """One base's exported bar files as one Arrow table (each file read as written: no hive
    partition discovery from its directory name)."""
    import pyarrow.parquet as pq

    tables = [pq.ParquetFile(p).read() for p in paths]
    return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]


class _ReadBaseBars(beam.DoFn):
    def __init__(self, config: AnalyticsConfig) -> None:
        self.config = config

    def process(self, item: tuple[str, list[str]]) -> Iterator[tuple[str, BaseBars]]:
        base, paths = item
        table = read_bar_files(paths)
        if table.num_rows:
            yield base, base_bars_from_arrow(base, table, self.config)


def base_file_items(files_by_base: Any) -> list[tuple[str, list[str]]]:
    """{base: [files]} (or a RunParam of it, read now) -> sorted (base, [files]) of the bases with files."""
    return sorted((b, [str(p) for p in ps]) for b, ps in resolve(files_by_base).items() if ps)


class ReadBasePanels(beam.PTransform):
    """{base: [Parquet files of its bars]} -> (base, BaseBars), read and aggregated inside a DoFn:
    only the paths are created, no bar row goes through Beam (see ``export_bars_by_base`` in
    pipelines/jobs/load.py for the files). ``files_by_base`` may be a RunParam: the bases and
    their files are then those of the run (ADR 045)."""

    def __init__(self, files_by_base: Any, config: AnalyticsConfig | None = None) -> None:
        super().__init__()
        self._files = files_by_base if isinstance(files_by_base, RunParam) else base_file_items(files_by_base)
        self.config = config or AnalyticsConfig()

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (values_at_run(pbegin, "BaseFiles", self._files, _base_items)
                | "ReadBaseBars" >> beam.ParDo(_ReadBaseBars(self.config)))


def _base_items(files: Any) -> list[tuple[str, list[str]]]:
    return files if isinstance(files, list) else base_file_items(files)  # items, or a RunParam of the map


# ---- bars_1m_symbol -------------------------------------------------------------------------------
def _none(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)


def _opt(values: np.ndarray) -> list[float | None]:
    return [None if v != v else v for v in np.asarray(values, dtype=float).tolist()]  # NaN -> None


def symbol_bar_rows(panel: SymbolPanel, emit_from_us: int | None = None) -> list[dict[str, Any]]:
    """bars_1m_symbol rows: one per base and minute that has at least one venue bar.

    Columns are turned into Python values once (``tolist``) rather than per row and field."""
    keep = panel.has_bar.copy()
    if emit_from_us is not None:
        keep &= panel.minutes >= emit_from_us
    if not keep.any():
        return []

    def usd(micros: np.ndarray) -> list[float]:
        return [v / USD_MICROS for v in micros[keep].tolist()]  # int / int: the row path's rounding

    def ints(a: np.ndarray) -> list[int]:
        return [int(v) for v in a[keep].tolist()]

    cols = {
        "venues": ints(panel.venues_with_bar),
        "price": _opt(panel.price[keep]),
        "price_vwap": _opt(panel.price_vwap[keep]),
        "high": _opt(panel.high[keep]),
        "low": _opt(panel.low[keep]),
        "volume_base": np.asarray(panel.volume_base[keep], dtype=float).tolist(),
        "volume_usd": usd(panel.volume_usd_micros),
        "trade_count": ints(panel.trade_count),
        "taker_buy_usd": usd(panel.taker_buy_usd_micros),
        "taker_sell_usd": usd(panel.taker_sell_usd_micros),
        "long_liq_count": ints(panel.long_liq_count),
        "long_liq_usd": usd(panel.long_liq_usd_micros),
        "short_liq_count": ints(panel.short_liq_count),
        "short_liq_usd": usd(panel.short_liq_usd_micros),
        "max_liq_usd": usd(panel.max_liq_usd_micros),
        "oi_usd": _opt(panel.oi_usd[keep]),
        "oi_base": _opt(panel.oi_base[keep]),
        "oi_venues": ints(panel.oi_venues),
        "funding_rate": _opt(panel.funding_rate[keep]),
    }
    names = list(cols)
    base, ref = panel.base, panel.reference_venue
    return [
        {"minute_ts": micros_to_ts(m), "base": base, "reference_venue": ref, **dict(zip(names, vals, strict=True))}
        for m, *vals in zip(panel.minutes[keep].tolist(), *cols.values(), strict=True)
    ]


class _SymbolBarsFn:
    def __init__(self, emit_from_us: int | None) -> None:
        self.emit_from_us = emit_from_us

    def __call__(self, keyed: tuple[str, BaseBars]) -> list[dict[str, Any]]:
        panel = keyed[1].panel
        return [] if panel is None else symbol_bar_rows(panel, resolve(self.emit_from_us))


class SymbolBarsFromPanels(beam.PTransform):
    """(base, BaseBars) -> bars_1m_symbol rows."""

    def __init__(self, emit_from_us: int | None = None) -> None:
        super().__init__()
        self.emit_from_us = emit_from_us

    def expand(self, panels: beam.PCollection) -> beam.PCollection:
        return panels | "SymbolRows" >> beam.FlatMap(_SymbolBarsFn(self.emit_from_us))


class ComputeSymbolBars(AnalyticsTransform):
    """bars_1m rows -> bars_1m_symbol rows (one per base and minute, perpetuals across venues).

    Grouped per base because the OI carry-forward is sequential over minutes; the input should
    hold ``ffill_max_minutes`` of lookback before ``emit_from_us``.
    """

    def expand(self, bars: beam.PCollection) -> beam.PCollection:
        return (
            bars
            | "BasePanels" >> BasePanels(self.config)
            | "Aggregate" >> SymbolBarsFromPanels(self.emit_from_us)
        )
