"""A windowed backfill stages its windows' marts in Parquet and inserts them all at the end, in
the transaction that replaces the range (ADR 042): a crash anywhere before the commit, during the
windows or in the middle of the staged inserts, leaves every mart as it was before the backfill."""

from __future__ import annotations

from datetime import date

import pytest

from bench.data import write_synth_archive
from pipelines.jobs import backfill
from pipelines.settings import JobSettings
from tests.helpers import mart_differences, mart_rows

pytestmark = pytest.mark.slow
DAYS = (date(2024, 1, 1), date(2024, 1, 3))  # bench.data's synthetic archive starts 2024-01-01
MARTS = ("bars_1m", "bars_1m_symbol", "liquidations_1m", "cascades", "cascade_alerts", "oi_deltas", "contagion",
         "liquidation_levels", "liquidation_fuel")


class Crash(RuntimeError):
    pass


def _crash_on_call(n: int, real):
    calls = []

    def crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise Crash(f"crash at call {n}")
        return real(*args, **kwargs)

    return crash


@pytest.mark.parametrize("where", ["second window", "after the staged inserts"])
def test_a_crash_before_the_commit_leaves_the_marts_as_before(tmp_path, monkeypatch, where):
    write_synth_archive(tmp_path / "archive", 150_000, 3, seed=5, hours_per_day=4)
    settings = JobSettings(db=tmp_path / "marts.duckdb", data_dir=tmp_path, backfill_analytics_days=1)
    assert backfill.run_backfill(settings, *DAYS, run_dq=False).status == "ok"
    import duckdb

    con = duckdb.connect(str(settings.db))  # marts a rerun would change: what it must not leave half-done
    try:
        con.execute("DELETE FROM cascade_alerts WHERE alert_ts >= '2024-01-02'")
        con.execute("DELETE FROM liquidation_levels WHERE as_of_ts < '2024-01-02 12:00'")
        con.execute("UPDATE cascades SET fuel_1pct_usd = NULL, fuel_5pct_usd = -1")
        con.execute("UPDATE liquidation_fuel SET long_usd_1pct = 0 WHERE minute_ts >= '2024-01-03'")
        con.execute("DELETE FROM contagion WHERE as_of_ts >= '2024-01-02'")
    finally:
        con.close()
    before = mart_rows(settings.db, MARTS)
    assert all(before[t] for t in ("cascades", "cascade_alerts", "liquidation_levels", "liquidation_fuel")), \
        {t: len(before[t]) for t in MARTS}
    if where == "second window":  # the first window's marts staged, the second's analytics fail
        monkeypatch.setattr(backfill, "_run_window", _crash_on_call(2, backfill._run_window))
    else:  # every mart inserted in the transaction; the episodes' fuel (the last step before the gate) fails
        monkeypatch.setattr(backfill, "attach_cascade_fuel", _crash_on_call(1, backfill.attach_cascade_fuel))
    with pytest.raises(Crash):
        backfill.run_backfill(settings, *DAYS, run_dq=False)
    assert mart_differences(before, mart_rows(settings.db, MARTS)) == {}
    # and the same backfill without the crash replaces the range
    monkeypatch.undo()
    assert backfill.run_backfill(settings, *DAYS, run_dq=False).status == "ok"
    assert mart_differences(before, mart_rows(settings.db, MARTS))
