"""The rows' Parquet writer writes a file every ``flush_rows`` rows of a bundle (issue 21: a
backfill's analytics are one bundle over the whole range), and no row is lost or doubled."""

from __future__ import annotations

import apache_beam as beam
import pyarrow.parquet as pq
import pytest

from pipelines.jobs.backfill import _options, _runner, set_mmap_threshold
from pipelines.sinks import WriteRowsToParquet, parquet_glob


def _write(tmp_path, rows: list[dict], flush_rows: int) -> tuple[int, list[dict]]:
    with beam.Pipeline(runner=_runner(), options=_options(1)) as p:  # the backfill's analytics: one bundle
        p | beam.Create(rows, reshuffle=False) | WriteRowsToParquet(tmp_path, "m", flush_rows=flush_rows)
    files = parquet_glob(tmp_path, "m")
    got = [r for f in files for r in pq.read_table(f).to_pylist()]
    return len(files), sorted(got, key=lambda r: r["k"])


@pytest.mark.parametrize(("flush_rows", "files"), [(0, 1), (20, 3), (15, 3), (45, 1), (1, 45)])
def test_a_file_every_flush_rows_rows_and_every_row_once(tmp_path, flush_rows, files):
    rows = [{"k": i, "v": i * 0.5, "s": None if i % 7 == 0 else f"r{i}"} for i in range(45)]
    n, got = _write(tmp_path, rows, flush_rows)
    assert n == files
    assert got == rows


def test_mmap_threshold_zero_leaves_glibc_alone():
    assert set_mmap_threshold(0) is False
    assert set_mmap_threshold(-1) is False
