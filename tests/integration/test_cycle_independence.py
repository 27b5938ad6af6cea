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


def test_one_cycle_many_cycles_and_a_backfill_give_equal_marts(fresh_broker, tmp_path):
    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    # 30k events over 10 minutes of 32 instruments: ~90 trades per bar, so every split of a
    # minute reorders a float sum of many sizes
    events = list(in_time_order(synth_tables(30_000, SYNTH_START_US, 600_000_000, seed=8)))

    def settings(name: str) -> JobSettings:
        (tmp_path / name).mkdir()
        return JobSettings(db=tmp_path / name / "marts.duckdb", data_dir=tmp_path / name, kafka=kafka)

    many = settings("many")
    # the same cycles through the job's reader processes: the vectorized events pass (ADR 028)
    many_pass = settings("many-pass")
    parts = 12  # each part ends mid-minute: the next cycle merges into the stored bars
    with ParallelFetcher(kafka, 2, min_offsets=0) as fetcher:
        for i in range(parts):
            publish_events(kafka, iter(events[i * len(events) // parts:(i + 1) * len(events) // parts]))
            n = run_load(many, run_dq=False).events_in
            r = run_load(many_pass, run_dq=False, fetcher=fetcher)
            assert n > 0 and (r.events_in, r.events_pass) == (n, "vectorized")
    one = settings("one")
    assert run_load(one, run_dq=False).events_in == len(events)

    rebuilt = settings("backfill")
    shutil.copytree(one.data_dir / "archive", rebuilt.data_dir / "archive")
    day = datetime.fromtimestamp(SYNTH_START_US / 1e6, UTC).date()
    run_backfill(rebuilt, day, day, run_dq=False)

    in_one, in_many, backfilled = mart_rows(one.db), mart_rows(many.db), mart_rows(rebuilt.db)
    assert mart_differences(in_one, mart_rows(many_pass.db)) == {}
    assert sum(len(rows) for rows in in_one.values()) > 0 and len(in_one["bars_1m"]) >= 300
    assert mart_differences(in_one, in_many) == {}
    assert mart_differences(in_one, backfilled) == {}
