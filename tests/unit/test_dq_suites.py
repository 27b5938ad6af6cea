"""The derived data-quality suites catch what they state, on rows written by hand."""

from __future__ import annotations

import pytest

from pipelines.dq import DataQuality
from tests.helpers import memory_warehouse

T = "TIMESTAMPTZ '2026-01-01 00:00:00+00'"


@pytest.fixture
def con():
    c = memory_warehouse()
    yield c
    c.close()


def _bar(con, minute: int, long_n: int = 0, long_usd: float = 0.0, symbol: str = "BTCUSDT") -> None:
    con.execute(f"""INSERT INTO bars_1m (minute_ts, exchange, symbol, base, quote, kind, volume_base, volume_usd,
        trade_count, taker_buy_usd, taker_sell_usd, long_liq_count, long_liq_usd, short_liq_count, short_liq_usd,
        liquidation_events, oi_events, funding_events)
        VALUES ({T} + INTERVAL {minute} MINUTE, 'binance-futures', '{symbol}', 'BTC', 'USDT', 'perpetual', 1, 100,
        1, 50, 50, {long_n}, {long_usd}, 0, 0, {long_n}, 0, 0)""")


def _liq(con, minute: int, n: int, usd: float) -> None:
    con.execute(f"""INSERT INTO liquidations_1m VALUES ('binance-futures', 'BTCUSDT', 'long',
        {T} + INTERVAL {minute} MINUTE, 'BTC', 'USDT', {n}, {usd}, {usd}, {T} + INTERVAL {minute} MINUTE,
        {T} + INTERVAL {minute} MINUTE)""")


def test_reconciliation_passes_when_both_aggregations_agree_and_fails_when_not(con):
    dq = DataQuality.shared()
    _bar(con, 0, long_n=2, long_usd=300.0)
    _liq(con, 0, 2, 300.0)
    assert dq.validate(con, "liquidations_reconciliation", "r1", store=False).success
    _bar(con, 1, long_n=3, long_usd=90.0)
    _liq(con, 1, 2, 60.0)  # one liquidation missing from liquidations_1m
    r = dq.validate(con, "liquidations_reconciliation", "r2", store=False)
    assert not r.success and r.critical and r.rows_checked == 2


def test_continuity_flags_a_series_with_a_gap_over_five_minutes(con):
    dq = DataQuality.shared()
    for m in (0, 1, 2, 7):  # 5-minute gap: allowed
        _bar(con, m)
    assert dq.validate(con, "bars_1m_continuity", "c1", store=False).success
    _bar(con, 20)  # 13-minute gap
    r = dq.validate(con, "bars_1m_continuity", "c2", store=False)
    assert not r.success and not r.critical
    assert dq.validate(con, "bars_1m_continuity", "c3", store=False, since_us=1_767_226_200_000_000).success


def test_a_check_that_cannot_run_is_a_stored_failure_not_a_crash(con):
    con.execute("DROP VIEW v_liquidations_hourly")
    con.execute("DROP VIEW v_liquidations_1m")
    con.execute("DROP TABLE liquidations_1m")
    r = DataQuality.shared().validate(con, "liquidations_1m", "e1")
    assert not r.success and r.failed_expectations == ("check_error",)
    assert con.execute("SELECT success, failed_expectations FROM dq_results WHERE run_id = 'e1'").fetchone() == (
        False, "check_error")


def test_staging_notional_checks_the_archived_events_of_the_checked_days(con, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from schemas.arrow import arrow_schema

    day = tmp_path / "archive" / "liquidation" / "date=2026-01-01"
    day.mkdir(parents=True)
    base = {"exchange": "okx", "symbol": "BTC-USD-SWAP", "base": "BTC", "quote": "USD", "kind": "perpetual",
            "expiry": None, "event_time": 1_767_225_660_000_000, "ingest_time": 1_767_225_660_100_000,
            "side": "long", "order_id": None, "_topic": "liquidations.v1", "_partition": 0, "_offset": 0}
    good = {**base, "price": 50_000.0, "size": 0.02, "notional_usd": 1_000.0}  # 10 contracts x 100 USD
    schema = arrow_schema("liquidation", with_position=True)
    pq.write_table(pa.Table.from_pylist([good], schema=schema), day / "part-a.parquet")
    dq = DataQuality.shared()
    r = dq.validate(con, "stg_events_notional", "s1", store=False, since_us=0, archive_dir=tmp_path / "archive")
    assert r.success and r.rows_checked == 1
    bad = {**base, "_offset": 1, "price": 50_000.0, "size": 0.02, "notional_usd": 100_000.0}  # multiplier applied twice
    pq.write_table(pa.Table.from_pylist([bad], schema=schema), day / "part-b.parquet")
    r = dq.validate(con, "stg_events_notional", "s2", store=False, since_us=0, archive_dir=tmp_path / "archive")
    assert not r.success and r.critical
    # days before the check are not read again
    r = dq.validate(con, "stg_events_notional", "s3", store=False, since_us=1_767_312_000_000_000,
                    archive_dir=tmp_path / "archive")
    assert r.success and r.rows_checked == 0


def test_freshness_warns_on_stale_bars(con):
    _bar(con, 0)  # 2026-01-01: stale against the wall clock
    r = DataQuality.shared().validate(con, "bars_1m_freshness", "f1", store=False)
    assert not r.success and not r.critical


def test_data_docs_build_once_per_publish_with_bounded_history(con, tmp_path, monkeypatch):
    """A long-running job validates every cycle: GX's in-memory result store and the Data Docs
    site keep only the last DOCS_HISTORY results per suite, and a relative docs path works."""
    import pipelines.dq as dq_mod

    dq = DataQuality.shared()
    monkeypatch.chdir(tmp_path)
    docs = dq_mod.Path("gx_docs")  # relative, as under `make run`'s default data/
    _bar(con, 0, long_n=1, long_usd=10.0)
    _liq(con, 0, 1, 10.0)
    runs = dq_mod.DOCS_HISTORY + 3
    for i in range(runs):
        assert dq.validate(con, "liquidations_reconciliation", f"docs-{i}", store=False, docs_dir=docs).success
    assert not (tmp_path / "gx_docs" / "index.html").exists()  # nothing rendered until published
    assert dq.publish_docs() == [tmp_path / "gx_docs"]
    assert (tmp_path / "gx_docs" / "index.html").exists()
    kept = [k for k in dq._ctx.validation_results_store.list_keys()
            if k.expectation_suite_identifier.name == "liquidations_reconciliation"]
    assert len(kept) == dq_mod.DOCS_HISTORY
    pages = list((tmp_path / "gx_docs" / "validations" / "liquidations_reconciliation").rglob("*.html"))
    assert len(pages) == dq_mod.DOCS_HISTORY
    index = (tmp_path / "gx_docs" / "index.html").read_text()
    assert index.count("validations/liquidations_reconciliation/") == dq_mod.DOCS_HISTORY
    assert dq.publish_docs() == []  # nothing new since


def test_warm_up_loads_gx_once_while_the_caller_goes_on(monkeypatch):
    """The backfill starts loading GX in a thread; a concurrent shared() waits for that one
    instance instead of building a second context."""
    import pipelines.dq as dq_mod

    built = []
    real_init = dq_mod.DataQuality.__init__

    def counting_init(self):
        built.append(self)
        real_init(self)

    monkeypatch.setattr(dq_mod.DataQuality, "_instance", None)
    monkeypatch.setattr(dq_mod.DataQuality, "__init__", counting_init)
    th = dq_mod.DataQuality.warm_up()
    got = dq_mod.DataQuality.shared()
    th.join(timeout=120)
    assert not th.is_alive() and len(built) == 1 and got is built[0] is dq_mod.DataQuality.shared()


def test_suites_state_their_expectations_as_gx_keeps_them_without_importing_gx():
    """ADR 053: the suites are ``suites.Expect`` (GX's class name and arguments); what the DuckDB
    gate compiles (``configuration``) must be what GX's own object says, type for type (GX turns
    a between's bounds into floats: 0 and 0.0 would be stored differently in dq_results)."""
    import subprocess
    import sys

    from pipelines.dq.suites import SUITES

    n = 0
    for spec in SUITES.values():
        for e in spec.expectations():
            ours, theirs = e.configuration, e.to_gx().configuration
            assert (ours.type, repr(ours.kwargs)) == (theirs.type, repr(dict(theirs.kwargs))), (spec.name, e)
            n += 1
    assert n > 50
    code = ("import sys; from pipelines.dq.suites import SUITES; [s.expectations() for s in SUITES.values()]; "
            "from pipelines.dq import DataQuality; DataQuality.shared(); "
            "print('great_expectations' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_gate_duckdb_passes_never_loads_gx_and_a_failing_one_does():
    """The stream job's gates between full ones (``gx=False``): a pass is DuckDB's alone, GX is not
    even imported (ADR 053); a failure runs GX, loaded then, and its verdict is stored."""
    import subprocess
    import sys

    code = """
import sys
from pipelines.dq import DataQuality
from tests.helpers import memory_warehouse
from tests.unit.test_dq_suites import _bar, _liq
con = memory_warehouse()
dq = DataQuality.shared()
_bar(con, 0, long_n=2, long_usd=300.0)
_liq(con, 0, 2, 300.0)
ok = dq.validate(con, "liquidations_reconciliation", "r1", store=False, gx=False)
print(ok.success, ok.engine, "great_expectations" in sys.modules, dq.gx_loaded)
_bar(con, 1, long_n=3, long_usd=90.0)
_liq(con, 1, 2, 60.0)
bad = dq.validate(con, "liquidations_reconciliation", "r2", store=False, gx=False)
print(bad.success, bad.engine, "great_expectations" in sys.modules, dq.gx_loaded)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["True duckdb False False", "False gx True True"], out.stdout


def test_a_stale_backlogs_freshness_failure_is_duckdbs_verdict_and_needs_no_gx():
    """ADR 059: between full gates a failure of the freshness suite (non-critical: a catch-up of a
    backlog older than its limit fails it by design) is DuckDB's verdict, stored with the staleness
    it found; GX is not imported for it, and the stream job's early GX load (``gate_needs_gx``)
    does not start for it. A critical suite failing still needs GX; a full gate runs GX on it."""
    import subprocess
    import sys

    code = """
import json, sys
from pipelines import warehouse
from pipelines.dq import DataQuality
from pipelines.jobs.load import gate_needs_gx
from tests.helpers import memory_warehouse
from tests.unit.test_dq_suites import _bar, _liq
con = memory_warehouse()
dq = DataQuality.shared()
_bar(con, 0, long_n=2, long_usd=300.0)  # 2026-01-01: months older than the 300 s limit
_liq(con, 0, 2, 300.0)
since = int(con.execute("SELECT epoch_us(min(minute_ts)) FROM bars_1m").fetchone()[0])
con.execute("INSERT INTO pipeline_runs (run_id, job, started_at, status) VALUES ('f1', 'load', now(), 'ok')")
warehouse.set_state(con, "dq_from_us", since)
print(gate_needs_gx(con, ["bars_1m_freshness", "liquidations_reconciliation"], None))
r = dq.validate(con, "bars_1m_freshness", "f1", since_us=since, gx=False)
print(r.success, r.engine, r.failed_expectations, r.rows_checked, "great_expectations" in sys.modules)
doc = json.loads(con.execute("SELECT result FROM dq_results WHERE run_id = 'f1'").fetchone()[0])
(row,) = doc["rows_checked_sample"]
print(row["staleness_s"] > 86_400, row["bars"], doc["results"][0]["success"])
_bar(con, 1, long_n=3, long_usd=90.0)  # a reconciliation failure (critical): GX must validate it
_liq(con, 1, 2, 60.0)
print(gate_needs_gx(con, ["bars_1m_freshness", "liquidations_reconciliation"], None))
full = dq.validate(con, "bars_1m_freshness", "f2", since_us=since, store=False, gx=True)
print(full.success, full.engine, full.failed_expectations)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:5] == [
        "False", "False duckdb ('expect_column_values_to_be_between',) 1 False", "True 1 False", "True",
        "False gx ('expect_column_values_to_be_between',)"], out.stdout + out.stderr[-2000:]


def test_only_a_non_critical_suite_leaves_its_failures_to_duckdb():
    from pipelines.dq.suites import SUITES, SuiteSpec

    assert [s for s, spec in SUITES.items() if not spec.gx_on_failure] == ["bars_1m_freshness"]
    with pytest.raises(ValueError, match="critical"):
        SuiteSpec("x", "bars_1m", critical=True, expectations=list, gx_on_failure=False)
