"""End-to-end streaming: a producer publishing at a fixed rate, the `liqstream stream` job's cycles, latency.

For each input rate a fresh local broker (``LocalBroker``, Tansu) and a fresh
DuckDB file are used. The stream job (``pipelines.jobs.stream.StreamJob``, the
code behind ``liqstream stream``) runs in a thread of this process; once it has
completed an empty cycle (imports and GX warmed up), a producer *process*
publishes synthetic normalized events with ``EventProducer`` at the stated rate,
pacing itself every 10 ms. Each event's ``ingest_time`` (and ``event_time``) is
its produce time, so after the run

    latency(event) = finished_at of the cycle whose offset range holds it - its produce time

is computed for every event by joining the archive the cycles wrote (it keeps
each event's Kafka position and ingest_time) with ``pipeline_runs.offsets``.
A rate is *sustained* when the producer reached >= 95% of it, the job drained
the topics within 15 s after the producer stopped, and the p95 latency is <= 5 s.
"""

from __future__ import annotations

import json
import multiprocessing as mp
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
        runs = con.execute("SELECT run_id, epoch_us(finished_at), offsets, events_in, duration_s FROM pipeline_runs "
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
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        ensure_topics(kafka)
        (workdir / "data").mkdir(exist_ok=True)
        yield broker, kafka, JobSettings(db=workdir / "stream.duckdb", data_dir=workdir / "data", kafka=kafka)
    finally:
        broker.stop()


def run_rate(rate: float, seconds: float, workdir: Path, seed: int = 11, interval_s: float = 0.5) -> dict[str, Any]:
    """One input rate through a fresh broker and a fresh mart; latency, throughput, sustained or not."""
    from pipelines.jobs.stream import StreamJob, StreamOptions

    with _fresh_broker_and_mart(workdir) as (broker, kafka, settings):
        job = StreamJob(settings, StreamOptions(interval_s=interval_s, dq_every_s=60.0))
        errors: list[BaseException] = []

        def run_job() -> None:
            try:
                job.run()
            except BaseException as exc:  # reported below
                errors.append(exc)

        th = threading.Thread(target=run_job, name="stream-job", daemon=True)
        th.start()
        deadline = time.monotonic() + 120
        while job.health.cycles < 1 and time.monotonic() < deadline and not errors:
            time.sleep(0.1)
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        # one kafka-python producer tops out near 10k msg/s on an idle core: split higher rates
        n_prod = max(1, -(-int(rate) // PRODUCER_RATE))
        procs = [ctx.Process(target=_producer_main, args=(broker.bootstrap, rate / n_prod, seconds, seed + i, q))
                 for i in range(n_prod)]
        t_start = time.time()
        for pr in procs:
            pr.start()
        parts = [q.get(timeout=seconds + 180) for _ in procs]
        for pr in procs:
            pr.join(timeout=30)
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


def run_catch_up(events: int, workdir: Path, seed: int = 13, layout: str = "bulk") -> dict[str, Any]:
    """The job's own rate, against the reference reader's, on the same topics.

    A live step cannot show it: the job never gets more than the producer sends, and here the
    producers, the broker and the job share two cores. So a backlog of ``events`` (10 minutes of
    synthetic events, in time order) is published first, with nothing reading; then the raw
    kafka-python + fastavro loop reads it all (``stages.raw_consume_decode``), and then the stream
    job (warmed up by one cycle on the empty topics, as in :func:`run_rate`) drains it into the
    marts, its DQ gate included, until a cycle finds nothing new. Both rates are events over
    wall seconds."""
    import duckdb

    from bench.data import in_time_order, publish_events, synth_tables
    from bench.stages import raw_consume_decode
    from connectors.kafka.reader import log_bounds, plan_ranges
    from pipelines.jobs.load import LOAD_TOPICS, run_load
    from pipelines.jobs.stream import StreamJob, StreamOptions

    with _fresh_broker_and_mart(workdir) as (broker, kafka, settings):
        run_load(settings)  # warm-up on empty topics: imports, GX, the mart's migrations
        start_us = int(time.time() * 1_000_000) - 600_000_000
        tables = synth_tables(events, start_us, 600_000_000, seed)
        t = time.perf_counter()
        publish_events(kafka, in_time_order(tables), layout)
        produce_s = time.perf_counter() - t
        ranges = plan_ranges(log_bounds(kafka, [t for t in LOAD_TOPICS if not t.endswith(".dlq")]), {})
        raw = raw_consume_decode(broker.bootstrap, ranges, events)
        job = StreamJob(settings, StreamOptions(interval_s=0.5, dq_every_s=60.0, exit_when_idle=1))
        t0 = time.time()
        job.run()
        con = duckdb.connect(str(settings.db), read_only=True)
        try:
            n, last, cycles = con.execute(
                "SELECT sum(events_in), epoch_us(max(finished_at)), count(*) FROM pipeline_runs "
                "WHERE job = 'load' AND events_in > 0 AND finished_at >= make_timestamp(?::BIGINT)",
                [int(t0 * 1_000_000)]).fetchone()
        finally:
            con.close()
        seconds = last / 1e6 - t0
        return {"layout": layout, "events": events, "produce_per_s": events / produce_s, "raw_consume_decode_per_s": raw,
                "job_events": int(n or 0), "job_seconds": seconds, "job_cycles": int(cycles),
                "job_events_per_s": (n or 0) / seconds if seconds > 0 else None,
                "ratio_to_raw": (n or 0) / seconds / raw if seconds > 0 and raw else None}


def stage_streaming(rates: list[float], seconds: float, workdir: Path | None = None,
                    catch_up_events: int = 0) -> dict[str, Any]:
    """Step the input rate up; report each step and the highest sustained rate; then the job's
    catch-up rate against the raw reader's (:func:`run_catch_up`)."""
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        base = workdir or Path(tmp)
        catch_up = catch_up_paced = None
        if catch_up_events:
            # the same backlog laid out as `replay FILE` leaves it (bulk) and as a live feed does (paced)
            catch_up = run_catch_up(catch_up_events, base / "catch-up")
            catch_up_paced = run_catch_up(catch_up_events, base / "catch-up-paced", layout="paced")
            for c in (catch_up, catch_up_paced):
                print(f"  streaming catch-up of {catch_up_events:,} events ({c['layout']}): job "
                      f"{c['job_events_per_s']:,.0f}/s, raw kafka-python + fastavro loop "
                      f"{c['raw_consume_decode_per_s']:,.0f}/s ({c['ratio_to_raw']:.2f})", flush=True)
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
