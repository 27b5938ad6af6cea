"""Local order books and their depth bands: the venues' book channels -> ``book_depth`` records (ADR 025).

A venue normalizer hands each order-book message to its venue's handler here. The handler keeps one
:class:`LocalBook` per instrument, follows the venue's documented sync rules (snapshot, deltas,
sequence ids, checksum) and, at most once per :attr:`BookConfig.depth_interval_s` slot of event time,
turns the book into a ``book_depth.v1`` record (schemas/book_depth.v1.avsc): resting USD within
10/50/100/200 bp of the mid per side, null where the book view does not reach the band.

Throttle: the record of a slot is the LAST book state in it. A slot is known to be over when the
instrument's first message of a later slot arrives, so that message's outcome carries the record
(computed before the message is applied); its ``ingest_time`` is that message's receive time. A
record whose carrier message is dead-lettered waits for the next book message of the venue that
gives records. At the end of a replay, the open slot of each
instrument is not emitted (nothing closes it).

What cannot be trusted is never emitted: a sequence gap, an out-of-sequence update, a crossed book
or a checksum mismatch is a dead letter (``book_depth.v1.dlq``) with the reason below, and a gap,
crossed book or mismatch drops the book into resync: its updates are ignored
(``book_resyncing``; Binance buffers them, ``book_buffered``) until a snapshot rebuilds it, and the
slot in progress is lost. Snapshots: OKX, Bybit and Deribit send one after each (re)subscribe, the
live client's reconnect; Binance's come from the REST depth poll (connectors/sources/live/poller.py).

Dead-letter reasons: ``book_gap`` (an update does not follow the last one applied: the book
resyncs), ``book_out_of_sequence`` (an update older than or equal to the book: dropped, the book
stays), ``book_crossed`` (best bid >= best ask after applying: resync),
``book_checksum_mismatch`` (OKX CRC32 differs: resync), plus the usual ``bad_value`` /
``missing_field`` / ``unknown_symbol`` of a message that cannot be read.

USD: a level's USD is what the venue's trade normalizer gives a trade of that size at that price
(:meth:`connectors.instruments.Instrument.to_base_and_usd`): linear ``price x qty x contract value``,
inverse ``qty x contract value`` (face value). Deribit amounts are USD (inverse) or coins (linear),
as in its trades.
"""

from __future__ import annotations

import heapq
import math
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from connectors.config import env_overrides
from connectors.instruments import Instrument
from connectors.normalize import Ignored, Malformed, Normalized, to_epoch_us

ET = "book_depth"
#: the bands of the schema, in basis points of the mid
BANDS_BP = (10, 50, 100, 200)
#: OKX's checksum covers the best 25 levels of each side (docs: "Checksum")
OKX_CHECKSUM_LEVELS = 25


@dataclass(frozen=True)
class BookConfig:
    """Book-depth settings; each overridable as ``LIQSTREAM_BOOK_<FIELD>`` (e.g. ``LIQSTREAM_BOOK_DEPTH_INTERVAL_S``)."""

    #: at most one record per instrument per this many seconds of event time (the last state in the slot)
    depth_interval_s: float = 1.0
    #: Binance diff-depth events kept per symbol while it waits for a REST snapshot (oldest dropped)
    binance_buffer_max: int = 2000

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> BookConfig:
        cfg = cls(**env_overrides(cls, "LIQSTREAM_BOOK_", environ))
        if not cfg.depth_interval_s > 0 or cfg.binance_buffer_max < 1:
            raise ValueError(f"invalid book config {cfg}")
        return cfg


@cache
def book_config() -> BookConfig:
    """The process's book settings (from the environment, read once)."""
    return BookConfig.from_env()


def _level(row: Any) -> tuple[float, float]:
    """``[price, size, ...]`` (strings or numbers) -> (price, size); price > 0, size >= 0, finite."""
    try:
        px = float(row[0])
        qty = float(row[1])
    except (TypeError, ValueError, IndexError, KeyError, OverflowError):
        raise Malformed("bad_value", f"book level {str(row)[:80]} is not [price, size]", ET) from None
    if not (0.0 < px < math.inf and 0.0 <= qty < math.inf):
        raise Malformed("bad_value", f"book level {str(row)[:80]} has a price <= 0 or a negative/non-finite size", ET)
    return px, qty


def _levels(rows: Any, name: str) -> list[tuple[float, float]]:
    if rows is None:
        return []
    if not isinstance(rows, list):
        raise Malformed("bad_value", f"{name!r} is not a list of levels", ET)
    return [_level(r) for r in rows]


def signed_crc32(text: str) -> int:
    """CRC32 of ``text`` as the signed 32-bit integer OKX sends."""
    v = zlib.crc32(text.encode())
    return v - (1 << 32) if v >= 1 << 31 else v


def okx_checksum_text(bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> str:
    """OKX's check string: best bid, best ask, 2nd bid, 2nd ask ... (25 each), ``price:size`` joined by ``:``;
    where one side is shorter the other's levels follow alone. ``bids``/``asks`` best first, as sent."""
    parts: list[str] = []
    for i in range(max(len(bids), len(asks))):
        if i < len(bids):
            parts.append(f"{bids[i][0]}:{bids[i][1]}")
        if i < len(asks):
            parts.append(f"{asks[i][0]}:{asks[i][1]}")
    return ":".join(parts)


class LocalBook:
    """One instrument's book: price -> size per side (dicts; sorted only to compute the bands)."""

    __slots__ = ("inst", "usd_mult", "inverse", "bids", "asks", "best_bid", "best_ask", "synced", "seq",
                 "event_us", "dirty", "text_bids", "text_asks")

    def __init__(self, inst: Instrument, usd_mult: float, inverse: bool, keep_text: bool = False) -> None:
        self.inst = inst
        #: level USD = qty * usd_mult (inverse) or price * qty * usd_mult (linear)
        self.usd_mult = usd_mult
        self.inverse = inverse
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.best_bid: float | None = None
        self.best_ask: float | None = None
        self.synced = False
        self.seq: Any = None  # the venue's last applied sequence id
        self.event_us = 0
        self.dirty = False  # holds a state not yet emitted
        # OKX: the venue's own price and size text per level, for the checksum
        self.text_bids: dict[float, tuple[str, str]] | None = {} if keep_text else None
        self.text_asks: dict[float, tuple[str, str]] | None = {} if keep_text else None

    def reset(self) -> None:
        """Forget everything: the book waits for a snapshot (resync); the slot in progress is lost."""
        self.bids.clear()
        self.asks.clear()
        if self.text_bids is not None:
            self.text_bids.clear()
            self.text_asks.clear()  # type: ignore[union-attr]
        self.best_bid = self.best_ask = None
        self.synced = False
        self.seq = None
        self.dirty = False

    def load(self, bids: Iterable[tuple[float, float]], asks: Iterable[tuple[float, float]]) -> None:
        """Replace the book by a snapshot (zero sizes skipped)."""
        self.reset()
        self.bids.update((p, q) for p, q in bids if q > 0)
        self.asks.update((p, q) for p, q in asks if q > 0)
        self.best_bid = max(self.bids) if self.bids else None
        self.best_ask = min(self.asks) if self.asks else None
        self.synced = True

    def set_bid(self, px: float, qty: float) -> None:
        if qty > 0:
            self.bids[px] = qty
            if self.best_bid is None or px > self.best_bid:
                self.best_bid = px
        elif self.bids.pop(px, None) is not None and px == self.best_bid:
            # deleting a level the book does not hold is normal (Binance docs, step 9)
            self.best_bid = max(self.bids) if self.bids else None

    def set_ask(self, px: float, qty: float) -> None:
        if qty > 0:
            self.asks[px] = qty
            if self.best_ask is None or px < self.best_ask:
                self.best_ask = px
        elif self.asks.pop(px, None) is not None and px == self.best_ask:
            self.best_ask = min(self.asks) if self.asks else None

    def crossed(self) -> bool:
        return self.best_bid is not None and self.best_ask is not None and self.best_bid >= self.best_ask

    def depth_record(self) -> dict[str, Any] | None:
        """The ``book_depth`` record of the current state; None when a side is empty (no mid)."""
        bb, ba = self.best_bid, self.best_ask
        if bb is None or ba is None:
            return None
        mid = (bb + ba) / 2
        # ingest_time: set when the record is handed out (DepthTracker.out), to the receive time of the message it
        # goes out with: the record exists from then on, and it is that message's outcome (replay's accounting)
        rec: dict[str, Any] = {**self.inst.common_fields(), "event_time": self.event_us, "ingest_time": 0,
                               "best_bid": bb, "best_ask": ba}
        for side, levels, sign in (("bid", self.bids, 1.0), ("ask", self.asks, -1.0)):
            s10 = s50 = s100 = s200 = 0.0
            reach = 0.0
            inverse = self.inverse
            for px, qty in levels.items():
                d = sign * (mid - px) / mid * 1e4  # distance from the mid in bp, >= 0 on an uncrossed book
                amount = qty if inverse else px * qty
                if d <= 200.0:
                    s200 += amount
                    if d <= 100.0:
                        s100 += amount
                        if d <= 50.0:
                            s50 += amount
                            if d <= 10.0:
                                s10 += amount
                if d > reach:
                    reach = d
            m = self.usd_mult
            rec[f"{side}_reach_bp"] = reach
            for band, total in zip(BANDS_BP, (s10, s50, s100, s200), strict=True):
                rec[f"{side}_usd_{band}bp"] = total * m if reach >= band else None
        rec["levels"] = len(self.bids) + len(self.asks)
        return rec


class DepthTracker:
    """The books of one venue normalizer and the slot throttle; venue handlers build on it."""

    def __init__(self, config: BookConfig | None = None) -> None:
        self.config = config or book_config()
        self.interval_us = max(1, int(self.config.depth_interval_s * 1_000_000))
        self.books: dict[str, LocalBook] = {}
        #: records of closed slots not yet handed out (their carrier message was dead-lettered)
        self.ready: list[Normalized] = []

    def book(self, inst: Instrument, usd_mult: float | None = None, inverse: bool | None = None,
             keep_text: bool = False) -> LocalBook:
        b = self.books.get(inst.symbol)
        if b is None:
            b = self.books[inst.symbol] = LocalBook(
                inst, inst.contract_value if usd_mult is None else usd_mult,
                inst.inverse if inverse is None else inverse, keep_text)
        return b

    def close_slot(self, book: LocalBook, event_us: int) -> None:
        """Before applying a message stamped ``event_us``: emit the book's last state if its slot is over."""
        if book.dirty and book.synced and event_us // self.interval_us > book.event_us // self.interval_us:
            rec = book.depth_record()
            if rec is not None:
                self.ready.append((ET, rec))
            book.dirty = False

    def applied(self, book: LocalBook, event_us: int) -> None:
        """After applying a message: the book's state is now that of ``event_us``; a crossed book resyncs."""
        if book.crossed():
            bb, ba = book.best_bid, book.best_ask
            self.fail(book, "book_crossed", f"{book.inst.symbol}: best bid {bb} >= best ask {ba} after the update")
        if event_us > book.event_us or not book.dirty:
            book.event_us = event_us
        book.dirty = True

    def fail(self, book: LocalBook, reason: str, detail: str, event_us: int | None = None) -> None:
        """Dead-letter the message and drop the book into resync. ``event_us``: the message's time, when the
        state before it is sound (a gap): a slot it closes still goes out."""
        if event_us is not None:
            self.close_slot(book, event_us)
        book.reset()
        raise Malformed(reason, detail, ET)

    def check_follows(self, book: LocalBook, seq: int, prev: int | None, what: str, event_us: int) -> None:
        """Before a delta ``seq`` that says it follows ``prev`` (None: unchecked): a book in resync ignores it; one
        older than the book is ``book_out_of_sequence`` (dropped, the book kept); any other break is
        ``book_gap`` (the book resyncs)."""
        if not book.synced:
            raise Ignored("book_resyncing")
        if prev is None or prev == book.seq:
            return
        sym = book.inst.symbol
        if seq <= book.seq and prev < book.seq:
            raise Malformed("book_out_of_sequence", f"{sym}: {what}={seq} is not after the book's {book.seq}", ET)
        self.fail(book, "book_gap", f"{sym}: {what}={seq} follows {prev} but the book is at {book.seq}", event_us)

    def out(self, received_us: int, reason: str = "book_throttled") -> list[Normalized]:
        """The records ready to go out, stamped with the receive time of the message they go out with; or
        Ignored(reason) when none is (the state waits in its slot)."""
        if not self.ready:
            raise Ignored(reason)
        out, self.ready = self.ready, []
        for _, rec in out:
            rec["ingest_time"] = received_us
        return out

    def snapshot(self, book: LocalBook, bids: list, asks: list, event_us: int, seq: Any) -> None:
        self.close_slot(book, event_us)
        book.load(bids, asks)
        book.seq = seq
        self.applied(book, event_us)

    def deltas(self, book: LocalBook, bids: list, asks: list, event_us: int, seq: Any) -> None:
        self.close_slot(book, event_us)
        for px, qty in bids:
            book.set_bid(px, qty)
        for px, qty in asks:
            book.set_ask(px, qty)
        book.seq = seq
        self.applied(book, event_us)


Lookup = Callable[[Any], Instrument]


def _int(value: Any, name: str) -> int:
    if value.__class__ is int:
        return value
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise Malformed("bad_value" if value is not None else "missing_field", f"{name}={value!r} is not an integer", ET) \
            from None


def _time_us(value: Any, name: str, unit: str = "ms") -> int:
    return to_epoch_us(value, name, ET, unit=unit)


# --------------------------------------------------------------------------- Binance


class BinanceBooks(DepthTracker):
    """Binance USDⓈ-M / COIN-M books (developers.binance.com, "How to manage a local order book correctly").

    Diff depth (``<symbol>@depth``, ``@depth@100ms``/``@500ms``; ``depthUpdate`` with ``U``/``u``/``pu``):
    events are buffered until a REST snapshot (``GET /fapi/v1/depth`` / ``/dapi/v1/depth``:
    ``lastUpdateId``) arrives; events with ``u`` < lastUpdateId are dropped, the first applied one must
    have ``U`` <= lastUpdateId <= ``u``, or ``pu`` == lastUpdateId (the snapshot's id was the end of an
    event: futures ids are not contiguous across events), else the snapshot is too old: wait for the
    next one (a buffered event) or ``book_gap`` (an event after the sync), and each
    later event's ``pu`` must be the previous ``u`` (else ``book_gap``: resync from the next snapshot).
    Partial depth (``@depth5``/``@depth10``/``@depth20``, told apart by the combined stream's name) is
    a full snapshot of the top levels each push. Event time ``T`` (transaction time), else ``E``.
    A USDⓈ-M REST snapshot has no symbol: the live poller adds ``"symbol"`` (COIN-M's has it).
    """

    def __init__(self, lookup: Lookup, config: BookConfig | None = None) -> None:
        super().__init__(config)
        self.lookup = lookup
        self.buffers: dict[str, deque] = {}
        #: symbol -> lastUpdateId of a loaded snapshot whose first event has not come yet
        self.awaiting: dict[str, int] = {}

    @staticmethod
    def _event_us(m: dict, received_us: int) -> int:
        t = m.get("T") or m.get("E")
        return received_us if t is None else _time_us(t, "T")

    def depth_update(self, m: dict, stream: str | None, received_us: int) -> list[Normalized]:
        inst = self.lookup(m.get("s"))
        book = self.book(inst)
        event_us = self._event_us(m, received_us)
        if stream is not None and ("@depth5" in stream or "@depth10" in stream or "@depth20" in stream):
            self.snapshot(book, _levels(m.get("b"), "b"), _levels(m.get("a"), "a"), event_us, None)
            return self.out(received_us)
        pu = m.get("pu")  # COIN-M and USDⓈ-M send it; a stream without it is checked by U/u alone
        ev = (_int(m.get("U"), "U"), _int(m.get("u"), "u"), None if pu is None else _int(pu, "pu"),
              _levels(m.get("b"), "b"),
              _levels(m.get("a"), "a"), event_us)
        if not book.synced:
            buf = self.buffers.get(inst.symbol)
            if buf is None:
                buf = self.buffers[inst.symbol] = deque(maxlen=self.config.binance_buffer_max)
            buf.append(ev)
            raise Ignored("book_buffered")
        self._apply(book, ev, received_us)
        return self.out(received_us)

    def _apply(self, book: LocalBook, ev: tuple, received_us: int) -> None:
        first_u, last_u, pu, bids, asks, event_us = ev
        sym = book.inst.symbol
        awaiting = self.awaiting.get(sym)
        if awaiting is not None:
            if last_u < awaiting:
                raise Ignored("book_stale_update")  # older than the snapshot: dropped (step 4)
            if first_u > awaiting and pu != awaiting:
                self.awaiting.pop(sym)
                self.close_slot(book, event_us)
                self._resync(book, ev)
                raise Malformed("book_gap", f"{sym}: first event U={first_u} is after the snapshot's "
                                f"lastUpdateId={awaiting}: updates in between are missing", ET)
            self.awaiting.pop(sym)
        elif pu is not None and pu != book.seq:
            if last_u <= book.seq:
                raise Malformed("book_out_of_sequence", f"{sym}: u={last_u} is not after the book's u={book.seq}", ET)
            seq = book.seq
            self.close_slot(book, event_us)
            self._resync(book, ev)
            raise Malformed("book_gap", f"{sym}: pu={pu} but the last applied u={seq}", ET)
        self.deltas(book, bids, asks, event_us, last_u)

    def _resync(self, book: LocalBook, ev: tuple) -> None:
        """Drop the book; the event that broke it starts the buffer the next snapshot syncs from."""
        book.reset()
        buf = self.buffers[book.inst.symbol] = deque(maxlen=self.config.binance_buffer_max)
        buf.append(ev)

    def rest_snapshot(self, m: dict, received_us: int) -> list[Normalized]:
        """A REST depth snapshot ``{"lastUpdateId", "bids", "asks", "E"?, "T"?, "symbol"}``."""
        inst = self.lookup(m.get("symbol"))
        book = self.book(inst)
        last_id = _int(m.get("lastUpdateId"), "lastUpdateId")
        if book.synced:
            raise Ignored("book_snapshot_unused")  # the book is in sync: the poll's snapshot is not needed
        buf = self.buffers.get(inst.symbol) or deque()
        while buf and buf[0][1] < last_id:  # u < lastUpdateId: older than the snapshot
            buf.popleft()
        if buf and buf[0][0] > last_id and buf[0][2] != last_id:
            raise Ignored("book_snapshot_too_old")  # the buffered events start after it: wait for a newer one
        event_us = self._event_us(m, received_us)
        self.snapshot(book, _levels(m.get("bids"), "bids"), _levels(m.get("asks"), "asks"), event_us, last_id)
        self.awaiting[inst.symbol] = last_id
        self.buffers.pop(inst.symbol, None)
        while buf:
            ev = buf.popleft()
            try:
                self._apply(book, ev, received_us)
            except Malformed as exc:
                if exc.reason == "book_out_of_sequence":
                    continue  # a repeated event in the buffer: the book already holds it
                if buf:  # the rest of the buffer follows the event that broke the chain
                    self.buffers[inst.symbol].extend(buf)
                raise
        return self.out(received_us, "book_synced")


# --------------------------------------------------------------------------- Bybit


class BybitBooks(DepthTracker):
    """Bybit v5 ``orderbook.{depth}.{symbol}`` (bybit-exchange.github.io/docs/v5/websocket/public/orderbook).

    ``type`` snapshot replaces the book (so does a delta with ``u`` == 1: a service restart); a delta's
    ``u`` must be the previous ``u`` + 1 (the docs: "generally continuous"), else ``book_gap`` (an older
    ``u``: ``book_out_of_sequence``). Size 0 deletes. Event time ``cts`` (matching engine), else ``ts``.
    v2 ``orderBookL2_25.{symbol}`` (2019-2022): snapshot rows ``{price, side, size}`` (inverse) or
    ``{"order_book": rows}`` (USDT), deltas ``{delete, update, insert}``; ``cross_seq`` must not go back.
    """

    def __init__(self, lookup: Lookup, config: BookConfig | None = None) -> None:
        super().__init__(config)
        self.lookup = lookup

    def v5(self, msg: dict, received_us: int) -> list[Normalized]:
        data = msg.get("data")
        if not isinstance(data, dict):
            raise Malformed("bad_value", "orderbook 'data' is not an object", ET)
        inst = self.lookup(data.get("s"))
        book = self.book(inst)
        t = msg.get("cts") or msg.get("ts")
        event_us = received_us if t is None else _time_us(t, "ts")
        u = _int(data.get("u"), "u")
        kind = msg.get("type")
        bids, asks = _levels(data.get("b"), "b"), _levels(data.get("a"), "a")
        if kind == "snapshot" or (kind == "delta" and u == 1):
            self.snapshot(book, bids, asks, event_us, u)
            return self.out(received_us)
        if kind != "delta":
            raise Malformed("bad_value", f"orderbook type={kind!r} is neither snapshot nor delta", ET)
        self.check_follows(book, u, u - 1, "u", event_us)
        self.deltas(book, bids, asks, event_us, u)
        return self.out(received_us)

    @staticmethod
    def _v2_rows(rows: Any) -> tuple[list, list]:
        if not isinstance(rows, list):
            raise Malformed("bad_value", "orderBookL2 rows are not a list", ET)
        bids, asks = [], []
        for r in rows:
            if not isinstance(r, dict) or r.get("side") not in ("Buy", "Sell"):
                raise Malformed("bad_value", f"orderBookL2 row {str(r)[:80]} has no side Buy/Sell", ET)
            (bids if r["side"] == "Buy" else asks).append(_level((r.get("price"), r.get("size", 0))))
        return bids, asks

    def v2(self, topic: str, msg: dict, received_us: int) -> list[Normalized]:
        inst = self.lookup(topic.rsplit(".", 1)[-1])
        book = self.book(inst)
        t = msg.get("timestamp_e6")
        event_us = received_us if t is None else _time_us(t, "timestamp_e6", "us")
        seq = _int(msg.get("cross_seq", 0), "cross_seq")
        data = msg.get("data")
        if msg.get("type") == "snapshot":
            rows = data.get("order_book") if isinstance(data, dict) else data
            bids, asks = self._v2_rows(rows)
            self.snapshot(book, bids, asks, event_us, seq)
            return self.out(received_us)
        if msg.get("type") != "delta" or not isinstance(data, dict):
            raise Malformed("bad_value", "orderBookL2 message is neither a snapshot nor a delta object", ET)
        if not book.synced:
            raise Ignored("book_resyncing")
        if seq < book.seq:
            raise Malformed("book_out_of_sequence", f"{inst.symbol}: cross_seq={seq} before the book's {book.seq}", ET)
        deleted_b, deleted_a = self._v2_rows([{**r, "size": 0} if isinstance(r, dict) else r
                                              for r in data.get("delete") or []])
        set_b, set_a = self._v2_rows([*(data.get("update") or []), *(data.get("insert") or [])])
        self.deltas(book, [*deleted_b, *set_b], [*deleted_a, *set_a], event_us, seq)
        return self.out(received_us)


# --------------------------------------------------------------------------- OKX


class OkxBooks(DepthTracker):
    """OKX v5 ``books`` / ``books-l2-tbt`` / ``books50-l2-tbt`` / ``books5`` / ``bbo-tbt`` (okx.com/docs-v5,
    "Order book channel" and "Checksum").

    ``action`` snapshot replaces the book, update applies (size "0" deletes); ``books5`` and
    ``bbo-tbt`` (no ``action``) are snapshots every push. Sequence: an update's ``prevSeqId`` must be
    the last ``seqId`` (the docs: an update with ``seqId`` < ``prevSeqId`` after maintenance is a reset
    and still follows the rule; a heartbeat update has ``seqId`` == ``prevSeqId`` and no levels).
    Messages without ``seqId`` (before 2022-10) are checked by checksum alone. Checksum: CRC32 of the
    best 25 levels of each side, interleaved bid/ask as ``price:size`` in the venue's own text, as a
    signed 32-bit integer; it is verified after every message that carries one.
    """

    def __init__(self, lookup: Lookup, config: BookConfig | None = None) -> None:
        super().__init__(config)
        self.lookup = lookup

    def channel(self, channel: str, msg: dict, received_us: int) -> list[Normalized]:
        arg = msg.get("arg") or {}
        data = msg.get("data")
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise Malformed("bad_value", "'data' is not a list of objects", ET)
        if not data:
            raise Ignored("empty_data")
        action = msg.get("action")
        for r in data:
            self._row(channel, action, r, arg.get("instId", r.get("instId")), received_us)
        return self.out(received_us)

    @staticmethod
    def _text_levels(rows: Any, name: str) -> list[tuple[float, float, str, str]]:
        if rows is None:
            return []
        if not isinstance(rows, list):
            raise Malformed("bad_value", f"{name!r} is not a list of levels", ET)
        out = []
        for row in rows:
            px, qty = _level(row)
            out.append((px, qty, str(row[0]), str(row[1])))
        return out

    def _row(self, channel: str, action: Any, r: dict, inst_id: Any, received_us: int) -> None:
        inst = self.lookup(inst_id)
        book = self.book(inst, keep_text=True)
        event_us = _time_us(r.get("ts"), "ts")
        bids, asks = self._text_levels(r.get("bids"), "bids"), self._text_levels(r.get("asks"), "asks")
        seq, prev = r.get("seqId"), r.get("prevSeqId")
        if action == "update":
            checked = seq is not None and prev is not None and book.seq is not None
            self.check_follows(book, _int(seq, "seqId") if checked else 0,
                               _int(prev, "prevSeqId") if checked else None, "seqId", event_us)
            self.close_slot(book, event_us)
            for setter, text, levels in ((book.set_bid, book.text_bids, bids), (book.set_ask, book.text_asks, asks)):
                for px, qty, tp, tq in levels:
                    setter(px, qty)
                    if qty > 0:
                        text[px] = (tp, tq)  # type: ignore[index]
                    else:
                        text.pop(px, None)  # type: ignore[union-attr]
        elif action in ("snapshot", None):
            self.close_slot(book, event_us)
            book.load([(p, q) for p, q, _, _ in bids], [(p, q) for p, q, _, _ in asks])
            book.text_bids.update((p, (tp, tq)) for p, q, tp, tq in bids if q > 0)  # type: ignore[union-attr]
            book.text_asks.update((p, (tp, tq)) for p, q, tp, tq in asks if q > 0)  # type: ignore[union-attr]
        else:
            raise Malformed("bad_value", f"{channel} action={action!r} is neither snapshot nor update", ET)
        book.seq = None if seq is None else _int(seq, "seqId")
        checksum = r.get("checksum")
        if checksum is not None:
            got = signed_crc32(okx_checksum_text(
                [book.text_bids[p] for p in heapq.nlargest(OKX_CHECKSUM_LEVELS, book.text_bids)],  # type: ignore[index,arg-type]
                [book.text_asks[p] for p in heapq.nsmallest(OKX_CHECKSUM_LEVELS, book.text_asks)]))  # type: ignore[index,arg-type]
            if got != _int(checksum, "checksum"):
                self.fail(book, "book_checksum_mismatch", f"{inst.symbol}: checksum {checksum} sent, {got} computed "
                          f"from the local book (seqId={seq})")
        self.applied(book, event_us)


# --------------------------------------------------------------------------- Hyperliquid


class HyperliquidBooks(DepthTracker):
    """Hyperliquid ``l2Book`` (hyperliquid.gitbook.io, Websocket "Subscriptions"): each push is a snapshot
    ``{"coin", "time", "levels": [bids, asks]}`` of up to 20 levels a side, levels ``{"px", "sz", "n"}``
    (sizes in coins)."""

    def __init__(self, lookup: Lookup, config: BookConfig | None = None) -> None:
        super().__init__(config)
        self.lookup = lookup

    def l2book(self, data: Any, received_us: int) -> list[Normalized]:
        if not isinstance(data, dict):
            raise Malformed("bad_value", "l2Book data is not an object", ET)
        inst = self.lookup(data.get("coin"))
        levels = data.get("levels")
        if not isinstance(levels, list) or len(levels) != 2 or not all(isinstance(s, list) for s in levels):
            raise Malformed("bad_value", "l2Book levels is not [bids, asks]", ET)
        sides = []
        for side in levels:
            if not all(isinstance(x, dict) for x in side):
                raise Malformed("bad_value", "l2Book level is not an object", ET)
            sides.append([_level((x.get("px"), x.get("sz"))) for x in side])
        self.snapshot(self.book(inst), sides[0], sides[1], _time_us(data.get("time"), "time"), None)
        return self.out(received_us)


# --------------------------------------------------------------------------- Deribit


class DeribitBooks(DepthTracker):
    """Deribit ``book.{instrument}.{interval}`` (docs.deribit.com, subscriptions): ``type`` snapshot then
    change; entries ``[action, price, amount]`` with action new/change/delete; a change's
    ``prev_change_id`` must be the last ``change_id`` (else ``book_gap``; an older ``change_id``:
    ``book_out_of_sequence``). The grouped ``book.{instrument}.{group}.{depth}.{interval}`` pushes
    ``[price, amount]`` snapshots of the top levels. Amounts: USD for inverse contracts, coins for
    linear ones (as in trades); options are ignored (``book_option``: a premium book is not the
    liquidity a cascade moves through)."""

    def __init__(self, lookup: Lookup, config: BookConfig | None = None) -> None:
        super().__init__(config)
        self.lookup = lookup

    @staticmethod
    def _changes(rows: Any, name: str) -> list[tuple[float, float]]:
        if not isinstance(rows, list):
            raise Malformed("bad_value", f"{name!r} is not a list", ET)
        out = []
        for row in rows:
            if not isinstance(row, list) or len(row) != 3 or row[0] not in ("new", "change", "delete"):
                raise Malformed("bad_value", f"{name} entry {str(row)[:80]} is not [new|change|delete, price, amount]", ET)
            px, qty = _level(row[1:])
            out.append((px, 0.0 if row[0] == "delete" else qty))
        return out

    def book_channel(self, channel: str, data: Any, received_us: int) -> list[Normalized]:
        if not isinstance(data, dict):
            raise Malformed("bad_value", "book data is not an object", ET)
        inst = self.lookup(data)
        if inst.kind == "option":
            raise Ignored("book_option")
        # amounts are USD for inverse contracts: usd = amount; linear: price x amount (coins)
        book = self.book(inst, 1.0, inst.inverse)
        event_us = _time_us(data.get("timestamp"), "timestamp")
        change_id = _int(data.get("change_id"), "change_id")
        if channel.count(".") >= 4:  # grouped: a snapshot of the top levels each push
            self.snapshot(book, _levels(data.get("bids"), "bids"), _levels(data.get("asks"), "asks"), event_us,
                          change_id)
            return self.out(received_us)
        kind = data.get("type")
        bids, asks = self._changes(data.get("bids", []), "bids"), self._changes(data.get("asks", []), "asks")
        if kind == "snapshot":
            self.snapshot(book, bids, asks, event_us, change_id)
            return self.out(received_us)
        if kind != "change":
            raise Malformed("bad_value", f"book type={kind!r} is neither snapshot nor change", ET)
        self.check_follows(book, change_id, _int(data.get("prev_change_id"), "prev_change_id"), "change_id", event_us)
        self.deltas(book, bids, asks, event_us, change_id)
        return self.out(received_us)
