"""The events phase of a fetched cycle in one vectorized pass (ADR 028).

A streaming catch-up cycle whose ranges the reader processes fetched into Arrow IPC files
(``connectors.kafka.fetch``) needs no Beam graph for its events phase: every event of the cycle
is already on this process's disk, grouped by event type. :func:`run_events_pass` reads them
once and computes what ``load.build_event_graph`` computes, with the same functions where the
graph has a vectorized one and the same rounding everywhere:

* duplicates (ADR 016): the same identity (``dedupe.event_key_sql``) and the same rule (the copy
  at the lowest Kafka position is kept, a key committed in ``event_keys`` drops every copy), the
  copies found in NumPy and the committed keys asked once per cycle instead of a shuffle of shards
  (ADR 062);
* the archive: the kept events, one Parquet file per topic partition and UTC day (each file one
  partition's increasing offsets, as ``archive._disjoint_order`` expects);
* late events: ``bars.split_late_batch``;
* bars: ``bars.day_bars`` over the on-time events (the backfill's pass, ADR 022); a minute the
  mart already holds (``prior_bars``) is merged with ``merge_partials`` like the graph's
  ``instrument_bars``, and every stored bar read back is written again, as the graph does;
* liquidation minutes: ``liquidations.liquidation_minutes`` over the kept liquidations (late ones
  included, as the graph's ``LiquidationBatchesPerMinute`` sees them);
* rejects: the readers' dead-letter rows.

The output files are those the graph writes (``<out>/<mart>-<uuid>.parquet``, the archive under
``<out>/archive``, the new keys as ``event_keys-*.parquet``), so the commit that follows does not
know which of the two ran. ``LIQSTREAM_EVENTS_PASS=graph`` selects the graph; a cycle holding an
event type the pass does not know (:data:`KNOWN_EVENT_TYPES`) falls back to it on its own.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.transforms.bars import BAR_EVENT_COLUMNS, EVENT_TYPE_META

log = logging.getLogger(__name__)

#: env var choosing the events phase of a fetched cycle: "vectorized" (default) or "graph"
EVENTS_PASS_ENV = "LIQSTREAM_EVENTS_PASS"
EVENTS_PASSES = ("vectorized", "graph")
#: the event types the pass computes marts for; any other in a cycle sends the cycle to the graph
KNOWN_EVENT_TYPES = frozenset(BAR_EVENT_COLUMNS)


def events_pass_choice(env: dict[str, str] | None = None) -> str:
    """The configured events pass (``LIQSTREAM_EVENTS_PASS``; empty or unset: vectorized)."""
    value = (os.environ if env is None else env).get(EVENTS_PASS_ENV) or "vectorized"
    if value not in EVENTS_PASSES:
        raise ValueError(f"{EVENTS_PASS_ENV}={value!r}: use one of {', '.join(EVENTS_PASSES)}")
    return value


#: the column the pass carries each event's identity in (``dedupe.event_key_sql``), dropped before any output
KEY = "_event_key"


def read_keyed(path: str, keyed: bool, con: Any) -> tuple[str, pa.Table]:
    """One fetched IPC file -> (its event type, its table), with each row's identity in column
    :data:`KEY` when ``keyed`` and the type is known: computed per file, on the file's columns,
    as the graph's dedupe computes it per batch. ``con``: the DuckDB connection to compute them on
    (:func:`read_fetched` shares one among a cycle's files; unused when not ``keyed``)."""
    from pipelines.dedupe import event_key_sql

    with pa.OSFile(path) as source:  # read, not mapped: the cycle's folder goes when it ends
        table = pa.ipc.open_file(source).read_all()
    event_type = (table.schema.metadata or {}).get(EVENT_TYPE_META, b"").decode()
    if keyed and event_type in KNOWN_EVENT_TYPES and table.num_rows:
        con.register("_fetched", table)
        keys = con.sql(f"SELECT {event_key_sql(event_type, table.column_names)} FROM _fetched").to_arrow_table()
        con.unregister("_fetched")
        table = table.append_column(KEY, keys.column(0))
    return event_type, table


def read_fetched(files: list[str], keyed: bool = False) -> dict[str, pa.Table] | None:
    """The fetched IPC files -> one table per event type (files in fetch order, i.e. each
    partition's offsets increasing; with ``keyed``, the :data:`KEY` column), or None if a file
    holds an event type the pass does not know (the caller falls back to the graph). One DuckDB
    connection computes the keys of every file (a connection per file cost ~5 % of the pass)."""
    import duckdb

    parts: dict[str, list[pa.Table]] = {}
    con = duckdb.connect() if keyed else None
    try:
        for path in files:
            event_type, table = read_keyed(path, keyed, con)
            if event_type not in KNOWN_EVENT_TYPES:
                log.info("events pass: %s holds event type %r: this cycle runs the Beam graph", path, event_type)
                return None
            if table.num_rows:
                parts.setdefault(event_type, []).append(table)
    finally:
        if con is not None:
            con.close()
    return {et: pa.concat_tables(ts, promote_options="permissive") for et, ts in parts.items()}


#: keys of the cycle -> those of them committed earlier (``dedupe.committed_among`` on the job's database)
SeenLookup = Callable[[pa.Array], pa.Array]


def drop_duplicates(tables: dict[str, pa.Table], seen: SeenLookup | None,
                    out_dir: Path) -> tuple[dict[str, pa.Table], int]:
    """The first copy of each event (``dedupe``'s rule, on the identities in column :data:`KEY`),
    input order kept, without that column; a key ``seen`` reports committed drops every copy. The
    kept events' keys are written to ``out_dir/event_keys-*.parquet``. Returns (tables, copies
    dropped). The copies are found in NumPy (:func:`_first_copies`): only the rows whose key
    occurs twice are ordered by their Kafka position; ``seen`` is asked once for the cycle's
    keys of every event type (ADR 046, ADR 062)."""
    from pipelines.dedupe import KEYS_NAME

    firsts = {}  # each event type's first copies: each key once from here
    for event_type, table in tables.items():
        first = _first_copies(table)
        firsts[event_type] = table if first is None else table.filter(first)
    # the rule keeps the rows whose key is not committed: one lookup for the cycle (it scans the
    # committed keys; their text starts with the event type, so one type's keys never match another's)
    committed = seen(pa.chunked_array([t[KEY] for t in firsts.values()], pa.uint64())) \
        if seen is not None and firsts else None
    kept_tables: dict[str, pa.Table] = {}
    keys: list[pa.Table] = []
    for event_type, table in firsts.items():
        kept = table
        if committed is not None and len(committed):
            kept = table.filter(pc.invert(pc.is_in(table[KEY], value_set=committed)))
        if kept.num_rows:
            keys.append(pa.table({"key": kept[KEY], "event_time_us": kept["event_time"]}))
            kept_tables[event_type] = kept.drop_columns([KEY])
    if keys:
        out_dir.mkdir(parents=True, exist_ok=True)
        # UBIGINT key, BIGINT time (dedupe.commit_keys inserts them); no dictionary: every key
        # differs, and trying one was 3/4 of this write
        pq.write_table(pa.concat_tables(keys), out_dir / f"{KEYS_NAME}-{uuid.uuid4().hex}.parquet",
                       use_dictionary=False)
    dropped = sum(t.num_rows for t in tables.values()) - sum(t.num_rows for t in kept_tables.values())
    return kept_tables, dropped


#: the Kafka position a copy is ordered by (``dedupe._order_by``): the lowest is the first copy
_POSITION = ("_topic", "_partition", "_offset")


def _first_copies(table: pa.Table) -> pa.Array | None:
    """A mask of the rows that are their key's first copy (the lowest ``_topic, _partition,
    _offset``, nulls last, as ``dedupe._order_by`` orders them; the input order without them),
    or None when no two rows share a key (every cycle but a replay's: nothing to order).

    The keys are sorted once (NumPy's sort of 300k keys took 4 ms; Arrow's ``count_distinct`` 35 ms
    and 0.1-0.4 s of CPU on its first call in a process); only the rows of a key that occurs twice
    are ranked by position. A DuckDB window query over every row did this before (~1 µs an event)."""
    keys = table[KEY].to_numpy()
    ordered = np.sort(keys)
    again = ordered[1:] == ordered[:-1]
    if not again.any():
        return None
    copies = np.flatnonzero(np.isin(keys, ordered[1:][again]))
    sub = table.select([c for c in _POSITION if c in table.column_names]).take(copies)
    # np.lexsort: the last key is the primary one; ties (no position) in input order
    ranks = [pc.rank(sub[c], "ascending", tiebreaker="dense").to_numpy() for c in reversed(sub.column_names)]
    by_key = copies[np.lexsort((copies, *ranks, keys[copies]))]
    k = keys[by_key]
    first = np.ones(len(keys), dtype=bool)
    first[by_key[1:][k[1:] == k[:-1]]] = False
    return pa.array(first)


def write_archive(tables: dict[str, pa.Table], staging: Path, parquet: str = "lean") -> None:
    """The kept events -> ``staging/<event type>/date=<day>/part-<uuid>.parquet``, one file per
    topic partition and day (``archive.WriteArchive`` writes one per batch and day), with the
    writer settings ``parquet`` (``JobSettings.archive_parquet``)."""
    from pipelines.archive import write_archive_table

    for table in tables.values():
        for one in _by_partition(table):
            write_archive_table(one, staging, parquet)


def _by_partition(table: pa.Table) -> list[pa.Table]:
    """``table``'s rows per topic partition, each in the table's order (a partition's offsets
    increasing). Without copying when each of its chunks holds one partition (a fetched file's
    rows, unless the dedupe dropped some of them): the chunks are regrouped; else one stable sort
    and one ``take``, then a slice per partition (a filter per partition scanned it per partition)."""
    part = table["_partition"] if "_partition" in table.column_names else None
    if part is None or not table.num_rows:
        return [table]
    low_high = pc.min_max(part)
    if low_high["min"] == low_high["max"]:  # one partition (nulls aside, as before)
        return [table]
    groups: dict[int, list[pa.RecordBatch]] = {}
    for batch in table.to_batches():
        if not batch.num_rows:
            continue
        p = batch.column(table.schema.get_field_index("_partition"))
        one = pc.min_max(p)
        if p.null_count or one["min"] != one["max"]:
            groups = {}
            break
        groups.setdefault(one["min"].as_py(), []).append(batch)
    if groups:
        return [pa.Table.from_batches(groups[p], table.schema) for p in sorted(groups)]
    order = pc.sort_indices(part)
    grouped, parts = table.take(order), pc.fill_null(part.take(order), -1).to_numpy(zero_copy_only=False)
    bounds = [0, *(np.flatnonzero(parts[1:] != parts[:-1]) + 1).tolist(), len(parts)]
    return [grouped.slice(start, end - start) for start, end in zip(bounds, bounds[1:], strict=False)]


def merge_prior_bars(bars: pa.Table | None, prior_files: list[str]) -> pa.Table | None:
    """The cycle's bars merged with the stored bars of the minutes still open (the graph's
    ``instrument_bars`` with ``prior_rows``): a minute in both is merged as partials, a stored
    bar alone is written again as the graph writes it (``partial_to_row`` of its partial)."""
    if not prior_files:
        return bars
    from pipelines.sinks import plain_columns
    from pipelines.transforms.bars import bar_row_to_partial, merge_partials, partial_to_row

    prior = plain_columns(pa.concat_tables([pq.read_table(f) for f in prior_files], promote_options="permissive"))
    merged: dict[tuple, dict[str, Any]] = {}
    for row in prior.to_pylist():
        key, partial = bar_row_to_partial(row)
        merged[key] = merge_partials(merged.get(key), partial)
    if bars is not None and bars.num_rows and merged:
        # the cycle's bars of a stored minute: merged as the graph merges them, the rest kept as they are
        keys = pa.table({"exchange": bars["exchange"], "symbol": bars["symbol"],
                         "minute": pc.cast(bars["minute_ts"], pa.int64()),
                         "_pos": pa.array(range(bars.num_rows), pa.int64())})
        prior_keys = pa.table({"exchange": pa.array([k[0] for k in merged], pa.string()),
                               "symbol": pa.array([k[1] for k in merged], pa.string()),
                               "minute": pa.array([k[2] for k in merged], pa.int64())})
        hit = keys.join(prior_keys, ["exchange", "symbol", "minute"], join_type="inner", use_threads=False)
        both = pc.sort_indices(hit["_pos"])
        both = hit["_pos"].take(both).combine_chunks()
        if len(both):
            for row in bars.take(both).to_pylist():
                key, partial = bar_row_to_partial(row)
                merged[key] = merge_partials(merged[key], partial)
            bars = bars.filter(pc.invert(pc.is_in(keys["_pos"], value_set=both)))
    rows = [partial_to_row(merged[key]) for key in sorted(merged)]
    again = pa.Table.from_pylist(rows)
    if bars is None or not bars.num_rows:
        return again
    return pa.concat_tables([bars, again.cast(bars.schema)])


def run_events_pass(fetched: Any, out_dir: Path, allowed_lateness_us: int, watermark_us: int | None,
                    prior_files: list[str], dedupe: bool, seen: SeenLookup | None,
                    bar_us: int, archive_parquet: str = "lean",
                    archive_thread: bool = False) -> dict[str, int] | None:
    """Phase A of a fetched cycle without the graph; writes the files ``build_event_graph``
    writes and returns its counters, or None (nothing written) when the cycle holds an event
    type the pass does not know. ``seen``: the committed keys among the cycle's (None: none);
    ``archive_parquet``: the archive's writer settings (``JobSettings.archive_parquet``);
    ``archive_thread``: the archive is written by a thread while the marts are computed
    (``JobSettings.events_pass_archive_thread``); the pass returns only once it is written (or
    raises its error), so what the commit that follows finds is the same."""
    tables = read_fetched(fetched.files, dedupe)
    if tables is None:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    dropped = 0
    if dedupe:
        tables, dropped = drop_duplicates(tables, seen, out_dir)
    if not archive_thread:
        write_archive(tables, out_dir / "archive", archive_parquet)
        return _write_marts(tables, fetched, out_dir, allowed_lateness_us, watermark_us, prior_files, bar_us, dropped)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="archive") as pool:
        archived = pool.submit(write_archive, tables, out_dir / "archive", archive_parquet)
        counts = _write_marts(tables, fetched, out_dir, allowed_lateness_us, watermark_us, prior_files, bar_us, dropped)
    # leaving the block waited for the archive, on an error of the marts too; its own error is the pass's
    archived.result()
    return counts


def _write_marts(tables: dict[str, pa.Table], fetched: Any, out_dir: Path, allowed_lateness_us: int,
                 watermark_us: int | None, prior_files: list[str], bar_us: int, dropped: int) -> dict[str, int]:
    """:func:`run_events_pass`'s marts of the kept events (all but the archive); its counters."""
    from pipelines.dedupe import DUPLICATES
    from pipelines.liquidations import LIQUIDATIONS_1M_SCHEMA, liquidation_minutes
    from pipelines.sinks import write_parquet_atomic
    from pipelines.transforms.bars import day_bars, split_late_batch

    def write(name: str, table: pa.Table | None) -> None:
        if table is not None and table.num_rows:
            write_parquet_atomic(table, str(out_dir), f"{name}-{uuid.uuid4().hex}.parquet")

    on_time: dict[str, pa.Table] = {}
    late_rows: list[dict[str, Any]] = []
    for event_type, table in tables.items():
        kept, late = split_late_batch(table, watermark_us, allowed_lateness_us)
        on_time[event_type] = kept
        late_rows += late
    write("late_events", pa.Table.from_pylist(late_rows) if late_rows else None)
    bars = day_bars(on_time, bar_us)
    write("bars_1m", merge_prior_bars(bars, prior_files))
    liq = liquidation_minutes(tables.get("liquidation"))
    write("liquidations_1m", liq.cast(LIQUIDATIONS_1M_SCHEMA) if liq is not None else None)
    if fetched.rejects:
        from pipelines.jobs.load import REJECTS_SCHEMA

        write("rejects", pa.Table.from_pylist(fetched.rejects, schema=REJECTS_SCHEMA))
    return {DUPLICATES: dropped}
