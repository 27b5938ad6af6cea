"""The vectorized events pass of a fetched cycle equals the Beam graph (ADR 028).

The same topics are loaded cycle by cycle into two marts through the job's reader processes:
one with ``LIQSTREAM_EVENTS_PASS=graph`` (the Beam graph over the fetched files), one with the
default pass. The cycles hold what makes the events phase non-trivial: minutes split across
cycles (stored bars merged), copies of events in the same and in a later cycle (ADR 016), late
events (older than the watermark minus the allowed lateness), out-of-order events within the
lateness, poison records (dead letters with reasons). Every mart, the committed keys, the job
state and the archive must be equal row for row on every column.
"""

from __future__ import annotations

import re

import duckdb
import pyarrow as pa
import pytest

from bench.data import SYNTH_START_US, in_time_order, publish_events, synth_tables
from connectors.config import KafkaSettings
from connectors.kafka.fetch import Fetched, ParallelFetcher
from pipelines.events_pass import EVENTS_PASS_ENV, events_pass_choice, read_fetched, run_events_pass
from pipelines.jobs.load import run_load
from pipelines.settings import JobSettings
from tests.helpers import mart_differences, mart_rows
from tests.integration.test_poison_records import POISON, _inject

pytestmark = pytest.mark.integration

MIN = 60_000_000


def _state_rows(db) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {
            "event_keys": con.execute("SELECT * FROM event_keys ORDER BY ALL").fetchall(),
            # the liquidation map's token is random per commit (ADR 061): only whether one is set compares
            "job_state": con.execute("SELECT name, CASE WHEN name = 'liqmap_state_token' THEN (value_us IS NOT NULL)::INT"
                                     " ELSE value_us END FROM job_state ORDER BY ALL").fetchall(),
            "kafka_offsets": con.execute('SELECT topic, "partition", next_offset FROM kafka_offsets ORDER BY ALL')
                             .fetchall(),
            "runs": con.execute("SELECT events_in, rejects_in, rows_written, message FROM pipeline_runs "
                                "ORDER BY started_at").fetchall(),
        }
    finally:
        con.close()


def _archive_rows(data_dir) -> list[tuple]:
    files = sorted(str(p) for p in (data_dir / "archive").rglob("*.parquet"))
    con = duckdb.connect()
    try:
        rows = []
        for et in ("trade", "liquidation", "open_interest", "funding"):
            mine = [f for f in files if f"/archive/{et}/" in f]
            if mine:
                rows += [(et, *r) for r in con.execute(
                    "SELECT * EXCLUDE (ingest_time) FROM read_parquet(?, union_by_name=true) ORDER BY ALL",
                    [mine]).fetchall()]
        return rows
    finally:
        con.close()


def test_the_events_pass_equals_the_graph_cycle_by_cycle(fresh_broker, tmp_path, monkeypatch):
    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    events = list(in_time_order(synth_tables(12_000, SYNTH_START_US, 20 * MIN, seed=21)))
    # late: events of an hour before the stream's start, sent after the watermark passed them;
    # out of order: events of the minute before the last cycle's end (within the allowed lateness)
    late = list(in_time_order(synth_tables(300, SYNTH_START_US - 60 * MIN, 5 * MIN, seed=22)))
    n = len(events)
    cut1, cut2, cut3 = n * 3 // 10, n * 6 // 10, n * 8 // 10
    out_of_order = list(in_time_order(synth_tables(400, events[cut3][1]["event_time"] - 2 * MIN, MIN, seed=23)))
    cycles = [
        events[:cut1] + events[:200],  # copies within the cycle
        events[cut1:cut2] + events[cut1 - 500:cut1],  # copies of the last cycle's events
        events[cut2:cut3] + late,
        out_of_order + events[cut3:],
    ]
    settings = {}
    for name in ("graph", "vectorized"):
        (tmp_path / name).mkdir()
        settings[name] = JobSettings(db=tmp_path / name / "marts.duckdb", data_dir=tmp_path / name, kafka=kafka)
    fetcher = ParallelFetcher(kafka, 2, min_offsets=0)
    passes = {"graph": [], "vectorized": []}
    try:
        for i, batch in enumerate(cycles):
            publish_events(kafka, iter(batch))
            if i == 1:
                _inject(kafka, SYNTH_START_US + 30 * MIN)
            for name, s in settings.items():
                monkeypatch.setenv(EVENTS_PASS_ENV, name)
                r = run_load(s, run_dq=False, fetcher=fetcher)
                passes[name].append((r.events_pass, r.events_in, r.rejects_in, r.duplicates_in, r.late_events))
    finally:
        fetcher.close()

    assert [p[0] for p in passes["graph"]] == ["graph"] * 4
    assert [p[0] for p in passes["vectorized"]] == ["vectorized"] * 4
    assert passes["graph"] == [("graph", *p[1:]) for p in passes["vectorized"]]
    # the cycles did hold what the test is about
    assert passes["vectorized"][0][3] == 200 and passes["vectorized"][1][3] == 500
    assert passes["vectorized"][1][2] == len(POISON)
    assert passes["vectorized"][2][4] == len(late)
    one, other = mart_rows(settings["graph"].db), mart_rows(settings["vectorized"].db)
    assert len(one["bars_1m"]) > 300 and len(one["late_events"]) == len(late) and one["rejects"]
    for marts in (one, other):  # each mart's readers read the topics at their own time: their clocks differ
        marts["rejects"] = [(*r[:6], re.sub(r"reader's clock \([^;]*;", "reader's clock (;", r[6]), *r[7:])
                            for r in marts["rejects"]]
    assert mart_differences(one, other) == {}
    assert _state_rows(settings["graph"].db) == _state_rows(settings["vectorized"].db)
    assert _archive_rows(settings["graph"].data_dir) == _archive_rows(settings["vectorized"].data_dir)


def test_an_unknown_event_type_sends_the_cycle_to_the_graph(tmp_path):
    known = pa.table({"event_time": [1]}).replace_schema_metadata({b"event_type": b"trade"})
    unknown = pa.table({"event_time": [1]}).replace_schema_metadata({b"event_type": b"order_book_l3"})
    files = []
    for i, t in enumerate((known, unknown)):
        path = tmp_path / f"f{i}.arrow"
        with pa.ipc.new_file(str(path), t.schema) as w:
            w.write_table(t)
        files.append(str(path))
    assert read_fetched(files[:1])["trade"].num_rows == 1
    assert read_fetched(files) is None
    out = tmp_path / "out"
    assert run_events_pass(Fetched(files=files), out, 0, None, [], True, None, 60_000_000) is None
    assert not out.exists() or not any(out.rglob("*"))  # nothing written: the graph does the cycle


def test_the_pass_is_chosen_by_env():
    assert events_pass_choice({}) == "vectorized"
    assert events_pass_choice({EVENTS_PASS_ENV: "graph"}) == "graph"
    with pytest.raises(ValueError, match="LIQSTREAM_EVENTS_PASS"):
        events_pass_choice({EVENTS_PASS_ENV: "fast"})
