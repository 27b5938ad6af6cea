"""The range reader's fetch sizing (ADR 056): what a fetch response's batches cover, and the limits
asked for a fetch at a position of a range. The broker side is tests/integration/test_fetch_sizing.py."""

from __future__ import annotations

import pytest
from kafka.record.default_records import DefaultRecordBatchBuilder

from connectors.kafka.reader import FetchSizer, OffsetRange, batch_span

DEFAULTS = {"fetch_max_bytes": 64 << 20, "max_partition_fetch_bytes": 16 << 20, "fetch_max_wait_ms": 500}


def _batch(base: int, n: int, value_size: int, compression: int = 0) -> bytes:
    b = DefaultRecordBatchBuilder(magic=2, compression_type=compression, is_transactional=False, producer_id=-1,
                                  producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for i in range(n):
        b.append(i, timestamp=1_700_000_000_000 + i, key=b"binance:BTCUSDT", value=bytes([i % 251]) * value_size,
                 headers=[])
    buf = bytearray(b.build())
    buf[0:8] = base.to_bytes(8, "big")  # the broker writes the base offset
    return bytes(buf)


@pytest.mark.parametrize("compression", [0, 1])  # none, gzip: the wire bytes, whatever the codec
def test_batch_span_counts_the_wire_bytes_and_the_offsets_of_whole_batches(compression):
    batches = [_batch(100, 5, 90, compression), _batch(105, 3, 120, compression), _batch(108, 7, 60, compression)]
    wire = b"".join(batches)
    assert batch_span(wire) == (len(wire), 15)
    # a response cut inside its last batch (a fetch's byte limit): the whole batches only
    assert batch_span(wire[:-10]) == (len(batches[0]) + len(batches[1]), 8)
    assert batch_span(batches[0][:20]) == (0, 0)
    assert batch_span(None) == (0, 0) and batch_span(b"") == (0, 0)


def test_a_fetch_asks_for_the_rest_of_its_range_and_none_past_its_end():
    sizer = FetchSizer(factor=1.05, past_end_wait_ms=1)
    rng = OffsetRange("trades.v1", 0, 1_000, 3_000)
    assert sizer.limits(rng, 1_000, DEFAULTS) == {}  # nothing learnt of the topic: the defaults
    wire = b"".join(_batch(b, 5, 100) for b in range(0, 500, 5))
    size, offsets = batch_span(wire)
    sizer.learn("trades.v1", wire)
    per_offset = size / offsets
    assert sizer.bytes_per_offset == {"trades.v1": pytest.approx(per_offset)}
    want = sizer.limits(rng, 1_000, DEFAULTS)
    assert want["fetch_max_bytes"] == want["max_partition_fetch_bytes"]
    assert want["fetch_max_bytes"] == pytest.approx(2_000 * per_offset * 1.05, abs=1)
    assert sizer.limits(rng, 2_900, DEFAULTS)["fetch_max_bytes"] == pytest.approx(100 * per_offset * 1.05, abs=1)
    # at or past the end: no bytes (the local broker then lists nothing), the short max-wait
    for pos in (3_000, 3_500):
        assert sizer.limits(rng, pos, DEFAULTS) == {"fetch_max_bytes": 0, "max_partition_fetch_bytes": 0,
                                                    "fetch_max_wait_ms": 1}
    # never above the reader's own limits
    huge = OffsetRange("trades.v1", 0, 0, 10**12)
    assert sizer.limits(huge, 0, DEFAULTS)["max_partition_fetch_bytes"] == DEFAULTS["max_partition_fetch_bytes"]


def test_the_estimate_follows_the_topics_bytes_per_offset():
    sizer = FetchSizer(factor=1.0, past_end_wait_ms=1)
    small = b"".join(_batch(b, 5, 40) for b in range(0, 50, 5))
    big = b"".join(_batch(b, 5, 400) for b in range(0, 50, 5))
    sizer.learn("t", small)
    for _ in range(30):
        sizer.learn("t", big)
    assert sizer.bytes_per_offset["t"] == pytest.approx(len(big) / 50, rel=1e-3)
    sizer.learn("other", b"")  # a response with no batch teaches nothing
    assert "other" not in sizer.bytes_per_offset
