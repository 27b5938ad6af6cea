"""bench.backfill_steps (ADR 054): a wrapped step is tagged while it runs (nested steps restore the
outer one), passes its result and exceptions through, and reads DuckDB's memory after a step given
its connection."""

from __future__ import annotations

import types

import duckdb
import pytest

from bench.backfill_steps import StepProfile


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
