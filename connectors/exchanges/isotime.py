"""ISO-8601 times, as the message versions of past years send them (OKX v3, Bybit v2)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from connectors.normalize import Malformed, to_epoch_us

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_to_epoch_us(value: Any, name: str, event_type: str | None) -> int:
    """An ISO-8601 UTC time as OKX v3 / Bybit v2 send it (``2019-08-01T00:00:08.806Z``) -> epoch µs."""
    if not isinstance(value, str):
        raise Malformed("bad_value", f"{name}={value!r} is not an ISO time", event_type)
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise Malformed("bad_value", f"{name}={value!r} is not an ISO time", event_type) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    delta = t - _EPOCH
    us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds  # exact, no float
    return to_epoch_us(us, name, event_type, unit="us")

