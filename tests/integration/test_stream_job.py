"""The streaming job against a real broker: kill -9, outages, late partitions, redelivery."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import duckdb
import pytest

from connectors.config import KafkaSettings
from connectors.kafka.publish import publish_raw_stream
from pipelines.jobs.load import run_load
from pipelines.settings import JobSettings
from tests.conftest import REPO
from tests.helpers import binance_force_orders, expected_liquidations, mart_liquidations

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _stream_proc(db, bootstrap, *extra: str, metrics_port: int | None = None,
                 env_extra: dict[str, str] | None = None, request_timeout_ms: int = 4000) -> subprocess.Popen:
    """The job in its own process. A short request timeout makes a frozen broker show within seconds; a
    test that does not freeze it can ask for the default, which a loaded machine's broker always meets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "LIQSTREAM_"))}
    env.update(KAFKA_BOOTSTRAP_SERVERS=bootstrap, LIQSTREAM_DB=str(db), LIQSTREAM_DATA_DIR=str(db.parent),
               KAFKA_REQUEST_TIMEOUT_MS=str(request_timeout_ms), **(env_extra or {}))
    args = [sys.executable, "-m", "pipelines.cli", "stream", "--interval", "0.2", "--dq-every", "3600", *extra]
    if metrics_port:
        args += ["--metrics-port", str(metrics_port)]
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("fetch_ahead", ["0", "2"])  # 2: the next cycle is read ahead (ADR 043)
def test_kill9_mid_cycle_repeatedly_loses_nothing_and_counts_once(fresh_broker, tmp_path, fetch_ahead):
    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    messages = binance_force_orders(6000, seed=7)
    db = tmp_path / "stream.duckdb"
    done = threading.Event()

    def produce() -> None:  # keeps producing while the job is killed and restarted
        for i in range(0, len(messages), 300):
            publish_raw_stream(messages[i:i + 300], kafka)
            time.sleep(0.25)
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    rng = random.Random(3)
    kills = 0
    while kills < 4:
        proc = _stream_proc(db, fresh_broker.bootstrap, env_extra={"LIQSTREAM_FETCH_AHEAD": fetch_ahead})
        time.sleep(rng.uniform(3.0, 7.0))  # import + first cycles; lands at random points of a cycle
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    producer.join()
    assert done.is_set()
    final = _stream_proc(db, fresh_broker.bootstrap, "--exit-when-idle", "2",
                         env_extra={"LIQSTREAM_FETCH_AHEAD": fetch_ahead})
    out, _ = final.communicate(timeout=900)  # bounded; generous for a loaded machine
    assert final.returncode == 0, out[-2000:]

    expected = expected_liquidations(messages)
    assert mart_liquidations(db) == expected
    # and equal to one clean load of the same topics into a new database
    clean = JobSettings(db=tmp_path / "clean.duckdb", data_dir=tmp_path, kafka=kafka)
    run_load(clean, run_dq=False)
    assert mart_liquidations(clean.db) == expected


def test_broker_outage_is_waited_out_and_metrics_show_it(fresh_broker, tmp_path):
    """The broker process is frozen (SIGSTOP) for a while: cycles fail, the job waits, then resumes.

    A *restart* of the local broker cannot be shown: Tansu keeps data in memory only, so a restarted
    local broker is empty (the job refuses it with ClusterMismatch/OffsetsAheadOfLog, tested in
    test_load_pipeline). A real Kafka cluster keeps its log across restarts.
    """
    from connectors.kafka.local_broker import free_port

    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    first, second = binance_force_orders(500, seed=1), binance_force_orders(500, seed=2, t0_ms=1_767_226_800_000)
    publish_raw_stream(first, kafka)
    db = tmp_path / "outage.duckdb"
    port = free_port()
    proc = _stream_proc(db, fresh_broker.bootstrap, metrics_port=port)
    failure = None
    try:
        _wait_for(lambda: _metric(port, "liqstream_events_total") >= 500, WAIT_S, "the first 500 events counted")
        os.kill(fresh_broker.process.pid, signal.SIGSTOP)
        try:
            _wait_for(lambda: _metric(port, "liqstream_cycles_failed_total") >= 1, WAIT_S,
                      "a failed cycle while the broker is frozen")
            assert _metric(port, "liqstream_broker_up") == 0
        finally:
            os.kill(fresh_broker.process.pid, signal.SIGCONT)
        publish_raw_stream(second, kafka)
        # after the outage the job may sit in a backoff of up to 30 s before its next cycle
        _wait_for(lambda: _metric(port, "liqstream_events_total") >= 1000, WAIT_S,
                  "all 1000 events counted after the broker resumed")
        # the lag probe after a cycle sets broker_up; on a loaded machine it may time out once more
        _wait_for(lambda: _metric(port, "liqstream_broker_up") == 1, WAIT_S, "broker_up back to 1")
    except AssertionError as exc:
        failure = exc
    finally:
        proc.send_signal(signal.SIGTERM)  # graceful stop
        out, _ = proc.communicate(timeout=WAIT_S)
    if failure is not None:  # what the job was doing says more than the metric that did not move
        raise AssertionError(f"{failure}; the job's log ends with:\n{out[-4000:]}") from failure
    assert proc.returncode == 0, out[-2000:]
    assert "cycle failed" in out and "stream stopped" in out
    assert mart_liquidations(db) == expected_liquidations(first + second)


def test_partition_that_starts_receiving_data_later_is_read_from_its_start(fresh_broker, tmp_path):
    from kafka import KafkaProducer

    from connectors.avro import AvroEncoder
    from connectors.exchanges import normalizer_for
    from connectors.kafka.topics import ensure_topics
    from connectors.normalize import route

    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap, partitions=3)
    ensure_topics(kafka)
    msgs = binance_force_orders(90, seed=5)
    norm = normalizer_for("binance-futures")
    enc = AvroEncoder("liquidation")
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    settings = JobSettings(db=tmp_path / "p.duckdb", data_dir=tmp_path, kafka=kafka)

    def send(batch, partition):
        for m in batch:
            (_, rec), = route(norm, m.raw, m.received_at_us).records
            producer.send("liquidations.v1", key=b"k", value=enc.encode(rec), partition=partition)
        producer.flush()

    send(msgs[:40], 0)
    first = run_load(settings, run_dq=False)
    assert {r.partition for r in first.ranges if r.topic == "liquidations.v1"} == {0}
    send(msgs[40:], 2)  # partition 2 gets its first data only now
    second = run_load(settings, run_dq=False)
    assert [(r.partition, r.start, r.end) for r in second.ranges if r.topic == "liquidations.v1"] == [(2, 0, 50)]
    producer.close()
    assert mart_liquidations(settings.db) == expected_liquidations(msgs)


def test_partition_added_to_a_live_topic_is_picked_up(fresh_broker, tmp_path):
    from kafka.admin import KafkaAdminClient, NewPartitions

    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap, partitions=1)
    msgs = binance_force_orders(60, seed=9)
    publish_raw_stream(msgs[:30], kafka)
    settings = JobSettings(db=tmp_path / "np.duckdb", data_dir=tmp_path, kafka=kafka)
    run_load(settings, run_dq=False)
    admin = KafkaAdminClient(**kafka.client_kwargs())
    try:
        admin.create_partitions({"liquidations.v1": NewPartitions(total_count=3)})
    except Exception as exc:
        pytest.skip(f"the local broker refuses CreatePartitions ({type(exc).__name__}); Tansu 0.6 lacks it. "
                    "plan_ranges reads a partition it has not seen from its log start, shown by "
                    "test_partition_that_starts_receiving_data_later_is_read_from_its_start")
    finally:
        admin.close()
    publish_raw_stream(msgs[30:], kafka)
    run_load(settings, run_dq=False)
    assert mart_liquidations(settings.db) == expected_liquidations(msgs)


def test_redelivery_of_a_range_whose_commit_failed_counts_once(fresh_broker, tmp_path, monkeypatch):
    from pipelines import warehouse

    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    msgs = binance_force_orders(300, seed=11)
    publish_raw_stream(msgs, kafka)
    settings = JobSettings(db=tmp_path / "r.duckdb", data_dir=tmp_path, kafka=kafka)
    real = warehouse.store_offsets

    def crash(*a, **k):
        raise OSError("simulated crash between the mart merge and the offset commit")

    monkeypatch.setattr(warehouse, "store_offsets", crash)
    with pytest.raises(OSError):
        run_load(settings, run_dq=False)
    monkeypatch.setattr(warehouse, "store_offsets", real)
    assert mart_liquidations(settings.db) == {}  # the merge rolled back with the failed commit
    run_load(settings, run_dq=False)  # the same range is delivered again
    run_load(settings, run_dq=False)
    assert mart_liquidations(settings.db) == expected_liquidations(msgs)


def _metric(port: int, name: str) -> float:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return -1
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return -1


#: bound of a wait on the job (a condition usually met in seconds; generous: CI machines are shared)
WAIT_S = 300.0


def _wait_for(cond, timeout: float, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


def test_analysts_query_while_the_job_runs_without_disturbing_it(fresh_broker, tmp_path):
    """Readers get the published snapshot while the job runs; a reader holding it open blocks nothing."""

    from pipelines import warehouse

    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    first, second = binance_force_orders(400, seed=21), binance_force_orders(400, seed=22, t0_ms=1_767_229_200_000)
    publish_raw_stream(first, kafka)
    db = tmp_path / "live.duckdb"
    from connectors.kafka.local_broker import free_port

    port = free_port()
    proc = _stream_proc(db, fresh_broker.bootstrap, "--snapshot-every", "0.5", metrics_port=port,
                        request_timeout_ms=30_000)  # no cycle may fail here: not even on a slow broker answer
    failure = None
    try:
        _wait_for(lambda: _metric(port, "liqstream_events_total") >= 400 and warehouse.snapshot_path(db).exists(),
                  WAIT_S, "400 events counted and a snapshot published")
        assert warehouse.writer_running(db) == proc.pid
        reader = warehouse.connect(db, read_only=True)  # held open across the job's next cycles
        n_before = reader.execute("SELECT sum(liq_count) FROM liquidations_1m").fetchone()[0]
        assert n_before == 400
        cli = subprocess.run([sys.executable, "-m", "pipelines.cli", "query", "--db", str(db), "--format", "csv",
                              "SELECT sum(liq_count) AS n FROM liquidations_1m"],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        assert cli.stdout.split() == ["n", "400"]
        publish_raw_stream(second, kafka)
        _wait_for(lambda: _metric(port, "liqstream_events_total") >= 800, WAIT_S, "800 events counted")
        assert _metric(port, "liqstream_cycles_failed_total") == 0
        reader.close()
        _wait_for(lambda: _snapshot_liquidations(db) == 800, WAIT_S, "a snapshot with all 800 liquidations")
    except AssertionError as exc:
        failure = exc
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=WAIT_S)
    if failure is not None:
        raise AssertionError(f"{failure}; the job's log ends with:\n{out[-4000:]}") from failure
    assert proc.returncode == 0, out[-2000:]
    assert warehouse.writer_running(db) is None
    assert mart_liquidations(db) == expected_liquidations(first + second)


def _snapshot_liquidations(db) -> int | None:
    """Liquidations in the readers' snapshot; None while it is being replaced."""
    import duckdb

    from pipelines import warehouse

    try:
        con = duckdb.connect(str(warehouse.snapshot_path(db)), read_only=True)
    except duckdb.Error:
        return None
    try:
        return con.execute("SELECT sum(liq_count) FROM liquidations_1m").fetchone()[0]
    finally:
        con.close()


def test_failed_cycles_are_not_idle_and_the_exit_status_says_the_job_was_behind(fresh_broker, tmp_path):
    """The database is locked by another writer: every cycle fails. --exit-when-idle must not take
    those cycles for idle ones (the job keeps retrying), and a job stopped then says it is behind."""
    from pipelines.jobs.stream import EXIT_BEHIND, StreamJob, StreamOptions

    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    publish_raw_stream(binance_force_orders(200, seed=4), kafka)
    db = tmp_path / "locked.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb, sys, time; c = duckdb.connect({str(db)!r}); "
                               "print('locked', flush=True); time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        job = StreamJob(JobSettings(db=db, data_dir=tmp_path, fetch_workers=1, kafka=kafka),
                        StreamOptions(interval_s=0.1, dq_every_s=3600, exit_when_idle=1, max_backoff_s=0.5))
        rc: list[int] = []
        runner = threading.Thread(target=lambda: rc.append(job.run()))
        runner.start()
        _wait_for(lambda: job.health.failed_cycles >= 3, WAIT_S, "three failed cycles")
        assert runner.is_alive() and job.health.cycles == 0  # still retrying: failures are not idleness
        job.request_stop()
        runner.join(timeout=120)
        assert rc == [EXIT_BEHIND]
    finally:
        holder.kill()
        holder.wait()


def test_a_reader_killed_in_a_big_cycle_loses_nothing_and_counts_nothing_twice(fresh_broker, tmp_path):
    """One of the job's reader processes dies in the middle of a chunk of its first (big) cycle
    (issue 16): the pool is replaced, the ranges read again, and the marts equal a clean load's."""
    from functools import partial

    from bench.data import SYNTH_START_US, in_time_order, publish_events, synth_tables
    from connectors.kafka.fetch import ParallelFetcher
    from pipelines.jobs.stream import StreamJob, StreamOptions
    from tests.helpers import fetch_chunk_dying, mart_differences, mart_rows

    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    n = 12_000
    publish_events(kafka, in_time_order(synth_tables(n, SYNTH_START_US, 600_000_000, seed=9)))
    deaths = tmp_path / "deaths"
    deaths.mkdir()
    # a big cycle for these readers (the job's own take >= 50k offsets), in many chunks: the death lands mid-cycle
    fetcher = ParallelFetcher(kafka, workers=2, chunk=1_000, min_offsets=n // 2)
    fetcher.task = partial(fetch_chunk_dying, str(deaths), 1)
    (tmp_path / "job").mkdir()
    settings = JobSettings(db=tmp_path / "job" / "marts.duckdb", data_dir=tmp_path / "job", kafka=kafka)
    job = StreamJob(settings, StreamOptions(interval_s=0.2, dq_every_s=3600, exit_when_idle=1), fetcher=fetcher)
    assert job.run() == 0
    assert len(list(deaths.iterdir())) == 1  # a reader did die
    assert job.health.failed_cycles == 0 and job.health.events_total == n

    (tmp_path / "clean").mkdir()
    clean = JobSettings(db=tmp_path / "clean" / "marts.duckdb", data_dir=tmp_path / "clean", kafka=kafka)
    assert run_load(clean, run_dq=False).events_in == n
    assert mart_differences(mart_rows(settings.db), mart_rows(clean.db)) == {}


def test_empty_cycles_that_leave_lag_are_not_idle(fresh_broker, tmp_path, monkeypatch):
    """The plan sees a log end short of the truth for a while (a broker whose ListOffsets lags its high
    watermark, its confirmation timed out on a loaded machine): those cycles read nothing, yet the lag
    probe sees messages left. They must not count as idle: the demo's job stopped on two of them with
    exit 5 and an event unread. The job reads on and exits 0 once it has caught up."""
    from pipelines.jobs import load
    from pipelines.jobs.stream import StreamJob, StreamOptions

    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    msgs = binance_force_orders(120, seed=13)
    publish_raw_stream(msgs, kafka)
    real = load.log_bounds
    short = {"plans": 0}

    def short_log_end(settings, topics):  # the first three plans see every log end one short
        bounds = real(settings, topics)
        short["plans"] += 1
        if short["plans"] > 3:
            return bounds
        return {tp: (begin, max(begin, end - 1)) for tp, (begin, end) in bounds.items()}

    monkeypatch.setattr(load, "log_bounds", short_log_end)
    settings = JobSettings(db=tmp_path / "lag.duckdb", data_dir=tmp_path, fetch_workers=1, kafka=kafka)
    # bounds_reuse_s 0: every plan asks the broker (this test is about the plan's own answers)
    job = StreamJob(settings, StreamOptions(interval_s=0.1, dq_every_s=3600, exit_when_idle=2, bounds_reuse_s=0))
    assert job.run() == 0
    assert short["plans"] > 3  # it planned again after the short ones
    assert mart_liquidations(settings.db) == expected_liquidations(msgs)


def test_empty_cycles_that_always_leave_lag_end_a_bounded_job_behind(fresh_broker, tmp_path, monkeypatch):
    """Messages the plan never gets to (here: every plan one short, forever) must not make a job run with
    --exit-when-idle spin forever: after stuck_after such cycles it stops and says it is behind."""
    from pipelines.jobs import load
    from pipelines.jobs.stream import EXIT_BEHIND, StreamJob, StreamOptions

    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    publish_raw_stream(binance_force_orders(60, seed=14), kafka)
    real = load.log_bounds
    monkeypatch.setattr(load, "log_bounds", lambda settings, topics: {
        tp: (begin, max(begin, end - 1)) for tp, (begin, end) in real(settings, topics).items()})
    settings = JobSettings(db=tmp_path / "stuck.duckdb", data_dir=tmp_path, fetch_workers=1, kafka=kafka)
    job = StreamJob(settings, StreamOptions(interval_s=0.05, dq_every_s=3600, exit_when_idle=2, stuck_after=4,
                                            bounds_reuse_s=0))
    assert job.run() == EXIT_BEHIND
    assert sum(job.health.lag.values()) > 0


def _failing_on_call(fn, n: int, message: str):
    """``fn`` wrapped to raise RuntimeError(message) on its n-th call only; ``.calls`` counts them."""
    def wrapper(*args, **kwargs):
        wrapper.calls += 1
        if wrapper.calls == n:
            raise RuntimeError(message)
        return fn(*args, **kwargs)
    wrapper.calls = 0
    return wrapper


@pytest.mark.parametrize("fetch_ahead", [1, 2])
def test_cycles_that_take_the_read_ahead_count_every_event_once(fresh_broker, tmp_path, monkeypatch, fetch_ahead):
    """ADR 043: a busy cycle's readers read the next cycle's ranges while it goes on (2: from the
    end of its fetch; 1: from its events commit); the next cycle takes them. Every event counts
    once, a cycle whose analytics failed after the read ahead started included (its events were
    committed: the read ahead starts from those offsets), and one whose commit failed after it
    started (2: the next cycle's committed offsets are not those: it reads its ranges itself)."""
    from connectors.kafka.fetch import FetchAhead
    from pipelines.jobs import load
    from pipelines.jobs.stream import StreamJob, StreamOptions

    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    messages = binance_force_orders(6000, seed=11)
    done = threading.Event()

    def produce() -> None:
        for i in range(0, len(messages), 200):
            publish_raw_stream(messages[i:i + 200], kafka)
            time.sleep(0.3)
        done.set()

    analytics_failing_once = _failing_on_call(load._phase_analytics, 2, "analytics failed once")
    commit_failing_once = _failing_on_call(load.warehouse.store_offsets, 3, "commit failed once")

    take = FetchAhead.take
    taken: list[bool] = []

    def counted_take(self, committed):
        got = take(self, committed)
        taken.append(got is not None)
        return got

    monkeypatch.setattr(FetchAhead, "take", counted_take)
    monkeypatch.setattr(load, "_phase_analytics", analytics_failing_once)
    monkeypatch.setattr(load.warehouse, "store_offsets", commit_failing_once)
    settings = JobSettings(db=tmp_path / "stream.duckdb", data_dir=tmp_path, kafka=kafka, fetch_ahead=fetch_ahead)
    assert settings.fetch_workers > 1
    job = StreamJob(settings, StreamOptions(interval_s=0.2, dq_every_s=3600, exit_when_idle=2, done=done.is_set))
    producer = threading.Thread(target=produce)
    producer.start()
    status = job.run()
    producer.join()
    assert status == 0
    assert job.health.failed_cycles == 2 and analytics_failing_once.calls > 2 and commit_failing_once.calls > 3  # both failed once
    assert sum(taken) >= 2  # the path under test ran (a read ahead finding nothing new is not taken)
    if fetch_ahead == 2:  # the read ahead started before the failed commit was not taken
        assert not all(taken)
    assert not list(tmp_path.glob("liqstream-ahead-*"))  # every read ahead's files removed
    assert mart_liquidations(settings.db) == expected_liquidations(messages)


@pytest.mark.parametrize("warm_up,gx_every,fresh", [("caught_up", 600, True), ("caught_up", 600, False),
                                                    ("start", 600, True), ("caught_up", 0, True)])
def test_great_expectations_loads_when_the_gate_needs_it(fresh_broker, tmp_path, monkeypatch, warm_up, gx_every,
                                                         fresh):
    """ADR 053: with gates DuckDB decides (dq_gx_every_s > 0) the job loads GX once a cycle left no
    lag and the job goes on ("caught_up"), unless a cycle's events make a suite fail in a way GX must
    validate (then right after that cycle's events commit, before its gate: a critical suite,
    tests/unit/test_dq_suites.py). A backlog older than the freshness limit fails only the freshness
    suite, which DuckDB decides (ADR 059): GX loads once caught up, as for a fresh one. "start", or
    GX at every gate, loads it at the start as before. The marts are the same."""
    from pipelines.jobs import load
    from pipelines.jobs import stream as stream_mod
    from pipelines.jobs.stream import StreamJob, StreamOptions

    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    # fresh: within the freshness suite's 300 s; else the helper's fixed past (a stale backlog)
    msgs = (binance_force_orders(120, seed=17, t0_ms=int(time.time() * 1000) - 90_000, span_s=60) if fresh
            else binance_force_orders(120, seed=17))
    publish_raw_stream(msgs, kafka)
    real = load.log_bounds
    plans = {"n": 0}

    def short_log_end(settings, topics):  # the first three plans see every log end one short: lag left
        bounds = real(settings, topics)
        plans["n"] += 1
        return bounds if plans["n"] > 3 else {tp: (b, max(b, e - 1)) for tp, (b, e) in bounds.items()}

    monkeypatch.setattr(load, "log_bounds", short_log_end)
    settings = JobSettings(db=tmp_path / "gx.duckdb", data_dir=tmp_path, fetch_workers=1, kafka=kafka,
                           dq_gx_every_s=gx_every, dq_gx_warm_up=warm_up)
    job = StreamJob(settings, StreamOptions(interval_s=0.1, dq_every_s=0, exit_when_idle=2, bounds_reuse_s=0))
    calls = []  # (plans made, cycles ended, lag) when the warm-up started
    monkeypatch.setattr(stream_mod.DataQuality, "warm_up", classmethod(
        lambda cls, suites=None: calls.append((plans["n"], job.health.cycles, sum(job.health.lag.values())))))
    assert job.run() == 0
    if warm_up == "start" or not gx_every:
        assert calls == [(0, 0, 0)]
    else:  # after the cycles that left lag (the first three plans), when one left none, stale or fresh
        assert len(calls) == 1 and calls[0][0] >= 4 and calls[0][1] >= 4 and calls[0][2] == 0, calls
    if not fresh:  # the stale backlog's first gate: the freshness failure, DuckDB's verdict (ADR 059)
        con = duckdb.connect(str(settings.db), read_only=True)
        engines = con.execute("SELECT DISTINCT success, json_extract_string(result, '$.engine') FROM dq_results "
                              "WHERE suite = 'bars_1m_freshness'").fetchall()
        con.close()
        assert (False, "duckdb") in engines, engines
    assert mart_liquidations(settings.db) == expected_liquidations(msgs)
