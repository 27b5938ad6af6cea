"""The stream job's reader processes (connectors.kafka.fetch) against a real broker.

Checked against what was produced (every event once, field for field, at its position),
not against the in-process reader's output; plus the failure modes a long-lived process
pool brings: a reader dying mid-job, and the job dying under its readers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from pathlib import Path

import pyarrow as pa
import pytest

from bench.data import SYNTH_START_US, synth_tables
from connectors.config import KafkaSettings
from connectors.kafka.fetch import ParallelFetcher
from connectors.kafka.producer import EventProducer
from connectors.kafka.reader import log_bounds, plan_ranges
from connectors.kafka.topics import ensure_topics
from connectors.normalize import TOPICS
from tests.conftest import REPO
from tests.helpers import fetch_chunk_dying, reader_task_stalling

pytestmark = pytest.mark.integration
MAIN_TOPICS = list(TOPICS.values())


def _produce(kafka: KafkaSettings, n: int, seed: int) -> dict[tuple[str, int], dict]:
    """n synthetic events + one garbled value on the trades topic; -> {(event_type, i): record}."""
    ensure_topics(kafka)
    tables = synth_tables(n, SYNTH_START_US, 600_000_000, seed)
    sent = {}
    with EventProducer(kafka) as producer:
        for et, t in tables.items():
            for i, rec in enumerate(t.drop_columns(["_topic", "_partition", "_offset"]).to_pylist()):
                if et == "trade":
                    rec["trade_id"] = f"t{i}"  # every trade distinct
                producer.send_event(et, rec)
                sent[(et, i)] = rec
        producer._producer.send(TOPICS["trade"], key=b"binance-futures:BTCUSDT", value=b"\xc3\x01garbled")
        producer.flush()
    return sent


def _read_all(files: list[str]) -> dict[str, pa.Table]:
    by_type: dict[str, list[pa.Table]] = {}
    for f in files:
        t = pa.ipc.open_file(pa.OSFile(f)).read_all()
        by_type.setdefault(t.schema.metadata[b"event_type"].decode(), []).append(t)
    return {et: pa.concat_tables(ts) for et, ts in by_type.items()}


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_fetch_reads_every_event_once_and_rejects_the_garbled_one(fresh_broker, tmp_path, client):
    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap, reader_client=client)
    sent = _produce(kafka, 3_000, seed=4)
    ranges = plan_ranges(log_bounds(kafka, MAIN_TOPICS), {})
    with ParallelFetcher(kafka, workers=2, chunk=97) as fetcher:  # many chunks, odd sizes
        got = fetcher.fetch(ranges, tmp_path / "f")
    assert got.records == len(sent)
    tables = _read_all(got.files)
    assert sum(t.num_rows for t in tables.values()) == len(sent)
    for et, t in tables.items():
        pos = list(zip(t["_topic"].to_pylist(), t["_partition"].to_pylist(), t["_offset"].to_pylist(), strict=True))
        assert len(set(pos)) == len(pos) and {p[0] for p in pos} == {TOPICS[et]}
        produced = sorted((r for (e, _), r in sent.items() if e == et), key=lambda r: sorted(map(str, r.items())))
        fetched = sorted(t.drop_columns(["_topic", "_partition", "_offset"]).to_pylist(),
                         key=lambda r: sorted(map(str, r.items())))
        assert fetched == produced
    (rej,) = got.rejects
    assert rej["topic"] == TOPICS["trade"] and rej["reason"] == "decode_error" and rej["raw"] == b"\xc3\x01garbled"
    assert rej["exchange"] == "binance-futures"


def test_both_clients_read_exactly_a_range_as_produced(fresh_broker):
    """Sub-ranges of a partition, with odd bounds: each client yields exactly the records at those
    offsets, in order, with the values, keys and timestamps the producer sent (kafka-python's
    producer, read back by kafka-python and by librdkafka)."""
    from kafka import KafkaProducer

    from connectors.kafka.rdkafka_reader import ConfluentRangeReader
    from connectors.kafka.reader import OffsetRange, RangeReader

    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    ensure_topics(kafka)
    topic = TOPICS["trade"]
    sent = [(f"k{i % 7}".encode() if i % 5 or not i % 11 else None, bytes([i % 251]) * (i % 40 + 1) if i % 11 else None,
             1_700_000_000_000 + i) for i in range(3_000)]
    producer = KafkaProducer(**kafka.client_kwargs(), linger_ms=5)
    for key, value, ts in sent:
        producer.send(topic, key=key, value=value, partition=1, timestamp_ms=ts)
    producer.flush()
    producer.close()
    for reader_cls in (RangeReader, ConfluentRangeReader):
        with reader_cls(kafka, idle_timeout_s=20) as reader:
            for start, end in ((0, 1), (13, 2_001), (2_001, 3_000), (2_999, 3_000), (5, 5)):
                got = [(r.offset, r.key, r.value, r.timestamp) for r in reader.read(OffsetRange(topic, 1, start, end))]
                assert got == [(i, *sent[i][:2], sent[i][2]) for i in range(start, end)], (reader_cls, start, end)
            cols = list(reader.read_columns(OffsetRange(topic, 1, 10, 2_510), 1_000))
            assert [len(c[0]) for c in cols] == [1_000, 1_000, 500]
            assert [o for c in cols for o in c[0]] == list(range(10, 2_510))


def _positions(files: list[str]) -> list[tuple[str, int, int]]:
    pos = []
    for t in _read_all(files).values():
        pos += zip(t["_topic"].to_pylist(), t["_partition"].to_pylist(), t["_offset"].to_pylist(), strict=True)
    return pos


def _assert_every_event_once(got, ranges, n_events: int) -> None:
    assert got.records == n_events
    pos = _positions(got.files)
    assert len(pos) == len(set(pos)) == n_events  # nothing from the broken attempt, nothing twice
    assert all(any(r.topic == t and r.partition == p and r.start <= o < r.end for r in ranges) for t, p, o in pos)


def test_a_reader_death_noticed_at_submit_replaces_the_pool(fresh_broker, tmp_path):
    """The pool already knows a reader died when the fetch submits its chunks: BrokenProcessPool is
    raised by submit() itself (it once escaped the pool's replacement there, issue 16)."""
    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    sent = _produce(kafka, 500, seed=5)
    ranges = plan_ranges(log_bounds(kafka, MAIN_TOPICS), {})
    fetcher = ParallelFetcher(kafka, workers=2, chunk=50)
    try:
        pool = fetcher.start()
        for f in [pool.submit(int) for _ in range(4)]:
            f.result()  # both readers up
        pids = list(pool._processes)
        os.kill(pids[0], signal.SIGKILL)
        pool._processes[pids[0]].join()
        deadline = time.monotonic() + 30  # the pool's manager thread marks it broken on the death
        while not pool._broken and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(BrokenProcessPool):
            pool.submit(int)  # the state this test is about
        got = fetcher.fetch(ranges, tmp_path / "a")
        _assert_every_event_once(got, ranges, len(sent))
        assert set(fetcher._pool._processes).isdisjoint(pids)
    finally:
        fetcher.close()


def _fetcher_whose_readers_die(broker, tmp_path, deaths: int):
    """(events sent, ranges, a fetcher whose first ``deaths`` chunk reads kill their reader)."""
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    sent = _produce(kafka, 500, seed=5)
    ranges = plan_ranges(log_bounds(kafka, MAIN_TOPICS), {})
    (tmp_path / "deaths").mkdir()
    fetcher = ParallelFetcher(kafka, workers=2, chunk=50)
    fetcher.task = partial(fetch_chunk_dying, str(tmp_path / "deaths"), deaths)
    return sent, ranges, fetcher


def test_a_reader_dying_mid_chunk_is_replaced_and_the_fetch_read_again(fresh_broker, tmp_path):
    sent, ranges, fetcher = _fetcher_whose_readers_die(fresh_broker, tmp_path, 1)
    try:
        _assert_every_event_once(fetcher.fetch(ranges, tmp_path / "a"), ranges, len(sent))
        assert len(list((tmp_path / "deaths").iterdir())) == 1  # a reader did die
    finally:
        fetcher.close()


def test_readers_dying_twice_in_a_row_fail_the_fetch_and_the_next_one_recovers(fresh_broker, tmp_path):
    sent, ranges, fetcher = _fetcher_whose_readers_die(fresh_broker, tmp_path, 2)
    try:
        with pytest.raises(BrokenProcessPool):
            fetcher.fetch(ranges, tmp_path / "a")
        assert len(list((tmp_path / "deaths").iterdir())) == 2  # the fetch and its retry each lost a reader
        assert fetcher._pool is None  # replaced at the next fetch
        _assert_every_event_once(fetcher.fetch(ranges, tmp_path / "b"), ranges, len(sent))
    finally:
        fetcher.close()


def test_readers_leave_when_the_job_is_killed(fresh_broker, tmp_path):
    """kill -9 of the job cannot tell its pool; the readers watch their parent and exit."""
    script = textwrap.dedent(f"""
        import sys, time
        from connectors.config import KafkaSettings
        from connectors.kafka.fetch import ParallelFetcher
        f = ParallelFetcher(KafkaSettings(bootstrap_servers={fresh_broker.bootstrap!r}), workers=2)
        pool = f.start()
        while len(pool._processes) < 2:
            time.sleep(0.1)
        print(*pool._processes, flush=True)
        time.sleep(600)
    """)
    job = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        readers = [int(p) for p in job.stdout.readline().split()]
        assert len(readers) == 2
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=60)
        deadline = time.monotonic() + 120  # readers poll their parent; a loaded machine delays them
        while time.monotonic() < deadline and any(_alive(p) for p in readers):
            time.sleep(0.2)
        assert not any(_alive(p) for p in readers)
    finally:
        job.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_catch_up_bench_measures_the_whole_backlog(tmp_path):
    """bench.streaming.run_catch_up (make bench's job-vs-raw-reader figure): both readers go over
    exactly the backlog it produced, and the ratio is the quotient of the two rates."""
    import duckdb

    from bench.streaming import CYCLE_DONE_US, run_catch_up

    res = run_catch_up(2_000, tmp_path)
    assert res["events"] == 2_000 and res["job_events"] == 2_000 and res["job_cycles"] >= 1
    assert res["raw_consume_decode_per_s"] > 0 and res["job_events_per_s"] > 0
    assert res["ratio_to_raw"] == pytest.approx(res["job_events_per_s"] / res["raw_consume_decode_per_s"])
    # the window holds the last busy cycle's DQ gate: its results were written before the window's end
    con = duckdb.connect(str(tmp_path / "stream.duckdb"), read_only=True)
    run_id, done_us, commit_us = con.execute(
        f"SELECT run_id, {CYCLE_DONE_US}, epoch_us(finished_at) FROM pipeline_runs WHERE events_in > 0 "
        "ORDER BY finished_at DESC LIMIT 1").fetchone()
    (gates, last_check) = con.execute("SELECT count(*), epoch_us(max(checked_at)) FROM dq_results WHERE run_id = ?",
                                      [run_id]).fetchone()
    con.close()
    assert gates > 0 and commit_us < last_check <= done_us
    assert res["job_events_commit_per_s"] > res["job_events_per_s"]  # the events commit comes first
    # the warm window: a second backlog of the same size, drained by a job whose readers were up
    warm = res["warm"]
    assert warm["events"] == 2_000 and warm["cycles"] >= 1 and warm["events_per_s"] > 0
    assert warm["events_commit_per_s"] > warm["events_per_s"] and set(warm["phases"]) >= {"events", "dq"}
    assert res["cold"]["events"] == 2_000 and res["windows"]["cold"] and res["windows"]["warm"]


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (Linux /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_readers_stalled_in_a_read_are_ended_at_once_when_a_cycle_is_abandoned(fresh_broker, tmp_path):
    """A second SIGTERM abandons the cycle; the job must not then wait on readers stuck in a read."""
    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    fetcher = ParallelFetcher(kafka, workers=2)
    pool = fetcher.start()
    marker = tmp_path / "inside"
    pool.submit(reader_task_stalling, str(marker), None, str(tmp_path))
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists()
    procs = list(pool._processes.values())
    fetcher.close(wait=False)
    for p in procs:
        p.join(timeout=120)
    # asked of the OS, not of Process.is_alive(): the pool's own thread joins the same Process objects,
    # and when it reaps a worker first, is_alive() can answer True (waitpid -> ECHILD -> "unknown")
    assert not [p.pid for p in procs if _running(p.pid)]


def test_confluent_reader_asks_each_topics_metadata_once_before_assigning_it(fresh_broker):
    """librdkafka left the first consume() after assigning a topic it had no metadata for empty for
    ~1 s on the local broker, so a fresh reader (one per small stream cycle) paid ~1 s per topic:
    the alert latency regression of 2026-12-04. The reader asks a topic's metadata once per consumer,
    before its first assignment of the topic, and again after a reconnect (a new consumer)."""
    from confluent_kafka import Consumer

    from connectors.kafka.rdkafka_reader import ConfluentRangeReader
    from connectors.kafka.reader import OffsetRange

    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    sent = _produce(kafka, 600, seed=7)
    calls: list[tuple[str, str]] = []

    class Spy:
        def __init__(self, conf):
            self._c = Consumer(conf)

        def list_topics(self, topic=None, timeout=-1):
            calls.append(("metadata", topic))
            return self._c.list_topics(topic=topic, timeout=timeout)

        def assign(self, tps):
            calls.extend(("assign", tp.topic) for tp in tps)
            return self._c.assign(tps)

        def __getattr__(self, name):
            return getattr(self._c, name)

    import confluent_kafka

    real = confluent_kafka.Consumer  # the reader constructs its consumers through this name
    confluent_kafka.Consumer = Spy
    try:
        bounds = log_bounds(kafka, MAIN_TOPICS)
        ranges = [r for r in plan_ranges(bounds, {}) if r.size > 0]
        with ConfluentRangeReader(kafka, idle_timeout_s=20) as reader:
            n = sum(1 for r in ranges for _ in reader.read(OffsetRange(r.topic, r.partition, r.start, r.end)))
            reader._reconnect("test")
            n += sum(1 for _ in reader.read(OffsetRange(ranges[0].topic, ranges[0].partition, ranges[0].start,
                                                        ranges[0].start + 1)))
    finally:
        confluent_kafka.Consumer = real
    assert n == len(sent) + 1 + 1  # every event, the garbled value, and the one record read again
    topics = [r.topic for r in ranges]
    first_assign = {}
    for i, (what, topic) in enumerate(calls):
        if what == "assign":
            first_assign.setdefault(topic, i)
    metadata = [i for i, (what, _) in enumerate(calls) if what == "metadata"]
    assert [calls[i][1] for i in metadata] == [*dict.fromkeys(topics), ranges[0].topic]  # once per topic and consumer
    assert all(calls[first_assign[t] - 1] == ("metadata", t) for t in set(topics))  # just before the first assign


def test_the_kafka_python_readers_retry_back_off_is_the_settings(broker):
    """kafka-python pauses ``retry_backoff_ms`` when a poll has nothing to wait on, e.g. at each topic a
    range reader switches to (ADR 040): the readers and the bounds probe take it from the settings."""
    from connectors.kafka.reader import RangeReader, _consumer

    settings = KafkaSettings(bootstrap_servers=broker.bootstrap)
    assert settings.reader_retry_backoff_ms == 10  # not kafka-python's 100 ms
    with RangeReader(KafkaSettings(bootstrap_servers=broker.bootstrap, reader_retry_backoff_ms=7)) as reader:
        assert reader._consumer.config["retry_backoff_ms"] == 7
    probe = _consumer(settings)
    try:
        assert probe.config["retry_backoff_ms"] == 10
    finally:
        probe.close()
