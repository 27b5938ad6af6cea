"""The committed keys among a cycle's (ADR 037): hand-made keys, independent of the marts."""

from __future__ import annotations

import pyarrow as pa

from pipelines.dedupe import committed_among
from tests.helpers import memory_warehouse


def test_committed_among_returns_the_cycles_committed_keys_once_each():
    con = memory_warehouse()
    try:
        con.execute("INSERT INTO event_keys VALUES (1, 10), (2, 20), (18446744073709551615, 30), (7, 40)")
        cycle = pa.array([2, 3, 2, 18446744073709551615, 5], pa.uint64())  # 2 twice in the cycle
        assert sorted(committed_among(con, cycle).to_pylist()) == [2, 18446744073709551615]
        assert committed_among(con, pa.array([], pa.uint64())).to_pylist() == []
        assert committed_among(con, pa.array([3, 4], pa.uint64())).to_pylist() == []
        # the lookup leaves no view behind on the job's connection
        assert "_cycle_keys" not in {r[0] for r in con.execute("SHOW TABLES").fetchall()}
    finally:
        con.close()


def test_the_dedupe_bench_measures_both_ways():
    from bench.dedupe_keys import measure

    rows = measure(50, [500, 200])
    assert [r["committed"] for r in rows] == [200, 500]
    assert all(r["export_antijoin_s"] > 0 and r["lookup_s"] > 0 for r in rows)
