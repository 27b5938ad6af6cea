"""Order-book normalizers: raw book messages per CPU-second, per venue (connectors/book.py, ADR 025).

    .venv/bin/python -m bench.book_depth [N]     # N update messages per venue (default 20,000), best of 3

Each venue gets a synthetic stream in its documented shape: a snapshot as deep as the live
subscription (Binance REST 1000 levels a side, Bybit 200, OKX 400 with a CRC32 checksum on every
message, Deribit 300, Hyperliquid 20-level snapshots), then N updates of 1-10 level changes near the
top every 100 ms of event time (so one book_depth record per 10 messages per 1 s slot). The figure
is ``route()`` end to end (JSON parse, sync rules, checksum, band computation, plausibility) over
CPU time of this process (``time.process_time``), so a loaded machine slows it less than wall time
would; the machine's load average is printed next to it.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable

T0_MS = 1733306400000


class _Book:
    """A generator-side book: float price -> (price text, size text)."""

    def __init__(self, rng: random.Random, mid: float, tick: float, depth: int, nd: int, size: Callable[[], str]):
        self.rng, self.tick, self.nd, self.size = rng, tick, nd, size
        self.bids: dict[float, tuple[str, str]] = {}
        self.asks: dict[float, tuple[str, str]] = {}
        pb, pa = mid - tick / 2, mid + tick / 2
        for _ in range(depth):
            self._set(self.bids, pb, size())
            self._set(self.asks, pa, size())
            pb -= rng.randint(1, 3) * tick
            pa += rng.randint(1, 3) * tick

    def _set(self, side: dict, px: float, sz: str) -> tuple[str, str]:
        text = f"{px:.{self.nd}f}"
        key = float(text)
        if float(sz) == 0:
            side.pop(key, None)
        else:
            side[key] = (text, sz)
        return text, sz

    def changes(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        bids, asks = [], []
        for _ in range(self.rng.randint(1, 10)):
            is_bid = self.rng.random() < 0.5
            side = self.bids if is_bid else self.asks
            best = max(side) if is_bid else min(side)
            off = self.rng.randint(0, 30) * self.tick
            px = best - off if is_bid else best + off
            sz = "0" if self.rng.random() < 0.3 and off > 0 and len(side) > 40 else self.size()
            (bids if is_bid else asks).append(self._set(side, px, sz))
        # a change is at or behind its side's best, and only levels behind it are deleted: never crossed
        return bids, asks


def _levels(side: dict, reverse: bool) -> list[list[str]]:
    return [list(side[p]) for p in sorted(side, reverse=reverse)]


def stream(venue: str, n: int, seed: int = 1) -> list[tuple[int, bytes]]:
    """(received µs, raw bytes) of a snapshot and ``n`` updates in ``venue``'s shape."""
    from connectors.book import OKX_CHECKSUM_LEVELS, okx_checksum_text, signed_crc32

    rng = random.Random(seed)
    out: list[tuple[int, bytes]] = []

    def emit(t_ms: int, doc: dict) -> None:
        out.append((t_ms * 1000 + 500, json.dumps(doc, separators=(",", ":")).encode()))

    t = T0_MS
    if venue in ("binance-futures", "binance-delivery"):
        sym = "BTCUSDT" if venue == "binance-futures" else "BTCUSD_PERP"
        size = (lambda: f"{rng.uniform(0.001, 3):.3f}") if venue == "binance-futures" else (lambda: str(rng.randint(1, 500)))
        b = _Book(rng, 60000.0, 0.1, 1000, 1, size)
        uid = 10_000
        emit(t, {"lastUpdateId": uid, "symbol": sym, "E": t, "T": t, "bids": _levels(b.bids, True), "asks": _levels(b.asks, False)})
        for _ in range(n):
            bids, asks = b.changes()
            t += 100
            u = uid + rng.randint(1, 20)
            emit(t, {"stream": f"{sym.lower()}@depth@100ms", "data": {
                "e": "depthUpdate", "E": t, "T": t, "s": sym, "U": uid + 1, "u": u, "pu": uid,
                "b": [list(x) for x in bids], "a": [list(x) for x in asks]}})
            uid = u
    elif venue == "bybit":
        b = _Book(rng, 60000.0, 0.1, 200, 2, lambda: f"{rng.uniform(0.001, 3):.3f}")
        emit(t, {"topic": "orderbook.200.BTCUSDT", "type": "snapshot", "ts": t, "cts": t, "data": {
            "s": "BTCUSDT", "b": _levels(b.bids, True), "a": _levels(b.asks, False), "u": 1000, "seq": 1}})
        for i in range(n):
            bids, asks = b.changes()
            t += 100
            emit(t, {"topic": "orderbook.200.BTCUSDT", "type": "delta", "ts": t, "cts": t, "data": {
                "s": "BTCUSDT", "b": [list(x) for x in bids], "a": [list(x) for x in asks], "u": 1001 + i, "seq": 2 + i}})
    elif venue == "okx":
        b = _Book(rng, 60000.0, 0.1, 400, 1, lambda: str(rng.randint(1, 900)))

        def checksum() -> int:
            bb = [b.bids[p] for p in sorted(b.bids, reverse=True)[:OKX_CHECKSUM_LEVELS]]
            aa = [b.asks[p] for p in sorted(b.asks)[:OKX_CHECKSUM_LEVELS]]
            return signed_crc32(okx_checksum_text(bb, aa))

        seq = 100
        emit(t, {"arg": {"channel": "books", "instId": "BTC-USDT-SWAP"}, "action": "snapshot", "data": [{
            "asks": [[*x, "0", "1"] for x in _levels(b.asks, False)], "bids": [[*x, "0", "1"] for x in _levels(b.bids, True)],
            "ts": str(t), "checksum": checksum(), "prevSeqId": -1, "seqId": seq}]})
        for _ in range(n):
            bids, asks = b.changes()
            t += 100
            emit(t, {"arg": {"channel": "books", "instId": "BTC-USDT-SWAP"}, "action": "update", "data": [{
                "asks": [[*x, "0", "1"] for x in asks], "bids": [[*x, "0", "1"] for x in bids], "ts": str(t),
                "checksum": checksum(), "prevSeqId": seq, "seqId": seq + 3}]})
            seq += 3
    elif venue == "deribit":
        b = _Book(rng, 60000.25, 0.5, 300, 1, lambda: str(rng.randint(1, 5000) * 10))

        def rows(levels):
            return [["delete" if sz == "0" else "change", float(px), float(sz)] for px, sz in levels]

        def rpc(data):
            return {"jsonrpc": "2.0", "method": "subscription", "params": {"channel": "book.BTC-PERPETUAL.100ms", "data": data}}

        cid = 1000
        emit(t, rpc({"type": "snapshot", "timestamp": t, "instrument_name": "BTC-PERPETUAL", "change_id": cid,
                     "bids": rows(_levels(b.bids, True)), "asks": rows(_levels(b.asks, False))}))
        for _ in range(n):
            bids, asks = b.changes()
            t += 100
            emit(t, rpc({"type": "change", "timestamp": t, "instrument_name": "BTC-PERPETUAL", "prev_change_id": cid,
                         "change_id": cid + 2, "bids": rows(bids), "asks": rows(asks)}))
            cid += 2
    elif venue == "hyperliquid":
        b = _Book(rng, 60000.5, 1.0, 60, 0, lambda: f"{rng.uniform(0.0001, 2.5):.5f}")
        for _ in range(n):
            b.changes()
            t += 100
            emit(t, {"channel": "l2Book", "data": {"coin": "BTC", "time": t, "levels": [
                [{"px": px, "sz": sz, "n": 1} for px, sz in _levels(b.bids, True)[:20]],
                [{"px": px, "sz": sz, "n": 1} for px, sz in _levels(b.asks, False)[:20]]]}})
    else:
        raise ValueError(venue)
    return out


VENUES = ("binance-futures", "binance-delivery", "bybit", "okx", "deribit", "hyperliquid")


def measure(venue: str, n: int, repeats: int = 3) -> dict:
    from connectors.exchanges import normalizer_for
    from connectors.normalize import route

    msgs = stream(venue, n)
    best = None
    for _ in range(repeats):
        norm = normalizer_for(venue)
        records = dead = 0
        t0 = time.process_time()
        for recv, raw in msgs:
            out = route(norm, raw, recv)
            records += len(out.records)
            dead += out.dead is not None
        cpu = time.process_time() - t0
        best = cpu if best is None else min(best, cpu)
    if dead:
        raise AssertionError(f"{venue}: {dead} dead letters in a clean stream")
    return {"venue": venue, "messages": len(msgs), "records": records, "cpu_s": round(best, 3),
            "messages_per_cpu_s": round(len(msgs) / best)}


def stage_book_depth(n: int) -> dict[str, dict]:
    """venue -> :func:`measure` row (the ``book_depth`` stage of bench/run.py)."""
    return {v: measure(v, n) for v in VENUES}


def main(argv: list[str] | None = None) -> int:
    n = int((argv or sys.argv[1:] or ["20000"])[0])
    load = os.getloadavg()
    rows = list(stage_book_depth(n).values())
    print(json.dumps({"load_avg_1_5_15": [round(x, 2) for x in load], "cpus": os.cpu_count(), "venues": rows},
                     indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
