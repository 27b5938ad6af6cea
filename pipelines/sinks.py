"""Write PCollections of row dicts to Parquet files that the driver loads into DuckDB.

DuckDB has one writer (the driver): pipeline workers never open the database.
Each bundle writes its rows to its own file; the driver then loads all files
of a run in one transaction together with the consumed offsets.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.transforms.params import RunParam, resolve


class _WriteBundleParquet(beam.DoFn):
    def __init__(self, out_dir: str, name: str, schema: pa.Schema | None, flush_rows: int = 0) -> None:
        self._out_dir = out_dir
        self._name = name
        self._schema = schema
        self._flush_rows = flush_rows

    def start_bundle(self) -> None:
        self._rows: list[dict] = []
        self._dir = resolve(self._out_dir)  # a RunParam: this run's folder (ADR 045)

    def process(self, row: dict) -> None:
        self._rows.append(row)
        if self._flush_rows and len(self._rows) >= self._flush_rows:
            self.finish_bundle()

    def finish_bundle(self) -> None:
        if not self._rows:
            return
        table = pa.Table.from_pylist(self._rows, schema=self._schema)
        self._rows = []
        write_parquet_atomic(table, self._dir, f"{self._name}-{uuid.uuid4().hex}.parquet")


class _WriteTableParquet(beam.DoFn):
    def __init__(self, out_dir: str, name: str) -> None:
        self._out_dir = out_dir
        self._name = name

    def start_bundle(self) -> None:
        self._dir = resolve(self._out_dir)

    def process(self, table: pa.Table) -> None:
        if table.num_rows:
            write_parquet_atomic(table, self._dir, f"{self._name}-{uuid.uuid4().hex}.parquet")


class WriteTablesToParquet(beam.PTransform):
    """Arrow tables (a mart's rows, built column-wise) -> one Parquet file ``<name>-<uuid>.parquet`` each,
    beside :class:`WriteRowsToParquet`'s files (the driver loads both the same way)."""

    def __init__(self, out_dir: str | Path | RunParam, name: str) -> None:
        super().__init__()
        self._out_dir = _location(out_dir)
        self._name = name

    def expand(self, tables):
        _make_dirs_now(self._out_dir)
        return tables | beam.ParDo(_WriteTableParquet(self._out_dir, self._name))


def write_parquet_atomic(table: pa.Table, directory: str, name: str) -> None:
    """Write ``directory/name`` (a path or fsspec URL) whole or not at all: written under a dot name,
    then renamed, so a worker killed mid-write leaves no half file for the loader's glob (the
    retried task writes its own). On object stores the rename is a copy; a leftover ``.tmp`` is
    never read."""
    if "://" not in str(directory):  # a local or mounted folder: pyarrow's native file writer
        tmp = Path(directory) / f".{name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, Path(directory) / name)
        return
    import fsspec

    fs, root = fsspec.core.url_to_fs(str(directory))
    tmp = f"{root}/.{name}.tmp"
    with fs.open(tmp, "wb") as f:
        pq.write_table(table, f)
    fs.mv(tmp, f"{root}/{name}")


def _location(out_dir: str | Path | RunParam) -> str | RunParam:
    return out_dir if isinstance(out_dir, RunParam) else str(out_dir)


def _make_dirs_now(out_dir: str | RunParam) -> None:
    """A folder known when the graph is built is made then; a RunParam's exists before its run."""
    if not isinstance(out_dir, RunParam):
        make_dirs(out_dir)


def make_dirs(location: str | Path) -> None:
    import fsspec

    fs, root = fsspec.core.url_to_fs(str(location))
    fs.makedirs(root, exist_ok=True)


class WriteRowsToParquet(beam.PTransform):
    """Rows -> Parquet files ``<name>-<uuid>.parquet``; ``schema=None`` infers it per file
    (the driver loads them ``BY NAME`` with ``union_by_name``, so DuckDB's DDL decides types).

    ``flush_rows``: a file every this many rows of a bundle (0 = one file per bundle), so a bundle
    of a long range (a backfill's analytics: the whole range's rows in one bundle) is not held as
    Python dicts until it ends. Only for marts whose rows are unique on their key within a run
    (the driver's upsert of several files is then the one file's)."""

    def __init__(self, out_dir: str | Path | RunParam, name: str, schema: pa.Schema | None = None,
                 flush_rows: int = 0) -> None:
        super().__init__()
        self._out_dir = _location(out_dir)
        self._name = name
        self._schema = schema
        self._flush_rows = flush_rows

    def expand(self, rows):
        _make_dirs_now(self._out_dir)
        return rows | beam.ParDo(_WriteBundleParquet(self._out_dir, self._name, self._schema, self._flush_rows))


def compact_batches(table: pa.Table, rows: int) -> Iterator[pa.RecordBatch]:
    """The table in batches of at most ``rows`` that own their buffers.

    ``Table.to_batches`` returns slices, and pyarrow pickles a slice with its parent's WHOLE
    buffers: Beam (which pickles elements between stages and to sample their sizes) then moved
    the full table once per batch - 2.3 GB for a 1M-event day. Each slice is copied instead.
    """
    for batch in table.to_batches(max_chunksize=rows):
        yield pa.concat_batches([batch])


def parquet_glob(out_dir: str | Path, name: str) -> list[str]:
    return sorted(str(p) for p in Path(out_dir).glob(f"{name}-*.parquet"))


def plain_columns(table: pa.Table) -> pa.Table:
    """Timestamps -> epoch-microsecond ints, decimals -> floats.

    Rows crossing a Beam stage boundary are encoded per value; ints, floats and
    strings have fast coders, while datetime and Decimal fall back to pickle per
    value (measured: 4.4M pickle calls, 130 s of 300 s, for 45k bar rows).
    """
    cols = []
    for field, col in zip(table.schema, table.columns, strict=True):
        if pa.types.is_timestamp(field.type):
            col = col.cast(pa.timestamp("us", tz=field.type.tz)).cast(pa.int64())
        elif pa.types.is_decimal(field.type):
            col = col.cast(pa.float64())
        cols.append(col)
    return pa.Table.from_arrays(cols, names=table.schema.names)


class _ReadParquetRows(beam.DoFn):
    def process(self, path: str):
        table = plain_columns(pq.read_table(path))
        for batch in table.to_batches(max_chunksize=10_000):
            yield from batch.to_pylist()


class ReadParquetRows(beam.PTransform):
    """Rows of Parquet files the driver exported (read inside a DoFn: only the paths are created).

    Times arrive as epoch microseconds and money as floats (see :func:`plain_columns`)."""

    def __init__(self, paths: list[str]) -> None:
        super().__init__()
        self._paths = [str(p) for p in paths]

    def expand(self, pbegin):
        return (pbegin
                | "Paths" >> beam.Create(self._paths, reshuffle=False)
                | "ReadRows" >> beam.ParDo(_ReadParquetRows()))
