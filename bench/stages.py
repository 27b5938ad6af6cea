"""One function per benchmarked stage; each returns a dict of figures (see bench/run.py for the table).

Rates are wall-clock events per second of the stage unless a key says otherwise
(``*_cpu_per_s`` = per CPU second of this process, the convention of
``bench.ingest``). Each stage builds its own inputs outside the timed part.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from bench.data import SimPool
from pipelines.sinks import compact_batches

# ---- machine -----------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    import duckdb
    import fastavro
    import kafka

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        mem_gb = round(int(Path("/proc/meminfo").read_text().split()[1]) / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb, "platform": platform.platform(),
        "python": platform.python_version(), "apache_beam": beam.__version__, "pyarrow": pa.__version__,
        "duckdb": duckdb.__version__, "kafka_python": kafka.__version__, "fastavro": fastavro.__version__,
        "load_average_start": list(os.getloadavg()),
    }


def _timed(fn, *args, **kwargs) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


# ---- normalize + encode ---------------------------------------------------------------------------


def stage_normalize(pool: SimPool, seconds: float = 2.0, agg_trades: int = 20_000) -> dict[str, Any]:
    """route + Avro encode vs json.loads on the simulator's raw messages (per venue) and Binance aggTrades."""
    from bench.ingest import bench_normalize, binance_agg_trades

    per_venue = {v: bench_normalize(v, lines, seconds) for v, lines in sorted(pool.lines_by_venue.items())}
    n = sum(r["lines"] for r in per_venue.values())
    # the whole simulator mix: total lines over the CPU time each venue's share takes
    cpu_route = sum(r["lines"] / r["normalize_encode_per_s"] for r in per_venue.values())
    cpu_json = sum(r["lines"] / r["json_loads_per_s"] for r in per_venue.values())
    agg = bench_normalize("binance-futures", binance_agg_trades(agg_trades), seconds)
    return {
        "source": f"simulator {pool.scenario} seed {pool.seed} {pool.duration} at {pool.trades_per_second:g} trades/s",
        "messages": n,
        "normalize_encode_cpu_per_s": n / cpu_route,
        "json_loads_cpu_per_s": n / cpu_json,
        "ratio_to_json_loads": (n / cpu_route) / (n / cpu_json),
        "per_venue": {v: {k: r[k] for k in ("lines", "normalize_encode_per_s", "json_loads_per_s", "ratio",
                                            "records_per_s")} for v, r in per_venue.items()},
        "binance_aggtrade": {k: agg[k] for k in ("lines", "normalize_encode_per_s", "json_loads_per_s", "ratio")},
    }


# ---- Kafka ------------------------------------------------------------------------------------------


def stage_kafka(bootstrap: str, records: list[tuple[str, dict]]) -> dict[str, Any]:
    """EventProducer produce, RangeReader consume (+ decode, + Arrow batches), raw consume + fastavro reference."""
    from connectors.avro import AvroDecoder
    from connectors.config import KafkaSettings
    from connectors.kafka.beam_source import ReadRangeBatches
    from connectors.kafka.producer import EventProducer
    from connectors.kafka.reader import RangeReader, log_bounds, plan_ranges
    from connectors.kafka.topics import ensure_topics
    from connectors.normalize import TOPICS

    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    ensure_topics(kafka)
    n = len(records)
    out: dict[str, Any] = {"events": n, "compression": kafka.compression_type, "partitions": kafka.partitions}
    with EventProducer(kafka) as producer:
        encoded, enc_s = _timed(lambda: [producer.encode_event(et, r) for et, r in records])
        out["encode_per_s"] = n / enc_s
        t = time.perf_counter()
        for msg in encoded:
            producer.send_encoded(*msg)
        producer.flush()
        out["produce_per_s"] = n / (time.perf_counter() - t)
    topics = list(TOPICS.values())
    ranges = plan_ranges(log_bounds(kafka, topics), {})
    out["consumed_ranges"] = len(ranges)

    with RangeReader(kafka) as reader:
        decoders = {t: AvroDecoder(et).decode for et, t in TOPICS.items()}
        t = time.perf_counter()
        got = 0
        for rng in ranges:
            dec = decoders[rng.topic]
            for rec in reader.read(rng):
                dec(rec.value)
                got += 1
        out["range_reader_decode_per_s"] = got / (time.perf_counter() - t)
    if got != n:
        raise RuntimeError(f"consumed {got} events of the {n} produced")

    fn = ReadRangeBatches(kafka)  # the streaming job's reader: ranges -> decoded Arrow batches
    fn.setup()
    try:
        t = time.perf_counter()
        rows = sum(b.num_rows for rng in ranges for b in fn.process(rng) if isinstance(b, pa.RecordBatch))
        out["reader_batches_per_s"] = rows / (time.perf_counter() - t)
    finally:
        fn.teardown()

    # reference: a plain kafka-python consume + fastavro schemaless decode loop over the same topics
    out["raw_consume_decode_per_s"] = raw_consume_decode(bootstrap, ranges, n)
    out["reader_ratio_to_raw"] = out["reader_batches_per_s"] / out["raw_consume_decode_per_s"]
    return out


def raw_consume_decode(bootstrap: str, ranges: list, n: int) -> float:
    """The reference reader: a plain kafka-python consumer + fastavro schemaless decode loop over the
    partitions of ``ranges`` from their beginning, until ``n`` records; returns records/s."""
    from io import BytesIO

    from fastavro import parse_schema, schemaless_reader
    from kafka import KafkaConsumer, TopicPartition

    from connectors.avro import HEADER_LEN, _strip_logical_types
    from connectors.normalize import TOPICS
    from schemas import latest

    schemas_ = {t: parse_schema(_strip_logical_types(latest(et).raw)) for et, t in TOPICS.items()}
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", max_poll_records=5000,
                             fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=16 * 1024 * 1024)
    try:
        consumer.assign([TopicPartition(r.topic, r.partition) for r in ranges])
        consumer.seek_to_beginning()
        t = time.perf_counter()
        seen = 0
        while seen < n:
            for tp, recs in consumer.poll(timeout_ms=500).items():
                schema = schemas_[tp.topic]
                for rec in recs:
                    buf = BytesIO(rec.value)
                    buf.seek(HEADER_LEN)
                    schemaless_reader(buf, schema, None)
                seen += len(recs)
            if time.perf_counter() - t > 120:
                raise RuntimeError("reference consumer stalled")
        return seen / (time.perf_counter() - t)
    finally:
        consumer.close()


# ---- ComputeBars, batched and naive ------------------------------------------------------------------------


class _ReadParquetBatches(beam.DoFn):
    """(path) -> the file's RecordBatches: data is read inside the DoFn, never shipped through Create."""

    def __init__(self, rows: int = 50_000) -> None:
        self._rows = rows

    def process(self, path: str) -> Iterator[pa.RecordBatch]:
        yield from compact_batches(pq.read_table(path), self._rows)


class _ReadParquetRecords(beam.DoFn):
    def process(self, path: str) -> Iterator[dict]:
        table = pq.read_table(path)
        et = table.schema.metadata[b"event_type"].decode()
        for r in table.to_pylist():
            r["_et"] = et
            yield r


class NaiveBarFn(beam.CombineFn):
    """The per-element reference: one Python call per event, the accumulator a dict."""

    def create_accumulator(self) -> dict:
        return {"open": None, "close": None, "high": None, "low": None, "volume_base": 0.0, "volume_usd": 0,
                "trade_count": 0, "taker_buy_usd": 0, "taker_sell_usd": 0, "long_liq_count": 0, "long_liq_usd": 0,
                "short_liq_count": 0, "short_liq_usd": 0, "oi_first": None, "oi_last": None, "funding_last": None}

    def add_input(self, acc: dict, r: dict) -> dict:
        et, t = r["_et"], r["event_time"]
        if et == "trade":
            usd = round(r["notional_usd"] * 1e6)
            p = r["price"]
            if acc["open"] is None or (t, p) < acc["open"]:
                acc["open"] = (t, p)
            if acc["close"] is None or (t, p) > acc["close"]:
                acc["close"] = (t, p)
            acc["high"] = p if acc["high"] is None else max(acc["high"], p)
            acc["low"] = p if acc["low"] is None else min(acc["low"], p)
            acc["volume_base"] += r["size"]
            acc["volume_usd"] += usd
            acc["trade_count"] += 1
            acc["taker_buy_usd" if r["taker_side"] == "buy" else "taker_sell_usd"] += usd
        elif et == "liquidation":
            side = "long" if r["side"] == "long" else "short"
            acc[f"{side}_liq_count"] += 1
            acc[f"{side}_liq_usd"] += round(r["notional_usd"] * 1e6)
        elif et == "open_interest":
            snap = (t, r["open_interest"])
            if acc["oi_first"] is None or snap < acc["oi_first"]:
                acc["oi_first"] = snap
            if acc["oi_last"] is None or snap > acc["oi_last"]:
                acc["oi_last"] = snap
        else:
            snap = (t, r["mark_price"])
            if acc["funding_last"] is None or snap > acc["funding_last"]:
                acc["funding_last"] = snap
        return acc

    def merge_accumulators(self, accs) -> dict:
        accs = list(accs)
        out = accs[0]
        for a in accs[1:]:
            for k in ("volume_base", "volume_usd", "trade_count", "taker_buy_usd", "taker_sell_usd", "long_liq_count",
                      "long_liq_usd", "short_liq_count", "short_liq_usd"):
                out[k] += a[k]
            for k, pick in (("open", min), ("close", max), ("high", max), ("low", min), ("oi_first", min),
                            ("oi_last", max), ("funding_last", max)):
                vals = [v for v in (out[k], a[k]) if v is not None]
                out[k] = pick(vals) if vals else None
        return out

    def extract_output(self, acc: dict) -> dict:
        return acc


def _fn_runner_pipeline(workers: int = 1) -> beam.Pipeline:
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    return beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions(
        flags=[], direct_num_workers=workers, direct_running_mode="in_memory"))


def _count_to(path: Path):
    """A sink that writes how many elements arrived (the pipeline must not be optimized away)."""
    return beam.combiners.Count.Globally() | beam.Map(lambda n, p=str(path): Path(p).write_text(str(n)))


def write_event_files(tables: dict[str, pa.Table], folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for et, table in tables.items():
        path = folder / f"{et}.parquet"
        pq.write_table(table, path)
        paths.append(str(path))
    return paths


def run_compute_bars(files: list[str], workdir: Path) -> tuple[int, float]:
    from pipelines.transforms.bars import ComputeBars

    p = _fn_runner_pipeline()
    (p | beam.Create(files, reshuffle=False) | beam.ParDo(_ReadParquetBatches())
     | ComputeBars() | _count_to(workdir / "bars.count"))
    _, s = _timed(lambda: p.run().wait_until_finish())
    return int((workdir / "bars.count").read_text()), s


def run_naive_bars(files: list[str], workdir: Path) -> tuple[int, float]:
    p = _fn_runner_pipeline()
    (p | beam.Create(files, reshuffle=False) | beam.ParDo(_ReadParquetRecords())
     | beam.Map(lambda r: ((r["exchange"], r["symbol"], r["event_time"] // 60_000_000), r))
     | beam.CombinePerKey(NaiveBarFn()) | _count_to(workdir / "naive.count"))
    _, s = _timed(lambda: p.run().wait_until_finish())
    return int((workdir / "naive.count").read_text()), s


def stage_compute_bars(big: dict[str, pa.Table], small: dict[str, pa.Table]) -> dict[str, Any]:
    """ComputeBars on FnApiRunner over Arrow batches (big and small inputs) vs the naive per-element graph (small)."""
    with tempfile.TemporaryDirectory(prefix="bench-bars-") as tmp:
        tmp_p = Path(tmp)
        n_big = sum(t.num_rows for t in big.values())
        n_small = sum(t.num_rows for t in small.values())
        bars_big, s_big = run_compute_bars(write_event_files(big, tmp_p / "big"), tmp_p)
        small_files = write_event_files(small, tmp_p / "small")
        bars_small, s_small = run_compute_bars(small_files, tmp_p)
        naive_bars, s_naive = run_naive_bars(small_files, tmp_p)
    if naive_bars != bars_small:
        raise RuntimeError(f"naive graph made {naive_bars} bars, ComputeBars {bars_small}")
    return {
        "events": n_big, "bars": bars_big, "seconds": s_big, "events_per_s": n_big / s_big,
        "small_events": n_small, "small_bars": bars_small, "small_seconds": s_small,
        "small_events_per_s": n_small / s_small,
        "naive_seconds": s_naive, "naive_events_per_s": n_small / s_naive,
        "speedup_vs_naive_same_input": s_naive / s_small,
        "speedup_vs_naive_rate": (n_big / s_big) / (n_small / s_naive),
    }


# ---- analytics, DuckDB upserts, GX ----------------------------------------------------------------------


def make_bar_files(tables: dict[str, pa.Table], out: Path) -> list[str]:
    """bars_1m Parquet files of the events (the event phase of a backfill, run here as a preparation step)."""
    from pipelines.jobs.load import write_event_marts
    from pipelines.sinks import parquet_glob
    from pipelines.transforms.config import AnalyticsConfig

    files = write_event_files(tables, out / "events")
    p = _fn_runner_pipeline()
    batches = p | beam.Create(files, reshuffle=False) | beam.ParDo(_ReadParquetBatches())
    write_event_marts(p, batches, out / "marts", AnalyticsConfig(), watermark_us=None, prior_bar_files=[])
    p.run().wait_until_finish()
    return parquet_glob(out / "marts", "bars_1m")


def stage_analytics(bar_files: list[str], workdir: Path) -> dict[str, Any]:
    """The jobs' analytics phase: the bars exported per base (as the jobs export them from the
    mart; timed apart as ``export_seconds``), then the Beam graph (``seconds``)."""
    import duckdb

    from pipelines.jobs.load import build_analytics_graph, export_bars_by_base
    from pipelines.sinks import parquet_glob
    from pipelines.transforms.config import AnalyticsConfig

    con = duckdb.connect()
    (bars,) = con.execute("SELECT count(*) FROM read_parquet(?)", [bar_files]).fetchone()
    config = AnalyticsConfig()
    by_base, export_s = _timed(export_bars_by_base, con, workdir / "analytics_bars", config,
                               source="read_parquet(?)", params=[bar_files])
    p = _fn_runner_pipeline()
    build_analytics_graph(p, by_base, workdir / "analytics", config, emit_from_us=None)
    _, s = _timed(lambda: p.run().wait_until_finish())
    rows = {}
    for name in ("bars_1m_symbol", "cascades", "cascade_alerts", "oi_deltas", "contagion"):
        files = parquet_glob(workdir / "analytics", name)
        rows[name] = int(con.execute("SELECT count(*) FROM read_parquet(?)", [files]).fetchone()[0]) if files else 0
    con.close()
    return {"bars_in": int(bars), "seconds": s, "bars_per_s": bars / s, "export_seconds": export_s,
            "bases": len(by_base), "rows_out": rows}


def stage_duckdb_upserts(bar_files: list[str], db: Path) -> dict[str, Any]:
    """bars_1m upserts from Parquet: a first load (all inserts) then the same rows again (all conflicts)."""
    from pipelines import warehouse
    from pipelines.jobs.load import _upsert

    con = warehouse.connect(db)
    try:
        warehouse.migrate(con)
        out: dict[str, Any] = {}
        for label in ("insert", "replace"):
            con.execute("BEGIN")
            n, s = _timed(_upsert, con, "bars_1m", bar_files)
            con.execute("COMMIT")
            out[f"{label}_rows"] = n
            out[f"{label}_seconds"] = s
            out[f"{label}_rows_per_s"] = n / s
        return out
    finally:
        con.close()


def stage_gx(db: Path) -> dict[str, Any]:
    """Great Expectations: first use (import + context) and each suite's checkpoint on the loaded tables."""
    from pipelines import warehouse
    from pipelines.dq import DataQuality

    init_s = None
    if DataQuality._instance is None:
        _, init_s = _timed(DataQuality.shared)
    dq = DataQuality.shared()
    con = warehouse.connect(db)
    try:
        suites: dict[str, Any] = {}
        for suite in ("bars_1m",):  # the large table; the other suites run over far fewer rows
            dq.validate(con, suite, "bench-warmup", store=False)  # first run builds the checkpoint
            res, s = _timed(dq.validate, con, suite, "bench", store=False)
            suites[suite] = {"rows": res.rows_checked, "seconds": s, "rows_per_s": res.rows_checked / s if s else None,
                             "success": res.success, "expectations": res.evaluated}
    finally:
        con.close()
    return {"init_seconds": init_s, "suites": suites}
