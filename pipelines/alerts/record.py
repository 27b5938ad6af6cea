"""The alert record: a ``cascade_alerts`` row and its episode -> ``cascade_alert`` (latest version), Avro or JSON.

The record is built from the row by column name: a field of the schema takes the column of the
same name (``cascade_alerts`` first, then the episode's ``cascades`` row), else its default. So a
column the detector adds (``kind``) reaches the topic as soon as it exists, and a column the
schema does not know yet waits for the schema's next version (schemas/README.md).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any

import schemas
from connectors.avro import AvroDecoder, AvroEncoder

EVENT_TYPE = "cascade_alert"
#: context from the episode (cascades) that an alert row does not carry
EPISODE_COLUMNS = ("detected_ts", "oi_change_usd", "oi_change_pct", "feedback", "fuel_1pct_usd", "fuel_2pct_usd",
                   "fuel_5pct_usd")
_MISSING = object()


@cache
def _fields() -> tuple[dict, ...]:
    return tuple(schemas.latest(EVENT_TYPE).raw["fields"])


@cache
def time_fields() -> frozenset[str]:
    """Fields holding epoch microseconds (timestamp-micros, optional or not)."""
    def is_time(t: Any) -> bool:
        if isinstance(t, list):
            return any(is_time(b) for b in t)
        return isinstance(t, dict) and t.get("logicalType") == "timestamp-micros"
    return frozenset(f["name"] for f in _fields() if is_time(f["type"]))


def epoch_us(v: datetime) -> int:
    if v.tzinfo is None:  # DuckDB TIMESTAMPTZ comes back aware; a naive one is UTC by convention here
        v = v.replace(tzinfo=UTC)
    return (v - _EPOCH) // timedelta(microseconds=1)  # exact, unlike timestamp() * 1e6


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_record(row: dict[str, Any], run_id: str, committed_us: int) -> dict[str, Any]:
    """A row of :data:`pipelines.alerts.outbox.ALERT_ROWS_SQL` -> a cascade_alert record (latest version)."""
    values = {**row, "run_id": run_id, "committed_ts": committed_us}
    rec: dict[str, Any] = {}
    for f in _fields():
        v = values.get(f["name"], _MISSING)
        if isinstance(v, datetime):
            v = epoch_us(v)
        elif isinstance(v, Decimal):
            v = float(v)
        if isinstance(v, float) and not math.isfinite(v):
            v = None  # a NaN price move (no price yet) is "unknown", which the optional field says
        if v is _MISSING or (v is None and f.get("default") is not None):
            if "default" not in f:
                raise ValueError(f"alert row lacks {f['name']!r}, which cascade_alert requires")
            v = f["default"]
        rec[f["name"]] = v
    return rec


def from_epoch_us(us: int) -> datetime:
    return datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000)


def iso_utc(us: int) -> str:
    """Epoch microseconds -> ISO 8601 UTC with a Z (microseconds only when there are some)."""
    t = from_epoch_us(us)
    return t.isoformat(timespec="microseconds" if t.microsecond else "seconds").replace("+00:00", "Z")


def to_json(record: dict[str, Any]) -> dict[str, Any]:
    """The webhook body: the record's fields, times as ISO 8601 UTC strings, and the schema's name."""
    times = time_fields()
    body = {k: (iso_utc(v) if k in times and v is not None else v) for k, v in record.items()}
    return {"schema": f"{EVENT_TYPE}.v{schemas.latest(EVENT_TYPE).version}", **body}


def idempotency_key(record: dict[str, Any]) -> str:
    """What a receiver dedupes on: one alert per episode and level."""
    return f"{record['episode_id']}:{record['severity_level']}"


@cache
def encoder() -> AvroEncoder:
    return AvroEncoder(EVENT_TYPE)


@cache
def decoder() -> AvroDecoder:
    return AvroDecoder(EVENT_TYPE)
