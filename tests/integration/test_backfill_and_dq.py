"""Backfill = streaming (same graph), exact day replacement, idempotence, and the DQ gate / quarantine."""

from __future__ import annotations

from datetime import date

import duckdb
import pytest
from kafka import KafkaProducer

from connectors.avro import AvroEncoder
from connectors.config import KafkaSettings
from connectors.kafka.publish import publish_raw_stream
from connectors.sources.capture import read_capture
from pipelines.jobs.backfill import run_backfill
from pipelines.jobs.load import run_load
from pipelines.settings import JobSettings
from tests.conftest import FIXTURES

pytestmark = pytest.mark.integration
DEMO = FIXTURES / "demo" / "binance-futures-demo.jsonl.gz"
DAY = date(2021, 7, 22)
MARTS = {"bars_1m": "exchange, symbol, minute_ts", "liquidations_1m": "exchange, symbol, side, minute",
         "bars_1m_symbol": "base, minute_ts", "cascades": "episode_id", "oi_deltas": "level, exchange, symbol, as_of_ts, span",
         "contagion": "base, as_of_ts, window_minutes",
         "liquidation_levels": "base, exchange, symbol, as_of_ts, side, price_low", "liquidation_fuel": "base, minute_ts"}


def snapshot(db) -> dict[str, list]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY {k}").fetchall() for t, k in MARTS.items()}
    finally:
        con.close()


@pytest.fixture
def streamed(fresh_broker, tmp_path):
    """The demo capture through Kafka and two streaming cycles (so minutes are merged across cycles)."""
    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    items = list(read_capture(DEMO))
    # one backfill worker in-process keeps these tests fast; the archive test below uses two processes
    settings = JobSettings(db=tmp_path / "stream.duckdb", data_dir=tmp_path / "data", kafka=kafka, backfill_workers=1)
    settings.data_dir.mkdir()
    publish_raw_stream(items[:900], kafka)
    run_load(settings, run_dq=False)
    publish_raw_stream(items[900:], kafka)
    run_load(settings)
    return settings


def test_backfill_from_archive_and_from_capture_equal_the_streaming_marts(streamed, tmp_path):
    streamed_marts = snapshot(streamed.db)
    assert streamed_marts["bars_1m"] and streamed_marts["liquidations_1m"] and streamed_marts["bars_1m_symbol"]
    from_archive = streamed.replace(db=tmp_path / "bf_archive.duckdb", backfill_workers=2)
    r1 = run_backfill(from_archive, DAY, DAY, source="archive")
    assert r1.status == "ok" and r1.dq_passed and r1.events == 215  # every normalized event, once
    assert snapshot(from_archive.db) == streamed_marts
    from_capture = streamed.replace(db=tmp_path / "bf_capture.duckdb")
    r2 = run_backfill(from_capture, DAY, DAY, source="capture", captures=[str(DEMO)])
    assert r2.status == "ok" and snapshot(from_capture.db) == streamed_marts


def test_backfill_twice_changes_nothing_and_replaces_only_its_days(streamed):
    con = duckdb.connect(str(streamed.db))
    # a bar on another day that the backfill must not touch
    con.execute("INSERT INTO bars_1m BY NAME SELECT * REPLACE (minute_ts + INTERVAL 1 DAY AS minute_ts) "
                "FROM bars_1m LIMIT 1")
    con.close()
    before = snapshot(streamed.db)
    run_backfill(streamed, DAY, DAY, source="archive")
    once = snapshot(streamed.db)
    run_backfill(streamed, DAY, DAY, source="archive")
    assert snapshot(streamed.db) == once == before


def test_backfill_from_kafka_by_time(streamed):
    kafka_db = streamed.replace(db=streamed.db.parent / "bf_kafka.duckdb")
    r = run_backfill(kafka_db, DAY, DAY, source="kafka")
    assert r.status == "ok" and r.events == 215
    assert snapshot(kafka_db.db) == snapshot(streamed.db)


def _corrupt_liquidation(kafka: KafkaSettings) -> None:
    """A buggy upstream producer writes a schema-valid liquidation whose notional is not price x size.
    (Values no market produces, e.g. a negative notional, no longer get this far: the Kafka source
    sends them to rejects, tests/integration/test_poison_records.py. This one is plausible alone.)"""
    rec = {"exchange": "binance-futures", "symbol": "BTCUSDT", "base": "BTC", "quote": "USDT", "kind": "perpetual",
           "expiry": None, "event_time": 1626993000000000, "ingest_time": 1626993000100000, "side": "long",
           "price": 32000.0, "size": 1.0, "notional_usd": 64000.0, "order_id": None}
    p = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    p.send("liquidations.v1", key=b"binance-futures:BTCUSDT", value=AvroEncoder("liquidation").encode(rec))
    p.flush()
    p.close()


def test_corrupted_load_fails_its_checkpoint_and_stays_out_of_analyst_views(streamed):
    con = duckdb.connect(str(streamed.db), read_only=True)
    visible_before = con.execute("SELECT count(*) FROM v_liquidations_1m").fetchone()[0]
    con.close()
    _corrupt_liquidation(streamed.kafka)
    r = run_load(streamed)
    assert r.status == "dq_failed" and not r.dq_passed
    failed = {d.suite for d in r.dq if not d.success}
    assert "stg_events_notional" in failed
    bad_minute = "SELECT count(*) FROM {} WHERE minute = TIMESTAMPTZ '2021-07-22 22:30:00+00' AND side = 'long'"
    con = duckdb.connect(str(streamed.db), read_only=True)
    try:
        # the bad row is in the base table (for investigation) but not in the analyst view
        assert con.execute(bad_minute.format("liquidations_1m")).fetchone()[0] == 1
        assert con.execute(bad_minute.format("v_liquidations_1m")).fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 1
        (status, message) = con.execute("SELECT status, message FROM pipeline_runs WHERE run_id = ?", [r.run_id]).fetchone()
        assert status == "dq_failed" and "stg_events_notional" in message
        stored = con.execute("SELECT success FROM dq_results WHERE run_id = ? AND suite = 'stg_events_notional'",
                             [r.run_id]).fetchone()
        assert stored == (False,)
        assert con.execute("SELECT count(*) FROM v_liquidations_1m").fetchone()[0] <= visible_before
    finally:
        con.close()


def test_backfill_that_fails_its_gate_publishes_nothing(streamed, tmp_path):
    # a corrupted archive file (e.g. written by an older liqstream): a liquidation with a negative
    # notional, at a Kafka position of its own (the archive readers deduplicate by position)
    import pyarrow as pa
    import pyarrow.parquet as pq

    day_dir = streamed.data_dir / "archive" / "liquidation" / f"date={DAY}"
    row = pq.read_table(sorted(day_dir.glob("*.parquet"))[0]).slice(0, 1)
    # negative beyond the minute's other liquidations: the minute's total is negative
    row = row.set_column(row.schema.get_field_index("notional_usd"), "notional_usd",
                         pa.array([-1e12], row.schema.field("notional_usd").type))
    row = row.set_column(row.schema.get_field_index("_offset"), "_offset", pa.array([10**12], row.schema.field("_offset").type))
    pq.write_table(row, day_dir / "part-corrupted.parquet")
    target = streamed.replace(db=tmp_path / "gate.duckdb")
    r = run_backfill(target, DAY, DAY, source="archive")
    assert r.status == "dq_failed"
    con = duckdb.connect(str(target.db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM liquidations_1m").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM bars_1m").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM dq_results WHERE run_id = ? AND NOT success", [r.run_id]).fetchone()[0] >= 1
    finally:
        con.close()
