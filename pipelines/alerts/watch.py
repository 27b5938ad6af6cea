"""Cascade watches from the open minute (ADR 018): raise in the cycle that sees the crossing,
confirm or withdraw when the minute closes.

The stream job's cascade detector reads the closed minutes only (the marts hold what complete
minutes say, as a backfill would); a second pass of the same detector over the partial bar of the
open minute yields the ``start`` alerts that minute would raise if it closed now
(``cascades.open_minute_starts``). Each becomes one ``cascade_watches`` row and one alert record
``cascade_watch`` (level :data:`WATCH_OPEN_LEVEL`). Once the minute has closed, the detector's own
alerts decide: a cascade level of the same episode at or before that minute confirms the watch (that
alert is the confirmation the subscriber receives, at its own level); none withdraws it, and a
``watch_withdrawn`` record (level :data:`WITHDRAWN_LEVEL`) says so. Both functions run inside the
analytics transaction, with the outbox rows (ADR 012): a watch and its records commit together, so
a restart never sends one twice nor skips one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pipelines.alerts import outbox
from pipelines.alerts.record import epoch_us, from_epoch_us
from pipelines.settings import JobSettings

#: severity_level of the alert records of a watch: below the burst (-1), the first-hot-minute watch
#: (0) and every cascade tier (>= 1), so "severity_level >= 1" still selects cascades only
WATCH_OPEN_LEVEL = -2
WITHDRAWN_LEVEL = -3
WATCH_TYPE = "cascade_watch"
WITHDRAWN_TYPE = "watch_withdrawn"
WATCH_KIND = "watch"

#: the open-minute starts of a cycle (its Parquet partials) that have no watch yet. One watch per
#: episode: a run withdrawn at one close and crossing again later is confirmed by its start alert
#: at that minute's close.
_NEW_WATCHES_SQL = """
SELECT episode_id, any_value(scope) AS scope, any_value(direction) AS direction,
       min(minute_ts) AS minute_ts, any_value(start_ts) AS start_ts,
       arg_min(severity_level, minute_ts) AS level, arg_min(liq_usd, minute_ts) AS liq_usd,
       arg_min(minute_liq_usd, minute_ts) AS minute_liq_usd, arg_min(threshold_usd, minute_ts) AS threshold_usd,
       arg_min(price_move_pct, minute_ts) AS price_move_pct, arg_min(severity, minute_ts) AS severity
FROM read_parquet(?, union_by_name=true) n
WHERE NOT EXISTS (SELECT 1 FROM cascade_watches w WHERE w.episode_id = n.episode_id)
GROUP BY episode_id
ORDER BY minute_ts, episode_id
"""

#: watches whose minute has closed: the detector's first cascade level of the episode at or before
#: that minute (NULL: withdrawn)
_DUE_SQL = """
SELECT w.*, (SELECT min(a.severity_level) FROM cascade_alerts a
             WHERE a.episode_id = w.episode_id AND a.severity_level >= 1 AND a.minute_ts <= w.minute_ts)
            AS confirmed_by
FROM cascade_watches w
WHERE w.state = 'watch' AND w.minute_ts < make_timestamp(?::BIGINT)
ORDER BY w.minute_ts, w.episode_id
"""


def _record_row(w: dict[str, Any], alert_type: str, level: int, alert_ts: datetime) -> dict[str, Any]:
    """A watch as an alert row (the columns ``record.to_record`` takes by name)."""
    return {"episode_id": w["episode_id"], "severity_level": level, "alert_type": alert_type,
            "scope": w["scope"], "direction": w["direction"], "kind": WATCH_KIND, "alert_ts": alert_ts,
            "minute_ts": w["minute_ts"], "start_ts": w["start_ts"], "liq_usd": w["liq_usd"],
            "minute_liq_usd": w["minute_liq_usd"], "threshold_usd": w["threshold_usd"],
            "price_move_pct": w["price_move_pct"], "severity": w["severity"]}


def _rows(cur) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def raise_watches(con, run_id: str, open_start_files: list[str], watermark_us: int, bar_us: int,
                  settings: JobSettings) -> list[str]:
    """Insert a watch (and queue its record) for each episode of ``open_start_files`` not watched
    yet; ``watermark_us``: how far the job's event time has reached (the watch's ``seen_ts``, and
    its record's ``alert_ts``, clipped into the minute). Returns the new watches' episode ids."""
    if not open_start_files:
        return []
    new = _rows(con.execute(_NEW_WATCHES_SQL, [open_start_files]))
    now = datetime.now(UTC)
    records = []
    for w in new:
        minute_us = epoch_us(w["minute_ts"])
        seen = from_epoch_us(min(max(watermark_us, minute_us), minute_us + bar_us - 1))
        con.execute(
            "INSERT INTO cascade_watches VALUES (?, ?, ?, 'watch', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL)",
            [w["episode_id"], w["scope"], w["direction"], w["minute_ts"], w["start_ts"], seen, w["level"],
             w["liq_usd"], w["minute_liq_usd"], w["threshold_usd"], w["price_move_pct"], w["severity"],
             run_id, now])
        records.append(_record_row(w, WATCH_TYPE, WATCH_OPEN_LEVEL, seen))
    outbox.enqueue_rows(con, run_id, records, settings)
    return [w["episode_id"] for w in new]


def resolve_watches(con, run_id: str, closed_before_us: int, bar_us: int, settings: JobSettings) -> dict[str, str]:
    """Confirm or withdraw the watches whose minute is before ``closed_before_us`` (run after the
    cycle's cascade_alerts are upserted); queue a ``watch_withdrawn`` record for each withdrawal.
    Returns {episode_id: new state}."""
    due = _rows(con.execute(_DUE_SQL, [closed_before_us]))
    now = datetime.now(UTC)
    out: dict[str, str] = {}
    records = []
    for w in due:
        state = "withdrawn" if w["confirmed_by"] is None else "confirmed"
        closed = w["minute_ts"] + timedelta(microseconds=bar_us)
        con.execute("UPDATE cascade_watches SET state = ?, resolved_ts = ?, resolved_run_id = ?, resolved_at = ?, "
                    "confirmed_level = ? WHERE episode_id = ?",
                    [state, closed, run_id, now, w["confirmed_by"], w["episode_id"]])
        if state == "withdrawn":
            records.append(_record_row(w, WITHDRAWN_TYPE, WITHDRAWN_LEVEL, closed))
        out[w["episode_id"]] = state
    outbox.enqueue_rows(con, run_id, records, settings)
    return out

