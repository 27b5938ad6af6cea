"""OKX v5 swaps, futures and spot (venue ``okx``).

Websocket frames ``{"arg": {"channel", ...}, "data": [...]}`` from
``wss://ws.okx.com:8443/ws/v5/public`` and REST ``{"code", "msg", "data"}``
payloads of ``/api/v5/public/*``. Mapping (docs: okx.com/docs-v5, "Public
Data - WebSocket" and "Order Book Trading - Market Data"):

* Contracts. ``sz``/``oi`` of SWAP and FUTURES are CONTRACTS. Instrument
  metadata (``instruments/okx.json`` from ``/api/v5/public/instruments``) gives
  ``ctVal x ctMult``: for ``ctType`` linear a number of base coins per
  contract (BTC-USDT-SWAP: 0.01 BTC), for inverse a number of USD per contract
  (BTC-USD-SWAP: 100 USD, others 10 USD). SPOT sizes are base units. Contract
  values cannot be guessed from a symbol, so a SWAP/FUTURES id missing from the
  metadata (current listing and history) is dead-lettered as ``unknown_symbol``
  (its detail names ``liqstream instruments refresh okx``); the one inference is
  a dated future of a series whose futures in the metadata all share their
  terms (``series_future``).
* ``trades`` / ``trades-all`` -> Trade: ``px``, ``sz``, ``side`` = taker side,
  ``tradeId``, ``ts``.
* ``liquidation-orders`` -> Liquidation per ``details`` element. ``posSide``
  long/short (hedge mode) is the closed position's side; in net mode
  (``posSide`` net or empty) the liquidation ORDER side decides: ``sell``
  closes a long, ``buy`` closes a short. Price = ``bkPx``; size ``sz``
  (contracts; base units for MARGIN).
* ``open-interest`` -> OpenInterest: base units = ``oiCcy`` (coin), USD =
  ``oiUsd`` when given, else for inverse contracts ``oi x ctVal`` (exact USD),
  else null (no price in the message).
* ``mark-price`` -> Funding (``markPx``, ``ts``) carrying the last funding rate
  seen for the instrument; ``funding-rate`` updates that state (``fundingRate``;
  ``fundingTime`` is the settlement time of the current rate, so it is the
  record's ``next_funding_time``) and emits a Funding record with the last
  mark price; before any mark price is known, or when the row has no ``ts``
  (the older shape of the channel), it is buffered and counted as ignored
  ``funding_rate_buffered`` (its values go out with the next mark), so the
  outcome does not depend on which of the two channels came first.
* ``books``, ``books-l2-tbt``, ``books50-l2-tbt``, ``books5``, ``bbo-tbt`` -> BookDepth through a
  local order book, sequence ids and CRC32 checksum verified (connectors/book.py,
  :class:`~connectors.book.OkxBooks`; ADR 025).
* REST payloads ``/public/open-interest``, ``/public/mark-price``,
  ``/public/funding-rate``, ``/public/liquidation-orders`` and
  ``/market/trades`` map like their websocket channels.
* v3 (2019-2021) ``{"table": "<swap|futures|spot>/<channel>", "data": [...]}``,
  told apart from v5 by ``table``: ``trade`` -> Trade, ``liquidation`` ->
  Liquidation (``type`` 3 closes a long, 4 a short), ``mark_price`` -> Funding,
  ``funding_rate`` buffered (no time of its own), ``ticker`` -> OpenInterest
  when it carries ``open_interest``; times are ISO strings.
* Ignored (counted): subscribe/unsubscribe acks, ``notice``, connection-count
  events, ``tickers``, candles, ``index-tickers``, the
  text ``pong``. ``{"event": "error"}`` is dead-lettered as ``subscription_failed``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from connectors.book import OkxBooks
from connectors.exchanges.fast_trades import LAX_FLOATS, trade_record
from connectors.exchanges.isotime import iso_to_epoch_us
from connectors.instruments import REFRESH_HINT, USD_QUOTES, Instrument, InstrumentBook, normalize_asset
from connectors.normalize import Ignored, Malformed, Normalized, require, to_epoch_us, to_float

_IGNORED_CHANNELS = frozenset({
    "tickers", "index-tickers", "instruments",
    "price-limit", "estimated-price", "opt-summary", "status", "block-tickers", "public-block-trades",
    "option-trades", "call-auction-details", "economic-calendar", "sprd-tickers", "adl-warning",
})
#: order-book channels -> book_depth (connectors/book.py)
BOOK_CHANNELS = frozenset({"books", "books5", "books50-l2-tbt", "books-l2-tbt", "bbo-tbt"})
_ACK_EVENTS = frozenset({"subscribe", "unsubscribe", "login", "notice", "channel-conn-count"})
#: v3 tables are ``<market>/<channel>``
_V3_MARKETS = frozenset({"spot", "swap", "futures", "option", "index", "margin"})
_V3_IGNORED = frozenset({"depth", "depth5", "depth_l2_tbt", "price_range", "estimated_price", "instruments",
                         "summary", "account", "position", "order", "order_algo"})
#: v3 liquidation ``type``: 3 = close long, 4 = close short (the closed position)
_V3_LIQUIDATED = {"3": "long", "4": "short"}




def parse_okx_symbol(symbol: str) -> Instrument | None:
    """Spot ids ``BASE-QUOTE`` only: derivatives need ctVal from the metadata file."""
    parts = symbol.split("-")
    if len(parts) != 2 or not all(p.isalnum() for p in parts):
        return None
    return Instrument("okx", symbol, normalize_asset(parts[0]), parts[1].upper(), "spot", None, 1.0, False)


_DATED_FUTURE = re.compile(r"^(?P<series>[A-Z0-9]+-[A-Z0-9]+)-(?P<yymmdd>\d{6})$")
#: OKX futures deliver at 08:00 UTC on the date of their id
_DELIVERY_HOUR = 8


def series_future(book: InstrumentBook, symbol: str) -> Instrument | None:
    """A dated future missing from the book (listed after the bundled file, or expired before it), e.g.
    ``BTC-USD-230630``: OKX lists every expiry of a series (``BTC-USD-*``, ``BTC-USDT-*``) with the same
    contract terms, so it takes the terms the book's futures of that series agree on. None when the book
    has no future of the series or its futures disagree: a contract value is never guessed."""
    m = _DATED_FUTURE.match(symbol)
    if m is None:
        return None
    try:
        expiry = datetime.strptime(m["yymmdd"], "%y%m%d").replace(hour=_DELIVERY_HOUR, tzinfo=UTC)
    except ValueError:
        return None
    prefix = m["series"] + "-"
    terms = {(i.base, i.quote, i.contract_value, i.inverse) for i in book.known()
             if i.kind == "future" and i.symbol.startswith(prefix) and _DATED_FUTURE.match(i.symbol)}
    if len(terms) != 1:
        return None
    base, quote, contract_value, inverse = terms.pop()
    return Instrument("okx", symbol, base, quote, "future", int(expiry.timestamp() * 1000), contract_value, inverse)



def _taker_side(r: dict, et: str) -> str:
    side = r.get("side")
    if side not in ("buy", "sell"):
        raise Malformed("bad_value", f"side={side!r} is neither buy nor sell", et)
    return side

class _Trade(msgspec.Struct, gc=False):
    """A ``trades`` row, the fields :meth:`OkxNormalizer._trade` reads (others skipped)."""

    instId: str  # noqa: N815 - OKX's field names
    px: float  # decimal strings, read in C: see fast_trades.LAX_FLOATS
    sz: float
    side: Literal["buy", "sell"]
    ts: str  # string milliseconds: int() below, as to_epoch_us does (lax str fields take only strings)
    tradeId: Any = None  # noqa: N815 - the general path's r.get("tradeId")


class _TradeArg(msgspec.Struct, gc=False):
    channel: Literal["trades", "trades-all"]


class _TradeFrame(msgspec.Struct, gc=False):
    arg: _TradeArg
    data: list[_Trade]
    event: Any = None  # the general path treats any non-null "event" as an ack or error


_decode_trade_frame = msgspec.json.Decoder(_TradeFrame, **LAX_FLOATS).decode


def _position_side(d: dict, et: str) -> str:
    pos = d.get("posSide")
    if pos in ("long", "short"):
        return pos
    order_side = d.get("side")
    if pos in (None, "", "net"):
        if order_side == "sell":
            return "long"
        if order_side == "buy":
            return "short"
    raise Malformed("bad_value", f"cannot tell the liquidated side from posSide={pos!r} side={order_side!r}", et)


class OkxNormalizer:
    venue = "okx"

    def __init__(self, instruments: InstrumentBook | None = None) -> None:
        self.instruments = book = instruments or InstrumentBook.load(self.venue)
        book.set_parser(lambda symbol: parse_okx_symbol(symbol) or series_future(book, symbol))
        #: per instId: last mark price and funding state, merged across mark-price / funding-rate
        self._marks: dict[str, float] = {}
        self._funding: dict[str, tuple[float | None, int | None]] = {}
        #: local order books -> book_depth records (connectors/book.py, ADR 025)
        self.books = OkxBooks(lambda inst_id: self._instrument(inst_id, "book_depth"))

    # -- dispatch -----------------------------------------------------------------------------
    def normalize_raw(self, raw: bytes, received_at_us: int) -> list[Normalized] | None:
        """A ``trades`` frame straight from the bytes (see connectors/exchanges/fast_trades.py), else None."""
        try:
            frame = _decode_trade_frame(raw)
        except (ValueError, RecursionError):  # not a trade frame of the usual shape: the general path decides
            return None
        if not frame.data or frame.event is not None:
            return None
        book = self.instruments
        out = []
        for r in frame.data:
            terms = book.trade_terms.get(r.instId) or book.fill_trade_terms(r.instId)
            if terms is None:
                return None
            try:
                t_ms = int(r.ts)  # to_epoch_us' int() of OKX's string milliseconds
            except ValueError:
                return None
            record = trade_record(terms, r.px, r.sz, t_ms, r.tradeId, r.side, received_at_us)
            if record is None:
                return None
            out.append(record)
        return out

    def normalize(self, msg: Any, received_at_us: int) -> list[Normalized]:
        if msg in ("pong", "ping"):
            raise Ignored("pong")
        if not isinstance(msg, dict):
            raise Malformed("unknown_message", f"expected a JSON object, got {type(msg).__name__}")
        event = msg.get("event")
        if event is not None:
            if isinstance(event, str) and event in _ACK_EVENTS:  # a list/dict "event" is not hashable
                raise Ignored("subscription_reply" if event in ("subscribe", "unsubscribe") else str(event))
            if event == "error":
                raise Malformed("subscription_failed", f"code={msg.get('code')!r} msg={msg.get('msg')!r}")
            raise Malformed("unknown_message", f"unknown OKX event {event!r}")
        arg = msg.get("arg")
        if isinstance(arg, dict):
            return self._channel(str(arg.get("channel")), msg, received_at_us)
        table = msg.get("table")
        if isinstance(table, str):  # v3 (2019-2021): {"table": "swap/trade", "data": [...]}
            return self._v3_table(table, msg, received_at_us)
        if "code" in msg and "data" in msg:
            return self._rest(msg, received_at_us)
        raise Malformed("unknown_message", "OKX message without event, arg or code")

    def _channel(self, channel: str, msg: dict, received_at_us: int) -> list[Normalized]:
        if channel in ("trades", "trades-all"):
            return [self._trade(r, received_at_us) for r in self._rows(msg, "trade")]
        if channel == "liquidation-orders":
            return self._liquidations(self._rows(msg, "liquidation"), received_at_us)
        if channel == "open-interest":
            return [self._open_interest(r, received_at_us) for r in self._rows(msg, "open_interest")]
        if channel == "mark-price":
            return [self._mark_price(r, received_at_us) for r in self._rows(msg, "funding")]
        if channel == "funding-rate":
            return self._funding_rates(self._rows(msg, "funding"), received_at_us)
        if channel in BOOK_CHANNELS:
            return self.books.channel(channel, msg, received_at_us)
        if channel in _IGNORED_CHANNELS or channel.startswith(("candle", "mark-price-candle", "index-candle")):
            raise Ignored(channel)
        raise Malformed("unknown_message", f"unknown OKX channel {channel!r}")

    @staticmethod
    def _rows(msg: dict, et: str) -> list[dict]:
        data = require(msg, "data", et)
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise Malformed("bad_value", "'data' is not a list of objects", et)
        if not data:
            raise Ignored("empty_data")
        return data

    def _instrument(self, inst_id: Any, et: str) -> Instrument:
        if not isinstance(inst_id, str):
            raise Malformed("missing_field", "instId missing", et)
        inst = self.instruments.get(inst_id)
        if inst is None:
            raise Malformed("unknown_symbol", f"no contract metadata for {inst_id!r}: "
                            + REFRESH_HINT.format(venue=self.venue), et)
        return inst

    # -- per channel --------------------------------------------------------------------------
    def _trade(self, r: dict, received_at_us: int) -> Normalized:
        et = "trade"
        inst = self._instrument(r.get("instId"), et)
        price = to_float(require(r, "px", et), "px", et, positive=True)
        qty = to_float(require(r, "sz", et), "sz", et, positive=True)
        return inst.trade(price, qty, to_epoch_us(require(r, "ts", et), "ts", et), received_at_us,
                          r.get("tradeId"), _taker_side(r, et))

    def _liquidations(self, rows: list[dict], received_at_us: int) -> list[Normalized]:
        et = "liquidation"
        out: list[Normalized] = []
        for r in rows:
            inst = self._instrument(r.get("instId"), et)
            details = require(r, "details", et)
            if not isinstance(details, list) or not all(isinstance(d, dict) for d in details):
                raise Malformed("bad_value", "'details' is not a list of objects", et)
            for d in details:
                price = to_float(require(d, "bkPx", et), "bkPx", et, positive=True)
                size, usd = inst.to_base_and_usd(price, to_float(require(d, "sz", et), "sz", et, positive=True))
                out.append((et, {
                    **inst.common_fields(),
                    "event_time": to_epoch_us(require(d, "ts", et), "ts", et),
                    "ingest_time": received_at_us,
                    "side": _position_side(d, et),
                    "price": price,
                    "size": size,
                    "notional_usd": usd,
                    "order_id": None,
                }))
        if not out:
            raise Ignored("empty_details")
        return out

    def _open_interest(self, r: dict, received_at_us: int) -> Normalized:
        et = "open_interest"
        inst = self._instrument(r.get("instId"), et)
        contracts = to_float(require(r, "oi", et), "oi", et)
        if contracts < 0:
            raise Malformed("bad_value", f"oi={contracts} is negative", et)
        if r.get("oiCcy") not in (None, ""):
            base = to_float(r["oiCcy"], "oiCcy", et)
        elif not inst.inverse:
            base = contracts * inst.contract_value
        else:
            raise Malformed("missing_field", "inverse open interest without oiCcy", et)
        if r.get("oiUsd") not in (None, ""):
            usd: float | None = to_float(r["oiUsd"], "oiUsd", et)
        elif inst.inverse:
            usd = contracts * inst.contract_value
        else:
            usd = None
        return et, {
            **inst.common_fields(),
            "event_time": to_epoch_us(require(r, "ts", et), "ts", et),
            "ingest_time": received_at_us,
            "open_interest": base,
            "open_interest_usd": usd,
        }

    def _funding_record(self, inst: Instrument, mark: float, event_time_us: int, received_at_us: int) -> Normalized:
        rate, settle_ms = self._funding.get(inst.symbol, (None, None))
        return "funding", {
            **inst.common_fields(),
            "event_time": event_time_us,
            "ingest_time": received_at_us,
            "mark_price": mark,
            "index_price": None,  # OKX publishes the index on index-tickers, not joined here
            "funding_rate": rate,
            "next_funding_time": settle_ms,
        }

    def _mark_price(self, r: dict, received_at_us: int) -> Normalized:
        et = "funding"
        inst = self._instrument(r.get("instId"), et)
        mark = to_float(require(r, "markPx", et), "markPx", et, positive=True)
        self._marks[inst.symbol] = mark
        return self._funding_record(inst, mark, to_epoch_us(require(r, "ts", et), "ts", et), received_at_us)

    def _funding_rates(self, rows: list[dict], received_at_us: int) -> list[Normalized]:
        et = "funding"
        out: list[Normalized] = []
        for r in rows:
            inst = self._instrument(r.get("instId"), et)
            rate = to_float(require(r, "fundingRate", et), "fundingRate", et)
            ft = r.get("fundingTime")
            settle = to_epoch_us(ft, "fundingTime", et) // 1000 if ft not in (None, "") else None
            self._funding[inst.symbol] = (rate, settle)
            mark = self._marks.get(inst.symbol)
            # the older funding-rate shape has no ts: with no time of its own the rate can only go out with
            # the next mark-price, whichever came first (ADR 014), never be dead-lettered for a missing ts
            if mark is not None and r.get("ts") not in (None, ""):
                out.append(self._funding_record(inst, mark, to_epoch_us(r["ts"], "ts", et), received_at_us))
        if not out:
            raise Ignored("funding_rate_buffered")
        return out

    # -- v3 (the archives of 2019-2021) --------------------------------------------------------
    def _v3_table(self, table: str, msg: dict, received_at_us: int) -> list[Normalized]:
        market, _, channel = table.partition("/")
        if market not in _V3_MARKETS:
            raise Malformed("unknown_message", f"unknown OKX v3 table {table!r}")
        if channel == "trade":
            return [self._v3_trade(r, received_at_us) for r in self._rows(msg, "trade")]
        if channel == "liquidation":
            return [self._v3_liquidation(r, received_at_us) for r in self._rows(msg, "liquidation")]
        if channel == "mark_price":
            return [self._v3_mark_price(r, received_at_us) for r in self._rows(msg, "funding")]
        if channel == "funding_rate":
            return self._v3_funding_rates(self._rows(msg, "funding"))
        if channel == "ticker":
            return self._v3_tickers(self._rows(msg, "open_interest"), received_at_us)
        if channel in _V3_IGNORED or channel.startswith("candle"):
            raise Ignored(f"v3_{channel}")
        raise Malformed("unknown_message", f"unknown OKX v3 table {table!r}")

    def _v3_trade(self, r: dict, received_at_us: int) -> Normalized:
        et = "trade"
        inst = self._instrument(r.get("instrument_id"), et)
        price = to_float(require(r, "price", et), "price", et, positive=True)
        # futures/trade of 2019 sends qty, swap and spot size
        qty_key = "qty" if "qty" in r else "size"
        qty = to_float(require(r, qty_key, et), qty_key, et, positive=True)
        return inst.trade(price, qty, iso_to_epoch_us(require(r, "timestamp", et), "timestamp", et), received_at_us,
                          r.get("trade_id"), _taker_side(r, et))

    def _v3_liquidation(self, r: dict, received_at_us: int) -> Normalized:
        et = "liquidation"
        inst = self._instrument(r.get("instrument_id"), et)
        kind = str(r.get("type"))
        if kind not in _V3_LIQUIDATED:
            raise Malformed("bad_value", f"liquidation type={r.get('type')!r} is neither 3 (close long) nor 4", et)
        price = to_float(require(r, "price", et), "price", et, positive=True)
        size, usd = inst.to_base_and_usd(price, to_float(require(r, "size", et), "size", et, positive=True))
        return et, {
            **inst.common_fields(),
            "event_time": iso_to_epoch_us(require(r, "created_at", et), "created_at", et),
            "ingest_time": received_at_us,
            "side": _V3_LIQUIDATED[kind],
            "price": price,
            "size": size,
            "notional_usd": usd,
            "order_id": None,
        }

    def _v3_mark_price(self, r: dict, received_at_us: int) -> Normalized:
        et = "funding"
        inst = self._instrument(r.get("instrument_id"), et)
        mark = to_float(require(r, "mark_price", et), "mark_price", et, positive=True)
        self._marks[inst.symbol] = mark
        return self._funding_record(inst, mark, iso_to_epoch_us(require(r, "timestamp", et), "timestamp", et),
                                    received_at_us)

    def _v3_funding_rates(self, rows: list[dict]) -> list[Normalized]:
        # {funding_rate, funding_time, estimated_rate, interest_rate, instrument_id}: no time of its own, so
        # like the v5 rows without ts it is buffered and goes out with the next mark price
        et = "funding"
        for r in rows:
            inst = self._instrument(r.get("instrument_id"), et)
            rate = to_float(require(r, "funding_rate", et), "funding_rate", et)
            ft = r.get("funding_time")
            settle = iso_to_epoch_us(ft, "funding_time", et) // 1000 if ft not in (None, "") else None
            self._funding[inst.symbol] = (rate, settle)
        raise Ignored("funding_rate_buffered")

    def _v3_tickers(self, rows: list[dict], received_at_us: int) -> list[Normalized]:
        # v3 has no open-interest channel: swap/futures tickers carry open_interest (contracts) from 2020;
        # the ticker's own last price converts it. Spot tickers and the older ones without it are ignored.
        et = "open_interest"
        out: list[Normalized] = []
        for r in rows:
            if r.get("open_interest") in (None, ""):
                continue
            inst = self._instrument(r.get("instrument_id"), et)
            contracts = to_float(r["open_interest"], "open_interest", et)
            if contracts < 0:
                raise Malformed("bad_value", f"open_interest={contracts} is negative", et)
            last = to_float(require(r, "last", et), "last", et, positive=True)
            base, usd = inst.to_base_and_usd(last, contracts)
            out.append((et, {
                **inst.common_fields(),
                "event_time": iso_to_epoch_us(require(r, "timestamp", et), "timestamp", et),
                "ingest_time": received_at_us,
                "open_interest": base,
                "open_interest_usd": usd if inst.inverse or inst.quote in USD_QUOTES else None,
            }))
        if not out:
            raise Ignored("v3_ticker")
        return out

    # -- REST ---------------------------------------------------------------------------------
    def _rest(self, msg: dict, received_at_us: int) -> list[Normalized]:
        if str(msg.get("code")) != "0":
            raise Malformed("rest_error", f"code={msg.get('code')!r} msg={msg.get('msg')!r}")
        rows = self._rows(msg, None)  # type: ignore[arg-type]
        first = rows[0]
        if "details" in first:
            return self._liquidations(rows, received_at_us)
        if "oi" in first:
            return [self._open_interest(r, received_at_us) for r in rows]
        if "fundingRate" in first:
            return self._funding_rates(rows, received_at_us)
        if "markPx" in first:
            return [self._mark_price(r, received_at_us) for r in rows]
        if "tradeId" in first and "px" in first:
            return [self._trade(r, received_at_us) for r in rows]
        raise Malformed("unknown_message", "unrecognised OKX REST payload")
