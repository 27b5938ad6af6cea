"""The bench's peers (bench/peers.py): kept out of the product, pinned, and computing what the job computes.

The peers themselves (Bytewax; Polars and confluent-kafka too, but those two are product
dependencies since ADR 021) are the optional ``.[bench]`` extra:
`make test` does not need them. What runs here needs only the product's dependencies: the DuckDB
SQL peer against an independent pure-Python fold of the same archive rows.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pyarrow.parquet as pq

from bench import data, peers
from tests.unit.test_bench_quick import _fake_stages

ROOT = Path(__file__).resolve().parents[2]
#: Polars and confluent-kafka are peers too (bars from the archive; the raw librdkafka loop) but
#: product dependencies since ADR 021 (the readers' Avro block decode; their second Kafka client)
PEER_MODULES = {"bytewax"}


def test_the_product_never_imports_a_peer():
    found = []
    for pkg in ("connectors", "pipelines", "schemas"):
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                found += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in PEER_MODULES]
    assert found == []


def test_the_bench_extra_is_pinned_in_the_lock():
    text = (ROOT / "pyproject.toml").read_text()
    extra = re.search(r"^bench = \[(.*?)\]", text, re.S | re.M).group(1)
    pins = re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', extra)
    assert {n for n, _ in pins} >= {"bytewax", "py-spy"}
    product = re.search(r"^dependencies = \[(.*?)\]", text, re.S | re.M).group(1)
    pins += [(n, v) for n, v in re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', product) if n in ("polars", "confluent-kafka")]
    assert {"polars", "confluent-kafka"} <= {n for n, _ in pins}
    lock = {ln.split("==")[0].lower(): ln.split("==")[1] for ln in (ROOT / "constraints.txt").read_text().splitlines()
            if "==" in ln and not ln.startswith("#")}
    assert all(lock.get(n.lower()) == v for n, v in pins)


def _python_bars(archive: Path) -> dict[tuple, dict]:
    """Bars by (exchange, symbol, minute) from the archive's rows, folded one event at a time in
    Python (``peers._fold``: ints for micro-USD, Decimal for base units)."""
    bars: dict[str, list] = {}
    for et in data.EVENT_TYPES:
        for f in sorted((archive / et).rglob("*.parquet")):
            for r in pq.read_table(f).to_pylist():
                key = f"{r['exchange']}\x00{r['symbol']}\x00{r['event_time'] // peers.MINUTE_US * peers.MINUTE_US}"
                peers._fold(bars.setdefault(key, peers._new_bar()), (et, r))
    return {(b["exchange"], b["symbol"], b["m"]): b for b in (peers._bar_record(k, v) for k, v in bars.items())}


def test_duckdb_peer_equals_a_python_fold_and_names_its_base_volume_rounding(tmp_path):
    data.write_synth_archive(tmp_path / "archive", 4_000, days=1, seed=9, hours_per_day=1)
    want = _python_bars(tmp_path / "archive")
    got = {(r["exchange"], r["symbol"], r["m"]): r for r in peers.duckdb_archive(tmp_path / "archive")["bars"].to_pylist()}
    assert set(got) == set(want) and len(want) > 32
    differ = {c for k in want for c in peers.BAR_COLUMNS if got[k][c] != want[k][c]}
    # DuckDB's DOUBLE -> DECIMAL cast rounds size x 1e12 in double arithmetic: only that column may differ
    assert differ <= {"volume_base_exact"}
    # the Python fold is exact, as Arrow's cast (the job's) is
    import pyarrow as pa

    t = pq.read_table(sorted((tmp_path / "archive" / "trade").rglob("*.parquet")))
    assert sum(b["volume_base_exact"] for b in want.values()) == sum(
        v.as_py() for v in t["size"].cast(pa.decimal128(38, 12), safe=False))
    assert sum(b["trade_count"] for b in want.values()) == t.num_rows


def test_duckdb_peer_liquidation_minutes_match_the_rows(tmp_path):
    data.write_synth_archive(tmp_path / "archive", 20_000, days=1, seed=10, hours_per_day=1)
    liq = peers.duckdb_archive(tmp_path / "archive")["liquidations"].to_pylist()
    rows = pq.read_table(sorted((tmp_path / "archive" / "liquidation").rglob("*.parquet"))).to_pylist()
    assert sum(r["liq_count"] for r in liq) == len(rows) > 0
    assert sum(r["notional_usd"] for r in liq) == sum(round(r["notional_usd"] * 1e6) for r in rows)


def test_memory_ratio_is_most_days_over_fewest():
    runs = [{"days": 90, "peak_pss_mb": 600.0}, {"days": 10, "peak_pss_mb": 500.0}]
    assert peers.memory_ratio(runs) == 1.2
    assert peers.memory_ratio(runs[:1]) is None


def test_backfill_scale_targets_one_ratio_per_size_and_the_memory_ratio():
    from bench import backfill_scale, run

    runs = [{"events": 4_000_000, "archive": {"days": 4}, "ratio_to_duckdb_sql": 2.5},
            {"events": 50_000_000, "archive": {"days": 25}, "ratio_to_duckdb_sql": 7.0}]
    got = backfill_scale.targets(runs, [{"days": 10, "peak_pss_mb": 500.0}, {"days": 90, "peak_pss_mb": 650.0}])
    assert [(t["value"], t["met"]) for t in got] == [(2.5, True), (7.0, False), (1.3, False)]
    assert "50,000,000 events" in got[1]["name"] and all(t["op"] == "<=" for t in got)
    assert backfill_scale.targets(runs[:1], []) == got[:1]  # no memory runs: no memory target
    # make bench's own targets take the scale stage's runs (bench/run.py)
    targets = run.targets({**_fake_stages(), "backfill_scale": [runs[1]]})
    (t,) = [t for t in targets if t["name"] == "backfill time / DuckDB SQL time, 50,000,000 events"]
    assert (t["value"], t["target"], t["met"]) == (7.0, 3.0, False)
