"""Topics filled the way a live feed fills them: many small record batches (issue 23).

Every other test fills topics in bulk (a few large batches). On a log of small batches, a
Kafka-protocol broker may answer a fetch with only what it gathered within the fetch's max-wait:
the local broker (Tansu) gives 1-1,000 records per 10 ms fetch, and nothing at all within 0 ms.
The reader must make progress anyway (ADR 009).
"""

from __future__ import annotations

from collections import Counter

import pytest

from bench.data import SYNTH_START_US, in_time_order, publish_events, synth_tables
from connectors.config import KafkaSettings
from connectors.kafka.reader import RangeReader, log_bounds, plan_ranges
from connectors.normalize import TOPICS

pytestmark = pytest.mark.integration
MAIN_TOPICS = list(TOPICS.values())


def _publish_paced(kafka: KafkaSettings, n: int, seed: int) -> dict[str, int]:
    """n synthetic events in the paced layout; -> events sent per topic."""
    tables = synth_tables(n, SYNTH_START_US, 600_000_000, seed)
    publish_events(kafka, in_time_order(tables), "paced")
    return {TOPICS[et]: t.num_rows for et, t in tables.items()}


def test_a_broker_that_returns_nothing_within_the_max_wait_is_read_anyway(fresh_broker):
    """A 0 ms max-wait gets no record from a paced log on the local broker, ever (the old reader
    stalled until its timeout and failed the cycle, forever): the reader must step its wait up."""
    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap, fetch_max_wait_ms=0, read_timeout_ms=60_000)
    sent = _publish_paced(kafka, 25_000, seed=11)
    bounds = log_bounds(kafka, MAIN_TOPICS)
    # the log end is the high watermark, past the last small batch's base offset (issue 23)
    assert {t: sum(e - b for (tt, _), (b, e) in bounds.items() if tt == t) for t in sent} == sent
    got: Counter = Counter()
    positions = set()
    with RangeReader(kafka) as reader:
        for rng in plan_ranges(bounds, {}):
            for rec in reader.read(rng):
                got[rng.topic] += 1
                positions.add((rng.topic, rng.partition, rec.offset))
        assert reader.fetch_max_wait_ms > 0
    assert dict(got) == sent and len(positions) == sum(sent.values())


@pytest.mark.slow
def test_a_job_started_behind_a_paced_feed_catches_up_to_lag_0_and_a_load_catches_up_the_backlog(
        fresh_broker, tmp_path):
    """110k events in the paced layout: 60k wait as a backlog when the stream job starts (a big first
    cycle, read by its reader processes), 50k more arrive while it runs. The job must end at lag 0
    without a failed cycle; a one-shot `load` of the whole paced backlog into a fresh database must
    read every event and give the same marts, row for row, and bars whose trade counts and micro-USD
    volumes equal a DuckDB reference computed from the produced events."""
    import threading

    import duckdb

    from bench.data import SYNTH_START_US
    from pipelines import warehouse
    from pipelines.jobs.load import LOAD_TOPICS, run_load
    from pipelines.jobs.stream import StreamJob, StreamOptions
    from pipelines.settings import JobSettings
    from tests.helpers import mart_differences, mart_rows

    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    tables = synth_tables(110_000, SYNTH_START_US, 1_200_000_000, seed=21)
    events = list(in_time_order(tables))
    publish_events(kafka, iter(events[:60_000]), "paced")
    fed = threading.Event()

    def feed() -> None:  # the live part of the feed, while the job runs
        publish_events(kafka, iter(events[60_000:]), "paced")
        fed.set()

    settings = JobSettings(db=tmp_path / "stream" / "marts.duckdb", data_dir=tmp_path / "stream", kafka=kafka)
    settings.data_dir.mkdir()
    job = StreamJob(settings, StreamOptions(interval_s=0.2, dq_every_s=3600, exit_when_idle=1, done=fed.is_set,
                                            snapshot_every_s=0))
    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        job.run()
    finally:
        feeder.join()
    assert fed.is_set()
    assert job.health.failed_cycles == 0 and job.health.events_total == len(events)
    con = warehouse.connect(settings.db)
    try:
        committed = {(t, p): o for t, p, o in
                     con.execute('SELECT topic, "partition", next_offset FROM kafka_offsets').fetchall()}
    finally:
        con.close()
    bounds = log_bounds(kafka, LOAD_TOPICS)
    assert {tp: committed.get(tp, 0) for tp in bounds} == {tp: end for tp, (_, end) in bounds.items()}  # lag 0

    clean = JobSettings(db=tmp_path / "load" / "marts.duckdb", data_dir=tmp_path / "load", kafka=kafka)
    clean.data_dir.mkdir()
    assert run_load(clean, run_dq=False).events_in == len(events)
    streamed, loaded = mart_rows(settings.db), mart_rows(clean.db)
    assert mart_differences(streamed, loaded) == {}

    ref_con = duckdb.connect()
    ref_con.register("trades", tables["trade"].select(["exchange", "symbol", "event_time", "notional_usd"]))
    ref = ref_con.execute("SELECT exchange, symbol, event_time // 60000000 * 60 AS m, count(*) AS n, "
                     "sum(round_even(notional_usd * 1e6, 0)::BIGINT) AS usd FROM trades GROUP BY ALL").fetchall()
    con = duckdb.connect(str(clean.db), read_only=True)
    try:
        got = con.execute("SELECT exchange, symbol, epoch(minute_ts)::BIGINT, trade_count, "
                          "(volume_usd * 1000000)::BIGINT FROM bars_1m WHERE trade_count > 0").fetchall()
    finally:
        con.close()
    assert sorted(got) == sorted(ref)
