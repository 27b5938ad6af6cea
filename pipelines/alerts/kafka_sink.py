"""Kafka sink: alerts to ``cascade_alerts.v1`` (key = episode id), each level once.

The idempotent producer (acks=all) makes a retried batch land once within a producer session.
Across sessions the topic is the truth for "sent": a delivery that may have reached it already
(pending when the job started — the job may have died between the broker's ack and the outbox
update — or whose last attempt ended without an answer) is looked up in the topic's last
``reconcile_records`` records per partition first, and only sent if absent (ADR 012).
"""

from __future__ import annotations

import logging

from connectors.avro import SchemaDecodeError
from connectors.config import KafkaSettings
from connectors.kafka.producer import EventProducer
from connectors.kafka.reader import OffsetRange, RangeReader, log_bounds
from connectors.kafka.topics import ensure_topics
from pipelines.alerts.faults import crash_point
from pipelines.alerts.outbox import Delivery, Outcome
from pipelines.alerts.record import decoder, encoder
from pipelines.settings import AlertSettings

log = logging.getLogger("liqstream.alerts")


class KafkaAlertSink:
    def __init__(self, kafka: KafkaSettings, settings: AlertSettings) -> None:
        self.kafka = kafka
        self.settings = settings
        self.topic = settings.topic
        self.name = f"kafka:{settings.topic}"
        self._producer: EventProducer | None = None

    def start(self) -> None:
        if self._producer is not None:
            return
        ensure_topics(self.kafka, [self.topic])
        # no linger: an alert is worth a request of its own; a send that outlives the timeout is
        # in doubt and goes through the topic read-back before its retry
        timeout_ms = max(int(self.settings.kafka_timeout_s * 1000), self.kafka.request_timeout_ms + 1000)
        self._producer = EventProducer(self.kafka, linger_ms=0, delivery_timeout_ms=timeout_ms)

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=self.settings.kafka_timeout_s)
            except Exception as exc:  # undelivered sends stay pending in the outbox
                log.warning("alert producer closed with undelivered records (%s)", exc)
            self._producer = None

    @staticmethod
    def backoff_s(attempts: int) -> float:
        return min(30.0, 2.0 ** max(0, attempts - 1))

    def sent_in_topic(self) -> set[tuple[str, int]]:
        """(episode_id, severity_level) of the alerts in the last reconcile_records of each partition."""
        bounds = log_bounds(self.kafka, [self.topic])
        ranges = [OffsetRange(t, p, max(begin, end - self.settings.reconcile_records), end)
                  for (t, p), (begin, end) in sorted(bounds.items()) if end > begin]
        found: set[tuple[str, int]] = set()
        foreign = 0
        with RangeReader(self.kafka, idle_timeout_s=self.settings.kafka_timeout_s) as reader:
            for rng in ranges:
                for rec in reader.read(rng):
                    try:
                        a = decoder().decode(rec.value)
                    except SchemaDecodeError:
                        foreign += 1  # not an alert liqstream wrote: cannot be one of ours
                        continue
                    found.add((a["episode_id"], a["severity_level"]))
        if foreign:
            log.warning("%s: %d record(s) that are not cascade alerts in the topic's tail", self.topic, foreign)
        return found

    def deliver(self, batch: list[Delivery]) -> list[Outcome]:
        self.start()
        assert self._producer is not None
        out: list[Outcome] = []
        if any(d.in_doubt for d in batch):
            there = self.sent_in_topic()
            out = [Outcome(d, "sent", d.attempts) for d in batch if (d.episode_id, d.severity_level) in there]
            if out:
                log.info("%d alert(s) found already in %s (sent before a restart): not sent again", len(out), self.topic)
            batch = [d for d in batch if (d.episode_id, d.severity_level) not in there]
        sends = []
        for d in batch:
            try:
                value = encoder().encode(d.record)
            except (TypeError, ValueError) as exc:  # a record the schema refuses: no retry can help
                out.append(Outcome(d, "dead", d.attempts + 1, f"does not fit cascade_alert: {exc}"))
                continue
            sends.append((d, self._producer.send_encoded(self.topic, d.episode_id.encode(), value, None)))
        if not sends:
            return out
        error = None
        try:
            self._producer.flush(timeout=self.settings.kafka_timeout_s)
        except Exception as exc:  # which records failed is read from their futures below
            error = f"{type(exc).__name__}: {exc}"
        crash_point("after_produce")
        for d, fut in sends:
            if fut.is_done and fut.succeeded():
                out.append(Outcome(d, "sent", d.attempts + 1))
            else:
                why = repr(fut.exception) if fut.is_done else (error or "no broker acknowledgement in time")
                out.append(Outcome(d, "retry", d.attempts + 1, why[:500]))
        if any(o.status == "retry" for o in out):
            self.close()  # a fresh producer (and session) for the retry, after the topic read-back
        return out
