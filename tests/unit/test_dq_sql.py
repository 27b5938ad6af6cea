"""The gate's DuckDB fast path (pipelines/dq/sql.py) gives GX's verdict, expectation by expectation.

Every suite runs on frames of its own columns holding one kind of violation at a time (nulls,
NaN, values out of range or set, duplicate keys, a pair out of order, a value missing on one side
of a pair), each through GX's checkpoint and through DuckDB on the same rows; the set of failed
expectation types must be equal. GX is the reference: this is what lets a gate between its full
ones run DuckDB alone.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pipelines.dq import DataQuality
from pipelines.dq.sql import compile_expectation, sql_verdict
from pipelines.dq.suites import SUITES
from tests.helpers import memory_warehouse

TABLE_SUITES = [s for s, spec in SUITES.items() if spec.query is None]
DERIVED_SUITES = [s for s, spec in SUITES.items() if spec.query is not None]
T0 = pd.Timestamp("2026-01-01T00:00:00Z")


@pytest.fixture(scope="module")
def con():
    c = memory_warehouse()
    yield c
    c.close()


def _good_rows(con, table: str, n: int = 4) -> pd.DataFrame:
    """``n`` rows of ``table``'s columns that pass its suite (built column by column from its type)."""
    cols = con.execute(f"DESCRIBE {table}").fetchall()
    data: dict[str, list] = {}
    for name, typ, *_ in cols:
        t = typ.upper()
        if "TIMESTAMP" in t:
            data[name] = [T0 + pd.Timedelta(minutes=i) for i in range(n)]
        elif t in ("DOUBLE", "FLOAT") or t.startswith("DECIMAL"):
            data[name] = [10.0 + i for i in range(n)]
        elif t in ("INTEGER", "BIGINT", "SMALLINT", "HUGEINT"):
            data[name] = [1 + i for i in range(n)]
        elif t == "BOOLEAN":
            data[name] = [True] * n
        else:
            data[name] = [f"{name}-{i}" for i in range(n)]
    df = pd.DataFrame(data)
    fixed = {"side": "long", "kind": "perpetual", "direction": "long_liquidation", "status": "closed"}
    for c, v in fixed.items():
        if c in df:
            df[c] = v
    if table == "cascades":
        df["kind"], df["severity_level"] = "cascade", 1
        df["end_ts"] = df["start_ts"] + pd.Timedelta(minutes=5)
    for hi, lo in (("high", "low"), ("price_high", "price_low"), ("notional_usd", "max_notional_usd")):
        if hi in df:
            df[hi] = df[lo] + 1.0
    if table == "liquidation_fuel":
        for s in ("long", "short"):
            df[f"{s}_usd_1pct"], df[f"{s}_usd_2pct"], df[f"{s}_usd_5pct"] = 1.0, 2.0, 5.0
    return df


def _derived_rows(spec, n: int = 4) -> pd.DataFrame:
    """Rows of a derived suite's query result (the columns its expectations name) that pass it."""
    data: dict[str, list] = {}
    for e in DataQuality.shared().expectations(spec):
        kw = dict(e.configuration.kwargs)
        if "value_set" in kw:
            data[kw["column"]] = [kw["value_set"][0]] * n
        else:
            lo, hi = kw.get("min_value"), kw.get("max_value")
            mid = (lo + hi) / 2 if lo is not None and hi is not None else (lo + 1 if lo is not None else hi - 1)
            data[kw["column"]] = [float(mid)] * n
    return pd.DataFrame(data)


def _variants(df: pd.DataFrame, spec) -> list[tuple[str, pd.DataFrame]]:
    """One frame per violation each expectation's arguments suggest, plus the empty frame."""
    out = [("good", df), ("empty", df.iloc[:0])]
    for e in DataQuality.shared().expectations(spec):
        kw = dict(e.configuration.kwargs)
        kind = e.configuration.type
        cols = [kw[k] for k in ("column", "column_A", "column_B") if k in kw] + list(kw.get("column_list", []))
        for c in cols:
            for label, value in (("null", None), ("nan", math.nan)):
                bad = df.copy()
                bad[c] = bad[c].astype(object)
                bad.loc[1, c] = value
                out.append((f"{kind}:{c}:{label}", bad))
        if "column_list" in kw or kind == "expect_column_values_to_be_unique":
            bad = df.copy()
            bad.iloc[2] = bad.iloc[1]
            out.append((f"{kind}:dup", bad))
        if "value_set" in kw:
            bad = df.copy()
            bad.loc[0, kw["column"]] = "not-in-set"
            out.append((f"{kind}:out", bad))
        if kind == "expect_column_values_to_be_between":
            for label, v in (("at-min", kw.get("min_value")), ("below", (kw.get("min_value") or 0) - 1),
                             ("above", (kw.get("max_value") or 0) + 1), ("at-max", kw.get("max_value")),
                             ("inf", math.inf), ("-inf", -math.inf)):
                if v is not None:
                    bad = df.copy()
                    if isinstance(v, float) and math.isinf(v):
                        bad[kw["column"]] = bad[kw["column"]].astype(float)
                    bad.loc[0, kw["column"]] = v
                    out.append((f"{kind}:{kw['column']}:{label}", bad))
        if kind == "expect_column_pair_values_a_to_be_greater_than_b":
            a, b = kw["column_A"], kw["column_B"]
            for label, shift in (("equal", 0), ("less", -1)):
                bad = df.copy()
                bad.loc[0, a] = bad.loc[0, b] + (pd.Timedelta(minutes=shift) if "ts" in a else shift)
                out.append((f"{kind}:{label}", bad))
            both = df.copy().astype({a: object, b: object})
            both.loc[0, a], both.loc[0, b] = None, None
            out.append((f"{kind}:both-missing", both))
        if kind == "expect_column_pair_values_to_be_in_set":
            a, b = kw["column_A"], kw["column_B"]
            for label, (x, y) in (("mismatch", ("cascade", -1)), ("burst", ("liquidation_burst", -1)),
                                  ("unknown", ("cascade", 99))):
                bad = df.copy()
                bad.loc[0, a], bad.loc[0, b] = x, y
                out.append((f"{kind}:{label}", bad))
    return out


def _gx_failed(dq, spec, frame) -> set[str]:
    result = dq._checkpoint(spec).run(batch_parameters={"dataframe": frame})
    ((key, vres),) = result.run_results.items()
    dq._ctx.validation_results_store.remove_key(key)  # the shared context's store stays as the gate keeps it
    return {r["expectation_config"]["type"] for r in vres.to_json_dict()["results"] if not r["success"]}


@pytest.mark.parametrize("suite", TABLE_SUITES + DERIVED_SUITES)
def test_duckdb_verdict_equals_gx_verdict_on_every_kind_of_violation(con, suite):
    dq = DataQuality.shared()
    spec = SUITES[suite]
    cases = _variants(_good_rows(con, spec.table) if spec.query is None else _derived_rows(spec), spec)
    assert len(cases) > 5
    failing = 0
    for label, frame in cases:
        con.register("frame", frame)
        fast = sql_verdict(con, "SELECT * FROM frame", dq.expectations(spec))
        assert fast is not None, f"{suite}: an expectation did not compile"
        sql_failed = {r["expectation_config"]["type"] for r in fast["results"] if not r["success"]}
        assert sql_failed == _gx_failed(dq, spec, frame), f"{suite} / {label}"
        assert fast["success"] == (not sql_failed) and fast["rows"] == len(frame)
        failing += bool(sql_failed)
    assert failing >= 2  # the variants do violate: the comparison is not all passes


def test_an_expectation_with_an_argument_it_does_not_state_is_left_to_gx(con):
    import great_expectations.expectations as gxe

    types = {"x": "DOUBLE"}
    assert compile_expectation(gxe.ExpectColumnValuesToBeBetween(column="x", min_value=0), types) is not None
    assert compile_expectation(gxe.ExpectColumnValuesToBeBetween(column="x", min_value=0, mostly=0.9), types) is None
    assert compile_expectation(gxe.ExpectColumnMeanToBeBetween(column="x", min_value=0), types) is None
    con.execute("CREATE OR REPLACE TEMP TABLE xs AS SELECT 1.0 AS x")
    assert sql_verdict(con, "SELECT * FROM xs", [gxe.ExpectColumnMeanToBeBetween(column="x", min_value=0)]) is None


def test_validate_without_gx_stores_a_duckdb_pass_and_runs_gx_on_a_failure(con):
    dq = DataQuality.shared()
    con.execute("DELETE FROM liquidations_1m")
    con.execute("""INSERT INTO liquidations_1m VALUES ('okx', 'BTC-USDT-SWAP', 'long', TIMESTAMPTZ '2026-01-01 00:00:00+00',
        'BTC', 'USDT', 2, 300.0, 200.0, TIMESTAMPTZ '2026-01-01 00:00:00+00', TIMESTAMPTZ '2026-01-01 00:00:30+00')""")
    r = dq.validate(con, "liquidations_1m", "fast-1", gx=False)
    assert r.success and r.engine == "duckdb" and r.rows_checked == 1 and r.evaluated == r.successful == 9
    con.execute("UPDATE liquidations_1m SET notional_usd = -1")  # and below the largest: two expectations fail
    r = dq.validate(con, "liquidations_1m", "fast-2", gx=False)
    assert not r.success and r.engine == "gx" and set(r.failed_expectations) == {
        "expect_column_values_to_be_between", "expect_column_pair_values_a_to_be_greater_than_b"}
    (stored,) = con.execute("SELECT json_extract(result, '$.duckdb_verdict.success')::VARCHAR FROM dq_results "
                            "WHERE run_id = 'fast-2'").fetchone()
    assert stored == "false"


def test_a_full_gate_logs_where_duckdb_and_gx_disagree_and_keeps_gxs_verdict(con, monkeypatch, caplog):
    import pipelines.dq as dq_mod

    dq = DataQuality.shared()
    con.execute("UPDATE liquidations_1m SET notional_usd = -1")  # GX fails it
    real = dq_mod.sql_verdict

    def wrong(c, sql, exps):  # a fast path stating an expectation wrongly: passes everything
        v = real(c, sql, exps)
        return {**v, "success": True, "results": [{**r, "success": True} for r in v["results"]]}

    monkeypatch.setattr(dq_mod, "sql_verdict", wrong)
    r = dq.validate(con, "liquidations_1m", "audit-1", gx=True, audit=True)
    assert not r.success and r.engine == "gx"
    assert any("differs from GX's" in m for m in caplog.messages)
