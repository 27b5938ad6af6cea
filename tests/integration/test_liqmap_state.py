"""The liquidation map carries its books across cycles exactly once (issue 22, ADR 015).

Each cycle stores the estimator's books after the last settled minute in liquidation_map_state,
in the analytics transaction, and the next cycle steps only the minutes after it. The same
events in one cycle, in many cycles, and in many cycles with a crash before one commit give the
same liquidation_levels and liquidation_fuel, row for row. The warm-up is short here (10 min of
a 40 min run), so a cycle that warmed up instead of continuing would differ: the control run,
which drops the stored books before each cycle, shows the comparison can fail.
"""

from __future__ import annotations

import dataclasses

import duckdb
import pytest

import pipelines.jobs.load as load
from bench.data import SYNTH_START_US, in_time_order, publish_events, synth_tables
from connectors.config import KafkaSettings
from pipelines.jobs.load import run_load
from pipelines.settings import JobSettings
from pipelines.transforms.config import AnalyticsConfig
from tests.helpers import mart_differences, mart_rows

pytestmark = pytest.mark.integration

MAP_MARTS = ("liquidation_levels", "liquidation_fuel")
CONFIG = dataclasses.replace(AnalyticsConfig(), allowed_lateness_s=120, liqmap_warmup_minutes=10,
                             liqmap_every_minutes=5)


def test_one_cycle_many_cycles_and_a_crashed_cycle_give_the_same_map(fresh_broker, tmp_path, monkeypatch):
    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    events = list(in_time_order(synth_tables(12_000, SYNTH_START_US, 40 * 60_000_000, seed=22)))
    parts = 8

    def settings(name: str) -> JobSettings:
        (tmp_path / name).mkdir()
        return JobSettings(db=tmp_path / name / "marts.duckdb", data_dir=tmp_path / name, kafka=kafka)

    def state_minutes(db) -> set[int]:
        con = duckdb.connect(str(db), read_only=True)
        try:
            return {m for (m,) in con.execute("SELECT DISTINCT last_minute_us FROM liquidation_map_state").fetchall()}
        finally:
            con.close()

    many, crashed, control = settings("many"), settings("crashed"), settings("control")
    store = load.store_liqmap_state
    stored: list[set[int]] = []
    for i in range(parts):
        publish_events(kafka, iter(events[i * len(events) // parts:(i + 1) * len(events) // parts]))
        assert run_load(many, run_dq=False, config=CONFIG).events_in > 0
        stored.append(state_minutes(many.db))
        if i == parts // 2:
            # a crash inside the analytics transaction, after the marts were written: nothing of it commits
            def crash(con, files):
                store(con, files)
                raise RuntimeError("killed before commit")
            monkeypatch.setattr(load, "store_liqmap_state", crash)
            with pytest.raises(RuntimeError):
                run_load(crashed, run_dq=False, config=CONFIG)
            monkeypatch.setattr(load, "store_liqmap_state", store)
        assert run_load(crashed, run_dq=False, config=CONFIG).events_in >= 0
        con = duckdb.connect(str(control.db)) if control.db.exists() else None
        if con is not None:
            con.execute("DELETE FROM liquidation_map_state")
            con.close()
        run_load(control, run_dq=False, config=CONFIG)
    one = settings("one")
    assert run_load(one, run_dq=False, config=CONFIG).events_in == len(events)

    # the books advanced with the settled minute, one step per cycle after the first few
    advanced = [max(s) for s in stored if s]
    assert len(advanced) >= parts - 2 and advanced == sorted(advanced) and len(set(advanced)) >= parts - 2
    in_one = mart_rows(one.db, MAP_MARTS)
    assert len(in_one["liquidation_fuel"]) >= 35 * 4 and len(in_one["liquidation_levels"]) > 100
    assert mart_differences(in_one, mart_rows(many.db, MAP_MARTS)) == {}
    assert mart_differences(in_one, mart_rows(crashed.db, MAP_MARTS)) == {}
    # warming up every cycle instead of continuing the books gives other rows (the check can fail)
    assert mart_differences(in_one, mart_rows(control.db, MAP_MARTS)) != {}
