"""Find Kafka offsets by time: the offset ranges that hold a time span.

``offsets_for_times`` (ListOffsets with a timestamp) is the Kafka way. Some
Kafka-protocol brokers ignore the timestamp (Tansu 0.6 answers offset 0), so
every answer is checked against the record timestamps and, if wrong, replaced
by a binary search that reads single records. Record timestamps are the
events' times (the producer sets them), nearly ordered within a partition;
callers widen the span by a slack and filter on event time.
"""

from __future__ import annotations

from kafka import KafkaConsumer, TopicPartition

from connectors.config import KafkaSettings
from connectors.kafka.reader import OffsetRange, _consumer, log_bounds

SLACK_MS = 3_600_000


def _timestamp_at(consumer: KafkaConsumer, tp: TopicPartition, offset: int) -> int | None:
    consumer.seek(tp, offset)
    for _ in range(20):
        recs = consumer.poll(timeout_ms=500, max_records=1).get(tp, [])
        if recs:
            return recs[0].timestamp
    return None


def offset_for_time(consumer: KafkaConsumer, tp: TopicPartition, ts_ms: int, begin: int, end: int) -> int:
    """First offset in [begin, end] whose record timestamp is >= ts_ms (end if none)."""
    if end <= begin:
        return begin
    consumer.assign([tp])
    try:
        answer = consumer.offsets_for_times({tp: ts_ms}).get(tp)
    except Exception:  # broker without the API: search
        answer = None
    if answer is not None and begin <= answer.offset <= end:
        o = answer.offset
        ok_here = o == end or (_timestamp_at(consumer, tp, o) or 0) >= ts_ms
        ok_before = o == begin or (_timestamp_at(consumer, tp, o - 1) or 0) < ts_ms
        if ok_here and ok_before:
            return o
    lo, hi = begin, end  # binary search on record timestamps
    while lo < hi:
        mid = (lo + hi) // 2
        t = _timestamp_at(consumer, tp, mid)
        if t is None or t >= ts_ms:
            hi = mid
        else:
            lo = mid + 1
    return lo


def ranges_for_time(settings: KafkaSettings, topics: list[str], start_ms: int, end_ms: int,
                    max_range: int | None = None, slack_ms: int = SLACK_MS) -> list[OffsetRange]:
    bounds = log_bounds(settings, topics)
    consumer = _consumer(settings)
    ranges: list[OffsetRange] = []
    try:
        for (topic, part), (begin, end) in sorted(bounds.items()):
            tp = TopicPartition(topic, part)
            s = offset_for_time(consumer, tp, start_ms - slack_ms, begin, end)
            e = offset_for_time(consumer, tp, end_ms + slack_ms, begin, end)
            if e > s:
                rng = OffsetRange(topic, part, s, e)
                ranges.extend(rng.split(max_range) if max_range else [rng])
    finally:
        consumer.close()
    return ranges
