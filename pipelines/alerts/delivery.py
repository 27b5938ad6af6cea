"""Alert delivery off the stream cycle's critical path (ADR 012).

One worker thread per sink (the Kafka topic, each webhook) sends what it is handed and retries
with backoff; it never touches DuckDB. The job's thread calls :meth:`AlertDispatcher.sync`
between cycles: one short transaction writes the workers' outcomes to the outbox, then the new
pending deliveries are handed out. So a slow or dead receiver holds up only its own thread, the
database keeps its single writer, and the snapshot the job publishes between cycles stays
consistent. What is handed out but not yet recorded when the job dies is pending at the next
start, and the Kafka sink reads the topic back before sending it again.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from typing import Any, Protocol

from pipelines import warehouse
from pipelines.alerts import outbox
from pipelines.alerts.faults import crash_point
from pipelines.alerts.outbox import Delivery, Outcome
from pipelines.settings import JobSettings

log = logging.getLogger("liqstream.alerts")


class Sink(Protocol):
    name: str

    def start(self) -> None: ...
    def close(self) -> None: ...
    def backoff_s(self, attempts: int) -> float: ...
    def deliver(self, batch: list[Delivery]) -> list[Outcome]: ...


def configured_sinks(settings: JobSettings) -> list[Sink]:
    from pipelines.alerts.kafka_sink import KafkaAlertSink
    from pipelines.alerts.webhook import WebhookSink

    sinks: list[Sink] = [KafkaAlertSink(settings.kafka, settings.alerts)] if settings.alerts.topic else []
    sinks += [WebhookSink(url, settings.alerts) for url in settings.alerts.webhooks]
    return sinks


class SinkWorker(threading.Thread):
    """Sends deliveries to one sink; failed ones wait their backoff in a heap, not in a sleep."""

    def __init__(self, sink: Sink, batch_size: int) -> None:
        super().__init__(name=f"alerts-{sink.name}", daemon=True)
        self.sink = sink
        self.batch_size = batch_size
        self.inbox: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
        self._outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._retry: list[tuple[float, int, Delivery]] = []
        self._seq = itertools.count()
        self._unsettled = 0  # submitted, no final outcome (sent/dead) yet

    def submit(self, d: Delivery) -> None:
        with self._lock:
            self._unsettled += 1
        self.inbox.put(d)

    def take_outcomes(self) -> list[Outcome]:
        with self._lock:
            out, self._outcomes = self._outcomes, []
        return out

    def has_outcomes(self) -> bool:
        with self._lock:
            return bool(self._outcomes)

    def settled(self) -> bool:
        """Every submitted delivery has a final outcome (retries waiting their backoff do not)."""
        with self._lock:
            return self._unsettled == 0

    def stop(self) -> None:
        self._stopping.set()
        self.inbox.put(None)  # type: ignore[arg-type]  # wakes a blocked get

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                batch = self._next_batch()
                if batch:
                    self._send(batch)
        finally:
            self.sink.close()

    def _next_batch(self) -> list[Delivery]:
        wait = max(0.0, self._retry[0][0] - time.monotonic()) if self._retry else 1.0
        batch: list[Delivery] = []
        try:
            first = self.inbox.get(timeout=wait)
            if first is not None:
                batch.append(first)
            while len(batch) < self.batch_size:
                d = self.inbox.get_nowait()
                if d is not None:
                    batch.append(d)
        except queue.Empty:
            pass
        now = time.monotonic()
        while self._retry and self._retry[0][0] <= now and len(batch) < self.batch_size:
            batch.append(heapq.heappop(self._retry)[2])
        return batch

    def _send(self, batch: list[Delivery]) -> None:
        try:
            outcomes = self.sink.deliver(batch)
        except Exception as exc:  # sink down (broker unreachable...): the whole batch waits its backoff
            outcomes = [Outcome(d, "retry", d.attempts + 1, f"{type(exc).__name__}: {exc}"[:500]) for d in batch]
        for o in outcomes:
            if o.status == "retry":
                due = time.monotonic() + self.sink.backoff_s(o.attempts)
                heapq.heappush(self._retry, (due, next(self._seq), o.delivery.retried(o.attempts)))
                log.warning("alert %s:%s to %s failed (attempt %d: %s); retrying", o.delivery.episode_id,
                            o.delivery.severity_level, self.sink.name, o.attempts, o.error)
            elif o.status == "dead":
                log.error("alert %s:%s to %s dead-lettered after %d attempt(s): %s", o.delivery.episode_id,
                          o.delivery.severity_level, self.sink.name, o.attempts, o.error)
        with self._lock:
            self._outcomes.extend(outcomes)
            self._unsettled -= sum(o.status != "retry" for o in outcomes)


class AlertDispatcher:
    """The stream job's alert delivery: worker threads, synced with the outbox between cycles."""

    def __init__(self, settings: JobSettings) -> None:
        self.settings = settings
        self.workers = {s.name: SinkWorker(s, batch_size=500 if s.name.startswith("kafka:") else 1)
                        for s in configured_sinks(settings)}
        self._in_flight: set[tuple[str, int, str]] = set()
        self._unrecorded: list[Outcome] = []
        self._synced_once = False
        self._counts: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()

    def start(self) -> AlertDispatcher:
        for w in self.workers.values():
            w.start()
        return self

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the workers (a send under way gets ``timeout_s``) and record what they did."""
        for w in self.workers.values():
            w.stop()
        deadline = time.monotonic() + timeout_s
        for w in self.workers.values():
            if w.ident is not None:  # started
                w.join(max(0.0, deadline - time.monotonic()))
        if not self.settings.db.exists():
            return
        try:
            con = warehouse.connect(self.settings.db)
        except Exception as exc:  # e.g. another writer holds the file: the job must still stop cleanly
            # what was sent but not recorded stays pending: the next run reads the topic back before
            # sending it again, and webhooks carry the Idempotency-Key (ADR 012)
            log.warning("alert outcomes not recorded at stop (%s: %s); the next run reconciles them",
                        type(exc).__name__, exc)
            return
        try:
            self._record(con)
        finally:
            con.close()

    def sync(self, con: Any) -> int:
        """Record outcomes, hand out new pending deliveries; returns how many were handed out."""
        self._record(con)
        handed = 0
        fresh = [d for d in outbox.pending(con, list(self.workers)) if d.key not in self._in_flight]
        if fresh:
            crash_point("after_commit")
        for d in fresh:
            # pending at start-up: an earlier run may have sent it and died before recording it
            self.workers[d.sink].submit(d if self._synced_once else Delivery(
                d.episode_id, d.severity_level, d.sink, d.attempts, d.record, in_doubt=True))
            self._in_flight.add(d.key)
            handed += 1
        self._synced_once = True
        counts = outbox.counts(con)
        with self._lock:
            self._counts = counts
        return handed

    def _record(self, con: Any) -> None:
        outcomes = self._unrecorded + [o for w in self.workers.values() for o in w.take_outcomes()]
        self._unrecorded = outcomes  # kept until written: a failed write is tried again at the next sync
        outbox.record_outcomes(con, outcomes)
        self._unrecorded = []
        for o in outcomes:
            if o.status != "retry":
                self._in_flight.discard(o.delivery.key)

    def sync_safely(self, con: Any) -> None:
        """:meth:`sync` for the stream job: a delivery problem is logged, never fails the cycle."""
        if not self.workers:
            return
        try:
            self.sync(con)
        except Exception:
            log.exception("alert delivery: could not sync with the outbox (retried after the next cycle)")

    def after_cycle(self) -> None:
        """The stream job's hook between cycles: record what the workers did since (the new
        alerts were handed out by ``run_load(after_analytics=sync_safely)``), if they did anything."""
        if not self.workers or (self._synced_once and not self._unrecorded
                                and not any(w.has_outcomes() for w in self.workers.values())):
            return
        con = warehouse.connect(self.settings.db)
        try:
            self.sync_safely(con)
        finally:
            con.close()

    def idle(self) -> bool:
        """Everything handed out has a final outcome, recorded."""
        return all(w.settled() and not w.has_outcomes() for w in self.workers.values())

    def metrics_lines(self) -> list[str]:
        """Prometheus lines: the outbox's deliveries per sink and status, as of the last sync."""
        with self._lock:
            counts = dict(self._counts)
        names = {"sent": "liqstream_alerts_delivered", "pending": "liqstream_alerts_pending",
                 "dead": "liqstream_alerts_dead_lettered"}
        helps = {"sent": "Alerts delivered (or found already in the topic), per sink.",
                 "pending": "Alerts committed and not yet delivered, per sink.",
                 "dead": "Alerts given up after the sink's retries (table alert_dead_letters), per sink."}
        lines = []
        for status, metric in names.items():
            lines += [f"# HELP {metric} {helps[status]}", f"# TYPE {metric} gauge"]
            for sink in sorted(set(counts) | set(self.workers)):
                lines.append(f'{metric}{{sink="{sink}"}} {counts.get(sink, {}).get(status, 0)}')
        return lines


def deliver_pending(settings: JobSettings, timeout_s: float = 30.0) -> dict[str, dict[str, int]]:
    """Deliver the outbox once (``liqstream load``): until every sink is idle or ``timeout_s``
    passed; what is left stays pending for the next run. Returns the outbox counts."""
    dispatcher = AlertDispatcher(settings)
    if not dispatcher.workers:
        return {}
    dispatcher.start()
    con = warehouse.connect(settings.db)
    try:
        dispatcher.sync(con)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not dispatcher.idle():
            time.sleep(0.05)
            dispatcher.sync(con)
    finally:
        con.close()
        dispatcher.close()
    con = warehouse.connect(settings.db)
    try:
        return outbox.counts(con)
    finally:
        con.close()
