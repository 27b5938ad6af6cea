"""Cascade context (issue 22): each episode gets the fuel it started with and the share consumed, and
its alerts carry it; figures by hand from a few liquidation_fuel rows."""

from __future__ import annotations

import pytest

from pipelines import warehouse
from pipelines.alerts.outbox import ALERT_ROWS_SQL
from pipelines.alerts.record import to_record
from pipelines.jobs.load import attach_cascade_fuel
from pipelines.transforms.config import AnalyticsConfig

EPISODE = """INSERT INTO cascades (episode_id, scope, direction, status, start_ts, detected_ts, peak_ts, end_ts,
    duration_minutes, long_liq_usd, short_liq_usd, liq_count, peak_minute_liq_usd, threshold_usd, severity,
    severity_level) VALUES (?, ?, ?, 'open', ?, ?, ?, ?, 2, ?, ?, 3, 1, 1, 1, 1)"""


def _fuel(con, base: str, minute: str, longs: tuple[float, float, float], shorts: tuple[float, float, float]) -> None:
    con.execute("INSERT INTO liquidation_fuel (minute_ts, base, price, long_usd_1pct, long_usd_2pct, long_usd_5pct, "
                "short_usd_1pct, short_usd_2pct, short_usd_5pct) VALUES (?, ?, 100, ?, ?, ?, ?, ?, ?)",
                [minute, base, *longs, *shorts])


def test_episodes_get_the_fuel_of_the_minute_before_their_start_in_their_direction(tmp_path):
    con = warehouse.connect(tmp_path / "m.duckdb")
    warehouse.migrate(con)
    _fuel(con, "BTC", "2026-01-01 00:09:00+00", (1e6, 3e6, 8e6), (2e6, 5e6, 9e6))
    _fuel(con, "BTC", "2026-01-01 00:10:00+00", (7e6, 7e6, 7e6), (7e6, 7e6, 7e6))  # the start minute: too late
    _fuel(con, "ETH", "2026-01-01 00:06:00+00", (1e5, 2e5, 4e5), (0.0, 1e5, 1e5))  # the last ETH row before
    _fuel(con, "SOL", "2026-01-01 00:20:00+00", (5e5, 5e5, 5e5), (5e5, 5e5, 5e5))  # only after: none
    ts = ("2026-01-01 00:10:00+00",) * 4
    con.execute(EPISODE, ["btc-long", "BTC", "long_liquidation", *ts, 2e6, 0.0])
    con.execute(EPISODE, ["btc-short", "BTC", "short_squeeze", *ts, 0.0, 18e6])
    con.execute(EPISODE, ["mkt-long", "market", "long_liquidation", *ts, 4.2e6, 0.0])
    con.execute(EPISODE, ["sol-long", "SOL", "long_liquidation", *ts, 1e6, 0.0])
    con.execute(EPISODE, ["eth-stale", "ETH", "long_liquidation", "2026-01-01 00:30:00+00", *ts[1:], 1e6, 0.0])
    attach_cascade_fuel(con, AnalyticsConfig(), 0)
    got = {r[0]: r[1:] for r in con.execute("SELECT episode_id, fuel_1pct_usd, fuel_2pct_usd, fuel_5pct_usd, "
                                            "fuel_consumed_share FROM cascades").fetchall()}
    assert got["btc-long"] == pytest.approx((1e6, 3e6, 8e6, 2e6 / 8e6))
    assert got["btc-short"] == pytest.approx((2e6, 5e6, 9e6, 2.0))  # more liquidated than the map held
    # the market: BTC's 00:09 row + ETH's 00:06 row (within 10 minutes); SOL has no row before the start
    assert got["mkt-long"] == pytest.approx((1.1e6, 3.2e6, 8.4e6, 0.5))
    assert got["sol-long"] == (None, None, None, None)
    assert got["eth-stale"] == (None, None, None, None)  # ETH's last row is 24 minutes before its start
    # an alert of the episode says it: "X USD of longs within 2 % below"
    con.execute("INSERT INTO cascade_alerts (episode_id, severity_level, alert_type, scope, direction, alert_ts, "
                "minute_ts, start_ts, liq_usd, minute_liq_usd, threshold_usd, severity) VALUES ('btc-long', 1, "
                "'start', 'BTC', 'long_liquidation', '2026-01-01 00:12:00+00', '2026-01-01 00:11:00+00', "
                "'2026-01-01 00:10:00+00', 2e6, 1e6, 1e6, 2)")
    keys = tmp_path / "keys.parquet"
    con.execute(f"COPY (SELECT episode_id, severity_level FROM cascade_alerts) TO '{keys}' (FORMAT parquet)")
    cur = con.execute(ALERT_ROWS_SQL, [[str(keys)]])
    row = dict(zip([d[0] for d in cur.description], cur.fetchone(), strict=True))
    rec = to_record(row, "run-1", 0)
    assert (rec["fuel_1pct_usd"], rec["fuel_2pct_usd"], rec["fuel_5pct_usd"]) == (1e6, 3e6, 8e6)
    # a re-upserted episode (its fuel columns NULL again) is filled again; one starting after the
    # cycle's first emitted minute is re-computed (its fuel row changed); an older one is left alone
    con.execute("UPDATE cascades SET fuel_1pct_usd = NULL, fuel_5pct_usd = NULL, long_liq_usd = 4e6 "
                "WHERE episode_id = 'btc-long'")
    con.execute("UPDATE liquidation_fuel SET short_usd_5pct = 12e6 WHERE base = 'BTC' AND minute_ts = "
                "'2026-01-01 00:09:00+00'")
    since = 1767225600_000_000 + 9 * 60_000_000  # 2026-01-01 00:09
    attach_cascade_fuel(con, AnalyticsConfig(), since)
    got = dict(con.execute("SELECT episode_id, fuel_5pct_usd FROM cascades").fetchall())
    assert got["btc-long"] == 8e6 and got["btc-short"] == 12e6
    assert con.execute("SELECT fuel_consumed_share FROM cascades WHERE episode_id = 'btc-long'").fetchone()[0] == 0.5
    con.execute("UPDATE liquidation_fuel SET short_usd_5pct = 1, long_usd_5pct = 2 WHERE base = 'BTC'")
    # an episode that closed before the cycle's first emitted minute is left alone; an open one (its
    # row re-upserted with its liquidated USD of now) is computed again
    con.execute("UPDATE cascades SET status = 'closed', closed_ts = end_ts WHERE episode_id = 'btc-short'")
    attach_cascade_fuel(con, AnalyticsConfig(), since + 120_000_000)  # 00:11: after the episodes' start and end
    got = dict(con.execute("SELECT episode_id, fuel_5pct_usd FROM cascades").fetchall())
    assert got["btc-short"] == 12e6 and got["btc-long"] == 2.0
    con.close()
