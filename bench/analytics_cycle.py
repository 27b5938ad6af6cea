"""A live cycle's analytics phase alone, repeated on one mart (issue 21, ADR 043).

    .venv/bin/python -m bench.analytics_cycle --make DIR [--minutes 40] [--rate 20]
    .venv/bin/python -m bench.analytics_cycle --time DIR [--cycles 20]

``--make``: a fresh local broker; ``--minutes`` of the alert-latency scenario's history (its background at
``--rate`` events/s, open interest every 10 s: bench.alert_latency) are published and drained by a
``StreamJob`` into ``DIR/stream.duckdb``; the broker then stops. ``--time``: on a copy of that
mart, ``--cycles`` analytics phases as a live cycle runs them (``pipelines.jobs.load._phase_analytics``,
the open-minute watch on), each after marking the mart's last minute touched (a live cycle's
``analytics_from_us``). Per cycle: wall seconds and the process's CPU seconds (under load, CPU
time moves less than wall time). The first cycle is reported apart (imports, first graph).

``LIQSTREAM_ANALYTICS_GRAPH_REUSE=0`` times a fresh Beam pipeline per cycle instead of the kept
graph (ADR 045); the first cycle is the one that builds and fuses the kept graph.

Run ``--time`` with another checkout's code (``cd /tmp/main-src && /path/.venv/bin/python -m
bench.analytics_cycle --time DIR``) for an A/B on the same mart.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def make(workdir: Path, minutes: int, rate: float, seed: int = 5) -> None:  # pragma: no cover - manual runs
    import numpy as np

    from bench.alert_latency import CascadeScenario, bench_venues
    from bench.data import _BASES, publish_events
    from bench.streaming import _fresh_broker_and_mart
    from pipelines.jobs.stream import StreamJob, StreamOptions
    from pipelines.transforms.config import MINUTE_US

    with _fresh_broker_and_mart(workdir) as (_broker, kafka, settings):
        start_us = (int(time.time() * 1e6) // MINUTE_US - minutes) * MINUTE_US
        sc = CascadeScenario(start_us=start_us, seconds=minutes * 60, venues=bench_venues(), prices=dict(_BASES),
                             shocks=[], seed=seed)
        rng = np.random.default_rng(seed)
        publish_events(kafka, ((et, r) for s in range(minutes * 60) for et, r in sc.background(s, rate, rng, oi_every_s=10)))
        StreamJob(settings, StreamOptions(interval_s=0.2, dq_every_s=0.0, exit_when_idle=1)).run()


def timed_cycles(workdir: Path, cycles: int) -> dict:  # pragma: no cover - manual runs
    from pipelines import warehouse
    from pipelines.jobs import load
    from pipelines.settings import JobSettings
    from pipelines.transforms.config import AnalyticsConfig

    config = AnalyticsConfig.from_env()
    with tempfile.TemporaryDirectory(prefix="analytics-cycle-") as d:
        db = Path(d) / "stream.duckdb"
        shutil.copy(workdir / "stream.duckdb", db)
        settings = JobSettings.from_env(db=db, data_dir=Path(d))
        con = warehouse.connect(db)
        (last,) = con.execute("SELECT epoch_us(max(minute_ts)) FROM bars_1m").fetchone()
        walls, cpus, rows = [], [], []
        for i in range(cycles + 1):
            warehouse.set_state(con, "analytics_from_us", int(last))
            tmp = Path(d) / f"cycle-{i}"
            w0, c0 = time.perf_counter(), time.process_time()
            n = load._phase_analytics(con, settings, config, int(last), tmp, f"bench-{i}", open_minute_watch=True)
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
            rows.append(n)
            shutil.rmtree(tmp, ignore_errors=True)
        con.close()
    return {"first_wall_s": round(walls[0], 3), "cycles": cycles,
            "wall_median_s": round(statistics.median(walls[1:]), 3), "wall_min_s": round(min(walls[1:]), 3),
            "cpu_median_s": round(statistics.median(cpus[1:]), 3), "cpu_min_s": round(min(cpus[1:]), 3),
            "rows_per_cycle": sorted(set(rows[1:])), "load": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - manual runs
    import logging

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--make", type=Path)
    ap.add_argument("--time", type=Path)
    ap.add_argument("--minutes", type=int, default=40)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--cycles", type=int, default=20)
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)
    if args.make:
        make(args.make, args.minutes, args.rate)
    if args.time:
        print(json.dumps(timed_cycles(args.time, args.cycles)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
