"""Publishing normalized events and dead letters (Avro single-object encoding).

acks=all with the idempotent producer: a retried batch is written once. Keys
are ``<exchange>:<symbol>`` so one instrument's events stay ordered in one
partition. Delivery errors are collected from the futures' errbacks and
raised by :meth:`EventProducer.flush`, never lost in a log line.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from kafka import KafkaProducer

from connectors.avro import AvroEncoder
from connectors.config import KafkaSettings
from connectors.normalize import TOPICS, DeadLetter

log = logging.getLogger(__name__)


class DeliveryError(RuntimeError):
    pass


class EventEncoder:
    """Normalized record -> (topic, key, Avro value, timestamp ms), whatever client sends it."""

    def __init__(self) -> None:
        self._encoders = {et: AvroEncoder(et) for et in TOPICS}

    def encode_event(self, event_type: str, record: dict[str, Any]) -> tuple[str, bytes, bytes, int]:
        """(topic, key, value, timestamp ms); raises ValueError/TypeError if the record does not fit the schema."""
        value = self._encoders[event_type].encode(record)
        key = f"{record['exchange']}:{record['symbol']}".encode()
        return TOPICS[event_type], key, value, record["event_time"] // 1000


class EventProducer:
    def __init__(self, settings: KafkaSettings, **overrides: Any) -> None:
        compression = None if settings.compression_type in ("", "none") else settings.compression_type
        config: dict[str, Any] = {
            **settings.client_kwargs(),
            "acks": "all",
            "enable_idempotence": True,
            "compression_type": compression,
            "linger_ms": settings.producer_linger_ms,
            "batch_size": 256 * 1024,
            "max_in_flight_requests_per_connection": 5,
            "retries": 2**31 - 1,
            "delivery_timeout_ms": 120_000,
            **overrides,
        }
        self._producer = KafkaProducer(**config)
        self._event_encoder = EventEncoder()
        self.encode_event = self._event_encoder.encode_event
        self._dead_encoder = AvroEncoder("dead_letter")
        self.sent: Counter = Counter()
        self._errors: list[BaseException] = []

    def _on_error(self, exc: BaseException) -> None:
        self._errors.append(exc)

    def send_encoded(self, topic: str, key: bytes, value: bytes, timestamp_ms: int | None) -> Any:
        """Send; returns the record's future (for a caller that needs each record's outcome)."""
        fut = self._producer.send(topic, key=key, value=value, timestamp_ms=timestamp_ms)
        fut.add_errback(self._on_error)
        self.sent[topic] += 1
        return fut

    def send_event(self, event_type: str, record: dict[str, Any]) -> None:
        self.send_encoded(*self.encode_event(event_type, record))

    def send_dead_letter(self, dead: DeadLetter) -> None:
        value = self._dead_encoder.encode(dead.to_record())
        key = (dead.exchange or "unknown").encode()
        fut = self._producer.send(dead.topic, key=key, value=value, timestamp_ms=dead.received_at // 1000 or None)
        fut.add_errback(self._on_error)
        self.sent[dead.topic] += 1

    def flush(self, timeout: float | None = 60.0) -> None:
        self._producer.flush(timeout=timeout)
        if self._errors:
            first = self._errors[0]
            n = len(self._errors)
            self._errors.clear()
            raise DeliveryError(f"{n} message(s) were not delivered; first error: {first!r}")

    def close(self, timeout: float | None = 60.0) -> None:
        try:
            self.flush(timeout)
        finally:
            self._producer.close(timeout=timeout)

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
