"""bench.backfill_steps (ADR 054): a wrapped step is tagged while it runs (nested steps restore the
outer one), passes its result and exceptions through, and reads DuckDB's memory after a step given
its connection."""

from __future__ import annotations

import time
import types

import duckdb
import pytest

from bench.backfill_steps import StepProfile, WindowLedger, heap_and_anon_pss_mb


def test_steps_nest_pass_through_and_read_duckdb_memory():
    prof = StepProfile(0.01)
    seen = []
    mod = types.SimpleNamespace()
    mod.inner = lambda: seen.append(prof.step) or 7
    mod.outer = lambda con: (seen.append(prof.step), mod.inner(), seen.append(prof.step))[1]

    def fails():
        raise ValueError("x")

    mod.fails = fails
    prof.wrap(mod, "inner", "in")
    prof.wrap(mod, "outer", "insert_staged", con_arg=0)
    prof.wrap(mod, "fails", "bad")
    con = duckdb.connect()
    con.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v VARCHAR)")
    con.execute("INSERT INTO t SELECT i, repeat('x', 50) FROM range(300000) r(i)")
    assert mod.outer(con) == 7
    assert seen == ["insert_staged", "in", "insert_staged"] and prof.step == "other"
    with pytest.raises(ValueError):
        mod.fails()
    assert prof.step == "other"
    assert [s for s, _ in prof.entered] == ["insert_staged", "in", "bad"] and all(mb > 0 for _, mb in prof.entered)
    tags = dict(prof.duckdb_tags["insert_staged"])
    assert prof.duckdb_mb["insert_staged"] == sum(tags.values()) > 0


SMAPS = """\
55d0c0a00000-55d0c0c00000 rw-p 00000000 00:00 0                          [heap]
Size:               2048 kB
Pss:                3072 kB
7f0000000000-7f0000400000 rw-p 00000000 00:00 0
Size:               4096 kB
Pss:                2048 kB
7f0000400000-7f0000800000 rw-p 00000000 00:00 0
Pss:                1024 kB
7f1000000000-7f1000200000 r-xp 00000000 08:01 1234                       /usr/lib/libc.so.6
Pss:                9216 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Pss:                5120 kB
"""


def test_window_ledger_splits_heap_from_anonymous_mappings_and_records_each_call():
    assert heap_and_anon_pss_mb(SMAPS) == (3, 3)  # not the library's nor the stack's pages
    prof = StepProfile(0.01)
    ledger = WindowLedger(prof)
    ledger.con = duckdb.connect()

    def window(n: int) -> int:  # holds n bytes (pages touched) for a few samples, then frees them
        held = bytearray(b"x" * n)
        time.sleep(0.2)
        return len(held)

    mod = types.SimpleNamespace(window=window)
    ledger.wrap(mod, "window")
    prof.start()
    try:
        assert mod.window(96 << 20) == 96 << 20
    finally:
        prof.stop()
    enter, leave = ledger.rows
    assert (enter["at"], leave["at"]) == ("enter", "leave")
    # the window's transient is in its peak, not in the level it left
    assert leave["peak_since"] >= enter["pss"] + 80 and leave["pss"] < leave["peak_since"] - 40
    assert enter["py_blocks"] > 0 and "duckdb_mb" in leave
    if leave["at_peak"].get("malloc_mmapped") is not None:  # glibc: the 96 MB came from its own mapping
        assert leave["at_peak"]["malloc_mmapped"] >= 90 > leave["malloc_mmapped"]
