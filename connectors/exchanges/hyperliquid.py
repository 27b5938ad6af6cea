"""Hyperliquid (venue ``hyperliquid``): websocket ``wss://api.hyperliquid.xyz/ws``.

Every message is ``{"channel": <name>, "data": <payload>}`` (docs:
hyperliquid.gitbook.io, "Websocket" -> "Subscriptions", data type definitions).
Mapping:

* ``trades`` -> one Trade per ``WsTrade`` in ``data`` (a list). ``side`` is the
  aggressor's side: ``"B"`` (bid) = the taker bought, ``"A"`` (ask) = the taker
  sold. ``px`` / ``sz`` are decimal strings, ``sz`` in coins; ``time`` (ms) is the
  event time; ``tid`` is the trade id (``users`` = [buyer, seller] is not kept).
  Perpetuals are quoted and margined in USDC, counted as USD 1:1, so
  ``notional_usd = px * sz``.
* ``activeAssetCtx`` -> OpenInterest + Funding from ``data.ctx``:
  ``openInterest`` (coins) and ``markPx`` give ``open_interest_usd =
  openInterest * markPx`` (same message); ``funding`` is the current **hourly**
  rate (Hyperliquid settles funding every hour on the hour, so
  ``next_funding_time`` is the next full hour after receipt); ``oraclePx`` is the
  index. The message carries **no timestamp**: ``event_time`` is the receive
  time (``ingest_time``), documented in connectors/README.md.
* Liquidations: the public API has no market-wide liquidation feed and
  ``WsTrade`` carries no liquidation flag. The documented public signal is the
  ``liquidation`` object (``{liquidatedUser?, markPx, method: market|backstop}``)
  on ``WsFill``, delivered by ``userFills`` (``data.fills``, ``data.user``) and
  ``userEvents`` (channel ``user``, ``data.fills``) for any address, without
  authentication. Subscribing to the liquidator vault's fills captures every
  backstop liquidation; market liquidations are seen only for addresses one
  subscribes to. A fill that carries ``liquidation`` -> Liquidation; fills
  without it are ignored (the same fills arrive on ``trades``).
  Side: when the fill belongs to the liquidated account (``liquidatedUser``
  absent or equal to ``data.user``) a sell (``A``) closed a **long** and a buy
  (``B``) a short; when it belongs to the counterparty (the vault taking over a
  position) the liquidated account did the opposite: vault buys = a **long**
  was closed. ``order_id`` = ``tid`` (the same on both sides of a fill, so a
  liquidation seen from two subscribed accounts has one key).
* ``l2Book`` -> BookDepth (each push a snapshot; connectors/book.py,
  :class:`~connectors.book.HyperliquidBooks`; ADR 025).
* Spot coins (``"PURR/USDC"``, ``"@107"``) are kind ``spot``; ``@N`` needs the
  bundled spotMeta, ``X/Y`` is parsed. ``kPEPE``-style coins (price per 1000
  tokens) get base ``1000PEPE``, as Binance names the same contract.
* Ignored (counted): ``subscriptionResponse``, ``pong``, ``activeSpotAssetCtx``
  (no OI / funding), bbo / mids / candle / account channels, and ``userEvents``
  payloads that are not fills. ``error`` replies are dead-lettered.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from connectors.book import HyperliquidBooks
from connectors.exchanges.fast_trades import LAX_FLOATS, trade_record
from connectors.instruments import USD_QUOTES, Instrument, InstrumentBook, normalize_asset
from connectors.normalize import Ignored, Malformed, Normalized, require, to_epoch_us, to_float

VENUE = "hyperliquid"

#: Hyperliquid stablecoins that are USD 1:1 for notional purposes (besides USD_QUOTES).
_HL_USD_QUOTES = USD_QUOTES | {"USDT0", "USDH"}
_PERP_COIN = re.compile(r"^(?:(?P<dex>[a-z0-9]{1,12}):)?(?P<k>k(?=[A-Z]))?(?P<coin>[A-Za-z0-9]{1,20})$")
_SPOT_PAIR = re.compile(r"^(?P<base>[A-Za-z0-9]{1,20})/(?P<quote>[A-Za-z0-9]{1,20})$")
_IGNORED_CHANNELS = frozenset({
    "subscriptionResponse", "pong", "activeSpotAssetCtx", "bbo", "allMids", "candle",
    "notification", "webData2", "webData3", "orderUpdates", "userFundings",
    "userNonFundingLedgerUpdates", "activeAssetData", "userTwapSliceFills", "userTwapHistory",
    "post", "clearinghouseState", "openOrders", "assetCtxs", "twapStates",
})
_HOUR_US = 3_600_000_000


def parse_hyperliquid_coin(coin: str) -> Instrument | None:
    """A coin name the bundled metadata does not know: perpetual grammar, or ``BASE/QUOTE`` spot."""
    m = _SPOT_PAIR.match(coin)
    if m:
        return Instrument(VENUE, coin, normalize_asset(m["base"]), m["quote"].upper(), "spot")
    m = _PERP_COIN.match(coin)
    if m is None or coin.startswith("@"):
        return None
    base = normalize_asset(m["coin"])
    if m["k"]:
        base = "1000" + base  # kPEPE: one unit = 1000 PEPE
    # Perps (also builder-deployed "dex:COIN" ones, assumed USDC-margined) are quoted in USDC.
    return Instrument(VENUE, coin, base, "USDC", "perpetual")


def instruments_from_meta(meta: Any, spot_meta: Any = None) -> list[Instrument]:
    """``info`` ``meta`` (perps universe) and ``spotMeta`` responses -> instruments."""
    out: list[Instrument] = []
    for asset in (meta or {}).get("universe", []):
        inst = parse_hyperliquid_coin(asset["name"])
        if inst is not None and inst.kind == "perpetual":
            out.append(inst)
    if spot_meta:
        tokens = {t["index"]: t["name"] for t in spot_meta.get("tokens", [])}
        for pair in spot_meta.get("universe", []):
            b, q = pair["tokens"][:2]
            if b in tokens and q in tokens:
                out.append(Instrument(VENUE, pair["name"], normalize_asset(tokens[b]),
                                      tokens[q].upper(), "spot"))
    return out


class _Trade(msgspec.Struct, gc=False):
    """A ``WsTrade``, the fields :meth:`HyperliquidNormalizer._trades` reads (``users``, ``hash`` skipped)."""

    coin: str
    side: Literal["B", "A"]
    px: float  # decimal strings, read in C: see fast_trades.LAX_FLOATS
    sz: float
    time: Any  # an int is checked in trade_record (lax decoding would read "12" as 12)
    tid: Any = None  # the general path's t.get("tid")


class _TradeFrame(msgspec.Struct, gc=False):
    channel: Literal["trades"]
    data: list[_Trade]


_decode_trade_frame = msgspec.json.Decoder(_TradeFrame, **LAX_FLOATS).decode
_TAKER = {"B": "buy", "A": "sell"}


def next_funding_time_ms(at_us: int) -> int:
    """Hyperliquid pays funding every hour on the hour: the first full hour after ``at_us``."""
    return (at_us // _HOUR_US + 1) * _HOUR_US // 1000


class HyperliquidNormalizer:
    venue = VENUE

    def __init__(self, instruments: InstrumentBook | None = None) -> None:
        self.instruments = instruments or InstrumentBook.load(self.venue, parse_hyperliquid_coin)
        #: local order books -> book_depth records (connectors/book.py, ADR 025)
        self.books = HyperliquidBooks(lambda coin: self._instrument(coin, "book_depth"))

    def normalize_raw(self, raw: bytes, received_at_us: int) -> list[Normalized] | None:
        """A ``trades`` frame straight from the bytes (see connectors/exchanges/fast_trades.py), else None."""
        try:
            frame = _decode_trade_frame(raw)
        except (ValueError, RecursionError):  # not a trade frame of the usual shape: the general path decides
            return None
        if not frame.data:
            return None
        book = self.instruments
        out = []
        for t in frame.data:
            terms = book.trade_terms.get(t.coin) or book.fill_trade_terms(t.coin)
            # the general path: a USD(-like) quote, and notional = px * sz (linear coins, contract value 1)
            if terms is None or terms[3] not in _HL_USD_QUOTES or terms[6] != 1.0 or terms[7]:
                return None
            record = trade_record(terms, t.px, t.sz, t.time, t.tid, _TAKER[t.side], received_at_us)
            if record is None:
                return None
            out.append(record)
        return out

    def normalize(self, msg: Any, received_at_us: int) -> list[Normalized]:
        if not isinstance(msg, dict):
            raise Malformed("unknown_message", f"expected a JSON object, got {type(msg).__name__}")
        channel = msg.get("channel")
        data = msg.get("data")
        if channel == "trades":
            return self._trades(data, received_at_us)
        if channel == "activeAssetCtx":
            return self._asset_ctx(data, received_at_us)
        if channel == "l2Book":
            return self.books.l2book(data, received_at_us)
        if channel == "userFills" or channel == "user":
            return self._fills(data, received_at_us, channel)
        if isinstance(channel, str) and channel in _IGNORED_CHANNELS:
            raise Ignored(channel)
        if channel == "error":
            raise Malformed("venue_error", f"Hyperliquid error: {str(data)[:300]}")
        raise Malformed("unknown_message", f"unknown Hyperliquid channel {str(channel)[:60]!r}")

    # -- helpers ------------------------------------------------------------------------------
    def _instrument(self, coin: Any, event_type: str) -> Instrument:
        if not isinstance(coin, str):
            raise Malformed("missing_field", "coin missing or not a string", event_type)
        inst = self.instruments.get(coin)
        if inst is None:
            raise Malformed("unknown_symbol", f"cannot normalize coin {coin[:60]!r}", event_type)
        if inst.quote not in _HL_USD_QUOTES:
            raise Malformed("non_usd_quote", f"{coin} is quoted in {inst.quote}: no USD notional", event_type)
        return inst

    # -- per type -----------------------------------------------------------------------------
    def _trades(self, data: Any, received_at_us: int) -> list[Normalized]:
        et = "trade"
        if not isinstance(data, list):
            raise Malformed("bad_value", "trades data is not a list", et)
        if not data:
            raise Ignored("empty_trades")
        out: list[Normalized] = []
        for t in data:
            if not isinstance(t, dict):
                raise Malformed("bad_value", "trade is not an object", et)
            inst = self._instrument(require(t, "coin", et), et)
            side = require(t, "side", et)
            if side == "B":
                taker = "buy"
            elif side == "A":
                taker = "sell"
            else:
                raise Malformed("bad_value", f"side={side!r} is neither B nor A", et)
            price = to_float(require(t, "px", et), "px", et, positive=True)
            size = to_float(require(t, "sz", et), "sz", et, positive=True)
            tid = t.get("tid")
            out.append((et, {
                **inst.common_fields(),
                "event_time": to_epoch_us(require(t, "time", et), "time", et),
                "ingest_time": received_at_us,
                "trade_id": None if tid is None else str(tid),
                "price": price,
                "size": size,
                "notional_usd": price * size,
                "taker_side": taker,
            }))
        return out

    def _asset_ctx(self, data: Any, received_at_us: int) -> list[Normalized]:
        et = "open_interest"
        if not isinstance(data, dict):
            raise Malformed("bad_value", "activeAssetCtx data is not an object", et)
        inst = self._instrument(require(data, "coin", et), et)
        ctx = require(data, "ctx", et)
        if not isinstance(ctx, dict):
            raise Malformed("bad_value", "ctx is not an object", et)
        mark = to_float(require(ctx, "markPx", et), "markPx", et, positive=True)
        oi = to_float(require(ctx, "openInterest", et), "openInterest", et)
        if oi < 0:
            raise Malformed("bad_value", f"openInterest={oi} is negative", et)
        oracle = ctx.get("oraclePx")
        funding = ctx.get("funding")
        common = inst.common_fields()
        # activeAssetCtx has no timestamp of its own: the receive time is the event time.
        return [
            (et, {
                **common,
                "event_time": received_at_us,
                "ingest_time": received_at_us,
                "open_interest": oi,
                "open_interest_usd": oi * mark,
            }),
            ("funding", {
                **common,
                "event_time": received_at_us,
                "ingest_time": received_at_us,
                "mark_price": mark,
                "index_price": None if oracle is None else to_float(oracle, "oraclePx", "funding", positive=True),
                "funding_rate": None if funding is None else to_float(funding, "funding", "funding"),
                "next_funding_time": next_funding_time_ms(received_at_us),
            }),
        ]

    def _fills(self, data: Any, received_at_us: int, channel: str) -> list[Normalized]:
        et = "liquidation"
        if not isinstance(data, dict):
            raise Malformed("bad_value", f"{channel} data is not an object", et)
        if "fills" not in data:
            if channel == "user":  # userEvents: funding / liquidation summary / nonUserCancel
                raise Ignored("user_event_not_fills")
            raise Malformed("missing_field", "userFills without fills", et)
        fills = data["fills"]
        if not isinstance(fills, list):
            raise Malformed("bad_value", "fills is not a list", et)
        owner = data.get("user")
        owner = owner.lower() if isinstance(owner, str) else None
        out: list[Normalized] = []
        for f in fills:
            if not isinstance(f, dict):
                raise Malformed("bad_value", "fill is not an object", et)
            liq = f.get("liquidation")
            if liq is None:
                continue
            if not isinstance(liq, dict):
                raise Malformed("bad_value", "fill.liquidation is not an object", et)
            inst = self._instrument(require(f, "coin", et), et)
            side = require(f, "side", et)
            if side not in ("A", "B"):
                raise Malformed("bad_value", f"side={side!r} is neither B nor A", et)
            liquidated = liq.get("liquidatedUser")
            own_fill = (liquidated is None or owner is None
                        or (isinstance(liquidated, str) and liquidated.lower() == owner))
            sold = side == "A"
            # The liquidated account's own sell closes a long; a counterparty's buy does too.
            position = "long" if sold == own_fill else "short"
            price = to_float(require(f, "px", et), "px", et, positive=True)
            size = to_float(require(f, "sz", et), "sz", et, positive=True)
            tid = f.get("tid")
            out.append((et, {
                **inst.common_fields(),
                "event_time": to_epoch_us(require(f, "time", et), "time", et),
                "ingest_time": received_at_us,
                "side": position,
                "price": price,
                "size": size,
                "notional_usd": price * size,
                "order_id": None if tid is None else str(tid),
            }))
        if not out:
            raise Ignored("fills_without_liquidation")
        return out
