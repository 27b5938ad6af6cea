"""Real broker -> replay -> Beam load -> DuckDB, checked against totals computed straight from the capture."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from connectors.config import KafkaSettings
from connectors.kafka.fetch import ParallelFetcher
from connectors.kafka.publish import publish_raw_stream
from connectors.sources.capture import read_capture
from pipelines.jobs.load import run_load
from pipelines.settings import JobSettings
from tests.conftest import FIXTURES

pytestmark = pytest.mark.integration
DEMO = FIXTURES / "demo" / "binance-futures-demo.jsonl.gz"


def expected_from_capture(path: Path) -> dict[tuple, tuple[int, Decimal]]:
    """(symbol, side, minute epoch s) -> (count, USD) read with plain json: no liqstream code involved."""
    out: dict[tuple, list] = defaultdict(lambda: [0, Decimal(0)])
    with gzip.open(path, "rt") as fh:
        for line in fh:
            try:
                raw = json.loads(json.loads(line)["raw"])
            except (ValueError, KeyError):
                continue
            data = raw.get("data", raw)
            if data.get("e") != "forceOrder":
                continue
            o = data["o"]
            side = "long" if o["S"] == "SELL" else "short"
            key = (o["s"], side, o["T"] // 60_000 * 60)
            out[key][0] += 1
            out[key][1] += (Decimal(o["ap"]) * Decimal(o["z"])).quantize(Decimal("0.000001"))
    return {k: (n, usd) for k, (n, usd) in out.items()}


def mart(db: Path) -> dict[tuple, tuple[int, Decimal]]:
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT symbol, side, epoch(minute)::BIGINT, liq_count, notional_usd FROM liquidations_1m").fetchall()
    con.close()
    return {(s, side, m): (n, usd) for s, side, m, n, usd in rows}


@pytest.mark.parametrize("reader", ["beam", "reader-processes"])
def test_replay_then_load_matches_the_capture_and_is_idempotent(fresh_broker, tmp_path, reader):
    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    counters = publish_raw_stream(read_capture(DEMO), kafka)
    assert counters.balanced
    settings = JobSettings(db=tmp_path / "l.duckdb", data_dir=tmp_path, kafka=kafka)
    # the stream job's reader processes (connectors.kafka.fetch), in small chunks, or Beam's own source
    fetcher = ParallelFetcher(kafka, workers=2, chunk=40, min_offsets=0) if reader == "reader-processes" else None

    try:
        first = run_load(settings, fetcher=fetcher)
        assert first.status == "ok" and first.dq_passed
        expected = expected_from_capture(DEMO)
        assert sum(n for n, _ in expected.values()) == 76
        assert mart(settings.db) == expected

        second = run_load(settings, fetcher=fetcher)  # same offsets again: nothing new, nothing changes
    finally:
        if fetcher is not None:
            fetcher.close()
    assert second.status == "empty" and second.ranges == []
    assert mart(settings.db) == expected

    con = duckdb.connect(str(settings.db), read_only=True)
    rejects = con.execute("SELECT topic, reason FROM rejects ORDER BY reason").fetchall()
    dq = con.execute("SELECT suite, success FROM dq_results WHERE run_id = ? AND suite <> 'bars_1m_freshness' "
                     "ORDER BY suite", [first.run_id]).fetchall()
    # the capture is from 2021: stale against the wall clock, which the non-critical freshness suite says
    fresh = con.execute("SELECT success, critical FROM dq_results WHERE run_id = ? AND suite = 'bars_1m_freshness'",
                        [first.run_id]).fetchone()
    offsets = dict(((t, p), o) for t, p, o in con.execute("SELECT topic, \"partition\", next_offset FROM kafka_offsets").fetchall())
    con.close()
    assert rejects == [("raw.v1.dlq", "bad_capture_line"), ("raw.v1.dlq", "unknown_message")]
    assert dq == [("bars_1m", True), ("bars_1m_continuity", True), ("cascades", True), ("contagion", True),
                  ("liquidation_fuel", True), ("liquidation_levels", True), ("liquidations_1m", True), ("liquidations_reconciliation", True), ("oi_deltas", True),
                  ("stg_events_notional", True)]
    assert fresh == (False, False)
    assert sum(o for (t, _), o in offsets.items() if t == "liquidations.v1") == 76
    # the checkpoint results are also published as Great Expectations Data Docs
    docs = tmp_path / "gx_docs"
    assert (docs / "index.html").exists()
    assert {p.name for p in (docs / "validations").iterdir()} >= {"liquidations_1m", "bars_1m", "cascades"}


def test_incremental_loads_merge_partial_minutes_exactly(fresh_broker, tmp_path):
    """Half the capture, load, the other half, load: the same marts as one load of everything."""
    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    items = list(read_capture(DEMO))
    settings = JobSettings(db=tmp_path / "inc.duckdb", data_dir=tmp_path, kafka=kafka)
    publish_raw_stream(items[: len(items) // 3], kafka)
    run_load(settings, run_dq=False)
    publish_raw_stream(items[len(items) // 3:], kafka)
    run_load(settings, run_dq=False)
    assert mart(settings.db) == expected_from_capture(DEMO)


def test_new_broker_is_detected_and_reset_offsets_rebuilds(tmp_path):
    from connectors.kafka.local_broker import LocalBroker
    from pipelines.warehouse import ClusterMismatch

    settings = JobSettings(db=tmp_path / "r.duckdb", data_dir=tmp_path)
    for attempt in range(2):
        with LocalBroker(port=0, run_dir=tmp_path / "b") as b:
            kafka = KafkaSettings(bootstrap_servers=b.bootstrap)
            publish_raw_stream(read_capture(DEMO), kafka)
            s = settings.replace(kafka=kafka)
            if attempt == 1:
                with pytest.raises(ClusterMismatch, match="--reset-offsets"):
                    run_load(s, run_dq=False)
                run_load(s, reset_offsets=True, run_dq=False)
            else:
                run_load(s, run_dq=False)
    assert mart(settings.db) == expected_from_capture(DEMO)


def _demo(cwd: Path) -> subprocess.CompletedProcess:
    # the defaults `make run` uses: paths relative to the working directory (data/liqstream.duckdb)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "LIQSTREAM_"))}
    # the bundled capture (real Binance lines + a malformed and an unknown message) keeps this fast;
    # the default simulated day goes through the same command in tests/e2e
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "demo", "--capture", str(DEMO)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)  # ~1 min alone


def test_demo_twice_gives_identical_marts_counts_bad_lines_and_stops_its_broker(tmp_path):
    db = tmp_path / "data" / "liqstream.duckdb"
    runs = [_demo(tmp_path) for _ in range(2)]
    snapshots = []
    for r in runs:
        assert r.returncode == 0, r.stderr[-3000:]
        assert "dead letters: 2" in r.stdout and "unknown_message=1" in r.stdout and "bad_capture_line=1" in r.stdout
        assert "liquidations_1m          PASS" in r.stdout
        con = duckdb.connect(str(db), read_only=True)
        snapshots.append(con.execute("SELECT * FROM liquidations_1m ORDER BY ALL").fetchall())
        con.close()
        port = r.stdout.split("local broker up at 127.0.0.1:")[1].split()[0]
        pid_file = tmp_path / "data" / "broker" / f"tansu-{port}.pid"
        assert not pid_file.exists()
        alive = subprocess.run(["pgrep", "-f", f"tcp://127.0.0.1:{port}"], capture_output=True)
        assert alive.returncode == 1, "the demo left its broker running"
    assert snapshots[0] == snapshots[1] and len(snapshots[0]) > 0
