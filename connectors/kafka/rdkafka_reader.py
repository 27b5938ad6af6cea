"""Bounded reads of Kafka offset ranges with confluent-kafka (librdkafka): the readers' faster client.

The same contract as :class:`connectors.kafka.reader.RangeReader` (kafka-python): exactly the
records with offsets in ``[start, end)``, in offset order, manual assignment, no consumer group
and nothing committed to Kafka (offsets are committed with the marts, ADR 003); a read without
progress for ``read_stall_ms`` reconnects (a fresh consumer resumes at its position), and only
``read_timeout_ms`` without progress across reconnects fails with ``ReadTimeout``. librdkafka
parses record batches and checks their CRCs in C and prefetches on its own thread, which is what
the choice of client is about (ADR 021). Like kafka-python's reader it steps its fetch max-wait up
when fetches come back short (ADR 009, ADR 035): the local broker (Tansu) lists every record batch
of a partition for each fetch and stops at the max-wait, so on a long log of small batches (a live
feed) a 10 ms fetch brings fewer and fewer records and finally none, at any offset, for good.
Chosen with ``KafkaSettings.reader_client = "confluent-kafka"`` (``KAFKA_READER_CLIENT``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

from connectors.config import KafkaSettings
from connectors.kafka.reader import (
    FETCH_WAIT_STEPS_MS,
    READ_COUNT,
    SHORT_FETCH_RECORDS,
    WINDOW_S,
    OffsetRange,
    read_timeout,
    stall_reason,
)

log = logging.getLogger(__name__)

#: records asked of librdkafka per consume() call
CONSUME_BATCH = 10_000
#: the longest max-wait (ms) a reader of this process stepped up to, per bootstrap servers: a new reader
#: (the Beam source makes one per stream cycle) starts there instead of finding the short fetches again
_LEARNED_WAIT_MS: dict[str, int] = {}


class Record(NamedTuple):
    """What the per-record readers use of a Kafka record (kafka-python's ConsumerRecord has the same)."""

    offset: int
    value: bytes | None
    key: bytes | None
    timestamp: int | None


class ConfluentRangeReader:
    """Reads offset ranges with one long-lived librdkafka consumer (manual assignment)."""

    def __init__(self, settings: KafkaSettings, idle_timeout_s: float | None = None) -> None:
        self._settings = settings
        self.idle_timeout_s = settings.read_timeout_ms / 1000 if idle_timeout_s is None else idle_timeout_s
        self.stall_s = min(settings.read_stall_ms / 1000, self.idle_timeout_s)
        start = settings.fetch_max_wait_ms
        self._waits = [start, *(w for w in FETCH_WAIT_STEPS_MS if w > start)]
        learned = _LEARNED_WAIT_MS.get(settings.bootstrap_servers, start)
        self._step = max(i for i, w in enumerate(self._waits) if i == 0 or w <= learned)
        self.reconnects = 0
        #: topics whose metadata this consumer has asked for (see _know_topic)
        self._known_topics: set[str] = set()
        self._consumer: Any = self._connect()

    @property
    def fetch_max_wait_ms(self) -> int:
        """The consumers' current ``fetch.wait.max.ms`` (a step of ``FETCH_WAIT_STEPS_MS``, kept for the reader's life)."""
        return self._waits[self._step]

    def _connect(self) -> Any:
        from confluent_kafka import Consumer

        self._known_topics = set()
        return Consumer({
            **self._settings.rdkafka_config(),
            # librdkafka wants a group id even for manual assignment; nothing is ever committed to it
            "group.id": "liqstream-range-reader",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            # as kafka-python reads (its defaults): every record, CRCs checked
            "isolation.level": "read_uncommitted",
            "check.crcs": True,
            # short at first (a fetch left in flight at a range's end holds the next range up to it),
            # one step up when fetches come back short (read_columns, ADR 035)
            "fetch.wait.max.ms": self.fetch_max_wait_ms,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 16 * 1024 * 1024,
            "enable.partition.eof": False,
        })

    def _step_up(self) -> bool:
        """One step up the max-wait (remembered for this process's later readers); False at the top."""
        if self._step + 1 >= len(self._waits):
            return False
        self._step += 1
        key = self._settings.bootstrap_servers
        _LEARNED_WAIT_MS[key] = max(_LEARNED_WAIT_MS.get(key, 0), self.fetch_max_wait_ms)
        return True

    def _reconnect(self, why: str) -> None:
        log.info("range reader (confluent-kafka): %s; reconnecting with fetch.wait.max.ms=%d", why,
                 self.fetch_max_wait_ms)
        self.reconnects += 1
        old, self._consumer = self._consumer, None
        if old is not None:
            _close_quietly(old)
        self._consumer = self._connect()

    def read_columns(self, rng: OffsetRange, max_records: int) -> Iterator[tuple[list[int], list[bytes | None],
                                                                               list[bytes | None], list[int | None]]]:
        """Yield ``(offsets, values, keys, timestamps)`` of up to ``max_records`` records at a time,
        covering [start, end) in offset order.

        Fetches that come back short move the max-wait one step up for the reader's life (a new
        consumer: librdkafka's settings are fixed per consumer; later readers of the process start
        there), by kafka-python's reader's rule (ADR 009): fewer records than ``SHORT_FETCH_RECORDS``
        (or than what is left of the range) over ``WINDOW_S`` of waiting in ``consume()``, the first
        ``consume()`` after an assignment not counted (it connects and asks metadata); a stall (no
        progress for ``read_stall_ms``) steps up too. When the range is read, or the caller stops early, the partition is unassigned: librdkafka
        would otherwise keep fetching it ahead until the next read, each fetch a listing of the
        partition on the local broker (ADR 035)."""
        if rng.size <= 0:
            return
        from confluent_kafka import KafkaException, TopicPartition

        pos = rng.start
        last_progress = last_reconnect = time.monotonic()
        window_from, polled_s = pos, 0.0  # the window of consume() calls that judges the fetches' size
        assign = True
        offsets: list[int] = []
        values: list[bytes | None] = []
        keys: list[bytes | None] = []
        stamps: list[int | None] = []
        try:
            while True:
                err: Exception | None = None
                msgs: list = []
                first = assign
                try:
                    if self._consumer is None:
                        self._consumer = self._connect()
                    c = self._consumer
                    if assign:
                        self._know_topic(c, rng.topic)
                        c.assign([TopicPartition(rng.topic, rng.partition, pos)])
                        assign = False
                    t_poll = time.monotonic()
                    msgs = c.consume(num_messages=min(CONSUME_BATCH, rng.end - pos), timeout=0.5)
                    if not first:
                        polled_s += time.monotonic() - t_poll
                except KafkaException as exc:
                    err = exc
                now = time.monotonic()
                before = pos
                for m in msgs:
                    if m.error() is not None:
                        err = err or RuntimeError(str(m.error()))
                        continue
                    off = m.offset()
                    if off >= rng.end:
                        break
                    if off < pos:
                        continue
                    pos = off + 1
                    offsets.append(off)
                    values.append(m.value())
                    keys.append(m.key())
                    kind, ts = m.timestamp()
                    stamps.append(ts if kind else None)  # kind 0: the record has no timestamp
                if pos > before:
                    last_progress = now
                if first:
                    window_from, polled_s = pos, 0.0
                while len(offsets) >= max_records or (offsets and pos >= rng.end):
                    n = min(max_records, len(offsets))
                    READ_COUNT.records += n
                    yield offsets[:n], values[:n], keys[:n], stamps[:n]
                    offsets, values, keys, stamps = offsets[n:], values[n:], keys[n:], stamps[n:]
                if pos >= rng.end:
                    return
                if now - last_progress > self.idle_timeout_s:
                    raise read_timeout(rng, pos, self.idle_timeout_s, self.reconnects, self._settings, err)
                if now - max(last_progress, last_reconnect) > self.stall_s:
                    why = stall_reason(rng, pos, now - last_progress)
                    if err is None:
                        self._step_up()  # connected but given nothing: the shortest of short fetches
                    self._try_reconnect(why + (f" ({err})" if err else ""))
                    last_reconnect, assign = time.monotonic(), True
                elif err is not None and not msgs:
                    time.sleep(0.5)
                elif polled_s >= WINDOW_S:
                    got = pos - window_from
                    if got < min(SHORT_FETCH_RECORDS, rng.end - window_from) and self._step_up():
                        self._try_reconnect(f"short fetches on {rng.topic}[{rng.partition}] ({got:,} records in "
                                            f"{polled_s:.1f}s with a {self._waits[self._step - 1]} ms max-wait)")
                        assign = True
                    window_from, polled_s = pos, 0.0
        finally:
            self._unassign()

    def _try_reconnect(self, why: str) -> None:
        from confluent_kafka import KafkaException

        try:
            self._reconnect(why)
        except KafkaException as exc:  # the next consume() connects again (the broker may come back)
            log.warning("range reader: reconnect failed (%s)", exc)
            self._consumer = None

    def _unassign(self) -> None:
        """Stop fetching the partition just read (librdkafka prefetches an assigned one on its own)."""
        if self._consumer is None:
            return
        from confluent_kafka import KafkaException

        try:
            self._consumer.unassign()
        except KafkaException as exc:  # a broker gone away: the next read assigns anew or reconnects
            log.debug("range reader (confluent-kafka): unassign failed (%s)", exc)

    def _know_topic(self, consumer: Any, topic: str) -> None:
        """Ask the broker for ``topic``'s metadata before this consumer's first assignment of it.

        librdkafka learns an assigned topic it has no metadata for on its own schedule: on the local
        broker the first consume() after assigning such a topic came back empty for ~1 s (measured:
        a fresh consumer reading 1,000 records from each of 15 partitions of 5 topics took 4.0 s,
        0.97 s at each topic's first partition but the first; 0.3 s with one metadata request per
        topic). A fresh consumer per stream cycle (the Beam source's readers) paid it every cycle.
        A failed request is only logged: the read's stall/reconnect logic covers a broker that is away.
        """
        if topic in self._known_topics:
            return
        from confluent_kafka import KafkaException

        try:
            consumer.list_topics(topic=topic, timeout=min(5.0, self.stall_s))
            self._known_topics.add(topic)
        except KafkaException as exc:
            log.info("range reader (confluent-kafka): metadata of %s not fetched (%s)", topic, exc)

    def read(self, rng: OffsetRange) -> Iterator[Record]:
        """Yield the records with offsets in [start, end), in offset order."""
        for offsets, values, keys, stamps in self.read_columns(rng, CONSUME_BATCH):
            yield from map(Record, offsets, values, keys, stamps)

    def close(self) -> None:
        if self._consumer is not None:
            _close_quietly(self._consumer)
            self._consumer = None

    def __enter__(self) -> ConfluentRangeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_quietly(consumer: Any) -> None:
    try:
        consumer.close()
    except Exception:  # a consumer whose broker went away may fail to close cleanly: it is dropped anyway
        log.debug("closing a stalled consumer failed", exc_info=True)


def range_reader(settings: KafkaSettings, idle_timeout_s: float | None = None) -> Any:
    """The range reader of the configured client (``KafkaSettings.reader_client``)."""
    if settings.reader_client == "confluent-kafka":
        return ConfluentRangeReader(settings, idle_timeout_s)
    if settings.reader_client != "kafka-python":
        raise ValueError(f"KAFKA_READER_CLIENT={settings.reader_client!r}: use kafka-python or confluent-kafka")
    from connectors.kafka.reader import RangeReader

    return RangeReader(settings, idle_timeout_s)
