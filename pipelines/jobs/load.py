"""One bounded cycle: Kafka offset ranges -> Beam -> DuckDB marts + offsets in one transaction -> DQ.

Phase A (events): read every partition from the offset committed with the
marts to the log end; the Beam graph turns events into bars (merged with the
stored bars of the minutes still open to updates), late events, per-side
liquidation minutes and rejects. ONE DuckDB transaction then upserts them,
advances the offsets, the watermark, and marks the touched minutes as needing
analytics. A crash before the commit changes nothing; after it, the range is
never read again: no loss, no double count (ADR 003).

Phase B (analytics): the bars of the touched minutes plus each analytic's
lookback go through the same analytics graph as a backfill; results are
upserted and the pending mark cleared in one transaction. A crash between the
phases only delays the analytics to the next cycle (the mark survives).
"""

from __future__ import annotations

import json
import logging
import secrets
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from connectors.kafka.beam_source import REJECTS, ReadKafkaRangeBatches
from connectors.kafka.fetch import FetchAhead, Fetched, ParallelFetcher
from connectors.kafka.reader import READ_COUNT, OffsetRange, log_bounds, plan_ranges
from connectors.kafka.topics import all_topics, cluster_id
from connectors.normalize import TOPICS
from pipelines import archive, dedupe, warehouse
from pipelines.alerts import outbox as alert_outbox
from pipelines.alerts import watch as alert_watch
from pipelines.archive import WriteArchive
from pipelines.dq import DataQuality, DQResult
from pipelines.events_pass import events_pass_choice, run_events_pass
from pipelines.jobs import graph_reuse
from pipelines.liquidations import LIQUIDATIONS_1M_SCHEMA, LiquidationBatchesPerMinute
from pipelines.settings import JobSettings
from pipelines.sinks import ReadParquetRows, WriteRowsToParquet, WriteTablesToParquet, parquet_glob
from pipelines.transforms import liqmap as liqmap_estimator
from pipelines.transforms.cascades import CARRY_TAG
from pipelines.transforms.config import MINUTE_US, AnalyticsConfig
from pipelines.transforms.graph import build_analytics_on_panels, build_bars
from pipelines.transforms.panel import ANALYTICS_BAR_COLUMNS, ReadBasePanels, bar_kinds
from pipelines.transforms.params import RunParam, resolve, values_at_run

log = logging.getLogger(__name__)
progress_log = logging.getLogger("liqstream.progress")

#: topics a cycle consumes: the four event topics and every dead-letter topic
LOAD_TOPICS = list(TOPICS.values()) + [t for t in all_topics() if t.endswith(".dlq")]
EVENT_MARTS = ["bars_1m", "late_events", "liquidations_1m", "rejects"]
ANALYTIC_MARTS = ["bars_1m_symbol", "cascades", "cascade_alerts", "oi_deltas", "contagion", "liquidation_levels",
                  "liquidation_fuel"]
#: what --reset-offsets empties: everything derived from the topics
DERIVED_TABLES = EVENT_MARTS + ANALYTIC_MARTS + ["liquidation_map_state", "job_state", "quarantine",
                                              "alert_deliveries", "cascade_watches", "event_keys"]
#: suites run after each load (the DQ cadence of the streaming job decides when)
#: suites comparing two marts loaded together; the production loader lands each mart's window panes
#: independently, so there one mart can be ahead of the other at gate time
CROSS_MART_SUITES = frozenset({"liquidations_reconciliation"})
DQ_SUITES = ["stg_events_notional", "liquidations_1m", "bars_1m", "cascades", "oi_deltas", "contagion",
             "liquidation_levels", "liquidation_fuel",
             "bars_1m_continuity", "bars_1m_freshness", "liquidations_reconciliation"]

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
    #: copies of events already counted (a producer rerun, a feed's resend) dropped (ADR 016)
    duplicates_in: int = 0
    rows_written: int = 0
    late_events: int = 0
    analytics_rows: int = 0
    duration_s: float = 0.0
    dq: list[DQResult] = field(default_factory=list)
    watermark_us: int | None = None
    #: how the events phase ran: "graph" (the Beam graph) or "vectorized" (a fetched cycle's one pass, ADR 028)
    events_pass: str = "graph"
    #: the cycle's ranges and fetch were the read ahead during the cycle before (ADR 043)
    read_ahead: bool = False
    #: wall seconds per phase: "plan" (offsets, log bounds), "fetch" (the reader processes, big
    #: cycles only), "events" (the Beam pipeline), "commit" (archive + upserts + offsets), "analytics", "dq"
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def dq_passed(self) -> bool:
        return all(r.success or not r.critical for r in self.dq)

    def took(self, phase: str, since: float) -> float:
        return add_phase_time(self.timings, phase, since)


def add_phase_time(timings: dict[str, float], phase: str, since: float) -> float:
    """Add the wall seconds since ``since`` (a perf_counter reading) to ``phase``; return now."""
    now = time.perf_counter()
    timings[phase] = timings.get(phase, 0.0) + now - since
    return now


class CatchUpProgress:
    """Progress lines of a cycle that takes long (a catch-up): every ``every_s`` seconds, from the
    first ``every_s`` on, the events read of those planned, the rate and the phase, logged to
    ``liqstream.progress`` (INFO; the CLI's load and stream show it on the terminal), so a user
    can tell a slow catch-up from a stuck one. Short cycles print nothing."""

    def __init__(self, run_id: str, to_read: int, every_s: float) -> None:
        self.run_id, self.to_read, self.every_s = run_id, to_read, every_s
        self.phase = "read"
        self._base = READ_COUNT.records
        self._t0 = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="catch-up-progress", daemon=True)

    def __enter__(self) -> CatchUpProgress:
        if self.every_s > 0 and self.to_read > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()

    def line(self) -> str:
        read = min(READ_COUNT.records - self._base, self.to_read)
        secs = time.monotonic() - self._t0
        return (f"{self.run_id}: {read:,} of {self.to_read:,} events read ({read / self.to_read:.0%}), "
                f"{read / secs:,.0f}/s over {secs:.0f}s; phase {self.phase}")

    def _run(self) -> None:
        while not self._done.wait(self.every_s):
            progress_log.info("%s", self.line())


class _ReusedViews(PipelineOptions):
    """PipelineOptions whose ``view_as`` makes each view once: Beam asks for views many times
    while it builds and runs a graph, and each new view parses every option of its class anew
    (argparse). The views of one options object share its values, so a kept view is the view."""

    def view_as(self, cls):  # type: ignore[override]
        views = self.__dict__.setdefault("_views", {})
        if cls not in views:
            views[cls] = super().view_as(cls)
        return views[cls]


def _runner_option_values(settings: JobSettings) -> dict[str, Any]:
    """The runner options of a job's pipelines (what a reused graph is keyed on, ADR 045)."""
    return {"direct_num_workers": settings.workers, "direct_running_mode": "in_memory"}


def _runner_options(settings: JobSettings) -> PipelineOptions:
    return _ReusedViews(flags=[], **_runner_option_values(settings))


def _run(p: beam.Pipeline) -> dict[str, int]:
    result = p.run()
    result.wait_until_finish()
    return _counters(result)


def _counters(result) -> dict[str, int]:
    """A finished run's counters by name (summed over steps)."""
    counts: dict[str, int] = {}
    for c in result.metrics().query()["counters"]:
        counts[c.key.metric.name] = counts.get(c.key.metric.name, 0) + int(c.committed or 0)
    return counts


def build_event_graph(p: beam.Pipeline, settings: JobSettings, ranges: list[OffsetRange], out_dir: Path,
                      config: AnalyticsConfig, watermark_us: int | None, prior_bar_files: list[str],
                      fetched: Fetched | None = None, dedupe_seen: str | None = None) -> None:
    """Phase A: read ranges, bars (+ prior bars), late events, liquidation minutes, rejects.

    ``fetched``: the ranges already read by the job's reader processes (connectors.kafka.fetch)
    into Arrow IPC files; else the pipeline reads Kafka itself. With ``settings.dedupe_horizon_s``
    the copies of an event (this cycle's, or committed ones whose keys ``dedupe_seen`` holds) are
    dropped before anything counts them, the archive included (pipelines/dedupe.py)."""
    if fetched is None:
        events = p | "ReadKafka" >> ReadKafkaRangeBatches(settings.kafka, ranges)
        batches, rejects = events["batches"], events[REJECTS]
    else:
        batches = (p | "FetchedFiles" >> beam.Create(fetched.files, reshuffle=False)
                   | "ReadFetched" >> beam.ParDo(ReadArrowFile()))
        rejects = p | "FetchedRejects" >> beam.Create(fetched.rejects, reshuffle=False)
    if settings.dedupe_horizon_s > 0:
        batches = batches | "DropDuplicates" >> dedupe.DropDuplicateEvents(dedupe_seen, out_dir)
    write_event_marts(p, batches, out_dir, config, watermark_us, prior_bar_files)
    batches | "Archive" >> beam.ParDo(WriteArchive(str(out_dir / "archive"), settings.archive_parquet))
    rejects | "WriteRejects" >> WriteRowsToParquet(out_dir, "rejects", REJECTS_SCHEMA)


class ReadArrowFile(beam.DoFn):
    """An Arrow IPC file -> its RecordBatches (each owns its buffers: nothing large to pickle)."""

    def process(self, path: str):
        import pyarrow as pa

        with pa.OSFile(path) as f:
            reader = pa.ipc.open_file(f)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)


def write_event_marts(p: beam.Pipeline, batches, out_dir: Path, config: AnalyticsConfig,
                      watermark_us: int | None, prior_bar_files: list[str]) -> None:
    """Event batches -> bars_1m, late_events and liquidations_1m partials (shared with the backfill)."""
    prior = (p | "PriorBars" >> ReadParquetRows(prior_bar_files)) if prior_bar_files else None
    bars = build_bars(batches, config, watermark_us=watermark_us, prior_bars=prior)
    bars["bars_1m"] | "WriteBars" >> WriteRowsToParquet(out_dir, "bars_1m")
    bars["late_events"] | "WriteLate" >> WriteRowsToParquet(out_dir, "late_events")
    (batches
     | "LiquidationsPerMinute" >> LiquidationBatchesPerMinute()  # no Beam windows: see its docstring
     | "WriteLiquidations1m" >> WriteRowsToParquet(out_dir, "liquidations_1m", LIQUIDATIONS_1M_SCHEMA))


def build_analytics_graph(p: beam.Pipeline, bars_by_base: dict[str, list[str]], out_dir: Path,
                          config: AnalyticsConfig, emit_from_us: int | None,
                          oi_reference: list[tuple[str, float]] | str | None = None,
                          closed_before_us: int | None = None,
                          liqmap_state: dict[str, Any] | None = None, window: dict | None = None) -> None:
    """Phase B: stored bars (touched minutes + lookback), one set of Parquet files per base
    (:func:`export_bars_by_base`) -> the analytic marts. Each base's files are read into Arrow and
    aggregated inside a DoFn: no bar row crosses Beam's data plane. ``closed_before_us``: the
    open-minute watch (ADR 018), cascades from the minutes before it only. ``window``: a windowed
    backfill's window (``build_analytics_on_panels``; its samples and carry are Arrow tables).
    ``oi_reference`` as a path: a pickle file of that list, read when the graph runs (a windowed
    backfill's carried history: Beam pickles a ``Create``'s values with bz2 several times per run).

    Any per-run value (``bars_by_base``, ``out_dir``, ``emit_from_us``, ``oi_reference``,
    ``closed_before_us``, ``liqmap_state``'s values) may be a ``RunParam``, read when the graph runs:
    the stream job builds this graph once and re-runs it every cycle (ADR 045, pipelines/jobs/graph_reuse.py)."""
    panels = p | "BasePanels" >> ReadBasePanels(bars_by_base, config)
    ref = None if oi_reference is None else values_at_run(p, "OIReference", oi_reference, _oi_reference_values)
    for name, rows in build_analytics_on_panels(panels, config, emit_from_us, oi_reference=ref,
                                                closed_before_us=closed_before_us, liqmap_state=liqmap_state,
                                                window=window).items():
        if name in ("oi_samples", CARRY_TAG):
            rows | f"Write_{name}" >> WriteTablesToParquet(out_dir, name)
        else:
            rows | f"Write_{name}" >> WriteRowsToParquet(out_dir, name, flush_rows=config.sink_flush_rows)


def export_bars_by_base(con, out_dir: Path, config: AnalyticsConfig, since_us: int | None = None,
                        source: str = "bars_1m", params: list | None = None) -> dict[str, list[str]]:
    """The analytics' bars (their columns, the kinds they read, minute_ts >= ``since_us``) of
    ``source`` (a table, or e.g. ``read_parquet(?)`` with ``params``) -> {base: [Parquet files]},
    written in one pass (hive partitions ``base=<url-encoded base>``)."""
    from urllib.parse import unquote

    where, args = ["list_contains(?::VARCHAR[], kind)"], [*(params or []), list(bar_kinds(config))]
    if since_us is not None:
        where.append("minute_ts >= make_timestamp(?::BIGINT)")
        args.append(since_us)
    sql = f"SELECT {', '.join(ANALYTICS_BAR_COLUMNS)} FROM {source} WHERE {' AND '.join(where)}"
    (n,) = con.execute(f"SELECT count(*) FROM ({sql})", args).fetchone()
    if not n:
        return {}
    out_dir.mkdir(parents=True, exist_ok=True)
    con.execute(f"COPY ({sql}) TO '{out_dir}' (FORMAT parquet, PARTITION_BY (base), WRITE_PARTITION_COLUMNS true,"
                " OVERWRITE_OR_IGNORE true)", args)
    by_base: dict[str, list[str]] = {}
    for d in sorted(out_dir.glob("base=*")):
        files = sorted(str(f) for f in d.glob("*.parquet"))
        if files:
            by_base[unquote(d.name[len("base="):])] = files
    return by_base


def _oi_reference_values(ref: list | str | RunParam) -> list:
    """``build_analytics_graph``'s ``oi_reference`` when the graph runs: the list, the pickle file's
    list, or the RunParam's."""
    if isinstance(ref, str):
        return _load_pickled(ref)
    return list(resolve(ref))


def _load_pickled(path: str) -> list:
    import pickle

    with open(path, "rb") as f:
        return pickle.load(f)


#: job_state: the token of the books this process last stored (ADR 061), and the books themselves
_LIQMAP_TOKEN_STATE = "liqmap_state_token"
#: {"token": job_state's token when they were committed, "rows": {base: rows}} (one database a process)
_KEPT_LIQMAP: dict[str, Any] = {}


def liqmap_cycle(con, config: AnalyticsConfig, from_us: int, state_path: Path, keep: bool = False) -> dict[str, Any]:
    """The liquidation map's part of an analytics cycle (ADR 015): the stored books exported to
    ``state_path``, the last settled minute (no event accepted later can change it: the state
    to store is the books after it) and where its bars must begin: the ``ffill_max_minutes``
    before the oldest stored book's next minute, or the warm-up before ``from_us`` when there is
    no state or ``from_us`` rewinds into it (a replay: the books warm up again).

    ``keep`` (``JobSettings.liqmap_state_in_process``, ADR 061): the books this process committed
    last are handed to the graph in process instead of exported, when the table still holds them
    (job_state's token is theirs, and its rows' count and minutes are theirs); the graph's rows
    are collected for :func:`keep_liqmap_state` after the commit."""
    if not config.liqmap_enabled:
        return {"state_path": None, "settled_us": None, "data_from_us": from_us}
    watermark = warehouse.get_state(con, "watermark_us")
    settled = None if watermark is None else (watermark - config.allowed_lateness_us) // MINUTE_US * MINUTE_US - MINUTE_US
    oldest, newest, n = con.execute("SELECT min(last_minute_us), max(last_minute_us), count(*) "
                                    "FROM liquidation_map_state").fetchone()
    warm_from = from_us - config.liqmap_warmup_minutes * MINUTE_US
    kept = None
    if oldest is None or from_us <= newest or oldest + MINUTE_US < warm_from:
        data_from = warm_from  # (a book older than the warm-up would reach is warmed up again too)
        if keep and oldest is None:  # (no rows: the table will hold the cycle's; a re-warm keeps none)
            liqmap_estimator.open_handoff(str(state_path), None)
    else:
        data_from = oldest + MINUTE_US - config.ffill_max_minutes * MINUTE_US
        kept = _kept_liqmap_state(con, n, oldest, newest) if keep else None
        if kept is None:
            con.execute(f"COPY (SELECT * FROM liquidation_map_state) TO '{state_path}' (FORMAT parquet)")
        if keep:  # the graph reads every stored row: what the table holds after the store is collected
            liqmap_estimator.open_handoff(str(state_path), kept)
    return {"state_path": str(state_path), "settled_us": settled, "data_from_us": data_from}


def _kept_liqmap_state(con, n: int, oldest: int, newest: int) -> dict[str, list[dict]] | None:
    """The books this process kept, when ``liquidation_map_state`` holds exactly them: the token
    committed with them is job_state's (any other store, a reset or a rolled-back cycle leaves
    another or none), and the table's row count and minutes are theirs."""
    token = warehouse.get_state(con, _LIQMAP_TOKEN_STATE)
    if not _KEPT_LIQMAP or token is None or _KEPT_LIQMAP["token"] != token:
        return None
    rows = [r for rs in _KEPT_LIQMAP["rows"].values() for r in rs]
    if len(rows) != n or min(r["last_minute_us"] for r in rows) != oldest or max(
            r["last_minute_us"] for r in rows) != newest:
        return None
    return _KEPT_LIQMAP["rows"]


def store_liqmap_state(con, files: list[str], token: int | None = None,
                       rows: dict[str, list[dict]] | None = None) -> None:
    """Replace the stored books of the bases a cycle stepped (a re-warmed base drops venues it no
    longer has): the state rows of ``files``, or ``rows`` by base (the in-process hand-off, ADR 061:
    the same rows, made into one Arrow table here instead of a Parquet file by the graph's sink);
    job_state's token becomes ``token`` (ADR 061: None = no process keeps them)."""
    if rows:
        table = pa.Table.from_pylist([r for rs in rows.values() for r in rs])  # (as the sink makes its file)
        con.execute("DELETE FROM liquidation_map_state WHERE base IN (SELECT unnest(?::VARCHAR[]))", [list(rows)])
        con.register("_liqmap_state_rows", table)
        try:
            con.execute("INSERT INTO liquidation_map_state BY NAME SELECT * FROM _liqmap_state_rows")  # (deleted above)
        finally:
            con.unregister("_liqmap_state_rows")
    elif files:
        con.execute("DELETE FROM liquidation_map_state WHERE base IN (SELECT DISTINCT base FROM read_parquet(?))",
                    [files])
        _upsert(con, "liquidation_map_state", files)
    if rows or files:
        warehouse.set_state(con, _LIQMAP_TOKEN_STATE, token)


def keep_liqmap_state(rows: dict[str, list[dict]], token: int) -> None:
    """After a cycle committed: keep the books the table now holds under ``token`` (ADR 061)."""
    _KEPT_LIQMAP.clear()
    _KEPT_LIQMAP.update(token=token, rows=rows)


#: the fuel an episode started with (docs/marts.md, cascades): liquidation_fuel of the last minute
#: with a row at most 10 minutes before its start, in its direction; the market sums its bases.
#: Touched: rows the cycle rewrote (an upsert leaves the columns NULL) or without fuel, and episodes
#: starting after the cycle's first emitted minute (their fuel rows were just re-computed).
# The market scope sums its bases' fuel: in DECIMAL, so the sum is exact and does not depend on
# the order DuckDB's threads add the rows in (it did in doubles: the last digit differed between a
# one-cycle and a many-cycle load). An episode's row re-upserted by this cycle (INSERT OR REPLACE
# keeps the columns the insert does not name, the fuel ones) gets its consumed share again from
# its liquidated USD of now: an open or recently ended episode is re-computed, not only new ones.
CASCADE_FUEL_SQL = """
UPDATE cascades SET fuel_1pct_usd = f.u1, fuel_2pct_usd = f.u2, fuel_5pct_usd = f.u5,
    fuel_consumed_share = CASE WHEN f.u5 > 0 THEN f.liq / f.u5 END
FROM (
    SELECT c.episode_id,
           sum((CASE WHEN c.direction = 'long_liquidation' THEN f.long_usd_1pct ELSE f.short_usd_1pct END)::DECIMAL(38, 6))::DOUBLE AS u1,
           sum((CASE WHEN c.direction = 'long_liquidation' THEN f.long_usd_2pct ELSE f.short_usd_2pct END)::DECIMAL(38, 6))::DOUBLE AS u2,
           sum((CASE WHEN c.direction = 'long_liquidation' THEN f.long_usd_5pct ELSE f.short_usd_5pct END)::DECIMAL(38, 6))::DOUBLE AS u5,
           any_value(CASE WHEN c.direction = 'long_liquidation' THEN c.long_liq_usd ELSE c.short_liq_usd END)::DOUBLE
               AS liq
    FROM (SELECT c.*, b.base AS fuel_base FROM cascades c
          JOIN (SELECT DISTINCT base FROM liquidation_fuel) b ON b.base = c.scope OR c.scope = $market
          WHERE c.fuel_1pct_usd IS NULL OR c.start_ts > make_timestamp($since) OR c.status = 'open'
                OR c.end_ts >= make_timestamp($since) OR c.closed_ts >= make_timestamp($since)) c
    ASOF JOIN liquidation_fuel f ON f.base = c.fuel_base AND f.minute_ts <= c.start_ts - INTERVAL 1 MINUTE
    WHERE f.minute_ts >= c.start_ts - INTERVAL 10 MINUTE
    GROUP BY c.episode_id
) f
WHERE cascades.episode_id = f.episode_id
"""


def attach_cascade_fuel(con, config: AnalyticsConfig, since_us: int) -> None:
    """Fill the episodes' fuel columns (:data:`CASCADE_FUEL_SQL`) after an upsert of the marts from
    ``since_us`` on, in its transaction."""
    con.execute(CASCADE_FUEL_SQL, {"market": config.market_scope, "since": since_us})


def analytics_lookback_us(config: AnalyticsConfig) -> int:
    """Bars to read back before the first touched minute (the OI reference comes from SQL instead)."""
    spans = {k: v for k, v in config.lookback_minutes().items() if k != "cascades_oi_reference"}
    return max(spans.values()) * MINUTE_US


def oi_reference(con, window_start_us: int, config: AnalyticsConfig) -> list[tuple[str, float]]:
    """Each scope's highest OI USD over the oi_reference_minutes before the bars window (cascade thresholds
    scale with it), from the stored bars_1m_symbol: a cycle need not read a week of bars."""
    from pipelines.transforms.cascades import OI_REFERENCE_SQL

    rows = con.execute(OI_REFERENCE_SQL, {"window_start": datetime.fromtimestamp(window_start_us / 1e6, UTC),
                                          "minutes": config.oi_reference_minutes,
                                          "market": config.market_scope}).fetchall()
    return [(scope, float(usd)) for scope, usd in rows if usd is not None]


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


def _upsert(con, table: str, files: list[str]) -> int:
    if not files:
        return 0
    (n,) = con.execute("SELECT count(*) FROM read_parquet(?, union_by_name=true)", [files]).fetchone()
    con.execute(f"INSERT OR REPLACE INTO {table} BY NAME SELECT * FROM read_parquet(?, union_by_name=true)", [files])
    return int(n)


def _export(con, sql: str, params: list, path: Path) -> list[str]:
    (n,) = con.execute(f"SELECT count(*) FROM ({sql})", params).fetchone()
    if not n:
        return []
    con.execute(f"COPY ({sql}) TO '{path}' (FORMAT parquet)", params)
    return [str(path)]


def run_load(settings: JobSettings, reset_offsets: bool = False, run_dq: bool = True,
             config: AnalyticsConfig | None = None, dq_suites: list[str] | None = None,
             run_analytics: bool = True, fetcher: ParallelFetcher | None = None,
             after_analytics: Callable[[Any], None] | None = None, open_minute_watch: bool = False,
             dq_gx_every_s: float = 0.0, bounds: dict | None = None, ahead: FetchAhead | None = None,
             read_ahead: Callable[[dict[tuple[str, int], int]], None] | None = None,
             read_ahead_early: bool = False, after_events: Callable[[Any], None] | None = None) -> LoadResult:
    """One bounded cycle: the unread offsets of every topic -> marts, offsets, archive, DQ.

    ``fetcher``: reader processes kept by the caller across cycles (the stream job) to read
    the ranges in parallel; without one the Beam pipeline reads them. ``after_analytics(con)``:
    called once the analytics committed, before the DQ gate (the stream job hands out the new
    alerts there: a gate takes seconds). ``open_minute_watch`` (the stream job, when
    ``config.open_minute_watch``): cascades are detected on closed minutes only and the open
    minute raises watches (pipelines/alerts/watch.py, ADR 018); else every stored minute is analysed
    (a bounded load: the data so far is all there is). ``dq_gx_every_s``: see :func:`run_gate`.
    ``bounds``: the topics' (log start, log end) the caller has just asked (``reader.log_bounds``;
    the stream job's lag probe, ADR 038); None asks the broker. ``ahead``: the ranges the stream
    job's readers read during the last cycle's analytics (ADR 043), used as this cycle's plan and
    fetch if they start at the committed offsets. ``read_ahead(committed)``: the stream job starts
    the next cycle's read from ``committed``, the offsets once this cycle's events committed: called
    after that commit, before the analytics; with ``read_ahead_early``, as soon as the cycle's
    own fetch ended (the read then overlaps the events pass too; if the commit fails, the next
    cycle's committed offsets differ and it does not take the read). ``after_events(con)``: called
    once a cycle's events committed, before its analytics (the stream job: whether to load GX now)."""
    config = config or AnalyticsConfig.from_env()
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    run_id = f"load-{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    con = warehouse.connect(settings.db)
    try:
        warehouse.migrate(con)
        cid = cluster_id(settings.kafka)
        if reset_offsets:
            warehouse.reset_state(con, DERIVED_TABLES)
        committed = warehouse.committed_offsets(con, cid, LOAD_TOPICS)
        t_ahead = time.perf_counter()
        taken = ahead.take(committed) if ahead is not None else None
        waited_s = time.perf_counter() - t_ahead
        if taken is not None:
            ranges, fetched = taken
        else:
            if bounds is None:
                bounds = log_bounds(settings.kafka, LOAD_TOPICS)
            ranges, fetched = plan_ranges(bounds, committed, settings.max_range), None
        result = LoadResult(run_id=run_id, status="empty", ranges=ranges)
        tick = result.took("plan", t0)
        if taken is not None:  # the wait for the read ahead is the cycle's fetch, not its plan
            result.read_ahead = True
            result.timings["plan"] -= waited_s
            result.timings["fetch"] = waited_s
        tmp_parent = settings.data_dir if settings.data_dir.exists() else None
        with tempfile.TemporaryDirectory(prefix="liqstream-cycle-", dir=tmp_parent) as tmp_str:
            tmp = Path(tmp_str)
            if ranges:
                with CatchUpProgress(run_id, sum(r.size for r in ranges), settings.progress_every_s) as progress:
                    after_fetch = None
                    if read_ahead is not None:
                        after_commit = {**committed, **{(r.topic, r.partition): r.end for r in ranges}}
                        after_fetch = (lambda: read_ahead(after_commit)) if read_ahead_early else None
                    _phase_events(con, settings, config, ranges, cid, tmp, result, started, t0, fetcher, progress,
                                  fetched, after_fetch)
                if read_ahead is not None and not read_ahead_early:
                    read_ahead(after_commit)
                if after_events is not None:
                    after_events(con)
            else:
                _record_run(con, result, started, t0, "load")
            tick = time.perf_counter()
            pending = warehouse.get_state(con, "analytics_from_us") if run_analytics else None
            if pending is not None:
                result.analytics_rows = _phase_analytics(con, settings, config, pending, tmp / "analytics", run_id,
                                                         open_minute_watch and config.open_minute_watch)
                tick = result.took("analytics", tick)
                if after_analytics is not None:
                    after_analytics(con)
        if run_dq:
            run_gate(con, run_id, result, dq_suites or DQ_SUITES, docs_dir=settings.data_dir / "gx_docs",
                     archive_dir=settings.data_dir / "archive", gx_every_s=dq_gx_every_s)
            result.took("dq", tick)
        result.duration_s = time.perf_counter() - t0
        con.execute("UPDATE pipeline_runs SET duration_s = ? WHERE run_id = ?", [result.duration_s, run_id])
        return result
    except KeyboardInterrupt:  # an abandoned cycle (the stream job's second signal) waits for no read
        if ahead is not None:
            ahead.discard(wait=False)
            ahead = None
        raise
    finally:
        con.close()
        if ahead is not None:
            ahead.discard()  # its files were this cycle's fetch, or not taken


def _phase_events(con, settings: JobSettings, config: AnalyticsConfig, ranges: list[OffsetRange], cid: str,
                  tmp: Path, result: LoadResult, started: datetime, t0: float,
                  fetcher: ParallelFetcher | None = None, progress: CatchUpProgress | None = None,
                  fetched: Fetched | None = None, after_fetch: Callable[[], None] | None = None) -> None:
    """Phase A and its commit. ``fetched``: the ranges already read (a read ahead, ADR 043);
    ``after_fetch``: called once the ranges are read by the reader processes (either way)."""
    t_events = time.perf_counter()
    watermark = warehouse.get_state(con, "watermark_us")
    prior_files: list[str] = []
    if watermark is not None:
        # Only minutes within the allowed lateness can still change: merge new events into them.
        since = (watermark - config.allowed_lateness_us) // MINUTE_US * MINUTE_US
        # volume_base_exact as text: the rows' reader turns decimals into floats (sinks.plain_columns)
        prior_files = _export(con, "SELECT * REPLACE (volume_base_exact::VARCHAR AS volume_base_exact) FROM bars_1m "
                              "WHERE minute_ts >= make_timestamp(?::BIGINT)", [since], tmp / "prior_bars.parquet")
    out = tmp / "events"
    dedupe_on = settings.dedupe_horizon_s > 0
    if fetched is None and fetcher is not None and fetcher.worth_it(ranges):
        fetched = fetcher.fetch(ranges, tmp / "fetched")
        t_events = result.took("fetch", t_events)
    if fetched is not None and after_fetch is not None:
        after_fetch()
    if progress is not None:
        progress.phase = "read + bars" if fetched is None else "bars"
    counts = None
    if fetched is not None and events_pass_choice() == "vectorized":
        # the fetched events in one vectorized pass; None: an event type it does not know (ADR 028)
        # the committed keys among the cycle's: a semi-join in the database (ADR 037)
        counts = run_events_pass(fetched, out, config.allowed_lateness_us, watermark, prior_files, dedupe_on,
                                 (lambda keys: dedupe.committed_among(con, keys)) if dedupe_on else None,
                                 config.bar_us, settings.archive_parquet, bool(settings.events_pass_archive_thread))
        result.events_pass = "graph" if counts is None else "vectorized"
    if counts is None:
        # the graph's shards anti-join an export of every committed key
        seen = dedupe.export_seen(con, tmp / "seen_keys.parquet") if dedupe_on else None
        p = beam.Pipeline(runner=FnApiRunner(), options=_runner_options(settings))
        build_event_graph(p, settings, ranges, out, config, watermark, prior_files, fetched, seen)
        counts = _run(p)
    if fetched is not None:
        counts["records_read"], counts["records_rejected"] = fetched.records, fetched.rejected
    tick = result.took("events", t_events)

    bar_files = parquet_glob(out, "bars_1m")
    next_offsets = {(r.topic, r.partition): r.end for r in ranges}
    # publish the archive BEFORE the commit: a crash in between re-reads the range (readers dedup)
    archive.publish(out / "archive", settings.data_dir / "archive")
    if progress is not None:
        progress.phase = "commit"
    con.execute("BEGIN")
    try:
        result.rows_written += _upsert(con, "bars_1m", bar_files)
        result.late_events = _upsert(con, "late_events", parquet_glob(out, "late_events"))
        liq_files = parquet_glob(out, "liquidations_1m")
        if liq_files:
            con.execute(_MERGE_LIQUIDATIONS, [liq_files])
            result.rows_written += int(con.execute("SELECT count(*) FROM read_parquet(?)", [liq_files]).fetchone()[0])
        rej_files = parquet_glob(out, "rejects")
        if rej_files:
            con.execute("INSERT INTO rejects SELECT * FROM read_parquet(?) ON CONFLICT DO NOTHING", [rej_files])
        # the gate's scope starts at the first minute this cycle wrote in any mart: a late
        # liquidation lands in liquidations_1m's older minute while bars drop it
        touched = {"analytics_from_us": _first_minute(con, bar_files, "minute_ts"),
                   "dq_from_us": _first_minute(con, bar_files, "minute_ts", liq_files, "minute")}
        for name, first_touched in touched.items():
            if first_touched is not None:
                pending = warehouse.get_state(con, name)
                warehouse.set_state(con, name, first_touched if pending is None else min(pending, first_touched))
        if bar_files:
            result.watermark_us = confirmed_watermark(con, bar_files, warehouse.get_state(con, "watermark_us"),
                                                      config.watermark_max_jump_us)
            warehouse.set_state(con, "watermark_us", result.watermark_us)
        if settings.dedupe_horizon_s > 0:
            dedupe.commit_keys(con, out, warehouse.get_state(con, "watermark_us"), settings.dedupe_horizon_s)
        warehouse.store_offsets(con, cid, next_offsets)
        result.events_in = counts.get("records_read", 0)
        result.rejects_in = counts.get("records_rejected", 0)
        result.duplicates_in = counts.get(dedupe.DUPLICATES, 0)
        if result.duplicates_in:
            total = (warehouse.get_state(con, dedupe.DUPLICATES) or 0) + result.duplicates_in
            warehouse.set_state(con, dedupe.DUPLICATES, total)  # `liqstream status` shows the total
        result.status = "ok"
        _record_run(con, result, started, t0, "load")
        con.execute("COMMIT")
        result.took("commit", tick)
    except Exception:
        con.execute("ROLLBACK")
        raise


def _first_minute(con, *files_and_columns: Any) -> int | None:
    """The earliest minute (epoch µs) in the given (Parquet files, minute column) pairs; None if none."""
    firsts = []
    for files, col in zip(files_and_columns[::2], files_and_columns[1::2], strict=True):
        if files:
            (first,) = con.execute(f"SELECT epoch_us(min({col})) FROM read_parquet(?, union_by_name=true)",
                                   [files]).fetchall()[0]
            if first is not None:
                firsts.append(int(first))
    return min(firsts) if firsts else None


#: bars read when looking for the latest confirmed one (each skipped one is an isolated outlier)
_WATERMARK_CANDIDATES = 1000


def confirmed_watermark(con, bar_files: list[str], current: int | None, max_jump_us: int) -> int | None:
    """The watermark after a cycle whose bars are ``bar_files`` (ADR 010).

    Each bar's time is its latest event (trade, OI, funding; else its minute). The latest bar
    moves the watermark only if it lies within ``max_jump_us`` of the current watermark or of the
    cycle's next bar; else it is an unconfirmed outlier and the next one is tried. The first
    cycle of a job, holding a single bar, has nothing to confirm it with and takes it."""
    times = [t for (t,) in con.execute(
        "SELECT epoch_us(coalesce(greatest(last_trade_ts, oi_last_ts, funding_ts, depth_ts), minute_ts)) AS t "
        "FROM read_parquet(?, union_by_name=true) ORDER BY t DESC LIMIT ?", [bar_files, _WATERMARK_CANDIDATES]).fetchall()]
    if current is None and len(times) == 1:
        return times[0]
    for t, next_t in zip(times, [*times[1:], None], strict=True):
        if (current is not None and t - current <= max_jump_us) or (next_t is not None and t - next_t <= max_jump_us):
            return t if current is None else max(current, t)
    return current


#: the rows of each suite a cycle wrote: those dated from the gate's first touched minute ``{since}``
#: on. Cascades: an episode is rewritten while open and when its end is confirmed, whatever its
#: start: the episodes open, ending or closed from then on (each key's row is in the scope of the
#: gate after the cycle that wrote it: tests/unit/test_dq_gate.py)
DQ_SCOPES = {"liquidations_1m": "minute >= {since}", "bars_1m": "minute_ts >= {since}",
             "cascades": "status = 'open' OR end_ts >= {since} OR closed_ts >= {since} OR start_ts >= {since}",
             "oi_deltas": "as_of_ts >= {since}", "contagion": "as_of_ts >= {since}",
             "liquidation_levels": "as_of_ts >= {since}", "liquidation_fuel": "minute_ts >= {since}"}


def run_gate(con, run_id: str, result: LoadResult, suites: list[str], docs_dir: Path | None = None,
             archive_dir: Path | None = None, gx_every_s: float = 0.0) -> None:
    """Validate the rows loaded since the last gate; a critical failure quarantines their time range.

    ``gx_every_s`` (the stream job: ``JobSettings.dq_gx_every_s``): GX validates every suite and
    the Data Docs are rebuilt at most this often, the clock starting at the process's first gate;
    the gates between have DuckDB evaluate the expectations and run GX on a failing suite only,
    whose Data Docs page is built at once (ADR 031); a full gate has DuckDB evaluate the suites too
    and logs a disagreement with GX. 0: GX at every gate, nothing else."""
    since = warehouse.get_state(con, "dq_from_us")
    if since is None and result.status == "empty":
        return  # nothing new since the last check
    dq = DataQuality.shared()
    now = time.monotonic()
    if dq.last_full_gate is None and gx_every_s > 0:
        dq.last_full_gate = now
    full = gx_every_s <= 0 or now - dq.last_full_gate >= gx_every_s
    for suite in suites:
        where = gate_scope(suite, since)
        result.dq.append(dq.validate(con, suite, run_id, where=where, since_us=since, docs_dir=docs_dir,
                                     archive_dir=archive_dir, gx=full, audit=gx_every_s > 0))
    if full:
        dq.last_full_gate = now
    dq.publish_docs()  # the pages of the GX results of this gate, if any (a full gate, a failure)
    if not result.dq_passed:
        result.status = "dq_failed"
        failed = ",".join(r.suite for r in result.dq if r.critical and not r.success)
        until = (result.watermark_us or warehouse.get_state(con, "watermark_us") or since or 0) // MINUTE_US * MINUTE_US
        con.execute("INSERT OR REPLACE INTO quarantine VALUES (?, make_timestamp(?::BIGINT), make_timestamp(?::BIGINT), ?, ?)",
                    [run_id, since if since is not None else 0, until + MINUTE_US, failed, datetime.now(UTC)])
        con.execute("UPDATE pipeline_runs SET status = 'dq_failed', message = ? WHERE run_id = ?",
                    [f"quarantined: critical suites failed: {failed}", run_id])
        log.error("load %s failed its data-quality gate (%s): its rows are quarantined from the analyst views",
                  run_id, failed)
    warehouse.set_state(con, "dq_from_us", None)


def gate_scope(suite: str, since: int | None) -> str | None:
    """The WHERE of a plain suite's rows in a gate whose first touched minute is ``since``."""
    scope = DQ_SCOPES.get(suite)
    return f"({scope.format(since=f'make_timestamp({int(since)})')})" if since is not None and scope else None


def gate_needs_gx(con, suites: list[str], archive_dir: Path | None) -> bool:
    """Whether a gate now, over the rows written since the last one, would have a suite DuckDB does
    not decide (a failure GX must validate: ADR 031, ADR 059). Asked by the stream job after a cycle's events commit, to
    load GX while the analytics run when the gate will need it (ADR 053); the gate decides anew."""
    since = warehouse.get_state(con, "dq_from_us")
    if since is None:
        return False
    dq = DataQuality.shared()
    return not all(dq.decided_in_duckdb(con, suite, where=gate_scope(suite, since), since_us=since,
                                        archive_dir=archive_dir) for suite in suites)


#: job_state: the first minute the last open-minute analysis left open (ADR 018)
_CLOSED_BEFORE_STATE = "cascades_closed_before_us"


def _phase_analytics(con, settings: JobSettings, config: AnalyticsConfig, from_us: int, tmp: Path,
                     run_id: str, open_minute_watch: bool = False) -> int:
    watermark = warehouse.get_state(con, "watermark_us") if open_minute_watch else None
    closed_before = None if watermark is None else watermark // config.bar_us * config.bar_us
    if closed_before is not None:
        # minutes that were open at the last analysis and are closed now: their episodes and alerts
        # are emitted now, whatever this cycle's events touched
        was_open_from = warehouse.get_state(con, _CLOSED_BEFORE_STATE)
        if was_open_from is not None and was_open_from < closed_before:
            from_us = min(from_us, was_open_from)
    tmp.mkdir(parents=True, exist_ok=True)
    keep = bool(settings.liqmap_state_in_process)
    liqmap_state = liqmap_cycle(con, config, from_us, tmp / "liquidation_map_state.parquet", keep=keep)
    try:
        return _analytics_and_commit(con, settings, config, from_us, tmp, run_id, closed_before, watermark,
                                     liqmap_state)
    finally:
        if keep:  # a cycle that failed, or stored nothing, leaves the last kept books as they are
            liqmap_estimator.close_handoff(liqmap_state["state_path"] or "")


def _analytics_and_commit(con, settings: JobSettings, config: AnalyticsConfig, from_us: int, tmp: Path, run_id: str,
                          closed_before: int | None, watermark: int | None, liqmap: dict[str, Any]) -> int:
    marts_start = from_us - analytics_lookback_us(config)
    window_start = min(marts_start, liqmap["data_from_us"])
    (n_bars,) = con.execute("SELECT count(*) FROM bars_1m WHERE minute_ts >= make_timestamp(?::BIGINT)",
                            [window_start]).fetchone()
    if not n_bars:
        return 0
    bars_by_base = export_bars_by_base(con, tmp / "bars", config, since_us=window_start)
    out = tmp / "out"
    if bars_by_base and settings.analytics_graph_reuse:
        # the graph built and fused once, re-run with this cycle's values (ADR 045)
        graph_reuse.run_analytics(settings, config, bars_by_base, out, emit_from_us=from_us,
                                  oi_reference=oi_reference(con, marts_start, config), closed_before_us=closed_before,
                                  liqmap_state=liqmap)
    elif bars_by_base:
        p = beam.Pipeline(runner=FnApiRunner(), options=_runner_options(settings))
        build_analytics_graph(p, bars_by_base, out, config, emit_from_us=from_us,
                              oi_reference=oi_reference(con, marts_start, config), closed_before_us=closed_before,
                              liqmap_state=liqmap)
        _run(p)
    # the books handed back in process (ADR 061): stored from here; None: from the graph's files
    handed = liqmap_estimator.close_handoff(liqmap["state_path"]) if liqmap["state_path"] else None
    token = secrets.randbits(62) if handed and handed[0] else None
    con.execute("BEGIN")
    try:
        if bars_by_base:
            # The detection just re-ran over every scope's bars from the lookback on and emitted
            # every alert after from_us: the rows of that range it did not emit again were raised
            # on a minute seen partly (a cycle cut it). Seen: a `start` at level 1 on the first
            # $8.4M of a minute whose full $24.9M starts the episode at level 2 — key
            # (episode, level) differs, so the level-1 row stayed beside the final one and the
            # mart depended on where cycles cut the stream (issue 16). What was delivered stays
            # in alert_deliveries (ADR 012).
            con.execute("DELETE FROM cascade_alerts WHERE alert_ts > make_timestamp(?::BIGINT)", [from_us])
        # a snapshot's buckets are replaced whole: a bucket emptied by a re-run must not linger
        con.execute("DELETE FROM liquidation_levels WHERE as_of_ts >= make_timestamp(?::BIGINT)", [from_us])
        n = sum(_upsert(con, name, parquet_glob(out, name)) for name in ANALYTIC_MARTS)
        # the estimator's books commit with the rows made from them (exactly once; ADR 015)
        store_liqmap_state(con, parquet_glob(out, "liquidation_map_state"), token, handed[0] if handed else None)
        attach_cascade_fuel(con, config, from_us)  # before the alerts read their episode
        # the alerts' deliveries commit with them (the outbox, ADR 012); sent after the commit
        alert_outbox.enqueue(con, run_id, parquet_glob(out, "cascade_alerts"), settings)
        if closed_before is not None:
            # after the closed minutes' alerts are in: they confirm or withdraw the earlier watches
            alert_watch.resolve_watches(con, run_id, closed_before, config.bar_us, settings)
            alert_watch.raise_watches(con, run_id, parquet_glob(out, "cascade_open_starts"), watermark,
                                      config.bar_us, settings)
            warehouse.set_state(con, _CLOSED_BEFORE_STATE, closed_before)
        warehouse.set_state(con, "analytics_from_us", None)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    if token is not None:
        keep_liqmap_state(handed[1], token)
    return n


def _record_run(con, result: LoadResult, started: datetime, t0: float, job: str) -> None:
    offsets = [{"topic": r.topic, "partition": r.partition, "start": r.start, "end": r.end} for r in result.ranges]
    con.execute(
        "INSERT INTO pipeline_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [result.run_id, job, started, datetime.now(UTC), result.status, result.events_in, result.rejects_in,
         result.rows_written, time.perf_counter() - t0, json.dumps(offsets),
         f"{result.duplicates_in:,} duplicate events dropped" if result.duplicates_in else None],
    )
