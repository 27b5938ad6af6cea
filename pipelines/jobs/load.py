"""One bounded load: Kafka offset ranges -> Beam -> DuckDB marts + offsets in one transaction -> DQ.

The run reads every partition from the offset committed with the marts to the
log end, runs the Beam graph on the FnApiRunner over exactly that range, and
then, in ONE DuckDB transaction, merges the new partial aggregates into the
marts, stores the dead letters and advances the offsets. A crash before the
commit changes nothing; after it, the range is never read again: no loss, no
double count. Running it again over the same offsets is a no-op.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from connectors.kafka.beam_source import REJECTS, ReadKafkaRanges
from connectors.kafka.reader import OffsetRange, log_bounds, plan_ranges
from connectors.kafka.topics import all_topics, cluster_id
from connectors.normalize import TOPICS
from pipelines import warehouse
from pipelines.dq import DataQuality, DQResult
from pipelines.liquidations import LIQUIDATIONS_1M_SCHEMA, LiquidationsPerMinute
from pipelines.settings import JobSettings
from pipelines.sinks import WriteRowsToParquet, parquet_glob

log = logging.getLogger(__name__)

#: topics the load consumes: liquidations and every dead-letter topic
LOAD_TOPICS = [TOPICS["liquidation"]] + [t for t in all_topics() if t.endswith(".dlq")]
MART_TABLES = ["liquidations_1m", "rejects"]

REJECTS_SCHEMA = pa.schema([
    ("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64()),
    ("exchange", pa.string()), ("event_type", pa.string()), ("reason", pa.string()),
    ("detail", pa.string()), ("source", pa.string()), ("received_at", pa.timestamp("us", tz="UTC")),
    ("raw", pa.binary()),
])


@dataclass
class LoadResult:
    run_id: str
    status: str
    ranges: list[OffsetRange] = field(default_factory=list)
    events_in: int = 0
    rejects_in: int = 0
    rows_written: int = 0
    duration_s: float = 0.0
    dq: list[DQResult] = field(default_factory=list)

    @property
    def dq_passed(self) -> bool:
        return all(r.success or not r.critical for r in self.dq)


def build_graph(p: beam.Pipeline, settings: JobSettings, ranges: list[OffsetRange], out_dir: Path) -> None:
    """The bounded graph: read ranges, window liquidations per minute, write mart partials."""
    events = p | "ReadKafka" >> ReadKafkaRanges(settings.kafka, ranges)
    (events["liquidation"]
     | "LiquidationsPerMinute" >> LiquidationsPerMinute()
     | "WriteLiquidations1m" >> WriteRowsToParquet(out_dir, "liquidations_1m", LIQUIDATIONS_1M_SCHEMA))
    events[REJECTS] | "WriteRejects" >> WriteRowsToParquet(out_dir, "rejects", REJECTS_SCHEMA)


def run_beam(settings: JobSettings, ranges: list[OffsetRange], out_dir: Path) -> dict[str, int]:
    options = PipelineOptions(flags=[], direct_num_workers=settings.workers, direct_running_mode="in_memory")
    p = beam.Pipeline(runner=FnApiRunner(), options=options)
    build_graph(p, settings, ranges, out_dir)
    result = p.run()
    result.wait_until_finish()
    counts = {}
    for c in result.metrics().query()["counters"]:
        counts[c.key.metric.name] = counts.get(c.key.metric.name, 0) + int(c.committed or 0)
    return counts


_MERGE_LIQUIDATIONS = """
INSERT INTO liquidations_1m
SELECT exchange, symbol, side, minute, base, quote, liq_count, notional_usd, max_notional_usd,
       first_event_time, last_event_time
FROM read_parquet(?)
ON CONFLICT (exchange, symbol, side, minute) DO UPDATE SET
    liq_count = liq_count + excluded.liq_count,
    notional_usd = notional_usd + excluded.notional_usd,
    max_notional_usd = greatest(max_notional_usd, excluded.max_notional_usd),
    first_event_time = least(first_event_time, excluded.first_event_time),
    last_event_time = greatest(last_event_time, excluded.last_event_time)
"""


def run_load(settings: JobSettings, reset_offsets: bool = False, run_dq: bool = True) -> LoadResult:
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    run_id = f"load-{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    con = warehouse.connect(settings.db)
    try:
        warehouse.migrate(con)
        cid = cluster_id(settings.kafka)
        if reset_offsets:
            warehouse.reset_state(con, MART_TABLES)
        committed = warehouse.committed_offsets(con, cid, LOAD_TOPICS)
        bounds = log_bounds(settings.kafka, LOAD_TOPICS)
        ranges = plan_ranges(bounds, committed, settings.max_range)
        result = LoadResult(run_id=run_id, status="empty", ranges=ranges)
        if ranges:
            with tempfile.TemporaryDirectory(prefix="liqstream-load-", dir=settings.data_dir if settings.data_dir.exists() else None) as tmp:
                counts = run_beam(settings, ranges, Path(tmp))
                liq_files = parquet_glob(tmp, "liquidations_1m")
                rej_files = parquet_glob(tmp, "rejects")
                next_offsets = {(r.topic, r.partition): r.end for r in ranges}
                con.execute("BEGIN")
                try:
                    if liq_files:
                        con.execute(_MERGE_LIQUIDATIONS, [liq_files])
                        result.rows_written += int(con.execute(
                            "SELECT count(*) FROM read_parquet(?)", [liq_files]).fetchone()[0])
                    if rej_files:
                        con.execute("INSERT INTO rejects SELECT * FROM read_parquet(?) ON CONFLICT DO NOTHING", [rej_files])
                    warehouse.store_offsets(con, cid, next_offsets)
                    result.events_in = counts.get("records_read", 0)
                    result.rejects_in = counts.get("records_rejected", 0)
                    result.status = "ok"
                    _record_run(con, result, started, t0, "load")
                    con.execute("COMMIT")
                except Exception:
                    con.execute("ROLLBACK")
                    raise
        else:
            _record_run(con, result, started, t0, "load")
        if run_dq:
            result.dq.append(DataQuality.shared().validate(con, "liquidations_1m", run_id))
            if not result.dq_passed:
                result.status = "dq_failed"
                con.execute("UPDATE pipeline_runs SET status = 'dq_failed' WHERE run_id = ?", [run_id])
        result.duration_s = time.perf_counter() - t0
        con.execute("UPDATE pipeline_runs SET duration_s = ? WHERE run_id = ?", [result.duration_s, run_id])
        return result
    finally:
        con.close()


def _record_run(con, result: LoadResult, started: datetime, t0: float, job: str) -> None:
    offsets = [{"topic": r.topic, "partition": r.partition, "start": r.start, "end": r.end} for r in result.ranges]
    con.execute(
        "INSERT INTO pipeline_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [result.run_id, job, started, datetime.now(UTC), result.status, result.events_in, result.rejects_in,
         result.rows_written, time.perf_counter() - t0, json.dumps(offsets), None],
    )
