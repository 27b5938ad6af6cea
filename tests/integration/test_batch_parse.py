"""The range readers' columnar parsing of record batches (ADR 060) against kafka-python's own parsing,
on the local broker: events as liqstream's producers write them (gzip, the bulk and the paced layouts:
few large batches and many small ones), zstd batches, tombstones and poison values; ranges starting
and ending inside batches. Both readers must yield the same records, and the decoded events and
rejects of the reader processes' RangeDecoder must be the same."""

from __future__ import annotations

import dataclasses
import random

import pyarrow as pa
import pytest
from kafka import KafkaProducer

from bench.data import SYNTH_START_US, in_time_order, publish_events, synth_tables
from connectors.config import KafkaSettings
from connectors.kafka.range_decode import RangeDecoder, Reject
from connectors.kafka.reader import OffsetRange, RangeReader, log_bounds, plan_ranges
from connectors.kafka.topics import ensure_topics
from connectors.normalize import TOPICS

pytestmark = pytest.mark.integration


def _rows(reader: RangeReader, rng: OffsetRange) -> list[tuple]:
    return [(r.offset, r.timestamp, r.key, r.value) for r in reader.read(rng)]


def _as_list(column) -> list:  # type: ignore[no-untyped-def]
    return column.to_pylist() if isinstance(column, pa.Array) else list(column)


def _columns(reader: RangeReader, rng: OffsetRange, size: int) -> list[tuple]:
    out = []
    for offsets, values, keys, stamps in reader.read_columns(rng, size):
        assert len(offsets) <= size
        out += zip([int(o) for o in offsets], [int(t) for t in stamps], _as_list(keys), _as_list(values), strict=True)
    return out


def _sub_ranges(rng: OffsetRange, rnd: random.Random) -> list[OffsetRange]:
    cuts = sorted({rng.start, rng.end, *(rnd.randint(rng.start, rng.end) for _ in range(4))})
    return [OffsetRange(rng.topic, rng.partition, a, b) for a, b in zip(cuts, cuts[1:], strict=False)]


def test_columnar_and_kafka_python_parsing_read_the_same_records(fresh_broker):
    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap, read_timeout_ms=60_000)
    ensure_topics(kafka)
    tables = synth_tables(30_000, SYNTH_START_US, 600_000_000, 5)
    publish_events(kafka, in_time_order(tables), "bulk")
    publish_events(kafka, in_time_order(synth_tables(6_000, SYNTH_START_US, 60_000_000, 6)), "paced")
    topic = TOPICS["trade"]
    # zstd batches, tombstones, a garbled value, empty keys and values, odd timestamps: partition 2
    for compression in ("zstd", None):
        p = KafkaProducer(**kafka.client_kwargs(), compression_type=compression, linger_ms=2)
        for i in range(400):
            p.send(topic, partition=2, key=None if i % 9 == 0 and i % 13 else b"k%d" % i,
                   value=None if i % 13 == 0 else (b"\xc3\x01garbled" if i % 17 == 0 else b"" if i % 19 == 0
                                                     else bytes(range(i % 200))),
                   timestamp_ms=1_600_000_000_000 + i * 7)
            if i % 50 == 0:
                p.flush()
        p.close()
    bounds = log_bounds(kafka, list(TOPICS.values()))
    ranges = plan_ranges(bounds, {})
    assert sum(r.size for r in ranges) > 36_000
    rnd = random.Random(3)
    on, off = kafka, dataclasses.replace(kafka, reader_batch_parse=False)
    with RangeReader(on) as fast, RangeReader(off) as slow:
        parsed = 0
        for rng in ranges:
            for sub in [rng, *_sub_ranges(rng, rnd)]:
                want = _rows(slow, sub)
                assert [w[0] for w in want] == list(range(sub.start, sub.end))  # exact [start, end)
                assert _rows(fast, sub) == want, sub
                assert _columns(fast, sub, rnd.choice((1, 7, 1_000, 50_000))) == want, sub
                parsed += len(want)
        assert parsed > 72_000
        # and the columnar path was the one taken: arrays, not lists
        offsets, values, _, _ = next(fast.read_columns(ranges[0], 100))
        assert isinstance(values, pa.Array) and len(offsets) == min(100, ranges[0].size)


def test_the_reader_processes_decode_the_same_events_and_rejects_either_way(fresh_broker):
    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap, read_timeout_ms=60_000)
    ensure_topics(kafka)
    publish_events(kafka, in_time_order(synth_tables(8_000, SYNTH_START_US, 60_000_000, 8)), "paced")
    topic = TOPICS["trade"]
    p = KafkaProducer(**kafka.client_kwargs(), compression_type="gzip")
    for i in range(30):  # poison values and tombstones among the events: rejected alone
        p.send(topic, partition=i % 3, key=b"binance-futures:BTCUSDT", value=None if i % 2 else b"\xc3\x01bad%d" % i)
    p.close()
    publish_events(kafka, in_time_order(synth_tables(2_000, SYNTH_START_US, 60_000_000, 9)), "bulk")
    ranges = [c for r in plan_ranges(log_bounds(kafka, list(TOPICS.values())), {}) for c in r.split(1_500)]

    def decoded(settings: KafkaSettings) -> tuple[dict, list]:
        dec = RangeDecoder(settings, batch_size=700)
        dec.setup()
        events: dict[str, list] = {}
        rejects = []
        try:
            for rng in ranges:
                for item in dec.batches(rng):
                    if isinstance(item, Reject):
                        rejects.append(item.row)
                    else:
                        events.setdefault(rng.topic, []).append(item)
        finally:
            dec.close()
        return {t: pa.Table.from_batches(b).to_pylist() for t, b in events.items()}, rejects

    fast_events, fast_rejects = decoded(kafka)
    slow_events, slow_rejects = decoded(dataclasses.replace(kafka, reader_batch_parse=False))
    assert sum(len(v) for v in slow_events.values()) == 10_000
    assert fast_events == slow_events
    assert len(slow_rejects) == 30 and fast_rejects == slow_rejects
    assert all(type(r["offset"]) is int and type(r["received_at"]) is int for r in fast_rejects)
