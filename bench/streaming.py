"""End-to-end streaming: a producer publishing at a fixed rate, the `liqstream stream` job's cycles, latency.

For each input rate a fresh local broker (``LocalBroker``, Tansu) and a fresh
DuckDB file are used. The stream job (``pipelines.jobs.stream.StreamJob``, the
code behind ``liqstream stream``) runs in a thread of this process; once it has
completed an empty cycle (imports and GX warmed up), a producer *process*
publishes synthetic normalized events with ``EventProducer`` at the stated rate,
pacing itself every 10 ms. Each event's ``ingest_time`` (and ``event_time``) is
its produce time, so after the run

    latency(event) = end of the cycle whose offset range holds it - its produce time

where a cycle ends when ``run_load`` returns: its events, its analytics and (on the cycles the
job's DQ cadence picks, every ``dq_every_s`` = 60 s) its DQ gate committed. ``finished_at`` in
``pipeline_runs`` is earlier (the events commit), so the end is ``started_at + duration_s``.

is computed for every event by joining the archive the cycles wrote (it keeps
each event's Kafka position and ingest_time) with ``pipeline_runs.offsets``.
A rate is *sustained* when the producer reached >= 95% of it, the job drained
the topics within 15 s after the producer stopped, and the p95 latency is <= 5 s.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

P95_LIMIT_S = 5.0
#: input rate given to one producer process
PRODUCER_RATE = 10_000
#: the end of a cycle's whole work (events, analytics, DQ gate if run) in pipeline_runs, epoch µs:
#: duration_s is written when run_load returns; finished_at is the events commit, before the rest
CYCLE_DONE_US = "epoch_us(started_at) + CAST(round(duration_s * 1e6) AS BIGINT)"


def _producer_main(bootstrap: str, rate: float, seconds: float, seed: int, result_q) -> None:
    """Child process: publish ``rate`` events/s for ``seconds``; report what was sent."""
    from bench.data import SYNTH_START_US, synth_tables
    from connectors.config import KafkaSettings
    from connectors.kafka.producer import EventProducer

    tables = synth_tables(50_000, SYNTH_START_US, 60_000_000, seed)
    pool = [(et, r) for et, t in tables.items() for r in t.drop_columns(["_topic", "_partition", "_offset"]).to_pylist()]
    import random

    random.Random(seed).shuffle(pool)
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    sent = 0
    with EventProducer(kafka) as producer:
        encode, send = producer.encode_event, producer.send_encoded
        t0 = time.time()
        end = t0 + seconds
        i = 0
        while True:
            now = time.time()
            if now >= end:
                break
            due = int((now - t0) * rate) - sent
            now_us = int(now * 1_000_000)
            for _ in range(due):
                et, rec = pool[i]
                i = (i + 1) % len(pool)
                rec["event_time"] = rec["ingest_time"] = now_us
                send(*encode(et, rec))
            sent += max(due, 0)
            time.sleep(0.01)
        producer.flush()
        elapsed = time.time() - t0
    result_q.put({"sent": sent, "seconds": elapsed, "rate": sent / elapsed})


def latencies(db: Path, archive: Path) -> dict[str, Any]:
    """Event-to-mart latency quantiles (seconds) from the cycles' ranges and the archived events."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        # a cycle's work ends when run_load returns (analytics and, when the cadence runs it, the DQ
        # gate committed): started_at + duration_s; finished_at is the events commit, before both
        runs = con.execute(f"SELECT run_id, {CYCLE_DONE_US}, offsets, events_in, duration_s FROM pipeline_runs "
                           "WHERE job = 'load' AND status IN ('ok', 'dq_failed') ORDER BY finished_at").fetchall()
    finally:
        con.close()
    ranges = [(t["topic"], t["partition"], t["start"], t["end"], fin)
              for _, fin, offs, _, _ in runs for t in json.loads(offs or "[]")]
    files = [str(p) for p in archive.rglob("*.parquet")]
    if not ranges or not files:
        return {"events": 0, "cycles": len(runs)}
    mem = duckdb.connect()
    try:
        mem.execute("CREATE TABLE r(topic VARCHAR, part INT, s BIGINT, e BIGINT, fin BIGINT)")
        mem.executemany("INSERT INTO r VALUES (?, ?, ?, ?, ?)", ranges)
        q = mem.execute(
            "WITH ev AS (SELECT DISTINCT _topic, _partition, _offset, ingest_time "
            "            FROM read_parquet(?, union_by_name=true)), "
            "lat AS (SELECT (r.fin - ev.ingest_time) / 1e6 AS s FROM ev JOIN r ON ev._topic = r.topic "
            "        AND ev._partition = r.part AND ev._offset >= r.s AND ev._offset < r.e) "
            "SELECT count(*), quantile_cont(s, 0.5), quantile_cont(s, 0.95), quantile_cont(s, 0.99), max(s) FROM lat",
            [files]).fetchone()
    finally:
        mem.close()
    busy = [r for r in runs if r[3]]
    return {"events": int(q[0]), "p50_s": q[1], "p95_s": q[2], "p99_s": q[3], "max_s": q[4], "cycles": len(busy),
            "mean_cycle_s": sum(r[4] or 0 for r in busy) / len(busy) if busy else None,
            "max_cycle_events": max((r[3] for r in busy), default=0)}


@contextmanager
def _fresh_broker_and_mart(workdir: Path) -> Iterator[tuple[Any, Any, Any]]:
    """A fresh local broker with the topics, and job settings on a fresh mart under ``workdir``."""
    from connectors.config import KafkaSettings
    from connectors.kafka.local_broker import LocalBroker, free_port
    from connectors.kafka.topics import ensure_topics
    from pipelines.settings import JobSettings

    workdir.mkdir(parents=True, exist_ok=True)
    broker = LocalBroker(port=free_port(), run_dir=workdir / "broker").start()
    try:
        # the KAFKA_* settings from the environment too (KAFKA_READER_BATCH_PARSE=0, ...): before, only
        # KAFKA_READER_CLIENT reached the job here (a default read from the environment)
        kafka = KafkaSettings.from_env(bootstrap_servers=broker.bootstrap)
        ensure_topics(kafka)
        (workdir / "data").mkdir(exist_ok=True)
        # the job's own settings from the environment (LIQSTREAM_FETCH_MIN_OFFSETS, ...), on this broker and mart
        yield broker, kafka, JobSettings.from_env(db=workdir / "stream.duckdb", data_dir=workdir / "data", kafka=kafka)
    finally:
        broker.stop()


def job_in_thread(job: Any) -> tuple[threading.Thread, list[BaseException]]:
    """Start ``job.run()`` in a daemon thread; what it raised lands in the returned list."""
    errors: list[BaseException] = []

    def run_job() -> None:
        try:
            job.run()
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    th = threading.Thread(target=run_job, name="stream-job", daemon=True)
    th.start()
    return th, errors


def run_rate(rate: float, seconds: float, workdir: Path, seed: int = 11, interval_s: float = 0.5) -> dict[str, Any]:
    """One input rate through a fresh broker and a fresh mart; latency, throughput, sustained or not."""
    from bench.data import run_producers
    from pipelines.jobs.stream import StreamJob, StreamOptions

    with _fresh_broker_and_mart(workdir) as (broker, kafka, settings):
        job = StreamJob(settings, StreamOptions(interval_s=interval_s, dq_every_s=60.0))
        th, errors = job_in_thread(job)
        deadline = time.monotonic() + 120
        while job.health.cycles < 1 and time.monotonic() < deadline and not errors:
            time.sleep(0.1)
        # one kafka-python producer tops out near 10k msg/s on an idle core: split higher rates
        n_prod = max(1, -(-int(rate) // PRODUCER_RATE))
        t_start = time.time()
        parts = run_producers(_producer_main, [(broker.bootstrap, rate / n_prod, seconds, seed + i)
                                               for i in range(n_prod)], timeout_s=seconds + 180)
        t_stop = time.time()
        produced = {"sent": sum(x["sent"] for x in parts), "rate": sum(x["rate"] for x in parts),
                    "producers": n_prod}
        drained_s = None
        while time.time() - t_stop < 60 and not errors:
            h = job.health
            if h.last_cycle_end > t_stop and sum(h.lag.values()) == 0:
                drained_s = time.time() - t_stop
                break
            time.sleep(0.25)
        job.request_stop()
        th.join(timeout=120)
        if errors:
            raise errors[0]
        lat = latencies(settings.db, settings.data_dir / "archive")
        end_to_end_s = t_stop - t_start + (drained_s or 0)
        out = {
            "target_rate": rate, "seconds": seconds, "produced": produced["sent"], "producers": produced["producers"],
            "achieved_input_rate": produced["rate"], "drained_after_s": drained_s,
            "throughput_per_s": lat["events"] / end_to_end_s if end_to_end_s else None,
            "failed_cycles": job.health.failed_cycles, **lat,
        }
        out["sustained"] = bool(
            drained_s is not None and drained_s <= 15 and lat.get("p95_s") is not None
            and lat["p95_s"] <= P95_LIMIT_S and produced["rate"] >= 0.95 * rate
            and lat["events"] == produced["sent"])
        return out


def _drain(settings: Any, fetcher: Any = None) -> dict[str, Any]:
    """One fresh ``StreamJob`` drains the topics until a cycle finds nothing new; the window is
    ``run()``'s start -> the last busy cycle's whole work done (events, analytics, DQ gate; the gate
    runs every cycle here, ``dq_every_s=0``), read from ``pipeline_runs``; ``commit_*`` stops at
    that cycle's events commit (``finished_at``) instead. ``phases``: the busy cycles' phase seconds."""
    import duckdb

    from pipelines.jobs.stream import StreamJob, StreamOptions

    job = StreamJob(settings, StreamOptions(interval_s=0.5, dq_every_s=0.0, exit_when_idle=1), fetcher=fetcher)
    t0 = time.time()
    job.run()
    con = duckdb.connect(str(settings.db), read_only=True)
    try:
        n, done, committed, cycles = con.execute(
            f"SELECT sum(events_in), max({CYCLE_DONE_US}), epoch_us(max(finished_at)), count(*) FROM pipeline_runs "
            "WHERE job = 'load' AND events_in > 0 AND finished_at >= make_timestamp(?::BIGINT)",
            [int(t0 * 1_000_000)]).fetchone()
    finally:
        con.close()
    n = int(n or 0)
    seconds, commit_s = done / 1e6 - t0, committed / 1e6 - t0
    phases: dict[str, float] = {}
    for c in job.recent_cycles:
        if c["events"]:
            for k, v in c["timings"].items():
                phases[k] = phases.get(k, 0.0) + v
    return {"events": n, "seconds": seconds, "cycles": int(cycles), "events_per_s": n / seconds if seconds > 0 else None,
            "commit_seconds": commit_s, "events_commit_per_s": n / commit_s if commit_s > 0 else None,
            "phases": {k: round(v, 3) for k, v in phases.items()},
            "events_pass": sorted({c["events_pass"] for c in job.recent_cycles if c["events"]})}


#: what each catch-up window holds (bench/results.json carries it beside the figures)
CATCH_UP_WINDOWS = {
    "cold": "a fresh StreamJob in a process that has run one empty cycle (Beam and the mart's migrations "
            "imported): StreamJob.run() start -> the last busy cycle's DQ gate done. Inside: the reader "
            "processes' spawn and connect, the plan, fetch, events phase, commit, analytics, DQ gate of "
            "every cycle; Great Expectations' import only if a gate needs GX (a failing critical suite: the "
            "backlog's stale freshness is DuckDB's verdict, ADR 059; GX loads once the job is caught up).",
    "warm": "the same process after the cold run, a second backlog of the same size (later event times): a "
            "new StreamJob with reader processes started and connected before the clock, GX loaded; "
            "StreamJob.run() start -> the last busy cycle's DQ gate done. Inside: plan, fetch, events phase, "
            "commit (merging the minutes the cold run stored), analytics, DQ gate of every cycle.",
    "peers": "the raw loops: first fetch -> last record decoded; Bytewax: the flow's start -> its last bar in "
             "memory (nothing written); all on the cold backlog, before the job.",
}


def run_catch_up(events: int, workdir: Path, seed: int = 13, layout: str = "bulk",
                 peers: bool = False, warm: bool = True) -> dict[str, Any]:
    """The job's own rate, against the peers' on the same topics.

    A live step cannot show it: the job never gets more than the producer sends, and here the
    producers, the broker and the job share two cores. So a backlog of ``events`` (10 minutes of
    synthetic events, in time order) is published first, with nothing reading; then the peers read
    it all, one after the other: the raw kafka-python + fastavro loop (``stages.raw_consume_decode``)
    and, with ``peers`` (``bench.peers``, the ``.[bench]`` extra), the raw confluent-kafka +
    fastavro loop and a Bytewax dataflow building the same bars (checked equal to the job's
    ``bars_1m``). Then the stream job drains it (a fresh ``StreamJob``: its reader processes start
    inside the window; Great Expectations loads once it is caught up, the backlog's stale freshness
    being DuckDB's verdict, ADR 059) until a cycle finds nothing new: the *cold* window. With ``warm``, a second backlog of the same size (the next 10 minutes)
    is published and drained by a new ``StreamJob`` whose readers were started before the clock:
    the *warm* window (:data:`CATCH_UP_WINDOWS` says what each holds).

    Figures (events over wall seconds): ``job_events_per_s`` (cold, to the last cycle's DQ gate
    done: events, analytics and gate committed), ``job_events_commit_per_s`` (cold, to that
    cycle's events commit only: the figure the bench reported before issue 21), ``warm`` (the same
    for the warm window, ``ratio_to_best_peer`` against the cold backlog's peers)."""
    from bench.data import in_time_order, publish_events, synth_tables
    from bench.stages import raw_consume_decode
    from connectors.kafka.fetch import ParallelFetcher
    from connectors.kafka.reader import OffsetRange, log_bounds, plan_ranges
    from pipelines.jobs.load import LOAD_TOPICS, run_load

    span_us = 600_000_000
    with _fresh_broker_and_mart(workdir) as (broker, kafka, settings):
        run_load(settings)  # warm-up on empty topics: Beam's imports, the mart's migrations
        start_us = int(time.time() * 1_000_000) - 2 * span_us
        tables = synth_tables(events, start_us, span_us, seed)
        t = time.perf_counter()
        publish_events(kafka, in_time_order(tables), layout)
        produce_s = time.perf_counter() - t
        topics = [t for t in LOAD_TOPICS if not t.endswith(".dlq")]
        ranges = plan_ranges(log_bounds(kafka, topics), {})
        raw = raw_consume_decode(broker.bootstrap, ranges, events)
        peer: dict[str, Any] = {}
        if peers:
            from bench import peers as pr

            peer["confluent_kafka_per_s"] = pr.confluent_consume_decode(broker.bootstrap, ranges, events)
            bw = pr.bytewax_bars(broker.bootstrap, topics)
            peer["bytewax"] = {k: v for k, v in bw.items() if k != "bars"}
        load = os.getloadavg()[0]
        cold = _drain(settings)
        if peers:
            peer["bytewax"]["bars_check"] = pr.compare_bars(settings.db, bw["bars"])
        cold["load_average"] = [load, os.getloadavg()[0]]
        rates = {"kafka-python + fastavro": raw, "confluent-kafka + fastavro": peer.get("confluent_kafka_per_s"),
                 "bytewax": (peer.get("bytewax") or {}).get("events_per_s")}
        best = max((k for k, v in rates.items() if v), key=lambda k: rates[k])
        hot = None
        if warm:
            publish_events(kafka, in_time_order(synth_tables(events, start_us + span_us, span_us, seed + 1)), layout)
            fetcher = ParallelFetcher(settings.kafka, settings.fetch_workers)
            # the readers spawned, imported and connected before the clock: a few offsets already read
            fetcher.fetch([OffsetRange(r.topic, r.partition, r.start, min(r.end, r.start + 100)) for r in ranges],
                          workdir / "readers-warm-up")
            load = os.getloadavg()[0]
            hot = _drain(settings, fetcher)
            hot["load_average"] = [load, os.getloadavg()[0]]
            hot["ratio_to_best_peer"] = hot["events_per_s"] / rates[best] if hot["events_per_s"] else None
        rate = cold["events_per_s"]
        return {"layout": layout, "events": events, "produce_per_s": events / produce_s, "raw_consume_decode_per_s": raw,
                **peer, "job_events": cold["events"], "job_seconds": cold["seconds"], "job_cycles": cold["cycles"],
                "job_events_per_s": rate, "job_events_commit_per_s": cold["events_commit_per_s"],
                "ratio_to_raw": rate / raw if rate and raw else None,
                "best_peer": best, "best_peer_per_s": rates[best],
                "ratio_to_best_peer": rate / rates[best] if rate else None,
                "cold": cold, "warm": hot, "windows": CATCH_UP_WINDOWS}


def stage_streaming(rates: list[float], seconds: float, workdir: Path | None = None,
                    catch_up_events: int = 0, peers: bool = False) -> dict[str, Any]:
    """Step the input rate up; report each step and the highest sustained rate; then the job's
    catch-up rate against the raw reader's (:func:`run_catch_up`)."""
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        base = workdir or Path(tmp)
        catch_up = catch_up_paced = None
        if catch_up_events:
            # the same backlog laid out as `replay FILE` leaves it (bulk) and as a live feed does (paced)
            catch_up = run_catch_up(catch_up_events, base / "catch-up", peers=peers)
            catch_up_paced = run_catch_up(catch_up_events, base / "catch-up-paced", layout="paced", warm=False)
            for c in (catch_up, catch_up_paced):
                w = c.get("warm")
                print(f"  streaming catch-up of {catch_up_events:,} events ({c['layout']}): job cold "
                      f"{c['job_events_per_s']:,.0f}/s to its last gate ({c['job_events_commit_per_s']:,.0f}/s to "
                      f"its events commit)" + (f", warm {w['events_per_s']:,.0f}/s ({w['ratio_to_best_peer']:.2f})"
                                               if w else "")
                      + f", best peer {c['best_peer']} {c['best_peer_per_s']:,.0f}/s ({c['ratio_to_best_peer']:.2f})",
                      flush=True)
        steps = []
        for rate in rates:
            res = run_rate(rate, seconds, base / f"rate-{int(rate)}")
            steps.append(res)
            print(f"  streaming {rate:,.0f}/s: achieved {res['achieved_input_rate']:,.0f}/s, "
                  f"p95 {res.get('p95_s') or float('nan'):.2f}s, sustained={res['sustained']}", flush=True)
            if not res["sustained"] and res["achieved_input_rate"] < 0.95 * rate:
                break  # the producer itself is the limit: higher steps would say nothing new
    sustained = [s for s in steps if s["sustained"]]
    best = max(sustained, key=lambda s: s["target_rate"]) if sustained else None
    return {"steps": steps, "max_sustained_rate": best["target_rate"] if best else 0.0,
            "at_max": best or (steps[-1] if steps else None), "catch_up": catch_up,
            "catch_up_paced": catch_up_paced}
