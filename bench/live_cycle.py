"""A live cycle of the stream job without the broker: everything a cycle does after its read, repeated.

    .venv/bin/python -m bench.analytics_cycle --make MART_DIR          # once: 40 minutes of history
    .venv/bin/python -m bench.live_cycle MART_DIR [--events 200000] [--rate 40000] [--cycles 8]
        [--dq-every 0] [--seed 11] [--json OUT] [--keep MART_AFTER.duckdb]

On a copy of the mart (``MART_DIR/stream.duckdb``, made by ``bench.analytics_cycle --make``), each
cycle is the next ``events / rate`` seconds of the alert-latency scenario's live feed
(``bench.alert_latency.CascadeScenario.background``: trades over the 32 instruments, open interest
per venue every 2 s, 0.1 % small liquidations; no shocks), written as the reader processes write a
fetch (one Arrow IPC file per event type and partition, batches of 50k rows, the Kafka positions
continuing the mart's committed offsets, 3 partitions by instrument); then
``pipelines.jobs.load.run_load`` runs the cycle as the stream job does (a kept database connection,
the open-minute watch, ``dq_gx_every_s`` from the settings), taking those files as a read ahead
(ADR 043), so its plan asks no broker and its fetch is 0. Arrow's memory pool is
``JobSettings.stream_arrow_pool``'s, as the stream job sets it. The cycles follow each other in event
time, so the watermark moves, the stored bars of the open minutes are merged and the dedupe's
committed keys grow as in a live run. ``--dq-every N``: the DQ gate at every Nth cycle (0: never;
the live job gates every 60 s).

Per cycle: the phases' wall seconds (``LoadResult.timings``: events = the events pass, commit =
the upserts, keys and offsets, analytics, dq), the cycle's wall and this process's CPU seconds.
What is not in the window: the read (the reader processes, the broker), the stream job's lag probe
and snapshot between cycles. The first cycle is reported apart (imports, the analytics graph's
first build). Run it with another checkout's code (``cd OTHER && /path/.venv/bin/python -m
bench.live_cycle ...``) for an A/B on the same mart; sample it with py-spy for a profile.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

PARTITIONS = 3
BATCH_ROWS = 50_000


class _Read:
    """A read ahead already done (``FetchAhead``'s ``take``/``discard``): this cycle's ranges and files."""

    def __init__(self, ranges: list, fetched: Any) -> None:
        self.ranges, self.fetched = ranges, fetched

    def take(self, committed: dict) -> tuple[list, Any] | None:
        return self.ranges, self.fetched

    def discard(self, wait: bool = True) -> None:
        pass


def cycle_files(sc: Any, seconds: range, rate: float, rng: Any, committed: dict[tuple[str, int], int],
                out_dir: Path) -> tuple[list, Any, dict[tuple[str, int], int]]:
    """The scenario's ``seconds`` at ``rate`` -> (ranges, Fetched, next offsets) as the readers write them."""
    import pyarrow as pa

    from connectors.kafka.fetch import Fetched
    from connectors.kafka.reader import OffsetRange
    from connectors.normalize import TOPICS
    from schemas.arrow import arrow_schema

    rows: dict[tuple[str, int], list[dict]] = {}
    for s in seconds:
        for et, r in sc.background(s, rate, rng, liq_share=0.001, with_oi=True):
            part = zlib.crc32(f"{r['exchange']}:{r['symbol']}".encode()) % PARTITIONS
            rows.setdefault((et, part), []).append(r)
    out_dir.mkdir(parents=True, exist_ok=True)
    files, ranges, n = [], [], 0
    nxt = dict(committed)
    for (et, part), recs in sorted(rows.items()):
        topic = TOPICS[et]
        start = committed.get((topic, part), 0)
        schema = arrow_schema(et, with_position=True)
        k = len(recs)
        for r in recs:
            r.setdefault("trade_id", None)
        table = pa.Table.from_pylist([{**r, "_topic": topic, "_partition": part, "_offset": start + i}
                                      for i, r in enumerate(recs)], schema=schema)
        path = out_dir / f"fetch-{topic}-{part}-{start}.arrow"
        with pa.ipc.new_file(str(path), schema) as w:
            for batch in table.to_batches(max_chunksize=BATCH_ROWS):
                w.write_batch(batch)
        files.append(str(path))
        ranges.append(OffsetRange(topic, part, start, start + k))
        nxt[(topic, part)] = start + k
        n += k
    return ranges, Fetched(files=files, records=n), nxt


def _rss_mb() -> int:
    """This process's resident set now (MB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20


def run(mart_dir: Path, events: int, rate: float, cycles: int, dq_every: int, seed: int,
        keep: Path | None = None) -> dict:
    import numpy as np

    from bench.alert_latency import CascadeScenario, bench_venues
    from bench.data import _BASES
    from pipelines import warehouse
    from pipelines.arrow_pool import use_arrow_pool
    from pipelines.jobs import load
    from pipelines.jobs.load import LOAD_TOPICS, run_load
    from pipelines.settings import JobSettings

    seconds_per_cycle = max(1, round(events / rate))
    out: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="live-cycle-") as d:
        d = Path(d)
        db = d / "stream.duckdb"
        shutil.copy(mart_dir / "stream.duckdb", db)
        settings = JobSettings.from_env(db=db, data_dir=d / "data")
        settings.data_dir.mkdir()
        use_arrow_pool(settings.stream_arrow_pool, "LIQSTREAM_STREAM_ARROW_POOL")  # as StreamJob.run does
        keeper = warehouse.connect(db)  # the stream job keeps the database open (stream.py)
        (cid,) = keeper.execute("SELECT any_value(cluster_id) FROM kafka_offsets").fetchone()
        wm = warehouse.get_state(keeper, "watermark_us")
        load.cluster_id = lambda _kafka: cid  # no broker: the mart's cluster
        start_us = (wm // 1_000_000 + 1) * 1_000_000
        sc = CascadeScenario(start_us=start_us, seconds=(cycles + 1) * seconds_per_cycle + 2, venues=bench_venues(),
                             prices=dict(_BASES), shocks=[], seed=seed)
        rng = np.random.default_rng(seed)
        for i in range(cycles + 1):
            committed = warehouse.committed_offsets(keeper, cid, LOAD_TOPICS)
            secs = range(i * seconds_per_cycle, (i + 1) * seconds_per_cycle)
            ranges, fetched, _ = cycle_files(sc, secs, rate, rng, committed, d / f"fetch-{i}")
            load_avg = os.getloadavg()[0]
            w0, c0 = time.perf_counter(), time.process_time()
            res = run_load(settings, run_dq=bool(dq_every) and i % dq_every == 0, open_minute_watch=True,
                           dq_gx_every_s=settings.dq_gx_every_s, ahead=_Read(ranges, fetched))
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            shutil.rmtree(d / f"fetch-{i}", ignore_errors=True)
            row = {"cycle": i, "events": res.events_in, "status": res.status, "wall_s": round(wall, 3),
                   "cpu_s": round(cpu, 3), "load": round(load_avg, 1), "rss_mb": _rss_mb(),
                   "timings": {k: round(v, 3) for k, v in res.timings.items()}}
            out.append(row)
            print(json.dumps(row), flush=True)
        keeper.close()
        if keep is not None:  # the mart after the cycles (an A/B compares them)
            shutil.copy(db, keep)
    later = out[1:]
    phases = sorted({k for r in later for k in r["timings"]})
    import pyarrow as pa

    return {"events_per_cycle": events, "rate": rate, "cycles": cycles, "first": out[0],
            "arrow_pool": pa.default_memory_pool().backend_name, "max_rss_mb": max(r["rss_mb"] for r in out),
            "wall_median_s": statistics.median(r["wall_s"] for r in later),
            "cpu_median_s": statistics.median(r["cpu_s"] for r in later),
            "phase_median_s": {p: round(statistics.median(r["timings"].get(p, 0.0) for r in later), 3) for p in phases},
            "per_cycle": out}


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - manual runs
    import logging

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mart", type=Path, help="a folder made by bench.analytics_cycle --make")
    ap.add_argument("--events", type=int, default=200_000, help="events a cycle (default 200000)")
    ap.add_argument("--rate", type=float, default=40_000.0, help="the live feed's events/s (default 40000)")
    ap.add_argument("--cycles", type=int, default=8, help="cycles after the first (default 8)")
    ap.add_argument("--dq-every", type=int, default=0, help="the DQ gate every Nth cycle (0: never)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--keep", type=Path, help="copy the mart after the cycles here")
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)
    res = run(args.mart, args.events, args.rate, args.cycles, args.dq_every, args.seed, args.keep)
    summary = {k: v for k, v in res.items() if k != "per_cycle"}
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
