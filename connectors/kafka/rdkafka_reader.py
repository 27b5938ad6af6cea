"""Bounded reads of Kafka offset ranges with confluent-kafka (librdkafka): the readers' faster client.

The same contract as :class:`connectors.kafka.reader.RangeReader` (kafka-python): exactly the
records with offsets in ``[start, end)``, in offset order, manual assignment, no consumer group
and nothing committed to Kafka (offsets are committed with the marts, ADR 003); a read without
progress for ``read_stall_ms`` reconnects (a fresh consumer resumes at its position), and only
``read_timeout_ms`` without progress across reconnects fails with ``ReadTimeout``. librdkafka
parses record batches and checks their CRCs in C and prefetches on its own thread, which is what
the choice of client is about (ADR 021); kafka-python's short-fetch wait steps (ADR 009) have
no counterpart here because librdkafka keeps fetches in flight while the reader decodes.
Chosen with ``KafkaSettings.reader_client = "confluent-kafka"`` (``KAFKA_READER_CLIENT``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

from connectors.config import KafkaSettings
from connectors.kafka.reader import READ_COUNT, OffsetRange, read_timeout, stall_reason

log = logging.getLogger(__name__)

#: records asked of librdkafka per consume() call
CONSUME_BATCH = 10_000


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
        self.reconnects = 0
        #: topics whose metadata this consumer has asked for (see _know_topic)
        self._known_topics: set[str] = set()
        self._consumer: Any = self._connect()

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
            "fetch.wait.max.ms": max(self._settings.fetch_max_wait_ms, 10),
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 16 * 1024 * 1024,
            "enable.partition.eof": False,
        })

    def _reconnect(self, why: str) -> None:
        log.info("range reader (confluent-kafka): %s; reconnecting", why)
        self.reconnects += 1
        old, self._consumer = self._consumer, None
        if old is not None:
            _close_quietly(old)
        self._consumer = self._connect()

    def read_columns(self, rng: OffsetRange, max_records: int) -> Iterator[tuple[list[int], list[bytes | None],
                                                                               list[bytes | None], list[int | None]]]:
        """Yield ``(offsets, values, keys, timestamps)`` of up to ``max_records`` records at a time,
        covering [start, end) in offset order."""
        if rng.size <= 0:
            return
        from confluent_kafka import KafkaException, TopicPartition

        pos = rng.start
        last_progress = last_reconnect = time.monotonic()
        assign = True
        offsets: list[int] = []
        values: list[bytes | None] = []
        keys: list[bytes | None] = []
        stamps: list[int | None] = []
        while True:
            err: Exception | None = None
            msgs: list = []
            try:
                if self._consumer is None:
                    self._consumer = self._connect()
                c = self._consumer
                if assign:
                    self._know_topic(c, rng.topic)
                    c.assign([TopicPartition(rng.topic, rng.partition, pos)])
                    assign = False
                msgs = c.consume(num_messages=min(CONSUME_BATCH, rng.end - pos), timeout=0.5)
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
                try:
                    self._reconnect(why + (f" ({err})" if err else ""))
                except KafkaException as exc:
                    log.warning("range reader: reconnect failed (%s)", exc)
                    self._consumer = None
                last_reconnect, assign = time.monotonic(), True
            elif err is not None and not msgs:
                time.sleep(0.5)

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
