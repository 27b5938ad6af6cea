"""The derived data-quality suites catch what they state, on rows written by hand."""

from __future__ import annotations

import duckdb
import pytest

from pipelines import warehouse
from pipelines.dq import DataQuality

T = "TIMESTAMPTZ '2026-01-01 00:00:00+00'"


@pytest.fixture
def con():
    c = duckdb.connect()
    c.execute("SET TimeZone = 'UTC'")
    warehouse.migrate(c)
    yield c
    c.close()


def _bar(con, minute: int, long_n: int = 0, long_usd: float = 0.0, symbol: str = "BTCUSDT") -> None:
    con.execute(f"""INSERT INTO bars_1m (minute_ts, exchange, symbol, base, quote, kind, volume_base, volume_usd,
        trade_count, taker_buy_usd, taker_sell_usd, long_liq_count, long_liq_usd, short_liq_count, short_liq_usd,
        liquidation_events, oi_events, funding_events)
        VALUES ({T} + INTERVAL {minute} MINUTE, 'binance-futures', '{symbol}', 'BTC', 'USDT', 'perpetual', 1, 100,
        1, 50, 50, {long_n}, {long_usd}, 0, 0, {long_n}, 0, 0)""")


def _liq(con, minute: int, n: int, usd: float) -> None:
    con.execute(f"""INSERT INTO liquidations_1m VALUES ('binance-futures', 'BTCUSDT', 'long',
        {T} + INTERVAL {minute} MINUTE, 'BTC', 'USDT', {n}, {usd}, {usd}, {T} + INTERVAL {minute} MINUTE,
        {T} + INTERVAL {minute} MINUTE)""")


def test_reconciliation_passes_when_both_aggregations_agree_and_fails_when_not(con):
    dq = DataQuality.shared()
    _bar(con, 0, long_n=2, long_usd=300.0)
    _liq(con, 0, 2, 300.0)
    assert dq.validate(con, "liquidations_reconciliation", "r1", store=False).success
    _bar(con, 1, long_n=3, long_usd=90.0)
    _liq(con, 1, 2, 60.0)  # one liquidation missing from liquidations_1m
    r = dq.validate(con, "liquidations_reconciliation", "r2", store=False)
    assert not r.success and r.critical and r.rows_checked == 2


def test_continuity_flags_a_series_with_a_gap_over_five_minutes(con):
    dq = DataQuality.shared()
    for m in (0, 1, 2, 7):  # 5-minute gap: allowed
        _bar(con, m)
    assert dq.validate(con, "bars_1m_continuity", "c1", store=False).success
    _bar(con, 20)  # 13-minute gap
    r = dq.validate(con, "bars_1m_continuity", "c2", store=False)
    assert not r.success and not r.critical
    assert dq.validate(con, "bars_1m_continuity", "c3", store=False, since_us=1_767_226_200_000_000).success


def test_a_check_that_cannot_run_is_a_stored_failure_not_a_crash(con):
    con.execute("DROP VIEW v_liquidations_hourly")
    con.execute("DROP VIEW v_liquidations_1m")
    con.execute("DROP TABLE liquidations_1m")
    r = DataQuality.shared().validate(con, "liquidations_1m", "e1")
    assert not r.success and r.failed_expectations == ("check_error",)
    assert con.execute("SELECT success, failed_expectations FROM dq_results WHERE run_id = 'e1'").fetchone() == (
        False, "check_error")
