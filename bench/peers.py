"""The peers `make bench` runs beside the job, on the same data in the same run (issue 21).

Streaming (the same backlog on the same local broker topics, see ``bench.streaming.run_catch_up``):

* raw kafka-python + fastavro loop (``bench.stages.raw_consume_decode``): read and decode, nothing else;
* raw confluent-kafka + fastavro loop (:func:`confluent_consume_decode`): the same with librdkafka;
* a Bytewax dataflow (:func:`bytewax_bars`): Kafka source -> Avro decode -> the same one-minute
  bars as ``bars_1m`` (``fold_final`` per exchange, symbol and minute), checked equal to the job's
  ``bars_1m`` column by column (:func:`compare_bars`).

Backfill (the same Parquet archive): DuckDB SQL and Polars computing ``bars_1m``'s columns and
``liquidations_1m`` (:func:`duckdb_archive`, :func:`polars_archive`), checked against the
backfill's marts with :func:`compare_bars` and :func:`compare_liquidations`.

The peers live in the optional extra ``.[bench]`` (pyproject.toml, pinned in constraints.txt);
only this module imports them and the product never does (tests/unit/test_bench_peers.py).

Every check is equality: USD sums as integer micro-USD, each event rounded half-to-even once (the
project's rounding, ``pipelines.transforms.bars``), volumes in base units as DECIMAL(38, 12), first
and last values by the same total order. A column that differs is named with its count of rows.
The one known difference: DuckDB's and Polars' DOUBLE -> DECIMAL cast multiplies by 10^12 in
double arithmetic before rounding, so their ``volume_base_exact`` can be off by a few 1e-12 units
where Arrow's cast (the job's) and Python's ``Decimal`` give the exactly nearest; it is reported
as ``volume_base_exact`` mismatches (rows and largest difference), not hidden.
"""

from __future__ import annotations

import importlib.metadata
import time
from decimal import ROUND_HALF_EVEN, Decimal
from io import BytesIO
from pathlib import Path
from typing import Any

#: the distributions whose versions the results record (the peers and what the job is built on)
DISTRIBUTIONS = ("kafka-python", "confluent-kafka", "bytewax", "polars", "duckdb", "fastavro", "pyarrow",
                 "apache-beam", "py-spy")
MINUTE_US = 60_000_000
_BASE_Q = Decimal("1e-12")

#: the columns compared, in bars_1m's units: ints for counts and micro-USD, decimals for base volume
BAR_COLUMNS = ("open", "high", "low", "close", "trade_count", "volume_usd", "taker_buy_usd", "taker_sell_usd",
               "volume_base_exact", "long_liq_count", "long_liq_usd", "short_liq_count", "short_liq_usd",
               "max_liq_usd", "oi_first", "oi_last", "mark_price_last", "funding_rate_last", "index_price_last",
               "liquidation_events", "oi_events", "funding_events")
#: bars_1m's side of the comparison: USD columns (DECIMAL(24, 6)) as integer micro-USD
_JOB_BARS_SQL = """SELECT exchange, symbol, epoch_us(minute_ts) AS m, open, high, low, close, trade_count,
  (volume_usd * 1000000)::BIGINT AS volume_usd, (taker_buy_usd * 1000000)::BIGINT AS taker_buy_usd,
  (taker_sell_usd * 1000000)::BIGINT AS taker_sell_usd, volume_base_exact, long_liq_count,
  (long_liq_usd * 1000000)::BIGINT AS long_liq_usd, short_liq_count, (short_liq_usd * 1000000)::BIGINT AS short_liq_usd,
  (max_liq_usd * 1000000)::BIGINT AS max_liq_usd, oi_first, oi_last, mark_price_last, funding_rate_last,
  index_price_last, liquidation_events, oi_events, funding_events FROM {db}.bars_1m"""
LIQ_COLUMNS = ("liq_count", "notional_usd", "max_notional_usd", "first_event_time", "last_event_time")
_JOB_LIQ_SQL = """SELECT exchange, symbol, side, epoch_us(minute) AS m, liq_count,
  (notional_usd * 1000000)::BIGINT AS notional_usd, (max_notional_usd * 1000000)::BIGINT AS max_notional_usd,
  epoch_us(first_event_time) AS first_event_time, epoch_us(last_event_time) AS last_event_time
  FROM {db}.liquidations_1m"""


def versions() -> dict[str, str | None]:
    """Installed version of each of :data:`DISTRIBUTIONS` (None: not installed)."""
    out: dict[str, str | None] = {}
    for d in DISTRIBUTIONS:
        try:
            out[d] = importlib.metadata.version(d)
        except importlib.metadata.PackageNotFoundError:
            out[d] = None
    return out


def installed() -> bool:
    """True when the bench extra (``pip install -e '.[bench]'``) is installed."""
    v = versions()
    return all(v[d] for d in ("confluent-kafka", "bytewax", "polars"))


def _avro_schemas() -> dict[str, Any]:
    """{topic: parsed writer schema}: the registry's latest schema per event topic, as the raw loops read them."""
    from fastavro import parse_schema

    from connectors.avro import _strip_logical_types
    from connectors.normalize import TOPICS
    from schemas import latest

    return {t: parse_schema(_strip_logical_types(latest(et).raw)) for et, t in TOPICS.items()}


# ---- streaming peers ---------------------------------------------------------------------------------------


def confluent_consume_decode(bootstrap: str, ranges: list, n: int) -> float:
    """Raw confluent-kafka consumer + fastavro schemaless decode over ``ranges`` until ``n`` records;
    records/s (the twin of ``bench.stages.raw_consume_decode``, the kafka-python loop)."""
    from confluent_kafka import Consumer, TopicPartition
    from fastavro import schemaless_reader

    from connectors.avro import HEADER_LEN

    schemas_ = _avro_schemas()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "liqstream-bench-peer",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "fetch.max.bytes": 64 * 1024 * 1024, "max.partition.fetch.bytes": 16 * 1024 * 1024})
    try:
        consumer.assign([TopicPartition(r.topic, r.partition, r.start) for r in ranges])
        t = time.perf_counter()
        seen = 0
        while seen < n:
            for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                if msg.error():
                    continue  # end-of-partition notices; a record error would show as a count short
                buf = BytesIO(msg.value())
                buf.seek(HEADER_LEN)
                schemaless_reader(buf, schemas_[msg.topic()], None)
                seen += 1
            if time.perf_counter() - t > 120:
                raise RuntimeError("confluent-kafka peer stalled")
        return seen / (time.perf_counter() - t)
    finally:
        consumer.close()


def _new_bar() -> list:
    # open/close/oi/funding keys are tuples compared as bars.py orders them (event_time, value...)
    return [None, None, None, None, 0, 0, 0, 0, Decimal(0), 0, 0, 0, 0, None, None, None, None, 0, 0, 0]


_NEG_INF = float("-inf")


def _fold(bar: list, ev: tuple) -> list:
    """One decoded event into its bar (the semantics of ``pipelines.transforms.bars.bar_aggregates``)."""
    et, r = ev
    t = r["event_time"]
    if et == "trade":
        p = r["price"]
        k = (t, p)
        if bar[0] is None or k < bar[0]:
            bar[0] = k
        if bar[1] is None or k > bar[1]:
            bar[1] = k
        bar[2] = p if bar[2] is None else max(bar[2], p)
        bar[3] = p if bar[3] is None else min(bar[3], p)
        bar[4] += 1
        usd = round(r["notional_usd"] * 1e6)  # half-to-even on the double product, as Arrow's round
        bar[5] += usd
        if r["taker_side"] == "buy":
            bar[6] += usd
        else:
            bar[7] += usd
        bar[8] += Decimal(r["size"]).quantize(_BASE_Q, ROUND_HALF_EVEN)  # exact nearest 1e-12, as Arrow's cast
    elif et == "liquidation":
        usd = round(r["notional_usd"] * 1e6)
        if r["side"] == "long":
            bar[9] += 1
            bar[11] += usd
        else:
            bar[10] += 1
            bar[12] += usd
        bar[13] = usd if bar[13] is None else max(bar[13], usd)
        bar[17] += 1
    elif et == "open_interest":
        usd = r["open_interest_usd"]
        k = (t, r["open_interest"], _NEG_INF if usd is None else usd)
        if bar[14] is None or k < bar[14]:
            bar[14] = k
        if bar[15] is None or k > bar[15]:
            bar[15] = k
        bar[18] += 1
    else:
        rate, idx = r["funding_rate"], r["index_price"]
        k = (t, r["mark_price"], _NEG_INF if rate is None else rate, _NEG_INF if idx is None else idx,
             rate, idx)
        if bar[16] is None or k[:4] > bar[16][:4]:
            bar[16] = k
        bar[19] += 1
    return bar


def _bar_record(key: str, b: list) -> dict[str, Any]:
    exchange, symbol, m = key.split("\x00")
    fund = b[16]
    return {"exchange": exchange, "symbol": symbol, "m": int(m),
            "open": b[0][1] if b[0] else None, "high": b[2], "low": b[3], "close": b[1][1] if b[1] else None,
            "trade_count": b[4], "volume_usd": b[5], "taker_buy_usd": b[6], "taker_sell_usd": b[7],
            "volume_base_exact": b[8], "long_liq_count": b[9], "long_liq_usd": b[11], "short_liq_count": b[10],
            "short_liq_usd": b[12], "max_liq_usd": b[13], "oi_first": b[14][1] if b[14] else None,
            "oi_last": b[15][1] if b[15] else None, "mark_price_last": fund[1] if fund else None,
            "funding_rate_last": fund[4] if fund else None, "index_price_last": fund[5] if fund else None,
            "liquidation_events": b[17], "oi_events": b[18], "funding_events": b[19]}


def _peer_bars_schema():
    import pyarrow as pa

    f64, i64 = pa.float64(), pa.int64()
    types = {"trade_count": i64, "volume_usd": i64, "taker_buy_usd": i64, "taker_sell_usd": i64,
             "volume_base_exact": pa.decimal128(38, 12), "long_liq_count": i64, "long_liq_usd": i64,
             "short_liq_count": i64, "short_liq_usd": i64, "max_liq_usd": i64, "liquidation_events": i64,
             "oi_events": i64, "funding_events": i64}
    return pa.schema([("exchange", pa.string()), ("symbol", pa.string()), ("m", i64),
                      *[(c, types.get(c, f64)) for c in BAR_COLUMNS]])


def bytewax_bars(bootstrap: str, topics: list[str]) -> dict[str, Any]:
    """A Bytewax dataflow (one worker, ``run_main``) reading ``topics`` from the start to their end
    (``tail=False``), decoding each record with fastavro and folding it into its
    (exchange, symbol, minute) bar. Timed from the flow's start to every bar in a list (nothing
    written to disk). Returns seconds, events and the bars as an Arrow table (:func:`compare_bars`)."""
    import bytewax.operators as op
    import pyarrow as pa
    from bytewax.connectors.kafka import KafkaSource
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, run_main
    from fastavro import schemaless_reader

    from connectors.avro import HEADER_LEN
    from connectors.normalize import TOPIC_EVENT

    schemas_ = _avro_schemas()
    type_of = TOPIC_EVENT
    counted = [0]

    def decode(msg) -> tuple[str, tuple[str, dict]]:
        buf = BytesIO(msg.value)
        buf.seek(HEADER_LEN)
        r = schemaless_reader(buf, schemas_[msg.topic], None)
        counted[0] += 1
        return f"{r['exchange']}\x00{r['symbol']}\x00{r['event_time'] // MINUTE_US * MINUTE_US}", (type_of[msg.topic], r)

    out: list = []
    flow = Dataflow("liqstream_bench_bars")
    msgs = op.input("kafka", flow, KafkaSource([bootstrap], topics, tail=False, batch_size=10_000))
    bars = op.fold_final("bar", op.map("decode", msgs, decode), _new_bar, _fold)
    op.output("out", bars, TestingSink(out))
    t = time.perf_counter()
    run_main(flow)
    seconds = time.perf_counter() - t
    table = pa.Table.from_pylist([_bar_record(k, b) for k, b in out], schema=_peer_bars_schema())
    return {"seconds": seconds, "events": counted[0], "events_per_s": counted[0] / seconds, "bars": table}


# ---- backfill peers ----------------------------------------------------------------------------------------

_DUCKDB_BARS = """
CREATE OR REPLACE TABLE peer_bars AS
WITH t AS (
  SELECT exchange, symbol, event_time // 60000000 * 60000000 AS m,
         arg_min(price, (event_time, price)) AS open, max(price) AS high, min(price) AS low,
         arg_max(price, (event_time, price)) AS close, count(*) AS trade_count,
         sum(round_even(notional_usd * 1e6, 0)::BIGINT) AS volume_usd,
         sum(CASE WHEN taker_side = 'buy' THEN round_even(notional_usd * 1e6, 0)::BIGINT ELSE 0 END) AS taker_buy_usd,
         sum(CASE WHEN taker_side = 'buy' THEN 0 ELSE round_even(notional_usd * 1e6, 0)::BIGINT END) AS taker_sell_usd,
         sum(size::DECIMAL(38, 12)) AS volume_base_exact
  FROM read_parquet({trades}) GROUP BY ALL),
l AS (
  SELECT exchange, symbol, event_time // 60000000 * 60000000 AS m,
         count(*) FILTER (WHERE side = 'long') AS long_liq_count,
         coalesce(sum(round_even(notional_usd * 1e6, 0)::BIGINT) FILTER (WHERE side = 'long'), 0) AS long_liq_usd,
         count(*) FILTER (WHERE side <> 'long') AS short_liq_count,
         coalesce(sum(round_even(notional_usd * 1e6, 0)::BIGINT) FILTER (WHERE side <> 'long'), 0) AS short_liq_usd,
         max(round_even(notional_usd * 1e6, 0)::BIGINT) AS max_liq_usd, count(*) AS liquidation_events
  FROM read_parquet({liqs}) GROUP BY ALL),
o AS (
  SELECT exchange, symbol, event_time // 60000000 * 60000000 AS m,
         arg_min(open_interest, (event_time, open_interest, coalesce(open_interest_usd, '-inf'::DOUBLE))) AS oi_first,
         arg_max(open_interest, (event_time, open_interest, coalesce(open_interest_usd, '-inf'::DOUBLE))) AS oi_last,
         count(*) AS oi_events
  FROM read_parquet({ois}) GROUP BY ALL),
f AS (
  SELECT exchange, symbol, event_time // 60000000 * 60000000 AS m,
         arg_max((mark_price, funding_rate, index_price), (event_time, mark_price, coalesce(funding_rate, '-inf'::DOUBLE),
                 coalesce(index_price, '-inf'::DOUBLE))) AS last, count(*) AS funding_events
  FROM read_parquet({funding}) GROUP BY ALL)
SELECT exchange, symbol, m, open, high, low, close, coalesce(trade_count, 0) AS trade_count,
       coalesce(volume_usd, 0) AS volume_usd, coalesce(taker_buy_usd, 0) AS taker_buy_usd,
       coalesce(taker_sell_usd, 0) AS taker_sell_usd, coalesce(volume_base_exact, 0) AS volume_base_exact,
       coalesce(long_liq_count, 0) AS long_liq_count, coalesce(long_liq_usd, 0) AS long_liq_usd,
       coalesce(short_liq_count, 0) AS short_liq_count, coalesce(short_liq_usd, 0) AS short_liq_usd, max_liq_usd,
       oi_first, oi_last, last[1] AS mark_price_last, last[2] AS funding_rate_last, last[3] AS index_price_last,
       coalesce(liquidation_events, 0) AS liquidation_events, coalesce(oi_events, 0) AS oi_events,
       coalesce(funding_events, 0) AS funding_events
FROM t FULL JOIN l USING (exchange, symbol, m) FULL JOIN o USING (exchange, symbol, m)
       FULL JOIN f USING (exchange, symbol, m);
CREATE OR REPLACE TABLE peer_liq AS
SELECT exchange, symbol, side, event_time // 60000000 * 60000000 AS m, count(*) AS liq_count,
       sum(round_even(notional_usd * 1e6, 0)::BIGINT) AS notional_usd,
       max(round_even(notional_usd * 1e6, 0)::BIGINT) AS max_notional_usd,
       min(event_time) AS first_event_time, max(event_time) AS last_event_time
FROM read_parquet({liqs}) GROUP BY ALL;
"""


def _archive_glob(archive: Path, et: str) -> str:
    return str(archive / et / "*" / "*.parquet")


def duckdb_archive(archive: Path) -> dict[str, Any]:
    """DuckDB SQL (all cores) -> bars and liquidation minutes of the archive, as tables in memory;
    timed from the query's start to both materialized. The archive holds no duplicate positions
    (the bench writes it), so, unlike ``archive.read_day``, nothing is deduplicated."""
    import duckdb

    con = duckdb.connect()
    try:
        files = {k: f"'{_archive_glob(archive, et)}'" for k, et in
                 (("trades", "trade"), ("liqs", "liquidation"), ("ois", "open_interest"), ("funding", "funding"))}
        t = time.perf_counter()
        con.execute(_DUCKDB_BARS.format(**files))
        seconds = time.perf_counter() - t
        bars = con.sql("SELECT * FROM peer_bars").to_arrow_table()
        liq = con.sql("SELECT * FROM peer_liq").to_arrow_table()
    finally:
        con.close()
    return {"seconds": seconds, "bars": bars, "liquidations": liq, "threads": _threads()}


def _threads() -> int:
    import os

    return os.cpu_count() or 1


def polars_archive(archive: Path) -> dict[str, Any]:
    """Polars (lazy scan, all cores) -> the same two tables as :func:`duckdb_archive`; timed from the
    scan's start to both collected."""
    import polars as pl

    def scan(et: str):
        return pl.scan_parquet(_archive_glob(archive, et)).with_columns(
            m=pl.col("event_time") // MINUTE_US * MINUTE_US)

    def micro(col: str):
        return (pl.col(col) * 1e6).round(0, mode="half_to_even").cast(pl.Int64)

    keys = ["exchange", "symbol", "m"]
    neg = float("-inf")
    t0 = time.perf_counter()
    usd = micro("notional_usd")
    buy = pl.col("taker_side") == "buy"
    trades = scan("trade").group_by(keys).agg(
        open=pl.col("price").sort_by(["event_time", "price"]).first(), high=pl.col("price").max(),
        low=pl.col("price").min(), close=pl.col("price").sort_by(["event_time", "price"]).last(),
        trade_count=pl.len().cast(pl.Int64), volume_usd=usd.sum(), taker_buy_usd=pl.when(buy).then(usd).otherwise(0).sum(),
        taker_sell_usd=pl.when(buy).then(0).otherwise(usd).sum(),
        volume_base_exact=pl.col("size").cast(pl.Decimal(38, 12)).sum())
    long = pl.col("side") == "long"
    liqs = scan("liquidation").group_by(keys).agg(
        long_liq_count=long.sum().cast(pl.Int64), long_liq_usd=pl.when(long).then(usd).otherwise(0).sum(),
        short_liq_count=(~long).sum().cast(pl.Int64), short_liq_usd=pl.when(long).then(0).otherwise(usd).sum(),
        max_liq_usd=usd.max(), liquidation_events=pl.len().cast(pl.Int64))
    oi_order = ["event_time", "open_interest", pl.col("open_interest_usd").fill_null(neg)]
    ois = scan("open_interest").group_by(keys).agg(
        oi_first=pl.col("open_interest").sort_by(oi_order).first(),
        oi_last=pl.col("open_interest").sort_by(oi_order).last(), oi_events=pl.len().cast(pl.Int64))
    f_order = ["event_time", "mark_price", pl.col("funding_rate").fill_null(neg), pl.col("index_price").fill_null(neg)]
    funding = scan("funding").group_by(keys).agg(
        mark_price_last=pl.col("mark_price").sort_by(f_order).last(),
        funding_rate_last=pl.col("funding_rate").sort_by(f_order).last(),
        index_price_last=pl.col("index_price").sort_by(f_order).last(), funding_events=pl.len().cast(pl.Int64))
    bars = (trades.join(liqs, on=keys, how="full", coalesce=True).join(ois, on=keys, how="full", coalesce=True)
            .join(funding, on=keys, how="full", coalesce=True)
            .with_columns(*[pl.col(c).fill_null(0) for c in
                            ("trade_count", "volume_usd", "taker_buy_usd", "taker_sell_usd", "long_liq_count",
                             "long_liq_usd", "short_liq_count", "short_liq_usd", "liquidation_events", "oi_events",
                             "funding_events")],
                          pl.col("volume_base_exact").fill_null(pl.lit(0).cast(pl.Decimal(38, 12))))
            .select(["exchange", "symbol", "m", *BAR_COLUMNS]))
    liq = scan("liquidation").group_by(["exchange", "symbol", "side", "m"]).agg(
        liq_count=pl.len().cast(pl.Int64), notional_usd=usd.sum(), max_notional_usd=usd.max(),
        first_event_time=pl.col("event_time").min(), last_event_time=pl.col("event_time").max())
    bars_df, liq_df = pl.collect_all([bars, liq])
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "bars": bars_df.to_arrow(), "liquidations": liq_df.to_arrow(),
            "threads": pl.thread_pool_size()}


# ---- equality checks ---------------------------------------------------------------------------------------


def _compare(db: Path, peer, job_sql: str, keys: list[str], columns: tuple[str, ...]) -> dict[str, Any]:
    """Row-for-row, column-by-column equality of ``peer`` (an Arrow table) and the job's mart in ``db``;
    {rows_job, rows_peer, only_in_job, only_in_peer, mismatches: {column: rows}, equal}."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute(f"ATTACH '{db}' AS job (READ_ONLY)")
        con.register("peer", peer)
        diffs = ", ".join(f"count(*) FILTER (WHERE j.{c} IS DISTINCT FROM p.{c}) AS {c}" for c in columns)
        on = " AND ".join(f"j.{k} = p.{k}" for k in keys)
        row = con.execute(
            f"WITH j AS ({job_sql.format(db='job')}) SELECT (SELECT count(*) FROM j), (SELECT count(*) FROM peer), "
            f"count(*) FILTER (WHERE p.{keys[-1]} IS NULL), count(*) FILTER (WHERE j.{keys[-1]} IS NULL), {diffs} "
            f"FROM j FULL JOIN peer p ON {on}").fetchone()
        out: dict[str, Any] = {"rows_job": row[0], "rows_peer": row[1], "only_in_job": row[2], "only_in_peer": row[3],
                               "mismatches": {c: n for c, n in zip(columns, row[4:], strict=True) if n}}
        if "volume_base_exact" in out["mismatches"]:
            (mx,) = con.execute(
                f"WITH j AS ({job_sql.format(db='job')}) SELECT max(abs(j.volume_base_exact - p.volume_base_exact)) "
                f"FROM j JOIN peer p ON {on}").fetchone()
            out["volume_base_exact_max_diff"] = str(mx)
    finally:
        con.close()
    out["equal"] = not out["only_in_job"] and not out["only_in_peer"] and not out["mismatches"]
    return out


def compare_bars(db: Path, peer_bars) -> dict[str, Any]:
    """The peer's bars against the job's ``bars_1m`` in ``db``: see :func:`_compare`."""
    return _compare(db, peer_bars, _JOB_BARS_SQL, ["exchange", "symbol", "m"], BAR_COLUMNS)


def compare_liquidations(db: Path, peer_liq) -> dict[str, Any]:
    """The peer's liquidation minutes against the job's ``liquidations_1m`` in ``db``."""
    return _compare(db, peer_liq, _JOB_LIQ_SQL, ["exchange", "symbol", "side", "m"], LIQ_COLUMNS)


def archive_peers(archive: Path, db: Path) -> dict[str, Any]:
    """DuckDB SQL and Polars on ``archive``, each checked against the backfill's marts in ``db``."""
    out: dict[str, Any] = {}
    for name, fn in (("duckdb_sql", duckdb_archive), ("polars", polars_archive)):
        res = fn(archive)
        out[name] = {"seconds": res["seconds"], "threads": res["threads"], "bars": res["bars"].num_rows,
                     "bars_check": compare_bars(db, res["bars"]),
                     "liquidations_check": compare_liquidations(db, res["liquidations"])}
    return out


# ---- backfill memory, results --------------------------------------------------------------------------------


def memory_runs(sizes: list[dict[str, Any]], workdir: Path, seed: int) -> list[dict[str, Any]]:
    """Backfills of ``sizes`` (events, days, hours_per_day), each from its own synthetic archive, their
    peak PSS measured as ``bench.backfill.run_backfill_measured`` does (the GX gate included)."""
    import datetime as dt

    from bench import data
    from bench.backfill import run_backfill_measured

    runs = []
    for size in sizes:
        print(f"==> backfill memory: {size['events']:,} events over {size['days']} days", flush=True)
        root = workdir / f"backfill-memory-{size['days']}d"
        info = data.write_synth_archive(root / "archive", size["events"], size["days"], seed,
                                        hours_per_day=size.get("hours_per_day", 24))
        last = dt.date.fromisoformat(info["first_day"]) + dt.timedelta(days=size["days"] - 1)
        res = run_backfill_measured(root, root / "backfill.duckdb", info["first_day"], str(last))
        runs.append({"events": size["events"], "days": size["days"], "seconds": res["seconds"],
                     "events_per_s": res["events_per_s"], "peak_pss_mb": res["peak_pss_mb"],
                     "peak_rss_mb": res["peak_rss_mb"], "status": res["status"]})
    return runs


def memory_ratio(runs: list[dict[str, Any]]) -> float | None:
    """Peak PSS of the run with the most days over the one with the fewest (None: fewer than two)."""
    if len(runs) < 2:
        return None
    runs = sorted(runs, key=lambda r: r["days"])
    return runs[-1]["peak_pss_mb"] / runs[0]["peak_pss_mb"]


def _check(c: dict[str, Any] | None) -> str:
    if not c:
        return "-"
    if c["equal"]:
        return f"equal ({c['rows_job']:,} rows)"
    parts = [f"{n} {col}" for col, n in c["mismatches"].items()]
    if c["only_in_job"] or c["only_in_peer"]:
        parts.append(f"{c['only_in_job']} only in job, {c['only_in_peer']} only in peer")
    extra = f" (max {c['volume_base_exact_max_diff']})" if "volume_base_exact_max_diff" in c else ""
    return f"{c['rows_job']:,} rows, differ: {', '.join(parts)}{extra}"


def peer_rows(st: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The peers' rows of ``bench.run.format_table``: (stage, figure, reference, ratio)."""
    rows: list[tuple[str, str, str, str]] = []
    if st.get("peers"):
        rows.append(("peers' versions", ", ".join(f"{k} {v}" for k, v in st["peers"]["versions"].items() if v),
                     "", "" if st["peers"]["installed"] else "extra .[bench] NOT installed"))
    c = (st.get("streaming") or {}).get("catch_up") or {}
    if c:
        n = c["events"]
        rows.append((f"catch-up {n:,} ev: job to last gate (cold)", f"{c['job_events_per_s']:,.0f} ev/s",
                     f"to its events commit {c['job_events_commit_per_s']:,.0f} ev/s", f"{c['job_cycles']} cycles"))
        if c.get("warm"):
            w = c["warm"]
            rows.append((f"catch-up {n:,} ev: job to last gate (warm)", f"{w['events_per_s']:,.0f} ev/s",
                         f"to its events commit {w['events_commit_per_s']:,.0f} ev/s", f"{w['cycles']} cycles"))
        for name, rate in (("kafka-python + fastavro", c.get("raw_consume_decode_per_s")),
                           ("confluent-kafka + fastavro", c.get("confluent_kafka_per_s")),
                           ("bytewax bars", (c.get("bytewax") or {}).get("events_per_s"))):
            if rate:
                rows.append((f"  peer {name}", f"{rate:,.0f} ev/s", "",
                             f"job/peer {c['job_events_per_s'] / rate:.2f}"))
        if c.get("bytewax"):
            rows.append(("  bytewax bars vs bars_1m", _check(c["bytewax"].get("bars_check")), "", ""))
    for r in (st.get("backfill") or {}).get("runs", []):
        for name, p in (r.get("peers") or {}).items():
            rows.append((f"  backfill {r['events']:,} ev: {name}", f"{p['seconds']:.2f} s ({p['threads']} threads)",
                         f"bars {_check(p['bars_check'])}; liq minutes {_check(p['liquidations_check'])}",
                         f"job/peer {r['seconds'] / p['seconds']:.1f}x"))
    for m in (st.get("backfill") or {}).get("memory", []):
        rows.append((f"backfill memory {m['days']} d, {m['events']:,} ev", f"peak PSS {m['peak_pss_mb']:,.0f} MB",
                     f"{m['seconds']:.0f} s, {m['events_per_s']:,.0f} ev/s", ""))
    return rows
