"""A backfill's analytics can run a few days at a time (``backfill_analytics_days``, ADR 022, ADR 036):
every mart equals the analytics of the whole range at once, row for row, on an archive whose days end hours before the next begins (the
carried values after a day's last bar and the episodes closed by its quiet minutes are where
cuts would show)."""

from __future__ import annotations

from datetime import date

import pytest

from bench.data import write_synth_archive
from pipelines.archive import DAY_US
from pipelines.jobs.backfill import _day_bounds, _gate_windows, run_backfill
from pipelines.settings import JobSettings
from tests.helpers import mart_differences, mart_rows

pytestmark = pytest.mark.slow
FROM, TO = date(2024, 1, 1), date(2024, 1, 3)  # bench.data's synthetic archive starts 2024-01-01
FILLED = ("bars_1m", "bars_1m_symbol", "liquidations_1m", "cascades", "cascade_alerts", "oi_deltas", "contagion",
          "liquidation_levels", "liquidation_fuel")


def test_analytics_a_day_at_a_time_equal_the_whole_range_at_once(tmp_path):
    write_synth_archive(tmp_path / "archive", 150_000, 3, seed=11, hours_per_day=4)
    whole = JobSettings(db=tmp_path / "whole.duckdb", data_dir=tmp_path, backfill_analytics_days=0)
    daily = whole.replace(db=tmp_path / "daily.duckdb", backfill_analytics_days=1)
    start_us, end_us = _day_bounds(FROM, TO)
    assert _gate_windows(daily, start_us, end_us) == [(start_us, start_us + DAY_US),
                                                      (start_us + DAY_US, start_us + 2 * DAY_US),
                                                      (start_us + 2 * DAY_US, end_us)]
    results = [run_backfill(s, FROM, TO, run_dq=False) for s in (whole, daily)]
    assert [r.status for r in results] == ["ok", "ok"]
    assert results[0].rows == results[1].rows
    reference, got = mart_rows(whole.db, FILLED), mart_rows(daily.db, FILLED)
    assert all(reference[t] for t in FILLED), {t: len(reference[t]) for t in FILLED}
    assert mart_differences(reference, got) == {}


def test_windows_after_days_before_the_range_equal_the_whole_range(tmp_path):
    """Days before the range are read by the whole range's run (its lookback): the windowed run goes
    through them in windows that emit nothing and carry the cascades' OI history, the market index,
    the detector's running sums and oi_deltas' samples into the range (ADR 036)."""
    write_synth_archive(tmp_path / "archive", 200_000, 4, seed=3, hours_per_day=4)
    days = [date(2024, 1, d) for d in range(1, 5)]
    whole = JobSettings(db=tmp_path / "whole.duckdb", data_dir=tmp_path, backfill_analytics_days=0)
    windowed = whole.replace(db=tmp_path / "windowed.duckdb", backfill_analytics_days=1)
    for s in (whole, windowed):  # the days before the range are in the marts, as a backfill leaves them
        assert run_backfill(s, days[0], days[1], run_dq=False).status == "ok"
    results = [run_backfill(s, days[2], days[3], run_dq=False) for s in (whole, windowed)]
    assert [r.status for r in results] == ["ok", "ok"]
    assert results[0].rows == results[1].rows
    reference, got = mart_rows(whole.db, FILLED), mart_rows(windowed.db, FILLED)
    assert all(reference[t] for t in FILLED), {t: len(reference[t]) for t in FILLED}
    assert mart_differences(reference, got) == {}
