"""The normalized-event archive: Parquet partitioned by event type and UTC day.

``<data_dir>/archive/<event_type>/date=YYYY-MM-DD/part-<run>-<uuid>.parquet``,
written by every streaming cycle (and readable by any engine: DuckDB, Spark,
pandas). Rows carry their Kafka position (``_topic, _partition, _offset``):
a cycle that crashed after its files were published but before its commit is
re-read by the next cycle and published again, so readers deduplicate on the
position (``read_day``); nothing is ever missing, because files are published
*before* the DuckDB commit that advances the offsets.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.settings import ARCHIVE_PARQUET
from schemas.arrow import EVENT_TYPE_META, arrow_schema

DAY_US = 86_400_000_000


def parquet_options(schema: pa.Schema, mode: str = "lean") -> dict:
    """``pq.write_table`` keyword arguments of an archive file of ``schema`` with the writer
    settings ``mode`` (``JobSettings.archive_parquet``, ADR 046). "lean": zstd, dictionary pages
    for the string columns only (instruments and sides repeat on every row; the doubles are all
    distinct, so a dictionary was built and dropped on every page) and min/max statistics for the
    other columns only (times and positions; a string's min/max over a day of every instrument
    prunes nothing). "full": zstd with Arrow's defaults (both for every column), as before ADR 046.
    Same rows, schema and values either way."""
    if mode == "full":
        return {"compression": "zstd"}
    if mode != "lean":
        raise ValueError(f"LIQSTREAM_ARCHIVE_PARQUET={mode!r}: use one of {', '.join(ARCHIVE_PARQUET)}")
    strings = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    return {"compression": "zstd", "use_dictionary": strings,
            "write_statistics": [f.name for f in schema if f.name not in strings]}


def _event_type(batch: pa.RecordBatch | pa.Table) -> str:
    return (batch.schema.metadata or {})[EVENT_TYPE_META].decode()


def day_of(us: int) -> str:
    return datetime.fromtimestamp(us // DAY_US * 86_400, UTC).strftime("%Y-%m-%d")


class WriteArchive(beam.DoFn):
    """RecordBatch -> one Parquet file per UTC day it covers, under ``out_dir`` (staging)."""

    def __init__(self, out_dir: str, parquet: str = "lean") -> None:
        self._out_dir = out_dir
        self._parquet = parquet

    def process(self, batch: pa.RecordBatch) -> Iterator[str]:
        yield from write_archive_table(pa.Table.from_batches([batch]), Path(self._out_dir), self._parquet)


def write_archive_table(table: pa.Table, out_dir: Path, parquet: str = "lean") -> list[str]:
    """One event type's events -> one Parquet file per UTC day they cover, under ``out_dir``
    (written with :func:`parquet_options` of ``parquet``)."""
    options = parquet_options(table.schema, parquet)
    et = _event_type(table)
    days = pc.divide(table["event_time"], pa.scalar(DAY_US, pa.int64()))
    paths = []
    unique_days = pc.unique(days).to_pylist()
    for d in unique_days:
        # one day (every live cycle but the one crossing midnight): the table as it is, not a copy
        part = table if len(unique_days) == 1 else table.filter(pc.equal(days, d))
        folder = out_dir / et / f"date={day_of(d * DAY_US)}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"part-{uuid.uuid4().hex}.parquet"
        pq.write_table(part, path, **options)
        paths.append(str(path))
    return paths


def publish(staging: Path, archive: Path) -> int:
    """Move staged files into the archive (same file system: each move is an atomic rename)."""
    n = 0
    for f in sorted(staging.rglob("*.parquet")):
        dest = archive / f.relative_to(staging)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(f), dest)
        n += 1
    return n


def days_in(archive: Path, event_type: str, start_day: str, end_day: str) -> list[str]:
    """Days [start_day, end_day] (inclusive, YYYY-MM-DD) that have files for the event type."""
    root = archive / event_type
    if not root.exists():
        return []
    days = sorted(p.name.split("=", 1)[1] for p in root.glob("date=*") if any(p.glob("*.parquet")))
    return [d for d in days if start_day <= d <= end_day]


def read_day(archive: Path, event_type: str, day: str) -> pa.Table:
    """One day of one event type, deduplicated on the Kafka position, in position order."""
    batches = list(iter_day(archive, event_type, day))
    return pa.Table.from_batches(batches) if batches else pa.table({})


def iter_day(archive: Path, event_type: str, day: str, rows: int = 50_000) -> Iterator[pa.RecordBatch]:
    """:func:`read_day` as batches of at most ``rows`` rows, each owning its buffers (a slice would
    pickle its parent's whole buffers: see ``pipelines.sinks.compact_batches``).

    In the common case (:func:`_disjoint_order`) the files are streamed one row batch at a time,
    in position order, without reading a whole day first or copying it again."""
    files = sorted(str(p) for p in (archive / event_type / f"date={day}").glob("*.parquet"))
    if not files:
        return
    order = _disjoint_order(files)
    if order is not None:
        for f in order:
            yield from pq.ParquetFile(f).iter_batches(batch_size=rows)
        return
    from pipelines.sinks import compact_batches

    yield from compact_batches(_deduplicated(files), rows)


def read_day_columns(archive: Path, event_type: str, day: str, columns: list[str],
                     dictionary: tuple[str, ...] = ()) -> pa.Table | None:
    """:func:`read_day`'s rows (deduplicated, in position order) as one table of ``columns``
    (those a file lacks read as nulls), or None when the day has no file: the backfill's
    per-day pass (ADR 022). Only the wanted columns are decoded, single-threaded (the day
    workers already fill the cores; Arrow's reader threads fought them), string columns named
    in ``dictionary`` kept dictionary-encoded (the instrument strings repeat on every row)."""
    files = sorted(str(p) for p in (archive / event_type / f"date={day}").glob("*.parquet"))
    if not files:
        return None
    order = _disjoint_order(files)
    if order is None:
        tables = [_deduplicated(files)]
    else:
        tables = []
        for f in order:
            have = pq.read_schema(f).names
            tables.append(pq.read_table(f, columns=[c for c in columns if c in have], use_threads=False,
                                        read_dictionary=[c for c in dictionary if c in have]))
    tables = [t.select([c for c in columns if c in t.schema.names]) for t in tables]
    # one dictionary per column: Arrow's group_by refuses chunks with differing dictionaries
    table = pa.concat_tables(tables, promote_options="permissive").unify_dictionaries()
    for c in columns:  # a column no file has: nulls of its schema type, for the aggregates
        if c not in table.schema.names:
            typ = arrow_schema(event_type).field(c).type
            table = table.append_column(c, pa.nulls(table.num_rows, typ))
    return table.select(columns)


def _deduplicated(files: list[str]) -> pa.Table:
    import duckdb

    con = duckdb.connect()
    try:
        rel = con.read_parquet(files, union_by_name=True)
        table = rel.query("events", "SELECT * FROM events QUALIFY row_number() OVER "
                          "(PARTITION BY _topic, _partition, _offset ORDER BY _offset) = 1 "
                          "ORDER BY _topic, _partition, _offset").to_arrow_table()
    finally:
        con.close()
    schema = pq.read_schema(files[0])
    return table.cast(schema) if table.schema.names == schema.names else table.replace_schema_metadata(schema.metadata)


def _disjoint_order(files: list[str]) -> list[str] | None:
    """The non-empty files in position order, if no position can occur twice; else None.

    The common case: every archive file holds one batch of one Kafka range (one topic and
    partition, strictly increasing offsets), and duplicates exist only where a crashed cycle's
    range was published again. When the files' offset spans do not overlap, concatenating
    them in (topic, partition, first offset) order equals the deduplicating, sorting query
    above, without sorting a whole day (profiled: that query was ~20% of a backfill's event
    phase). Only the position columns are read to decide. Anything else (overlap, mixed
    partitions in a file, differing schemas) -> None.
    """
    import numpy as np

    key = ["_topic", "_partition", "_offset"]
    schema = None
    spans = []
    for f in files:
        s = pq.read_schema(f)
        if not set(key) <= set(s.names):
            return None
        if schema is None:
            schema = s
        elif not s.equals(schema):
            return None
        t = pq.read_table(f, columns=key)
        if not t.num_rows:
            continue
        topics, parts = pc.unique(t["_topic"]), pc.unique(t["_partition"])
        if len(topics) != 1 or len(parts) != 1 or topics.null_count or parts.null_count:
            return None
        off = t["_offset"].to_numpy()
        if len(off) > 1 and not bool(np.all(np.diff(off) > 0)):
            return None
        spans.append((topics[0].as_py(), parts[0].as_py(), int(off[0]), int(off[-1]), f))
    if not spans:
        return None
    spans.sort(key=lambda s: s[:3])
    for a, b in zip(spans, spans[1:], strict=False):
        if a[:2] == b[:2] and b[2] <= a[3]:
            return None
    return [s[4] for s in spans]
