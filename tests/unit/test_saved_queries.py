"""Saved analyst queries against a generated day; expected answers computed independently.

Each expectation is built in Python from the base tables' raw rows (not the analyst views the
saved SQL reads), and where possible cross-checked against a different table (bars_1m for
liquidation totals, bars_1m OI for an OI delta).
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

import duckdb
import pytest

from pipelines import queries, warehouse
from pipelines.cli import main
from pipelines.report import parse_bound
from tests.helpers import expected_liquidation_totals
from tests.unit.test_report_day import GeneratedDay, copy_db, get_generated_day


@pytest.fixture(scope="session")
def generated_day(pytestconfig: pytest.Config) -> GeneratedDay:
    return get_generated_day(pytestconfig)


NAMES = ["biggest_oi_drops", "contagion_leaders", "dq_latest", "largest_cascades", "liquidation_totals",
         "liquidations_by_venue_24h", "liquidations_hourly"]


def _run(db, name: str, window_end=None) -> list[dict]:
    con = queries.connect_read_only(db)  # the analyst sandbox the CLI and the report use
    try:
        queries.set_window_end(con, window_end)
        cols, rows = queries.run_query(con, queries.load_saved(name).sql)
    finally:
        con.close()
    return [dict(zip(cols, r, strict=True)) for r in rows]


def _base_rows(db, sql: str) -> list[dict]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        cur = con.execute(sql)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()


def test_every_saved_query_is_documented_and_its_columns_match(generated_day: GeneratedDay) -> None:
    saved = queries.list_saved()
    assert sorted(q.name for q in saved) == NAMES
    for q in saved:
        assert q.title and q.answers and q.columns, q.name
        con = queries.connect_read_only(generated_day.db)
        try:
            cols, _ = queries.run_query(con, q.sql)
        finally:
            con.close()
        assert cols == list(q.columns), f"{q.name}: header documents {list(q.columns)}, query returns {cols}"


def test_largest_cascades(generated_day: GeneratedDay) -> None:
    got = _run(generated_day.db, "largest_cascades")
    base = _base_rows(generated_day.db, "SELECT * FROM cascades")
    assert base, "the generated day must hold episodes"
    for e in base:
        e["usd"] = e["long_liq_usd"] if e["direction"] == "long_liquidation" else e["short_liq_usd"]
    expected = sorted(base, key=lambda e: (-e["usd"], e["start_ts"], e["scope"]))[:20]
    assert [(r["episode_id"], r["liquidated_usd"]) for r in got] == [(e["episode_id"], e["usd"]) for e in expected]
    # cross-check against another table: the side's USD liquidated in [start, end) in liquidations_1m
    liq = _base_rows(generated_day.db, "SELECT base, side, minute, notional_usd FROM liquidations_1m")
    for r in got:
        side = "long" if r["direction"] == "long_liquidation" else "short"
        e = next(e for e in base if e["episode_id"] == r["episode_id"])
        total = sum((x["notional_usd"] for x in liq if x["side"] == side and e["start_ts"] <= x["minute"] < e["end_ts"]
                     and (r["scope"] == "market" or x["base"] == r["scope"])), Decimal(0))
        assert total == r["liquidated_usd"], r


def _by_venue_expected(rows: list[dict]) -> dict[str, dict]:
    latest = max(r["minute"] for r in rows)
    out: dict[str, dict] = defaultdict(lambda: {"long_usd": Decimal(0), "short_usd": Decimal(0), "liquidations": 0,
                                                "largest_usd": Decimal(0)})
    for r in rows:
        if not latest - r["minute"] < timedelta(hours=24):  # the 1,440 minutes ending with the latest one
            continue
        d = out[r["exchange"]]
        d[f"{r['side']}_usd"] += r["notional_usd"]
        d["liquidations"] += r["liq_count"]
        d["largest_usd"] = max(d["largest_usd"], r["max_notional_usd"])
    grand = sum(d["long_usd"] + d["short_usd"] for d in out.values())
    for d in out.values():
        d["total_usd"] = d["long_usd"] + d["short_usd"]
        d["share_pct"] = round(float(100 * d["total_usd"] / grand), 2)
        d["window_end"] = latest + timedelta(minutes=1)
    return dict(out)


def _check_by_venue(db) -> dict[str, dict]:
    got = _run(db, "liquidations_by_venue_24h")
    expected = _by_venue_expected(_base_rows(db, "SELECT * FROM liquidations_1m"))
    assert [r["exchange"] for r in got] == sorted(expected, key=lambda ex: (-expected[ex]["total_usd"], ex))
    for r in got:
        e = expected[r["exchange"]]
        for k in ("long_usd", "short_usd", "total_usd", "liquidations", "largest_usd", "window_end"):
            assert r[k] == e[k], (r["exchange"], k, r[k], e[k])
        assert float(r["share_pct"]) == pytest.approx(e["share_pct"], abs=0.006)
    return {r["exchange"]: r for r in got}


def test_liquidations_by_venue_last_24h(generated_day: GeneratedDay, tmp_path) -> None:
    got = _check_by_venue(generated_day.db)
    # the whole 3-hour day is inside the window: totals equal bars_1m's liquidation columns (another table)
    bars = _base_rows(generated_day.db, "SELECT exchange, sum(long_liq_usd) AS l, sum(short_liq_usd) AS s "
                                        "FROM bars_1m GROUP BY exchange")
    assert {b["exchange"]: (b["l"], b["s"]) for b in bars} == {ex: (r["long_usd"], r["short_usd"]) for ex, r in got.items()}

    # the window is measured from the data's latest minute: rows exactly 24 h before it fall out,
    # 23 h 59 min before it stay in
    db = copy_db(generated_day, tmp_path)
    con = warehouse.connect(db)
    latest = con.execute("SELECT max(minute) FROM liquidations_1m").fetchone()[0]
    for minute, usd in ((latest - timedelta(hours=24), "7000000"), (latest - timedelta(hours=23, minutes=59), "1000000"),
                        (latest - timedelta(days=3), "9000000")):
        con.execute("INSERT INTO liquidations_1m VALUES ('bybit', 'BTCUSDT', 'short', ?, 'BTC', 'USDT', 1, ?, ?, ?, ?)",
                    [minute, usd, usd, minute, minute])
    con.close()
    got2 = _check_by_venue(db)
    assert got2["bybit"]["short_usd"] == got["bybit"]["short_usd"] + Decimal("1000000")


def test_liquidation_totals_per_venue_and_base_over_four_spans(generated_day: GeneratedDay) -> None:
    db = generated_day.db
    latest = _base_rows(db, "SELECT max(minute) AS m FROM liquidations_1m")[0]["m"]
    # the default end (the data's latest minute) and two ends inside the day, one between episodes
    for end in (None, latest - timedelta(minutes=75), latest - timedelta(hours=2, minutes=13)):
        got = _run(db, "liquidation_totals", end)
        expected = expected_liquidation_totals(db, end)
        assert {(r["level"], r["name"], r["span"]) for r in got} == set(expected), end
        for r in got:
            e = expected[(r["level"], r["name"], r["span"])]
            assert {k: r[k] for k in e} == e, (end, r)
        # shortest span first within a level, venues before bases
        order = [(r["level"] == "base", ["1h", "4h", "12h", "24h"].index(r["span"])) for r in got]
        assert order == sorted(order)
    # the 24 h venue rows are liquidations_by_venue_24h's figures, at its default end and at an as-of end
    for end in (None, latest - timedelta(minutes=75)):
        by_venue = {r["exchange"]: r for r in _run(db, "liquidations_by_venue_24h", end)}
        totals = {r["name"]: r for r in _run(db, "liquidation_totals", end) if r["level"] == "venue" and r["span"] == "24h"}
        assert set(totals) == set(by_venue)
        for ex, r in totals.items():
            assert [r[k] for k in ("long_usd", "short_usd", "liquidations", "window_end")] == \
                   [by_venue[ex][k] for k in ("long_usd", "short_usd", "liquidations", "window_end")]


def test_biggest_oi_drops(generated_day: GeneratedDay) -> None:
    got = _run(generated_day.db, "biggest_oi_drops")
    rows = _base_rows(generated_day.db, "SELECT * FROM oi_deltas WHERE span = '1h'")
    worst: dict[tuple, dict] = {}
    for r in rows:
        if r["oi_change_usd"] >= 0:
            continue
        key = (r["level"], r["exchange"], r["symbol"])
        if key not in worst or (r["oi_change_usd"], r["as_of_ts"]) < (worst[key]["oi_change_usd"], worst[key]["as_of_ts"]):
            worst[key] = r
    expected = sorted(worst.values(), key=lambda r: (r["oi_change_usd"], r["level"], r["exchange"], r["symbol"]))[:20]
    assert [(r["level"], r["exchange"], r["symbol"], r["as_of_ts"], r["oi_change_usd"]) for r in got] == \
        [(r["level"], r["exchange"], r["symbol"], r["as_of_ts"], r["oi_change_usd"]) for r in expected]
    assert got[0]["level"] == "market" and got[0]["regime"] == "deleveraging"
    # the biggest venue-level drop, re-derived from bars_1m's last OI snapshot at both ends of the hour
    v = next(r for r in got if r["level"] == "venue")
    bars = {b["minute_ts"]: b["oi_last_usd"] for b in _base_rows(
        generated_day.db, f"SELECT minute_ts, oi_last_usd FROM bars_1m WHERE exchange = '{v['exchange']}' "
                          f"AND symbol = '{v['symbol']}' AND oi_last_usd IS NOT NULL")}
    start, end = bars[v["as_of_ts"] - timedelta(hours=1)], bars[v["as_of_ts"]]
    assert v["oi_change_usd"] == pytest.approx(end - start, rel=1e-9)
    assert v["oi_change_pct"] == pytest.approx((end / start - 1) * 100, rel=1e-9)


def test_contagion_leaders(generated_day: GeneratedDay) -> None:
    got = _run(generated_day.db, "contagion_leaders")
    rows = _base_rows(generated_day.db, "SELECT * FROM contagion")
    assert rows
    expected = []
    for w in sorted({r["window_minutes"] for r in rows}):
        last = max(r["as_of_ts"] for r in rows if r["window_minutes"] == w)
        expected += sorted((r for r in rows if r["window_minutes"] == w and r["as_of_ts"] == last),
                           key=lambda r: r["rank"])
    assert [(r["window_minutes"], r["rank"], r["base"], r["as_of_ts"]) for r in got] == \
        [(r["window_minutes"], r["rank"], r["base"], r["as_of_ts"]) for r in expected]
    # rank 1 is the highest score, and BTC (the reference) is never ranked
    scores = [r["contagion_score"] for r in got]
    assert scores == sorted(scores, reverse=True) and "BTC" not in {r["base"] for r in got}


def test_liquidations_hourly(generated_day: GeneratedDay) -> None:
    got = _run(generated_day.db, "liquidations_hourly")
    hours: dict = defaultdict(lambda: {"long": Decimal(0), "short": Decimal(0), "n": 0, "max": Decimal(0)})
    for r in _base_rows(generated_day.db, "SELECT * FROM liquidations_1m"):
        h = hours[r["minute"].replace(minute=0, second=0, microsecond=0)]
        h[r["side"]] += r["notional_usd"]
        h["n"] += r["liq_count"]
        h["max"] = max(h["max"], r["max_notional_usd"])
    assert [r["hour"] for r in got] == sorted(hours)
    for r in got:
        h = hours[r["hour"]]
        assert (r["long_usd"], r["short_usd"], r["total_usd"], r["liquidations"], r["largest_usd"]) == \
            (h["long"], h["short"], h["long"] + h["short"], h["n"], h["max"])
        assert float(r["long_share_pct"]) == pytest.approx(float(100 * h["long"] / (h["long"] + h["short"])), abs=0.006)


def test_dq_latest(generated_day: GeneratedDay, tmp_path) -> None:
    got = _run(generated_day.db, "dq_latest")
    rows = _base_rows(generated_day.db, "SELECT * FROM dq_results")
    suites = sorted({r["suite"] for r in rows})
    assert [r["suite"] for r in got] == suites
    assert all(r["verdict"] == "PASS" for r in got)  # the generated day passed its gate
    # a later failing checkpoint of a critical suite becomes that suite's verdict
    db = copy_db(generated_day, tmp_path)
    con = warehouse.connect(db)
    con.execute("INSERT INTO dq_results VALUES ('later-run', 'cascades', 'cascades', now() + INTERVAL 1 HOUR, false, "
                "true, 6, 5, 1, 'expect_column_values_to_not_be_null', '{}')")
    con.close()
    verdicts = {r["suite"]: (r["verdict"], r["run_id"]) for r in _run(db, "dq_latest")}
    assert verdicts["cascades"] == ("FAIL", "later-run")
    assert {s: v for s, (v, _) in verdicts.items() if s != "cascades"} == {s: "PASS" for s in suites if s != "cascades"}


# ---- CLI -------------------------------------------------------------------------------------------
def test_cli_saved_query_table_csv_json(generated_day: GeneratedDay, capsys) -> None:
    db = str(generated_day.db)
    assert main(["query", "--saved", "largest_cascades", "--db", db]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Largest cascades"
    header = next(i for i, line in enumerate(out) if line.startswith("scope"))
    assert set(out[header + 1].replace(" ", "")) == {"-"}
    # aligned: every data row ends its right-aligned liquidated_usd column where the header's does
    col_end = out[header].index("liquidated_usd") + len("liquidated_usd")
    n = len(_base_rows(generated_day.db, "SELECT 1 FROM cascades"))
    body = out[header + 2: header + 2 + min(n, 20)]
    assert len(body) == min(n, 20) and all(line[col_end - 1].isdigit() and line[col_end] == " " for line in body)

    assert main(["query", "--saved", "largest-cascades", "--format", "json", "--db", db]) == 0
    as_json = json.loads(capsys.readouterr().out)
    assert [r["episode_id"] for r in as_json] == [r["episode_id"] for r in _run(generated_day.db, "largest_cascades")]

    assert main(["query", "--saved", "liquidations_by_venue_24h", "--format", "csv", "--db", db]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ",".join(queries.load_saved("liquidations_by_venue_24h").columns)
    assert len(lines) == 1 + len(_run(generated_day.db, "liquidations_by_venue_24h"))


def test_cli_as_of_ends_the_windows_there(generated_day: GeneratedDay, capsys) -> None:
    db = str(generated_day.db)
    assert main(["query", "--saved", "liquidation_totals", "--as-of", "2026-03-09T13:30", "--format", "json",
                 "--db", db]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and {r["window_end"] for r in rows} == {"2026-03-09T13:30:00+00:00"}
    expected = expected_liquidation_totals(generated_day.db, queries_end := parse_bound("2026-03-09T13:30"))
    assert {(r["level"], r["name"], r["span"]): Decimal(str(r["total_usd"])) for r in rows} == \
           {k: v["total_usd"] for k, v in expected.items()}, queries_end
    assert main(["query", "--saved", "liquidation_totals", "--as-of", "teatime", "--db", db]) == 2
    assert "--as-of must be" in capsys.readouterr().err


def test_cli_list_saved_and_unknown_name(capsys) -> None:
    assert main(["query", "--list-saved"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in NAMES)
    assert main(["query", "--saved", "no_such_query"]) == 2
    err = capsys.readouterr().err
    assert "no saved query 'no_such_query'" in err and "largest_cascades" in err


def test_cli_query_refuses_writes_with_a_clear_error(generated_day: GeneratedDay, capsys) -> None:
    before = _base_rows(generated_day.db, "SELECT count(*) AS n FROM cascades")[0]["n"]
    for sql in ("DELETE FROM cascades", "DROP TABLE bars_1m", "INSERT INTO quarantine VALUES ('x', now(), now(), 'x', now())"):
        assert main(["query", sql, "--db", str(generated_day.db)]) == 1
        err = capsys.readouterr().err
        assert "read-only" in err and "cannot change them" in err, err
    assert _base_rows(generated_day.db, "SELECT count(*) AS n FROM cascades")[0]["n"] == before


SANDBOXED = {
    "COPY TO a file": "COPY (SELECT 42) TO '{tmp}/x.csv'",
    "read_csv of any file": "SELECT * FROM read_csv('/etc/passwd')",
    "read_text": "SELECT * FROM read_text('/etc/hostname')",
    "read_parquet": "SELECT * FROM read_parquet('{tmp}/*.parquet')",
    "glob": "SELECT * FROM glob('/etc/*')",
    "INSTALL": "INSTALL httpfs",
    "LOAD": "LOAD httpfs",
    "ATTACH": "ATTACH '{tmp}/other.duckdb'",
    "SET": "SET memory_limit = '1GB'",
    "SET the access back on": "SET enable_external_access = true",
    "RESET the lock": "RESET lock_configuration",
}


@pytest.mark.parametrize("what", list(SANDBOXED))
def test_cli_query_is_no_file_or_network_client(generated_day: GeneratedDay, capsys, tmp_path, what: str) -> None:
    sql = SANDBOXED[what].format(tmp=tmp_path)
    assert main(["query", sql, "--db", str(generated_day.db)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot reach files, the network, extensions or settings" in err, err
    assert list(tmp_path.iterdir()) == []  # COPY/ATTACH created nothing
    # the same statement on a plain read-only connection is not refused by the sandbox: the test
    # would catch a sandbox that is not there (COPY TO and ATTACH write; skip them here)
    if what in ("read_csv of any file", "read_text", "glob", "SET"):
        con = warehouse.connect(generated_day.db, read_only=True)
        try:
            con.execute(sql).fetchall()
        finally:
            con.close()


def test_format_table_alignment() -> None:
    text = queries.format_table(["name", "usd", "n"], [("a", 1234567.891, 3), ("bbb", 12.5, None)])
    assert text.splitlines() == [
        "name        usd  n",
        "----  ---------  -",
        "a     1,234,568  3",
        "bbb       12.50",
        "(2 rows)",
    ]
