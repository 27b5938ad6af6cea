"""Deribit v2 (venue ``deribit``): JSON-RPC websocket subscriptions.

Every market-data message is a notification
``{"jsonrpc": "2.0", "method": "subscription", "params": {"channel": ..., "data": ...}}``
(docs: docs.deribit.com, "Subscriptions" -> ``trades.{instrument}.{interval}``,
``trades.{kind}.{currency}.{interval}``, ``ticker.{instrument}.{interval}``). Mapping:

* ``trades.*`` -> one Trade per element of ``data`` (a list). ``direction`` is
  the taker's direction. ``amount`` is in **USD** for inverse perpetuals and
  futures (BTC-PERPETUAL, BTC-29SEP23) and in **base coins** for linear USDC
  contracts (BTC_USDC-PERPETUAL), options and spot, so the bundled contract
  value is 1 for every instrument: Deribit's ``contract_size`` (10 USD for
  BTC-PERPETUAL) is the trading step of ``amount``, not its unit.
  Options: ``price`` is the premium in the quote currency (BTC for BTC options),
  ``size`` the amount of underlying coins and ``notional_usd`` the *underlying*
  notional ``amount * index_price`` (the USD index sent with every trade).
* A trade with ``liquidation`` also yields Liquidation record(s), one per
  liquidated side: ``"T"`` the taker was liquidated, so its order direction is
  the liquidation order (taker ``sell`` closes a **long**, ``buy`` a short);
  ``"M"`` the maker was liquidated and did the opposite of ``direction``
  (taker ``buy`` = maker sold = a **long** closed); ``"MT"`` both, i.e. one long
  and one short closed by the same fill, two records. ``order_id`` = trade id.
* ``ticker.*`` -> OpenInterest (``open_interest`` is USD for inverse contracts,
  base coins for linear contracts and options) and, for perpetuals and futures,
  Funding (``mark_price``, ``index_price``, ``current_funding`` as the rate;
  Deribit accrues funding continuously, so ``next_funding_time`` is null).
  Option OI in USD is ``open_interest * index_price`` (underlying notional).
* Ignored (counted): ``heartbeat`` / ``test_request`` notifications, RPC results
  (subscribe replies, REST responses such as ``get_instruments``), and the
  channels liqstream does not use (quote, index, markprice...).
* ``book.*`` (perpetuals and futures; options ignored as ``book_option``) -> BookDepth through a
  local order book (connectors/book.py, :class:`~connectors.book.DeribitBooks`; ADR 025).
* RPC errors are dead-lettered (``rpc_error``): a rejected subscription must be seen.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from connectors.book import DeribitBooks
from connectors.instruments import Instrument, InstrumentBook, normalize_asset
from connectors.normalize import Ignored, Malformed, Normalized, require, to_epoch_us, to_float

VENUE = "deribit"

_MONTHS = {m: i for i, m in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), start=1)}
# BTC-PERPETUAL, BTC_USDC-PERPETUAL, BTC-29SEP23, BTC_USDC-29SEP23, BTC-29SEP23-30000-C, BTC_USDC, ...
_SYMBOL = re.compile(
    r"^(?P<base>[A-Z0-9]{1,12})(?:_(?P<quote>[A-Z0-9]{2,8}))?"
    r"(?:-(?:(?P<perp>PERPETUAL)|(?P<d>\d{1,2})(?P<m>[A-Z]{3})(?P<y>\d{2})"
    r"(?:-(?P<strike>\d+(?:d\d+)?)-(?P<cp>[CP]))?))?$"
)
#: Public channels liqstream does not use: counted as ignored, never dead-lettered.
_IGNORED_CHANNELS = frozenset({
    "quote", "deribit_price_index", "deribit_price_ranking", "deribit_price_statistics",
    "deribit_volatility_index", "estimated_expiration_price", "markprice", "perpetual",
    "platform_state", "announcements", "instrument", "chart", "incremental_ticker",
    "block_rfq", "block_trade_confirmations",
})


def _expiry_ms(day: str, month: str, yy: str) -> int | None:
    m = _MONTHS.get(month)
    if m is None:
        return None
    try:
        # Deribit futures and options expire at 08:00 UTC on the expiry date.
        return int(datetime(2000 + int(yy), m, int(day), 8, tzinfo=UTC).timestamp() * 1000)
    except ValueError:
        return None


def parse_deribit_symbol(symbol: str) -> Instrument | None:
    """Deribit's instrument-name grammar, used when a name is not in the bundled metadata."""
    m = _SYMBOL.match(symbol)
    if m is None:
        return None
    base = normalize_asset(m["base"])
    quote = m["quote"]
    if m["perp"]:
        kind, expiry = "perpetual", None
    elif m["d"]:
        expiry = _expiry_ms(m["d"], m["m"], m["y"])
        if expiry is None:
            return None
        kind = "option" if m["cp"] else "future"
    elif quote:
        kind, expiry = "spot", None
    else:
        return None
    if kind == "option":
        # Coin-settled options are quoted in the base coin, USDC ones in USDC.
        return Instrument(VENUE, symbol, base, quote or base, kind, expiry, 1.0, False)
    if quote is None:  # BTC-PERPETUAL, BTC-29SEP23: inverse, amounts in USD
        return Instrument(VENUE, symbol, base, "USD", kind, expiry, 1.0, True)
    return Instrument(VENUE, symbol, base, quote, kind, expiry, 1.0, False)


def instruments_from_get_instruments(payload: Any) -> list[Instrument]:
    """``public/get_instruments`` response(s) -> instruments (combos are skipped: never quoted alone)."""
    responses = payload if isinstance(payload, list) else [payload]
    out: list[Instrument] = []
    for resp in responses:
        rows = resp.get("result", []) if isinstance(resp, dict) else []
        for r in rows:
            kind = r.get("kind")
            name = r["instrument_name"]
            base = normalize_asset(r["base_currency"])
            if kind == "future":
                perpetual = r.get("settlement_period") == "perpetual"
                ftype = r.get("future_type") or r.get("instrument_type")
                inverse = ftype == "reversed" or (ftype is None and r.get("quote_currency") == "USD")
                out.append(Instrument(
                    VENUE, name, base, "USD" if inverse else str(r["quote_currency"]).upper(),
                    "perpetual" if perpetual else "future",
                    None if perpetual else int(r["expiration_timestamp"]), 1.0, inverse))
            elif kind == "option":
                out.append(Instrument(VENUE, name, base, str(r["quote_currency"]).upper(), "option",
                                      int(r["expiration_timestamp"]), 1.0, False))
            elif kind == "spot":
                out.append(Instrument(VENUE, name, base, str(r["quote_currency"]).upper(), "spot",
                                      None, 1.0, False))
    return out


def liquidated_sides(flag: Any, direction: str) -> list[str]:
    """Position side(s) closed by a trade with Deribit's ``liquidation`` flag (see module doc)."""
    taker_closes = "long" if direction == "sell" else "short"
    maker_closes = "short" if direction == "sell" else "long"
    if flag == "T":
        return [taker_closes]
    if flag == "M":
        return [maker_closes]
    if flag == "MT":
        return [maker_closes, taker_closes]
    raise Malformed("bad_value", f"liquidation={flag!r} is not M, T or MT", "liquidation")


class DeribitNormalizer:
    venue = VENUE

    def __init__(self, instruments: InstrumentBook | None = None) -> None:
        self.instruments = instruments or InstrumentBook.load(self.venue, parse_deribit_symbol)
        #: local order books -> book_depth records (connectors/book.py, ADR 025)
        self.books = DeribitBooks(lambda item: self._instrument(item, "book_depth"))

    def normalize(self, msg: Any, received_at_us: int) -> list[Normalized]:
        if not isinstance(msg, dict):
            raise Malformed("unknown_message", f"expected a JSON-RPC object, got {type(msg).__name__}")
        method = msg.get("method")
        if method == "subscription":
            params = msg.get("params")
            if not isinstance(params, dict) or not isinstance(params.get("channel"), str):
                raise Malformed("missing_field", "subscription without params.channel")
            channel = params["channel"]
            prefix = channel.split(".", 1)[0]
            data = params.get("data")
            if prefix == "trades":
                return self._trades(data, received_at_us)
            if prefix == "ticker":
                return self._ticker(data, received_at_us)
            if prefix == "book":
                return self.books.book_channel(channel, data, received_at_us)
            if prefix in _IGNORED_CHANNELS:
                raise Ignored(f"channel_{prefix}")
            raise Malformed("unknown_message", f"unknown Deribit channel {channel[:80]!r}")
        if method == "heartbeat":
            params = msg.get("params")
            kind = params.get("type") if isinstance(params, dict) else None
            raise Ignored("test_request" if kind == "test_request" else "heartbeat")
        if "error" in msg:
            raise Malformed("rpc_error", f"Deribit error reply: {str(msg['error'])[:300]}")
        if "result" in msg:
            raise Ignored("rpc_result")
        raise Malformed("unknown_message", f"unknown Deribit message method={str(method)[:40]!r}")

    # -- helpers ------------------------------------------------------------------------------
    def _instrument(self, item: dict, event_type: str) -> Instrument:
        name = require(item, "instrument_name", event_type)
        if not isinstance(name, str):
            raise Malformed("bad_value", "instrument_name is not a string", event_type)
        inst = self.instruments.get(name)
        if inst is None:
            raise Malformed("unknown_symbol", f"cannot normalize instrument {name[:60]!r}", event_type)
        return inst

    @staticmethod
    def _size_and_usd(inst: Instrument, price: float, amount: float, index_price: float | None,
                      et: str) -> tuple[float, float]:
        if inst.kind == "option":
            if index_price is None:
                raise Malformed("missing_field", "option trade without index_price", et)
            return amount, amount * index_price
        if inst.inverse:
            return amount / price, amount  # amount is USD
        return amount, amount * price  # linear: amount in base coins, quote USD-like

    # -- per type -----------------------------------------------------------------------------
    def _trades(self, data: Any, received_at_us: int) -> list[Normalized]:
        if not isinstance(data, list):
            raise Malformed("bad_value", "trades data is not a list", "trade")
        if not data:
            raise Ignored("empty_trades")
        out: list[Normalized] = []
        for t in data:
            out.extend(self._trade(t, received_at_us))
        return out

    def _trade(self, t: Any, received_at_us: int) -> list[Normalized]:
        et = "trade"
        if not isinstance(t, dict):
            raise Malformed("bad_value", "trade is not an object", et)
        inst = self._instrument(t, et)
        price = to_float(require(t, "price", et), "price", et, positive=True)
        amount = to_float(require(t, "amount", et), "amount", et, positive=True)
        direction = require(t, "direction", et)
        if direction not in ("buy", "sell"):
            raise Malformed("bad_value", f"direction={direction!r} is neither buy nor sell", et)
        index_price = (to_float(t["index_price"], "index_price", et, positive=True)
                       if t.get("index_price") is not None else None)
        size, usd = self._size_and_usd(inst, price, amount, index_price, et)
        event_time = to_epoch_us(require(t, "timestamp", et), "timestamp", et)
        trade_id = t.get("trade_id")
        trade_id = None if trade_id is None else str(trade_id)
        common = inst.common_fields()
        out: list[Normalized] = [(et, {
            **common,
            "event_time": event_time,
            "ingest_time": received_at_us,
            "trade_id": trade_id,
            "price": price,
            "size": size,
            "notional_usd": usd,
            "taker_side": direction,
        })]
        flag = t.get("liquidation")
        if flag is not None:
            for side in liquidated_sides(flag, direction):
                out.append(("liquidation", {
                    **common,
                    "event_time": event_time,
                    "ingest_time": received_at_us,
                    "side": side,
                    "price": price,
                    "size": size,
                    "notional_usd": usd,
                    "order_id": trade_id,
                }))
        return out

    def _ticker(self, d: Any, received_at_us: int) -> list[Normalized]:
        et = "open_interest"
        if not isinstance(d, dict):
            raise Malformed("bad_value", "ticker data is not an object", et)
        inst = self._instrument(d, et)
        event_time = to_epoch_us(require(d, "timestamp", et), "timestamp", et)
        # a far out-of-the-money option can be marked at 0; perpetual/future marks divide OI
        mark = to_float(require(d, "mark_price", et), "mark_price", et, positive=inst.kind != "option")
        if mark < 0:
            raise Malformed("bad_value", f"mark_price={mark} is negative", et)
        index_price = (to_float(d["index_price"], "index_price", et, positive=True)
                       if d.get("index_price") is not None else None)
        oi_raw = to_float(require(d, "open_interest", et), "open_interest", et)
        if oi_raw < 0:
            raise Malformed("bad_value", f"open_interest={oi_raw} is negative", et)
        if inst.kind == "option":
            if index_price is None:
                raise Malformed("missing_field", "option ticker without index_price", et)
            oi, oi_usd = oi_raw, oi_raw * index_price
        elif inst.inverse:
            oi, oi_usd = oi_raw / mark, oi_raw
        else:
            oi, oi_usd = oi_raw, oi_raw * mark
        common = inst.common_fields()
        out: list[Normalized] = [(et, {
            **common,
            "event_time": event_time,
            "ingest_time": received_at_us,
            "open_interest": oi,
            "open_interest_usd": oi_usd,
        })]
        if inst.kind in ("perpetual", "future"):
            rate = d.get("current_funding", d.get("funding_8h")) if inst.kind == "perpetual" else None
            out.append(("funding", {
                **common,
                "event_time": event_time,
                "ingest_time": received_at_us,
                "mark_price": mark,
                "index_price": index_price,
                "funding_rate": None if rate is None else to_float(rate, "current_funding", "funding"),
                "next_funding_time": None,
            }))
        return out
