"""Reading the normalized archive back: each Kafka position once, in position order.

The reference is a plain DuckDB query over the same files (``SELECT DISTINCT ... ORDER BY``
the position), independent of the fast path (files streamed in span order) and of the
deduplicating fallback.
"""

from __future__ import annotations

import pickle

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import archive

DAY = "2024-03-05"
T0 = 1_709_596_800_000_000  # 2024-03-05T00:00Z in microseconds


def _trades(topic: str, partition: int, offsets: list[int]) -> pa.Table:
    n = len(offsets)
    return pa.table({
        "exchange": ["binance-futures"] * n, "symbol": ["BTCUSDT"] * n,
        "event_time": [T0 + o * 1_000 for o in offsets], "price": [60_000.0 + o for o in offsets],
        "size": [0.001 * (o + 1) for o in offsets],
        "_topic": [topic] * n, "_partition": pa.array([partition] * n, pa.int32()), "_offset": offsets,
    })


def _write(root, name: str, table: pa.Table) -> None:
    folder = root / "trade" / f"date={DAY}"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / f"part-{name}.parquet")


def _reference(root) -> list[tuple]:
    return duckdb.connect().execute(
        f"SELECT DISTINCT _topic, _partition, _offset, price FROM read_parquet('{root}/trade/date={DAY}/*.parquet') "
        "ORDER BY _topic, _partition, _offset").fetchall()


def _got(root, rows: int = 50_000) -> list[tuple]:
    batches = list(archive.iter_day(root, "trade", DAY, rows))
    assert all(b.num_rows <= rows for b in batches)
    table = pa.Table.from_batches(batches)
    return list(zip(*(table[c].to_pylist() for c in ("_topic", "_partition", "_offset", "price")), strict=True))


def test_disjoint_files_stream_in_position_order(tmp_path):
    # file names sort in the opposite order of their positions: the reader must order by span
    _write(tmp_path, "a", _trades("t.trades", 1, [0, 1, 2]))
    _write(tmp_path, "b", _trades("t.trades", 0, list(range(10, 2_510))))
    _write(tmp_path, "c", _trades("t.trades", 0, [0, 4, 7]))
    _write(tmp_path, "d", _trades("t.trades", 0, [9_999]).slice(0, 0))  # an empty file is skipped
    files = sorted(str(p) for p in (tmp_path / "trade" / f"date={DAY}").glob("*.parquet"))
    assert archive._disjoint_order(files) is not None  # the fast path is the one under test
    assert _got(tmp_path, rows=1_000) == _reference(tmp_path)
    assert archive.read_day(tmp_path, "trade", DAY).num_rows == 2_506


@pytest.mark.parametrize("overlap", [
    "republished",        # a crashed cycle's range published again (same rows, second file)
    "partial-overlap",    # a second file starting inside the first's span
    "unsorted-in-file",   # offsets not increasing within a file
])
def test_overlapping_files_are_deduplicated(tmp_path, overlap):
    _write(tmp_path, "a", _trades("t.trades", 0, list(range(0, 100))))
    if overlap == "republished":
        _write(tmp_path, "b", _trades("t.trades", 0, list(range(0, 100))))
    elif overlap == "partial-overlap":
        _write(tmp_path, "b", _trades("t.trades", 0, list(range(50, 150))))
    else:
        _write(tmp_path, "b", _trades("t.trades", 0, [300, 200, 250]))
    files = sorted(str(p) for p in (tmp_path / "trade" / f"date={DAY}").glob("*.parquet"))
    assert archive._disjoint_order(files) is None  # the deduplicating path
    got = _got(tmp_path, rows=64)
    assert got == _reference(tmp_path)
    assert len(got) == len({g[:3] for g in got})


def test_batches_own_their_buffers(tmp_path):
    """A batch that shared a whole day's buffers would pickle all of them (Beam pickles elements)."""
    _write(tmp_path, "a", _trades("t.trades", 0, list(range(20_000))))
    batches = list(archive.iter_day(tmp_path, "trade", DAY, rows=1_000))
    assert len(batches) == 20
    whole = len(pickle.dumps(pa.Table.from_batches(batches)))
    assert max(len(pickle.dumps(b)) for b in batches) < whole / 5


def test_missing_day_is_empty(tmp_path):
    assert list(archive.iter_day(tmp_path, "trade", DAY)) == []
    assert archive.read_day(tmp_path, "trade", DAY).num_rows == 0
