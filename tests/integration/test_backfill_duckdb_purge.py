"""The backfill's ADR 051 memory settings change no mart: a 3-day backfill with DuckDB's allocator
background threads (``backfill_duckdb_background_purge``), the heap trimmed after each window
(``backfill_trim_heap``) and its analytics a day at a time equals, row for row, the same backfill
with neither and its analytics in one run over the range (computed independently: a different
window split, DuckDB's and glibc's default behaviour)."""

from __future__ import annotations

from datetime import date

import duckdb
import pytest

from bench.data import write_synth_archive
from pipelines.jobs.backfill import purge_duckdb_freed_pages, run_backfill, trim_heap
from pipelines.settings import JobSettings
from tests.helpers import mart_differences, mart_rows

FROM, TO = date(2024, 1, 1), date(2024, 1, 3)  # bench.data's synthetic archive starts 2024-01-01
FILLED = ("bars_1m", "bars_1m_symbol", "liquidations_1m", "cascades", "cascade_alerts", "oi_deltas", "contagion",
          "liquidation_levels", "liquidation_fuel")


def test_the_setting_is_turned_on_only_when_enabled():
    off, on = duckdb.connect(), duckdb.connect()
    try:
        assert purge_duckdb_freed_pages(off, 0) is False
        assert purge_duckdb_freed_pages(on, 1) is True
    finally:
        off.close()
        on.close()


def test_trim_heap_runs_on_glibc():
    import sys

    assert trim_heap() is sys.platform.startswith("linux")


@pytest.mark.slow
def test_purged_windowed_backfill_equals_the_plain_whole_range_run(tmp_path):
    write_synth_archive(tmp_path / "archive", 150_000, 3, seed=21, hours_per_day=4)
    plain = JobSettings(db=tmp_path / "plain.duckdb", data_dir=tmp_path, backfill_analytics_days=0,
                        backfill_duckdb_background_purge=0, backfill_trim_heap=0)
    purged = plain.replace(db=tmp_path / "purged.duckdb", backfill_analytics_days=1,
                           backfill_duckdb_background_purge=1, backfill_trim_heap=1)
    results = [run_backfill(s, FROM, TO, run_dq=False) for s in (plain, purged)]
    assert [r.status for r in results] == ["ok", "ok"]
    assert results[0].rows == results[1].rows
    reference, got = mart_rows(plain.db, FILLED), mart_rows(purged.db, FILLED)
    assert all(reference[t] for t in FILLED), {t: len(reference[t]) for t in FILLED}
    assert mart_differences(reference, got) == {}
