"""Order-book normalizers -> book_depth (connectors/book.py, ADR 025).

Every venue's sequence in tests/fixtures/books/ is replayed through ``route`` and checked against an
independent reference: a plain dict book per venue written here (its own parsing of the messages,
its own band arithmetic by price thresholds, the venue's contract terms from its documentation),
sampled at the last message of each 1 s slot.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors.avro import AvroDecoder, AvroEncoder
from connectors.book import BookConfig, okx_checksum_text, signed_crc32
from connectors.exchanges import normalizer_for
from connectors.normalize import route
from connectors.plausibility import implausibility

BOOKS = Path(__file__).resolve().parents[1] / "fixtures" / "books"
BANDS = (10, 50, 100, 200)
SLOT_US = 1_000_000


def _jsonl(name: str) -> list[tuple[int, dict]]:
    return [(d["recv_us"], d["msg"]) for d in map(json.loads, (BOOKS / name).read_text().splitlines())]


def _capture(name: str) -> list[tuple[int, str]]:
    """``T: JSON`` lines of a real capture -> (received µs, raw text)."""
    out = []
    for line in (BOOKS / name).read_text().splitlines():
        t, _, raw = line.partition(": ")
        out.append((int(float(t) * 1_000_000), raw))
    return out


# --- the independent reference -----------------------------------------------------------------


class RefBook:
    """A plain dict book: snapshot replaces, update sets (size 0 deletes)."""

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}

    def snapshot(self, bids, asks) -> None:
        self.bids = {float(p): float(q) for p, q in bids if float(q) > 0}
        self.asks = {float(p): float(q) for p, q in asks if float(q) > 0}

    def update(self, bids, asks) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for p, q in levels:
                if float(q) == 0:
                    side.pop(float(p), None)
                else:
                    side[float(p)] = float(q)


def ref_depth(book: RefBook, usd) -> dict:
    """Bands by price thresholds: a bid counts in band k when price >= mid x (1 - k/1e4)."""
    bids = sorted(book.bids.items(), reverse=True)
    asks = sorted(book.asks.items())
    mid = (bids[0][0] + asks[0][0]) / 2
    out = {"best_bid": bids[0][0], "best_ask": asks[0][0], "levels": len(bids) + len(asks),
           "bid_reach_bp": (mid - bids[-1][0]) / mid * 1e4, "ask_reach_bp": (asks[-1][0] - mid) / mid * 1e4}
    for k in BANDS:
        floor, cap = mid * (1 - k / 1e4), mid * (1 + k / 1e4)
        out[f"bid_usd_{k}bp"] = sum(usd(p, q) for p, q in bids if p >= floor) if out["bid_reach_bp"] >= k else None
        out[f"ask_usd_{k}bp"] = sum(usd(p, q) for p, q in asks if p <= cap) if out["ask_reach_bp"] >= k else None
    return out


def expected_records(states: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
    """(event µs, reference depth) after each applied message -> the last state of every closed slot."""
    out = []
    for i, (t, depth) in enumerate(states[:-1]):
        if states[i + 1][0] // SLOT_US > t // SLOT_US:
            out.append((t, depth))
    return out


def replay(venue: str, rows) -> tuple[list[dict], list]:
    norm = normalizer_for(venue)
    records, outcomes = [], []
    for recv, msg in rows:
        out = route(norm, msg if isinstance(msg, str) else json.dumps(msg), recv)
        outcomes.append(out)
        records.extend(r for et, r in out.records if et == "book_depth")
    return records, outcomes


def assert_matches(records: list[dict], expected: list[tuple[int, dict]], least: int = 2) -> None:
    assert len(records) == len(expected) >= least
    for rec, (t, ref) in zip(records, expected, strict=True):
        assert rec["event_time"] == t
        for key, want in ref.items():
            if want is None:
                assert rec[key] is None, key
            else:
                assert rec[key] == pytest.approx(want, rel=1e-9), key
        assert AvroDecoder("book_depth").decode(AvroEncoder("book_depth").encode(rec)) == rec
        assert implausibility("book_depth", rec) is None


# --- band arithmetic by hand ---------------------------------------------------------------------


def test_bands_by_hand_linear_and_inverse() -> None:
    # mid 100.00: 10 bp = 0.10, 50 bp = 0.50, 100 bp = 1.00, 200 bp = 2.00 of price
    norm = normalizer_for("hyperliquid")  # linear, sizes in coins: USD = price x size
    snap = {"channel": "l2Book", "data": {"coin": "BTC", "time": 1733306400100, "levels": [
        [{"px": "99.95", "sz": "2", "n": 1}, {"px": "99.8", "sz": "1", "n": 1}, {"px": "99.1", "sz": "3", "n": 1},
         {"px": "98.5", "sz": "4", "n": 1}, {"px": "97", "sz": "5", "n": 1}],
        [{"px": "100.05", "sz": "1", "n": 1}, {"px": "100.4", "sz": "2", "n": 1}, {"px": "101.5", "sz": "1", "n": 1}]]}}
    assert route(norm, json.dumps(snap), 1733306400200000).ignored == "book_throttled"
    later = json.loads(json.dumps(snap))
    later["data"]["time"] = 1733306401100
    [(et, rec)] = route(norm, json.dumps(later), 1733306401200000).records
    # ingest_time: when the message it goes out with was received (the record exists from then on)
    assert et == "book_depth" and rec["event_time"] == 1733306400100000 and rec["ingest_time"] == 1733306401200000
    assert (rec["best_bid"], rec["best_ask"], rec["levels"]) == (99.95, 100.05, 8)
    assert rec["bid_reach_bp"] == pytest.approx(300) and rec["ask_reach_bp"] == pytest.approx(150)
    # bids: 99.95 x 2 = 199.90 (5 bp); + 99.80 (20 bp) = 299.70; + 99.10 x 3 = 297.30 (90 bp) -> 597.00;
    # + 98.50 x 4 = 394.00 (150 bp) -> 991.00; 97.00 (300 bp) is beyond every band
    assert [rec[f"bid_usd_{k}bp"] for k in BANDS] == pytest.approx([199.9, 299.7, 597.0, 991.0])
    # asks: 100.05 (5 bp); + 100.40 x 2 = 200.80 (40 bp) -> 300.85; 101.50 at 150 bp; reach 150 < 200 -> null
    assert [rec[f"ask_usd_{k}bp"] for k in BANDS[:3]] == pytest.approx([100.05, 300.85, 300.85])
    assert rec["ask_usd_200bp"] is None
    assert (rec["exchange"], rec["symbol"], rec["base"], rec["quote"], rec["kind"]) == (
        "hyperliquid", "BTC", "BTC", "USDC", "perpetual")

    inv = normalizer_for("binance-delivery")  # BTCUSD_PERP: 100 USD a contract, whatever the price
    snap = {"lastUpdateId": 10, "symbol": "BTCUSD_PERP", "pair": "BTCUSD", "E": 1733306400100, "T": 1733306400100,
            "bids": [["99.95", "3"], ["99.5", "2"]], "asks": [["100.05", "1"], ["102.5", "7"]]}
    assert route(inv, json.dumps(snap), 1733306400200000).ignored == "book_synced"
    ev = {"e": "depthUpdate", "E": 1733306401300, "T": 1733306401300, "s": "BTCUSD_PERP", "ps": "BTCUSD",
          "U": 11, "u": 12, "pu": 10, "b": [], "a": []}
    [(_, rec)] = route(inv, json.dumps({"stream": "btcusd_perp@depth", "data": ev}), 1733306401400000).records
    assert rec["bid_usd_10bp"] == 300.0 and rec["bid_usd_50bp"] == 500.0 and rec["bid_usd_100bp"] is None
    assert rec["ask_usd_10bp"] == 100.0 and rec["ask_usd_200bp"] == 100.0  # 102.5 is 245 bp out



# --- Binance -------------------------------------------------------------------------------------


def _binance_states(rows, usd) -> list[tuple[int, dict]]:
    """The reference's reading of Binance's sync rule: buffer until the snapshot, drop events that end
    before its lastUpdateId, then apply every event in order (absolute sizes)."""
    ref, states, pending, snap_id, t = RefBook(), [], [], None, 0
    for _, msg in rows:
        if "lastUpdateId" in msg:
            ref.snapshot(msg["bids"], msg["asks"])
            snap_id, t = msg["lastUpdateId"], msg["T"] * 1000
            states.append((t, ref_depth(ref, usd)))
            todo, pending = [e for e in pending if e["u"] >= snap_id], []
        else:
            todo = [msg["data"]]
            if snap_id is None:
                pending += todo
                continue
        for ev in todo:
            ref.update(ev["b"], ev["a"])
            t = max(t, ev["T"] * 1000)
            states.append((t, ref_depth(ref, usd)))
    return states


def test_binance_futures_diff_depth_synced_from_snapshot_matches_reference() -> None:
    rows = _jsonl("binance-futures_BTCUSDT_diff.jsonl")
    records, outcomes = replay("binance-futures", rows)
    # events 0-6 arrive before the snapshot (buffered); the snapshot drops 0-3 (u < lastUpdateId) and applies 4-6
    assert [o.ignored for o in outcomes[:7]] == ["book_buffered"] * 7
    assert all(o.dead is None for o in outcomes)
    assert_matches(records, expected_records(_binance_states(rows, lambda p, q: p * q)))


def test_binance_delivery_inverse_contracts_match_reference() -> None:
    rows = _jsonl("binance-delivery_BTCUSD_PERP_diff.jsonl")
    records, outcomes = replay("binance-delivery", rows)
    assert all(o.dead is None for o in outcomes)
    assert_matches(records, expected_records(_binance_states(rows, lambda p, q: q * 100.0)))  # 100 USD a contract


def test_binance_partial_depth_is_a_snapshot_each_push() -> None:
    rows = _jsonl("binance-futures_ETHUSDT_depth20.jsonl")
    records, outcomes = replay("binance-futures", rows)
    assert all(o.dead is None for o in outcomes)  # U/u/pu of partial pushes are not a chain: not checked
    ref, states = RefBook(), []
    for _, msg in rows:
        ref.snapshot(msg["data"]["b"], msg["data"]["a"])
        states.append((msg["data"]["T"] * 1000, ref_depth(ref, lambda p, q: p * q)))
    assert_matches(records, expected_records(states))
    assert all(r["bid_usd_200bp"] is None for r in records)  # 20 levels do not reach 200 bp


def _ev(U, u, pu, t_ms, b=(), a=(), sym="BTCUSDT"):  # noqa: N803 - Binance's field names
    return json.dumps({"stream": f"{sym.lower()}@depth@100ms", "data": {
        "e": "depthUpdate", "E": t_ms + 2, "T": t_ms, "s": sym, "U": U, "u": u, "pu": pu,
        "b": [list(x) for x in b], "a": [list(x) for x in a]}})


def _snap(last_id, t_ms, bids=(("59999.9", "1.000"),), asks=(("60000.1", "1.000"),), sym="BTCUSDT"):
    return json.dumps({"symbol": sym, "lastUpdateId": last_id, "E": t_ms, "T": t_ms,
                       "bids": [list(x) for x in bids], "asks": [list(x) for x in asks]})


T = 1733306400000  # ms
R = T * 1000


def test_binance_sync_rule_snapshot_and_buffer() -> None:
    norm = normalizer_for("binance-futures")
    assert route(norm, _ev(90, 95, 89, T + 10, b=[("59999.0", "5")]), R).ignored == "book_buffered"
    assert route(norm, _ev(96, 102, 95, T + 20, b=[("59999.9", "2.5")]), R).ignored == "book_buffered"
    assert route(norm, _ev(103, 105, 102, T + 30, a=[("60000.1", "0")], b=[("59999.8", "1")]), R).ignored == "book_buffered"
    # a snapshot older than the buffer's first event cannot sync it: wait for the next one
    assert route(norm, _snap(80, T + 5), R).ignored == "book_snapshot_too_old"
    # lastUpdateId 100: event 90-95 dropped (u < 100), 96-102 is the first (U <= 100 <= u), then 103-105
    out = route(norm, _snap(100, T + 25, asks=(("60000.1", "1.000"), ("60000.5", "3"))), R)
    assert out.ignored == "book_synced"
    book = norm.books.books["BTCUSDT"]
    assert book.bids == {59999.9: 2.5, 59999.8: 1.0} and book.asks == {60000.5: 3.0}  # 59999.0 x 5 never applied
    assert (book.best_bid, book.best_ask, book.seq) == (59999.9, 60000.5, 105)
    # the next event must chain on pu; one that does not is a gap: dead letter, and the book resyncs
    assert route(norm, _ev(106, 108, 105, T + 40, b=[("59999.7", "1")]), R).ignored == "book_throttled"
    gap = route(norm, _ev(120, 121, 119, T + 1200), R)
    assert (gap.dead.reason, gap.dead.event_type, gap.dead.topic) == ("book_gap", "book_depth", "book_depth.v1.dlq")
    # ... the slot it closed still goes out, with the next message that is not dead-lettered
    assert route(norm, _ev(122, 123, 121, T + 1300), R).ignored == "book_buffered"
    out = route(norm, _snap(121, T + 1250), R)
    [(et, rec)] = out.records
    assert et == "book_depth" and rec["event_time"] == (T + 40) * 1000 and rec["best_bid"] == 59999.9
    assert norm.books.books["BTCUSDT"].synced and norm.books.books["BTCUSDT"].seq == 123


def test_binance_first_event_may_follow_the_snapshot_exactly() -> None:
    norm = normalizer_for("binance-futures")
    route(norm, _snap(100, T), R)
    assert route(norm, _ev(104, 106, 100, T + 10, b=[("59999.5", "1")]), R).ignored == "book_throttled"  # pu == 100
    norm2 = normalizer_for("binance-futures")
    route(norm2, _snap(100, T), R)
    assert route(norm2, _ev(104, 106, 101, T + 10), R).dead.reason == "book_gap"  # 101..103 missing
    assert not norm2.books.books["BTCUSDT"].synced


def test_binance_out_of_sequence_is_dropped_and_the_book_kept() -> None:
    norm = normalizer_for("binance-futures")
    route(norm, _snap(100, T), R)
    route(norm, _ev(99, 103, 98, T + 10, b=[("59999.5", "1")]), R)
    route(norm, _ev(104, 106, 103, T + 20, b=[("59999.5", "2")]), R)
    old = route(norm, _ev(104, 106, 103, T + 20, b=[("59999.5", "9")]), R)  # the same event again
    assert old.dead.reason == "book_out_of_sequence"
    book = norm.books.books["BTCUSDT"]
    assert book.synced and book.bids[59999.5] == 2.0 and book.seq == 106


def test_binance_crossed_book_is_dead_lettered_and_resynced() -> None:
    norm = normalizer_for("binance-futures")
    route(norm, _snap(100, T), R)
    out = route(norm, _ev(99, 103, 98, T + 10, b=[("60000.2", "1")]), R)  # a bid above the best ask
    assert out.dead.reason == "book_crossed"
    assert not norm.books.books["BTCUSDT"].synced
    assert route(norm, _ev(104, 106, 103, T + 1500), R).ignored == "book_buffered"  # no record of a crossed book


def test_binance_real_diff_stream_chains_without_gaps() -> None:
    """40 real SUSHIUSDT diff events (2021): on a snapshot taken at the first event, every later event
    chains on pu and the book equals the reference's."""
    lines = _capture("binance-futures_SUSHIUSDT_depth.capture.txt")
    first = json.loads(lines[0][1])["data"]
    norm = normalizer_for("binance-futures")
    snap = {"symbol": "SUSHIUSDT", "lastUpdateId": first["u"], "E": first["E"], "T": first["T"],
            "bids": [["7.5000", "100"], ["7.4000", "900"]], "asks": [["7.7000", "100"], ["7.8000", "900"]]}
    ref = RefBook()
    ref.snapshot(snap["bids"], snap["asks"])
    assert route(norm, json.dumps(snap), lines[0][0]).ignored == "book_synced"
    n_records = 0
    for recv, raw in lines:
        out = route(norm, raw, recv)
        assert out.dead is None, out.dead
        n_records += len(out.records)
        d = json.loads(raw)["data"]
        ref.update(d["b"], d["a"])
    book = norm.books.books["SUSHIUSDT"]
    assert book.bids == ref.bids and book.asks == ref.asks and n_records >= 2


# --- Bybit ---------------------------------------------------------------------------------------


def test_bybit_v5_snapshot_and_deltas_match_reference() -> None:
    rows = _jsonl("bybit_BTCUSDT_orderbook200.jsonl")
    records, outcomes = replay("bybit", rows)
    assert all(o.dead is None for o in outcomes)
    ref, states = RefBook(), []
    for _, msg in rows:
        d = msg["data"]
        (ref.snapshot if msg["type"] == "snapshot" else ref.update)(d["b"], d["a"])
        states.append((msg["cts"] * 1000, ref_depth(ref, lambda p, q: p * q)))  # cts: the matching engine's time
    assert_matches(records, expected_records(states))


def _bybit(kind, u, t_ms, b=(), a=()):
    return json.dumps({"topic": "orderbook.50.BTCUSDT", "type": kind, "ts": t_ms,
                       "data": {"s": "BTCUSDT", "b": [list(x) for x in b], "a": [list(x) for x in a], "u": u, "seq": 7}})


def test_bybit_v5_gap_out_of_sequence_and_restart_snapshot() -> None:
    norm = normalizer_for("bybit")
    assert route(norm, _bybit("delta", 5, T), R).ignored == "book_resyncing"  # no snapshot yet
    route(norm, _bybit("snapshot", 10, T, b=[("60000", "1")], a=[("60001", "1")]), R)
    assert route(norm, _bybit("delta", 11, T + 10, b=[("59999", "2")]), R).ignored == "book_throttled"
    assert route(norm, _bybit("delta", 11, T + 20, b=[("59999", "9")]), R).dead.reason == "book_out_of_sequence"
    assert norm.books.books["BTCUSDT"].bids == {60000.0: 1.0, 59999.0: 2.0}
    gap = route(norm, _bybit("delta", 13, T + 1500), R)  # u 12 missing; closes slot 0 first
    assert gap.dead.reason == "book_gap" and not norm.books.books["BTCUSDT"].synced
    assert route(norm, _bybit("delta", 14, T + 1600), R).ignored == "book_resyncing"
    # u == 1: a snapshot after a service restart, whatever its type says; the waiting slot-0 record goes out
    out = route(norm, _bybit("delta", 1, T + 1700, b=[("59990", "1")], a=[("60010", "1")]), R)
    [(_, rec)] = out.records
    assert rec["event_time"] == (T + 10) * 1000 and rec["best_bid"] == 60000.0
    assert norm.books.books["BTCUSDT"].bids == {59990.0: 1.0} and norm.books.books["BTCUSDT"].synced


def test_bybit_v2_real_orderbook_l2_matches_reference() -> None:
    """Real 2021 inverse BTCUSD orderBookL2_25 (1 USD contracts): snapshot rows, delete/update/insert."""
    lines = _capture("bybit_v2_BTCUSD_orderBookL2_25.capture.txt")
    records, outcomes = replay("bybit", lines)
    assert all(o.dead is None for o in outcomes)
    ref, states = RefBook(), []
    for _, raw in lines:
        msg = json.loads(raw)
        if msg["type"] == "snapshot":
            ref.snapshot([(r["price"], r["size"]) for r in msg["data"] if r["side"] == "Buy"],
                         [(r["price"], r["size"]) for r in msg["data"] if r["side"] == "Sell"])
        else:
            d = msg["data"]
            rows = [{**r, "size": 0} for r in d["delete"]] + d["update"] + d["insert"]
            ref.update([(r["price"], r["size"]) for r in rows if r["side"] == "Buy"],
                       [(r["price"], r["size"]) for r in rows if r["side"] == "Sell"])
        states.append((msg["timestamp_e6"], ref_depth(ref, lambda p, q: q)))
    assert_matches(records, expected_records(states), least=1)  # the excerpt spans 1.5 s


# --- OKX -----------------------------------------------------------------------------------------


def test_okx_checksum_documented_example() -> None:
    """okx.com/docs-v5 "Checksum": bids 3366.1x7, 3366x6; asks 3366.8x9, 3368x8 -> the check string
    "3366.1:7:3366.8:9:3366:6:3368:8"; with one bid and three asks the asks continue alone."""
    text = okx_checksum_text([("3366.1", "7"), ("3366", "6")], [("3366.8", "9"), ("3368", "8")])
    assert text == "3366.1:7:3366.8:9:3366:6:3368:8"
    assert okx_checksum_text([("3366.1", "7")], [("3366.8", "9"), ("3368", "8"), ("3372", "8")]) == \
        "3366.1:7:3366.8:9:3368:8:3372:8"
    assert signed_crc32(text) == _independent_signed_crc32(text.encode())


def _independent_signed_crc32(data: bytes) -> int:
    """CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320) bit by bit, then read as a signed 32-bit int."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    crc ^= 0xFFFFFFFF
    return crc - (1 << 32) if crc & 0x80000000 else crc


def _okx_states(msgs: list[dict], usd) -> list[tuple[int, dict]]:
    ref, states = RefBook(), []
    for msg in msgs:
        d = msg["data"][0]
        (ref.snapshot if msg["action"] == "snapshot" else ref.update)([r[:2] for r in d["bids"]], [r[:2] for r in d["asks"]])
        states.append((int(d["ts"]) * 1000, ref_depth(ref, usd)))
    return states


def test_okx_real_books_checksums_verify_and_match_reference() -> None:
    """Real OKX books (2022, UNI-USD-SWAP, inverse 10 USD contracts): every message's checksum, computed
    by OKX, matches the local book; the depth matches the reference."""
    lines = _capture("okx_UNI-USD-SWAP_books.capture.txt")
    records, outcomes = replay("okx", lines)
    assert [o.dead for o in outcomes] == [None] * len(lines)
    assert_matches(records, expected_records(_okx_states([json.loads(raw) for _, raw in lines], lambda p, q: q * 10.0)))


def test_okx_books_with_sequence_ids_match_reference() -> None:
    rows = _jsonl("okx_BTC-USDT-SWAP_books.jsonl")
    records, outcomes = replay("okx", rows)
    assert all(o.dead is None for o in outcomes)
    assert_matches(records, expected_records(_okx_states([m for _, m in rows], lambda p, q: p * q * 0.01)))  # ctVal 0.01


def test_okx_checksum_mismatch_and_sequence_gap_resync() -> None:
    rows = _jsonl("okx_BTC-USDT-SWAP_books.jsonl")
    norm = normalizer_for("okx")
    route(norm, json.dumps(rows[0][1]), rows[0][0])
    bad = json.loads(json.dumps(rows[1][1]))
    bad["data"][0]["checksum"] += 1
    out = route(norm, json.dumps(bad), rows[1][0])
    assert (out.dead.reason, out.dead.topic) == ("book_checksum_mismatch", "book_depth.v1.dlq")
    assert not norm.books.books["BTC-USDT-SWAP"].synced
    assert route(norm, json.dumps(rows[2][1]), rows[2][0]).ignored == "book_resyncing"
    norm = normalizer_for("okx")
    route(norm, json.dumps(rows[0][1]), rows[0][0])
    assert route(norm, json.dumps(rows[2][1]), rows[2][0]).dead.reason == "book_gap"  # rows[1] skipped
    norm = normalizer_for("okx")
    for recv, msg in rows[:3]:
        route(norm, json.dumps(msg), recv)
    assert route(norm, json.dumps(rows[2][1]), rows[2][0]).dead.reason == "book_out_of_sequence"  # a repeat
    assert norm.books.books["BTC-USDT-SWAP"].synced


def test_okx_books5_and_bbo_are_snapshots() -> None:
    norm = normalizer_for("okx")
    msg = {"arg": {"channel": "bbo-tbt", "instId": "BTC-USDT-SWAP"},
           "data": [{"asks": [["60001.0", "12", "0", "1"]], "bids": [["60000.0", "30", "0", "2"]], "ts": str(T), "seqId": 9}]}
    assert route(norm, json.dumps(msg), R).ignored == "book_throttled"
    msg["data"][0]["ts"] = str(T + 1000)
    [(_, rec)] = route(norm, json.dumps(msg), R + 1_000_000).records
    assert (rec["best_bid"], rec["best_ask"], rec["levels"], rec["bid_reach_bp"]) == (60000.0, 60001.0, 2, pytest.approx(0.5 / 60000.5 * 1e4))
    assert rec["bid_usd_10bp"] is None  # one level 0.83 bp from the mid reaches no band


# --- Hyperliquid, Deribit ------------------------------------------------------------------------


def test_hyperliquid_l2book_snapshots_match_reference() -> None:
    rows = _jsonl("hyperliquid_BTC_l2Book.jsonl")
    records, outcomes = replay("hyperliquid", rows)
    assert all(o.dead is None for o in outcomes)
    ref, states = RefBook(), []
    for _, msg in rows:
        bids, asks = msg["data"]["levels"]
        ref.snapshot([(x["px"], x["sz"]) for x in bids], [(x["px"], x["sz"]) for x in asks])
        states.append((msg["data"]["time"] * 1000, ref_depth(ref, lambda p, q: p * q)))
    assert_matches(records, expected_records(states))


def test_deribit_book_changes_match_reference() -> None:
    rows = _jsonl("deribit_BTC-PERPETUAL_book.jsonl")
    records, outcomes = replay("deribit", rows)
    assert all(o.dead is None for o in outcomes)
    ref, states = RefBook(), []
    for _, msg in rows:
        d = msg["params"]["data"]
        sides = [[(p, 0 if act == "delete" else q) for act, p, q in d[k]] for k in ("bids", "asks")]
        (ref.snapshot if d["type"] == "snapshot" else ref.update)(*sides)
        states.append((d["timestamp"] * 1000, ref_depth(ref, lambda p, q: q)))  # inverse: amounts are USD
    assert_matches(records, expected_records(states))


def test_deribit_gap_and_options() -> None:
    rows = _jsonl("deribit_BTC-PERPETUAL_book.jsonl")
    norm = normalizer_for("deribit")
    route(norm, json.dumps(rows[0][1]), rows[0][0])
    gap = route(norm, json.dumps(rows[2][1]), rows[2][0])
    assert (gap.dead.reason, gap.dead.exchange) == ("book_gap", "deribit")
    assert route(norm, json.dumps(rows[3][1]), rows[3][0]).ignored == "book_resyncing"
    opt = {"jsonrpc": "2.0", "method": "subscription", "params": {"channel": "book.BTC-27DEC24-100000-C.100ms", "data": {
        "type": "snapshot", "timestamp": T, "instrument_name": "BTC-27DEC24-100000-C", "change_id": 1,
        "bids": [["new", 0.01, 10.0]], "asks": [["new", 0.011, 5.0]]}}}
    assert route(norm, json.dumps(opt), R).ignored == "book_option"


# --- throttle and config ------------------------------------------------------------------------


def _hl(t_ms, bid="100", ask="101"):
    return json.dumps({"channel": "l2Book", "data": {"coin": "ETH", "time": t_ms, "levels": [
        [{"px": bid, "sz": "1", "n": 1}], [{"px": ask, "sz": "1", "n": 1}]]}})


def test_throttle_one_record_per_slot_the_last_state() -> None:
    norm = normalizer_for("hyperliquid")
    outs = [route(norm, _hl(T + dt, bid=b), R + dt * 1000) for dt, b in
            ((100, "99"), (500, "98"), (900, "97"), (1200, "96"), (1300, "95"), (3500, "94"))]
    assert [o.ignored for o in outs[:3]] == ["book_throttled"] * 3
    [(_, first)] = outs[3].records  # slot 0 closes: its last state (bid 97 at +900 ms)
    assert (first["best_bid"], first["event_time"], first["ingest_time"]) == (97.0, (T + 900) * 1000, R + 1_200_000)
    assert outs[4].ignored == "book_throttled"
    [(_, second)] = outs[5].records  # slot 1's last state; slot 2 had no message: no record
    assert (second["best_bid"], second["event_time"]) == (95.0, (T + 1300) * 1000)


def test_depth_interval_is_a_config_field(monkeypatch) -> None:
    from connectors import book

    assert BookConfig().depth_interval_s == 1.0
    assert BookConfig.from_env({"LIQSTREAM_BOOK_DEPTH_INTERVAL_S": "5"}).depth_interval_s == 5.0
    with pytest.raises(ValueError):
        BookConfig.from_env({"LIQSTREAM_BOOK_DEPTH_INTERVAL_S": "0"})
    monkeypatch.setattr(book, "book_config", lambda: BookConfig(depth_interval_s=5.0))
    norm = normalizer_for("hyperliquid")
    outs = [route(norm, _hl(T + dt), R) for dt in (100, 1200, 4900, 5100)]
    assert [bool(o.records) for o in outs] == [False, False, False, True]


def test_implausible_depth_is_dead_lettered() -> None:
    norm = normalizer_for("hyperliquid")
    route(norm, _hl(T, bid="100", ask="101"), R)
    huge = json.dumps({"channel": "l2Book", "data": {"coin": "ETH", "time": T + 1000, "levels": [
        [{"px": "100", "sz": "1", "n": 1}], [{"px": "101", "sz": "1", "n": 1}]]}})
    assert route(norm, huge, R).records  # fine
    route(norm, json.dumps({"channel": "l2Book", "data": {"coin": "ETH", "time": T + 1100, "levels": [
        [{"px": "100", "sz": "1e13", "n": 1}, {"px": "1", "sz": "1", "n": 1}], [{"px": "101", "sz": "1", "n": 1}]]}}), R)
    out = route(norm, _hl(T + 2500), R)
    assert (out.dead.reason, out.dead.event_type) == ("implausible_value", "book_depth")


def test_bench_streams_are_clean_for_every_venue() -> None:
    from bench.book_depth import VENUES, measure

    for venue in VENUES:
        row = measure(venue, 40, repeats=1)  # raises on a dead letter
        assert row["records"] == 4 and row["messages"] >= 40, row  # 100 ms apart to +4 s: slots 0-3 closed


def test_okx_sequence_reset_and_heartbeat_follow_the_rule() -> None:
    """okx.com/docs-v5: after maintenance seqId may drop below prevSeqId (prevSeqId still the last seqId);
    a no-change push has seqId == prevSeqId and no levels. Neither is a gap."""
    norm = normalizer_for("okx")

    def msg(action, seq, prev, t_ms, bids=(), asks=()):
        return json.dumps({"arg": {"channel": "books", "instId": "BTC-USDT-SWAP"}, "action": action, "data": [{
            "bids": [[*x, "0", "1"] for x in bids], "asks": [[*x, "0", "1"] for x in asks], "ts": str(t_ms),
            "seqId": seq, "prevSeqId": prev}]})

    route(norm, msg("snapshot", 500, -1, T, [("60000.0", "5")], [("60001.0", "5")]), R)
    assert route(norm, msg("update", 500, 500, T + 10), R).ignored == "book_throttled"  # heartbeat
    assert route(norm, msg("update", 3, 500, T + 20, [("59999.0", "1")]), R).ignored == "book_throttled"  # reset
    assert route(norm, msg("update", 4, 3, T + 30), R).ignored == "book_throttled"
    assert norm.books.books["BTC-USDT-SWAP"].bids == {60000.0: 5.0, 59999.0: 1.0}
    assert route(norm, msg("update", 9, 7, T + 40), R).dead.reason == "book_gap"


def test_deribit_grouped_book_is_a_snapshot() -> None:
    norm = normalizer_for("deribit")

    def grouped(t_ms, bid):
        return json.dumps({"jsonrpc": "2.0", "method": "subscription", "params": {
            "channel": "book.BTC-PERPETUAL.none.10.100ms", "data": {
                "timestamp": t_ms, "instrument_name": "BTC-PERPETUAL", "change_id": t_ms,
                "bids": [[bid, 1000.0], [bid - 1000, 500.0]], "asks": [[60000.5, 2000.0], [61000.0, 10.0]]}}})

    assert route(norm, grouped(T, 59999.5), R).ignored == "book_throttled"
    [(_, rec)] = route(norm, grouped(T + 1000, 59990.0), R).records
    # mid 60000: bids 59999.5 (0.08 bp) and 58999.5 (167 bp); USD = the amounts (inverse)
    assert (rec["bid_usd_10bp"], rec["bid_usd_100bp"], rec["bid_usd_200bp"]) == (1000.0, 1000.0, None)
    # asks 60000.5 (0.08 bp), 61000 (167 bp): the view reaches 167 bp on both sides, so 200 bp is null
    assert (rec["ask_usd_10bp"], rec["ask_usd_100bp"], rec["ask_usd_200bp"]) == (2000.0, 2000.0, None)


def test_binance_repeated_event_in_the_buffer_is_skipped_at_sync() -> None:
    norm = normalizer_for("binance-futures")
    route(norm, _ev(96, 102, 95, T + 10, b=[("59999.9", "2")]), R)
    route(norm, _ev(96, 102, 95, T + 10, b=[("59999.9", "2")]), R)  # the same event twice (a replayed frame)
    route(norm, _ev(103, 105, 102, T + 20, b=[("59999.8", "1")]), R)
    assert route(norm, _snap(100, T + 5), R).ignored == "book_synced"
    book = norm.books.books["BTCUSDT"]
    assert book.seq == 105 and book.bids == {59999.9: 2.0, 59999.8: 1.0} and not norm.books.buffers


def test_hyperliquid_documented_l2book_pair() -> None:
    """The two l2Book examples of tests/fixtures/venues/hyperliquid (first mid 97430.5): the first state goes
    out with the second message. By hand: 10 bp of the mid is 97.43, so the bids 97430 x 1.2 and 97429 x 0.5
    and the asks 97431 x 0.8 and 97440 x 2.25 are within 10 bp; the deepest levels (97300, 97600) lie 13.4
    and 17.4 bp out, so the view reaches no band beyond 10 bp: 50 bp and up are null."""
    docs = [json.loads(line) for line in (BOOKS.parent / "venues" / "hyperliquid" / "doc_examples.jsonl").read_text()
            .splitlines() if line.strip()]
    first, second = (d["raw"] for d in docs if d["name"].startswith("l2Book"))
    norm = normalizer_for("hyperliquid")
    recv = first["data"]["time"] * 1000 + 300_000
    assert route(norm, json.dumps(first), recv).ignored == "book_throttled"
    [(_, rec)] = route(norm, json.dumps(second), recv + 1_200_000).records
    assert rec["bid_reach_bp"] == pytest.approx((97430.5 - 97300) / 97430.5 * 1e4)  # 13.39 bp
    assert rec["bid_usd_10bp"] == pytest.approx(97430 * 1.2 + 97429 * 0.5) and rec["bid_usd_50bp"] is None
    assert rec["ask_usd_10bp"] == pytest.approx(97431 * 0.8 + 97440 * 2.25) and rec["ask_usd_50bp"] is None


def test_bench_table_has_a_book_depth_row_per_venue() -> None:
    from bench import run
    from tests.unit.test_bench_quick import _fake_stages

    st = {**_fake_stages(), "book_depth": {"okx": {"messages_per_cpu_s": 19009}, "bybit": {"messages_per_cpu_s": 79091}}}
    table = run.format_table({"stages": st, "targets": run.targets(st)})
    rows = [line for line in table.splitlines() if "book -> book_depth" in line]
    assert len(rows) == 2 and "okx" in rows[0] and run._f(19009) in rows[0]
    assert "book -> book_depth" not in run.format_table({"stages": _fake_stages(), "targets": run.targets(_fake_stages())})
