"""Replayed events are counted once (issue 16 (b), ADR 016).

A producer killed and rerun writes the same events at new offsets. Whether the copies arrive in the
cycle of the originals or in a later one, the marts hold each event once: checked against counts
and sums computed here from the events themselves, and against the same events loaded without
copies. The control (dedupe off) shows the copies would be counted.
"""

from __future__ import annotations

from decimal import Decimal

import duckdb
import pytest

from bench.data import SYNTH_START_US, in_time_order, publish_events, synth_tables
from connectors.config import KafkaSettings
from pipelines.jobs.load import run_load
from pipelines.settings import JobSettings
from pipelines.status import collect_status
from tests.helpers import mart_differences, mart_rows

pytestmark = pytest.mark.integration


def _totals(db) -> tuple[int, Decimal, int, Decimal]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        trades, volume = con.execute("SELECT sum(trade_count), sum(volume_usd) FROM bars_1m").fetchone()
        liqs, liq_usd = con.execute("SELECT sum(liq_count), sum(notional_usd) FROM liquidations_1m").fetchone()
    finally:
        con.close()
    return int(trades), volume, int(liqs), liq_usd


def test_copies_of_events_are_dropped_in_the_same_and_in_later_cycles(fresh_broker, tmp_path):
    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    events = list(in_time_order(synth_tables(6_000, SYNTH_START_US, 600_000_000, seed=16)))
    rerun = events[: len(events) * 3 // 5]  # the killed producer got 60% through; the rerun starts over
    trades = [r for et, r in events if et == "trade"]
    liqs = [r for et, r in events if et == "liquidation"]
    cents = lambda v: Decimal(str(round(v, 6)))  # noqa: E731 - the marts' DECIMAL(24, 6)

    def settings(name: str, **kw) -> JobSettings:
        (tmp_path / name).mkdir()
        return JobSettings(db=tmp_path / name / "marts.duckdb", data_dir=tmp_path / name, kafka=kafka, **kw)

    clean, later = settings("clean"), settings("later")
    publish_events(kafka, iter(events))
    run_load(clean, run_dq=False)  # the originals only
    assert run_load(later, run_dq=False).duplicates_in == 0
    publish_events(kafka, iter(rerun))  # the copies, at new offsets
    second = run_load(later, run_dq=False)
    assert second.events_in == len(rerun) and second.duplicates_in == len(rerun)

    same, off = settings("same"), settings("off", dedupe_horizon_s=0)
    assert run_load(same, run_dq=False).duplicates_in == len(rerun)  # originals and copies in one cycle
    run_load(off, run_dq=False)

    expected = (len(trades), sum(cents(r["notional_usd"]) for r in trades),
                len(liqs), sum(cents(r["notional_usd"]) for r in liqs))
    for s in (clean, later, same):
        trades_n, volume, liqs_n, liq_usd = _totals(s.db)
        assert (trades_n, liqs_n) == (expected[0], expected[2])
        assert abs(volume - expected[1]) < Decimal("0.0001") * len(trades)  # rounding per event
        assert abs(liq_usd - expected[3]) < Decimal("0.0001") * len(liqs)
    assert mart_differences(mart_rows(clean.db), mart_rows(later.db)) == {}
    assert mart_differences(mart_rows(clean.db), mart_rows(same.db)) == {}
    # the control: without the dedupe the copies are counted
    assert _totals(off.db)[0] == len(trades) + sum(et == "trade" for et, _ in rerun)

    st = collect_status(later)
    dup = [c for c in st.checks if c.name == "duplicates"]
    assert dup and f"{len(rerun):,} duplicate events dropped" in dup[0].summary


def test_the_keys_stay_within_the_horizon(fresh_broker, tmp_path):
    """event_keys holds only the events within dedupe_horizon_s of the watermark (bounded state)."""
    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    span_us = 3_600_000_000
    events = list(in_time_order(synth_tables(3_000, SYNTH_START_US, span_us, seed=3)))
    s = JobSettings(db=tmp_path / "m.duckdb", data_dir=tmp_path, kafka=kafka, dedupe_horizon_s=600)
    publish_events(kafka, iter(events))
    run_load(s, run_dq=False)
    con = duckdb.connect(str(s.db), read_only=True)
    try:
        (watermark,) = con.execute("SELECT value_us FROM job_state WHERE name = 'watermark_us'").fetchone()
        n, oldest = con.execute("SELECT count(*), min(event_time_us) FROM event_keys").fetchone()
    finally:
        con.close()
    within = sum(r["event_time"] >= watermark - 600_000_000 for _, r in events)
    assert 0 < n == within < len(events)
    assert oldest >= watermark - 600_000_000
