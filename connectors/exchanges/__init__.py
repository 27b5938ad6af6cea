"""One module per venue, each mapping that venue's raw messages to normalized records.

``NORMALIZERS`` maps the venue ids used everywhere (captures, Kafka keys,
marts) to a factory of that venue's normalizer.
"""

from __future__ import annotations

from collections.abc import Callable

from connectors.normalize import VenueNormalizer


def _binance_futures() -> VenueNormalizer:
    from connectors.exchanges.binance import BinanceFuturesNormalizer

    return BinanceFuturesNormalizer()


NORMALIZERS: dict[str, Callable[[], VenueNormalizer]] = {
    "binance-futures": _binance_futures,
}


def normalizer_for(venue: str) -> VenueNormalizer:
    try:
        factory = NORMALIZERS[venue]
    except KeyError:
        raise KeyError(f"unknown venue {venue!r}; known: {', '.join(sorted(NORMALIZERS))}") from None
    return factory()
