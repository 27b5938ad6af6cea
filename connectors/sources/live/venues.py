"""What each venue's public websocket needs: URL, subscription messages, heartbeats.

A :class:`VenueSpec` turns a list of *venue* symbols (``BTCUSDT``, ``BTC-USDT-SWAP``,
``BTC``, ``BTC-PERPETUAL`` ...) and a set of logical channels into one or more
:class:`ConnectionPlan` (a URL plus the text frames to send after every connect).
The client (:mod:`connectors.sources.live.client`) is venue-agnostic; everything a
venue does differently lives here. Formats follow the venues' current public docs
(checked 2025): see ``docs/live-feeds.md`` for the table and the sources.

Logical channels:

* ``trades``        - every public trade (Deribit flags liquidations inside trades)
* ``liquidations``  - forced orders (Binance ``forceOrder``, Bybit ``allLiquidation``,
  OKX ``liquidation-orders``); venues without a separate feed map it onto trades
* ``open_interest`` - OI on the socket where the venue pushes it (Bybit/Deribit/Hyperliquid
  tickers, OKX ``open-interest``); Binance has none: see :mod:`.poller`
* ``funding``       - mark price / funding rate (Binance ``markPrice@1s``, OKX
  ``funding-rate`` + ``mark-price``, tickers elsewhere)
* ``book``          - the order book, for book_depth (connectors/book.py, ADR 025): Binance
  diff depth ``@depth@100ms`` (synced from REST snapshots: :mod:`.poller`), Bybit
  ``orderbook.200``, OKX ``books`` (400 levels, checksummed), Hyperliquid ``l2Book``,
  Deribit ``book.<instrument>.100ms``
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

ALL_CHANNELS: tuple[str, ...] = ("trades", "liquidations", "open_interest", "funding", "book")
#: Bybit v5 book depth subscribed (linear/inverse offer 1, 50, 200, 1000; 200 levels push every 100 ms)
BYBIT_BOOK_DEPTH = 200


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """An application-level keep-alive the venue requires on top of websocket ping frames.

    ``mode`` is ``"idle"`` (send only when nothing was received for ``interval_s``,
    the OKX rule) or ``"periodic"`` (send every ``interval_s`` whatever the traffic,
    the Bybit / Hyperliquid rule).
    """

    message: str
    interval_s: float
    mode: str = "periodic"  # periodic | idle


@dataclass(frozen=True, slots=True)
class ConnectionPlan:
    """One websocket connection: where to connect and what to send after each (re)connect."""

    venue: str
    label: str  # e.g. "linear#0": names the connection in stats and logs
    url: str
    subscribe: tuple[str, ...] = ()
    heartbeat: Heartbeat | None = None
    symbols: tuple[str, ...] = ()


def _chunks(items: Sequence[str], size: int) -> Iterable[list[str]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _dumps(doc: object) -> str:
    return json.dumps(doc, separators=(",", ":"))


def _check_channels(channels: Iterable[str]) -> tuple[str, ...]:
    chans = tuple(dict.fromkeys(channels))
    unknown = [c for c in chans if c not in ALL_CHANNELS]
    if unknown:
        raise ValueError(f"unknown channel(s) {unknown}; known: {list(ALL_CHANNELS)}")
    return chans


@dataclass(frozen=True)
class VenueSpec:
    """Base class: a venue's websocket conventions. Subclasses implement :meth:`plans`."""

    venue: str
    default_url: str
    #: Substrings that mark a short frame as a heartbeat answer (counted, still delivered).
    heartbeat_markers: tuple[str, ...] = ()

    def plans(
        self, symbols: Sequence[str], channels: Iterable[str] = ALL_CHANNELS, url: str | None = None
    ) -> list[ConnectionPlan]:
        raise NotImplementedError

    def replies(self, text: str) -> list[str]:
        """Frames to send back in answer to a received frame (Deribit ``test_request``)."""
        return []

    def is_heartbeat_reply(self, text: str) -> bool:
        # Heartbeat answers are short; never scan a large market-data frame.
        return len(text) < 256 and any(m in text for m in self.heartbeat_markers)


# --------------------------------------------------------------------------- Binance

#: Binance accepts up to 1024 streams per connection (USDⓈ-M and COIN-M); the stream
#: list travels in the URL, so stay well under both that and common URL length limits.
BINANCE_STREAMS_PER_CONNECTION = 200


@dataclass(frozen=True)
class BinanceSpec(VenueSpec):
    """Binance combined streams: subscriptions are in the URL, nothing is sent.

    The server sends a ping frame every 3 minutes and drops a connection that does
    not pong within 10 minutes; the websockets library answers pings itself, so no
    application heartbeat is needed. Connections are cut at 24 h: the client's
    reconnect handles it. Symbols are lowercased in stream names (Binance rule).
    """

    def streams(self, symbols: Sequence[str], channels: Iterable[str]) -> list[str]:
        chans = _check_channels(channels)
        out: list[str] = []
        for sym in symbols:
            s = sym.lower()
            if "trades" in chans:
                out.append(f"{s}@aggTrade")
            if "liquidations" in chans:
                out.append(f"{s}@forceOrder")
            if "funding" in chans:
                # mark price, index price, funding rate and next funding time, every second
                out.append(f"{s}@markPrice@1s")
            if "book" in chans:
                out.append(f"{s}@depth@100ms")  # diff depth; its snapshots come from the REST poll
            # open_interest: not on the socket; polled over REST (connectors.sources.live.poller)
        return out

    def plans(
        self, symbols: Sequence[str], channels: Iterable[str] = ALL_CHANNELS, url: str | None = None
    ) -> list[ConnectionPlan]:
        base = (url or self.default_url).rstrip("/")
        streams = self.streams(symbols, channels)
        plans = []
        for i, chunk in enumerate(_chunks(streams, BINANCE_STREAMS_PER_CONNECTION)):
            syms = tuple(dict.fromkeys(s.split("@", 1)[0].upper() for s in chunk))
            plans.append(
                ConnectionPlan(self.venue, f"streams#{i}", f"{base}/stream?streams={'/'.join(chunk)}", (), None, syms)
            )
        return plans


# --------------------------------------------------------------------------- Bybit

#: Inverse contracts are margined in the coin and quoted in USD: BTCUSD (perpetual) and
#: BTCUSDH25-style dated futures (month code + 2-digit year). Everything else (BTCUSDT,
#: BTCPERP, BTC-27JUN25, BTCUSDT-27JUN25) trades on the linear endpoint.
_BYBIT_INVERSE = re.compile(r"^[A-Z0-9]+USD(?:[FGHJKMNQUVXZ]\d{2})?$")
#: Bybit caps the args of one subscribe request (10 for spot; linear/inverse limit the
#: request length instead); 10 per request is safe everywhere.
BYBIT_ARGS_PER_REQUEST = 10


def bybit_category(symbol: str) -> str:
    """``linear`` or ``inverse``: which v5 public endpoint carries ``symbol``."""
    return "inverse" if _BYBIT_INVERSE.match(symbol.upper()) else "linear"


@dataclass(frozen=True)
class BybitSpec(VenueSpec):
    """Bybit v5 public: one socket per category (linear, inverse), ``op: subscribe`` topics.

    Topics: ``publicTrade.<S>``, ``allLiquidation.<S>`` and ``tickers.<S>`` (the ticker
    carries openInterest, openInterestValue, fundingRate, nextFundingTime, markPrice).
    Bybit asks for ``{"op":"ping"}`` every 20 s or the server may drop the link.
    ``url`` (override) replaces the whole endpoint for every category.
    """

    ping_interval_s: float = 20.0

    def plans(
        self, symbols: Sequence[str], channels: Iterable[str] = ALL_CHANNELS, url: str | None = None
    ) -> list[ConnectionPlan]:
        chans = _check_channels(channels)
        by_category: dict[str, list[str]] = {}
        for sym in symbols:
            by_category.setdefault(bybit_category(sym), []).append(sym.upper())
        hb = Heartbeat(_dumps({"op": "ping"}), self.ping_interval_s, "periodic")
        plans = []
        for category, syms in by_category.items():
            topics: list[str] = []
            for s in syms:
                if "trades" in chans:
                    topics.append(f"publicTrade.{s}")
                if "liquidations" in chans:
                    topics.append(f"allLiquidation.{s}")
                if ("open_interest" in chans or "funding" in chans) and f"tickers.{s}" not in topics:
                    topics.append(f"tickers.{s}")
                if "book" in chans:
                    topics.append(f"orderbook.{BYBIT_BOOK_DEPTH}.{s}")
            subs = tuple(_dumps({"op": "subscribe", "args": c}) for c in _chunks(topics, BYBIT_ARGS_PER_REQUEST))
            endpoint = url or f"{self.default_url.rstrip('/')}/{category}"
            plans.append(ConnectionPlan(self.venue, category, endpoint, subs, hb, tuple(syms)))
        return plans


# --------------------------------------------------------------------------- OKX

#: OKX limits one subscribe request to 64 KB of args; 50 args keeps far below it.
OKX_ARGS_PER_REQUEST = 50


def okx_inst_type(inst_id: str) -> str:
    """OKX instrument type from the instId grammar: BTC-USDT-SWAP, BTC-USD-250627, BTC-USDT."""
    parts = inst_id.upper().split("-")
    if parts[-1] == "SWAP":
        return "SWAP"
    if len(parts) == 3 and parts[-1].isdigit():
        return "FUTURES"
    if len(parts) >= 4:
        return "OPTION"
    return "SPOT"


@dataclass(frozen=True)
class OkxSpec(VenueSpec):
    """OKX v5 public: ``{"op":"subscribe","args":[{"channel":..,"instId":..}]}``.

    ``liquidation-orders`` is subscribed per instrument *type* (it pushes every
    liquidation of SWAP or FUTURES instruments); the normalizer filters symbols.
    ``funding-rate`` exists for perpetual swaps only. OKX drops a connection with no
    traffic for 30 s: send the *text* ``ping`` when idle for less than that and expect
    the text ``pong`` (not JSON: it is delivered like every frame, and counted).
    """

    idle_ping_s: float = 20.0

    def is_heartbeat_reply(self, text: str) -> bool:
        return text == "pong"

    def plans(
        self, symbols: Sequence[str], channels: Iterable[str] = ALL_CHANNELS, url: str | None = None
    ) -> list[ConnectionPlan]:
        chans = _check_channels(channels)
        args: list[dict[str, str]] = []
        inst_types: list[str] = []
        for inst in symbols:
            inst = inst.upper()
            kind = okx_inst_type(inst)
            if "trades" in chans:
                args.append({"channel": "trades", "instId": inst})
            if "open_interest" in chans and kind in ("SWAP", "FUTURES"):
                args.append({"channel": "open-interest", "instId": inst})
            if "funding" in chans:
                if kind == "SWAP":
                    args.append({"channel": "funding-rate", "instId": inst})
                if kind in ("SWAP", "FUTURES"):
                    args.append({"channel": "mark-price", "instId": inst})
            if "book" in chans:
                args.append({"channel": "books", "instId": inst})
            if "liquidations" in chans and kind in ("SWAP", "FUTURES") and kind not in inst_types:
                inst_types.append(kind)
        args.extend({"channel": "liquidation-orders", "instType": t} for t in inst_types)
        subs = tuple(_dumps({"op": "subscribe", "args": c}) for c in _chunks(args, OKX_ARGS_PER_REQUEST))  # type: ignore[arg-type]
        hb = Heartbeat("ping", self.idle_ping_s, "idle")
        return [ConnectionPlan(self.venue, "public", url or self.default_url, subs, hb, tuple(s.upper() for s in symbols))]


# --------------------------------------------------------------------------- Hyperliquid


@dataclass(frozen=True)
class HyperliquidSpec(VenueSpec):
    """Hyperliquid: ``{"method":"subscribe","subscription":{"type":..,"coin":..}}`` per coin.

    ``trades`` carries every fill (Hyperliquid has no public liquidation channel: the
    liquidations channel maps onto trades, the normalizer decides what is a liquidation);
    ``activeAssetCtx`` carries openInterest, funding and markPx. The server closes a
    connection that has sent it nothing for 60 s: ``{"method":"ping"}`` every 50 s,
    answered by ``{"channel":"pong"}``. Coins are case-sensitive (``BTC``, ``kPEPE``).
    """

    ping_interval_s: float = 50.0

    def plans(
        self, symbols: Sequence[str], channels: Iterable[str] = ALL_CHANNELS, url: str | None = None
    ) -> list[ConnectionPlan]:
        chans = _check_channels(channels)
        subs: list[str] = []
        for coin in symbols:
            if "trades" in chans or "liquidations" in chans:
                subs.append(_dumps({"method": "subscribe", "subscription": {"type": "trades", "coin": coin}}))
            if "open_interest" in chans or "funding" in chans:
                subs.append(_dumps({"method": "subscribe", "subscription": {"type": "activeAssetCtx", "coin": coin}}))
            if "book" in chans:
                subs.append(_dumps({"method": "subscribe", "subscription": {"type": "l2Book", "coin": coin}}))
        hb = Heartbeat(_dumps({"method": "ping"}), self.ping_interval_s, "periodic")
        return [ConnectionPlan(self.venue, "public", url or self.default_url, tuple(subs), hb, tuple(symbols))]


# --------------------------------------------------------------------------- Deribit


@dataclass(frozen=True)
class DeribitSpec(VenueSpec):
    """Deribit v2 JSON-RPC: ``public/subscribe`` + ``public/set_heartbeat``.

    Channels ``trades.<instrument>.100ms`` (each trade has a ``liquidation`` flag) and
    ``ticker.<instrument>.100ms`` (open_interest, current_funding, funding_8h,
    mark_price). ``.raw`` needs an authorised connection, so public capture uses the
    100 ms aggregation. With a heartbeat set (interval >= 10 s) the server sends
    ``{"method":"heartbeat","params":{"type":"test_request"}}`` and closes the
    connection unless the client answers with ``public/test``.
    """

    heartbeat_interval_s: int = 30
    interval: str = "100ms"

    def plans(
        self, symbols: Sequence[str], channels: Iterable[str] = ALL_CHANNELS, url: str | None = None
    ) -> list[ConnectionPlan]:
        chans = _check_channels(channels)
        subs: list[str] = []
        for inst in symbols:
            if "trades" in chans or "liquidations" in chans:
                subs.append(f"trades.{inst}.{self.interval}")
            if "open_interest" in chans or "funding" in chans:
                subs.append(f"ticker.{inst}.{self.interval}")
            if "book" in chans:
                subs.append(f"book.{inst}.{self.interval}")
        frames = (
            _dumps({"jsonrpc": "2.0", "id": 1, "method": "public/set_heartbeat",
                    "params": {"interval": max(10, int(self.heartbeat_interval_s))}}),
            _dumps({"jsonrpc": "2.0", "id": 2, "method": "public/subscribe", "params": {"channels": subs}}),
        )
        return [ConnectionPlan(self.venue, "public", url or self.default_url, frames, None, tuple(symbols))]

    def replies(self, text: str) -> list[str]:
        # Cheap substring test first: only heartbeat frames pay for a json.loads.
        if "test_request" not in text:
            return []
        try:
            doc = json.loads(text)
        except ValueError:
            return []
        if (
            isinstance(doc, dict)
            and doc.get("method") == "heartbeat"
            and isinstance(doc.get("params"), dict)
            and doc["params"].get("type") == "test_request"
        ):
            return [_dumps({"jsonrpc": "2.0", "id": 3, "method": "public/test", "params": {}})]
        return []


SPECS: dict[str, VenueSpec] = {
    "binance-futures": BinanceSpec("binance-futures", "wss://fstream.binance.com/market"),
    "binance-delivery": BinanceSpec("binance-delivery", "wss://dstream.binance.com"),
    "bybit": BybitSpec("bybit", "wss://stream.bybit.com/v5/public", ('"ret_msg":"pong"', '"op":"pong"')),
    "okx": OkxSpec("okx", "wss://ws.okx.com:8443/ws/v5/public"),
    "hyperliquid": HyperliquidSpec("hyperliquid", "wss://api.hyperliquid.xyz/ws", ('"channel":"pong"',)),
    # public/test answers carry {"version": ...}; heartbeat notifications carry method=heartbeat
    "deribit": DeribitSpec("deribit", "wss://www.deribit.com/ws/api/v2", ('"method":"heartbeat"', '"version"')),
}


def spec_for(venue: str) -> VenueSpec:
    try:
        return SPECS[venue]
    except KeyError:
        raise ValueError(f"no live feed for venue {venue!r}; known: {sorted(SPECS)}") from None
