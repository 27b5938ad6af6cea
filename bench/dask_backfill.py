"""The archive backfill on Beam's Dask runner with 1 and 2 workers beside the local runner (ADR 017).

Same synthetic archive for all three. The local runner runs through ``bench.backfill`` (a child
process, its PSS sampled with its forked day workers); each Dask run starts a
``distributed.LocalCluster`` of N single-threaded worker processes and samples every worker's PSS
every 0.2 s (``peak_worker_pss_mb``: the largest of them). Wall time is the whole backfill
(cluster start excluded: a scheduled backfill meets a running cluster), GX gate off, so the
figures compare the event and analytics pipelines plus the client's DuckDB replace.

    .venv/bin/python -m bench.dask_backfill [EVENTS DAYS]
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from bench import data
from bench.backfill import PeakSampler, run_backfill_measured


def _dask_run(archive_root: Path, db: Path, start: date, end: date, workers: int) -> dict[str, Any]:
    from distributed import Client, LocalCluster

    from pipelines.jobs.backfill import run_backfill
    from pipelines.settings import JobSettings

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as c, \
            Client(c.scheduler_address) as client:
        pids = list(client.run(os.getpid).values())
        settings = JobSettings(db=db, data_dir=archive_root, backfill_runner="dask",
                               dask_scheduler=c.scheduler_address, staging=str(db.parent / f"staging-{workers}"))
        with contextlib.ExitStack() as stack:
            samplers = [stack.enter_context(PeakSampler(pid)) for pid in pids]
            t = time.perf_counter()
            r = run_backfill(settings, start, end, run_dq=False)
            seconds = time.perf_counter() - t
    return {"status": r.status, "events": r.events, "seconds": seconds, "events_per_s": r.events / seconds,
            "timings": r.timings, "peak_worker_pss_mb": max(x.peak_pss for x in samplers) / 2**20, "workers": workers}


def stage_dask_backfill(events: int, days: int, workdir: Path, seed: int = 5) -> dict[str, Any]:
    """Local (2 forked day workers) vs Dask with 1 and 2 workers on one archive; the scaling ratio."""
    root = workdir / "dask_backfill"
    info = data.write_synth_archive(root / "archive", events, days, seed, hours_per_day=6)
    start = date.fromisoformat(info["first_day"])
    end = start + timedelta(days=days - 1)
    out: dict[str, Any] = {"events": events, "days": days}
    local = run_backfill_measured(root, root / "local.duckdb", str(start), str(end), workers=2, run_dq=False)
    out["local"] = {k: local[k] for k in ("status", "events", "seconds", "events_per_s", "peak_pss_mb", "timings")}
    for n in (1, 2):
        out[f"dask_{n}"] = _dask_run(root, root / f"dask{n}.duckdb", start, end, n)
    out["dask_scaling_2_over_1"] = out["dask_2"]["events_per_s"] / out["dask_1"]["events_per_s"]
    out["load_average"] = list(os.getloadavg())
    return out


def summary(res: dict[str, Any]) -> str:
    lines = [f"backfill {res['events']:,} events / {res['days']} days (GX off; load average {res['load_average']})"]
    loc = res["local"]
    lines.append(f"  local (2 forked day workers): {loc['seconds']:.1f} s, {loc['events_per_s']:,.0f} events/s, "
                 f"peak PSS {loc['peak_pss_mb']:.0f} MB (whole tree)")
    for n in (1, 2):
        d = res[f"dask_{n}"]
        lines.append(f"  dask, {n} worker(s): {d['seconds']:.1f} s, {d['events_per_s']:,.0f} events/s, "
                     f"peak PSS per worker {d['peak_worker_pss_mb']:.0f} MB; phases "
                     + ", ".join(f"{k} {v:.1f}s" for k, v in d["timings"].items()))
    lines.append(f"  dask scaling 2 workers / 1 worker: {res['dask_scaling_2_over_1']:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    logging.disable(logging.WARNING)
    n_events, n_days = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) > 2 else (2_000_000, 4)
    with tempfile.TemporaryDirectory(prefix="liqstream-bench-dask-") as tmp:
        result = stage_dask_backfill(n_events, n_days, Path(tmp))
    print(summary(result))
    print(json.dumps(result, default=str))
