"""The dedupe's lookup of a cycle's keys against the committed ones, by how many are committed (ADR 037).

    .venv/bin/python -m bench.dedupe_keys [--cycle 20000] [--committed 100000 1000000 3000000 10000000]

``event_keys`` (migration 0016, in memory) is filled with random 64-bit keys up to each size; a
cycle's keys (random, none committed) are then checked both ways, one event type's worth:
* export + anti-join: the whole table copied to Parquet (``dedupe.export_seen``) and the cycle's
  keys anti-joined against the file in another connection (what the events pass did, and what
  the graph's shards still do);
* lookup: ``dedupe.committed_among`` on the database's connection (what the events pass does).
At 10k events/s the 6-hour horizon gains 600k keys a minute.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from pipelines import warehouse
from pipelines.dedupe import committed_among, export_seen


def measure(cycle: int, sizes: list[int], seed: int = 1) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    con = duckdb.connect()
    warehouse.migrate(con)
    keys = pa.array(rng.integers(0, 2**63, cycle, dtype=np.uint64))
    rows, have = [], 0
    with tempfile.TemporaryDirectory(prefix="bench-dedupe-") as tmp:
        for n in sorted(sizes):
            add = pa.table({"key": pa.array(rng.integers(0, 2**63, n - have, dtype=np.uint64)),
                            "event_time_us": pa.array(np.arange(have, n, dtype=np.int64))})
            con.register("add_keys", add)
            con.execute("INSERT INTO event_keys SELECT * FROM add_keys")
            con.unregister("add_keys")
            have = n
            t0 = time.perf_counter()
            path = export_seen(con, Path(tmp) / f"seen-{n}.parquet")
            other = duckdb.connect()
            other.register("t", pa.table({"k": keys}))
            other.execute(f"SELECT count(*) FROM t WHERE k NOT IN (SELECT key FROM read_parquet('{path}'))").fetchall()
            other.close()
            t1 = time.perf_counter()
            found = committed_among(con, keys)
            t2 = time.perf_counter()
            assert len(found) == 0
            rows.append({"committed": n, "export_antijoin_s": t1 - t0, "lookup_s": t2 - t1})
    con.close()
    return rows


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - manual runs
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cycle", type=int, default=20_000)
    ap.add_argument("--committed", type=int, nargs="+", default=[100_000, 1_000_000, 3_000_000, 10_000_000])
    args = ap.parse_args(argv)
    print(f"{'committed keys':>15} {'export + anti-join':>19} {'lookup':>8}  ({args.cycle:,} cycle keys)")
    for r in measure(args.cycle, args.committed):
        print(f"{r['committed']:>15,} {r['export_antijoin_s']:>18.3f}s {r['lookup_s']:>7.3f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
