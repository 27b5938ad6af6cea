"""The windowed backfill's staged marts (ADR 042): one ``INSERT OR REPLACE`` per mart from the
windows' Parquet leaves what the windows' upserts one after the other left (ADR 036): the reference
here replays those upserts and deletes window by window on random overlapping windows."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.jobs import backfill

T0 = 1_704_067_200_000_000  # 2024-01-01 00:00 UTC
MIN = 60_000_000
SCHEMAS = {  # two marts whose key holds their time (re-emitted after / from a cut), one whose key does not
    "keyed": "CREATE TABLE keyed (scope VARCHAR, ts TIMESTAMP, v DOUBLE, PRIMARY KEY (scope, ts))",
    "episodes": "CREATE TABLE episodes (episode_id VARCHAR PRIMARY KEY, ts TIMESTAMP, v DOUBLE)",
    "levels": "CREATE TABLE levels (scope VARCHAR, ts TIMESTAMP, v DOUBLE, PRIMARY KEY (scope, ts))",
}


@pytest.fixture
def toy_marts(monkeypatch):
    monkeypatch.setattr(backfill, "ANALYTIC_MARTS", list(SCHEMAS))
    monkeypatch.setattr(backfill, "TIME_COLUMNS", {name: "ts" for name in SCHEMAS})
    # "keyed" re-emitted after a window's cut (as cascade_alerts), "levels" from it on (liquidation_levels)
    monkeypatch.setattr(backfill, "_REEMITTED_AFTER_CUT", {"keyed": ">", "levels": ">="})
    monkeypatch.setattr(backfill, "attach_cascade_fuel", lambda con, config, since_us: None)


def _connect(rows_before: dict[str, list[dict]]):
    con = duckdb.connect()
    for name, ddl in SCHEMAS.items():
        con.execute(ddl)
        for r in rows_before.get(name, []):
            con.execute(f"INSERT INTO {name} VALUES (?, make_timestamp(?::BIGINT), ?)", list(r.values()))
    return con


def _windows(tmp_path, rng, cuts: list[int], start_us: int, end_us: int):
    """Each window's rows from its cut to past the next cut (the overlap the next one re-emits),
    with some keys repeated across windows at other values, some rows outside the range."""
    staged = []
    for k, c0 in enumerate(cuts):
        out = tmp_path / f"analytics-{k}"
        out.mkdir()
        c1 = cuts[k + 1] if k + 1 < len(cuts) else end_us
        for name in SCHEMAS:
            n = int(rng.integers(5, 40))
            ts = rng.integers((c0 - start_us) // MIN - 3, (c1 - start_us) // MIN + 30, n) * MIN + start_us
            ts[rng.random(n) < 0.3] = c0 + int(rng.integers(0, 3)) * MIN  # at and just after the cut
            scope = rng.choice(["BTC", "ETH"], n)
            keep = np.unique(np.stack([scope, ts.astype(str)]), axis=1, return_index=True)[1]  # a key once
            scope, ts, n = scope[keep], ts[keep], len(keep)
            t = {"scope": scope.tolist(), "ts": pa.array(ts, pa.timestamp("us")), "v": rng.normal(size=n).tolist()}
            if name == "episodes":  # the id of an episode stays, its time may move from window to window
                ids = [f"{s}-{int(x) // (20 * MIN)}" for s, x in zip(scope, ts, strict=True)]
                _, first = np.unique(ids, return_index=True)
                t = {"episode_id": [ids[i] for i in first], "ts": t["ts"].take(pa.array(first)),
                     "v": [t["v"][i] for i in first]}
            pq.write_table(pa.table(t), out / f"{name}-0.parquet")
        staged.append((c0, out))
    return staged


def _replayed(con, staged, start_us: int, end_us: int) -> None:
    """What the windows' upserts left before ADR 042, window by window in the transaction."""
    for c0, out in staged:
        if c0 > start_us:
            con.execute(f"DELETE FROM keyed WHERE ts > make_timestamp({c0}) AND ts < make_timestamp({end_us})")
            con.execute(f"DELETE FROM levels WHERE ts >= make_timestamp({c0}) AND ts < make_timestamp({end_us})")
        for name in SCHEMAS:
            backfill._insert_range(con, name, backfill.parquet_glob(out, name), start_us, end_us)


def _rows(con) -> dict[str, list[tuple]]:
    return {name: con.execute(f"SELECT * FROM {name} ORDER BY ALL").fetchall() for name in SCHEMAS}


@pytest.mark.parametrize("seed", range(12))
def test_staged_windows_equal_the_windows_upserts_one_after_the_other(toy_marts, tmp_path, seed):
    rng = np.random.default_rng(seed)
    start_us = T0 + 60 * MIN
    end_us = start_us + 600 * MIN
    cuts = [start_us + int(c) * MIN for c in [0, *sorted(rng.choice(np.arange(20, 580), 4, replace=False))]]
    before = {"keyed": [{"scope": "BTC", "ts": T0, "v": 1.0}, {"scope": "ETH", "ts": end_us + MIN, "v": 2.0}],
              "episodes": [{"episode_id": "SOL-1", "ts": T0 + MIN, "v": 3.0}],
              "levels": [{"scope": "BTC", "ts": T0 + 2 * MIN, "v": 4.0}]}
    staged = _windows(tmp_path, rng, cuts, start_us, end_us)
    reference, got = _connect(before), _connect(before)
    for con in (reference, got):
        for name in SCHEMAS:
            backfill._delete_range(con, name, start_us, end_us)
    _replayed(reference, staged, start_us, end_us)
    backfill._insert_staged(got, None, staged, start_us, end_us)
    want = _rows(reference)
    assert all(len(want[n]) > len(before[n]) + 5 for n in SCHEMAS), {n: len(want[n]) for n in SCHEMAS}
    # the overlaps matter: some rows of the earlier windows are replaced or deleted by later ones
    total = sum(pq.read_metadata(f).num_rows for _, out in staged for f in backfill.parquet_glob(out, "keyed"))
    assert len(want["keyed"]) < total
    assert _rows(got) == want
