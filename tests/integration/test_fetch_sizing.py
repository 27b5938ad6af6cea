"""The range reader asks each fetch for the rest of its range, and no bytes past it (ADR 056).

The local broker (Tansu 0.6) lists a partition's every record batch for each fetch that may return
records, and lists it again within the same fetch while the fetch has bytes left to fill and new
batches keep coming (a live feed): a fetch that asks for more than its range needs, or one left in
flight past the range's end, makes the broker list the log for its whole max-wait. Here a feed keeps
adding small batches while a reader reads two ranges of the partition; every fetch request the
reader sends is recorded at the client (what the broker is asked, whatever the reader believes).
"""

from __future__ import annotations

import threading
import time

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from connectors.config import KafkaSettings
from connectors.kafka.reader import RangeReader, log_bounds

pytestmark = pytest.mark.integration
TOPIC = "sizing.v1"
VALUE = 100  # bytes per value: with ~10 bytes of record and a 61-byte header per 5 records, ~125 a record


def _value(i: int) -> bytes:
    return i.to_bytes(8, "big") * (VALUE // 8) + b"\x00" * (VALUE % 8)


def _feed(kafka: KafkaSettings, stop: threading.Event, sent: list[int], upfront: int) -> None:
    """Small batches (5 records, flushed), as a live feed leaves them: ``upfront`` records at once, then
    5 every 10 ms until ``stop``."""
    p = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, linger_ms=0, acks=1)
    try:
        i = 0
        while i < upfront or not stop.is_set():
            for _ in range(5):
                p.send(TOPIC, value=_value(i), partition=0)
                i += 1
            p.flush()
            sent[0] = i
            if i >= upfront:
                time.sleep(0.01)
    finally:
        p.close()


def _spy(reader: RangeReader, asked: list[tuple[int, int, int]]) -> None:
    """Record (position asked, max_bytes, max_wait_ms) of every fetch request the reader's consumer sends."""
    fetcher = reader._consumer._fetcher
    send = fetcher._manager.send

    def spying_send(request, *args, **kwargs):  # type: ignore[no-untyped-def]
        if type(request).__name__.startswith("FetchRequest"):
            offsets = [p.fetch_offset for t in request.topics for p in t.partitions]
            asked.append((offsets[0] if offsets else -1, request.max_bytes, request.max_wait_ms))
        return send(request, *args, **kwargs)

    fetcher._manager.send = spying_send


@pytest.mark.parametrize("factor", [1.05, 0.0])
def test_fetches_ask_for_the_rest_of_the_range_and_none_past_it(fresh_broker, factor):
    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap, reader_fetch_bytes_factor=factor)
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    admin.create_topics([NewTopic(TOPIC, 1, 1)])
    admin.close()
    stop, sent = threading.Event(), [0]
    feed = threading.Thread(target=_feed, args=(kafka, stop, sent, 8_000), daemon=True)
    feed.start()
    try:
        while sent[0] < 8_000:
            time.sleep(0.05)
        with RangeReader(kafka) as reader:
            asked: list[tuple[int, int, int]] = []
            _spy(reader, asked)
            first = [r.offset for r in reader.read(_range(0, 500))]  # learns the topic's bytes per offset
            asked.clear()
            time.sleep(0.3)  # the feed moves the log end past the next range's end
            assert log_bounds(kafka, [TOPIC])[(TOPIC, 0)][1] > 7_500
            got = [(r.offset, r.value) for r in reader.read(_range(500, 7_500))]
            time.sleep(0.2)  # whatever the consumer sends after the range's last poll
            requests = list(asked)
            # the fetch kafka-python sends at the start of a poll that drained its buffer is left in flight
            # when a range's last poll began with records buffered: poll at the range's end as it would
            consumer = reader._consumer
            consumer.seek(_tp(), 7_500)
            for _ in range(5):
                consumer.poll(timeout_ms=50)
            past = [(b, w) for pos, b, w in asked if pos >= 7_500]
    finally:
        stop.set()
        feed.join(timeout=30)
    assert first == list(range(500))
    assert got == [(i, _value(i)) for i in range(500, 7_500)]  # every record of the range, once, in order
    assert requests, "no fetch request recorded"
    in_range = [(pos, b) for pos, b, _ in requests if pos < 7_500]
    assert past, "no fetch at the range's end recorded"
    if factor:
        # each fetch within the range asked for about the rest of it (~125 bytes an offset), not 64 MB
        assert all(0 < b <= (7_500 - pos) * 200 for pos, b in in_range), in_range
        # a fetch at the range's end asks for nothing, with the bounds' short wait: the broker lists nothing
        assert all(b == 0 and w == kafka.bounds_fetch_max_wait_ms for b, w in past), past
    else:  # as before ADR 056: the reader's whole limit, also for a fetch past the range
        assert all(b == 64 * 1024 * 1024 for _, b in in_range)
        assert all(b == 64 * 1024 * 1024 for b, _ in past), past


def _tp():
    from kafka import TopicPartition

    return TopicPartition(TOPIC, 0)


def _range(start: int, end: int):
    from connectors.kafka.reader import OffsetRange

    return OffsetRange(TOPIC, 0, start, end)
