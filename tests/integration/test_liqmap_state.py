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


def _crash_after_the_store(monkeypatch, settings: JobSettings) -> None:
    """One cycle of `settings` killed inside its analytics transaction, after the map's books were
    stored and the marts written: nothing of it may commit."""
    store = load.store_liqmap_state

    def crash(con, *args):
        store(con, *args)
        raise RuntimeError("killed before commit")
    monkeypatch.setattr(load, "store_liqmap_state", crash)
    with pytest.raises(RuntimeError):
        run_load(settings, run_dq=False, config=CONFIG)
    monkeypatch.setattr(load, "store_liqmap_state", store)


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
    stored: list[set[int]] = []
    for i in range(parts):
        publish_events(kafka, iter(events[i * len(events) // parts:(i + 1) * len(events) // parts]))
        assert run_load(many, run_dq=False, config=CONFIG).events_in > 0
        stored.append(state_minutes(many.db))
        if i == parts // 2:
            # a crash inside the analytics transaction, after the marts were written: nothing of it commits
            _crash_after_the_store(monkeypatch, crashed)
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


def _state_rows(db) -> list[tuple]:
    """liquidation_map_state row for row (lists as tuples, so the rows compare as sets)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT * FROM liquidation_map_state ORDER BY base, exchange, symbol").fetchall()
    finally:
        con.close()
    return [tuple(tuple(v) if isinstance(v, list) else v for v in r) for r in rows]


def test_books_kept_in_process_give_the_same_marts_and_state(fresh_broker, tmp_path, monkeypatch):
    """ADR 061: the books the job keeps in process between cycles (handed to the graph, stored from
    an Arrow table) give the same liquidation-map marts, cascade fuel and stored books, row for row
    and byte for byte, as exporting and reading them back every cycle; through a restart (the kept
    books are gone: read back from the table), a cycle killed inside its transaction after the
    store (rolled back: the kept books are still the table's), and books written by another
    process (the token is not the kept one: read back). The kept books must be used on most cycles."""
    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    events = list(in_time_order(synth_tables(12_000, SYNTH_START_US, 40 * 60_000_000, seed=22)))
    parts = 8

    def settings(name: str, keep: int) -> JobSettings:
        (tmp_path / name).mkdir()
        return JobSettings(db=tmp_path / name / "marts.duckdb", data_dir=tmp_path / name, kafka=kafka,
                           liqmap_state_in_process=keep)

    kept, files = settings("kept", 1), settings("files", 0)
    used: list[bool] = []
    lookup = load._kept_liqmap_state

    def counted(*args):
        out = lookup(*args)
        used.append(out is not None)
        return out

    monkeypatch.setattr(load, "_kept_liqmap_state", counted)
    load._KEPT_LIQMAP.clear()
    for i in range(parts):
        publish_events(kafka, iter(events[i * len(events) // parts:(i + 1) * len(events) // parts]))
        if i == 3:
            load._KEPT_LIQMAP.clear()  # a restart: nothing kept, the table is read back
        if i == 5:
            _crash_after_the_store(monkeypatch, kept)
        assert run_load(kept, run_dq=False, config=CONFIG).events_in >= 0
        assert run_load(files, run_dq=False, config=CONFIG).events_in >= 0
        if i == 6:  # another process stores books (here: the same ones, under no token): read back
            con = duckdb.connect(str(kept.db))
            con.execute("UPDATE job_state SET value_us = NULL WHERE name = 'liqmap_state_token'")
            con.close()
    # kept books used on every continuing cycle but the restart's and the one after another writer
    assert used.count(True) >= parts - 5 and used.count(False) >= 2, used
    with duckdb.connect(str(files.db), read_only=True) as con:
        assert con.execute("SELECT value_us FROM job_state WHERE name = 'liqmap_state_token'").fetchone() == (None,)
    tables = MAP_MARTS + ("cascades",)
    a, b = mart_rows(kept.db, tables), mart_rows(files.db, tables)
    assert len(a["liquidation_fuel"]) >= 35 * 4 and len(a["liquidation_levels"]) > 100
    assert mart_differences(a, b) == {}
    sa, sb = _state_rows(kept.db), _state_rows(files.db)
    assert len(sa) >= 8 and sa == sb
