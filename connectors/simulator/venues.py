"""Venue wire formats: the simulator's messages, byte for byte the shape each venue sends.

Each writer turns model quantities (base units, USD prices, epoch ms) into the
JSON text of that venue's public feed, with the venue's own symbol, number
formatting (decimal strings), contract units and side conventions. Formats
follow the venues' public API docs field by field:

* binance-futures (USDⓈ-M, combined streams ``/stream?streams=``):
  ``<sym>@aggTrade``, ``<sym>@forceOrder`` (``o.S`` = SELL force-sells a long),
  ``<sym>@markPrice`` (``markPriceUpdate``); open interest is the REST
  ``GET /fapi/v1/openInterest`` payload ``{"openInterest","symbol","time"}``,
  polled (capture channel ``rest``).
* bybit (v5 public linear): ``publicTrade.<S>`` (``S`` = taker side),
  ``allLiquidation.<S>`` (``S`` = Buy means a **long** was liquidated, per the
  v5 docs), ``tickers.<S>`` (one ``snapshot`` then ``delta`` frames; every
  delta here carries the mark/index/funding/OI fields it updates).
* okx (v5 public): ``trades``, ``liquidation-orders`` (``instType`` SWAP,
  ``details[].posSide`` long/short, ``side`` sell closes a long),
  ``open-interest``, ``funding-rate``, ``mark-price``. ``sz`` / ``oi`` are in
  **contracts** of ``ctVal`` base units, taken from the bundled instrument
  metadata the OKX normalizer reads (so both sides agree).
* hyperliquid: ``trades`` (``side`` B/A = aggressor bought/sold, ``users`` =
  [buyer, seller]) and ``activeAssetCtx`` (no timestamp; ``funding`` is the
  hourly rate). Hyperliquid has no public market-wide liquidation channel: a
  liquidation is the liquidated account's ``userFills`` fill carrying a
  ``liquidation`` object (``liquidatedUser``, ``markPx``, ``method``), which
  is what ``connectors/exchanges/hyperliquid.py`` reads.

Every writer returns the USD value of what it wrote, computed from the
*rounded* numbers in the message, so the ground truth equals what a parser of
the raw messages recovers.
"""

from __future__ import annotations

import hashlib

from connectors.instruments import InstrumentBook
from connectors.simulator.scenarios import SymbolSpec

_HOUR_MS = 3_600_000
_EIGHT_H_MS = 8 * _HOUR_MS


def next_funding_ms(t_ms: int, period_ms: int = _EIGHT_H_MS) -> int:
    return (t_ms // period_ms + 1) * period_ms


def _digest(key: str, width: int) -> str:
    """Deterministic random-looking hex (ids, addresses, tx hashes) of ``width`` digits."""
    return hashlib.sha256(key.encode()).hexdigest()[:width]


class VenueWriter:
    """Base: per-symbol formatting state and id counters."""

    venue = ""

    def __init__(self, symbols: tuple[SymbolSpec, ...], venue_index: int) -> None:
        self.symbols = symbols
        self.vi = venue_index
        self.pdec = [s.price_decimals for s in symbols]
        self.qdec = [s.qty_decimals for s in symbols]
        self.trade_id = [(venue_index + 1) * 1_000_000_000 + i * 50_000_000 for i in range(len(symbols))]

    def lists(self, s: int) -> bool:
        """Whether the venue lists symbol ``s`` (a venue without it gets no share of it)."""
        return True

    def instrument(self, s: int) -> tuple[str, str]:
        """(the venue's symbol, the normalized quote) of symbol ``s``'s perpetual, as the venue's
        normalizer names it (the identity of the simulator's book_depth records)."""
        return self.sym[s], "USDT"

    def _px(self, s: int, p: float) -> str:
        return f"{p:.{self.pdec[s]}f}"

    # (channel, raw text) pairs; channel is "ws" or "rest"
    def trade(self, s: int, t_ms: int, price: float, qty: float, taker_buy: bool) -> str | None:
        raise NotImplementedError

    def liquidation(self, s: int, t_ms: int, price: float, qty: float, long: bool) -> tuple[str, float, float] | None:
        """-> (raw, base qty written, USD written) or None if the size rounds to zero."""
        raise NotImplementedError

    def snapshots(self, s: int, t_ms: int, mark: float, index: float, funding_8h: float,
                  oi_base: float) -> tuple[list[tuple[str, str]], float, float]:
        """OI + mark/funding messages -> (messages, OI base written, OI USD at mark)."""
        raise NotImplementedError

    def marks(self, s: int, t_ms: int, mark: float, index: float, funding_8h: float) -> list[tuple[str, str]]:
        raise NotImplementedError


class BinanceFuturesWriter(VenueWriter):
    venue = "binance-futures"

    def __init__(self, symbols: tuple[SymbolSpec, ...], venue_index: int) -> None:
        super().__init__(symbols, venue_index)
        self.sym = [f"{s.base}USDT" for s in symbols]
        self.low = [x.lower() for x in self.sym]
        self.first_id = [i * 10 for i in self.trade_id]  # aggTrade f/l: underlying trade ids

    def trade(self, s: int, t_ms: int, price: float, qty: float, taker_buy: bool) -> str | None:
        q = round(qty, self.qdec[s])
        if q <= 0:
            return None
        a = self.trade_id[s] = self.trade_id[s] + 1
        f = self.first_id[s] + 1
        n = 1 + (a % 3)
        self.first_id[s] = last = f + n - 1
        # m = buyer is the maker, i.e. the taker sold
        m = "false" if taker_buy else "true"
        return (f'{{"stream":"{self.low[s]}@aggTrade","data":{{"e":"aggTrade","E":{t_ms + 2},"s":"{self.sym[s]}",'
                f'"a":{a},"p":"{self._px(s, price)}","q":"{q:.{self.qdec[s]}f}","f":{f},"l":{last},'
                f'"T":{t_ms},"m":{m}}}}}')

    def liquidation(self, s: int, t_ms: int, price: float, qty: float, long: bool) -> tuple[str, float, float] | None:
        q = round(qty, self.qdec[s])
        if q <= 0:
            return None
        ap = round(price, self.pdec[s])
        # order price p is the bankruptcy-side limit; fills happen at the average price ap
        p = price * (0.995 if long else 1.005)
        qs = f"{q:.{self.qdec[s]}f}"
        raw = (f'{{"stream":"{self.low[s]}@forceOrder","data":{{"e":"forceOrder","E":{t_ms + 3},"o":{{'
               f'"s":"{self.sym[s]}","S":"{"SELL" if long else "BUY"}","o":"LIMIT","f":"IOC","q":"{qs}",'
               f'"p":"{self._px(s, p)}","ap":"{self._px(s, ap)}","X":"FILLED","l":"{qs}","z":"{qs}","T":{t_ms}}}}}}}')
        return raw, q, q * ap

    def marks(self, s: int, t_ms: int, mark: float, index: float, funding_8h: float) -> list[tuple[str, str]]:
        return [("ws", f'{{"stream":"{self.low[s]}@markPrice","data":{{"e":"markPriceUpdate","E":{t_ms},'
                       f'"s":"{self.sym[s]}","p":"{mark:.8f}","i":"{index:.8f}","P":"{mark * 1.0002:.8f}",'
                       f'"r":"{funding_8h:.8f}","T":{next_funding_ms(t_ms)}}}}}')]

    def snapshots(self, s: int, t_ms: int, mark: float, index: float, funding_8h: float,
                  oi_base: float) -> tuple[list[tuple[str, str]], float, float]:
        q = round(oi_base, self.qdec[s])
        rest = f'{{"openInterest":"{q:.{self.qdec[s]}f}","symbol":"{self.sym[s]}","time":{t_ms}}}'
        return [("rest", rest)], q, q * mark


class BybitWriter(VenueWriter):
    venue = "bybit"

    def __init__(self, symbols: tuple[SymbolSpec, ...], venue_index: int) -> None:
        super().__init__(symbols, venue_index)
        self.sym = [f"{s.base}USDT" for s in symbols]
        self.seq = [50_000_000_000 + i * 1_000_000_000 for i in range(len(symbols))]
        self.cs = [20_000_000_000 + i * 1_000_000_000 for i in range(len(symbols))]
        self.last_px = [0.0] * len(symbols)
        self.uuid_prefix = []
        for i in range(len(symbols)):
            x = _digest(f"bybit-uuid-{i}", 20)
            self.uuid_prefix.append(f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-")
        self.ticker_started = [False] * len(symbols)

    def _uuid(self, n: int, s: int) -> str:
        # UUID-shaped trade id: a per-symbol random-looking prefix + the counter (cheap to format)
        return f"{self.uuid_prefix[s]}{n & 0xFFFFFFFFFFFF:012x}"

    def trade(self, s: int, t_ms: int, price: float, qty: float, taker_buy: bool) -> str | None:
        q = round(qty, self.qdec[s])
        if q <= 0:
            return None
        n = self.trade_id[s] = self.trade_id[s] + 1
        self.seq[s] += 1
        px = round(price, self.pdec[s])
        tick = "PlusTick" if px > self.last_px[s] else "MinusTick" if px < self.last_px[s] else "ZeroPlusTick"
        self.last_px[s] = px
        return (f'{{"topic":"publicTrade.{self.sym[s]}","type":"snapshot","ts":{t_ms + 3},"data":[{{'
                f'"T":{t_ms},"s":"{self.sym[s]}","S":"{"Buy" if taker_buy else "Sell"}",'
                f'"v":"{q:.{self.qdec[s]}f}","p":"{px:.{self.pdec[s]}f}","L":"{tick}",'
                f'"i":"{self._uuid(n, s)}","BT":false,"RPI":false,"seq":{self.seq[s]}}}]}}')

    def liquidation(self, s: int, t_ms: int, price: float, qty: float, long: bool) -> tuple[str, float, float] | None:
        q = round(qty, self.qdec[s])
        if q <= 0:
            return None
        px = round(price, self.pdec[s])
        raw = (f'{{"topic":"allLiquidation.{self.sym[s]}","type":"snapshot","ts":{t_ms + 5},"data":[{{'
               f'"T":{t_ms},"s":"{self.sym[s]}","S":"{"Buy" if long else "Sell"}",'
               f'"v":"{q:.{self.qdec[s]}f}","p":"{px:.{self.pdec[s]}f}"}}]}}')
        return raw, q, q * px

    def marks(self, s: int, t_ms: int, mark: float, index: float, funding_8h: float) -> list[tuple[str, str]]:
        return []  # mark and funding travel in the tickers frame written with the OI

    def snapshots(self, s: int, t_ms: int, mark: float, index: float, funding_8h: float,
                  oi_base: float) -> tuple[list[tuple[str, str]], float, float]:
        q = round(oi_base, self.qdec[s])
        pd = self.pdec[s]
        value = q * mark
        self.cs[s] += 7
        common = (f'"symbol":"{self.sym[s]}","markPrice":"{mark:.{pd}f}","indexPrice":"{index:.{pd}f}",'
                  f'"openInterest":"{q:.{self.qdec[s]}f}","openInterestValue":"{value:.2f}",'
                  f'"nextFundingTime":"{next_funding_ms(t_ms)}","fundingRate":"{funding_8h:.6f}"')
        if not self.ticker_started[s]:
            self.ticker_started[s] = True
            last = mark
            data = (f'{{{common},"tickDirection":"ZeroPlusTick","price24hPcnt":"0","lastPrice":"{last:.{pd}f}",'
                    f'"prevPrice24h":"{last:.{pd}f}","highPrice24h":"{last:.{pd}f}","lowPrice24h":"{last:.{pd}f}",'
                    f'"prevPrice1h":"{last:.{pd}f}","turnover24h":"0","volume24h":"0",'
                    f'"bid1Price":"{last:.{pd}f}","bid1Size":"1","ask1Price":"{last:.{pd}f}","ask1Size":"1"}}')
            kind = "snapshot"
        else:
            data = f'{{{common},"lastPrice":"{mark:.{pd}f}"}}'
            kind = "delta"
        raw = (f'{{"topic":"tickers.{self.sym[s]}","type":"{kind}","data":{data},'
               f'"cs":{self.cs[s]},"ts":{t_ms}}}')
        # mark derived value uses the rounded quantity and the written mark
        return [("ws", raw)], q, q * float(f"{mark:.{pd}f}")


class OkxWriter(VenueWriter):
    venue = "okx"

    def __init__(self, symbols: tuple[SymbolSpec, ...], venue_index: int) -> None:
        super().__init__(symbols, venue_index)
        self.inst = [f"{s.base}-USDT-SWAP" for s in symbols]
        self.family = [f"{s.base}-USDT" for s in symbols]
        book = InstrumentBook.load("okx")
        # contract size from the same bundled metadata the OKX normalizer uses
        self.ct_val = []
        self.listed = []
        for name in self.inst:
            meta = book.get(name)
            self.ct_val.append(meta.contract_value if meta is not None else 1.0)
            # without bundled contract metadata the normalizer cannot size the contracts:
            # such a symbol is not simulated on OKX (its share goes to the other venues)
            self.listed.append(meta is not None)

        self.seq = [1_000_000_000 + i * 100_000_000 for i in range(len(symbols))]

    def lists(self, s: int) -> bool:
        return self.listed[s]

    def instrument(self, s: int) -> tuple[str, str]:
        return self.inst[s], "USDT"

    def _contracts(self, s: int, qty: float) -> float:
        return round(qty / self.ct_val[s], 2)

    def trade(self, s: int, t_ms: int, price: float, qty: float, taker_buy: bool) -> str | None:
        c = self._contracts(s, qty)
        if c <= 0:
            return None
        n = self.trade_id[s] = self.trade_id[s] + 1
        self.seq[s] += 1
        return (f'{{"arg":{{"channel":"trades","instId":"{self.inst[s]}"}},"data":[{{"instId":"{self.inst[s]}",'
                f'"tradeId":"{n}","px":"{self._px(s, price)}","sz":"{c:.2f}","side":"{"buy" if taker_buy else "sell"}",'
                f'"ts":"{t_ms}","count":"1","source":"0","seqId":{self.seq[s]}}}]}}')

    def liquidation(self, s: int, t_ms: int, price: float, qty: float, long: bool) -> tuple[str, float, float] | None:
        c = self._contracts(s, qty)
        if c <= 0:
            return None
        px = round(price, self.pdec[s])
        raw = (f'{{"arg":{{"channel":"liquidation-orders","instType":"SWAP"}},"data":[{{"details":[{{'
               f'"bkLoss":"0","bkPx":"{px:.{self.pdec[s]}f}","ccy":"","posSide":"{"long" if long else "short"}",'
               f'"side":"{"sell" if long else "buy"}","sz":"{c:.2f}","ts":"{t_ms}"}}],'
               f'"instFamily":"{self.family[s]}","instId":"{self.inst[s]}","instType":"SWAP","uly":"{self.family[s]}"}}]}}')
        base = c * self.ct_val[s]
        return raw, base, base * px

    def marks(self, s: int, t_ms: int, mark: float, index: float, funding_8h: float) -> list[tuple[str, str]]:
        pd = self.pdec[s]
        nft = next_funding_ms(t_ms)
        funding = (f'{{"arg":{{"channel":"funding-rate","instId":"{self.inst[s]}"}},"data":[{{'
                   f'"formulaType":"withRate","fundingRate":"{funding_8h:.16f}","fundingTime":"{nft}",'
                   f'"impactValue":"","instId":"{self.inst[s]}","instType":"SWAP","interestRate":"0.0001",'
                   f'"maxFundingRate":"0.0075","method":"current_period","minFundingRate":"-0.0075",'
                   f'"nextFundingRate":"","nextFundingTime":"{nft + _EIGHT_H_MS}",'
                   f'"premium":"{(mark - index) / index:.16f}","settFundingRate":"{funding_8h:.16f}",'
                   f'"settState":"settled","ts":"{t_ms}"}}]}}')
        mark_px = (f'{{"arg":{{"channel":"mark-price","instId":"{self.inst[s]}"}},"data":[{{'
                   f'"instType":"SWAP","instId":"{self.inst[s]}","markPx":"{mark:.{pd + 1}f}","ts":"{t_ms}"}}]}}')
        return [("ws", mark_px), ("ws", funding)]

    def snapshots(self, s: int, t_ms: int, mark: float, index: float, funding_8h: float,
                  oi_base: float) -> tuple[list[tuple[str, str]], float, float]:
        c = self._contracts(s, oi_base)
        base = c * self.ct_val[s]
        usd = base * mark
        raw = (f'{{"arg":{{"channel":"open-interest","instId":"{self.inst[s]}"}},"data":[{{'
               f'"instId":"{self.inst[s]}","instType":"SWAP","oi":"{c:.2f}","oiCcy":"{base:.{self.qdec[s] + 2}f}",'
               f'"oiUsd":"{usd:.2f}","ts":"{t_ms}"}}]}}')
        return [("ws", raw)], base, usd


class HyperliquidWriter(VenueWriter):
    venue = "hyperliquid"
    #: Hyperliquid sizes: szDecimals of the perps (BTC 5, ETH 4, SOL 2, ...), capped by our lot
    _SZ_DECIMALS = {"BTC": 5, "ETH": 4, "SOL": 2, "XRP": 0, "DOGE": 0, "BNB": 3, "AVAX": 2, "LINK": 1}

    def __init__(self, symbols: tuple[SymbolSpec, ...], venue_index: int) -> None:
        super().__init__(symbols, venue_index)
        self.coin = [s.base for s in symbols]
        self.qdec = [self._SZ_DECIMALS.get(s.base, s.qty_decimals) for s in symbols]
        self.oid = [90_000_000_000 + i * 1_000_000_000 for i in range(len(symbols))]
        self.n_user = 0
        # a pool of trader addresses (formatting a fresh 160-bit address per trade is slow)
        self.addresses = ["0x" + _digest(f"hl-trader-{j}", 40) for j in range(4096)]
        self.hash_prefix = ["0x" + _digest(f"hl-tx-{i}", 48) for i in range(len(symbols))]

    def instrument(self, s: int) -> tuple[str, str]:
        return self.coin[s], "USDC"

    def _addr(self, n: int) -> str:
        return self.addresses[(n * 2654435761) & 4095]

    def _hash(self, n: int, s: int) -> str:
        return f"{self.hash_prefix[s]}{n & 0xFFFFFFFFFFFFFFFF:016x}"

    def trade(self, s: int, t_ms: int, price: float, qty: float, taker_buy: bool) -> str | None:
        q = round(qty, self.qdec[s])
        if q <= 0:
            return None
        n = self.trade_id[s] = self.trade_id[s] + 1
        return (f'{{"channel":"trades","data":[{{"coin":"{self.coin[s]}","side":"{"B" if taker_buy else "A"}",'
                f'"px":"{self._px(s, price)}","sz":"{q:.{self.qdec[s]}f}","hash":"{self._hash(n, s)}",'
                f'"time":{t_ms},"tid":{n},"users":["{self._addr(2 * n)}","{self._addr(2 * n + 1)}"]}}]}}')

    def liquidation(self, s: int, t_ms: int, price: float, qty: float, long: bool) -> tuple[str, float, float] | None:
        q = round(qty, self.qdec[s])
        if q <= 0:
            return None
        px = round(price, self.pdec[s])
        self.n_user += 1
        user = "0x" + _digest(f"hl-liquidated-{self.n_user}", 40)
        n = self.trade_id[s] = self.trade_id[s] + 1
        self.oid[s] += 1
        pxs = f"{px:.{self.pdec[s]}f}"
        # the liquidated account's own fill: a sell (A) closes its long, a buy (B) its short
        side, direction = ("A", "Close Long") if long else ("B", "Close Short")
        start = f"{q:.{self.qdec[s]}f}" if long else f"-{q:.{self.qdec[s]}f}"
        raw = (f'{{"channel":"userFills","data":{{"isSnapshot":false,"user":"{user}","fills":[{{'
               f'"coin":"{self.coin[s]}","px":"{pxs}","sz":"{q:.{self.qdec[s]}f}","side":"{side}","time":{t_ms},'
               f'"startPosition":"{start}","dir":"{direction}","closedPnl":"-{q * px * 0.01:.2f}",'
               f'"hash":"{self._hash(n, s)}","oid":{self.oid[s]},"crossed":true,"fee":"{q * px * 0.00045:.6f}",'
               f'"tid":{n},"liquidation":{{"liquidatedUser":"{user}","markPx":"{pxs}","method":"market"}},'
               f'"feeToken":"USDC"}}]}}}}')
        return raw, q, q * px

    def marks(self, s: int, t_ms: int, mark: float, index: float, funding_8h: float) -> list[tuple[str, str]]:
        return []  # activeAssetCtx carries mark, oracle, funding and OI together

    def snapshots(self, s: int, t_ms: int, mark: float, index: float, funding_8h: float,
                  oi_base: float) -> tuple[list[tuple[str, str]], float, float]:
        q = round(oi_base, self.qdec[s])
        pd = self.pdec[s]
        mk = float(f"{mark:.{pd}f}")
        raw = (f'{{"channel":"activeAssetCtx","data":{{"coin":"{self.coin[s]}","ctx":{{'
               f'"dayNtlVlm":"0.0","prevDayPx":"{mark:.{pd}f}","markPx":"{mk:.{pd}f}","midPx":"{mark:.{pd}f}",'
               f'"funding":"{funding_8h / 8:.10f}","openInterest":"{q:.{self.qdec[s]}f}",'
               f'"oraclePx":"{index:.{pd}f}","premium":"{(mark - index) / index:.8f}",'
               f'"impactPxs":["{mark * 0.9999:.{pd}f}","{mark * 1.0001:.{pd}f}"],"dayBaseVlm":"0.0"}}}}}}')
        return [("ws", raw)], q, q * mk


WRITERS: dict[str, type[VenueWriter]] = {
    w.venue: w for w in (BinanceFuturesWriter, BybitWriter, OkxWriter, HyperliquidWriter)
}
