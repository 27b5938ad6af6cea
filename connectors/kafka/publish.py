"""Replay: raw venue messages -> normalizers -> Kafka, with every message accounted for."""

from __future__ import annotations

from collections.abc import Iterable

from connectors.config import KafkaSettings
from connectors.exchanges import NORMALIZERS, normalizer_for
from connectors.kafka.producer import EventProducer
from connectors.kafka.topics import ensure_topics
from connectors.normalize import DeadLetter, Outcome, RouteCounters, VenueNormalizer, route
from connectors.sources.capture import CaptureLineError, RawMessage

#: capture-file lines that are not market data (connection opened, subscriptions sent)
NON_MESSAGE_LINES = frozenset({"client_line"})


def account(item: RawMessage | CaptureLineError, normalizers: dict[str, VenueNormalizer]) -> tuple[str, Outcome]:
    """Route one capture item to its outcome; the venue is 'unknown' when it cannot be told."""
    if isinstance(item, CaptureLineError):
        venue = item.venue or "unknown"
        if item.reason in NON_MESSAGE_LINES:
            return venue, Outcome(ignored=item.reason)
        return venue, Outcome(dead=DeadLetter(item.venue, None, item.reason, item.detail, item.source,
                                              item.received_at_us, item.raw.encode()))
    norm = normalizers.get(item.venue)
    if norm is None:
        if item.venue not in NORMALIZERS:
            return item.venue, Outcome(dead=DeadLetter(item.venue, None, "unknown_venue",
                                                       f"no normalizer for venue {item.venue!r}", item.source,
                                                       item.received_at_us, item.raw.encode()))
        norm = normalizers[item.venue] = normalizer_for(item.venue)
    return item.venue, route(norm, item.raw, item.received_at_us, item.source)


def publish_raw_stream(
    messages: Iterable[RawMessage | CaptureLineError],
    settings: KafkaSettings,
    *,
    create_topics: bool = True,
    progress: bool = False,
    total: int | None = None,
) -> RouteCounters:
    """Normalize every message and publish records and dead letters; returns the books."""
    if create_topics:
        ensure_topics(settings)
    counters = RouteCounters()
    normalizers: dict[str, VenueNormalizer] = {}
    it = messages
    if progress:
        from tqdm import tqdm

        it = tqdm(messages, total=total, unit="msg", desc="replay", mininterval=0.5)
    with EventProducer(settings) as producer:
        for item in it:
            venue, outcome = account(item, normalizers)
            encoded = []
            if outcome.records:
                try:
                    encoded = [producer.encode_event(et, rec) for et, rec in outcome.records]
                except Exception as exc:  # e.g. a lone surrogate in a string: the message, not the job, fails
                    outcome = Outcome(dead=DeadLetter(
                        venue, outcome.records[0][0], "unencodable", f"{type(exc).__name__}: {exc}"[:500],
                        getattr(item, "source", None), getattr(item, "received_at_us", 0),
                        getattr(item, "raw", "").encode("utf-8", errors="surrogateescape")))
            counters.add(venue, outcome)
            if outcome.dead is not None:
                producer.send_dead_letter(outcome.dead)
            for msg in encoded:
                producer.send_encoded(*msg)
    return counters
