"""Poison records written straight to the topics (an old or foreign producer, no liqstream
normalizer in between) never stop `load` nor the stream job (issue 16, item 0b).

The original failure: a BTCUSDT liquidation at price 1e30 made `load` die with `ArrowInvalid:
Rescaling Decimal value would cause data loss [... 'WriteLiquidations1m/ParDo(_WriteBundleParquet)']`,
with the offsets (rightly) uncommitted, so every retry met it again. Now each poison record lands in
`rejects` with its reason, the cycle commits past it, the good records around it land exactly
(checked against totals computed from the raw messages with plain json + Decimal), and an isolated
far-ahead event time does not move the watermark (ADR 010).
"""

from __future__ import annotations

import json
import time

import duckdb
import pytest

from connectors.config import KafkaSettings
from connectors.kafka.fetch import ParallelFetcher
from connectors.kafka.producer import EventProducer
from connectors.kafka.publish import publish_raw_stream
from pipelines.jobs.load import run_load
from pipelines.settings import JobSettings
from tests.helpers import T0_MS, binance_force_orders, expected_liquidations, mart_liquidations
from tests.integration.test_stream_job import _stream_proc

pytestmark = pytest.mark.integration

T0_US = T0_MS * 1000
YEAR_2100_US = 4_102_444_800_000_000
_COMMON = {"exchange": "binance-futures", "symbol": "BTCUSDT", "base": "BTC", "quote": "USDT", "kind": "perpetual",
           "expiry": None}


def _trade(**kw) -> dict:
    return {**_COMMON, "event_time": T0_US + 1_000_000, "ingest_time": T0_US + 1_000_000, "trade_id": "p",
            "price": 60_000.0, "size": 0.1, "notional_usd": 6_000.0, "taker_side": "buy", **kw}


#: (event type, record, rejects reason): what the fuzzing campaign got through, and worse
POISON = [
    ("liquidation", {**_COMMON, "event_time": T0_US + 2_000_000, "ingest_time": T0_US + 2_000_000, "side": "long",
                     "price": 1e30, "size": 44.0, "notional_usd": 4.4e31, "order_id": "p1"}, "implausible_value"),
    ("liquidation", {**_COMMON, "event_time": T0_US + 3_000_000, "ingest_time": T0_US + 3_000_000, "side": "short",
                     "price": float("nan"), "size": 1.0, "notional_usd": 1.0, "order_id": "p2"}, "implausible_value"),
    ("trade", _trade(event_time=YEAR_2100_US), "implausible_time"),
    ("trade", _trade(event_time=YEAR_2100_US, ingest_time=YEAR_2100_US), "implausible_time"),  # forged receipt too
    ("trade", _trade(size=1e13, notional_usd=6e17), "implausible_value"),
    ("open_interest", {**_COMMON, "event_time": T0_US, "ingest_time": T0_US, "open_interest": 0.0,
                       "open_interest_usd": 0.0}, "implausible_value"),
]


def _inject(kafka: KafkaSettings, now_us: int) -> None:
    with EventProducer(kafka) as producer:
        for event_type, rec, _ in POISON:
            producer.send_event(event_type, rec)
        # plausible on its own (received when stamped, before the reader's clock), but years ahead of
        # every other event: it lands in bars, yet must not move the watermark
        producer.send_event("trade", _trade(event_time=now_us - 60_000_000, ingest_time=now_us - 60_000_000))


def _check(db, good, *, watermark_max_us: int) -> None:
    assert mart_liquidations(db) == expected_liquidations(good)
    con = duckdb.connect(str(db), read_only=True)
    try:
        rejects = sorted(con.execute("SELECT topic, reason FROM rejects").fetchall())
        (wm,) = con.execute("SELECT value_us FROM job_state WHERE name = 'watermark_us'").fetchone()
        bars_2100 = con.execute("SELECT count(*) FROM bars_1m WHERE minute_ts >= '2100-01-01'").fetchone()[0]
        max_px = con.execute("SELECT max(max_notional_usd) FROM liquidations_1m").fetchone()[0]
        counted = con.execute("SELECT sum(rejects_in) FROM pipeline_runs").fetchone()[0]  # what status shows
    finally:
        con.close()
    topics = {"liquidation": "liquidations.v1", "trade": "trades.v1", "open_interest": "open_interest.v1"}
    assert rejects == sorted((topics[et], reason) for et, _, reason in POISON)
    assert wm == watermark_max_us
    assert bars_2100 == 0 and max_px < 1e7
    assert counted == len(POISON)


def _latest_minute_us(good) -> int:
    """The minute of the latest good event: liquidation-only bars are timed by their minute."""
    return max(json.loads(m.raw)["data"]["o"]["T"] for m in good) // 60_000 * 60_000_000


@pytest.mark.parametrize("reader", ["beam", "reader-processes"])
def test_poison_on_the_topics_lands_in_rejects_and_load_goes_on(fresh_broker, tmp_path, reader):
    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    good = binance_force_orders(400, seed=11)
    publish_raw_stream(good[:200], kafka)
    _inject(kafka, int(time.time() * 1e6))
    publish_raw_stream(good[200:], kafka)  # after the poison: must land too
    settings = JobSettings(db=tmp_path / "p.duckdb", data_dir=tmp_path, kafka=kafka)
    fetcher = ParallelFetcher(kafka, workers=2, chunk=50, min_offsets=0) if reader == "reader-processes" else None
    try:
        first = run_load(settings, run_dq=False, fetcher=fetcher)
        second = run_load(settings, run_dq=False, fetcher=fetcher)  # committed past the poison: nothing left
    finally:
        if fetcher is not None:
            fetcher.close()
    assert first.status == "ok" and first.rejects_in == len(POISON)
    assert first.events_in == len(good) + 1  # + the plausible outlier
    assert second.status == "empty"
    _check(settings.db, good, watermark_max_us=_latest_minute_us(good))


@pytest.mark.slow
def test_the_stream_job_does_not_stall_on_poison(fresh_broker, tmp_path):
    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    good = binance_force_orders(600, seed=12)
    publish_raw_stream(good[:300], kafka)
    _inject(kafka, int(time.time() * 1e6))
    publish_raw_stream(good[300:], kafka)
    db = tmp_path / "stream.duckdb"
    proc = _stream_proc(db, fresh_broker.bootstrap, "--exit-when-idle", "2")
    out, _ = proc.communicate(timeout=900)  # bounded; generous for a loaded machine
    assert proc.returncode == 0, out[-2000:]
    _check(db, good, watermark_max_us=_latest_minute_us(good))
