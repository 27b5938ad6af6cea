"""The backfill's memory settings (issue 21, ADR 030) change no mart: the analytic marts written
a file every few rows (``sink_flush_rows``) with glibc's mmap threshold fixed equal, row for row,
the marts written one file per bundle with glibc's defaults."""

from __future__ import annotations

from datetime import date

import pytest

from bench.data import write_synth_archive
from pipelines.jobs.backfill import run_backfill
from pipelines.settings import JobSettings
from pipelines.transforms.config import AnalyticsConfig
from tests.helpers import mart_differences, mart_rows

pytestmark = pytest.mark.slow
FROM, TO = date(2024, 1, 1), date(2024, 1, 2)  # bench.data's synthetic archive starts 2024-01-01
FILLED = ("bars_1m", "bars_1m_symbol", "liquidations_1m", "cascades", "cascade_alerts", "oi_deltas", "contagion",
          "liquidation_levels", "liquidation_fuel")


def test_flushed_writers_and_the_mmap_threshold_give_the_same_marts(tmp_path):
    write_synth_archive(tmp_path / "archive", 100_000, 2, seed=5, hours_per_day=4)
    plain = JobSettings(db=tmp_path / "plain.duckdb", data_dir=tmp_path, backfill_mmap_threshold=0)
    tuned = plain.replace(db=tmp_path / "tuned.duckdb", backfill_mmap_threshold=262_144)
    a = run_backfill(plain, FROM, TO, config=AnalyticsConfig(sink_flush_rows=0), run_dq=False)
    b = run_backfill(tuned, FROM, TO, config=AnalyticsConfig(sink_flush_rows=97), run_dq=False)
    assert (a.status, b.status) == ("ok", "ok")
    assert a.rows == b.rows
    assert b.rows["liquidation_levels"] > 97 * 3 and b.rows["oi_deltas"] > 97 * 3  # several files each
    reference, got = mart_rows(plain.db, FILLED), mart_rows(tuned.db, FILLED)
    assert all(reference[t] for t in FILLED), {t: len(reference[t]) for t in FILLED}
    assert mart_differences(reference, got) == {}
