"""Marts must not depend on how the events were cut into cycles (issue 23).

The same events loaded in one cycle, in many cycles (each splitting minutes across cycles) and
rebuilt by a backfill from the archive give the same marts, row for row, on every column. Before
issue 23, ``bars_1m.volume_base`` was a float sum whose last bits followed the split.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import pytest

from bench.data import SYNTH_START_US, in_time_order, publish_events, synth_tables
from connectors.config import KafkaSettings
from connectors.kafka.fetch import ParallelFetcher
from pipelines.jobs.backfill import run_backfill
from pipelines.jobs.load import run_load
from pipelines.settings import JobSettings
from tests.helpers import mart_differences, mart_rows

pytestmark = pytest.mark.integration


def _one_many_backfill(fresh_broker, tmp_path, events: list, parts: int,
                       events_pass: str = "vectorized") -> tuple[JobSettings, ...]:
    """Load ``events`` in ``parts`` cycles (once by the one-shot load, once through the reader
    processes, whose cycles take ``events_pass``), then all in one cycle into a third mart, then
    rebuild a fourth from the one-cycle archive by a backfill: their settings (one, many,
    many through the readers, backfill)."""
    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)

    def settings(name: str) -> JobSettings:
        (tmp_path / name).mkdir()
        return JobSettings(db=tmp_path / name / "marts.duckdb", data_dir=tmp_path / name, kafka=kafka)

    many = settings("many")
    # the same cycles through the job's reader processes: the vectorized events pass (ADR 028),
    # which knows every bar event type, book_depth included (backfill's day_bars)
    many_pass = settings("many-pass")
    with ParallelFetcher(kafka, 2, min_offsets=0) as fetcher:
        for i in range(parts):
            publish_events(kafka, iter(events[i * len(events) // parts:(i + 1) * len(events) // parts]))
            n = run_load(many, run_dq=False).events_in
            r = run_load(many_pass, run_dq=False, fetcher=fetcher)
            assert n > 0 and (r.events_in, r.events_pass) == (n, events_pass)
    one = settings("one")
    assert run_load(one, run_dq=False).events_in == len(events)

    rebuilt = settings("backfill")
    shutil.copytree(one.data_dir / "archive", rebuilt.data_dir / "archive")
    day = datetime.fromtimestamp(SYNTH_START_US / 1e6, UTC).date()
    run_backfill(rebuilt, day, day, run_dq=False)
    return one, many, many_pass, rebuilt


def test_one_cycle_many_cycles_and_a_backfill_give_equal_marts(fresh_broker, tmp_path):
    # 30k events over 10 minutes of 32 instruments: ~90 trades per bar, so every split of a
    # minute reorders a float sum of many sizes
    events = list(in_time_order(synth_tables(30_000, SYNTH_START_US, 600_000_000, seed=8)))
    # 12 parts: each ends mid-minute, the next cycle merges into the stored bars
    one, many, many_pass, rebuilt = _one_many_backfill(fresh_broker, tmp_path, events, 12)
    in_one, in_many, backfilled = mart_rows(one.db), mart_rows(many.db), mart_rows(rebuilt.db)
    assert mart_differences(in_one, mart_rows(many_pass.db)) == {}
    assert sum(len(rows) for rows in in_one.values()) > 0 and len(in_one["bars_1m"]) >= 300
    assert mart_differences(in_one, in_many) == {}
    assert mart_differences(in_one, backfilled) == {}


def _depth_records(start_us: int, span_us: int, seed: int) -> list[tuple[str, dict]]:
    """book_depth records of every synth instrument every ~20 s (jittered, several per minute,
    some with a side null: a book view not reaching 100 bp)."""
    import numpy as np

    from bench.data import instruments

    inst = instruments()
    rng = np.random.default_rng(seed)
    out = []
    for i in range(inst.n):
        for t in range(start_us, start_us + span_us, 20_000_000):
            t_us = int(t + rng.integers(0, 19_000_000))
            bid, ask = (float(x) for x in rng.uniform(1e6, 5e8, size=2))
            mid = float(inst.price[i])
            rec = {"exchange": inst.exchange[i].as_py(), "symbol": inst.symbol[i].as_py(),
                   "base": inst.base[i].as_py(), "quote": inst.quote[i].as_py(), "kind": "perpetual",
                   "expiry": None, "event_time": t_us, "ingest_time": t_us + 20_000,
                   "best_bid": mid * 0.9999, "best_ask": mid * 1.0001, "bid_reach_bp": 300.0, "ask_reach_bp": 300.0,
                   "levels": 1000}
            for b in (10, 50, 100, 200):
                rec[f"bid_usd_{b}bp"], rec[f"ask_usd_{b}bp"] = bid * b / 100, ask * b / 100
            if rng.random() < 0.1:
                rec["bid_usd_100bp"] = rec["bid_usd_200bp"] = None
                rec["bid_reach_bp"] = 80.0
            out.append((t_us, ("book_depth", rec)))
    return [e for _, e in sorted(out, key=lambda x: x[0])]


def test_book_depth_bars_do_not_depend_on_the_cycles(fresh_broker, tmp_path):
    """book_depth events (ADR 024) through the load job in one cycle, in many and by a backfill:
    the same bars_1m depth columns (the minute's last record per instrument), equal to the records'
    own last per minute."""
    import duckdb

    trades = list(in_time_order(synth_tables(3_000, SYNTH_START_US, 300_000_000, seed=9)))
    depth = _depth_records(SYNTH_START_US, 300_000_000, seed=9)
    events = sorted(trades + depth, key=lambda e: e[1]["event_time"])
    one, many, many_pass, rebuilt = _one_many_backfill(fresh_broker, tmp_path, events, 7)
    in_one, in_many, backfilled = mart_rows(one.db), mart_rows(many.db), mart_rows(rebuilt.db)
    assert mart_differences(in_one, in_many) == {}
    assert mart_differences(in_one, mart_rows(many_pass.db)) == {}
    assert mart_differences(in_one, backfilled) == {}
    # by hand: each instrument's last record of each minute (ties impossible: distinct times)
    want: dict[tuple, tuple] = {}
    for _, r in depth:
        want[(r["exchange"], r["symbol"], r["event_time"] // 60_000_000)] = (
            r["bid_usd_100bp"], r["ask_usd_100bp"], r["event_time"])
    counts: dict[tuple, int] = {}
    for _, r in depth:
        k = (r["exchange"], r["symbol"], r["event_time"] // 60_000_000)
        counts[k] = counts.get(k, 0) + 1
    con = duckdb.connect(str(one.db), read_only=True)
    try:
        got = con.execute("SELECT exchange, symbol, epoch_us(minute_ts) // 60000000, depth_bid_usd_100bp, "
                          "depth_ask_usd_100bp, epoch_us(depth_ts), depth_events FROM bars_1m "
                          "WHERE depth_events > 0").fetchall()
    finally:
        con.close()
    assert {(e, s, m): (b, a, t) for e, s, m, b, a, t, _ in got} == want
    assert {(e, s, m): n for e, s, m, *_, n in got} == counts
