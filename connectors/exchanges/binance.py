"""Binance USDⓈ-M futures (venue ``binance-futures``).

Websocket payloads arrive bare or inside the combined-stream envelope
``{"stream": "...", "data": {...}}``; REST payloads are polled. Mapping (docs:
developers.binance.com, USDⓈ-M Futures "Websocket Market Streams" and
"Market Data Endpoints"):

* ``aggTrade`` / ``trade`` -> Trade. ``T`` trade time is the event time;
  ``m`` = buyer is the maker, so the taker sold. A ``trade`` carries ``X``, the
  fill type: ``MARKET`` is a book trade; ``INSURANCE_FUND``, ``ADL`` and ``NA``
  are off-book fills (the insurance fund taking a liquidated position, an
  auto-deleveraging, a fill of no order type) that are not taker volume: they
  are ignored, counted as ``off_book_trade_<type>`` (ADR 014); an unknown ``X``
  is dead-lettered ``bad_value``.
* ``forceOrder`` -> Liquidation. ``o.S`` is the side of the *liquidation order*:
  SELL force-sells a long, so ``side = long``; BUY closes a short. Price is the
  average fill price ``ap`` (order price ``p`` if ``ap`` is 0), size is the
  filled quantity ``z`` (order quantity ``q`` if nothing was filled yet);
  event time ``o.T``.
* ``markPriceUpdate`` -> Funding (mark ``p``, index ``i``, rate ``r``, next
  funding ``T``); event time ``E``. A dated future has no funding: its
  ``r`` is ``""`` or ``"0.00000000"`` with ``T`` 0, stored as null, never 0.0.
* ``indexPriceUpdate`` (COIN-M ``<pair>@indexPrice``; ``i`` is the pair):
  remembered per pair and ignored as ``index_price_update``; it fills the
  ``index_price`` of the pair's next Funding records whose message has no ``i``.
* REST ``openInterest`` ``{"openInterest","symbol","time"}`` -> OpenInterest
  (no price in it: ``open_interest_usd`` null). Older responses have no
  ``time``: the receive time stands in, flagged by ``event_time == ingest_time``. REST ``openInterestHist`` (a
  list) -> one OpenInterest per row with ``sumOpenInterestValue`` as USD.
* ``depthUpdate`` (diff depth, or partial depth ``@depth5/10/20`` by its stream name) and REST
  depth snapshots ``{"lastUpdateId", "bids", "asks"}`` -> BookDepth through a local order book
  (connectors/book.py, :class:`~connectors.book.BinanceBooks`; ADR 025).
* Ignored (counted): ``bookTicker``, ``kline``,
  ``24hrTicker``/``24hrMiniTicker``, subscription replies ``{"result","id"}``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec
from msgspec import UNSET

from connectors.book import BinanceBooks
from connectors.exchanges.fast_trades import LAX_FLOATS, trade_record
from connectors.instruments import REFRESH_HINT, USD_QUOTES, Instrument, InstrumentBook, normalize_asset
from connectors.normalize import Ignored, Malformed, Normalized, require, to_epoch_us, to_float

_IGNORED_EVENTS = frozenset(
    {"bookTicker", "kline", "continuous_kline", "24hrTicker", "24hrMiniTicker",
     "compositeIndex", "contractInfo", "assetIndexUpdate"}
)
_QUOTES = ("USDT", "USDC", "BUSD", "FDUSD", "USD")
_DATED = re.compile(r"^(?P<pair>[A-Z0-9]+)_(?P<yymmdd>\d{6})$")
#: ``X`` of a ``trade`` event: the off-book fill types (not taker volume) and the ignore reason of each
OFF_BOOK_TRADES = {"INSURANCE_FUND": "off_book_trade_insurance_fund", "ADL": "off_book_trade_adl",
                   "NA": "off_book_trade_na"}


class _Trade(msgspec.Struct, gc=False):
    """The fields of an aggTrade / trade payload that a Trade uses, as :meth:`BinanceFuturesNormalizer._trade` reads them.

    Unknown fields are skipped; a symbol that is not a string, or a price or
    quantity that is neither a number nor a decimal string msgspec reads, fails
    the decode (the general path then handles the message). ``m``/``T`` are
    checked by :meth:`BinanceFuturesNormalizer._trade_record`; ``a``/``t`` stay
    untyped: the trade id is whatever JSON value the venue sent, as in the general path.
    """

    e: Literal["aggTrade", "trade"]
    s: str
    p: float  # decimal strings (or numbers), read in C: see fast_trades.LAX_FLOATS
    q: float
    m: Any  # checked in _trade_record: lax decoding would turn "true" into True
    T: Any
    a: Any = UNSET
    t: Any = UNSET
    X: Any = UNSET  # fill type of a ``trade`` event: only MARKET (or none) is a book trade


class _TradeFrame(msgspec.Struct, gc=False):
    stream: Any  # the general path only requires the key; its value is never read
    data: _Trade
    # present only in a REST premiumIndex, which COIN-M's normalize() reads before any envelope
    markPrice: Any = UNSET  # noqa: N815 - Binance's field name
    symbol: Any = UNSET
    e: Any = UNSET


_decode_trade_frame = msgspec.json.Decoder(_TradeFrame, **LAX_FLOATS).decode


def _split_pair(pair: str) -> tuple[str, str] | None:
    for q in _QUOTES:
        if pair.endswith(q) and len(pair) > len(q):
            return pair[: -len(q)], q
    return None


def _expiry_ms(yymmdd: str) -> int:
    from datetime import UTC, datetime

    # Binance quarterly futures settle at 08:00 UTC on the delivery date.
    d = datetime.strptime(yymmdd, "%y%m%d").replace(hour=8, tzinfo=UTC)
    return int(d.timestamp() * 1000)


def funding_rate(inst: Instrument, rate: Any, next_funding: Any, name: str) -> float | None:
    """The funding rate of a mark-price message, or None where the contract has no funding.

    Dated futures have none, yet Binance sends them ``r`` as ``""`` or ``"0.00000000"``
    with next funding ``T`` 0: that zero is "no funding", not a rate of 0.0 (which
    would drag funding averages toward zero).
    """
    if inst.kind == "future" or rate in (None, "") or next_funding in (0, "0"):
        return None
    return to_float(rate, name, "funding")


def open_interest_time(m: dict, received_at_us: int) -> int:
    """Event time of a REST openInterest: its ``time``; older responses have none, so the receive time
    stands in and ``event_time == ingest_time`` flags it (as for Hyperliquid's activeAssetCtx)."""
    if "time" not in m:
        return received_at_us
    return to_epoch_us(m["time"], "time", "open_interest")


def parse_usdm_symbol(symbol: str) -> Instrument | None:
    """BTCUSDT -> perpetual, BTCUSDT_240329 -> future; quantities are base units."""
    m = _DATED.match(symbol)
    pair, expiry = (m["pair"], _expiry_ms(m["yymmdd"])) if m else (symbol, None)
    split = _split_pair(pair)
    if split is None:
        return None
    base, quote = split
    return Instrument("binance-futures", symbol, normalize_asset(base), quote,
                      "future" if expiry else "perpetual", expiry, 1.0, False)


class BinanceFuturesNormalizer:
    venue = "binance-futures"
    #: whether normalize() takes {"markPrice","symbol"} without "e" as a premiumIndex before looking
    #: for an envelope (COIN-M does): normalize_raw must then leave such a message alone
    _premium_index_first = False

    def __init__(self, instruments: InstrumentBook | None = None) -> None:
        self.instruments = instruments or InstrumentBook.load(self.venue, parse_usdm_symbol)
        #: last ``indexPriceUpdate`` per pair (COIN-M), for Funding records whose message has no ``i``
        self._index_by_pair: dict[str, float] = {}
        #: local order books -> book_depth records (connectors/book.py, ADR 025)
        self.books = BinanceBooks(lambda symbol: self._instrument(symbol, "book_depth"))

    # -- dispatch -----------------------------------------------------------------------------
    def normalize(self, msg: Any, received_at_us: int) -> list[Normalized]:
        # the hot case first (~all of a trade stream): a combined-stream envelope around an aggTrade
        if msg.__class__ is dict:
            data = msg.get("data")
            if data.__class__ is dict and "stream" in msg and data.get("e") == "aggTrade":
                return [self._trade(data, received_at_us)]
        if isinstance(msg, list):
            return self._open_interest_hist(msg, received_at_us)
        if not isinstance(msg, dict):
            raise Malformed("unknown_message", f"expected a JSON object, got {type(msg).__name__}")
        stream = None
        if "data" in msg and "stream" in msg:
            stream = msg["stream"] if isinstance(msg["stream"], str) else None
            msg = msg["data"]
            if isinstance(msg, list):  # e.g. !markPrice@arr delivers an array of updates
                out: list[Normalized] = []
                for item in msg:
                    out.extend(self.normalize(item, received_at_us))
                return out
            if not isinstance(msg, dict):
                raise Malformed("unknown_message", "combined-stream data is not an object")
        event = msg.get("e")
        if event == "aggTrade" or event == "trade":
            return [self._trade(msg, received_at_us)]
        if event == "forceOrder":
            return [self._liquidation(msg, received_at_us)]
        if event == "markPriceUpdate":
            return [self._funding(msg, received_at_us)]
        if event == "depthUpdate":
            return self.books.depth_update(msg, stream, received_at_us)
        if event is None and "lastUpdateId" in msg and "bids" in msg and "asks" in msg:
            return self.books.rest_snapshot(msg, received_at_us)
        if event == "indexPriceUpdate":
            self._index_price(msg)
        if event is None and "openInterest" in msg and "symbol" in msg:
            return [self._open_interest(msg, received_at_us)]
        if isinstance(event, str) and event in _IGNORED_EVENTS:  # a list/dict "e" is not hashable
            raise Ignored(str(event))
        if event is None and "result" in msg and "id" in msg:
            raise Ignored("subscription_reply")
        raise Malformed("unknown_message", f"unknown Binance message type e={event!r}")

    # -- per type -----------------------------------------------------------------------------
    def _instrument(self, symbol: Any, event_type: str) -> Instrument:
        if not isinstance(symbol, str):
            raise Malformed("missing_field", "symbol missing", event_type)
        inst = self.instruments.get(symbol)
        if inst is None:
            raise Malformed("unknown_symbol", f"cannot normalize symbol {symbol!r}: "
                            + REFRESH_HINT.format(venue=self.venue), event_type)
        return inst

    def normalize_raw(self, raw: bytes, received_at_us: int) -> list[Normalized] | None:
        """The trade stream's hot case straight from the bytes, or None: ``route`` then parses and normalizes.

        A combined-stream envelope around an aggTrade/trade is decoded by msgspec
        into :class:`_TradeFrame` (only the fields a Trade needs, typed, so no
        dicts are built); the record is then the one :meth:`normalize` gives for
        the same message (tests/unit/test_ingest_fast_path.py checks both on
        random and edge trades). Anything else — another message type, a bare
        payload, a field of another type, a value the fast checks refuse — is
        None, and the general path decides (records, dead letter or ignore).
        """
        try:
            frame = _decode_trade_frame(raw)
        except (ValueError, RecursionError):  # msgspec.ValidationError / DecodeError are ValueErrors
            return None
        if self._premium_index_first and frame.markPrice is not UNSET and frame.symbol is not UNSET \
                and frame.e is UNSET:
            return None
        d = frame.data
        if d.X is not UNSET and d.X is not None and d.X != "MARKET":  # off-book or unknown: the checked path says
            return None
        trade_id = d.a if d.a is not UNSET else (None if d.t is UNSET else d.t)
        record = self._trade_record(d.s, d.p, d.q, d.m, d.T, trade_id, received_at_us)
        return None if record is None else [record]

    def _trade(self, m: dict, received_at_us: int) -> Normalized:
        """Fast path for a well-formed trade; anything unusual goes to :meth:`_trade_checked`.

        The checks in :meth:`_trade_record` accept exactly what the checked path
        accepts without raising, and compute the same values (same float
        operations), so the two paths differ only in speed; the checked path
        names what is wrong.
        """
        fill_type = m.get("X")
        if fill_type is not None and fill_type != "MARKET":
            return self._trade_checked(m, received_at_us)
        try:
            symbol = m["s"]
            price = float(m["p"])
            qty = float(m["q"])
            maker = m["m"]
            t = m["T"]
        except (KeyError, TypeError, ValueError, OverflowError):
            return self._trade_checked(m, received_at_us)
        record = self._trade_record(symbol, price, qty, maker, t, m["a"] if "a" in m else m.get("t"), received_at_us)
        return self._trade_checked(m, received_at_us) if record is None else record

    def _trade_record(self, symbol: Any, price: float, qty: float, maker: Any, t: Any, trade_id: Any,
                      received_at_us: int) -> Normalized | None:
        """The Trade of well-formed values, or None when any check of the checked path would fail."""
        if symbol.__class__ is not str:
            return None
        book = self.instruments
        terms = book.trade_terms.get(symbol)
        if terms is None:
            terms = book.fill_trade_terms(symbol)
            if terms is None:
                return None
        if maker.__class__ is not bool:  # the checked path refuses a non-boolean "m"
            return None
        return trade_record(terms, price, qty, t, trade_id, "sell" if maker else "buy", received_at_us)

    def _trade_checked(self, m: dict, received_at_us: int) -> Normalized:
        et = "trade"
        fill_type = m.get("X")
        if fill_type is not None and fill_type != "MARKET":
            reason = OFF_BOOK_TRADES.get(fill_type) if isinstance(fill_type, str) else None
            if reason is None:
                raise Malformed("bad_value", f"trade type X={fill_type!r} is not MARKET/INSURANCE_FUND/ADL/NA", et)
            raise Ignored(reason)
        inst = self._instrument(require(m, "s", et), et)
        price = to_float(require(m, "p", et), "p", et, positive=True)
        qty = to_float(require(m, "q", et), "q", et, positive=True)
        maker = require(m, "m", et)
        if not isinstance(maker, bool):
            raise Malformed("bad_value", f"m={maker!r} is not a boolean", et)
        return inst.trade(price, qty, to_epoch_us(require(m, "T", et), "T", et), received_at_us,
                          m.get("a", m.get("t")), "sell" if maker else "buy")

    def _liquidation(self, m: dict, received_at_us: int) -> Normalized:
        et = "liquidation"
        o = require(m, "o", et)
        if not isinstance(o, dict):
            raise Malformed("bad_value", "forceOrder 'o' is not an object", et)
        inst = self._instrument(require(o, "s", et), et)
        order_side = require(o, "S", et)
        if order_side == "SELL":
            side = "long"
        elif order_side == "BUY":
            side = "short"
        else:
            raise Malformed("bad_value", f"order side S={order_side!r} is neither BUY nor SELL", et)
        avg = to_float(o.get("ap", 0), "ap", et)
        price = avg if avg > 0 else to_float(require(o, "p", et), "p", et, positive=True)
        filled = to_float(o.get("z", 0), "z", et)
        qty = filled if filled > 0 else to_float(require(o, "q", et), "q", et, positive=True)
        size, usd = inst.to_base_and_usd(price, qty)
        ts = o.get("T", m.get("E"))
        return et, {
            **inst.common_fields(),
            "event_time": to_epoch_us(ts, "T", et),
            "ingest_time": received_at_us,
            "side": side,
            "price": price,
            "size": size,
            "notional_usd": usd,
            "order_id": None,  # forceOrder carries no order id
        }

    def _funding(self, m: dict, received_at_us: int) -> Normalized:
        et = "funding"
        inst = self._instrument(require(m, "s", et), et)
        nft = m.get("T")
        if m.get("i") not in (None, ""):
            index: float | None = to_float(m["i"], "i", et)
        else:  # COIN-M marks may come without an index: the pair's last indexPriceUpdate, if any
            index = self._index_by_pair.get(inst.symbol.partition("_")[0])
        return et, {
            **inst.common_fields(),
            "event_time": to_epoch_us(require(m, "E", et), "E", et),
            "ingest_time": received_at_us,
            "mark_price": to_float(require(m, "p", et), "p", et, positive=True),
            "index_price": index,
            "funding_rate": funding_rate(inst, m.get("r"), nft, "r"),
            "next_funding_time": to_epoch_us(nft, "T", et) // 1000 if nft not in (None, "", 0, "0") else None,
        }

    def _index_price(self, m: dict) -> None:
        et = "funding"
        pair = require(m, "i", et)
        if not isinstance(pair, str):
            raise Malformed("bad_value", f"indexPriceUpdate i={pair!r} is not a pair name", et)
        to_epoch_us(require(m, "E", et), "E", et)  # a message with a broken time is not remembered
        self._index_by_pair[pair] = to_float(require(m, "p", et), "p", et, positive=True)
        raise Ignored("index_price_update")

    def _open_interest(self, m: dict, received_at_us: int) -> Normalized:
        et = "open_interest"
        inst = self._instrument(m["symbol"], et)
        oi = to_float(m["openInterest"], "openInterest", et)
        if oi < 0:
            raise Malformed("bad_value", f"openInterest={oi} is negative", et)
        size, _ = inst.to_base_and_usd(1.0, oi) if not inst.inverse else (oi, None)
        return et, {
            **inst.common_fields(),
            "event_time": open_interest_time(m, received_at_us),
            "ingest_time": received_at_us,
            "open_interest": size,
            "open_interest_usd": oi * inst.contract_value if inst.inverse else None,
        }

    def _open_interest_hist(self, rows: list, received_at_us: int) -> list[Normalized]:
        et = "open_interest"
        if not rows:
            raise Ignored("empty_open_interest_hist")
        out: list[Normalized] = []
        for row in rows:
            if not isinstance(row, dict):
                raise Malformed("bad_value", "openInterestHist row is not an object", et)
            inst = self._instrument(row.get("symbol"), et)
            oi = to_float(require(row, "sumOpenInterest", et), "sumOpenInterest", et)
            usd = to_float(require(row, "sumOpenInterestValue", et), "sumOpenInterestValue", et)
            if oi < 0 or usd < 0:
                raise Malformed("bad_value", "negative open interest", et)
            out.append((et, {
                **inst.common_fields(),
                "event_time": to_epoch_us(require(row, "timestamp", et), "timestamp", et),
                "ingest_time": received_at_us,
                "open_interest": oi,
                "open_interest_usd": usd if inst.quote in USD_QUOTES else None,
            }))
        return out
