"""End to end on the reported days: simulated raw venue messages -> the jobs' graph -> DuckDB marts,
and the marts say what the press reported (../shared/MARKET-EVENTS.md, preset A and B targets).

The day is rebuilt with `liqstream backfill --source capture` (the streaming job's graph; tests in
tests/integration show stream == backfill), so no broker is needed. Expected figures are the
reported ones, not the code's output.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from connectors.simulator import write_capture
from pipelines.jobs.backfill import run_backfill
from pipelines.settings import JobSettings

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _rebuild(tmp_path_factory, scenario: str, seed: int) -> JobSettings:
    d = tmp_path_factory.mktemp(f"day-{scenario}")
    capture = d / f"{scenario}.jsonl.gz"
    summary = write_capture(str(capture), scenario, seed, truth_path=str(d / "truth.json"), progress=False)
    assert summary["messages"] > 0
    con = duckdb.connect()
    (first_us, last_us) = con.execute(
        "SELECT min(received_at), max(received_at) FROM read_json(?, columns={'received_at': 'DOUBLE'})",
        [str(capture)]).fetchone()
    con.close()
    start = datetime.fromtimestamp(first_us, UTC).date() - timedelta(days=1)
    end = datetime.fromtimestamp(last_us, UTC).date()
    settings = JobSettings(db=d / "marts.duckdb", data_dir=d, backfill_workers=2)
    result = run_backfill(settings, start, end, source="capture", captures=[str(capture)])
    assert result.status == "ok" and result.dq_passed, result
    return settings


@pytest.fixture(scope="module")
def day_a(tmp_path_factory) -> JobSettings:
    return _rebuild(tmp_path_factory, "A", 7)


def _q(settings: JobSettings, sql: str, *params):
    con = duckdb.connect(str(settings.db), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def test_preset_a_long_liquidations_exceed_750m(day_a):
    ((long_usd, short_usd),) = _q(day_a, "SELECT sum(long_liq_usd), sum(short_liq_usd) FROM v_bars_1m")
    assert float(long_usd) > 750e6
    assert float(short_usd) < 0.05 * float(long_usd)  # a long purge: the liquidated are longs


def test_preset_a_drawdowns_from_the_open(day_a):
    rows = _q(day_a, """
        SELECT base, arg_min(price, minute_ts) AS open, min(low) AS low
        FROM v_bars_1m_symbol GROUP BY base""")
    dd = {base: (low / open_ - 1) * 100 for base, open_, low in rows}
    low_btc = {base: low for base, _, low in rows}["BTC"]
    assert dd["BTC"] == pytest.approx(-10.0, abs=1.0)
    assert low_btc == pytest.approx(57_500, rel=0.01)
    assert dd["ETH"] < -12.0
    assert dd["SOL"] < -15.0 and dd["DOGE"] < -15.0


def test_preset_a_cascade_episode_in_the_marts(day_a):
    rows = _q(day_a, """SELECT scope, direction, long_liq_usd FROM v_cascades_latest
                        WHERE scope = 'market' ORDER BY long_liq_usd DESC LIMIT 1""")
    assert rows and rows[0][1] == "long_liquidation" and float(rows[0][2]) > 100e6


def test_preset_a_contagion_ranks_sol_and_doge_above_eth_above_bnb(day_a):
    rows = _q(day_a, """SELECT base, avg(rank) FROM v_contagion WHERE window_minutes = 240 GROUP BY base""")
    mean = dict(rows)
    assert max(mean["SOL"], mean["DOGE"]) < mean["ETH"] < mean["BNB"], mean
