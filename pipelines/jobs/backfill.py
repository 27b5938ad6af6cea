"""`liqstream backfill`: rebuild the marts of a date range with the same graph as the streaming job.

Sources, all turned into the same RecordBatches of normalized events:

* ``archive`` — the Parquet archive the streaming job writes (``pipelines.archive``);
* ``capture`` — capture files (liqstream JSONL or cryptofeed), normalized in the workers;
* ``kafka``   — topic offsets found by time (``connectors.kafka.timeindex``);
* ``tardis``  — tardis.dev CSV datasets (``trades``, ``liquidations``, ``derivative_ticker``) in a
  directory, read by ``connectors.sources.tardis``;
* ``tardis-raw`` — tardis.dev raw replay files (``<ISO time> <venue JSON>`` lines) in a directory,
  through the venue normalizers like a capture.

The days ``[from, to]`` are replaced exactly: in ONE DuckDB transaction the
rows of every mart whose time falls in the range are deleted and the rebuilt
rows inserted; the Great Expectations gate runs inside that transaction on the
rebuilt rows, and a critical failure rolls it back (nothing is published, the
exit code says so). Running it twice over the same input changes nothing.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa

from connectors.normalize import DeadLetter, Outcome
from pipelines import archive, warehouse
from pipelines.archive import DAY_US
from pipelines.arrow_pool import use_arrow_pool
from pipelines.dq import DataQuality, DQResult
from pipelines.jobs.load import (
    ANALYTIC_MARTS,
    _run,
    add_phase_time,
    analytics_lookback_us,
    attach_cascade_fuel,
    build_analytics_graph,
    export_bars_by_base,
    oi_reference,
    write_event_marts,
)
from pipelines.settings import JobSettings
from pipelines.sinks import WriteRowsToParquet, WriteTablesToParquet, parquet_glob, write_parquet_atomic
from pipelines.transforms.bars import BAR_EVENT_COLUMNS, IDENT_COLUMNS
from pipelines.transforms.cascades import CARRY_SUMS, CARRY_TAG, CarriedOI
from pipelines.transforms.config import AnalyticsConfig
from pipelines.transforms.oi import oi_delta_rows_from_samples
from schemas.arrow import arrow_schema

log = logging.getLogger(__name__)

#: the time column that places each mart's rows in a day (what a backfill replaces)
TIME_COLUMNS = {
    "bars_1m": "minute_ts", "liquidations_1m": "minute", "bars_1m_symbol": "minute_ts", "cascades": "start_ts",
    "cascade_alerts": "alert_ts", "oi_deltas": "as_of_ts", "contagion": "as_of_ts",
    "liquidation_levels": "as_of_ts", "liquidation_fuel": "minute_ts",
}
EVENT_TYPES = ("trade", "liquidation", "open_interest", "funding", "book_depth")
BATCH_ROWS = 50_000


@dataclass
class BackfillResult:
    run_id: str
    start: date
    end: date
    status: str = "empty"
    events: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    dq: list[DQResult] = field(default_factory=list)
    duration_s: float = 0.0
    #: wall seconds per phase ("events", "replace", "analytics", "dq", "commit"), for the summary and the bench
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def dq_passed(self) -> bool:
        return all(r.success or not r.critical for r in self.dq)


# ---- sources: work items -> RecordBatches -------------------------------------------------------
class ReadArchiveDays(beam.DoFn):
    """(event_type, day) -> that day's deduplicated events, in batches."""

    def __init__(self, archive_dir: str) -> None:
        self._dir = archive_dir

    def process(self, item: tuple[str, str]) -> Iterator[pa.RecordBatch]:
        event_type, day = item
        meta = arrow_schema(event_type).metadata
        for batch in archive.iter_day(Path(self._dir), event_type, day, BATCH_ROWS):
            if batch.num_rows:
                yield batch.replace_schema_metadata(meta)


#: what the per-day pass reads of each event type: the instrument and the columns its marts aggregate
DAY_COLUMNS = {et: [*IDENT_COLUMNS, *BAR_EVENT_COLUMNS[et]] for et in EVENT_TYPES}


class DayEventMarts(beam.DoFn):
    """An archive day -> its bars_1m and liquidations_1m as Arrow tables (tagged outputs) and its
    event count row (main output), in one vectorized pass over the day (ADR 022): each event type
    read once (its columns only, deduplicated on the position), aggregated once for every
    instrument; no per-instrument split, no shuffle."""

    def __init__(self, archive_dir: str, bar_us: int) -> None:
        self._dir = archive_dir
        self._bar_us = bar_us
        self._events = beam.metrics.Metrics.counter("backfill", _CountEvents.NAME)

    def process(self, day: str) -> Iterator:
        from pipelines.liquidations import liquidation_minutes
        from pipelines.transforms.bars import day_bars

        tables = {et: archive.read_day_columns(Path(self._dir), et, day, DAY_COLUMNS[et], dictionary=IDENT_COLUMNS)
                  for et in EVENT_TYPES}
        events = sum(t.num_rows for t in tables.values() if t is not None)
        self._events.inc(events)
        bars = day_bars(tables, self._bar_us)
        if bars is not None:
            yield beam.pvalue.TaggedOutput("bars_1m", bars)
        liquidations = liquidation_minutes(tables["liquidation"])
        if liquidations is not None:
            yield beam.pvalue.TaggedOutput("liquidations_1m", liquidations)
        yield {"batch": f"day:{day}", "events": events}  # keyed: a retried task's row counts once


def archive_day_marts(p: beam.Pipeline, archive_dir: Path, days: list[date], out, config: AnalyticsConfig):
    """The archive days' event marts -> ``out`` (Parquet); returns the PCollection of count rows.
    The days spread over the runner's workers (Reshuffle; the Dask runner gives each its task)."""
    items = [d.isoformat() for d in days]
    if not any(archive.days_in(archive_dir, et, items[0], items[-1]) for et in EVENT_TYPES):
        log.warning("no archived events for %s..%s under %s", items[0], items[-1], archive_dir)
    marts = (p | "ArchiveDays" >> beam.Create(items, reshuffle=False) | "Spread" >> beam.Reshuffle()
             | "DayEventMarts" >> beam.ParDo(DayEventMarts(str(archive_dir), config.bar_us)).with_outputs(
                 "bars_1m", "liquidations_1m", main="counts"))
    marts.bars_1m | "WriteBars" >> WriteTablesToParquet(out, "bars_1m")
    marts.liquidations_1m | "WriteLiquidations1m" >> WriteTablesToParquet(out, "liquidations_1m")
    return marts.counts


class NormalizeCaptureFile(beam.DoFn):
    """(path, start_us, end_us) -> RecordBatches of the events whose event time is in range."""

    def process(self, item: tuple[str, int, int]) -> Iterator[pa.RecordBatch]:
        from connectors.kafka.publish import account
        from connectors.sources.capture import read_capture

        path, start_us, end_us = item
        normalizers: dict = {}
        outcomes = (account(msg, normalizers)[1] for msg in read_capture(path))
        yield from _batches_in_range(outcomes, start_us, end_us)


def _batches_in_range(outcomes: Iterator[Outcome], start_us: int, end_us: int) -> Iterator[pa.RecordBatch]:
    """RecordBatches (per event type, BATCH_ROWS at most) of the records whose event time is in range."""
    rows: dict[str, list[dict]] = {et: [] for et in EVENT_TYPES}
    for outcome in outcomes:
        for et, rec in outcome.records:
            if start_us <= rec["event_time"] < end_us:
                rows[et].append(rec)
                if len(rows[et]) >= BATCH_ROWS:
                    yield pa.RecordBatch.from_pylist(rows[et], schema=arrow_schema(et))
                    rows[et] = []
    for et, rs in rows.items():
        if rs:
            yield pa.RecordBatch.from_pylist(rs, schema=arrow_schema(et))


class NormalizeTardisCsvFile(beam.DoFn):
    """(path, start_us, end_us) -> RecordBatches of a tardis CSV dataset's events in range.

    The backfill has no dead-letter topic: rows that cannot be read are counted
    (``tardis_dead_letters``) and the first of each file logged with its file and line."""

    def __init__(self) -> None:
        self._dead = beam.metrics.Metrics.counter("backfill", "tardis_dead_letters")

    def process(self, item: tuple[str, int, int]) -> Iterator[pa.RecordBatch]:
        from connectors.sources.tardis import read_tardis_csv

        path, start_us, end_us = item
        dead: list[DeadLetter] = []

        def outcomes() -> Iterator[Outcome]:
            for _, outcome in read_tardis_csv(path):
                if outcome.dead is not None:
                    self._dead.inc()
                    if not dead:  # the first is logged with its file and line
                        dead.append(outcome.dead)
                yield outcome

        yield from _batches_in_range(outcomes(), start_us, end_us)
        if dead:
            log.warning("tardis dataset %s: dead letters, the first %s: %s (%s)", path, dead[0].source,
                        dead[0].reason, dead[0].detail)


def tardis_files(directory: str | Path, source: str) -> list[str]:
    """The files of ``directory`` a tardis backfill reads: CSV datasets (``tardis``) or raw replay files
    (``tardis-raw``, every other file), sorted by name."""
    files = sorted(p for p in Path(directory).iterdir() if p.is_file() and not p.name.startswith("."))
    is_csv = [p.name.endswith((".csv", ".csv.gz")) for p in files]
    return [str(p) for p, c in zip(files, is_csv, strict=True) if c == (source == "tardis")]


def _day_bounds(start: date, end: date) -> tuple[int, int]:
    s = datetime(start.year, start.month, start.day, tzinfo=UTC)
    e = datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1)
    return int(s.timestamp() * 1_000_000), int(e.timestamp() * 1_000_000)


# ---- the job ---------------------------------------------------------------------------------------
def run_backfill(settings: JobSettings, start: date, end: date, source: str = "archive",
                 captures: list[str] | None = None, config: AnalyticsConfig | None = None,
                 run_dq: bool = True, progress: bool = False) -> BackfillResult:
    config = config or AnalyticsConfig.from_env()
    set_mmap_threshold(settings.backfill_mmap_threshold)  # before the day workers fork: they inherit it
    use_arrow_pool(settings.backfill_arrow_pool, "LIQSTREAM_BACKFILL_ARROW_POOL")  # likewise (ADR 047)
    t0 = time.perf_counter()
    run_id = f"backfill-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    result = BackfillResult(run_id, start, end)
    start_us, end_us = _day_bounds(start, end)
    # the cluster first: an unreachable scheduler fails here, before the database is opened
    cluster = DaskBackfill.open(settings, run_id) if settings.backfill_runner == "dask" else None
    try:
        con = warehouse.connect(settings.db)  # e.g. held by the stream job: let the cluster go
    except Exception:
        if cluster is not None:
            cluster.close()
        raise
    warehouse.migrate(con)
    try:
        with tempfile.TemporaryDirectory(prefix="liqstream-backfill-") as tmp_str:
            tmp = Path(tmp_str)
            out = tmp / "events"
            # One Beam run per day keeps memory bounded and gives the progress bar its ETA (ADR 007).
            days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
            tick = time.perf_counter()
            if cluster is not None:
                # every day's pipeline submitted at once: Dask spreads their tasks over its workers
                result.events = cluster.run_days(settings, source, captures or [], days, config, out,
                                                 warm_up=run_dq, progress=progress)
            elif _day_parallel(settings, source, len(days)):
                # each day in its own forked process on the in-process runner, while this process
                # loads Great Expectations for the gate (see _days_in_pool)
                result.events = _days_in_pool(settings, source, captures or [], days, out, config,
                                              min(settings.backfill_workers, len(days)), progress,
                                              warm_up=run_dq)
            else:
                if run_dq:
                    DataQuality.warm_up()  # GX loads while the first day's pipeline runs
                bar = _progress(days, progress)
                for day in bar:
                    result.events += backfill_day(settings, source, captures or [], day, out, config,
                                                  within_day_workers=settings.backfill_workers)
                    if hasattr(bar, "set_postfix"):
                        bar.set_postfix(events=f"{result.events:,}")
            add_phase_time(result.timings, "events", tick)
            con.execute("BEGIN")
            try:
                tick = time.perf_counter()
                for table, name in (("bars_1m", "bars_1m"), ("liquidations_1m", "liquidations_1m")):
                    result.rows[table] = _replace(con, table, parquet_glob(out, name), start_us, end_us)
                tick = add_phase_time(result.timings, "replace", tick)
                _log_step(progress, "recomputing cascades, OI deltas, contagion and the liquidation map")
                tick = _backfill_analytics(con, cluster, settings, config, start_us, end_us, tmp, result)
                tick = add_phase_time(result.timings, "replace", tick)
                if run_dq:
                    where = {"bars_1m": "minute_ts", "liquidations_1m": "minute", "cascades": "start_ts",
                             "oi_deltas": "as_of_ts", "contagion": "as_of_ts", "liquidation_levels": "as_of_ts",
                             "liquidation_fuel": "minute_ts"}
                    windows = _gate_windows(settings, start_us, end_us)
                    for suite, col in where.items():
                        if len(windows) > 1:  # one window's frame at a time (ADR 036)
                            result.dq.append(DataQuality.shared().validate_windows(
                                con, suite, run_id, col, windows, docs_dir=settings.data_dir / "gx_docs"))
                            continue
                        cond = f"{col} >= make_timestamp({start_us}) AND {col} < make_timestamp({end_us})"
                        result.dq.append(DataQuality.shared().validate(con, suite, run_id, where=cond,
                                                                       docs_dir=settings.data_dir / "gx_docs"))
                    for suite in ("bars_1m_continuity", "liquidations_reconciliation"):
                        result.dq.append(DataQuality.shared().validate(con, suite, run_id, since_us=start_us,
                                                                       docs_dir=settings.data_dir / "gx_docs"))
                    DataQuality.shared().publish_docs()
                tick = add_phase_time(result.timings, "dq", tick)
                if not result.dq_passed:
                    con.execute("ROLLBACK")
                    result.status = "dq_failed"
                    _store_dq(con, result)
                else:
                    result.status = "ok" if result.events else "empty"
                    # the rebuilt days passed their gate: lift quarantines that lie inside them
                    con.execute("DELETE FROM quarantine WHERE from_ts >= make_timestamp(?::BIGINT) "
                                "AND to_ts <= make_timestamp(?::BIGINT)", [start_us, end_us])
                    con.execute("COMMIT")
                add_phase_time(result.timings, "commit", tick)
            except Exception:
                con.execute("ROLLBACK")
                raise
        result.duration_s = time.perf_counter() - t0
        con.execute("INSERT INTO pipeline_runs VALUES (?, 'backfill', ?, ?, ?, ?, 0, ?, ?, NULL, ?)",
                    [run_id, datetime.now(UTC) - timedelta(seconds=result.duration_s), datetime.now(UTC),
                     result.status, result.events, sum(result.rows.values()), result.duration_s,
                     f"{source} {start}..{end}"])
        return result
    finally:
        con.close()
        if cluster is not None:
            cluster.close()


def _gate_windows(settings: JobSettings, start_us: int, end_us: int) -> list[tuple[int, int]]:
    """[from, to) of the DQ gate's windows: ``backfill_analytics_days`` at a time (0: the range)."""
    step = settings.backfill_analytics_days * DAY_US
    if step <= 0:
        return [(start_us, end_us)]
    return [(a, min(a + step, end_us)) for a in range(start_us, end_us, step)]


#: a base's bars up to and including its first bar at or after the parameter (all, if none)
_BARS_UNTIL_FIRST_AFTER = """(SELECT * FROM bars_1m b WHERE b.minute_ts <= coalesce(
    (SELECT min(n.minute_ts) FROM bars_1m n WHERE n.base = b.base AND n.minute_ts >= make_timestamp(?::BIGINT)),
    'infinity'::TIMESTAMP))"""


def _backfill_analytics(con, cluster, settings: JobSettings, config: AnalyticsConfig, start_us: int,
                        end_us: int, tmp: Path, result: BackfillResult) -> float:
    """The analytic marts of [start_us, end_us) from the replaced bars, in the open transaction:
    in windows of ``backfill_analytics_days`` (:func:`_windowed_analytics`, ADR 036), or (0, or on
    Dask, whose memory is its workers') in one run over the range and its lookback. Returns the
    perf_counter reading after the last replacement (phases "analytics" and "replace" accounted)."""
    tick = time.perf_counter()
    for name in ANALYTIC_MARTS:
        _delete_range(con, name, start_us, end_us)
    if settings.backfill_analytics_days > 0 and cluster is None:
        tick = _windowed_analytics(con, settings, config, start_us, end_us, tmp, result, tick)
        return _count_analytic_rows(con, start_us, end_us, result, tick)
    marts_start = start_us - analytics_lookback_us(config)
    warm = config.liqmap_warmup_minutes * config.bar_us if config.liqmap_enabled else 0
    out = tmp / "analytics"
    bars_by_base = export_bars_by_base(con, tmp / "bars", config, since_us=min(marts_start, start_us - warm))
    if bars_by_base:
        ref = oi_reference(con, marts_start, config)
        if cluster is not None:  # the bases spread over the cluster
            cluster.run_analytics(bars_by_base, config, start_us, ref, out)
        else:
            # in-process: the per-base panels are vectorized, and worker processes cost more
            # (start-up, pickling the panels) than they save (ADR 007)
            pa_ = beam.Pipeline(runner=_runner(), options=_options(1))
            build_analytics_graph(pa_, bars_by_base, out, config, emit_from_us=start_us, oi_reference=ref)
            _run(pa_)
    tick = add_phase_time(result.timings, "analytics", tick)
    for name in ANALYTIC_MARTS:
        _insert_range(con, name, parquet_glob(out, name), start_us, end_us)
    attach_cascade_fuel(con, config, start_us)
    tick = add_phase_time(result.timings, "replace", tick)
    return _count_analytic_rows(con, start_us, end_us, result, tick)


def _count_analytic_rows(con, start_us: int, end_us: int, result: BackfillResult, tick: float) -> float:
    for name in ANALYTIC_MARTS:
        col = TIME_COLUMNS[name]
        (result.rows[name],) = con.execute(
            f"SELECT count(*) FROM {name} WHERE {col} >= make_timestamp(?::BIGINT) AND {col} < make_timestamp(?::BIGINT)",
            [start_us, end_us]).fetchone()
    return tick


def window_lookback_us(config: AnalyticsConfig) -> int:
    """Bars a windowed backfill's window reads before its first minute (ADR 036): every analytic's
    lookback but oi_deltas' spans (served from the windows' samples) and the OI reference (carried)."""
    spans = {k: v for k, v in config.lookback_minutes().items() if k not in ("cascades_oi_reference", "oi_deltas")}
    return max(spans.values()) * config.bar_us


def _windowed_analytics(con, settings: JobSettings, config: AnalyticsConfig, start_us: int, end_us: int, tmp: Path,
                        result: BackfillResult, tick: float) -> float:
    """The analytic marts of [start_us, end_us) in windows of ``backfill_analytics_days`` (ADR 036),
    equal to the whole range's one run. The whole range's run reads bars from ``w0`` (its lookback
    before the range); the windows cover [w0, end): those before the range ("prehistory") emit no
    mart, they only carry state. Each window reads its days plus :func:`window_lookback_us` (the
    cascades' baseline and longest episode, contagion's day, the map's hour) and carries on:
    * the liquidation map's books (as ``backfill_analytics_days`` did since ADR 022);
    * each scope's OI per minute and the market index's growth factor (:class:`CarriedOI`): the
      cascades' reference OI is the highest of the ``oi_reference_minutes`` before each minute,
      which reach back past the window, and the index is a running product;
    * oi_deltas' inputs at their sampled minutes (every 5 minutes): the 30-day span's rows are made
      once at the end from these narrow series (``oi_delta_rows_from_samples``).
    The windows' marts stay in their Parquet outputs until all have run, then go into the open
    transaction in one insert per mart (:func:`_insert_staged`, ADR 042).
    Returns the perf_counter reading after the last step."""
    from dataclasses import replace

    import pyarrow.parquet as pq

    bar = config.bar_us
    lookback = window_lookback_us(config)
    warm = config.liqmap_warmup_minutes * bar if config.liqmap_enabled else 0
    w0 = min(start_us - analytics_lookback_us(config), start_us - warm)
    ref0 = dict(oi_reference(con, start_us - analytics_lookback_us(config), config))
    step = settings.backfill_analytics_days * DAY_US
    cuts = [*range(w0, start_us, step), *range(start_us, end_us, step)]
    carry: dict[str, dict] = {}
    samples: list[str] = []
    staged: list[tuple[int, Path]] = []  # (cut, output) of each window that emitted, in order
    state_path, state_last = None, None
    for i, c0 in enumerate(cuts):
        c1 = cuts[i + 1] if i + 1 < len(cuts) else None
        emits = c0 >= start_us
        cfg = config if emits else replace(config, liqmap_enabled=False)
        window_start = max(w0, c0 - lookback)
        liqmap = None
        if emits and config.liqmap_enabled:
            if state_last is None:  # no books to continue: they warm up before the range
                data_from = c0 - warm
            else:  # the carried prices and OI of the minutes before the books' next one (liqmap_cycle)
                data_from = state_last + bar - config.ffill_max_minutes * bar
            window_start = max(w0, min(window_start, data_from))
            liqmap = {"state_path": state_path, "data_from_us": data_from,
                      "settled_us": None if c1 is None else c1 - bar}
        source, params = ("bars_1m", None) if c1 is None else (_BARS_UNTIL_FIRST_AFTER, [c1 + lookback])
        out = tmp / f"analytics-{i}"
        bars_by_base = export_bars_by_base(con, tmp / f"bars-{i}", config, since_us=window_start, source=source,
                                           params=params)
        if bars_by_base:
            refs = [(scope, _carried(carry.get(scope), ref0.get(scope))) for scope in sorted(set(carry) | set(ref0))]
            window = {"samples": (c0, c1), "carry": None if c1 is None else (c0, c1 + lookback)}
            _run_window(bars_by_base, out, cfg, c0, refs, liqmap, window)
            samples += parquet_glob(out, "oi_samples")
            for f in parquet_glob(out, CARRY_TAG):
                _carry_into(carry, pq.read_table(f))
            if c1 is not None:  # what the next windows' history needs (the reference's minutes before them)
                keep = c1 - lookback - (config.oi_reference_minutes + 1) * bar
                carry = {k: _trim(v, keep) for k, v in carry.items()}
        tick = add_phase_time(result.timings, "analytics", tick)
        if not emits or not bars_by_base:
            continue
        staged.append((c0, out))  # its marts stay in its Parquet until the commit's one insert per mart
        states = parquet_glob(out, "liquidation_map_state")
        state_path, state_last = None, None
        if states:
            state_path = str(tmp / f"liquidation_map_state-{i}.parquet")
            con.execute(f"COPY (SELECT * FROM read_parquet(?)) TO '{state_path}' (FORMAT parquet)", [states])
            (state_last,) = con.execute("SELECT min(last_minute_us) FROM read_parquet(?)", [states]).fetchone()
        tick = add_phase_time(result.timings, "replace", tick)
    if samples:
        # here, not in a Beam run: Create would pickle every series (and the runner decode it) at once
        out = tmp / "analytics-oi"
        out.mkdir(parents=True, exist_ok=True)
        rows: list[dict] = []
        for series in _sample_series(samples):
            rows += oi_delta_rows_from_samples(series, config, start_us)
            if len(rows) >= max(1, config.sink_flush_rows):
                write_parquet_atomic(pa.Table.from_pylist(rows), str(out), f"oi_deltas-{uuid.uuid4().hex}.parquet")
                rows = []
        if rows:
            write_parquet_atomic(pa.Table.from_pylist(rows), str(out), f"oi_deltas-{uuid.uuid4().hex}.parquet")
        tick = add_phase_time(result.timings, "analytics", tick)
        _insert_range(con, "oi_deltas", parquet_glob(out, "oi_deltas"), start_us, end_us)
        tick = add_phase_time(result.timings, "replace", tick)
    _insert_staged(con, config, staged, start_us, end_us)
    return add_phase_time(result.timings, "replace", tick)


#: the windows' re-emission (ADR 036): a window's alerts after its cut, and its levels from its cut
#: on, replace everything the windows before it emitted there, as a stream cycle's delete would
_REEMITTED_AFTER_CUT = {"cascade_alerts": ">", "liquidation_levels": ">="}


def _insert_staged(con, config: AnalyticsConfig, staged: list[tuple[int, Path]], start_us: int, end_us: int) -> None:
    """The windows' analytic marts, staged in their Parquet outputs (``staged``: each emitting
    window's cut and output directory, in order) -> the open transaction, one ``INSERT OR REPLACE``
    per mart (ADR 042). The result is what the windows' upserts one after the other left in the
    marts (ADR 036): of each key (the mart's primary key) the version of the last window that wrote
    it, unless a later window deleted it (``_REEMITTED_AFTER_CUT``: that window's cut before the
    row's time); then the episodes' fuel, once, from the range's first minute. Until here the rows
    are files, not the transaction's: DuckDB holds them only from this statement to the commit."""
    if not staged:
        return
    for name in ANALYTIC_MARTS:
        parts, params = [], []
        for k, (_c0, out) in enumerate(staged):
            files = parquet_glob(out, name)
            if not files:
                continue
            next_cut = staged[k + 1][0] if k + 1 < len(staged) else None
            parts.append(f"SELECT *, {k} AS _window, ?::BIGINT AS _next_cut FROM read_parquet(?, union_by_name=true)")
            params += [next_cut, files]
        if not parts:
            continue
        col = TIME_COLUMNS[name]
        rows = " UNION ALL BY NAME ".join(parts)
        sel = f"SELECT * FROM ({rows}) WHERE {col} >= make_timestamp(?::BIGINT) AND {col} < make_timestamp(?::BIGINT)"
        params += [start_us, end_us]
        key = _primary_key(con, name)
        if key:  # the last window's version of each key
            sel += f" QUALIFY _window = max(_window) OVER (PARTITION BY {', '.join(key)})"
        op = _REEMITTED_AFTER_CUT.get(name)
        if op is not None:  # gone if a later window's cut lies before it (the next cut: the cuts ascend)
            sel = f"SELECT * FROM ({sel}) WHERE _next_cut IS NULL OR NOT ({col} {op} make_timestamp(_next_cut))"
        con.execute(f"INSERT OR REPLACE INTO {name} BY NAME SELECT * EXCLUDE (_window, _next_cut) FROM ({sel})",
                    params)
    attach_cascade_fuel(con, config, start_us)


def _primary_key(con, table: str) -> list[str]:
    row = con.execute("SELECT constraint_column_names FROM duckdb_constraints() WHERE table_name = ? "
                      "AND constraint_type = 'PRIMARY KEY'", [table]).fetchone()
    return list(row[0]) if row else []


_CARRY_COLUMNS = ("oi", "q", *CARRY_SUMS)


def _run_window(bars_by_base: dict[str, list[str]], out: Path, config: AnalyticsConfig, emit_from_us: int,
                refs: list, liqmap: dict | None, window: dict) -> None:
    """One window's analytics graph (its marts, samples and carry -> Parquet under ``out``),
    in-process: the per-base panels are vectorized, and worker processes cost more (start-up,
    pickling the panels) than they save (ADR 007)."""
    import pickle

    out.mkdir(parents=True, exist_ok=True)  # the carried history as a file: through Create, Beam bz2-pickles it 4x
    refs_path = out / "oi_reference.pickle"
    with open(refs_path, "wb") as f:
        pickle.dump(refs, f, protocol=pickle.HIGHEST_PROTOCOL)
    p = beam.Pipeline(runner=_runner(), options=_options(1))
    build_analytics_graph(p, bars_by_base, out, config, emit_from_us=emit_from_us, oi_reference=str(refs_path),
                          liqmap_state=liqmap, window=window)
    _run(p)


def _carried(c: dict | None, reference: float | None) -> CarriedOI:
    if c is None:
        return CarriedOI(np.array([], dtype=np.int64), np.array([]), None, None, reference)
    q = c["q"] if np.isfinite(c["q"]).any() else None
    return CarriedOI(c["minute_us"], c["oi"], q, c["first_us"], reference, {k: c[k] for k in CARRY_SUMS})


def _carry_into(carry: dict[str, dict], table: pa.Table) -> None:
    """A window's carried rows (:data:`CARRY_TAG`) into ``carry`` (scope -> its columns, minutes
    sorted and distinct: windows overlap, with equal values; ``first_us`` the earliest grid start)."""
    scopes = table.column("scope").to_numpy(zero_copy_only=False)
    cols = {k: table.column(k).to_numpy() for k in ("minute_us", "first_us", *_CARRY_COLUMNS)}
    for scope in np.unique(scopes):
        sel = scopes == scope
        new = {k: v[sel] for k, v in cols.items()}
        first = int(new.pop("first_us").min())
        old = carry.get(scope)
        if old is not None:
            first = min(first, old["first_us"])
            new = {k: np.concatenate([old[k], v]) for k, v in new.items()}
        _, idx = np.unique(new["minute_us"], return_index=True)
        carry[scope] = {**{k: v[idx] for k, v in new.items()}, "first_us": first}


def _trim(c: dict, keep_us: int) -> dict:
    sel = c["minute_us"] >= keep_us
    return {k: (v if k == "first_us" else v[sel]) for k, v in c.items()}


def _sample_series(files: list[str]) -> list[tuple]:
    """The windows' oi_deltas samples -> one element per venue / symbol series (its windows' samples
    in time order; ``first_us`` the earliest grid start, ``any_oi`` of any window) and one for the
    market (its bases' symbol series), as ``oi_delta_rows_from_samples`` takes them."""
    import pyarrow.parquet as pq

    lists = ("minute_us", "oi_usd", "oi_base", "price")
    by_key: dict[tuple, list[dict]] = {}
    for f in files:
        t = pq.read_table(f)
        keys = zip(*(t.column(k).to_pylist() for k in ("level", "base", "exchange", "symbol")), strict=True)
        first, any_oi = t.column("first_us").to_pylist(), t.column("any_oi").to_pylist()
        for i, key in enumerate(keys):  # the lists as NumPy arrays (as Python floats they took ~5x the memory)
            row = {k: t.column(k)[i].values.to_numpy(zero_copy_only=False) for k in lists}
            by_key.setdefault(key, []).append({**row, "first_us": first[i], "any_oi": any_oi[i]})
    series = []
    for (level, base, exchange, symbol), rows in sorted(by_key.items()):
        rows.sort(key=lambda r: r["minute_us"][0] if len(r["minute_us"]) else r["first_us"])
        cat = {k: np.concatenate([r[k] for r in rows]) for k in lists}
        series.append((level, exchange, symbol, base, min(r["first_us"] for r in rows), any(r["any_oi"] for r in rows),
                       cat["minute_us"], cat["oi_usd"], cat["oi_base"], cat["price"]))
    market = sorted((s for s in series if s[0] == "symbol"), key=lambda s: s[3])
    return series + ([("market", market)] if market else [])


def backfill_day(settings: JobSettings, source: str, captures: list[str], day: date, out: Path,
                 config: AnalyticsConfig, within_day_workers: int = 1) -> int:
    """One day's event pipeline: its events -> bars_1m, late_events and liquidations_1m Parquet
    files under ``out``; returns the number of events read. The archive is read on the in-process
    runner (its work is vectorized: worker processes only add start-up and data-plane copies);
    captures and Kafka ranges (Python parsing per message) spread over ``within_day_workers``."""
    if source == "archive":  # one vectorized pass over the day (ADR 022)
        p = beam.Pipeline(runner=_runner(), options=_options(1))
        archive_day_marts(p, settings.data_dir / "archive", [day], out, config)
        return _run(p).get(_CountEvents.NAME, 0)
    d0, d1 = _day_bounds(day, day)
    p = beam.Pipeline(runner=_runner(), options=_options(within_day_workers))
    batches = _source(p, settings, source, captures, day, day, d0, d1)
    write_event_marts(p, batches, out, config, watermark_us=None, prior_bar_files=[])
    batches | "CountEvents" >> beam.ParDo(_CountEvents())
    return _run(p).get(_CountEvents.NAME, 0)


class _CountEvents(beam.DoFn):
    NAME = "backfill_events"

    def __init__(self) -> None:
        self._events = beam.metrics.Metrics.counter("backfill", self.NAME)

    def process(self, batch: pa.RecordBatch) -> None:
        self._events.inc(batch.num_rows)


def _day_parallel(settings: JobSettings, source: str, days: int) -> bool:
    """Days side by side in worker processes, or one day at a time here?

    The archive's work is vectorized: a day runs best on the in-process runner, in a forked
    process (even a single day: this process meanwhile loads GX for the gate). Captures and
    Kafka ranges are parsed message by message in Python: with fewer days than workers, they
    spread one day's files or ranges over Beam's worker processes instead."""
    if settings.backfill_workers <= 1:
        return False
    return source == "archive" or days >= settings.backfill_workers


def _days_in_pool(settings: JobSettings, source: str, captures: list[str], days: list[date], out: Path,
                  config: AnalyticsConfig, workers: int, progress: bool, warm_up: bool) -> int:
    """Run :func:`backfill_day` for ``days``, ``workers`` at a time, in forked processes.

    Fork, not spawn: the children start with Beam, pyarrow and the project already imported
    (a spawned interpreter spends ~1.5 s importing them). The pool forks all its processes at the
    first submit, before any thread of ours exists (GX's warm-up starts after), and each child
    runs in-process pipelines only (no gRPC channel is ever opened before the fork)."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    events = 0
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork"), initializer=die_with_parent,
                             initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(backfill_day, settings, source, captures, day, out, config) for day in days]
        if warm_up:
            DataQuality.warm_up()  # GX loads in this process while the days run in the others
        bar = _progress(as_completed(futures), progress, total=len(days))
        for fut in bar:
            events += fut.result()
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(events=f"{events:,}")
    return events


def die_with_parent(parent_pid: int) -> None:
    """A pool worker's initializer: the worker ends when its parent does.

    A SIGKILLed backfill cannot shut its pool down, and its idle workers would wait forever
    (parent pid 1) holding memory and the DuckDB/archive temp files. On Linux the kernel sends
    the worker SIGKILL when the parent dies (PR_SET_PDEATHSIG); elsewhere a daemon thread polls
    the parent pid. The check after prctl covers a parent that died before the call."""
    import ctypes
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    else:
        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(0.5)
            os._exit(1)

        threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
    if os.getppid() != parent_pid:
        os._exit(1)


def set_mmap_threshold(nbytes: int) -> bool:
    """glibc's M_MMAP_THRESHOLD for this process (and the processes it forks after): allocations
    from ``nbytes`` on are mapped on their own and unmapped when freed. glibc's default threshold
    is dynamic: each freed mapping raises it (up to 32 MB), after which the analytics' per-base
    NumPy arrays and Beam's buffers come from the heap and stay resident once freed, so the peak
    grew with the range (docs/performance.md, "Backfill memory"). Setting it fixes the threshold
    for the rest of the process. 0, or not glibc: nothing changes; returns whether it was set."""
    if nbytes <= 0 or not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    m_mmap_threshold = -3
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(m_mmap_threshold, int(nbytes)))


def _store_dq(con, result: BackfillResult) -> None:
    """The rollback also removed the dq_results rows: keep the verdict of the refused load."""
    import json

    for r in result.dq:
        con.execute(
            "INSERT OR REPLACE INTO dq_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [result.run_id, r.suite, r.table, datetime.now(UTC), r.success, r.critical, r.evaluated, r.successful,
             r.evaluated - r.successful, ",".join(r.failed_expectations),
             json.dumps({"note": "backfill rolled back: critical DQ failure"})])


def _replace(con, table: str, files: list[str], start_us: int, end_us: int) -> int:
    _delete_range(con, table, start_us, end_us)
    return _insert_range(con, table, files, start_us, end_us)


def _delete_range(con, table: str, start_us: int, end_us: int) -> None:
    col = TIME_COLUMNS[table]
    con.execute(f"DELETE FROM {table} WHERE {col} >= make_timestamp(?::BIGINT) AND {col} < make_timestamp(?::BIGINT)",
                [start_us, end_us])


def _insert_range(con, table: str, files: list[str], start_us: int, end_us: int) -> int:
    """Upsert the rows of ``files`` whose time lies in [start_us, end_us); returns their number."""
    col = TIME_COLUMNS[table]
    if not files:
        return 0
    sel = (f"SELECT * FROM read_parquet(?, union_by_name=true) "
           f"WHERE {col} >= make_timestamp(?::BIGINT) AND {col} < make_timestamp(?::BIGINT)")
    (n,) = con.execute(f"SELECT count(*) FROM ({sel})", [files, start_us, end_us]).fetchone()
    con.execute(f"INSERT OR REPLACE INTO {table} BY NAME {sel}", [files, start_us, end_us])
    return int(n)


def _source(p: beam.Pipeline, settings: JobSettings, source: str, captures: list[str], start: date, end: date,
            start_us: int, end_us: int):
    if source == "archive":
        adir = settings.data_dir / "archive"
        items = [(et, d) for et in EVENT_TYPES
                 for d in archive.days_in(adir, et, start.isoformat(), end.isoformat())]
        if not items:
            log.warning("no archived events for %s..%s under %s", start, end, adir)
        return (p | "ArchiveDays" >> beam.Create(items, reshuffle=False) | "Spread" >> beam.Reshuffle()
                | "ReadArchive" >> beam.ParDo(ReadArchiveDays(str(adir))))
    if source in ("capture", "tardis-raw", "tardis"):  # files; a tardis raw file reads as a capture
        items = [(str(c), start_us, end_us) for c in captures]
        reader = NormalizeTardisCsvFile() if source == "tardis" else NormalizeCaptureFile()
        return (p | "Captures" >> beam.Create(items, reshuffle=False) | "Spread" >> beam.Reshuffle()
                | "Normalize" >> beam.ParDo(reader))
    if source == "kafka":
        from connectors.kafka.beam_source import ReadKafkaRangeBatches
        from connectors.kafka.timeindex import ranges_for_time
        from pipelines.jobs.load import LOAD_TOPICS

        ranges = ranges_for_time(settings.kafka, [t for t in LOAD_TOPICS if not t.endswith(".dlq")],
                                 start_us // 1000, end_us // 1000, settings.max_range)
        batches = (p | "ReadKafka" >> ReadKafkaRangeBatches(settings.kafka, ranges))["batches"]
        return batches | "InRange" >> beam.Map(_filter_time, start_us, end_us)
    raise ValueError(f"unknown backfill source {source!r}: archive, capture, kafka, tardis or tardis-raw")


def _filter_time(batch: pa.RecordBatch, start_us: int, end_us: int) -> pa.RecordBatch:
    import pyarrow.compute as pc

    t = batch.column("event_time")
    return batch.filter(pc.and_(pc.greater_equal(t, start_us), pc.less(t, end_us)))


def _runner():
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    return FnApiRunner()


def _options(workers: int):
    from apache_beam.options.pipeline_options import PipelineOptions

    if workers <= 1:
        return PipelineOptions(flags=[], direct_num_workers=1, direct_running_mode="in_memory")
    # work items (event types, files, offset ranges, bases) spread over worker processes
    return PipelineOptions(flags=[], direct_num_workers=workers, direct_running_mode="multi_processing")


def _progress(items, progress: bool, total: int | None = None):
    if not progress:
        return items
    from tqdm import tqdm

    return tqdm(items, unit="day", desc="backfill", total=total)


def _log_step(progress: bool, msg: str) -> None:
    if progress:
        print(f"==> {msg}", flush=True)


# ---- the Dask runner (docs/adr/017) -------------------------------------------------------------
class DaskBackfill:
    """A backfill's pipelines on a ``dask.distributed`` cluster through Beam's Dask runner.

    Workers read the sources and write the intermediate Parquet under ``<staging>/<run id>/``; this
    process (the client) fetches it when staging is a URL, and stays the one DuckDB writer."""

    def __init__(self, client, cluster, staging: str, owned_staging: tempfile.TemporaryDirectory | None) -> None:
        from pipelines.dask_runner import BackfillDaskRunner

        self.client, self._cluster, self.staging, self._owned = client, cluster, staging, owned_staging
        self.runner = BackfillDaskRunner(client)

    @classmethod
    def open(cls, settings: JobSettings, run_id: str) -> DaskBackfill:
        from pipelines.dask_runner import connect

        cluster = None
        address = settings.dask_scheduler
        if not address:  # a cluster of this host's processes, for trying the runner without one
            from distributed import LocalCluster

            cluster = LocalCluster(n_workers=max(1, settings.backfill_workers), threads_per_worker=1,
                                   processes=True, dashboard_address=None)
            address = cluster.scheduler_address
        try:
            client = connect(address, settings.dask_connect_timeout_s)
        except Exception:
            if cluster is not None:
                cluster.close()
            raise
        owned = None
        root = settings.staging
        if not root:
            owned = tempfile.TemporaryDirectory(prefix="liqstream-staging-")
            root = owned.name
        return cls(client, cluster, f"{str(root).rstrip('/')}/{run_id}", owned)

    def run_days(self, settings: JobSettings, source: str, captures: list[str], days: list[date],
                 config: AnalyticsConfig, out: Path, warm_up: bool, progress: bool = False) -> int:
        """Every day's event pipeline, ``dask_days_in_flight`` submitted at a time (Dask spreads their
        tasks over the workers; the bound keeps a year's graphs and intermediate batches from all
        landing on the scheduler at once); their marts' Parquet ends under ``out`` (local)."""
        if source == "kafka":
            raise ValueError("--runner dask reads archive, capture and tardis sources (kafka: --runner local)")
        staged = f"{self.staging}/events"
        queue, running = iter(days), collections.deque()

        def submit() -> None:
            day = next(queue, None)
            if day is None:
                return
            p = beam.Pipeline(runner=self.runner)
            if source == "archive":  # the same per-day pass as the local runner (ADR 022)
                counts = archive_day_marts(p, settings.data_dir / "archive", [day], staged, config)
            else:
                d0, d1 = _day_bounds(day, day)
                batches = _source(p, settings, source, captures, day, day, d0, d1)
                write_event_marts(p, batches, staged, config, watermark_us=None, prior_bar_files=[])
                counts = batches | "EventCounts" >> beam.Map(_event_count_row)
            # no Beam metrics on Dask: each batch's (day's) count is a row, keyed so a retried
            # task's copy of it is counted once
            counts | "WriteEventCounts" >> WriteRowsToParquet(staged, "event_counts")
            running.append(p.run())

        for _ in range(max(1, settings.dask_days_in_flight)):
            submit()
        if warm_up:
            DataQuality.warm_up()  # GX loads here while the cluster works
        bar = _progress(range(len(days)), progress)
        for _ in bar:
            running.popleft().wait_until_finish()  # in order: a failed day raises here
            submit()
        local = self._fetch(staged, out)
        counts = parquet_glob(local, "event_counts")
        if not counts:
            return 0
        import pyarrow.parquet as pq

        rows = {(r["batch"], r["events"]) for f in counts for r in pq.read_table(f).to_pylist()}
        return sum(events for _, events in rows)

    def run_analytics(self, bars_by_base: dict[str, list[str]], config: AnalyticsConfig, emit_from_us: int,
                      ref: list[tuple[str, float]], out: Path) -> None:
        """The analytics graph over the exported bars (staged for the workers) -> ``out`` (local)."""
        staged_bars = {base: self._stage(files, f"bars/{i}") for i, (base, files) in enumerate(bars_by_base.items())}
        staged = f"{self.staging}/analytics"
        p = beam.Pipeline(runner=self.runner)
        build_analytics_graph(p, staged_bars, staged, config, emit_from_us=emit_from_us, oi_reference=ref)
        p.run().wait_until_finish()
        self._fetch(staged, out)

    def _stage(self, files: list[str], sub: str) -> list[str]:
        import fsspec

        fs, root = fsspec.core.url_to_fs(f"{self.staging}/{sub}")
        fs.makedirs(root, exist_ok=True)
        staged = []
        for i, f in enumerate(files):
            fs.put_file(f, f"{root}/{i}.parquet")
            staged.append(f"{self.staging}/{sub}/{i}.parquet")
        return staged

    def _fetch(self, staged: str, local: Path) -> Path:
        """The staged Parquet of one step as local files the DuckDB writer reads."""
        import fsspec

        fs, root = fsspec.core.url_to_fs(staged)
        local.mkdir(parents=True, exist_ok=True)
        if not fs.exists(root):
            return local
        for path in fs.ls(root, detail=False):
            name = path.rsplit("/", 1)[-1]
            if name.endswith(".parquet") and not name.startswith("."):
                fs.get_file(path, str(local / name))
        return local

    def close(self) -> None:
        import fsspec

        try:
            fs, root = fsspec.core.url_to_fs(self.staging)
            if fs.exists(root):
                fs.rm(root, recursive=True)
        finally:
            self.client.close()
            if self._cluster is not None:
                self._cluster.close()
            if self._owned is not None:
                self._owned.cleanup()


def _event_count_row(batch: pa.RecordBatch) -> dict:
    import pyarrow.compute as pc

    t = batch.column("event_time")
    ident = (f"{(batch.schema.metadata or {}).get(b'event_type', b'').decode()}:{batch.num_rows}:"
             f"{pc.min(t).as_py()}:{pc.max(t).as_py()}:{pc.sum(t).as_py()}")
    return {"batch": ident, "events": batch.num_rows}
