"""ComputeBars: normalized events -> ``bars_1m`` (one row per exchange, symbol and minute).

Vectorized as measured in ARCHITECTURE.md: each input element is a pyarrow RecordBatch/Table of
ONE event type (schemas differ per type). Beam moves few, large Arrow elements, never one element
per bar: a DoFn splits each batch into per-instrument sub-tables (``split_by_instrument``), a
``GroupByKey`` on (exchange, symbol) gathers an instrument's tables of every batch and event type,
and ``instrument_bars`` aggregates each event type once with ``Table.group_by`` (``bar_aggregates``)
and assembles the instrument's rows column-wise; where stored bars (``prior_bars``) or several
(base, quote, kind) meet, the aggregates become partial bars (``partial_bars``) merged per minute
(``merge_partials``), the semantics both paths share. The merge is associative and commutative,
so neither the batching nor the merge order changes a bar:

* sums and counts are integers (USD as int64 micro-USD, each event rounded half-to-even once);
* first/last values are chosen by a total order on (event_time, value...) tuples, so two events
  with the same event_time resolve the same way whatever the batch or merge order
  (open = lowest price among the earliest trades, close = highest price among the latest).

* ``volume_base`` (base units, a float sum before issue 23, whose last bits depended on how a
  minute's trades were split across cycles) is summed exactly in 1e-12 units (``BASE_SCALE``):
  ``volume_base_exact`` (DECIMAL) keeps the sum for later merges, ``volume_base`` is its nearest double.

A stored bar can be turned back into a partial (``bar_row_to_partial``), so a streaming cycle
merges the new events of a minute into the bar already in the mart (``prior_bars``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator
from decimal import Decimal
from functools import cache
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import Duration
from apache_beam.utils.windowed_value import WindowedValue

from pipelines.transforms.config import BASE_SCALE, MINUTE_US, USD_MICROS, AnalyticsConfig

EPOCH = dt.datetime(1970, 1, 1)
NEG_INF = float("-inf")
EVENT_TYPE_META = b"event_type"


# ---------------------------------------------------------------------------------------------
# time helpers: rows carry naive-UTC datetimes (what DuckDB TIMESTAMP round-trips), the maths
# uses epoch microseconds.
# ---------------------------------------------------------------------------------------------
def micros_to_ts(us: int | None) -> dt.datetime | None:
    return None if us is None else EPOCH + dt.timedelta(microseconds=int(us))


def ts_to_micros(value: Any) -> int | None:
    """Epoch micros from an int (already micros), a naive-UTC or an aware datetime."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        delta = value - EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return int(value)


# ---------------------------------------------------------------------------------------------
# record batches
# ---------------------------------------------------------------------------------------------
def _avro_to_arrow(avro_type: Any) -> pa.DataType:
    if isinstance(avro_type, list):  # ["null", X]
        (inner,) = [t for t in avro_type if t != "null"]
        return _avro_to_arrow(inner)
    if isinstance(avro_type, dict):
        if avro_type.get("type") == "enum":
            return pa.string()
        return _avro_to_arrow(avro_type["type"])
    return {
        "string": pa.string(),
        "long": pa.int64(),
        "int": pa.int32(),
        "double": pa.float64(),
        "float": pa.float32(),
        "boolean": pa.bool_(),
        "bytes": pa.binary(),
    }[avro_type]


@cache
def arrow_schema(event_type: str) -> pa.Schema:
    """Arrow schema of an event type, derived from its newest Avro schema (the contract)."""
    from schemas import latest

    fields = [pa.field(f["name"], _avro_to_arrow(f["type"])) for f in latest(event_type).raw["fields"]]
    return pa.schema(fields, metadata={EVENT_TYPE_META: event_type.encode()})


def records_to_batches(event_type: str, records: Iterable[dict]) -> pa.RecordBatch:
    """One RecordBatch of normalized records (dicts as in schemas/*.avsc) of one event type."""
    return pa.RecordBatch.from_pylist(list(records), schema=arrow_schema(event_type))


def event_type_of(batch: pa.RecordBatch | pa.Table) -> str:
    meta = batch.schema.metadata or {}
    if EVENT_TYPE_META in meta:
        return meta[EVENT_TYPE_META].decode()
    names = set(batch.schema.names)
    for event_type, marker in (
        ("trade", "taker_side"),
        ("liquidation", "side"),
        ("open_interest", "open_interest"),
        ("funding", "mark_price"),
        ("book_depth", "bid_usd_100bp"),
    ):
        if marker in names:
            return event_type
    raise ValueError(f"cannot tell the event type of a batch with columns {sorted(names)}")


class BuildRecordBatches(beam.DoFn):
    """A list of (event_type, record) -> one RecordBatch per event type in it."""

    def process(self, elements: list[tuple[str, dict]]) -> Iterator[pa.RecordBatch]:
        by_type: dict[str, list[dict]] = {}
        for event_type, record in elements:
            by_type.setdefault(event_type, []).append(record)
        for event_type in sorted(by_type):
            yield records_to_batches(event_type, by_type[event_type])


class RecordsToBatches(beam.PTransform):
    """(event_type, record) elements -> RecordBatches, for sources that yield one record at a
    time. BatchElements is window-aware, so batches never straddle event-time windows."""

    def __init__(self, min_batch_size: int = 256, max_batch_size: int = 50_000) -> None:
        super().__init__()
        self.min_batch_size = min_batch_size
        self.max_batch_size = max_batch_size

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return (
            records
            | "Batch" >> beam.BatchElements(min_batch_size=self.min_batch_size, max_batch_size=self.max_batch_size)
            | "ToArrow" >> beam.ParDo(BuildRecordBatches())
        )


# ---------------------------------------------------------------------------------------------
# partial bars
# ---------------------------------------------------------------------------------------------
PartialBar = dict[str, Any]
BarKey = tuple[str, str, int]  # (exchange, symbol, minute start in epoch micros)

_SUMS = (
    "volume_usd",
    "trade_count",
    "taker_buy_usd",
    "taker_sell_usd",
    "long_liq_count",
    "long_liq_usd",
    "short_liq_count",
    "short_liq_usd",
    "liquidation_events",
    "oi_events",
    "funding_events",
    "depth_events",
)


def _order_key(values: tuple | None) -> tuple:
    return tuple(NEG_INF if v is None else v for v in values)  # type: ignore[union-attr]


def _first(a: tuple | None, b: tuple | None) -> tuple | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if _order_key(a) <= _order_key(b) else b


def _last(a: tuple | None, b: tuple | None) -> tuple | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if _order_key(a) >= _order_key(b) else b


def _opt(fn, a, b):
    if a is None:
        return b
    if b is None:
        return a
    return fn(a, b)


_EMPTY: PartialBar = {
    **{s: 0 for s in _SUMS},
    "open": None,
    "close": None,
    "high": None,
    "low": None,
    "volume_base": 0,  # int, 1e-12 base units
    "max_liq_usd": None,
    "oi_first": None,
    "oi_last": None,
    "funding_last": None,
    "depth_last": None,  # (event_time, bid USD within 100 bp, ask USD within 100 bp)
}


def empty_partial(exchange: str, symbol: str, minute: int, ident: tuple[str, str, str]) -> PartialBar:
    p = _EMPTY.copy()  # one C-level copy: this runs once per (instrument, minute) group
    p["exchange"], p["symbol"], p["minute"], p["ident"] = exchange, symbol, minute, ident
    return p


def merge_partials(a: PartialBar | None, b: PartialBar | None) -> PartialBar | None:
    if a is None:
        return b
    if b is None:
        return a
    out = {s: a[s] + b[s] for s in _SUMS}
    out.update(
        exchange=a["exchange"],
        symbol=a["symbol"],
        minute=a["minute"],
        ident=min(a["ident"], b["ident"]),
        open=_first(a["open"], b["open"]),
        close=_last(a["close"], b["close"]),
        high=_opt(max, a["high"], b["high"]),
        low=_opt(min, a["low"], b["low"]),
        volume_base=a["volume_base"] + b["volume_base"],
        max_liq_usd=_opt(max, a["max_liq_usd"], b["max_liq_usd"]),
        oi_first=_first(a["oi_first"], b["oi_first"]),
        oi_last=_last(a["oi_last"], b["oi_last"]),
        funding_last=_last(a["funding_last"], b["funding_last"]),
        depth_last=_last(a["depth_last"], b["depth_last"]),
    )
    return out


_GROUP = ["exchange", "symbol", "minute", "base", "quote", "kind"]


_BASE_DECIMAL = pa.decimal128(38, BASE_SCALE)


def _base_units(value: Decimal | str | None) -> int:
    """A DECIMAL(38, 12) sum (or its text) -> exact int of 1e-12 base units (Decimal arithmetic would
    round to 28 digits; a float would have lost digits already)."""
    if value is None:
        return 0
    if isinstance(value, float):
        raise TypeError("volume_base_exact arrived as a float: export it as text (see load._phase_events)")
    num, den = Decimal(value).as_integer_ratio()
    return num * 10**BASE_SCALE // den


def _base_decimal(units: int) -> Decimal:
    return Decimal(f"{units}e-{BASE_SCALE}")  # from a string: exact, no context rounding


def _usd_micros(col: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.cast(pc.round(pc.multiply(col, float(USD_MICROS)), round_mode="half_to_even"), pa.int64())


def _is_identity(order: pa.Array) -> bool:
    import numpy as np

    idx = order.to_numpy()
    return bool(len(idx) == 0 or (idx[0] == 0 and np.all(np.diff(idx) == 1)))


def _grouped(
    table: pa.Table, bar_us: int, extra: dict[str, Any], sort_cols: list[str], aggs: list, keys: list[str]
) -> pa.Table:
    minute = pc.multiply(pc.divide(table["event_time"], pa.scalar(bar_us, pa.int64())), pa.scalar(bar_us, pa.int64()))
    table = table.append_column("minute", minute)
    for name, col in extra.items():
        table = table.append_column(name, col(table) if callable(col) else col)
    # ordered aggregations ("first"/"last") follow input order only single-threaded; a group's
    # rows keep the order of the sort whatever the other keys, so sorting by minute first
    # suffices (and spares comparing venue strings)
    order = pc.sort_indices(table, [(c, "ascending") for c in ["minute", *sort_cols]])
    # only the columns the group_by reads, each taken on its own: Table.take of the whole table
    # (strings, dictionaries, decimals) measured 5x the sum of the columns' takes
    wanted = dict.fromkeys([*keys, *(a[0] for a in aggs)])
    if _is_identity(order):  # events already in order (an archive day usually is): nothing to move
        table = table.select(list(wanted))
    else:
        table = pa.table({c: table[c].take(order) for c in wanted})
    return table.group_by(keys, use_threads=False).aggregate(aggs)


_KEEP_NULLS = pc.ScalarAggregateOptions(skip_nulls=False)


def bar_aggregates(table: pa.Table, event_type: str, bar_us: int = MINUTE_US, keys: list[str] | None = None) -> pa.Table:
    """The per-minute aggregates of one event type's events (``Table.group_by``), one row per
    ``keys`` (default: exchange, symbol, minute, base, quote, kind): what ``partial_bars``
    turns into partial bars and ``instrument_bars`` assembles column-wise."""
    keys = keys or _GROUP
    if event_type == "trade":
        usd = _usd_micros(table["notional_usd"])
        is_buy = pc.equal(table["taker_side"], "buy")
        return _grouped(
            table,
            bar_us,
            {"usd": usd, "buy_usd": pc.if_else(is_buy, usd, 0), "sell_usd": pc.if_else(is_buy, 0, usd),
             # rounds each size to 1e-12 once; the sum is then exact (decimal128), in any order
             "size_units": pc.cast(table["size"], _BASE_DECIMAL, safe=False)},
            ["event_time", "price"],
            [
                ("event_time", "first"),
                ("price", "first"),
                ("event_time", "last"),
                ("price", "last"),
                ("price", "max"),
                ("price", "min"),
                ("size_units", "sum"),
                ("usd", "sum"),
                ("buy_usd", "sum"),
                ("sell_usd", "sum"),
                ("price", "count"),
            ],
            keys,
        )
    if event_type == "liquidation":
        usd = _usd_micros(table["notional_usd"])
        is_long = pc.equal(table["side"], "long")
        return _grouped(
            table,
            bar_us,
            {
                "usd": usd,
                "long_usd": pc.if_else(is_long, usd, 0),
                "short_usd": pc.if_else(is_long, 0, usd),
                "is_long": pc.cast(is_long, pa.int64()),
            },
            ["event_time"],
            [("usd", "max"), ("usd", "count"), ("long_usd", "sum"), ("short_usd", "sum"), ("is_long", "sum")],
            keys,
        )
    if event_type == "open_interest":
        return _grouped(
            table,
            bar_us,
            {"oi_usd_key": pc.fill_null(table["open_interest_usd"], NEG_INF)},
            ["event_time", "open_interest", "oi_usd_key"],
            [
                ("event_time", "first"),
                ("open_interest", "first"),
                ("open_interest_usd", "first", _KEEP_NULLS),
                ("event_time", "last"),
                ("open_interest", "last"),
                ("open_interest_usd", "last", _KEEP_NULLS),
                ("event_time", "count"),
            ],
            keys,
        )
    if event_type == "funding":
        return _grouped(
            table,
            bar_us,
            {
                "rate_key": pc.fill_null(table["funding_rate"], NEG_INF),
                "index_key": pc.fill_null(table["index_price"], NEG_INF),
            },
            ["event_time", "mark_price", "rate_key", "index_key"],
            [
                ("event_time", "last"),
                ("mark_price", "last"),
                ("funding_rate", "last", _KEEP_NULLS),
                ("index_price", "last", _KEEP_NULLS),
                ("event_time", "count"),
            ],
            keys,
        )
    if event_type == "book_depth":
        # the minute's last depth record; ties on event_time broken by the values (nulls first),
        # as _last orders the partials, so any split of the minute's records ends equal
        return _grouped(
            table,
            bar_us,
            {
                "bid_key": pc.fill_null(table["bid_usd_100bp"], NEG_INF),
                "ask_key": pc.fill_null(table["ask_usd_100bp"], NEG_INF),
            },
            ["event_time", "bid_key", "ask_key"],
            [
                ("event_time", "last"),
                ("bid_usd_100bp", "last", _KEEP_NULLS),
                ("ask_usd_100bp", "last", _KEEP_NULLS),
                ("event_time", "count"),
            ],
            keys,
        )
    raise ValueError(f"no bars for event type {event_type!r}")


def partial_bars(batch: pa.RecordBatch | pa.Table, bar_us: int = MINUTE_US) -> list[tuple[BarKey, PartialBar]]:
    """Aggregate one batch of one event type into partial bars (vectorized)."""
    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    if table.num_rows == 0:
        return []
    event_type = event_type_of(table)
    groups = bar_aggregates(table, event_type, bar_us).to_pylist()
    out: list[tuple[BarKey, PartialBar]] = []
    for g in groups:
        p = empty_partial(g["exchange"], g["symbol"], g["minute"], (g["base"], g["quote"], g["kind"]))
        if event_type == "trade":
            p.update(
                open=(g["event_time_first"], g["price_first"]),
                close=(g["event_time_last"], g["price_last"]),
                high=g["price_max"],
                low=g["price_min"],
                volume_base=_base_units(g["size_units_sum"]),
                volume_usd=g["usd_sum"],
                taker_buy_usd=g["buy_usd_sum"],
                taker_sell_usd=g["sell_usd_sum"],
                trade_count=g["price_count"],
            )
        elif event_type == "liquidation":
            n = g["usd_count"]
            p.update(
                long_liq_count=g["is_long_sum"],
                short_liq_count=n - g["is_long_sum"],
                long_liq_usd=g["long_usd_sum"],
                short_liq_usd=g["short_usd_sum"],
                max_liq_usd=g["usd_max"],
                liquidation_events=n,
            )
        elif event_type == "open_interest":
            p.update(
                oi_first=(g["event_time_first"], g["open_interest_first"], g["open_interest_usd_first"]),
                oi_last=(g["event_time_last"], g["open_interest_last"], g["open_interest_usd_last"]),
                oi_events=g["event_time_count"],
            )
        elif event_type == "funding":
            p.update(
                funding_last=(g["event_time_last"], g["mark_price_last"], g["funding_rate_last"], g["index_price_last"]),
                funding_events=g["event_time_count"],
            )
        else:  # book_depth
            p.update(
                depth_last=(g["event_time_last"], g["bid_usd_100bp_last"], g["ask_usd_100bp_last"]),
                depth_events=g["event_time_count"],
            )
        out.append(((g["exchange"], g["symbol"], g["minute"]), p))
    return out


def _usd(micros: int | None) -> float | None:
    return None if micros is None else micros / USD_MICROS


def partial_to_row(p: PartialBar) -> dict[str, Any]:
    """The bars_1m row of a (merged) partial bar."""
    base, quote, kind = p["ident"]
    close = p["close"][1] if p["close"] else None

    def oi_usd(snap: tuple | None) -> float | None:
        if snap is None:
            return None
        if snap[2] is not None:
            return snap[2]
        # OI message without a price: value it at the minute's close, else the mark
        ref = close if close is not None else (p["funding_last"][1] if p["funding_last"] else None)
        return None if ref is None else snap[1] * ref

    fl, dl = p["funding_last"], p["depth_last"]
    return {
        "minute_ts": micros_to_ts(p["minute"]),
        "exchange": p["exchange"],
        "symbol": p["symbol"],
        "base": base,
        "quote": quote,
        "kind": kind,
        "open": p["open"][1] if p["open"] else None,
        "high": p["high"],
        "low": p["low"],
        "close": close,
        "first_trade_ts": micros_to_ts(p["open"][0]) if p["open"] else None,
        "last_trade_ts": micros_to_ts(p["close"][0]) if p["close"] else None,
        "volume_base": p["volume_base"] / 10**BASE_SCALE,  # int / int: the correctly rounded double
        "volume_usd": _usd(p["volume_usd"]),
        "trade_count": p["trade_count"],
        "taker_buy_usd": _usd(p["taker_buy_usd"]),
        "taker_sell_usd": _usd(p["taker_sell_usd"]),
        "long_liq_count": p["long_liq_count"],
        "long_liq_usd": _usd(p["long_liq_usd"]),
        "short_liq_count": p["short_liq_count"],
        "short_liq_usd": _usd(p["short_liq_usd"]),
        "max_liq_usd": _usd(p["max_liq_usd"]),
        "oi_first": p["oi_first"][1] if p["oi_first"] else None,
        "oi_last": p["oi_last"][1] if p["oi_last"] else None,
        "oi_first_usd": oi_usd(p["oi_first"]),
        "oi_last_usd": oi_usd(p["oi_last"]),
        # the venue's own USD value (null when its message had no price): what a merge starts from,
        # so a minute finished in a later cycle is valued at its final close, as a backfill values it
        "oi_first_usd_reported": p["oi_first"][2] if p["oi_first"] else None,
        "oi_last_usd_reported": p["oi_last"][2] if p["oi_last"] else None,
        "oi_first_ts": micros_to_ts(p["oi_first"][0]) if p["oi_first"] else None,
        "oi_last_ts": micros_to_ts(p["oi_last"][0]) if p["oi_last"] else None,
        "funding_rate_last": fl[2] if fl else None,
        "mark_price_last": fl[1] if fl else None,
        "index_price_last": fl[3] if fl else None,
        "funding_ts": micros_to_ts(fl[0]) if fl else None,
        "liquidation_events": p["liquidation_events"],
        "oi_events": p["oi_events"],
        "funding_events": p["funding_events"],
        "volume_base_exact": _base_decimal(p["volume_base"]),
        # the minute's last book_depth record (migration 0020): USD resting within 100 bp of the mid
        "depth_bid_usd_100bp": dl[1] if dl else None,
        "depth_ask_usd_100bp": dl[2] if dl else None,
        "depth_ts": micros_to_ts(dl[0]) if dl else None,
        "depth_events": p["depth_events"],
    }


BAR_COLUMNS: tuple[str, ...] = tuple(
    partial_to_row(empty_partial("x", "y", 0, ("B", "Q", "perpetual"))).keys()
)


def _micros_or_none(v: float | None) -> int | None:
    return None if v is None else int(round(v * USD_MICROS))


def bar_row_to_partial(row: dict[str, Any]) -> tuple[BarKey, PartialBar]:
    """A stored bars_1m row back to a partial, to merge a streaming cycle's new events into it.

    The OI USD comes back as the venue reported it (``oi_*_usd_reported``); a value that was
    derived from the minute's close is derived again from the merged close, so a minute split
    across streaming cycles ends equal to the same minute computed in one pass (a backfill).
    """
    minute = ts_to_micros(row["minute_ts"])
    p = empty_partial(row["exchange"], row["symbol"], minute, (row["base"], row["quote"], row["kind"]))
    if row.get("open") is not None:
        p["open"] = (ts_to_micros(row["first_trade_ts"]), row["open"])
        p["close"] = (ts_to_micros(row["last_trade_ts"]), row["close"])
        p["high"], p["low"] = row["high"], row["low"]
    exact = row.get("volume_base_exact")
    # a bar stored before volume_base_exact existed (migration 0006) has only the double
    p["volume_base"] = (_base_units(exact) if exact is not None
                        else round((row.get("volume_base") or 0.0) * 10**BASE_SCALE))
    for col in ("volume_usd", "taker_buy_usd", "taker_sell_usd", "long_liq_usd", "short_liq_usd"):
        p[col] = _micros_or_none(row.get(col)) or 0
    for col in ("trade_count", "long_liq_count", "short_liq_count", "liquidation_events", "oi_events", "funding_events",
                "depth_events"):
        p[col] = int(row.get(col) or 0)
    p["max_liq_usd"] = _micros_or_none(row.get("max_liq_usd"))
    if row.get("oi_first") is not None:
        p["oi_first"] = (ts_to_micros(row["oi_first_ts"]), row["oi_first"], row.get("oi_first_usd_reported"))
        p["oi_last"] = (ts_to_micros(row["oi_last_ts"]), row["oi_last"], row.get("oi_last_usd_reported"))
    if row.get("mark_price_last") is not None:
        p["funding_last"] = (
            ts_to_micros(row["funding_ts"]),
            row["mark_price_last"],
            row.get("funding_rate_last"),
            row.get("index_price_last"),
        )
    if row.get("depth_ts") is not None:
        p["depth_last"] = (ts_to_micros(row["depth_ts"]), row.get("depth_bid_usd_100bp"), row.get("depth_ask_usd_100bp"))
    return (p["exchange"], p["symbol"], minute), p


# ---------------------------------------------------------------------------------------------
# per instrument: whole Arrow sub-tables through the data plane instead of one dict per bar
# ---------------------------------------------------------------------------------------------
InstrumentKey = tuple[str, str]  # (exchange, symbol)
Ident = tuple[str, str, str]  # (base, quote, kind)

_IDENT_COLUMNS = ("exchange", "symbol", "base", "quote", "kind")
IDENT_COLUMNS = _IDENT_COLUMNS  # the columns that name an instrument and its identity
#: the columns of each event type that bars read besides the instrument's: only these cross
#: the data plane (the instrument's strings ride once per table, in the key and the ident)
BAR_EVENT_COLUMNS: dict[str, tuple[str, ...]] = {
    "trade": ("event_time", "price", "size", "notional_usd", "taker_side"),
    "liquidation": ("event_time", "notional_usd", "side"),
    "open_interest": ("event_time", "open_interest", "open_interest_usd"),
    "funding": ("event_time", "mark_price", "funding_rate", "index_price"),
    "book_depth": ("event_time", "bid_usd_100bp", "ask_usd_100bp"),
}


def _plain(col: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.cast(col, col.type.value_type) if pa.types.is_dictionary(col.type) else col


def _with_event_type(table: pa.Table, event_type: str) -> pa.Table:
    return table.replace_schema_metadata({EVENT_TYPE_META: event_type.encode()})


def split_by_instrument(batch: pa.RecordBatch | pa.Table) -> list[tuple[InstrumentKey, Ident, pa.Table]]:
    """One batch of one event type -> ((exchange, symbol), (base, quote, kind), sub-table) per
    instrument (and, should a venue's metadata change within the batch, per ident) in it.

    Vectorized (dictionary codes, one stable argsort, one ``take`` per instrument), never a
    Python loop over rows. A sub-table holds the ``BAR_EVENT_COLUMNS`` of its event type, as a
    compact copy: a slice would pickle its parent's whole buffers when Beam encodes it.
    """
    import numpy as np

    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    if table.num_rows == 0:
        return []
    event_type = event_type_of(table)
    codes, names, radix = [], [], 1
    for name in _IDENT_COLUMNS:
        # a null is a value of its own, as it is a group of its own in Table.group_by
        enc = pc.dictionary_encode(_plain(table[name]).combine_chunks(), null_encoding="encode")
        codes.append(enc.indices.to_numpy().astype(np.int64))
        names.append(enc.dictionary.to_pylist())
        radix *= len(names[-1])
    if radix < 2**62:  # one mixed-radix int64 per row; else (absurd batches) a row-wise unique
        group = codes[0]
        for code, values in zip(codes[1:], names[1:], strict=True):
            group = group * len(values) + code
    else:
        group = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)[1].reshape(-1)
    if group.max() < 2**24:
        # renumbered densely (a batch holds a few dozen instruments), the groups fit uint16, which
        # NumPy's stable argsort radix-sorts: ~5x faster than on the int64 codes
        group = (np.cumsum(np.bincount(group) > 0) - 1)[group]
        if group.max() < 2**16:
            group = group.astype(np.uint16)
    order = np.argsort(group, kind="stable")
    starts = np.concatenate(([0], np.flatnonzero(np.diff(group[order])) + 1)).tolist()
    ends = [*starts[1:], len(order)]
    events = _with_event_type(
        pa.table([_plain(table[c]) for c in BAR_EVENT_COLUMNS[event_type]], names=list(BAR_EVENT_COLUMNS[event_type])),
        event_type,
    )
    out = []
    for start, end in zip(starts, ends, strict=True):
        row = int(order[start])
        exchange, symbol, base, quote, kind = (values[code[row]] for code, values in zip(codes, names, strict=True))
        out.append(((exchange, symbol), (base, quote, kind), events.take(pa.array(order[start:end]))))
    return out


def _py_values(col: pa.Array) -> list:
    """Python values of an int/float/timestamp[us] column, nulls as None (NumPy's tolist is
    several times faster than Arrow's to_pylist; timestamp[us] -> naive datetime, NaT -> None)."""
    import numpy as np

    if pa.types.is_timestamp(col.type):
        return col.to_numpy(zero_copy_only=False).tolist()
    values = pc.fill_null(col, 0).to_numpy(zero_copy_only=False).tolist() if col.null_count else col.to_numpy().tolist()
    if col.null_count:
        for i in np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False)).tolist():
            values[i] = None
    return values


def _exact_volumes(units_sum: pa.Array) -> tuple[pa.Array, pa.Array]:
    """A minute's summed base units (decimal128(38, 12), null = no trade) -> (``volume_base``, the
    nearest double of the exact sum, ``volume_base_exact``, the sum; 0 where null).

    The decimal's unscaled integer is read from its buffer (two's complement, low word first):
    where it fits 2**53, float(units) / 1e12 is one correctly rounded division of two exact
    doubles, i.e. Python's ``units / 10**12``; larger sums take that Python division."""
    import numpy as np

    dec = pc.fill_null(pc.cast(units_sum, _BASE_DECIMAL), pa.scalar(Decimal(0), _BASE_DECIMAL))
    if isinstance(dec, pa.ChunkedArray):
        dec = dec.combine_chunks()
    n = len(dec)
    words = np.frombuffer(dec.buffers()[1], dtype="<i8")[2 * dec.offset: 2 * (dec.offset + n)].reshape(n, 2)
    low, high = words[:, 0], words[:, 1]
    small = (high == (low >> 63)) & (np.abs(low) <= 2**53)
    volume = low.astype(np.float64) / float(10**BASE_SCALE)
    for i in np.flatnonzero(~small).tolist():
        volume[i] = _base_units(dec[i].as_py()) / 10**BASE_SCALE
    return pa.array(volume, pa.float64()), dec


def _bar_columns(aggs: dict[str, pa.Table], where: dict[str, pa.Array], n: int, minutes: pa.Array,
                 ident: dict[str, pa.Array | list]) -> dict[str, pa.Array | list]:
    """bars_1m's columns (``BAR_COLUMNS`` order) of ``n`` bars: ``minutes`` and the instrument
    columns in ``ident``, every other column from one event type's aggregates (``aggs[et]``, its
    row of each bar at ``where[et]``, null = no event of that type in the minute): what
    ``partial_to_row(merge_partials(...))`` gives, column-wise."""

    def agg(et: str, name: str, typ: pa.DataType) -> pa.Array:
        """aggregate ``name`` of event type ``et`` per minute, null where it had no event."""
        if et not in aggs:
            return pa.nulls(n, typ)
        return pc.cast(aggs[et][name].combine_chunks().take(where[et]), typ)

    f64, i64, ts = pa.float64(), pa.int64(), pa.timestamp("us")

    def usd(et: str, name: str) -> pa.Array:
        micros = agg(et, name, i64)
        biggest = pc.max(pc.abs(micros)).as_py()
        if biggest is not None and biggest > 2**53:
            # beyond float64's exact integers ($9e9 in a minute): Python's exact int division
            return pa.array([_usd(m) for m in micros.to_pylist()], f64)
        # below 2**53, float(micros) / 1e6 is exactly Python's micros / 1_000_000 (_usd)
        return pc.divide(pc.cast(micros, f64), float(USD_MICROS))

    def count(et: str, name: str) -> pa.Array:
        return pc.fill_null(agg(et, name, i64), 0)

    close = agg("trade", "price_last", f64)
    oi_first, oi_last = agg("open_interest", "open_interest_first", f64), agg("open_interest", "open_interest_last", f64)
    oi_first_rep = agg("open_interest", "open_interest_usd_first", f64)
    oi_last_rep = agg("open_interest", "open_interest_usd_last", f64)
    mark = agg("funding", "mark_price_last", f64)
    # OI message without a price: valued at the minute's close, else the mark (as partial_to_row)
    reference = pc.coalesce(close, mark)
    liq_events, long_count = count("liquidation", "usd_count"), count("liquidation", "is_long_sum")
    volume_base, volume_exact = _exact_volumes(agg("trade", "size_units_sum", _BASE_DECIMAL))
    columns: dict[str, pa.Array | list] = {
        "minute_ts": pc.cast(minutes, ts),
        **{name: ident[name] for name in ("exchange", "symbol", "base", "quote", "kind")},
        "open": agg("trade", "price_first", f64),
        "high": agg("trade", "price_max", f64),
        "low": agg("trade", "price_min", f64),
        "close": close,
        "first_trade_ts": agg("trade", "event_time_first", ts),
        "last_trade_ts": agg("trade", "event_time_last", ts),
        "volume_base": volume_base,
        "volume_usd": pc.fill_null(usd("trade", "usd_sum"), 0.0),
        "trade_count": count("trade", "price_count"),
        "taker_buy_usd": pc.fill_null(usd("trade", "buy_usd_sum"), 0.0),
        "taker_sell_usd": pc.fill_null(usd("trade", "sell_usd_sum"), 0.0),
        "long_liq_count": long_count,
        "long_liq_usd": pc.fill_null(usd("liquidation", "long_usd_sum"), 0.0),
        "short_liq_count": pc.subtract(liq_events, long_count),
        "short_liq_usd": pc.fill_null(usd("liquidation", "short_usd_sum"), 0.0),
        "max_liq_usd": usd("liquidation", "usd_max"),
        "oi_first": oi_first,
        "oi_last": oi_last,
        "oi_first_usd": pc.coalesce(oi_first_rep, pc.multiply(oi_first, reference)),
        "oi_last_usd": pc.coalesce(oi_last_rep, pc.multiply(oi_last, reference)),
        "oi_first_usd_reported": oi_first_rep,
        "oi_last_usd_reported": oi_last_rep,
        "oi_first_ts": agg("open_interest", "event_time_first", ts),
        "oi_last_ts": agg("open_interest", "event_time_last", ts),
        "funding_rate_last": agg("funding", "funding_rate_last", f64),
        "mark_price_last": mark,
        "index_price_last": agg("funding", "index_price_last", f64),
        "funding_ts": agg("funding", "event_time_last", ts),
        "liquidation_events": liq_events,
        "oi_events": count("open_interest", "event_time_count"),
        "funding_events": count("funding", "event_time_count"),
        "volume_base_exact": volume_exact,
        "depth_bid_usd_100bp": agg("book_depth", "bid_usd_100bp_last", f64),
        "depth_ask_usd_100bp": agg("book_depth", "ask_usd_100bp_last", f64),
        "depth_ts": agg("book_depth", "event_time_last", ts),
        "depth_events": count("book_depth", "event_time_count"),
    }
    if tuple(columns) != BAR_COLUMNS:
        raise AssertionError("column-wise bars drifted from partial_to_row's columns")
    return columns


def _vectorized_rows(
    exchange: str, symbol: str, ident: tuple, wholes: dict[str, pa.Table], bar_us: int
) -> list[dict[str, Any]]:
    """bars_1m rows of one instrument whose events all carry one (base, quote, kind), with no
    stored bars to merge: every column of a minute comes from one event type's aggregates, so
    the rows are assembled column-wise (what ``partial_to_row(merge_partials(...))`` gives)."""
    import numpy as np

    aggs = {et: bar_aggregates(t, et, bar_us, keys=["minute"]) for et, t in wholes.items()}
    minutes = pa.array(np.unique(np.concatenate([a["minute"].to_numpy() for a in aggs.values()])))
    n = len(minutes)
    where = {et: pc.index_in(minutes, value_set=a["minute"]) for et, a in aggs.items()}
    base, quote, kind = ident
    columns = _bar_columns(aggs, where, n, minutes, {"exchange": [exchange] * n, "symbol": [symbol] * n,
                                                     "base": [base] * n, "quote": [quote] * n, "kind": [kind] * n})
    # volume_base_exact as Decimals of exponent -12 (what _base_decimal made: the same inferred type)
    values = [v if isinstance(v, list) else v.to_pylist() if pa.types.is_decimal(v.type) else _py_values(v)
              for v in columns.values()]
    # each row has len(BAR_COLUMNS) values (checked above); strict= on 46k short zips costs ~50%
    return [dict(zip(BAR_COLUMNS, row, strict=False)) for row in zip(*values, strict=True)]


def _joined_key(table: pa.Table, names: list[str]) -> pa.Array:
    """One string per row joining ``names`` (a null as its own value): a composite key for
    ``index_in`` / ``is_in``, which take one column."""
    cols = [pc.cast(_plain(table[c]), pa.string()) for c in names]
    return pc.binary_join_element_wise(*cols, "\x1f", null_handling="replace", null_replacement="\x00").combine_chunks()


def day_bars(tables: dict[str, pa.Table | None], bar_us: int = MINUTE_US) -> pa.Table | None:
    """bars_1m of a whole day's events at once (the backfill's per-day pass, ADR 022): ``tables``
    holds each event type's events (``_IDENT_COLUMNS`` + its ``BAR_EVENT_COLUMNS``, string
    columns plain or dictionary-encoded); the rows are those :func:`instrument_bars` gives per
    instrument, as one Arrow table (``BAR_COLUMNS``, sorted by exchange, symbol, minute).

    Each event type is aggregated ONCE for every instrument (one sort, one ``group_by`` on
    (exchange, symbol, minute, base, quote, kind)) and the bars assembled column-wise; nothing
    is split per instrument. An instrument whose events carry several (base, quote, kind) (a
    venue changed its metadata within the day) takes :func:`instrument_bars`' merge path."""
    present = {et: _with_event_type(t, et) for et, t in sorted(tables.items()) if t is not None and t.num_rows}
    if not present:
        return None
    aggs = {et: bar_aggregates(t, et, bar_us) for et, t in present.items()}
    keys = pa.concat_tables([a.select(_GROUP).cast(pa.schema([(c, pa.string()) for c in _GROUP[:2]]
                                                             + [("minute", pa.int64())]
                                                             + [(c, pa.string()) for c in _GROUP[3:]]))
                             for a in aggs.values()])
    idents = keys.group_by(list(_IDENT_COLUMNS), use_threads=False).aggregate([])
    per_instrument = idents.group_by(["exchange", "symbol"], use_threads=False).aggregate([([], "count_all")])
    mixed = per_instrument.filter(pc.greater(per_instrument["count_all"], 1))
    extra: list[dict[str, Any]] = []
    if mixed.num_rows:
        mixed_keys = _joined_key(mixed, ["exchange", "symbol"])
        parts: dict[InstrumentKey, list[tuple[Ident, pa.Table]]] = {}
        for et, t in present.items():
            sub = t.filter(pc.is_in(_joined_key(t, ["exchange", "symbol"]), value_set=mixed_keys))
            for key, ident, events in split_by_instrument(_with_event_type(sub, et)):
                parts.setdefault(key, []).append((ident, events))
        for key in sorted(parts):
            extra.extend(instrument_bars(key, parts[key], bar_us=bar_us))
        keep = {et: pc.invert(pc.is_in(_joined_key(a, ["exchange", "symbol"]), value_set=mixed_keys))
                for et, a in aggs.items()}
        aggs = {et: a.filter(keep[et]) for et, a in aggs.items()}
        keys = keys.filter(pc.invert(pc.is_in(_joined_key(keys, ["exchange", "symbol"]), value_set=mixed_keys)))
    bars = keys.group_by(_GROUP, use_threads=False).aggregate([]).sort_by(
        [("exchange", "ascending"), ("symbol", "ascending"), ("minute", "ascending")])
    bar_key = _joined_key(bars, ["exchange", "symbol", "minute"])
    where = {et: pc.index_in(bar_key, value_set=_joined_key(a, ["exchange", "symbol", "minute"]))
             for et, a in aggs.items()}
    columns = _bar_columns(aggs, where, bars.num_rows, bars["minute"].combine_chunks(),
                           {c: bars[c].combine_chunks() for c in _IDENT_COLUMNS})
    table = pa.table(columns)
    if extra:
        table = pa.concat_tables([table, pa.Table.from_pylist(extra, schema=table.schema)])
    return table


def _with_instrument(instrument: InstrumentKey, ident: Ident, table: pa.Table) -> pa.Table:
    """An event sub-table with its instrument's string columns back (``partial_bars``' input)."""
    n = table.num_rows
    for name, value in zip(_IDENT_COLUMNS, (*instrument, *ident), strict=True):
        table = table.append_column(name, pa.repeat(pa.scalar(value, pa.string()), n))
    return table


def instrument_bars(
    instrument: InstrumentKey,
    parts: Iterable[tuple[Ident, pa.Table]],
    prior_rows: Iterable[dict[str, Any]] = (),
    bar_us: int = MINUTE_US,
) -> list[dict[str, Any]]:
    """bars_1m rows of ONE instrument from its event sub-tables (``(ident, table)`` as
    ``split_by_instrument`` makes them: any event types, batches and order) and its stored bars
    (``prior_rows``, merged like one more partial), sorted by minute.

    Each event type is aggregated once over all its rows. With one (base, quote, kind) (the
    rule: the instrument book fixes them) and no stored bars, the rows are assembled
    column-wise; otherwise each event type's ``partial_bars`` and the stored bars'
    ``bar_row_to_partial`` are merged per minute with ``merge_partials``. Both give the same rows.
    """
    by_type: dict[str, list[tuple[Ident, pa.Table]]] = {}
    for ident, table in parts:
        if table.num_rows:
            by_type.setdefault(event_type_of(table), []).append((tuple(ident), table))
    prior_rows = list(prior_rows)
    idents = {ident for typed in by_type.values() for ident, _ in typed}
    if len(idents) == 1 and not prior_rows:
        wholes = {
            et: _with_event_type(
                pa.concat_tables([t.select(list(BAR_EVENT_COLUMNS[et])) for _, t in typed], promote_options="permissive"),
                et,
            )
            for et, typed in sorted(by_type.items())
        }
        return _vectorized_rows(*instrument, idents.pop(), wholes, bar_us)
    partials: list[tuple[BarKey, PartialBar]] = []
    for et, typed in sorted(by_type.items()):
        whole = pa.concat_tables(
            [_with_instrument(instrument, ident, t.select(list(BAR_EVENT_COLUMNS[et]))) for ident, t in typed],
            promote_options="permissive",
        )
        partials.extend(partial_bars(_with_event_type(whole, et), bar_us))
    partials.extend(bar_row_to_partial(row) for row in prior_rows)
    merged: dict[BarKey, PartialBar] = {}
    for key, partial in partials:
        merged[key] = merge_partials(merged.get(key), partial)
    return [partial_to_row(merged[key]) for key in sorted(merged, key=lambda k: k[2])]


_TABLE, _PRIOR = "t", "p"  # tags of the values grouped per instrument


class _SplitByInstrumentFn(beam.DoFn):
    """Batches -> (instrument, table) per instrument, event type and window of a bundle.

    A bundle's batches are buffered per (window, event type) and split at the end of the bundle
    (or every ``max_buffered_rows``), so Beam encodes a few large tables (tens per bundle)
    rather than one small table per batch and instrument: the per-element and per-array cost
    of the data plane is what made ComputeBars slow.
    """

    def __init__(self, max_buffered_rows: int = 2_000_000) -> None:
        self.max_buffered_rows = max_buffered_rows

    def start_bundle(self) -> None:
        self._buffers: dict[tuple[Any, str], list[pa.Table]] = {}
        self._rows = 0

    def process(self, batch: pa.RecordBatch | pa.Table, win=beam.DoFn.WindowParam) -> Iterator[WindowedValue]:
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        if table.num_rows:
            self._buffers.setdefault((win, event_type_of(table)), []).append(table)
            self._rows += table.num_rows
            if self._rows >= self.max_buffered_rows:
                yield from self._flush()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        yield from self._flush()

    def _flush(self) -> Iterator[WindowedValue]:
        buffers, self._buffers, self._rows = self._buffers, {}, 0
        for (win, event_type), parts in buffers.items():
            # only the columns bars read, so batches of readers with different extra columns concat
            wanted = [*_IDENT_COLUMNS, *BAR_EVENT_COLUMNS[event_type]]
            table = pa.concat_tables([t.select(wanted) for t in parts], promote_options="permissive")
            for key, ident, events in split_by_instrument(_with_event_type(table, event_type)):
                yield WindowedValue((key, (_TABLE, (ident, events))), win.max_timestamp(), [win])


def _tag_prior(row: dict[str, Any]) -> tuple[InstrumentKey, tuple[str, Any]]:
    return (row["exchange"], row["symbol"]), (_PRIOR, row)


class _InstrumentBarsFn(beam.DoFn):
    def __init__(self, bar_us: int) -> None:
        self.bar_us = bar_us

    def process(self, element: tuple[InstrumentKey, Iterable[tuple[str, Any]]]) -> Iterator[dict[str, Any]]:
        instrument, values = element
        parts, prior = [], []
        for tag, value in values:
            (parts if tag == _TABLE else prior).append(value)
        yield from instrument_bars(instrument, parts, prior, self.bar_us)


class ComputeBars(beam.PTransform):
    """RecordBatches of normalized events -> bars_1m rows.

    ``prior_bars``: optional PCollection of bars_1m rows already in the mart for the minutes
    this run touches; they are merged like one more partial, so a streaming cycle extends a
    minute instead of replacing it.

    Shape: each bundle's batches are split per instrument (``split_by_instrument``) and grouped
    by (exchange, symbol), so Beam moves one Arrow table per instrument, event type and bundle
    (~130 per backfill day of 32 instruments) instead of one pickled dict per partial bar;
    ``instrument_bars`` then makes each instrument's rows. Memory: the group holds, per window
    (a bounded job has one: its cycle, or one backfill day), all the input's events in the
    ``BAR_EVENT_COLUMNS`` of their type (~40 bytes per trade encoded) plus the prior bars; the
    last step holds one instrument's events and rows at a time. On the unbounded path
    (``WindowIntoBars``: one-minute windows, accumulating) each firing regroups the window's
    events so far and recomputes the whole bar, as the former accumulating CombineFn of partial bars did.
    """

    def __init__(self, config: AnalyticsConfig | None = None, prior_bars: beam.PCollection | None = None) -> None:
        super().__init__()
        self.config = config or AnalyticsConfig()
        self.prior_bars = prior_bars

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        keyed = batches | "SplitByInstrument" >> beam.ParDo(_SplitByInstrumentFn())
        if self.prior_bars is not None:
            prior = self.prior_bars | "KeyPriorByInstrument" >> beam.Map(_tag_prior)
            keyed = (keyed, prior) | "WithPrior" >> beam.Flatten()
        return (
            keyed
            | "GroupByInstrument" >> beam.GroupByKey()
            | "InstrumentBars" >> beam.ParDo(_InstrumentBarsFn(self.config.bar_us))
        )


class WindowIntoBars(beam.PTransform):
    """Event-time windowing of (event_type, record) elements for an unbounded runner.

    Fixed windows of one bar; the watermark trigger fires the bar once, each late event within
    ``allowed_lateness_s`` re-fires it with the accumulated (complete) bar, which the sink
    upserts. Beyond the allowed lateness the runner drops the event, which is why jobs also run
    ``SplitLateEvents`` upstream: there they are counted in late_events instead.
    """

    def __init__(self, config: AnalyticsConfig | None = None) -> None:
        super().__init__()
        self.config = config or AnalyticsConfig()

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return (
            records
            | "EventTime" >> beam.Map(lambda e: window.TimestampedValue(e, e[1]["event_time"] / 1e6))
            | "MinuteWindows"
            >> beam.WindowInto(
                window.FixedWindows(self.config.bar_seconds),
                trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
                accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
                allowed_lateness=Duration(seconds=self.config.allowed_lateness_s),
            )
        )


# ---------------------------------------------------------------------------------------------
# late events
# ---------------------------------------------------------------------------------------------
LATE_TAG = "late"


def is_late(event_time_us: int, watermark_us: int | None, allowed_lateness_us: int) -> bool:
    """Late = older than (watermark - allowed lateness). No watermark yet: nothing is late."""
    return watermark_us is not None and event_time_us < watermark_us - allowed_lateness_us


def event_key(record: dict) -> str:
    """A stable id of one event (natural id when the venue gives one, else a content hash)."""
    import hashlib

    blob = json.dumps(record, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha1(blob).hexdigest()[:20]


def late_event_row(event_type: str, record: dict, watermark_us: int) -> dict[str, Any]:
    return {
        "event_type": event_type,
        "event_key": event_key(record),
        "exchange": record.get("exchange"),
        "symbol": record.get("symbol"),
        "event_ts": micros_to_ts(record["event_time"]),
        "ingest_ts": micros_to_ts(record.get("ingest_time")),
        "watermark_ts": micros_to_ts(watermark_us),
        "lateness_s": (watermark_us - record["event_time"]) / 1e6,
        "notional_usd": record.get("notional_usd"),
        "record_json": json.dumps(record, sort_keys=True, default=str),
    }


class SplitLateEvents(beam.DoFn):
    """(event_type, record) -> main output if on time, tagged output ``late`` (a late_events row)
    if older than watermark - allowed lateness.

    The watermark is the job's: for a bounded cycle, the max event_time already committed to
    bars (a side input or a constant); a backfill passes None (nothing is late in a rebuild).
    """

    def __init__(self, allowed_lateness_s: int) -> None:
        self.allowed_lateness_us = allowed_lateness_s * 1_000_000

    def process(self, element: tuple[str, dict], watermark_us: int | None = None):
        event_type, record = element
        if is_late(record["event_time"], watermark_us, self.allowed_lateness_us):
            yield beam.pvalue.TaggedOutput(LATE_TAG, late_event_row(event_type, record, watermark_us))
        else:
            yield element


def split_late_batch(
    batch: pa.RecordBatch | pa.Table, watermark_us: int | None, allowed_lateness_us: int
) -> tuple[pa.Table, list[dict[str, Any]]]:
    """Vectorized split of one event-type batch: (on-time table, late_events rows)."""
    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    if watermark_us is None or table.num_rows == 0:
        return table, []
    late_mask = pc.less(table["event_time"], watermark_us - allowed_lateness_us)
    late = table.filter(late_mask)
    event_type = event_type_of(table)
    rows = [late_event_row(event_type, r, watermark_us) for r in late.to_pylist()]
    return table.filter(pc.invert(late_mask)), rows


class SplitLateBatches(beam.DoFn):
    """Batch version of SplitLateEvents: main output on-time batches, tagged ``late`` rows."""

    def __init__(self, allowed_lateness_s: int) -> None:
        self.allowed_lateness_us = allowed_lateness_s * 1_000_000

    def process(self, batch: pa.RecordBatch | pa.Table, watermark_us: int | None = None):
        on_time, late_rows = split_late_batch(batch, watermark_us, self.allowed_lateness_us)
        if on_time.num_rows:
            yield on_time
        for row in late_rows:
            yield beam.pvalue.TaggedOutput(LATE_TAG, row)
