"""The normalizer contract and the router that accounts for every raw message.

A venue normalizer turns one parsed raw message into zero or more normalized
records ``(event_type, record)``; it raises :class:`Ignored` for a message it
recognises but liqstream does not use (subscription acks, heartbeats, a book
update whose depth waits for its slot to close: connectors/book.py) and
:class:`Malformed` for a message it cannot trust. The router
(:func:`route`) wraps the JSON parsing and the normalizer so that every raw
message ends in exactly one place: normalized records, a dead letter, or a
counted ignore.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from connectors.plausibility import implausibility

#: Kafka topic of each normalized event type.
TOPICS: dict[str, str] = {
    "trade": "trades.v1",
    "liquidation": "liquidations.v1",
    "open_interest": "open_interest.v1",
    "funding": "funding.v1",
    "book_depth": "book_depth.v1",
}
#: topic -> event type (a ``.dlq`` topic is in neither)
TOPIC_EVENT: dict[str, str] = {topic: et for et, topic in TOPICS.items()}
#: Dead letters whose event type is unknown (invalid JSON, unknown message).
UNROUTED_DLQ = "raw.v1.dlq"


def dlq_topic(event_type: str | None) -> str:
    return f"{TOPICS[event_type]}.dlq" if event_type in TOPICS else UNROUTED_DLQ


Normalized = tuple[str, dict[str, Any]]

#: plain-text websocket heartbeats some venues send (OKX answers "ping" with "pong")
TEXT_HEARTBEATS = frozenset({b"ping", b"pong"})
_HEARTBEAT_LENGTHS = frozenset(len(h) for h in TEXT_HEARTBEATS)


class Ignored(Exception):
    """A recognised message that carries nothing liqstream uses; ``reason`` is counted."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Malformed(Exception):
    """A message that cannot be normalized; it becomes a dead letter."""

    def __init__(self, reason: str, detail: str, event_type: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.event_type = event_type


class VenueNormalizer(Protocol):
    venue: str

    def normalize(self, msg: Any, received_at_us: int) -> list[Normalized]:
        """Map one parsed raw message (websocket frame or REST payload) to records."""
        ...

    # Optional, not part of the Protocol's required surface: a normalizer may also define
    # ``normalize_raw(self, raw_bytes: bytes, received_at_us: int) -> list[Normalized] | None``,
    # tried by :func:`route` before parsing. It returns the records ``normalize`` would give
    # for the same message, or None (never raises Ignored/Malformed) to leave the message to
    # the general path; it exists so that a venue's hot message type can skip building dicts.


@dataclass(frozen=True, slots=True)
class DeadLetter:
    exchange: str | None
    event_type: str | None
    reason: str
    detail: str
    source: str | None
    received_at: int
    raw: bytes

    @property
    def topic(self) -> str:
        return dlq_topic(self.event_type)

    def to_record(self) -> dict[str, Any]:
        return {
            "exchange": self.exchange,
            "event_type": self.event_type,
            "reason": self.reason,
            "detail": self.detail,
            "source": self.source,
            "received_at": self.received_at,
            "raw": self.raw,
        }


@dataclass(slots=True, init=False)
class Outcome:
    records: list[Normalized]
    dead: DeadLetter | None
    ignored: str | None

    def __init__(self, records: list[Normalized] | None = None, dead: DeadLetter | None = None,
                 ignored: str | None = None) -> None:
        # written out: the generated __init__ of a default_factory field costs ~2x this on every message
        self.records = [] if records is None else records
        self.dead = dead
        self.ignored = ignored


@dataclass
class RouteCounters:
    """Where the raw messages went, per venue: the books must balance."""

    messages: Counter = field(default_factory=Counter)  # venue -> raw messages seen
    records: Counter = field(default_factory=Counter)  # (venue, event_type) -> normalized records
    normalized_messages: Counter = field(default_factory=Counter)  # venue -> messages giving >= 1 record
    dead: Counter = field(default_factory=Counter)  # (venue, reason) -> dead letters
    ignored: Counter = field(default_factory=Counter)  # (venue, reason) -> ignored messages

    def add(self, venue: str, outcome: Outcome) -> None:
        self.messages[venue] += 1
        if outcome.dead is not None:
            self.dead[(venue, outcome.dead.reason)] += 1
        elif outcome.ignored is not None:
            self.ignored[(venue, outcome.ignored)] += 1
        else:
            self.normalized_messages[venue] += 1
            for event_type, _ in outcome.records:
                self.records[(venue, event_type)] += 1

    @property
    def balanced(self) -> bool:
        n_dead = sum(self.dead.values())
        n_ignored = sum(self.ignored.values())
        return sum(self.messages.values()) == sum(self.normalized_messages.values()) + n_dead + n_ignored

    def summary(self) -> dict[str, Any]:
        return {
            "messages": sum(self.messages.values()),
            "normalized_messages": sum(self.normalized_messages.values()),
            "records": {f"{v}/{t}": n for (v, t), n in sorted(self.records.items())},
            "dead_letters": {f"{v}/{r}": n for (v, r), n in sorted(self.dead.items())},
            "ignored": {f"{v}/{r}": n for (v, r), n in sorted(self.ignored.items())},
        }


#: msgspec's JSON decoder (ADR 005): about 4x json.loads on venue messages, and exact where it accepts
_decode_json = msgspec.json.Decoder().decode


def parse_json(raw_bytes: bytes) -> Any:
    """``json.loads(raw_bytes.decode("utf-8"))``, by msgspec on every input it accepts.

    Where msgspec accepts a document it gives json.loads' value (same ints of any
    size, same correctly rounded floats, last duplicate key wins, strict UTF-8:
    tests/unit/test_ingest_fast_path.py checks it on random documents). What it
    refuses and the stdlib accepts (NaN/Infinity literals, 1e400 read as inf,
    lone UTF-16 surrogate escapes) and every real error go to json.loads itself,
    so results and error messages are those of the stdlib, as before ADR 005.
    Raises ValueError (UnicodeDecodeError, JSONDecodeError) or RecursionError.
    """
    try:
        return _decode_json(raw_bytes)
    except (ValueError, RecursionError):  # msgspec.DecodeError is a ValueError
        return json.loads(raw_bytes.decode("utf-8"))


#: normalizer class -> its optional ``normalize_raw(self, raw_bytes, received_at_us)`` (or None)
_RAW_FAST_PATHS: dict[type, Any] = {}
_NO_FAST_PATH = object()


def route(
    normalizer: VenueNormalizer,
    raw: bytes | str | dict | list,
    received_at_us: int,
    source: str | None = None,
) -> Outcome:
    """Parse and normalize one raw message; never raises."""
    if raw.__class__ is str or not isinstance(raw, (dict, list)):  # text (replay) first, then bytes
        if isinstance(raw, str):
            try:
                raw_bytes = raw.encode()
            except UnicodeEncodeError:
                # a text holding a lone surrogate (json.loads reads "\\ud800" escapes into one) still gets
                # bytes, which strict UTF-8 parsing below refuses: a dead letter, not an escaped error
                raw_bytes = raw.encode("utf-8", "surrogatepass")
        else:
            raw_bytes = bytes(raw)
        stripped = raw_bytes.strip()
        # the length test spares hashing every (long) market message for the set lookup
        if len(stripped) in _HEARTBEAT_LENGTHS and stripped in TEXT_HEARTBEATS:
            return Outcome(ignored="heartbeat")
        fast = _RAW_FAST_PATHS.get(normalizer.__class__, _NO_FAST_PATH)
        if fast is _NO_FAST_PATH:
            fast = _RAW_FAST_PATHS[normalizer.__class__] = getattr(normalizer.__class__, "normalize_raw", None)
        if fast is not None:
            try:
                records = fast(normalizer, raw_bytes, received_at_us)
            except Exception:  # a fast-path bug: the general path below still gives the message its outcome
                records = None
            if records:
                return Outcome(records)
        # parse_json, inlined (a call frame is ~5% of a trade's route). Strict UTF-8: json.loads(bytes)
        # would let CESU-8 surrogates through into strings that the Avro encoder then cannot write.
        try:
            msg = _decode_json(raw_bytes)
        except (ValueError, RecursionError):
            try:
                msg = json.loads(raw_bytes.decode("utf-8"))
            except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the parsers go
                return Outcome(dead=DeadLetter(normalizer.venue, None, "invalid_json", str(exc)[:300], source,
                                               received_at_us, raw_bytes))
    else:  # an already-parsed object or array (a transport that decoded it)
        msg = raw
        raw_bytes = json.dumps(raw, separators=(",", ":")).encode()
    try:
        records = normalizer.normalize(msg, received_at_us)
    except Ignored as ign:
        return Outcome(ignored=ign.reason)
    except Malformed as bad:
        return Outcome(dead=DeadLetter(normalizer.venue, bad.event_type, bad.reason, bad.detail[:500], source, received_at_us, raw_bytes))
    except Exception as exc:  # a normalizer bug must not kill the job: dead-letter it, loudly named
        detail = f"{type(exc).__name__}: {exc}"[:500]
        return Outcome(dead=DeadLetter(normalizer.venue, None, "normalizer_error", detail, source, received_at_us, raw_bytes))
    if not records:
        return Outcome(ignored="no_records")
    bad = out_of_range(records)
    if bad is not None:
        return Outcome(dead=DeadLetter(normalizer.venue, bad[0], "bad_value", bad[1], source, received_at_us, raw_bytes))
    for event_type, rec in records:  # what no market produces (connectors/plausibility.py), for every venue
        why = implausibility(event_type, rec, received_at_us)
        if why is not None:
            return Outcome(dead=DeadLetter(normalizer.venue, event_type, why[0], why[1], source, received_at_us, raw_bytes))
    return Outcome(records=records)


#: amounts every record must hold finite and >= 0, and those that may be negative but finite
NON_NEGATIVE_FIELDS = ("price", "size", "notional_usd", "open_interest", "open_interest_usd", "mark_price",
                       "index_price")
FINITE_FIELDS = ("funding_rate",)
_INF = float("inf")


def out_of_range(records: list[Normalized]) -> tuple[str, str] | None:
    """(event type, what) of the first amount out of range, else None.

    The normalizers parse each venue number as finite, but what they derive from two of them can
    still leave the float range: px 9e306 x sz 20 is inf (found by the property tests), a size
    divided by a tiny price too. One check here covers every venue and derived field."""
    for event_type, rec in records:
        for name in NON_NEGATIVE_FIELDS:
            v = rec.get(name)
            if v is not None and not 0.0 <= v < _INF:  # NaN fails both comparisons
                return event_type, f"{name}={v!r} is out of range (derived from the message's numbers)"
        for name in FINITE_FIELDS:
            v = rec.get(name)
            if v is not None and not -_INF < v < _INF:
                return event_type, f"{name}={v!r} is out of range (derived from the message's numbers)"
    return None


# --- helpers shared by the venue normalizers -------------------------------------------------


def to_float(value: Any, name: str, event_type: str | None, *, positive: bool = False) -> float:
    """Parse a venue number (venues send decimals as strings) or raise Malformed."""
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a JSON integer beyond float range
        raise Malformed("bad_value", f"{name}={value!r} is not a number", event_type) from None
    if not math.isfinite(x) or (positive and x <= 0):
        raise Malformed("bad_value", f"{name}={value!r} must be a finite{' positive' if positive else ''} number", event_type)
    return x


def to_epoch_us(value: Any, name: str, event_type: str | None, *, unit: str = "ms") -> int:
    """Venue timestamp (ms, us, ns or s, as int or numeric string) -> epoch microseconds."""
    try:
        x = int(value) if not isinstance(value, float) else value
    except (TypeError, ValueError):
        raise Malformed("bad_value", f"{name}={value!r} is not a timestamp", event_type) from None
    scale = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}[unit]
    try:
        us = int(x * scale)
    except (OverflowError, ValueError):  # inf / NaN (JSON allows them) or beyond float range
        raise Malformed("bad_value", f"{name}={value!r} is not a timestamp", event_type) from None
    # 2009-01-01 .. 2100-01-01: anything else is a unit mix-up or garbage
    if not 1_230_768_000_000_000 <= us <= 4_102_444_800_000_000:
        raise Malformed("bad_value", f"{name}={value!r} is not a plausible {unit} timestamp", event_type)
    return us


def require(msg: dict, key: str, event_type: str | None) -> Any:
    try:
        return msg[key]
    except (KeyError, TypeError):
        raise Malformed("missing_field", f"field {key!r} missing", event_type) from None
