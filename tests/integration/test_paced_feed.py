"""Topics filled the way a live feed fills them: many small record batches (issue 23).

Every other test fills topics in bulk (a few large batches). On a log of small batches, a
Kafka-protocol broker may answer a fetch with only what it gathered within the fetch's max-wait:
the local broker (Tansu) gives 1-1,000 records per 10 ms fetch, and nothing at all within 0 ms.
The reader must make progress anyway (ADR 009).
"""

from __future__ import annotations

import time
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


def _reader_classes():
    from connectors.kafka.rdkafka_reader import ConfluentRangeReader

    return {"kafka-python": RangeReader, "confluent-kafka": ConfluentRangeReader}


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_a_broker_that_returns_nothing_within_the_max_wait_is_read_anyway(fresh_broker, client):
    """A 0 ms max-wait gets no record from a paced log on the local broker, ever (the old reader
    stalled until its timeout and failed the cycle, forever): the reader must step its wait up."""
    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap, fetch_max_wait_ms=0, read_timeout_ms=60_000)
    sent = _publish_paced(kafka, 25_000, seed=11)
    bounds = log_bounds(kafka, MAIN_TOPICS)
    # the log end is the high watermark, past the last small batch's base offset (issue 23)
    assert {t: sum(e - b for (tt, _), (b, e) in bounds.items() if tt == t) for t in sent} == sent
    got: Counter = Counter()
    positions = set()
    with _reader_classes()[client](kafka) as reader:
        for rng in plan_ranges(bounds, {}):
            for rec in reader.read(rng):
                got[rng.topic] += 1
                positions.add((rng.topic, rng.partition, rec.offset))
        assert reader.fetch_max_wait_ms > 0
    assert dict(got) == sent and len(positions) == sum(sent.values())


def _plain_consumer_gets_nothing(bootstrap: str, topic: str, partition: int, offset: int, wait_ms: int,
                                 within_s: float) -> bool:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe", "enable.auto.commit": False,
                  "enable.partition.eof": False, "fetch.wait.max.ms": wait_ms})
    try:
        c.assign([TopicPartition(topic, partition, offset)])
        t0 = time.monotonic()
        while time.monotonic() - t0 < within_s:
            if any(m.error() is None for m in c.consume(100, 0.25)):
                return False
        return True
    finally:
        c.close()


def test_the_librdkafka_reader_reads_a_long_log_of_small_batches(fresh_broker):
    """The confluent-kafka readers' live-run stall (ADR 033, 035): the local broker lists every record
    batch of a partition for each fetch and gives up at the fetch's max-wait, so once a partition
    holds ~10-20k small batches (a few minutes of a live feed) a 10 ms fetch returns nothing, at any
    offset, however often it is repeated. The old reader kept its 10 ms and reconnected until its
    timeout; the reader must step its wait up (and, its range read, stop fetching the partition)."""
    from confluent_kafka import Producer

    from connectors.kafka.rdkafka_reader import ConfluentRangeReader
    from connectors.kafka.reader import OffsetRange
    from connectors.kafka.topics import ensure_topics

    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap, read_timeout_ms=25_000)
    ensure_topics(kafka)
    topic, part = TOPICS["trade"], 2
    producer = Producer({"bootstrap.servers": fresh_broker.bootstrap, "linger.ms": 5, "acks": "all",
                         "enable.idempotence": True, "batch.num.messages": 5,
                         "queue.buffering.max.messages": 1_000_000})
    sent = 0
    stalls = False
    for target in (100_000, 200_000, 300_000):  # 20k, 40k, 60k batches: until a 10 ms fetch gets nothing
        while sent < target:
            try:
                producer.produce(topic, b"%d" % sent, key=b"k", partition=part)
                sent += 1
            except BufferError:
                producer.poll(0.05)
        producer.flush(60)
        if _plain_consumer_gets_nothing(fresh_broker.bootstrap, topic, part, sent - 2_000, 10, 3.0):
            stalls = True
            break
    del producer  # librdkafka's producer has no close(): dropped, it stops (and logs nothing once the broker is gone)
    if not stalls:
        pytest.skip("this broker answers 10 ms fetches on 300k records in 60k batches: the trigger is gone")
    assert kafka.fetch_max_wait_ms == 10
    with ConfluentRangeReader(kafka) as reader:
        for start, end in ((sent - 2_000, sent - 500), (1_000, 1_100)):
            got = [(r.offset, r.value) for r in reader.read(OffsetRange(topic, part, start, end))]
            assert got == [(i, b"%d" % i) for i in range(start, end)]
            assert reader._consumer.assignment() == []  # nothing fetched ahead between reads
        assert reader.fetch_max_wait_ms > 10
        learned = reader.fetch_max_wait_ms
    with ConfluentRangeReader(kafka) as later:  # e.g. the Beam source's reader of the next stream cycle
        assert later.fetch_max_wait_ms == learned
        assert [r.offset for r in later.read(OffsetRange(topic, part, sent - 100, sent))] == list(range(sent - 100, sent))


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
