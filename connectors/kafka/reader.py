"""Bounded reads of Kafka offset ranges: the source of every local pipeline run.

A run plans ``[start, end)`` per partition (start = the offset committed with
the marts, end = the log end at planning time) and reads exactly that range
with manual partition assignment: no consumer group (a group join costs
~20 s on the local broker and would commit offsets outside the marts'
transaction). Ranges are split into chunks so Beam can spread them over workers.
"""

from __future__ import annotations

import collections
import logging
import math
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import Fetcher, IsolationLevel
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.record.memory_records import MemoryRecords

from connectors.config import KafkaSettings
from connectors.kafka.batch_parse import Columns, Fallback, parse

log = logging.getLogger(__name__)


class OffsetsAheadOfLog(RuntimeError):
    """Committed offsets beyond the log end: the topic was recreated or this is another cluster."""


class ReadTimeout(RuntimeError):
    pass


@dataclass(frozen=True, order=True)
class OffsetRange:
    topic: str
    partition: int
    start: int  # inclusive
    end: int  # exclusive

    @property
    def size(self) -> int:
        return self.end - self.start

    def split(self, max_size: int) -> list[OffsetRange]:
        return [OffsetRange(self.topic, self.partition, s, min(s + max_size, self.end))
                for s in range(self.start, self.end, max_size)]


def _consumer(settings: KafkaSettings, **overrides: Any) -> KafkaConsumer:
    return KafkaConsumer(
        **settings.client_kwargs(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **{"max_poll_records": 5000,
           "fetch_max_bytes": 64 * 1024 * 1024,
           "max_partition_fetch_bytes": 16 * 1024 * 1024,
           "retry_backoff_ms": settings.reader_retry_backoff_ms,
           **overrides},
    )


def _close_quietly(consumer: KafkaConsumer) -> None:
    try:
        consumer.close()
    except Exception:  # a consumer whose broker went away may fail to close cleanly: it is dropped anyway
        log.debug("closing a stalled consumer failed", exc_info=True)


#: (bootstrap servers, topic, partition) -> (log start, log end, monotonic time the log start was
#: asked): what :func:`log_bounds` last found in this process (ADR 052)
_BOUNDS_SEEN: dict[tuple[str, str, int], tuple[int, int, float]] = {}
_BOUNDS_LOCK = threading.Lock()


def log_bounds(settings: KafkaSettings, topics: list[str]) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> (log start, log end) for every partition of the topics that exist.

    With ``settings.bounds_by_fetch`` (default) the log end is the high watermark of one fetch of
    every partition that asks for no bytes, and the log start is asked (ListOffsets earliest) only
    for a partition not seen for ``log_start_refresh_s``: on the local broker each ListOffsets and
    each fetch that may return records lists every record batch of the partition (ADR 035, 052),
    a fetch of 0 bytes lists none. Otherwise ListOffsets both ways and a confirming fetch (ADR 023).
    """
    consumer = _consumer(settings, **({"fetch_max_bytes": 0, "fetch_max_wait_ms": settings.bounds_fetch_max_wait_ms}
                                      if settings.bounds_by_fetch else {}))
    try:
        tps = []
        for topic in topics:
            parts = consumer.partitions_for_topic(topic)
            if parts:
                tps.extend(TopicPartition(topic, p) for p in sorted(parts))
        if not tps:
            return {}
        timeout_s = max(5.0, settings.request_timeout_ms / 1000)
        if not settings.bounds_by_fetch:
            begin = consumer.beginning_offsets(tps)
            end = consumer.end_offsets(tps)
            # the confirmation gets as long as any request: on a loaded machine 5 s was not always enough,
            # and an unconfirmed end leaves a batch's tail for a later cycle (ADR 023)
            end = _confirm_high_watermarks(consumer, tps, begin, end, timeout_s)
            return {(tp.topic, tp.partition): (begin[tp], end[tp]) for tp in tps}
        now = time.monotonic()
        with _BOUNDS_LOCK:
            seen = {tp: _BOUNDS_SEEN.get((settings.bootstrap_servers, tp.topic, tp.partition)) for tp in tps}
        stale = [tp for tp, s in seen.items() if s is None or now - s[2] > settings.log_start_refresh_s]
        asked = consumer.beginning_offsets(stale) if stale else {}
        begin = {tp: asked[tp] if tp in asked else seen[tp][0] for tp in tps}  # type: ignore[index]
        # a fetch position the log still holds: the last end seen (or the log start): on Apache Kafka a
        # position past the end would be reset and read from the start
        start_at = {tp: max(begin[tp], seen[tp][1]) if seen[tp] else begin[tp] for tp in tps}  # type: ignore[index]
        end = _high_watermarks(consumer, tps, start_at, timeout_s)
        # a log now shorter than this process saw it (the topic was deleted and made again) no longer
        # has the remembered start: ask it again rather than plan from a start the log never had
        again = [tp for tp in tps if tp not in asked and seen[tp] is not None and end[tp] < seen[tp][1]]
        if again:
            asked = {**asked, **consumer.beginning_offsets(again)}
            begin.update((tp, asked[tp]) for tp in again)
        with _BOUNDS_LOCK:
            for tp in tps:
                _BOUNDS_SEEN[(settings.bootstrap_servers, tp.topic, tp.partition)] = (
                    begin[tp], end[tp], now if tp in asked else seen[tp][2])  # type: ignore[index]
        return {(tp.topic, tp.partition): (begin[tp], end[tp]) for tp in tps}
    finally:
        consumer.close()


def _high_watermarks(consumer: KafkaConsumer, tps: list[TopicPartition], start_at: dict, timeout_s: float) -> dict:
    """Each partition's high watermark, from fetches at ``start_at`` by a consumer made with
    ``fetch_max_bytes=0``: the local broker answers them without listing the log and without a
    record; Apache Kafka with the high watermark and at most one record batch (KIP-74)."""
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, start_at[tp])
    found: dict = {}
    pending = set(tps)
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() > deadline:
            raise KafkaTimeoutError(f"no high watermark for {sorted(map(tuple, pending))} within {timeout_s:.0f}s")
        consumer.poll(timeout_ms=5, max_records=1)
        for tp in list(pending):
            hw = consumer.highwater(tp)
            if hw is not None:
                found[tp] = hw
                pending.discard(tp)
    consumer.unsubscribe()
    return found


def _confirm_high_watermarks(consumer: KafkaConsumer, tps: list[TopicPartition], begin: dict, end: dict,
                             timeout_s: float = 5.0) -> dict:
    """Take the larger of ListOffsets' end and the high watermark of a fetch at that end.

    On Apache Kafka both agree. Some Kafka-protocol brokers answer ListOffsets
    with the base offset of the last record batch + 1 (seen on Tansu 0.6 with
    multi-record batches), which would leave a batch's tail unread until the next
    cycle; the fetch response's high watermark is authoritative, so ask for it
    with one fetch per partition positioned at the reported end - 1.
    """
    probe = [tp for tp in tps if end[tp] > begin[tp]]
    if not probe:
        return end
    consumer.assign(probe)
    for tp in probe:
        consumer.seek(tp, end[tp] - 1)
    confirmed = dict(end)
    pending = set(probe)
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        consumer.poll(timeout_ms=200, max_records=1)
        for tp in list(pending):
            hw = consumer.highwater(tp)
            if hw is not None:
                confirmed[tp] = max(end[tp], hw)
                pending.discard(tp)
    consumer.unsubscribe()
    return confirmed


def plan_ranges(
    bounds: dict[tuple[str, int], tuple[int, int]],
    committed: dict[tuple[str, int], int],
    max_range: int | None = None,
) -> list[OffsetRange]:
    """The unread part of every partition, from its committed offset to the log end.

    A partition seen for the first time (e.g. added to the topic later) is read
    from its log start. Offsets below the log start were deleted by retention:
    reading resumes at the log start (the loss is the retention's, and visible in
    the run's record). Offsets beyond the log end raise :class:`OffsetsAheadOfLog`.
    """
    ranges = []
    for (topic, part), (begin, end) in sorted(bounds.items()):
        pos = committed.get((topic, part), begin)
        if pos > end:
            raise OffsetsAheadOfLog(
                f"{topic}[{part}]: committed offset {pos} is beyond the log end {end}. The topic was recreated "
                "or KAFKA_BOOTSTRAP_SERVERS points at another cluster; start over with --reset-offsets "
                "(re-reads the topic into the marts) or point at the right cluster."
            )
        start = max(pos, begin)
        if end > start:
            rng = OffsetRange(topic, part, start, end)
            ranges.extend(rng.split(max_range) if max_range else [rng])
    return ranges


#: fetch max-waits (ms) the range reader steps through: it starts at ``KafkaSettings.fetch_max_wait_ms``
#: and moves one step up, for the reader's life, when fetches come back short. The top is the Kafka
#: client default: a broker that gives what it has only when the wait runs out still gives a lot.
FETCH_WAIT_STEPS_MS = (10, 100, 500)
#: fetches that come back with fewer records than this on average (over WINDOW_POLLS polls or
#: WINDOW_S seconds of waiting in poll, whichever first) while more of the range is known to exist
#: are "short": the broker answers with what it gathered within the max-wait (Tansu, on a log of many
#: small batches: 1-1,000 records per 10 ms fetch, none within 0 ms), so the reader waits longer per
#: fetch. Not a rate: a loaded machine slows a bulk read without shortening its fetches (each still
#: brings whole batches of thousands of records), and must not pay the longer wait at range ends
SHORT_FETCH_RECORDS = 1_000
WINDOW_POLLS = 10
WINDOW_S = 0.5


def read_timeout(rng: OffsetRange, pos: int, idle_s: float, reconnects: int, settings: KafkaSettings,
                 err: Exception | None) -> ReadTimeout:
    """The error of a range read that made no progress for ``idle_s`` (either client's reader)."""
    return ReadTimeout(
        f"{rng.topic}[{rng.partition}] stalled at offset {pos} of [{rng.start}, {rng.end}) for {idle_s:.0f}s "
        f"after {reconnects} reconnect(s): is the broker at {settings.bootstrap_servers} up?"
        + (f" (last error: {err})" if err else ""))


def stall_reason(rng: OffsetRange, pos: int, stalled_s: float) -> str:
    return f"no progress on {rng.topic}[{rng.partition}] at offset {pos} for {stalled_s:.1f}s"


class _ReadCount:
    """Records yielded by every RangeReader of this process: what a long catch-up's progress line
    reports (pipelines.jobs.load.CatchUpProgress) while the Beam pipeline reads. A plain int: the
    readers and the reporter share the GIL, and a progress figure may be a record behind."""

    records = 0


READ_COUNT = _ReadCount()


def batch_span(records: bytes | memoryview | None) -> tuple[int, int]:
    """(bytes, offsets) that a fetch response's whole record batches (message format v2) cover: their
    size on the wire, and the offsets from the first batch's base to the last batch's last offset + 1.

    Read from the batches' headers only (base offset at byte 0, the length of the rest at 8, the last
    offset delta at 23), so it costs one ``struct`` call per batch, nothing per record. A truncated
    last batch (a response cut at its byte limit) is left out of both; ``(0, 0)`` when no whole batch came."""
    if not records:
        return 0, 0
    buf = memoryview(records)
    n, at, first, last = len(buf), 0, None, None
    while at + 27 <= n:
        base, length = struct.unpack_from(">qi", buf, at)
        if at + 12 + length > n:
            break
        (delta,) = struct.unpack_from(">i", buf, at + 23)
        first = base if first is None else first
        last = base + delta
        at += 12 + length
    return (0, 0) if first is None else (at, last + 1 - first)


class FetchSizer:
    """Sizes each fetch of a range reader's consumer to what is left of the range (ADR 056).

    The local broker (Tansu 0.6) answers a fetch of a partition by listing every record batch of the
    partition, reading from the fetch offset on, and doing it again from where it stopped for as long
    as the fetch still has bytes to fill and new batches came in meanwhile, until the max-wait runs
    out (``service/fetch.rs``, ``DynoStore::fetch``). Under a live feed new batches always come in,
    so every fetch of a busy partition listed its whole log again and again for its full max-wait
    (up to 500 ms, :data:`FETCH_WAIT_STEPS_MS`), and the fetch kafka-python sends at the end of a
    poll (its pipelining) did the same for records past the range, holding up the next range's
    first fetch on the connection. So the reader asks each fetch for the bytes the rest of its
    range is expected to take (``KafkaSettings.reader_fetch_bytes_factor`` x the bytes per offset
    learnt from this reader's earlier fetches of the topic, on the wire: compression and batch
    headers included), and a fetch at or past the range's end for no bytes with the short max-wait
    of the bounds' fetch (it lists nothing). A fetch that comes back short of the range is followed
    by the next one, as before; on Apache Kafka a fetch's byte limit is soft (at least one batch
    comes back, KIP-74), so a small estimate costs a request, never progress.

    It sets kafka-python's fetch limits just before each fetch request is built
    (``Fetcher._create_fetch_requests``) and reads each response's batch headers before it is
    parsed (``Fetcher._parse_fetched_data``): private methods of kafka-python (pinned in
    constraints.txt), checked by tests/integration/test_fetch_sizing.py."""

    LIMITS = ("fetch_max_bytes", "max_partition_fetch_bytes", "fetch_max_wait_ms")
    #: weight of a new fetch's bytes per offset in the running estimate (per topic)
    LEARN = 0.3

    def __init__(self, factor: float, past_end_wait_ms: int) -> None:
        self.factor = factor
        self.past_end_wait_ms = past_end_wait_ms
        self.bytes_per_offset: dict[str, float] = {}
        #: the range being read (set by the reader); fetches of other partitions keep the defaults
        self.range: OffsetRange | None = None

    def install(self, consumer: KafkaConsumer) -> KafkaConsumer:
        fetcher = consumer._fetcher
        defaults = {k: fetcher.config[k] for k in self.LIMITS}
        create, parse = fetcher._create_fetch_requests, fetcher._parse_fetched_data

        def sized_requests():  # type: ignore[no-untyped-def]
            fetcher.config.update(defaults)
            rng = self.range
            state = None if rng is None else fetcher._subscriptions.assignment.get(
                TopicPartition(rng.topic, rng.partition))
            position = None if state is None else state.position
            if rng is not None and position is not None:
                fetcher.config.update(self.limits(rng, position.offset, defaults))
            return create()

        def learning_parse(completed_fetch):  # type: ignore[no-untyped-def]
            self.learn(completed_fetch.topic_partition.topic, completed_fetch.partition_data.records)
            return parse(completed_fetch)

        fetcher._create_fetch_requests = sized_requests
        fetcher._parse_fetched_data = learning_parse
        return consumer

    def limits(self, rng: OffsetRange, position: int, defaults: dict[str, int]) -> dict[str, int]:
        """The fetch limits for a fetch of ``rng``'s partition at ``position``."""
        if position >= rng.end:
            return {"fetch_max_bytes": 0, "max_partition_fetch_bytes": 0,
                    "fetch_max_wait_ms": min(self.past_end_wait_ms, defaults["fetch_max_wait_ms"])}
        per_offset = self.bytes_per_offset.get(rng.topic)
        if per_offset is None:  # nothing learnt yet for this topic: the reader's defaults
            return {}
        want = max(1, math.ceil((rng.end - position) * per_offset * self.factor))
        return {"fetch_max_bytes": min(want, defaults["fetch_max_bytes"]),
                "max_partition_fetch_bytes": min(want, defaults["max_partition_fetch_bytes"])}

    def learn(self, topic: str, records: bytes | None) -> None:
        size, offsets = batch_span(records)
        if offsets > 0:
            seen = size / offsets
            old = self.bytes_per_offset.get(topic)
            self.bytes_per_offset[topic] = seen if old is None else old + self.LEARN * (seen - old)


class ColumnarPartitionRecords(Fetcher.PartitionRecords):
    """kafka-python's fetched records of one partition, parsed by :func:`connectors.kafka.batch_parse.parse`
    (ADR 060): yields :class:`~connectors.kafka.batch_parse.Columns` (a run of whole batches, from the
    fetch offset on) instead of a ``ConsumerRecord`` per record, and kafka-python's own
    ``ConsumerRecord`` for the records of a batch that ``parse`` hands back (kafka-python then parses
    that batch, or raises its error for it). Installed on a range reader's fetcher
    (``fetcher.PartitionRecords``, a nested class of kafka-python's ``Fetcher``, pinned in
    constraints.txt) when ``KafkaSettings.reader_batch_parse``; with ``isolation_level``
    read_committed (never set by liqstream) kafka-python's own parsing runs."""

    def __init__(self, fetch_offset, tp, records, **kw):  # type: ignore[no-untyped-def]
        super().__init__(fetch_offset, tp, records, **kw)
        if self.isolation_level == IsolationLevel.READ_UNCOMMITTED:
            self._own, self.record_iterator = self.record_iterator, self._columns(records, kw)

    def _columns(self, records: MemoryRecords, kw: dict):  # type: ignore[no-untyped-def]
        try:
            parsed = parse(records._buffer, self.check_crcs)
        except Exception:  # noqa: BLE001 - a bug of ours must not stop a read: kafka-python parses it all
            log.warning("columnar parsing of a fetch of %s failed: kafka-python parses it", self.topic_partition,
                        exc_info=True)
            yield from self._own  # kafka-python's own iterator (it drains itself)
            return
        for part, end in zip(parsed.parts, parsed.ends, strict=True):
            if isinstance(part, Fallback):
                one = Fetcher.PartitionRecords(self.fetch_offset, self.topic_partition, MemoryRecords(bytes(part.data)),
                                               **{k: v for k, v in kw.items() if k not in ("metric_aggregator",
                                                                                          "on_drain")})
                for rec in one.record_iterator:
                    self.records_read += 1
                    self.next_fetch_offset = rec.offset + 1
                    yield rec
                self.next_fetch_offset = max(self.next_fetch_offset, one.next_fetch_offset)
                continue
            # kafka-python drops the records before the fetch offset (a batch starting before it)
            skip = int(np.argmax(part.offsets >= self.fetch_offset)) if len(part) else 0
            if len(part) and part.offsets[skip] < self.fetch_offset:
                skip = len(part)
            self.next_fetch_offset = max(self.next_fetch_offset, end)
            if skip < len(part):
                self.records_read += len(part) - skip
                yield part.slice(skip, len(part)) if skip else part
        self.drain()


#: a record as :meth:`RangeReader.read` yields it from parsed columns: the fields of kafka-python's
#: ``ConsumerRecord`` that liqstream reads
Record = collections.namedtuple("Record", ["topic", "partition", "offset", "timestamp", "key", "value"])


def columns_of(records: list[Any]) -> Columns:
    """kafka-python's ConsumerRecords (a batch it parsed) as Columns."""
    import pyarrow as pa

    return Columns(np.array([r.offset for r in records], np.int64), np.array([r.timestamp for r in records], np.int64),
                   pa.array([r.key for r in records], pa.binary()), pa.array([r.value for r in records], pa.binary()))


def _as_tuple(cols: Columns) -> tuple[np.ndarray, Any, Any, np.ndarray]:
    return cols.offsets, cols.values, cols.keys, cols.timestamps


class RangeReader:
    """Reads offset ranges with one long-lived consumer (manual assignment).

    Made to progress on any Kafka-protocol broker and batch layout (ADR 009): its fetch max-wait
    starts short (on bulk-filled topics, a fetch comes back full at once, and the fetch left in
    flight at a range's end, which holds up the next range's first fetch, costs at most that wait)
    and goes up a step (:data:`FETCH_WAIT_STEPS_MS`) when fetches come back short. A read that makes
    no progress for ``read_stall_ms`` gets a fresh consumer (new connection) and resumes at its
    position; only ``read_timeout_ms`` without any progress, across reconnects, fails it.
    """

    def __init__(self, settings: KafkaSettings, idle_timeout_s: float | None = None) -> None:
        self._settings = settings
        self.idle_timeout_s = settings.read_timeout_ms / 1000 if idle_timeout_s is None else idle_timeout_s
        self.stall_s = min(settings.read_stall_ms / 1000, self.idle_timeout_s)
        start = settings.fetch_max_wait_ms
        self._waits = [start, *(w for w in FETCH_WAIT_STEPS_MS if w > start)]
        self._step = 0
        self.reconnects = 0
        factor = settings.reader_fetch_bytes_factor
        #: kept across reconnects: what it learnt of the topics' bytes per offset still holds
        self.sizer = FetchSizer(factor, settings.bounds_fetch_max_wait_ms) if factor > 0 else None
        self._consumer: KafkaConsumer | None = self._connect()

    @property
    def fetch_max_wait_ms(self) -> int:
        return self._waits[self._step]

    def _connect(self) -> KafkaConsumer:
        consumer = _consumer(self._settings, fetch_max_wait_ms=self.fetch_max_wait_ms)
        if self._settings.reader_batch_parse:
            consumer._fetcher.PartitionRecords = ColumnarPartitionRecords
        return self.sizer.install(consumer) if self.sizer is not None else consumer

    def _reconnect(self, why: str) -> None:
        """A fresh consumer (closes the old one's connections and drops its fetch in flight)."""
        log.info("range reader: %s; reconnecting with fetch_max_wait_ms=%d", why, self.fetch_max_wait_ms)
        self.reconnects += 1
        old, self._consumer = self._consumer, None
        if old is not None:
            _close_quietly(old)
        self._consumer = self._connect()  # may raise if the broker is unreachable: the caller retries

    def read(self, rng: OffsetRange) -> Iterator[Any]:
        """Yield the records with offsets in [start, end), in offset order: kafka-python's
        ConsumerRecords, or :class:`Record` for those parsed into columns (``reader_batch_parse``)."""
        for item in self._items(rng):
            if isinstance(item, Columns):
                for row in zip(item.offsets.tolist(), item.timestamps.tolist(), item.keys.to_pylist(),
                               item.values.to_pylist(), strict=True):
                    yield Record(rng.topic, rng.partition, *row)
            else:
                yield item

    def _items(self, rng: OffsetRange) -> Iterator[Any]:
        """Yield the records with offsets in [start, end), in offset order, as kafka-python's
        ConsumerRecords or as :class:`~connectors.kafka.batch_parse.Columns` of many."""
        if rng.size <= 0:
            return
        tp = TopicPartition(rng.topic, rng.partition)
        if self.sizer is not None:
            self.sizer.range = rng
        pos = rng.start  # the next offset to yield
        last_progress = last_reconnect = time.monotonic()
        window_from, polls, polled_s = pos, 0, 0.0  # the window of polls that judges the fetches' size
        seek = True
        while True:
            err: Exception | None = None
            records, at = [], None
            try:
                if self._consumer is None:
                    self._consumer = self._connect()
                c = self._consumer
                first = seek  # a new position's first poll also connects, fetches metadata: not a fetch's rate
                if seek:
                    c.assign([tp])
                    c.seek(tp, pos)
                    seek = False
                t_poll = time.monotonic()
                records = c.poll(timeout_ms=500).get(tp, [])
                if first:
                    window_from = pos + len(records)
                else:
                    polls += 1
                    polled_s += time.monotonic() - t_poll
                at = c.position(tp)
            except KafkaError as exc:  # broker unreachable, connection lost: a stall, handled below
                err = exc
            now = time.monotonic()
            for rec in records:
                if isinstance(rec, Columns):
                    lo, hi = np.searchsorted(rec.offsets, (pos, rng.end)).tolist()
                    if hi > lo:
                        pos = int(rec.offsets[hi - 1]) + 1
                        last_progress = now
                        READ_COUNT.records += hi - lo
                        yield rec.slice(lo, hi) if hi - lo < len(rec) else rec
                    if hi < len(rec):
                        return
                    continue
                if rec.offset >= rng.end:
                    return
                if rec.offset >= pos:
                    pos = rec.offset + 1
                    last_progress = now
                    READ_COUNT.records += 1
                    yield rec
            if pos >= rng.end or (at is not None and at >= rng.end):
                return
            if now - last_progress > self.idle_timeout_s:
                raise read_timeout(rng, pos, self.idle_timeout_s, self.reconnects, self._settings, err)
            if now - max(last_progress, last_reconnect) > self.stall_s:
                # the stall clock (last_progress) keeps running across reconnects: a dead broker still times out
                why = stall_reason(rng, pos, now - last_progress)
                if err is None and self._step + 1 < len(self._waits):
                    self._step += 1  # connected but given nothing: the shortest of short fetches
                self._try_reconnect(why + (f" ({err})" if err else ""))
                last_reconnect, seek = time.monotonic(), True
            elif err is not None:
                time.sleep(0.5)  # poll() does not wait when it raised: do not spin until the stall clock runs out
            elif polls >= WINDOW_POLLS or (polls and polled_s >= WINDOW_S):
                per_poll = (pos - window_from) / polls
                # short: less per poll than a fetch should bring, and less than what was left to read
                if per_poll < min(SHORT_FETCH_RECORDS, rng.end - window_from) and self._step + 1 < len(self._waits):
                    self._step += 1
                    self._try_reconnect(f"short fetches on {rng.topic}[{rng.partition}] ({per_poll:,.0f} records "
                                        f"per poll with a {self._waits[self._step - 1]} ms max-wait)")
                    seek = True
            else:
                continue
            window_from, polls, polled_s = pos, 0, 0.0

    def read_columns(self, rng: OffsetRange, max_records: int) -> Iterator[tuple[list[int], list[bytes | None],
                                                                               list[bytes | None], list[int | None]]]:
        """Yield ``(offsets, values, keys, timestamps)`` of up to ``max_records`` records at a time
        (the batch readers' shape; :class:`~connectors.kafka.rdkafka_reader.ConfluentRangeReader` too)."""
        if self._settings.reader_batch_parse:
            yield from self._read_columns(rng, max_records)
            return
        offsets: list[int] = []
        values: list[bytes | None] = []
        keys: list[bytes | None] = []
        stamps: list[int | None] = []
        for rec in self.read(rng):
            offsets.append(rec.offset)
            values.append(rec.value)
            keys.append(rec.key)
            stamps.append(rec.timestamp)
            if len(offsets) >= max_records:
                yield offsets, values, keys, stamps
                offsets, values, keys, stamps = [], [], [], []
        if offsets:
            yield offsets, values, keys, stamps

    def _read_columns(self, rng: OffsetRange, max_records: int) -> Iterator[tuple[Any, Any, Any, Any]]:
        """:meth:`read_columns` from parsed columns (ADR 060): offsets and timestamps as int64
        arrays, values and keys as Arrow binary arrays."""
        parts: list[Columns] = []
        loose: list[Any] = []  # ConsumerRecords of a batch kafka-python parsed
        n = 0
        for item in self._items(rng):
            if isinstance(item, Columns):
                if loose:
                    parts.append(columns_of(loose))
                    loose = []
                parts.append(item)
                n += len(item)
            else:
                loose.append(item)
                n += 1
            if n >= max_records:
                if loose:
                    parts.append(columns_of(loose))
                    loose = []
                whole = Columns.concat(parts)
                while len(whole) >= max_records:
                    yield _as_tuple(whole.slice(0, max_records))
                    whole = whole.slice(max_records, len(whole))
                parts, n = ([whole] if len(whole) else []), len(whole)
        if loose:
            parts.append(columns_of(loose))
        if n:
            yield _as_tuple(Columns.concat(parts))

    def _try_reconnect(self, why: str) -> None:
        try:
            self._reconnect(why)
        except KafkaError as exc:  # the next poll connects again (the broker may come back)
            log.warning("range reader: reconnect failed (%s)", exc)
            self._consumer = None

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def __enter__(self) -> RangeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
