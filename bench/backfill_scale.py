"""The archive backfill against DuckDB SQL and Polars at 4M and 50M events, and its peak memory at
10 and 90 days (issue 21, ADR 022), apart from `make bench` because the 50M archive takes a while.

    .venv/bin/python -m bench.backfill_scale                          # 4M/4 d, 50M/25 d; 10 d vs 90 d
    .venv/bin/python -m bench.backfill_scale --sizes 4000000:4 --no-memory
    .venv/bin/python -m bench.backfill_scale --write bench/results.json   # also its targets there
    .venv/bin/python -m bench.backfill_scale --memory-only            # only the 10 d vs 90 d peak memory

Each size: a seeded synthetic archive (``bench.data.write_synth_archive``, 6 h of each day) in a
temporary directory (removed after), the backfill in a child process (``bench.backfill``: every mart,
the GX gate, peak PSS of the child and its day workers), then DuckDB SQL and Polars on the same
archive, their bars and liquidation minutes checked equal to the job's (``bench.peers``). Writes
``bench/out/backfill_scale.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import data, peers
from bench.backfill import run_backfill_measured

ROOT = Path(__file__).resolve().parent
TARGET_VS_DUCKDB = 3.0  # issue 21: backfill <= 3x DuckDB SQL at 4M and at 50M events
TARGET_MEMORY_90_VS_10 = 1.2


def measure(events: int, days: int, workdir: Path, seed: int = 42, hours_per_day: int = 6) -> dict[str, Any]:
    """One size: the job and both peers on the same archive; the archive is removed after."""
    root = workdir / f"scale-{events}"
    try:
        t0 = time.perf_counter()
        info = data.write_synth_archive(root / "archive", events, days, seed, hours_per_day=hours_per_day)
        gen_s = time.perf_counter() - t0
        first = dt.date.fromisoformat(info["first_day"])
        load0 = os.getloadavg()
        res = run_backfill_measured(root, root / "backfill.duckdb", str(first), str(first + dt.timedelta(days=days - 1)))
        res["peers"] = peers.archive_peers(root / "archive", root / "backfill.duckdb")
        res.update(archive={**info, "written_s": gen_s}, load_average_start=list(load0),
                   load_average_end=list(os.getloadavg()))
        for name in ("duckdb_sql", "polars"):
            res[f"ratio_to_{name}"] = res["seconds"] / res["peers"][name]["seconds"]
        return res
    finally:
        shutil.rmtree(root, ignore_errors=True)


def targets(runs: list[dict[str, Any]], memory: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = [{"name": f"backfill time / DuckDB SQL time, {r['events']:,} events / {r['archive']['days']} days "
                    "(bars + liquidation minutes checked equal)",
            "value": r["ratio_to_duckdb_sql"], "unit": "ratio", "target": TARGET_VS_DUCKDB, "op": "<=",
            "met": r["ratio_to_duckdb_sql"] <= TARGET_VS_DUCKDB} for r in runs]
    ratio = peers.memory_ratio(memory)
    if ratio is not None:
        out.append({"name": "backfill peak memory (PSS), 90 days / 10 days at the same events per day",
                    "value": ratio, "unit": "ratio", "target": TARGET_MEMORY_90_VS_10, "op": "<=",
                    "met": ratio <= TARGET_MEMORY_90_VS_10})
    return out


def _check(c: dict[str, Any]) -> str:
    """'equal', or the columns that differ (DuckDB's and Polars' DOUBLE -> DECIMAL casts round
    ``volume_base_exact`` in double arithmetic: docs/performance.md)."""
    if c["equal"]:
        return "equal"
    return f"rows {c['rows_job']}/{c['rows_peer']}, differing columns {c['mismatches']}"


def summary(runs: list[dict[str, Any]], memory: list[dict[str, Any]]) -> str:
    lines = []
    for r in runs:
        p = r["peers"]
        eq = all(p[n][c]["equal"] for n in ("duckdb_sql", "polars") for c in ("liquidations_check",))
        lines.append(f"{r['events']:,} events / {r['archive']['days']} d: job {r['seconds']:.1f} s "
                     f"(events {r['timings'].get('events', 0):.1f}, analytics {r['timings'].get('analytics', 0):.1f}, "
                     f"dq {r['timings'].get('dq', 0):.1f}; peak PSS {r['peak_pss_mb']:,.0f} MB); "
                     f"DuckDB SQL {p['duckdb_sql']['seconds']:.2f} s ({r['ratio_to_duckdb_sql']:.1f}x), "
                     f"Polars {p['polars']['seconds']:.2f} s ({r['ratio_to_polars']:.1f}x); "
                     f"bars: DuckDB {_check(p['duckdb_sql']['bars_check'])}, Polars {_check(p['polars']['bars_check'])}"
                     f"; liquidation minutes equal: {eq}; load {r['load_average_start'][0]:.1f}-{r['load_average_end'][0]:.1f}")
    for m in memory:
        lines.append(f"memory: {m['days']} days x {m['events'] // m['days']:,} events: {m['seconds']:.1f} s, "
                     f"peak PSS {m['peak_pss_mb']:,.0f} MB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="4000000:4,50000000:25", help="EVENTS:DAYS,...")
    ap.add_argument("--no-memory", action="store_true", help="skip the 10- vs 90-day peak memory runs")
    ap.add_argument("--memory-only", action="store_true", help="only the 10- vs 90-day peak memory runs (no --sizes)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "backfill_scale.json")
    ap.add_argument("--write", type=Path, help="replace these targets in a results.json (e.g. bench/results.json)")
    args = ap.parse_args(argv)
    sizes = [] if args.memory_only else [tuple(int(x) for x in s.split(":")) for s in args.sizes.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="liqstream-bench-scale-") as tmp:
        runs = []
        for events, days in sizes:
            print(f"==> backfill {events:,} events over {days} days, then DuckDB SQL and Polars", flush=True)
            runs.append(measure(events, days, Path(tmp), args.seed))
        memory = [] if args.no_memory else peers.memory_runs(
            [{"events": 200_000, "days": 10, "hours_per_day": 1}, {"events": 1_800_000, "days": 90, "hours_per_day": 1}],
            Path(tmp), args.seed)
    result = {"runs": runs, "memory": memory, "targets": targets(runs, memory), "peers": peers.versions()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(summary(runs, memory))
    if args.write:
        doc = json.loads(args.write.read_text())
        new = {t["name"] for t in result["targets"]}
        doc["targets"] = [t for t in doc["targets"] if t["name"] not in new] + result["targets"]
        doc.setdefault("stages", {})["backfill_scale"] = {k: result[k] for k in ("runs", "memory")}
        args.write.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
