"""Peak memory of a large backfill from the normalized archive (issue 7: "memory stays bounded for a
50M-event backfill"), apart from `make bench` because it takes a while.

    .venv/bin/python -m bench.memory                         # 50M events over 25 days (6 h of each)
    .venv/bin/python -m bench.memory --events 5000000 --days 5

Writes a seeded synthetic archive (``bench.data.write_synth_archive``, memory flat whatever the
size) in a temporary directory, runs ``liqstream backfill``'s code in a child process
(``bench.backfill.run_backfill_measured``: peak PSS and RSS of the child and its day workers,
sampled every 0.2 s), checks the bars against the DuckDB SQL reference and writes ``bench/memory.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path

from bench import data
from bench.backfill import duckdb_reference, run_backfill_measured

ROOT = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000_000)
    ap.add_argument("--days", type=int, default=25)
    ap.add_argument("--hours-per-day", type=int, default=6)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", type=Path, default=ROOT / "memory.json")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="liqstream-bench-memory-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        print(f"==> writing a {args.events:,}-event archive over {args.days} days", flush=True)
        info = data.write_synth_archive(root / "archive", args.events, args.days, args.seed,
                                        hours_per_day=args.hours_per_day)
        gen_s = time.perf_counter() - t0
        first = dt.date.fromisoformat(info["first_day"])
        last = first + dt.timedelta(days=args.days - 1)
        print(f"==> backfill {first} .. {last} (archive written in {gen_s:.0f} s)", flush=True)
        load0 = os.getloadavg()
        res = run_backfill_measured(root, root / "backfill.duckdb", str(first), str(last))
        ref = duckdb_reference(root / "archive")
        res.update(archive=info, duckdb_reference=ref, ratio_to_duckdb=res["seconds"] / ref["seconds"],
                   bars_match=res["bars"] == ref["bars"] and res["trade_count"] == ref["trade_count"],
                   load_average_start=list(load0), load_average_end=list(os.getloadavg()))
    args.out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    print(f"{res['events']:,} events in {res['seconds']:.0f} s = {res['events_per_s']:,.0f} ev/s; "
          f"peak PSS {res['peak_pss_mb']:,.0f} MB (RSS {res['peak_rss_mb']:,.0f} MB); DuckDB SQL {ref['seconds']:.1f} s "
          f"({res['ratio_to_duckdb']:.0f}x); bars match: {res['bars_match']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
