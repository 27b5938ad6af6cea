"""Plausibility (issue 16, item 0a): what no market produces is a dead letter with its reason, for
every venue and event type, on the checked path and through the trade fast paths; the Kafka
source's vectorized screen (``implausible_rows``) agrees with the per-record check.

The poison values are the ones a fuzzing campaign got through the normalizers: price 1e30, events
stamped in the year 2099, size 1e13, open interest 0 or negative. Each is paired with the same
message at sane values, which must normalize (so a test cannot pass by refusing everything).
"""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pytest

from connectors.exchanges import normalizer_for
from connectors.normalize import route
from connectors.plausibility import Plausibility, implausibility, implausible_rows
from connectors.simulator.scenarios import get_scenario
from connectors.simulator.venues import WRITERS
from schemas.arrow import arrow_schema

T_MS = 1_700_000_000_000  # 2023-11-14 22:13:20 UTC
RECV_US = T_MS * 1000 + 50_000  # received 50 ms later
YEAR_2099_MS = 4_070_908_800_000
BEFORE_VENUES_MS = 1_300_000_000_000  # 2011-03-13: inside to_epoch_us' 2009..2100, before every venue
BTC_PRICE = 30_000.0


def _writer(venue: str):
    symbols = get_scenario("A").symbols
    s = next(i for i, spec in enumerate(symbols) if spec.base == "BTC")
    return WRITERS[venue](symbols, 0), s


def _sim_trade(venue: str, price: float = BTC_PRICE, qty: float = 0.5, t_ms: int = T_MS) -> str:
    w, s = _writer(venue)
    return w.trade(s, t_ms, price, qty, True)


def _sim_liquidation(venue: str, price: float = BTC_PRICE, qty: float = 0.5, t_ms: int = T_MS) -> str:
    w, s = _writer(venue)
    raw, _, _ = w.liquidation(s, t_ms, price, qty, True)
    return raw


def _sim_snapshots(venue: str, oi_base: float = 1000.0, funding_8h: float = 1e-4, mark: float = BTC_PRICE) -> list[str]:
    """The venue's OI/funding messages (snapshots, then mark updates) of one moment."""
    w, s = _writer(venue)
    msgs, _, _ = w.snapshots(s, T_MS, mark, mark, funding_8h, oi_base)
    return [raw for _, raw in [*msgs, *w.marks(s, T_MS + 1, mark, mark, funding_8h)]]


def _deribit_trade(price: float = BTC_PRICE, amount: float = 10.0, t_ms: int = T_MS, liquidation: bool = False) -> str:
    item = {"trade_seq": 1, "trade_id": "48079269", "timestamp": t_ms, "tick_direction": 0, "price": price,
            "mark_price": BTC_PRICE, "instrument_name": "BTC-PERPETUAL", "index_price": BTC_PRICE,
            "direction": "sell", "amount": amount}
    if liquidation:
        item["liquidation"] = "T"
    return json.dumps({"jsonrpc": "2.0", "method": "subscription",
                       "params": {"channel": "trades.BTC-PERPETUAL.raw", "data": [item]}})


def _deribit_ticker(oi: float = 5e8, mark: float = BTC_PRICE, funding: float = 1e-4) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": "subscription", "params": {
        "channel": "ticker.BTC-PERPETUAL.100ms", "data": {
            "timestamp": T_MS, "state": "open", "open_interest": oi, "mark_price": mark, "last_price": mark,
            "instrument_name": "BTC-PERPETUAL", "index_price": BTC_PRICE, "funding_8h": funding,
            "current_funding": funding}}})


def _delivery_trade(price: float = BTC_PRICE, contracts: float = 3, t_ms: int = T_MS) -> str:
    return json.dumps({"stream": "btcusd_perp@aggTrade", "data": {
        "e": "aggTrade", "E": t_ms, "a": 1, "s": "BTCUSD_PERP", "p": repr(price), "q": repr(contracts),
        "f": 1, "l": 1, "T": t_ms, "m": True}})


def _delivery_liquidation(price: float = BTC_PRICE, contracts: float = 3, t_ms: int = T_MS) -> str:
    return json.dumps({"e": "forceOrder", "E": t_ms, "o": {
        "s": "BTCUSD_PERP", "ps": "BTCUSD", "S": "SELL", "o": "LIMIT", "f": "IOC", "q": repr(contracts),
        "p": repr(price), "ap": repr(price), "X": "FILLED", "l": repr(contracts), "z": repr(contracts),
        "T": t_ms}})


SIM_VENUES = sorted(WRITERS)  # binance-futures, bybit, hyperliquid, okx

# (venue, case, raw message, reason): every venue's trades and liquidations, every kind of poison
CASES: list[tuple[str, str, str, str]] = []
for _v in SIM_VENUES:
    CASES += [
        (_v, "trade price 1e30", _sim_trade(_v, price=1e30, qty=0.01), "implausible_value"),
        (_v, "trade size 1e13", _sim_trade(_v, price=0.5, qty=1e13), "implausible_value"),
        (_v, "trade notional $1e11", _sim_trade(_v, price=BTC_PRICE, qty=4e6), "implausible_value"),
        (_v, "trade in 2099", _sim_trade(_v, t_ms=YEAR_2099_MS), "implausible_time"),
        (_v, "trade before the venue", _sim_trade(_v, t_ms=BEFORE_VENUES_MS), "implausible_time"),
        (_v, "liquidation price 1e30", _sim_liquidation(_v, price=1e30, qty=0.01), "implausible_value"),
        (_v, "liquidation in 2099", _sim_liquidation(_v, t_ms=YEAR_2099_MS), "implausible_time"),
    ]
CASES += [
    ("deribit", "trade price 1e30", _deribit_trade(price=1e30, amount=1e6), "implausible_value"),
    ("deribit", "trade in 2099", _deribit_trade(t_ms=YEAR_2099_MS), "implausible_time"),
    ("deribit", "liquidation price 1e30", _deribit_trade(price=1e30, liquidation=True), "implausible_value"),
    ("deribit", "OI 0 on a perpetual", _deribit_ticker(oi=0), "implausible_value"),
    ("deribit", "OI negative", _deribit_ticker(oi=-5), "bad_value"),  # negative amounts: bad_value, as before
    ("deribit", "mark price 1e30", _deribit_ticker(mark=1e30), "implausible_value"),
    ("deribit", "funding rate 500%", _deribit_ticker(funding=5.0), "implausible_value"),
    ("binance-delivery", "trade price 1e30", _delivery_trade(price=1e30), "implausible_value"),
    ("binance-delivery", "trade in 2099", _delivery_trade(t_ms=YEAR_2099_MS), "implausible_time"),
    ("binance-delivery", "trade before the venue", _delivery_trade(t_ms=1_590_000_000_000), "implausible_time"),
    ("binance-delivery", "liquidation price 1e30", _delivery_liquidation(price=1e30), "implausible_value"),
    ("binance-delivery", "liquidation notional $1e11", _delivery_liquidation(contracts=1e9), "implausible_value"),
]
SANE: list[tuple[str, str]] = [(v, _sim_trade(v)) for v in SIM_VENUES] + [(v, _sim_liquidation(v)) for v in SIM_VENUES] + [
    ("deribit", _deribit_trade()), ("deribit", _deribit_trade(liquidation=True)), ("deribit", _deribit_ticker()),
    ("binance-delivery", _delivery_trade()), ("binance-delivery", _delivery_liquidation()),
]


@pytest.mark.parametrize(("venue", "case", "raw", "reason"), CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_poison_is_a_dead_letter_with_its_reason(venue: str, case: str, raw: str, reason: str) -> None:
    out = route(normalizer_for(venue), raw, RECV_US)
    assert out.records == [] and out.dead is not None, f"{case}: {out}"
    assert out.dead.reason == reason, out.dead
    assert out.dead.detail and out.dead.raw == raw.encode()


@pytest.mark.parametrize(("venue", "raw"), SANE, ids=[f"{v}-{i}" for i, (v, _) in enumerate(SANE)])
def test_the_same_messages_at_market_values_normalize(venue: str, raw: str) -> None:
    out = route(normalizer_for(venue), raw, RECV_US)
    assert out.dead is None and out.records, out


@pytest.mark.parametrize("venue", SIM_VENUES)
def test_open_interest_and_funding_poison_per_venue(venue: str) -> None:
    """OI 0 and an absurd funding rate on each simulated venue's OI/funding messages (a venue may
    split them over several messages: at least one must be refused, none may pass the poison)."""
    for oi, funding, what in ((0.0, 1e-4, "open_interest"), (1000.0, 8 * 5.0, "funding_rate")):
        norm = normalizer_for(venue)  # one normalizer: a venue may merge its messages (OKX funding + mark)
        outcomes = [route(norm, raw, RECV_US) for raw in _sim_snapshots(venue, oi, funding)]
        dead = [o.dead for o in outcomes if o.dead is not None]
        assert dead and all(d.reason == "implausible_value" and what in d.detail for d in dead), outcomes
        for o in outcomes:  # what passed carries none of the poison
            for _, rec in o.records:
                assert rec.get("open_interest", 1) > 0 and abs(rec.get("funding_rate") or 0) <= 1
    norm = normalizer_for(venue)
    sane = [route(norm, raw, RECV_US) for raw in _sim_snapshots(venue)]
    assert all(o.dead is None for o in sane) and any(o.records for o in sane)


@pytest.mark.parametrize("venue", ["binance-futures", "bybit", "okx", "hyperliquid", "binance-delivery"])
def test_trade_fast_paths_decline_the_poison(venue: str) -> None:
    """The fast path returns records route() does not check again: it must decline, so that the
    checked path names the reason (the sane trade shows the fast path does take the frame)."""
    norm = normalizer_for(venue)
    make = _delivery_trade if venue == "binance-delivery" else (lambda **kw: _sim_trade(venue, **kw))
    assert norm.normalize_raw(make().encode(), RECV_US)
    for poison in (make(price=1e30), make(t_ms=YEAR_2099_MS)):
        assert norm.normalize_raw(poison.encode(), RECV_US) is None


def test_event_time_ahead_of_receipt_by_more_than_the_skew() -> None:
    b = Plausibility(max_future_skew_s=60)
    rec = {"exchange": "okx", "event_time": RECV_US + 59_000_000, "price": 1.0, "size": 1.0, "notional_usd": 1.0}
    assert implausibility("trade", rec, RECV_US, b) is None
    rec["event_time"] = RECV_US + 61_000_000
    assert implausibility("trade", rec, RECV_US, b)[0] == "implausible_time"


def test_bounds_come_from_the_environment() -> None:
    b = Plausibility.from_env({"LIQSTREAM_MAX_PRICE": "100", "LIQSTREAM_MAX_FUTURE_SKEW_S": "5",
                               "LIQSTREAM_VENUE_LAUNCH": "okx=2020-01-01"})
    assert (b.max_price, b.max_future_skew_s) == (100.0, 5)
    assert b.venue_launch["okx"] == "2020-01-01" and b.venue_launch["deribit"] == "2016-06-01"


def _random_record(rng: random.Random, event_type: str) -> dict:
    pick = rng.choice
    t = pick([T_MS * 1000, YEAR_2099_MS * 1000, BEFORE_VENUES_MS * 1000, RECV_US + 299_000_000])
    rec = {"exchange": pick(["okx", "hyperliquid", "mystery-venue"]), "symbol": "X", "base": "X", "quote": "USD",
           "kind": pick(["perpetual", "option"]), "expiry": None, "event_time": t,
           "ingest_time": pick([RECV_US, RECV_US, 4_000_000_000_000_000])}
    num = lambda: pick([1.0, 3e4, 0.0, -1.0, 1e30, 1e13, float("nan"), 1e-13, 5e9])  # noqa: E731
    if event_type == "trade":
        rec.update(trade_id=None, price=num(), size=num(), notional_usd=num(), taker_side="buy")
    elif event_type == "open_interest":
        rec.update(open_interest=num(), open_interest_usd=pick([None, num()]))
    else:
        rec.update(mark_price=num(), index_price=pick([None, num()]), funding_rate=pick([None, 1e-4, 2.0, -3.0]),
                   next_funding_time=None)
    return rec


@pytest.mark.parametrize("event_type", ["trade", "open_interest", "funding"])
def test_the_vectorized_screen_agrees_with_the_per_record_check(event_type: str) -> None:
    rng = random.Random(16)
    now = RECV_US + 1_000_000
    recs = [_random_record(rng, event_type) for _ in range(400)]
    batch = pa.RecordBatch.from_pylist(recs, schema=arrow_schema(event_type))
    got = {i: reason for i, reason, _ in implausible_rows(event_type, batch, now)}
    want = {}
    for i, r in enumerate(recs):
        if r["ingest_time"] > now + 300_000_000:
            want[i] = "implausible_time"
        elif (why := implausibility(event_type, r)) is not None:
            want[i] = why[0]
    assert got == want
    assert 0 < len(want) < len(recs)  # both kinds of rows were drawn


def test_the_production_decoder_rejects_implausible_records() -> None:
    """pipelines/production.py decodes Kafka records itself (ReadFromKafka): the same check applies."""
    from collections import namedtuple

    from connectors.avro import AvroEncoder
    from pipelines.production import REJECTS, DecodeKafkaValues

    Rec = namedtuple("Rec", "topic partition offset key value timestamp")
    good = {"exchange": "okx", "symbol": "BTC-USDT-SWAP", "base": "BTC", "quote": "USDT", "kind": "perpetual",
            "expiry": None, "event_time": RECV_US, "ingest_time": RECV_US, "trade_id": "1", "price": BTC_PRICE,
            "size": 0.1, "notional_usd": 3000.0, "taker_side": "buy"}
    fn = DecodeKafkaValues()
    fn.setup()
    enc = AvroEncoder("trade")
    out = []
    for off, rec in enumerate([good, {**good, "price": 1e30}, {**good, "event_time": YEAR_2099_MS * 1000}]):
        out += list(fn.process(Rec("trades.v1", 0, off, b"okx:BTC-USDT-SWAP", enc.encode(rec), T_MS)))
    assert out[0] == ("trade", good)
    assert [(o.tag, o.value["offset"], o.value["reason"]) for o in out[1:]] == [
        (REJECTS, 1, "implausible_value"), (REJECTS, 2, "implausible_time")]
