"""The streaming DQ gate checks the rows each cycle wrote, and only those (ADR 031).

A bad row written by a later cycle must fail that cycle's gate: validating nothing would pass
every test here. Between the gates that run GX (``gx_every_s``) DuckDB decides a pass; a
failure still gets GX's result and its Data Docs page at once.
"""

from __future__ import annotations

import pytest

from pipelines import warehouse
from pipelines.dq import DataQuality
from pipelines.jobs.load import LoadResult, _first_minute, run_gate
from tests.helpers import memory_warehouse
from tests.unit.test_dq_suites import T, _bar, _liq

MIN_US = 60_000_000
T0_US = 1_767_225_600_000_000  # 2026-01-01 00:00 UTC, T
TABLE_SUITES = ["liquidations_1m", "bars_1m", "cascades", "liquidations_reconciliation"]


@pytest.fixture
def con():
    c = memory_warehouse()
    yield c
    c.close()


@pytest.fixture
def dq(monkeypatch):
    d = DataQuality.shared()
    monkeypatch.setattr(d, "last_full_gate", None)  # the cadence's clock starts at this test's first gate
    return d


def _gate(con, run_id: str, since_us: int, docs, gx_every_s: float = 600.0) -> LoadResult:
    warehouse.set_state(con, "dq_from_us", since_us)  # as the events commit leaves it
    r = LoadResult(run_id=run_id, status="ok")
    con.execute("INSERT INTO pipeline_runs (run_id, job, started_at, status) VALUES (?, 'load', now(), 'ok')", [run_id])
    run_gate(con, run_id, r, TABLE_SUITES, docs_dir=docs, gx_every_s=gx_every_s)
    return r


def _cycle(con, first_minute: int, minutes: int = 3) -> None:
    for m in range(first_minute, first_minute + minutes):
        _bar(con, m, long_n=1, long_usd=100.0)
        _liq(con, m, 1, 100.0)


def test_a_bad_row_of_a_later_cycle_fails_that_cycles_gate_and_gets_its_page_at_once(con, dq, tmp_path):
    docs = tmp_path / "gx_docs"
    _cycle(con, 0)
    first = _gate(con, "c1", T0_US, docs)
    assert first.status == "ok" and {r.engine for r in first.dq} == {"duckdb"}
    assert {r.rows_checked for r in first.dq if r.suite == "bars_1m"} == {3}
    assert not (docs / "index.html").exists()  # a passing gate between the full ones renders nothing
    _cycle(con, 3)
    # written by the second cycle: its largest liquidation above the minute's total
    con.execute(f"UPDATE liquidations_1m SET max_notional_usd = 500 WHERE minute = {T} + INTERVAL 4 MINUTE")
    second = _gate(con, "c2", T0_US + 3 * MIN_US, docs)
    assert second.status == "dq_failed"
    (bad,) = [r for r in second.dq if not r.success]
    assert bad.suite == "liquidations_1m" and bad.engine == "gx" and bad.rows_checked == 3
    assert bad.failed_expectations == ("expect_column_pair_values_a_to_be_greater_than_b",)
    assert (docs / "index.html").exists()  # the failure's page, without waiting for the cadence
    assert list((docs / "validations" / "liquidations_1m").rglob("*.html"))
    q = con.execute("SELECT epoch_us(from_ts), epoch_us(to_ts) FROM quarantine WHERE run_id = 'c2'").fetchall()
    assert q and q[0][0] == T0_US + 3 * MIN_US
    # the first cycle's rows are not checked again: a third cycle's good rows pass
    _cycle(con, 6)
    assert _gate(con, "c3", T0_US + 6 * MIN_US, docs).status == "ok"


def test_a_late_liquidation_in_an_older_minute_is_in_the_cycles_scope(con, dq, tmp_path):
    """A late liquidation updates liquidations_1m's older minute; the bars of that cycle start
    later (bars drop late events): the gate's scope starts at the earlier of the two."""
    _cycle(con, 0)
    assert _gate(con, "l1", T0_US, None).status == "ok"
    _bar(con, 10)
    bars = tmp_path / "bars.parquet"
    liqs = tmp_path / "liqs.parquet"
    con.execute(f"COPY (SELECT minute_ts FROM bars_1m WHERE minute_ts >= {T} + INTERVAL 10 MINUTE) TO '{bars}'")
    con.execute(f"""UPDATE liquidations_1m SET liq_count = 0 WHERE minute = {T} + INTERVAL 1 MINUTE""")
    con.execute(f"COPY (SELECT {T} + INTERVAL 1 MINUTE AS minute) TO '{liqs}'")
    since = _first_minute(con, [str(bars)], "minute_ts", [str(liqs)], "minute")
    assert since == T0_US + MIN_US
    assert _first_minute(con, [str(bars)], "minute_ts") == T0_US + 10 * MIN_US  # the analytics' start
    r = _gate(con, "l2", since, None)
    assert r.status == "dq_failed" and {x.suite for x in r.dq if not x.success} >= {"liquidations_1m"}


def test_an_episode_rewritten_by_a_later_cycle_is_checked_whatever_its_start(con, dq):
    con.execute(f"""INSERT INTO cascades (episode_id, scope, direction, status, start_ts, detected_ts, peak_ts, end_ts,
        duration_minutes, long_liq_usd, short_liq_usd, liq_count, peak_minute_liq_usd, threshold_usd, severity,
        severity_level, kind)
        VALUES ('e1', 'BTC', 'long_liquidation', 'open', {T}, {T}, {T}, {T} + INTERVAL 5 MINUTE, 5, 1e6, 0, 10,
                5e5, 1e5, 10, 1, 'cascade')""")
    assert _gate(con, "e1", T0_US, None).status == "ok"
    # a cycle 20 minutes on closes the episode and writes it wrongly (its end before its start)
    con.execute(f"UPDATE cascades SET status = 'closed', end_ts = {T} - INTERVAL 1 MINUTE, "
                f"closed_ts = {T} + INTERVAL 20 MINUTE")
    r = _gate(con, "e2", T0_US + 20 * MIN_US, None)
    assert r.status == "dq_failed" and [x.suite for x in r.dq if not x.success] == ["cascades"]


def test_every_gx_every_s_a_gate_runs_gx_on_every_suite_and_renders_it(con, dq, tmp_path):
    docs = tmp_path / "gx_docs"
    _cycle(con, 0)
    assert {r.engine for r in _gate(con, "f1", T0_US, docs).dq} == {"duckdb"}
    dq.last_full_gate -= 601  # the cadence is due
    _cycle(con, 3)
    full = _gate(con, "f2", T0_US + 3 * MIN_US, docs)
    assert full.status == "ok" and {r.engine for r in full.dq} == {"gx"}
    assert (docs / "index.html").exists()
    _cycle(con, 6)
    assert {r.engine for r in _gate(con, "f3", T0_US + 6 * MIN_US, docs).dq} == {"duckdb"}
    _cycle(con, 9)
    assert {r.engine for r in _gate(con, "f4", T0_US + 9 * MIN_US, docs, gx_every_s=0).dq} == {"gx"}
