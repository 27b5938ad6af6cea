"""A backfill's memory by step (ADR 051, ADR 054): where a long backfill's peak is.

The backfill runs in this process (the day workers are forked children, gone by the late steps
whose memory issue 21 is about); a thread reads this process's PSS (``/proc/self/smaps_rollup``)
every ``--interval`` seconds and keeps the peak of each step, the step being the innermost of the
wrapped functions below that is running ("other": none of them, e.g. the day pool's wait, the
export of a window's bars). On entering a step it records the PSS (the level the steps before
left), and at the end of a step given a connection DuckDB's ``duckdb_memory()`` (the step's largest
total, and its tags). ``--sql`` runs statements on the job's connection first (e.g.
``"SET preserve_insertion_order=false"``) for an A/B of a DuckDB setting.

    .venv/bin/python -m bench.backfill_steps ARCHIVE_ROOT DAYS DB [--sql "SET ..."] [--windows]

``--windows`` (ADR 057) adds a ledger of what the process holds on entering and leaving each
analytics window (``_run_window``): its PSS and the peak since the previous entry, the PSS of glibc's
``[heap]`` and of the other anonymous mappings, glibc's ``mallinfo2`` (arena, in use, free in the
arena, mmapped), Python's allocated blocks (``sys.getallocatedblocks``: objects carried from window to
window), Arrow's allocated bytes and DuckDB's ``duckdb_memory()``: what grows with the number of days.

``ARCHIVE_ROOT`` holds ``archive/`` (e.g. ``bench.data.write_synth_archive(root / "archive", ...)``);
the backfill covers its first ``DAYS`` days. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

#: (module attribute, step name, index of the DuckDB connection argument or None)
_STEPS = (
    ("_days_in_pool", "days_pool", None),
    ("_replace", "replace_bars", 0),
    ("export_bars_by_base", "export_bars", None),
    ("_run_window", "window", None),
    ("_carry_into", "carry", None),
    ("_sample_series", "oi_samples", None),
    ("oi_delta_rows_from_samples", "oi_rows", None),
    ("_insert_range", "insert_range", 0),
    ("_insert_staged", "insert_staged", 0),
    ("attach_cascade_fuel", "fuel", 0),
)
_GATE = (("validate", "dq_validate"), ("validate_windows", "dq_windows"), ("publish_docs", "dq_docs"))


def _pss_mb() -> int:
    """This process's PSS in MB (bench.backfill's smaps_rollup reader)."""
    from bench.backfill import _tree_pss

    return _tree_pss([os.getpid()])[1] >> 20


def heap_and_anon_pss_mb(smaps: str) -> tuple[int, int]:
    """PSS (MB) of glibc's ``[heap]`` and of the other anonymous mappings (no path: mmapped
    allocations, DuckDB's jemalloc, pymalloc's arenas) in a ``/proc/<pid>/smaps`` text."""
    heap = anon = 0
    name = None
    for line in smaps.splitlines():
        parts = line.split()
        if not parts:
            continue
        if "-" in parts[0] and len(parts) >= 5:  # a mapping's header: range perms offset dev inode [path]
            name = parts[5] if len(parts) > 5 else ""
        elif parts[0] == "Pss:" and name is not None:
            if name == "[heap]":
                heap += int(parts[1])
            elif name == "":
                anon += int(parts[1])
    return heap // 1024, anon // 1024


def _mallinfo_mb() -> dict[str, int]:
    """glibc's ``mallinfo2`` in MB ({} if not glibc >= 2.33)."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                   "fsmblks", "uordblks", "fordblks", "keepcost")]

    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return {}
    fn.restype = MallInfo2
    m = fn()
    return {"malloc_arena": m.arena >> 20, "malloc_in_use": m.uordblks >> 20, "malloc_free": m.fordblks >> 20,
            "malloc_mmapped": m.hblkhd >> 20}


def _split_mb() -> dict[str, int]:
    """glibc's heap and the other anonymous mappings' PSS, and ``mallinfo2``, now."""
    with open("/proc/self/smaps") as f:
        heap, anon = heap_and_anon_pss_mb(f.read())
    return {"heap_pss": heap, "anon_pss": anon, **_mallinfo_mb()}


class WindowLedger:
    """What the process holds on entering and leaving each wrapped call (``--windows``)."""

    def __init__(self, prof: StepProfile) -> None:
        self.prof = prof
        prof.peak_detail = True
        self.rows: list[dict[str, Any]] = []
        self.con: Any = None  # the job's connection, for duckdb_memory()

    def record(self, at: str) -> None:
        import sys

        import pyarrow as pa

        peak, at_peak = self.prof.take_peak()
        row: dict[str, Any] = {"at": at, "pss": _pss_mb(), "peak_since": peak, "at_peak": at_peak, **_split_mb(),
                               "py_blocks": sys.getallocatedblocks(), "arrow_mb": pa.total_allocated_bytes() >> 20}
        if self.con is not None:
            (mb,) = self.con.execute("SELECT coalesce(sum(memory_usage_bytes), 0) // 1048576 "
                                     "FROM duckdb_memory()").fetchone()
            row["duckdb_mb"] = int(mb)
        self.rows.append(row)

    def wrap(self, owner: Any, attr: str) -> None:
        fn = getattr(owner, attr)

        @functools.wraps(fn)
        def ledgered(*args: Any, **kwargs: Any) -> Any:
            self.record("enter")
            try:
                return fn(*args, **kwargs)
            finally:
                self.record("leave")

        setattr(owner, attr, ledgered)


class StepProfile:
    def __init__(self, interval_s: float) -> None:
        self.step = "other"
        self.peaks: dict[str, int] = {}
        self.entered: list[tuple[str, int]] = []  # (step, PSS MB on entering it), in order
        self.duckdb_mb: dict[str, int] = {}
        self.duckdb_tags: dict[str, list] = {}
        self._interval = interval_s
        self._stop = threading.Event()
        self._since = 0  # the peak since take_peak() was last called
        self.peak_detail = False  # also read smaps and mallinfo2 at each new such peak (--windows)
        self._since_detail: dict[str, int] = {}

    def _sample(self) -> None:
        while not self._stop.is_set():
            v, step = _pss_mb(), self.step
            if v > self.peaks.get(step, 0):
                self.peaks[step] = v
            if v > self._since:
                self._since = v
                if self.peak_detail:
                    self._since_detail = _split_mb()
            self._stop.wait(self._interval)

    def take_peak(self) -> tuple[int, dict[str, int]]:
        """The largest PSS sampled since the last call and, with ``peak_detail``, what it was made of
        (:func:`_split_mb` at that sample); then starts over."""
        now = _pss_mb()
        peak, detail = (now, {}) if now >= self._since else (self._since, self._since_detail)
        self._since, self._since_detail = 0, {}
        return peak, detail

    def start(self) -> None:
        threading.Thread(target=self._sample, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def wrap(self, owner: Any, attr: str, step: str, con_arg: int | None = None) -> None:
        fn = getattr(owner, attr)

        @functools.wraps(fn)
        def stepped(*args: Any, **kwargs: Any) -> Any:
            outer, self.step = self.step, step
            self.entered.append((step, _pss_mb()))
            try:
                return fn(*args, **kwargs)
            finally:
                if con_arg is not None:
                    self._duckdb(step, args[con_arg])
                self.step = outer

        setattr(owner, attr, stepped)

    def _duckdb(self, step: str, con: Any) -> None:
        rows = con.execute("SELECT tag, memory_usage_bytes // 1048576 FROM duckdb_memory() "
                           "WHERE memory_usage_bytes >= 1048576").fetchall()
        total = sum(int(mb) for _, mb in rows)
        if total >= self.duckdb_mb.get(step, 0):  # the tags at the step's largest total
            self.duckdb_mb[step] = total
            self.duckdb_tags[step] = [[tag, int(mb)] for tag, mb in rows]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path, help="a directory holding archive/")
    ap.add_argument("days", type=int)
    ap.add_argument("db", type=Path, help="the DuckDB file to backfill (made if missing)")
    ap.add_argument("--sql", default="", help="statements run on the job's connection first, ';'-separated")
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between PSS samples")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--windows", action="store_true", help="a ledger on entering/leaving each analytics window")
    args = ap.parse_args(argv)

    import logging

    logging.disable(logging.INFO)
    from pipelines import warehouse
    from pipelines.dq import DataQuality
    from pipelines.jobs import backfill as bf
    from pipelines.settings import JobSettings

    prof = StepProfile(args.interval)
    for attr, step, con_arg in _STEPS:
        prof.wrap(bf, attr, step, con_arg)
    for attr, step in _GATE:
        prof.wrap(DataQuality, attr, step)
    ledger = WindowLedger(prof)
    if args.windows:
        ledger.wrap(bf, "_run_window")
    connect = warehouse.connect

    def connect_with_settings(*a: Any, **k: Any) -> Any:
        con = connect(*a, **k)
        ledger.con = ledger.con or con
        for stmt in filter(None, (s.strip() for s in args.sql.split(";"))):
            con.execute(stmt)
        return con

    bf.warehouse.connect = connect_with_settings  # the module bf reads it through
    days = sorted(date.fromisoformat(p.name.split("=", 1)[1]) for p in (args.root / "archive").glob("*/date=*"))
    if not days:
        raise SystemExit(f"no archive days under {args.root / 'archive'}")
    settings = JobSettings.from_env(db=args.db, data_dir=args.root, backfill_workers=args.workers)
    prof.start()
    t = time.perf_counter()
    try:
        r = bf.run_backfill(settings, days[0], days[0] + timedelta(days=args.days - 1), source="archive")
    finally:
        bf.warehouse.connect = connect
        prof.stop()
    print(json.dumps({"days": args.days, "seconds": round(time.perf_counter() - t, 1), "status": r.status,
                      "sql": args.sql, "peak_pss_mb": max(prof.peaks.values()), "peak_pss_mb_by_step": prof.peaks,
                      "duckdb_mb_by_step": prof.duckdb_mb, "duckdb_tags": prof.duckdb_tags,
                      "pss_mb_entering": prof.entered, "rows": r.rows,
                      **({"windows": ledger.rows} if args.windows else {})}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
