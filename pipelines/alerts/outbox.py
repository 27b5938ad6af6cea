"""The alert outbox in DuckDB (``alert_deliveries``, ``alert_dead_letters``; migration 0012).

:func:`enqueue` runs inside the transaction that commits the analytic marts (``cascade_alerts``
included) with the job's state, so an alert is committed if and only if its deliveries are
(ADR 003, ADR 012). Everything else here runs on the job's thread between cycles, in short
transactions: the delivery threads never touch DuckDB.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from pipelines.alerts.record import EPISODE_COLUMNS, from_epoch_us, to_record
from pipelines.settings import JobSettings

#: the alerts a cycle just wrote (its cascade_alerts Parquet partials), with their episode's context,
#: that have no delivery yet for any sink: re-emitted alerts and alerts already sent are skipped, and
#: a sink configured later receives new alerts only (no flood of history)
ALERT_ROWS_SQL = f"""
SELECT a.*, {', '.join(f'c.{c}' for c in EPISODE_COLUMNS)}
FROM cascade_alerts a LEFT JOIN cascades c ON c.episode_id = a.episode_id
WHERE EXISTS (SELECT 1 FROM read_parquet(?, union_by_name=true) n
              WHERE n.episode_id = a.episode_id AND n.severity_level = a.severity_level)
  AND NOT EXISTS (SELECT 1 FROM alert_deliveries d
                  WHERE d.episode_id = a.episode_id AND d.severity_level = a.severity_level)
ORDER BY a.alert_ts, a.episode_id, a.severity_level
"""
STATUSES = ("pending", "sent", "dead")


def webhook_sink_name(url: str) -> str:
    """A webhook's name in the outbox: host and a hash of the whole URL, never its path or token."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"webhook:{parts.hostname or '?'}{port}#{hashlib.sha256(url.encode()).hexdigest()[:8]}"


def sink_names(settings: JobSettings) -> list[str]:
    """The outbox names of the configured sinks: what a cycle queues each new alert for."""
    a = settings.alerts
    return ([f"kafka:{a.topic}"] if a.topic else []) + [webhook_sink_name(u) for u in a.webhooks]


@dataclass(frozen=True)
class Delivery:
    """One alert for one sink."""

    episode_id: str
    severity_level: int
    sink: str
    attempts: int
    record: dict[str, Any] = field(compare=False)
    #: it may have reached the sink already (pending when the job started, or an attempt whose
    #: outcome is unknown): the Kafka sink reads the topic back before sending it
    in_doubt: bool = False

    @property
    def key(self) -> tuple[str, int, str]:
        return self.episode_id, self.severity_level, self.sink

    def retried(self, attempts: int) -> Delivery:
        return replace(self, attempts=attempts, in_doubt=True)


@dataclass(frozen=True)
class Outcome:
    delivery: Delivery
    status: str  # sent | dead | retry (still pending: attempts and the error are recorded)
    attempts: int
    error: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


def _wants(sink: str, rec: dict[str, Any], settings: JobSettings) -> bool:
    """The topic carries every alert (subscribers filter on ``kind``); a webhook only the kinds it pages for."""
    return not sink.startswith("webhook:") or rec.get("kind", "cascade") in settings.alerts.webhook_kinds


def enqueue(con, run_id: str, alert_files: list[str], settings: JobSettings) -> int:
    """Queue, for every configured sink, the alerts of ``alert_files`` not queued before; returns
    how many alerts. Call inside the transaction that upserts those files into cascade_alerts."""
    sinks = sink_names(settings)
    if not alert_files or not sinks:
        return 0
    cur = con.execute(ALERT_ROWS_SQL, [alert_files])
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    if not rows:
        return 0
    committed_us = time.time_ns() // 1000
    now = from_epoch_us(committed_us)
    params = []
    for row in rows:
        rec = to_record(row, run_id, committed_us)
        payload = json.dumps(rec)
        params.extend([rec["episode_id"], rec["severity_level"], sink, "pending", 0, now, None, None, run_id, payload]
                      for sink in sinks if _wants(sink, rec, settings))
    con.executemany("INSERT INTO alert_deliveries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", params)
    return len(rows)


def pending(con, sinks: list[str], limit: int = 10_000) -> list[Delivery]:
    """The pending deliveries to ``sinks``, oldest first (an episode's levels in order)."""
    rows = con.execute(
        "SELECT episode_id, severity_level, sink, attempts, payload FROM alert_deliveries "
        "WHERE status = 'pending' AND list_contains(?, sink) ORDER BY enqueued_at, episode_id, severity_level "
        "LIMIT ?", [sinks, limit]).fetchall()
    return [Delivery(e, lvl, s, n, json.loads(p)) for e, lvl, s, n, p in rows]


def record_outcomes(con, outcomes: list[Outcome]) -> None:
    """Write what the delivery threads did, in one short transaction."""
    if not outcomes:
        return
    con.execute("BEGIN")
    try:
        for o in outcomes:
            d = o.delivery
            status = "pending" if o.status == "retry" else o.status
            con.execute(
                "UPDATE alert_deliveries SET status = ?, attempts = ?, last_error = ?, delivered_at = ? "
                "WHERE episode_id = ? AND severity_level = ? AND sink = ?",
                [status, o.attempts, o.error, None if status == "pending" else o.at, *d.key])
            if o.status == "dead":
                con.execute("INSERT OR REPLACE INTO alert_dead_letters VALUES (?, ?, ?, ?, ?, ?, ?)",
                            [*d.key, o.attempts, o.error or "undeliverable", o.at, json.dumps(d.record)])
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def counts(con) -> dict[str, dict[str, int]]:
    """sink -> {pending, sent, dead}: what the outbox holds."""
    out: dict[str, dict[str, int]] = {}
    for sink, status, n in con.execute(
            "SELECT sink, status, count(*) FROM alert_deliveries GROUP BY ALL ORDER BY ALL").fetchall():
        out.setdefault(sink, dict.fromkeys(STATUSES, 0))[status] = int(n)
    return out
