"""End-to-end backfill from the normalized archive, its peak memory, and the DuckDB SQL reference.

The backfill (``pipelines.jobs.backfill.run_backfill(source="archive")``, with
its default two worker processes and the GX gate) runs in a child process
(``python -m bench.backfill <settings json>``) so its memory is its own; this
process samples the resident set of the child *and all its descendants* (the
Beam workers) every 0.2 s and reports the peak of their sum (:class:`PeakSampler`: the page-table
walk PSS needs is skipped while the tree's RSS is below the peak PSS so far, so the sampler's own
CPU, reported as ``memory_sampler.cpu_s``, takes little from the timed backfill).

The reference computes the same ``bars_1m`` (OHLC by (event_time, price)
order, volumes and USD sums in micro-USD, taker buy/sell, liquidation counts
and USD per side, OI first/last, funding last) from the same archive Parquet
with one DuckDB SQL query, materialized into a table; both results are
compared on row count and totals, exactly: USD as integer micro-USD, each event rounded
half-to-even once as the job does (``round_even``; DuckDB's ``round`` rounds half away from zero).
``bench.peers`` compares DuckDB SQL's and Polars' bars with the job's column by column.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

REFERENCE_SQL = """
CREATE OR REPLACE TABLE ref_bars AS
WITH t AS (
  SELECT exchange, symbol, event_time // 60000000 AS m,
         arg_min(price, (event_time, price)) AS open, max(price) AS high, min(price) AS low,
         arg_max(price, (event_time, price)) AS close, sum(size) AS volume_base,
         sum(round_even(notional_usd * 1e6, 0)::BIGINT) AS volume_usd, count(*) AS trade_count,
         sum(CASE WHEN taker_side = 'buy' THEN round_even(notional_usd * 1e6, 0)::BIGINT ELSE 0 END) AS taker_buy_usd,
         sum(CASE WHEN taker_side = 'sell' THEN round_even(notional_usd * 1e6, 0)::BIGINT ELSE 0 END) AS taker_sell_usd
  FROM read_parquet({trades}) GROUP BY ALL),
l AS (
  SELECT exchange, symbol, event_time // 60000000 AS m,
         count(*) FILTER (WHERE side = 'long') AS long_liq_count,
         coalesce(sum(round_even(notional_usd * 1e6, 0)::BIGINT) FILTER (WHERE side = 'long'), 0) AS long_liq_usd,
         count(*) FILTER (WHERE side = 'short') AS short_liq_count,
         coalesce(sum(round_even(notional_usd * 1e6, 0)::BIGINT) FILTER (WHERE side = 'short'), 0) AS short_liq_usd
  FROM read_parquet({liqs}) GROUP BY ALL),
o AS (
  SELECT exchange, symbol, event_time // 60000000 AS m,
         arg_min(open_interest, (event_time, open_interest)) AS oi_first,
         arg_max(open_interest, (event_time, open_interest)) AS oi_last
  FROM read_parquet({ois}) GROUP BY ALL),
f AS (
  SELECT exchange, symbol, event_time // 60000000 AS m,
         arg_max(mark_price, (event_time, mark_price)) AS mark_price_last
  FROM read_parquet({funding}) GROUP BY ALL)
SELECT * FROM t FULL JOIN l USING (exchange, symbol, m) FULL JOIN o USING (exchange, symbol, m)
               FULL JOIN f USING (exchange, symbol, m)
"""


def duckdb_reference(archive: Path) -> dict[str, Any]:
    import duckdb

    def files(et: str) -> str:
        return f"'{archive / et}/*/*.parquet'"

    con = duckdb.connect()
    try:
        t = time.perf_counter()
        con.execute(REFERENCE_SQL.format(trades=files("trade"), liqs=files("liquidation"), ois=files("open_interest"),
                                         funding=files("funding")))
        s = time.perf_counter() - t
        bars, trades, usd = con.execute(
            "SELECT count(*), sum(trade_count), sum(volume_usd) FROM ref_bars").fetchone()
    finally:
        con.close()
    return {"seconds": s, "bars": int(bars), "trade_count": int(trades or 0), "volume_usd_micros": int(usd or 0),
            "threads": os.cpu_count()}


# ---- the child ------------------------------------------------------------------------------------------------


def _child(args: dict[str, Any]) -> None:
    import logging

    logging.disable(logging.INFO)
    from pipelines.jobs.backfill import run_backfill
    from pipelines.settings import JobSettings

    # LIQSTREAM_* variables apply (e.g. LIQSTREAM_BACKFILL_MMAP_THRESHOLD=0 for an A/B of that setting)
    settings = JobSettings.from_env(db=Path(args["db"]), data_dir=Path(args["data_dir"]),
                                    backfill_workers=args.get("workers", 2))
    t = time.perf_counter()
    r = run_backfill(settings, date.fromisoformat(args["start"]), date.fromisoformat(args["end"]), source="archive",
                     run_dq=args.get("run_dq", True))
    s = time.perf_counter() - t
    import duckdb

    con = duckdb.connect(str(settings.db), read_only=True)
    try:
        bars, trades, usd = con.execute("SELECT count(*), sum(trade_count), "
                                        "sum(volume_usd * 1000000)::BIGINT FROM bars_1m").fetchone()
    finally:
        con.close()
    print(json.dumps({"status": r.status, "events": r.events, "seconds": s, "rows": r.rows, "dq_passed": r.dq_passed,
                      "timings": r.timings,
                      "bars": int(bars), "trade_count": int(trades or 0), "volume_usd_micros": int(usd or 0)}))


def _tree_pids(root: int) -> list[int]:
    """``root`` and every descendant (from /proc; the kernel here has no ``task/*/children``)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, []))
    return out


_PAGE = os.sysconf("SC_PAGE_SIZE")


def _tree_rss(pids: list[int]) -> int:
    """Resident bytes of ``pids`` from ``/proc/<pid>/statm`` (cheap: no page-table walk)."""
    rss = 0
    for pid in pids:
        try:
            rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            continue
    return rss


def _tree_pss(pids: list[int]) -> tuple[int, int]:
    """(RSS, PSS) bytes of ``pids`` from ``smaps_rollup`` (the kernel walks every page table: ~10 ms
    of CPU per call for a 600 MB process on this machine).

    RSS counts a page shared by several processes in each of them (the backfill's day workers
    are forked, so they share the parent's pages until written); PSS splits each shared page
    among its sharers, so the PSS of a tree is the memory it really holds."""
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            continue
    return rss, pss


class PeakSampler:
    """Peak RSS and PSS of a process tree, sampled every ``interval_s``, cheaply.

    PSS needs ``smaps_rollup`` (a page-table walk per process: sampled every 0.2 s over a 4M-event
    backfill's three processes it took ~15 % of a core, on a 2-core machine, inside the timed
    window). A process's PSS never exceeds its RSS, so while the tree's RSS (``statm``, cheap) is
    below the peak PSS seen so far, no new PSS peak is possible and the walk is skipped: the peak
    is the same as sampling PSS every time, at the same instants. ``cpu_s`` is the sampler's own
    CPU time (it shares the machine with what it measures)."""

    def __init__(self, root: int, interval_s: float = 0.2) -> None:
        self.root, self.interval_s = root, interval_s
        self.peak_rss = self.peak_pss = 0
        self.samples = self.pss_reads = 0
        self.cpu_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        pids = _tree_pids(self.root)
        rss = _tree_rss(pids)
        self.samples += 1
        self.peak_rss = max(self.peak_rss, rss)
        if rss >= self.peak_pss:
            self.pss_reads += 1
            rss2, pss = _tree_pss(pids)
            self.peak_rss = max(self.peak_rss, rss2)
            self.peak_pss = max(self.peak_pss, pss)

    def _run(self) -> None:
        t0 = time.thread_time()
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)
        self.cpu_s = time.thread_time() - t0

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_backfill_measured(archive_root: Path, db: Path, start: str, end: str, workers: int = 2,
                          run_dq: bool = True) -> dict[str, Any]:
    """The backfill in a child process; adds ``peak_rss_mb`` and ``peak_pss_mb`` (the child and its
    worker processes, see :class:`PeakSampler`) and ``events_per_s``."""
    args = {"db": str(db), "data_dir": str(archive_root), "start": start, "end": end, "workers": workers,
            "run_dq": run_dq}
    proc = subprocess.Popen([sys.executable, "-m", "bench.backfill", json.dumps(args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    with PeakSampler(proc.pid) as sampler:
        out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"backfill child failed ({proc.returncode}): {err[-2000:]}")
    res = json.loads(out.strip().splitlines()[-1])
    res["peak_rss_mb"], res["peak_pss_mb"] = sampler.peak_rss / 2**20, sampler.peak_pss / 2**20
    res["memory_sampler"] = {"samples": sampler.samples, "pss_reads": sampler.pss_reads,
                             "cpu_s": round(sampler.cpu_s, 3)}
    res["events_per_s"] = res["events"] / res["seconds"] if res["seconds"] else None
    return res


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
