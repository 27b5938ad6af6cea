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


def _binance_delivery() -> VenueNormalizer:
    from connectors.exchanges.binance_delivery import BinanceDeliveryNormalizer

    return BinanceDeliveryNormalizer()


def _bybit() -> VenueNormalizer:
    from connectors.exchanges.bybit import BybitNormalizer

    return BybitNormalizer()


def _okx() -> VenueNormalizer:
    from connectors.exchanges.okx import OkxNormalizer

    return OkxNormalizer()


def _hyperliquid() -> VenueNormalizer:
    from connectors.exchanges.hyperliquid import HyperliquidNormalizer

    return HyperliquidNormalizer()


def _deribit() -> VenueNormalizer:
    from connectors.exchanges.deribit import DeribitNormalizer

    return DeribitNormalizer()


NORMALIZERS: dict[str, Callable[[], VenueNormalizer]] = {
    "binance-futures": _binance_futures,
    "binance-delivery": _binance_delivery,
    "bybit": _bybit,
    "okx": _okx,
    "hyperliquid": _hyperliquid,
    "deribit": _deribit,
}


def normalizer_for(venue: str) -> VenueNormalizer:
    try:
        factory = NORMALIZERS[venue]
    except KeyError:
        raise KeyError(f"unknown venue {venue!r}; known: {', '.join(sorted(NORMALIZERS))}") from None
    return factory()
