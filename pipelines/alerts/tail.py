"""`liqstream alerts tail`: the alert topic, decoded, for people (text) and scripts (JSON lines).

Reads with manual partition assignment and no consumer group, like the jobs (ADR 003): it commits
nothing and never disturbs another subscriber.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from kafka import KafkaConsumer, TopicPartition

from connectors.avro import SchemaDecodeError
from connectors.config import KafkaSettings
from connectors.kafka.reader import log_bounds
from pipelines.alerts.record import decoder, iso_utc, to_json


def format_alert(a: dict[str, Any]) -> str:
    """One line per alert: when, where, what, how much."""
    def pct(label: str, v: float | None) -> str:
        return f"  {label} {v:+.2f}%" if v is not None else ""

    feedback = f"  feedback {a['feedback']:.2f}" if a.get("feedback") is not None else ""
    return (f"{iso_utc(a['alert_ts'])}  {a['scope']:<7} {a['direction']:<17} {a['alert_type']:<10} "
            f"level {a['severity_level']}  ${a['liq_usd'] / 1e6:,.2f}M liquidated"
            f"{pct('price', a.get('price_move_pct'))}{pct('OI', a.get('oi_change_pct'))}{feedback}"
            f"  [{a.get('kind', 'cascade')}] episode {a['episode_id']}")


def tail(kafka: KafkaSettings, topic: str, last: int | None = 10, follow: bool = False,
         fmt: str = "text", out: TextIO = sys.stdout, poll_ms: int = 500) -> int:
    """Print the last ``last`` alerts (None: all) in alert-time order, then, with ``follow``, new ones
    as they arrive (until interrupted). Returns how many were printed."""
    bounds = log_bounds(kafka, [topic])
    if not bounds:
        raise LookupError(f"no topic {topic!r} at {kafka.bootstrap_servers} (the stream job creates it)")
    consumer = KafkaConsumer(**kafka.client_kwargs(), group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    printed = 0

    def emit(alerts: list[dict[str, Any]]) -> None:
        nonlocal printed
        for a in alerts:
            print(json.dumps(to_json(a)) if fmt == "json" else format_alert(a), file=out, flush=True)
            printed += 1

    try:
        tps = [TopicPartition(t, p) for (t, p) in sorted(bounds)]
        consumer.assign(tps)
        for tp in tps:
            begin, end = bounds[(tp.topic, tp.partition)]
            consumer.seek(tp, begin if last is None else max(begin, end - last))
        backlog: list[dict[str, Any]] = []
        newer: list[dict[str, Any]] = []  # sent while the backlog was read: --follow shows them next
        while any(consumer.position(tp) < bounds[(tp.topic, tp.partition)][1] for tp in tps):
            for tp, records in consumer.poll(timeout_ms=poll_ms).items():
                end = bounds[(tp.topic, tp.partition)][1]
                backlog += _decode(tp, [r for r in records if r.offset < end])
                newer += _decode(tp, [r for r in records if r.offset >= end])
        backlog.sort(key=lambda a: (a["alert_ts"], a["episode_id"], a["severity_level"]))
        emit(backlog if last is None else backlog[-last:] if last else [])
        if follow:
            emit(newer)
        while follow:
            for tp, records in consumer.poll(timeout_ms=poll_ms).items():
                emit(_decode(tp, records))
    finally:
        consumer.close()
    return printed


def _decode(tp: TopicPartition, records: list) -> list[dict[str, Any]]:
    out = []
    for rec in records:
        try:
            out.append(decoder().decode(rec.value))
        except SchemaDecodeError as exc:  # said, not dropped silently
            print(f"# {tp.topic}[{tp.partition}]@{rec.offset}: not a cascade alert ({exc})", file=sys.stderr)
    return out
