"""The stream job's DQ gate alone, per cycle: `run_gate` on a copy of a catch-up's mart.

    .venv/bin/python -m bench.dq_gate --db MART.duckdb --data DATA_DIR [--scopes 1 30] [--gates 6]

A gate of a live cycle checks the last minute or two a cycle wrote; a catch-up's, all of it. For
each scope (minutes before the mart's last bar) the gate runs ``--gates`` times in a row as the
stream job runs it (``dq_every_s=0``: every cycle), on a fresh copy of the mart each time (a
failing gate would quarantine), with the docs under a scratch folder. The first gate of the
process (GX's checkpoints built, lazy imports) is reported apart. ``--gx-every-s`` is passed to
``run_gate`` where it takes it (the stream job's ``JobSettings.dq_gx_every_s``): run the script
with ``PYTHONPATH`` at another checkout to time that code's gate on the same mart, back to back.

Make the mart with a catch-up (``bench.streaming.run_catch_up``), e.g. ``--make 300000`` here.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def time_gates(db: Path, data: Path, scopes: list[int], gates: int, gx_every_s: float) -> dict:
    import duckdb

    from pipelines import warehouse
    from pipelines.dq import DataQuality
    from pipelines.jobs.load import DQ_SUITES, LoadResult, run_gate

    t = time.perf_counter()
    DataQuality.shared()
    import_s = time.perf_counter() - t
    kw = {"gx_every_s": gx_every_s} if "gx_every_s" in inspect.signature(run_gate).parameters else {}
    out: dict = {"import_s": round(import_s, 3), "load_average": [os.getloadavg()[0]], "scopes": {}}
    with tempfile.TemporaryDirectory(prefix="dq-gate-") as tmp:
        for scope in scopes:
            times, verdicts = [], set()
            for i in range(gates):
                copy = Path(tmp) / f"m{scope}-{i}.duckdb"
                shutil.copy(db, copy)
                con = duckdb.connect(str(copy))
                (last,) = con.execute("SELECT epoch_us(max(minute_ts)) FROM bars_1m").fetchone()
                warehouse.set_state(con, "dq_from_us", last - scope * 60_000_000)
                r = LoadResult(run_id=f"bench-{scope}-{i}", status="ok")
                t = time.perf_counter()
                run_gate(con, r.run_id, r, DQ_SUITES, docs_dir=Path(tmp) / "gx_docs", archive_dir=data / "archive",
                         **kw)
                times.append(time.perf_counter() - t)
                verdicts.add(r.dq_passed)
                con.close()
                copy.unlink()
            first = times.pop(0) if not out.get("first_gate_s") else None
            if first is not None:
                out["first_gate_s"] = round(first, 3)
            out["scopes"][scope] = {"gates": len(times), "median_s": round(statistics.median(times), 3),
                                    "min_s": round(min(times), 3), "max_s": round(max(times), 3),
                                    "passed": sorted(verdicts)}
    out["load_average"].append(os.getloadavg()[0])
    return out


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - manual runs
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", type=Path)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--make", type=int, default=0, help="first make a mart of this many events (a catch-up)")
    ap.add_argument("--scopes", type=int, nargs="+", default=[1, 30])
    ap.add_argument("--gates", type=int, default=6)
    ap.add_argument("--gx-every-s", type=float, default=600.0)
    args = ap.parse_args(argv)
    if args.make:
        from bench.streaming import run_catch_up

        work = Path(tempfile.mkdtemp(prefix="dq-gate-mart-"))
        run_catch_up(args.make, work, warm=False)
        args.db, args.data = work / "stream.duckdb", work / "data"
        print(f"mart: --db {args.db} --data {args.data}")
    print("RESULT " + json.dumps(time_gates(args.db, args.data, args.scopes, args.gates, args.gx_every_s)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
