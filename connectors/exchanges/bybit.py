"""Bybit v5 linear and inverse contracts (venue ``bybit``).

Websocket frames ``{"topic", "type", "ts", "data"}`` from
``wss://stream.bybit.com/v5/public/{linear,inverse}`` and REST ``/v5/market``
payloads ``{"retCode", "result", "time"}``. Mapping (docs:
bybit-exchange.github.io/docs/v5, websocket/public/{trade, all-liquidation,
liquidation, ticker}):

* ``publicTrade.<symbol>`` -> Trade per element of ``data``: ``T`` fill time,
  ``S`` side of the TAKER (Buy/Sell), ``v`` size, ``p`` price, ``i`` trade id.
* ``allLiquidation.<symbol>`` -> Liquidation per element: ``T`` time, ``S``,
  ``v`` executed size, ``p`` bankruptcy price. The v5 docs define ``S`` as the
  POSITION side with an inverted spelling: "When you receive a Buy update, this
  means that a long position has been liquidated". So ``Buy -> long``,
  ``Sell -> short``. The deprecated ``liquidation.<symbol>`` topic (``data`` an
  object ``{updatedTime, symbol, side, size, price}``) documents ``side`` the
  same way and maps the same.
* ``tickers.<symbol>``: a ``snapshot`` then ``delta`` frames that omit every
  unchanged field. The normalizer keeps the merged ticker per symbol and, for
  each frame, emits a Funding record when the frame touches a funding field
  (``markPrice``, ``indexPrice``, ``fundingRate``, ``nextFundingTime``) and an
  OpenInterest record when it touches ``openInterest``/``openInterestValue``;
  the record's values come from the merged state, so it is complete. A delta
  that changes neither (or arrives before any mark price is known) is ignored
  as ``ticker_no_change`` / ``ticker_incomplete``. Event time is the frame's ``ts``.
* Units. Linear (USDT/USDC): sizes and ``openInterest`` in base coin,
  ``openInterestValue`` in the quote (USD 1:1). Inverse (BTCUSD, ETHUSD...):
  sizes and ``openInterest`` are contracts of 1 USD, so
  ``notional_usd = contracts`` and base size = USD / price (OI uses the mark).
* REST ``/v5/market/tickers`` (``result.list``) -> Funding + OpenInterest per
  row, event time = the response ``time``; REST ``/v5/market/open-interest``
  (``result.symbol`` + ``list`` of ``{openInterest, timestamp}``) ->
  OpenInterest (inverse needs a mark price seen before, else dead letter
  ``no_reference_price``).
* v2 frames (2019-2022, the archives of those years), told apart by topic and
  fields, never by date: ``trade.<symbol>`` -> Trade (``trade_time_ms``, or the
  ISO ``timestamp``); ``liquidation.<symbol>`` with ``qty``/``time`` (or a list
  of REST rows with ``id``) -> Liquidation, side as in v5;
  ``instrument_info.100ms.<symbol>`` snapshot/delta -> its fields translated to
  v5 ticker names (``_e4``/``_e6``/``_e8`` scaled) and merged as a v5 ticker,
  event time ``timestamp_e6``. ``orderBook_200.*``, ``kline.*`` and acks/pongs are
  ignored (counted).
* Books: v5 ``orderbook.{depth}.{symbol}`` and v2 ``orderBookL2_*.{symbol}`` -> BookDepth through
  a local order book (connectors/book.py, :class:`~connectors.book.BybitBooks`; ADR 025). A failed subscription
  (``success: false``) is dead-lettered as ``subscription_failed`` so it is seen.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from connectors.book import BybitBooks
from connectors.exchanges.fast_trades import LAX_FLOATS, trade_record
from connectors.exchanges.isotime import iso_to_epoch_us
from connectors.instruments import REFRESH_HINT, USD_QUOTES, Instrument, InstrumentBook, normalize_asset
from connectors.normalize import Ignored, Malformed, Normalized, require, to_epoch_us, to_float

_IGNORED_TOPIC_PREFIXES = ("orderBook_200", "kline.", "klineV2.", "candle.",
                           "tickers_lt.", "kline_lt.", "lt.", "insurance.", "priceLimit.")
#: v2 ``instrument_info`` fields -> the v5 ticker field each becomes, with the power of ten it is scaled by
#: (``mark_price_e4`` 1905000 = 190.5). Snake case until 2021, camel case in 2022 (USDC contracts).
_V2_TICKER_FIELDS = (
    ("markPrice", (("mark_price", 0), ("markPrice", 0), ("mark_price_e4", 4), ("markPriceE4", 4))),
    ("indexPrice", (("index_price", 0), ("indexPrice", 0), ("index_price_e4", 4), ("indexPriceE4", 4))),
    ("fundingRate", (("funding_rate_e6", 6), ("fundingRateE6", 6))),
    # inverse: contracts of 1 USD; linear: base coin x 1e8
    ("openInterest", (("open_interest", 0), ("open_interest_e8", 8), ("openInterestE8", 8))),
)
_FUNDING_FIELDS = ("markPrice", "indexPrice", "fundingRate", "nextFundingTime")
_OI_FIELDS = ("openInterest", "openInterestValue")

_MONTHS = {m.upper(): i for i, m in enumerate(calendar.month_abbr) if m}
_FUTURE_CODES = dict(zip("FGHJKMNQUVXZ", range(1, 13), strict=True))
_INVERSE_FUTURE = re.compile(r"^(?P<base>[A-Z0-9]+)USD(?P<m>[FGHJKMNQUVXZ])(?P<yy>\d{2})$")
_LINEAR_FUTURE = re.compile(r"^(?P<base>[A-Z0-9]+?)(?P<usdt>USDT)?-(?P<d>\d{1,2})(?P<mon>[A-Z]{3})(?P<yy>\d{2})$")
#: Bybit delivers futures at 08:00 UTC.
_DELIVERY_HOUR = 8


def _last_friday_ms(year: int, month: int) -> int:
    last = calendar.monthrange(year, month)[1]
    day = max(d for d in range(last - 6, last + 1) if calendar.weekday(year, month, d) == calendar.FRIDAY)
    return int(datetime(year, month, day, _DELIVERY_HOUR, tzinfo=UTC).timestamp() * 1000)


def parse_bybit_symbol(symbol: str) -> Instrument | None:
    """Bybit symbol grammar, used when a symbol is missing from the metadata file.

    BTCUSDT / BTCUSDC / BTCPERP -> linear perpetual; BTCUSD -> inverse perpetual
    (1 USD contracts); BTCUSDH25 -> inverse future (last Friday of the month);
    BTCUSDT-26DEC25 / BTC-26DEC25 (USDC) -> linear future.
    """
    m = _LINEAR_FUTURE.match(symbol)
    if m:
        if m["mon"] not in _MONTHS:
            return None
        expiry = int(datetime(2000 + int(m["yy"]), _MONTHS[m["mon"]], int(m["d"]), _DELIVERY_HOUR,
                              tzinfo=UTC).timestamp() * 1000)
        return Instrument("bybit", symbol, normalize_asset(m["base"]), "USDT" if m["usdt"] else "USDC",
                          "future", expiry, 1.0, False)
    m = _INVERSE_FUTURE.match(symbol)
    if m:
        expiry = _last_friday_ms(2000 + int(m["yy"]), _FUTURE_CODES[m["m"]])
        return Instrument("bybit", symbol, normalize_asset(m["base"]), "USD", "future", expiry, 1.0, True)
    for suffix, quote, inverse in (("USDT", "USDT", False), ("USDC", "USDC", False), ("PERP", "USDC", False),
                                   ("USD", "USD", True)):
        if symbol.endswith(suffix) and len(symbol) > len(suffix) and symbol[: -len(suffix)].isalnum():
            return Instrument("bybit", symbol, normalize_asset(symbol[: -len(suffix)]), quote, "perpetual", None,
                              1.0, inverse)
    return None


class _Trade(msgspec.Struct, gc=False):
    """A ``publicTrade`` element, the fields :meth:`BybitNormalizer._trade` reads (others skipped)."""

    s: str
    p: float  # decimal strings, read in C: see fast_trades.LAX_FLOATS
    v: float
    T: Any  # an int is checked in trade_record (lax decoding would read "12" as 12)
    S: Literal["Buy", "Sell"]
    i: Any = None  # the general path's t.get("i"): absent and null are both no id


class _TradeFrame(msgspec.Struct, gc=False):
    topic: str
    data: list[_Trade]


_decode_trade_frame = msgspec.json.Decoder(_TradeFrame, **LAX_FLOATS).decode
_TAKER = {"Buy": "buy", "Sell": "sell"}


def _side_of_taker(raw: Any, et: str) -> str:
    if raw == "Buy":
        return "buy"
    if raw == "Sell":
        return "sell"
    raise Malformed("bad_value", f"side={raw!r} is neither Buy nor Sell", et)


def _liquidated_position(raw: Any, et: str) -> str:
    # v5 docs: "Position side. Buy,Sell. When you receive a Buy update, this means
    # that a long position has been liquidated".
    if raw == "Buy":
        return "long"
    if raw == "Sell":
        return "short"
    raise Malformed("bad_value", f"liquidation side={raw!r} is neither Buy nor Sell", et)


def _present(d: dict, key: str) -> bool:
    return d.get(key) not in (None, "")


def _v2_ticker_fields(u: dict) -> dict[str, Any]:
    """The v5 ticker fields (values as floats, nextFundingTime in ms) of one v2 instrument_info update."""
    out: dict[str, Any] = {}
    for target, sources in _V2_TICKER_FIELDS:
        for key, power in sources:
            if _present(u, key):
                x = to_float(u[key], key, "funding")
                out[target] = x / 10**power if power else x  # int / 1e4: correctly rounded, as float("190.5")
                break
    for key in ("next_funding_time", "nextFundingTime"):
        if _present(u, key):
            if not str(u[key]).startswith("1970-01-01"):  # the zero time: no funding (dated futures)
                out["nextFundingTime"] = iso_to_epoch_us(u[key], key, "funding") // 1000
            break
    return out


class BybitNormalizer:
    venue = "bybit"

    def __init__(self, instruments: InstrumentBook | None = None) -> None:
        self.instruments = instruments or InstrumentBook.load(self.venue, parse_bybit_symbol)
        #: merged ``tickers`` state per symbol (deltas omit unchanged fields)
        self._tickers: dict[str, dict[str, Any]] = {}
        #: local order books -> book_depth records (connectors/book.py, ADR 025)
        self.books = BybitBooks(lambda symbol: self._instrument(symbol, "book_depth"))

    # -- dispatch -----------------------------------------------------------------------------
    def normalize_raw(self, raw: bytes, received_at_us: int) -> list[Normalized] | None:
        """A ``publicTrade`` frame straight from the bytes (see connectors/exchanges/fast_trades.py), else None."""
        try:
            frame = _decode_trade_frame(raw)
        except (ValueError, RecursionError):  # not a trade frame of the usual shape: the general path decides
            return None
        topic = frame.topic
        if not frame.data or not (topic.startswith("publicTrade.") or topic == "publicTrade"):
            return None
        book = self.instruments
        out = []
        for t in frame.data:
            terms = book.trade_terms.get(t.s) or book.fill_trade_terms(t.s)
            if terms is None:
                return None
            record = trade_record(terms, t.p, t.v, t.T, t.i, _TAKER[t.S], received_at_us)
            if record is None:
                return None
            out.append(record)
        return out

    def normalize(self, msg: Any, received_at_us: int) -> list[Normalized]:
        if not isinstance(msg, dict):
            raise Malformed("unknown_message", f"expected a JSON object, got {type(msg).__name__}")
        topic = msg.get("topic")
        if isinstance(topic, str):
            return self._topic(topic, msg, received_at_us)
        if "retCode" in msg and isinstance(msg.get("result"), dict):
            return self._rest(msg, received_at_us)
        op = msg.get("op")
        if op in ("ping", "pong") or msg.get("ret_msg") == "pong":
            raise Ignored("pong")
        if "success" in msg:
            if msg["success"] is True:
                raise Ignored("subscription_reply")
            raise Malformed("subscription_failed", str(msg.get("ret_msg", ""))[:300])
        raise Malformed("unknown_message", "Bybit message without topic, retCode or op")

    def _topic(self, topic: str, msg: dict, received_at_us: int) -> list[Normalized]:
        channel = topic.split(".", 1)[0]
        if channel == "publicTrade":
            return [self._trade(t, received_at_us) for t in self._data_list(msg, "trade")]
        if channel == "allLiquidation":
            return [self._all_liquidation(x, received_at_us) for x in self._data_list(msg, "liquidation")]
        if channel == "liquidation":
            return self._legacy_liquidations(msg, received_at_us)
        if channel == "tickers":
            return self._ticker_frame(msg, received_at_us)
        if channel == "trade":  # v2 (2019-2022) public trades
            return [self._v2_trade(t, received_at_us) for t in self._data_list(msg, "trade")]
        if channel == "instrument_info":  # v2 tickers
            return self._v2_instrument_info(msg, received_at_us)
        if channel == "orderbook":
            return self.books.v5(msg, received_at_us)
        if channel.startswith("orderBookL2"):  # v2 books
            return self.books.v2(topic, msg, received_at_us)
        if topic.startswith(_IGNORED_TOPIC_PREFIXES):
            raise Ignored(channel)
        raise Malformed("unknown_message", f"unknown Bybit topic {topic!r}")

    @staticmethod
    def _data_list(msg: dict, et: str) -> list[dict]:
        data = require(msg, "data", et)
        if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
            raise Malformed("bad_value", "'data' is not a list of objects", et)
        if not data:
            raise Ignored("empty_data")
        return data

    def _instrument(self, symbol: Any, et: str) -> Instrument:
        if not isinstance(symbol, str):
            raise Malformed("missing_field", "symbol missing", et)
        inst = self.instruments.get(symbol)
        if inst is None:
            raise Malformed("unknown_symbol", f"cannot normalize symbol {symbol!r}: "
                            + REFRESH_HINT.format(venue=self.venue), et)
        return inst

    # -- trades and liquidations --------------------------------------------------------------
    def _trade(self, t: dict, received_at_us: int) -> Normalized:
        et = "trade"
        inst = self._instrument(t.get("s"), et)
        price = to_float(require(t, "p", et), "p", et, positive=True)
        qty = to_float(require(t, "v", et), "v", et, positive=True)
        return inst.trade(price, qty, to_epoch_us(require(t, "T", et), "T", et), received_at_us, t.get("i"),
                          _side_of_taker(t.get("S"), et))

    def _v2_trade(self, t: dict, received_at_us: int) -> Normalized:
        et = "trade"
        inst = self._instrument(t.get("symbol"), et)
        price = to_float(require(t, "price", et), "price", et, positive=True)
        qty = to_float(require(t, "size", et), "size", et, positive=True)
        tid = t.get("trade_id", t.get("tradeId"))
        # trade_time_ms from 2020 (tradeTimeMs in 2022); before, only the ISO timestamp (whole seconds)
        time_key = next((k for k in ("trade_time_ms", "tradeTimeMs") if k in t), None)
        event_time = to_epoch_us(t[time_key], time_key, et) if time_key else \
            iso_to_epoch_us(require(t, "timestamp", et), "timestamp", et)
        return inst.trade(price, qty, event_time, received_at_us, tid, _side_of_taker(t.get("side"), et))

    def _liquidation_record(self, inst: Instrument, side: str, price: float, qty: float, ts: Any,
                            received_at_us: int) -> Normalized:
        size, usd = inst.to_base_and_usd(price, qty)
        return "liquidation", {
            **inst.common_fields(),
            "event_time": to_epoch_us(ts, "T", "liquidation"),
            "ingest_time": received_at_us,
            "side": side,
            "price": price,  # the bankruptcy price: Bybit publishes no fill price
            "size": size,
            "notional_usd": usd,
            "order_id": None,
        }

    def _all_liquidation(self, x: dict, received_at_us: int) -> Normalized:
        et = "liquidation"
        inst = self._instrument(x.get("s"), et)
        side = _liquidated_position(x.get("S"), et)
        price = to_float(require(x, "p", et), "p", et, positive=True)
        qty = to_float(require(x, "v", et), "v", et, positive=True)
        return self._liquidation_record(inst, side, price, qty, require(x, "T", et), received_at_us)

    def _legacy_liquidations(self, msg: dict, received_at_us: int) -> list[Normalized]:
        """``liquidation.<symbol>``: v5 (deprecated) ``data`` ``{updatedTime, symbol, side, size, price}``;
        v2 ``{symbol, side, price, qty, time}``, or a list of those with ``id`` (the v2 REST
        ``liquidated-orders`` rows as archives store them). ``side`` Buy = a long liquidated in both."""
        et = "liquidation"
        d = require(msg, "data", et)
        if isinstance(d, list) and d and all(isinstance(x, dict) for x in d):
            return [self._legacy_liquidation(x, msg, received_at_us) for x in d]
        if not isinstance(d, dict):
            raise Malformed("bad_value", "liquidation 'data' is not an object", et)
        return [self._legacy_liquidation(d, msg, received_at_us)]

    def _legacy_liquidation(self, d: dict, msg: dict, received_at_us: int) -> Normalized:
        et = "liquidation"
        inst = self._instrument(d.get("symbol"), et)
        side = _liquidated_position(d.get("side"), et)
        price = to_float(require(d, "price", et), "price", et, positive=True)
        qty_key = "qty" if "qty" in d else "size"  # v2 qty, v5 size
        qty = to_float(require(d, qty_key, et), qty_key, et, positive=True)
        # v2 time; v5: the docs' table says updateTime, their example updatedTime: accept both
        ts = d.get("time", d.get("updatedTime", d.get("updateTime", msg.get("ts"))))
        et_, rec = self._liquidation_record(inst, side, price, qty, ts, received_at_us)
        if d.get("id") is not None:
            rec["order_id"] = str(d["id"])
        return et_, rec

    # -- v2 instrument_info -------------------------------------------------------------------
    def _v2_instrument_info(self, msg: dict, received_at_us: int) -> list[Normalized]:
        """v2 ``instrument_info.100ms.<symbol>``: a snapshot ``data`` object, then deltas
        ``data: {delete, update: [...], insert}`` holding only the changed fields. Each update is
        translated to the v5 ticker fields (:data:`_V2_TICKER_FIELDS`) and merged like a v5 ticker;
        event time = the frame's ``timestamp_e6`` (µs), else the update's ``updated_at``."""
        data = require(msg, "data", "funding")
        if isinstance(data, dict) and "symbol" in data:
            updates, snapshot = [data], True
        elif isinstance(data, dict):
            updates, snapshot = [*(data.get("update") or []), *(data.get("insert") or [])], False
        else:
            raise Malformed("bad_value", "instrument_info 'data' is not an object", "funding")
        out: list[Normalized] = []
        reason = "ticker_no_change"
        for u in updates:
            if not isinstance(u, dict):
                raise Malformed("bad_value", "instrument_info update is not an object", "funding")
            inst = self._instrument(u.get("symbol"), "funding")
            changed = _v2_ticker_fields(u)
            if snapshot or inst.symbol not in self._tickers:
                self._tickers[inst.symbol] = {}
            state = self._tickers[inst.symbol]
            state.update(changed)
            if "timestamp_e6" in msg or "timestampE6" in msg:
                ts, unit = msg.get("timestamp_e6", msg.get("timestampE6")), "us"
            else:
                ts, unit = iso_to_epoch_us(require(u, "updated_at", "funding"), "updated_at", "funding"), "us"
            try:
                out.extend(self._ticker_records(inst, state, changed, ts, received_at_us, unit))
            except Ignored as ign:  # this update changed nothing liqstream keeps; others in the frame may
                reason = ign.reason
        if not out:
            raise Ignored(reason)
        return out

    # -- tickers ------------------------------------------------------------------------------
    def _ticker_frame(self, msg: dict, received_at_us: int) -> list[Normalized]:
        data = require(msg, "data", "funding")
        if not isinstance(data, dict):
            raise Malformed("bad_value", "tickers 'data' is not an object", "funding")
        inst = self._instrument(data.get("symbol"), "funding")
        kind = msg.get("type")
        if kind == "snapshot" or inst.symbol not in self._tickers:
            state = self._tickers[inst.symbol] = {}
        else:
            state = self._tickers[inst.symbol]
        state.update({k: v for k, v in data.items() if v is not None})
        ts = require(msg, "ts", "funding")
        return self._ticker_records(inst, state, data, ts, received_at_us)

    def _ticker_records(self, inst: Instrument, state: dict, changed: dict, ts: Any,
                        received_at_us: int, unit: str = "ms") -> list[Normalized]:
        touches_funding = any(k in changed for k in _FUNDING_FIELDS)
        touches_oi = any(k in changed for k in _OI_FIELDS)
        if not touches_funding and not touches_oi:
            raise Ignored("ticker_no_change")
        if not _present(state, "markPrice"):
            raise Ignored("ticker_incomplete")
        event_time = to_epoch_us(ts, "ts", "funding", unit=unit)
        mark = to_float(state["markPrice"], "markPrice", "funding", positive=True)
        out: list[Normalized] = []
        if touches_funding:
            nft = state.get("nextFundingTime")
            out.append(("funding", {
                **inst.common_fields(),
                "event_time": event_time,
                "ingest_time": received_at_us,
                "mark_price": mark,
                "index_price": to_float(state["indexPrice"], "indexPrice", "funding")
                if _present(state, "indexPrice") else None,
                # dated futures carry fundingRate "" and nextFundingTime "0"/"": no funding
                "funding_rate": to_float(state["fundingRate"], "fundingRate", "funding")
                if _present(state, "fundingRate") else None,
                "next_funding_time": to_epoch_us(nft, "nextFundingTime", "funding") // 1000
                if nft not in (None, "", "0", 0) else None,
            }))
        if touches_oi and _present(state, "openInterest"):
            # openInterestValue only counts when this frame carries it: a stale value
            # beside a fresh openInterest would disagree (else base x mark is used)
            out.append(self._oi_record(inst, state["openInterest"], changed.get("openInterestValue"), mark,
                                       event_time, received_at_us))
        if not out:
            raise Ignored("ticker_incomplete")
        return out

    def _oi_record(self, inst: Instrument, oi_raw: Any, value_raw: Any, mark: float | None, event_time_us: int,
                   received_at_us: int) -> Normalized:
        et = "open_interest"
        oi = to_float(oi_raw, "openInterest", et)
        if oi < 0:
            raise Malformed("bad_value", f"openInterest={oi} is negative", et)
        if inst.inverse:
            # inverse openInterest counts 1-USD contracts: the USD figure is exact
            usd: float | None = oi * inst.contract_value
            if mark is None:
                raise Malformed("no_reference_price", f"inverse openInterest of {inst.symbol} needs a mark price", et)
            base = usd / mark
        else:
            base = oi * inst.contract_value
            if value_raw not in (None, "") and inst.quote in USD_QUOTES:
                usd = to_float(value_raw, "openInterestValue", et)
            elif mark is not None and inst.quote in USD_QUOTES:
                usd = base * mark
            else:
                usd = None
        return et, {
            **inst.common_fields(),
            "event_time": event_time_us,
            "ingest_time": received_at_us,
            "open_interest": base,
            "open_interest_usd": usd,
        }

    # -- REST ---------------------------------------------------------------------------------
    def _rest(self, msg: dict, received_at_us: int) -> list[Normalized]:
        if msg.get("retCode") != 0:
            raise Malformed("rest_error", f"retCode={msg.get('retCode')!r} retMsg={msg.get('retMsg')!r}")
        result = msg["result"]
        rows = result.get("list")
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise Malformed("bad_value", "REST result.list is not a list of objects")
        if not rows:
            raise Ignored("empty_rest_list")
        if "symbol" in result:  # /v5/market/open-interest
            et = "open_interest"
            inst = self._instrument(result["symbol"], et)
            state = self._tickers.get(inst.symbol, {})
            mark = to_float(state["markPrice"], "markPrice", et) if _present(state, "markPrice") else None
            return [self._oi_record(inst, require(r, "openInterest", et), None, mark,
                                    to_epoch_us(require(r, "timestamp", et), "timestamp", et), received_at_us)
                    for r in rows]
        # /v5/market/tickers: full rows, stamped with the response time
        ts = require(msg, "time", "funding")
        out: list[Normalized] = []
        for r in rows:
            if "markPrice" not in r:  # spot tickers carry no mark/funding/OI
                raise Malformed("unknown_message", "REST ticker row without markPrice (spot category?)", "funding")
            inst = self._instrument(r.get("symbol"), "funding")
            state = self._tickers.setdefault(inst.symbol, {})
            state.update({k: v for k, v in r.items() if v is not None})
            out.extend(self._ticker_records(inst, dict(r), r, ts, received_at_us))
        return out
