"""Binance COIN-M (inverse) futures (venue ``binance-delivery``).

Same websocket envelope and event names as USDⓈ-M (``binance.py``), so the
message parsing is inherited; what differs is the unit of every quantity
(docs: developers.binance.com, "Coin-Margined Futures", Websocket Market
Streams and Market Data endpoints):

* Quantities (``aggTrade.q``, ``forceOrder.o.q``/``z``, REST ``openInterest``,
  ``openInterestHist.sumOpenInterest``) are CONTRACTS. A contract is worth a
  fixed amount of USD (``contractSize`` in ``exchangeInfo``: 100 USD for BTC,
  10 USD for the other pairs), so ``notional_usd = contracts x contractSize``
  and ``size`` (base units) ``= notional_usd / price``.
* Symbols: ``BTCUSD_PERP`` (perpetual), ``BTCUSD_240329`` (quarterly future,
  delivery 08:00 UTC). Metadata comes from the bundled
  ``instruments/binance-delivery.json`` (converted from ``/dapi/v1/exchangeInfo``);
  an unknown symbol falls back to the symbol grammar with Binance's
  convention (100 USD for BTC, 10 USD otherwise).
* ``forceOrder``: ``o.S`` SELL force-sells a long (side ``long``), BUY closes a
  short, as on USDⓈ-M.
* REST ``openInterest`` ``{"symbol","pair","openInterest","contractType","time"}``:
  ``open_interest_usd = contracts x contractSize`` exactly; the base-unit
  figure needs a price the payload does not carry, so it is the USD divided by
  the last mark price this normalizer saw for the symbol (``markPriceUpdate``
  or REST ``premiumIndex``); with none seen yet the message is dead-lettered
  as ``no_reference_price`` (the poller should poll ``premiumIndex`` first).
* REST ``openInterestHist`` rows carry ``pair`` + ``contractType`` (no symbol):
  ``sumOpenInterest`` is contracts, ``sumOpenInterestValue`` is in BASE asset
  (per the docs' field notes). PERPETUAL maps to ``<pair>_PERP``;
  CURRENT_QUARTER / NEXT_QUARTER to the first / second future of the pair in
  the instrument book still unexpired at the row's timestamp.
* ``indexPriceUpdate`` (``<pair>@indexPrice``): the pair's index, kept for the
  ``index_price`` of Funding records whose mark message has no ``i`` (ignored,
  counted as ``index_price_update``).
* REST ``premiumIndex`` (object or list) -> Funding (``markPrice``,
  ``indexPrice``, ``lastFundingRate``, ``nextFundingTime``, ``time``).
* A bare JSON array of ``markPriceUpdate`` objects (the ``<pair>@markPrice``
  stream without the combined envelope) is split into one Funding each.
"""

from __future__ import annotations

from typing import Any

from connectors.exchanges.binance import (
    BinanceFuturesNormalizer,
    _expiry_ms,
    funding_rate,
    open_interest_time,
)
from connectors.instruments import Instrument, InstrumentBook, normalize_asset
from connectors.normalize import Ignored, Malformed, Normalized, require, to_epoch_us, to_float

#: Binance COIN-M contract sizes when a symbol is missing from the metadata file.
BTC_CONTRACT_USD = 100.0
OTHER_CONTRACT_USD = 10.0


def parse_coinm_symbol(symbol: str) -> Instrument | None:
    """BTCUSD_PERP -> inverse perpetual, BTCUSD_240329 -> inverse future (contracts in USD)."""
    pair, sep, suffix = symbol.partition("_")
    if not sep or not pair.endswith("USD") or len(pair) <= 3:
        return None
    if suffix == "PERP":
        kind, expiry = "perpetual", None
    elif len(suffix) == 6 and suffix.isdigit():
        try:
            kind, expiry = "future", _expiry_ms(suffix)
        except ValueError:
            return None
    else:
        return None
    base = normalize_asset(pair[:-3])
    size = BTC_CONTRACT_USD if base == "BTC" else OTHER_CONTRACT_USD
    return Instrument("binance-delivery", symbol, base, "USD", kind, expiry, size, True)


def _book_instruments(book: InstrumentBook) -> list[Instrument]:
    # the quarterly resolution needs the listing, and for an old day the quarterlies since expired
    return book.known()


class BinanceDeliveryNormalizer(BinanceFuturesNormalizer):
    venue = "binance-delivery"
    _premium_index_first = True

    def __init__(self, instruments: InstrumentBook | None = None) -> None:
        super().__init__(instruments or InstrumentBook.load(self.venue, parse_coinm_symbol))
        #: last mark price per symbol, for REST openInterest (contracts -> base units)
        self._last_mark: dict[str, float] = {}

    def normalize(self, msg: Any, received_at_us: int) -> list[Normalized]:
        if isinstance(msg, list):
            if not msg:
                raise Ignored("empty_list")
            if all(isinstance(m, dict) and m.get("e") == "markPriceUpdate" for m in msg):
                return [self._funding(m, received_at_us) for m in msg]
            if all(isinstance(m, dict) and "markPrice" in m and "symbol" in m for m in msg):
                return [self._premium_index(m, received_at_us) for m in msg]
            return self._open_interest_hist(msg, received_at_us)
        if isinstance(msg, dict) and "markPrice" in msg and "symbol" in msg and "e" not in msg:
            return [self._premium_index(msg, received_at_us)]
        return super().normalize(msg, received_at_us)

    def _funding(self, m: dict, received_at_us: int) -> Normalized:
        if m.get("T") not in (None, "", 0, "0"):  # validate before the parent's bare int()
            to_epoch_us(m["T"], "T", "funding")
        et, rec = super()._funding(m, received_at_us)
        self._last_mark[rec["symbol"]] = rec["mark_price"]
        return et, rec

    def _premium_index(self, m: dict, received_at_us: int) -> Normalized:
        et = "funding"
        inst = self._instrument(m.get("symbol"), et)
        mark = to_float(m["markPrice"], "markPrice", et, positive=True)
        nft = m.get("nextFundingTime")
        idx = m.get("indexPrice")
        self._last_mark[inst.symbol] = mark
        return et, {
            **inst.common_fields(),
            "event_time": to_epoch_us(require(m, "time", et), "time", et),
            "ingest_time": received_at_us,
            "mark_price": mark,
            "index_price": to_float(idx, "indexPrice", et) if idx not in (None, "") else None,
            # delivery contracts report lastFundingRate "" (or zero) and nextFundingTime 0: no funding
            "funding_rate": funding_rate(inst, m.get("lastFundingRate"), nft, "lastFundingRate"),
            "next_funding_time": to_epoch_us(nft, "nextFundingTime", et) // 1000 if nft not in (None, "", 0, "0") else None,
        }

    def _open_interest(self, m: dict, received_at_us: int) -> Normalized:
        et = "open_interest"
        inst = self._instrument(m["symbol"], et)
        contracts = to_float(m["openInterest"], "openInterest", et)
        if contracts < 0:
            raise Malformed("bad_value", f"openInterest={contracts} is negative", et)
        usd = contracts * inst.contract_value
        mark = self._last_mark.get(inst.symbol)
        if mark is None:
            raise Malformed("no_reference_price",
                            f"openInterest of {inst.symbol} is in contracts; no mark price seen yet to convert it", et)
        return et, {
            **inst.common_fields(),
            "event_time": open_interest_time(m, received_at_us),
            "ingest_time": received_at_us,
            "open_interest": usd / mark,
            "open_interest_usd": usd,
        }

    def _hist_instrument(self, row: dict, et: str) -> Instrument:
        if isinstance(row.get("symbol"), str):  # tolerate a USDⓈ-M-shaped row
            return self._instrument(row["symbol"], et)
        pair = row.get("pair")
        ctype = row.get("contractType")
        if not isinstance(pair, str) or not isinstance(ctype, str):
            raise Malformed("missing_field", "openInterestHist row needs pair and contractType", et)
        if ctype == "PERPETUAL":
            return self._instrument(f"{pair}_PERP", et)
        if ctype in ("CURRENT_QUARTER", "NEXT_QUARTER"):
            ts_ms = to_epoch_us(require(row, "timestamp", et), "timestamp", et) // 1000
            live = sorted(
                (i for i in _book_instruments(self.instruments) if i.kind == "future" and i.symbol.startswith(pair + "_")
                 and i.expiry_ms is not None and i.expiry_ms > ts_ms),
                key=lambda i: i.expiry_ms or 0,
            )
            n = 0 if ctype == "CURRENT_QUARTER" else 1
            if len(live) <= n:
                raise Malformed("unknown_symbol", f"no {ctype} future of {pair} live at {ts_ms} in the metadata", et)
            return live[n]
        raise Malformed("bad_value", f"contractType={ctype!r} is not PERPETUAL/CURRENT_QUARTER/NEXT_QUARTER", et)

    def _open_interest_hist(self, rows: list, received_at_us: int) -> list[Normalized]:
        et = "open_interest"
        out: list[Normalized] = []
        for row in rows:
            if not isinstance(row, dict):
                raise Malformed("bad_value", "openInterestHist row is not an object", et)
            inst = self._hist_instrument(row, et)
            contracts = to_float(require(row, "sumOpenInterest", et), "sumOpenInterest", et)
            base = to_float(require(row, "sumOpenInterestValue", et), "sumOpenInterestValue", et)
            if contracts < 0 or base < 0:
                raise Malformed("bad_value", "negative open interest", et)
            out.append((et, {
                **inst.common_fields(),
                "event_time": to_epoch_us(require(row, "timestamp", et), "timestamp", et),
                "ingest_time": received_at_us,
                "open_interest": base,
                "open_interest_usd": contracts * inst.contract_value,
            }))
        return out
