"""ComputeBars' per-instrument shape: batches split per (exchange, symbol), grouped, each
instrument's bars made at once (column-wise, or merged with stored bars). Expected values are
computed by hand in the comments."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from pipelines.transforms.bars import (
    BAR_COLUMNS,
    ComputeBars,
    instrument_bars,
    records_to_batches,
    split_by_instrument,
)
from pipelines.transforms.config import AnalyticsConfig
from tests.helpers import read_batches_fn

T0 = 1_700_000_040_000_000  # 2023-11-14 22:14:00 UTC, a minute boundary (epoch micros)
M0 = dt.datetime(2023, 11, 14, 22, 14)
S = 1_000_000
SEC = dt.timedelta(seconds=1)
BTC = {"exchange": "binance-futures", "symbol": "BTCUSDT", "base": "BTC", "quote": "USDT", "kind": "perpetual"}
ETH = {"exchange": "bybit", "symbol": "ETHUSDT", "base": "ETH", "quote": "USDT", "kind": "perpetual"}


def trade(inst: dict, t_us: int, price: float, size: float, taker: str) -> dict:
    return {**inst, "expiry": None, "event_time": t_us, "ingest_time": t_us, "trade_id": None, "price": price,
            "size": size, "notional_usd": price * size, "taker_side": taker}


def liq(inst: dict, t_us: int, side: str, price: float, size: float) -> dict:
    return {**inst, "expiry": None, "event_time": t_us, "ingest_time": t_us, "side": side, "price": price,
            "size": size, "notional_usd": price * size, "order_id": None}


def oi(inst: dict, t_us: int, oi_base: float, oi_usd: float | None) -> dict:
    return {**inst, "expiry": None, "event_time": t_us, "ingest_time": t_us, "open_interest": oi_base,
            "open_interest_usd": oi_usd}


def funding(inst: dict, t_us: int, mark: float, rate: float | None, index: float | None) -> dict:
    return {**inst, "expiry": None, "event_time": t_us, "ingest_time": t_us, "mark_price": mark,
            "index_price": index, "funding_rate": rate, "next_funding_time": None}


def stored_bar(inst: dict, minute: dt.datetime, **values) -> dict:
    """A bars_1m row as the mart holds it: empty minute defaults, then ``values``."""
    row = dict.fromkeys(BAR_COLUMNS)
    row.update(minute_ts=minute, **inst, volume_base=0.0)
    for col in ("volume_usd", "taker_buy_usd", "taker_sell_usd", "long_liq_usd", "short_liq_usd"):
        row[col] = 0.0
    for col in ("trade_count", "long_liq_count", "short_liq_count", "liquidation_events", "oi_events", "funding_events",
                "depth_events"):
        row[col] = 0
    row.update(values)
    row["volume_base_exact"] = Decimal(repr(row["volume_base"])).quantize(Decimal("1e-12"))  # as the mart keeps it
    return row


# out-of-order times, instruments interleaved; BTC's minute 0 is touched by two trade batches
BATCHES = [
    ("trade", [
        trade(BTC, T0 + 40 * S, 101.0, 2.0, "buy"),  # 202
        trade(ETH, T0 + 70 * S, 2000.0, 0.5, "sell"),  # 1000, minute 1
        trade(BTC, T0 + 10 * S, 100.0, 1.0, "sell"),  # 100
        trade(ETH, T0 + 5 * S, 1990.0, 1.0, "buy"),  # 1990
        trade(BTC, T0 + 65 * S, 102.0, 1.0, "buy"),  # 102, minute 1
    ]),
    ("trade", [
        trade(BTC, T0 + 20 * S, 99.0, 3.0, "buy"),  # 297
        trade(BTC, T0 + 50 * S, 100.5, 2.0, "sell"),  # 201
    ]),
    ("liquidation", [
        liq(BTC, T0 + 30 * S, "long", 99.5, 4.0),  # 398
        liq(ETH, T0 + 8 * S, "short", 1995.0, 2.0),  # 3990
        liq(BTC, T0 + 15 * S, "short", 100.0, 1.0),  # 100
    ]),
    ("open_interest", [
        oi(BTC, T0 + 45 * S, 500.0, None),  # no price in the message: valued at the close
        oi(BTC, T0 + 5 * S, 490.0, 49_000.0),
    ]),
    ("funding", [funding(ETH, T0 + 30 * S, 1992.0, 0.0001, 1991.0)]),
]

# BTC minute 0 as an earlier cycle stored it: trades 5 s @ 98 x 1.0 buy (98 USD) and
# 55 s @ 103 x 0.5 sell (51.5 USD), a 500 USD long liquidation, OI 480 at 2 s without a price
PRIOR_BTC_M0 = stored_bar(
    BTC, M0, open=98.0, high=103.0, low=98.0, close=103.0, first_trade_ts=M0 + 5 * SEC, last_trade_ts=M0 + 55 * SEC,
    volume_base=1.5, volume_usd=149.5, trade_count=2, taker_buy_usd=98.0, taker_sell_usd=51.5,
    long_liq_count=1, long_liq_usd=500.0, max_liq_usd=500.0, liquidation_events=1,
    oi_first=480.0, oi_last=480.0, oi_first_usd=480.0 * 103.0, oi_last_usd=480.0 * 103.0,
    oi_first_ts=M0 + 2 * SEC, oi_last_ts=M0 + 2 * SEC, oi_events=1,
)
# a stored minute this cycle has no event for: it comes back unchanged
PRIOR_ETH_M5 = stored_bar(
    ETH, M0 + dt.timedelta(minutes=5), open=2010.0, high=2010.0, low=2010.0, close=2010.0,
    first_trade_ts=M0 + 301 * SEC, last_trade_ts=M0 + 301 * SEC, volume_base=0.25, volume_usd=502.5,
    trade_count=1, taker_buy_usd=502.5,
)


_SINK: dict[str, list] = {}  # FnApiRunner runs in this process: the pipeline appends here


def _append(row: dict, key: str) -> None:
    _SINK[key].append(row)


def run_bars(prior: list[dict] | None = None) -> dict[tuple, dict]:
    rows: list[dict] = []
    _SINK[str(id(rows))] = rows
    with TestPipeline(runner="FnApiRunner") as p:
        batches = p | beam.Create([None]) | beam.ParDo(read_batches_fn(BATCHES))
        prior_pc = p | "Prior" >> beam.Create(prior) if prior else None
        bars = batches | ComputeBars(AnalyticsConfig(), prior_bars=prior_pc)
        bars | beam.Map(_append, str(id(rows)))
    keyed = {(r["symbol"], r["minute_ts"]): r for r in rows}
    assert len(keyed) == len(rows), "one row per instrument and minute"
    return keyed


def _check(row: dict, **expected) -> None:
    assert {k: row[k] for k in expected} == expected


def test_split_by_instrument_keeps_each_instruments_rows_in_order() -> None:
    parts = split_by_instrument(records_to_batches("trade", BATCHES[0][1]))
    got = {key: (ident, t["event_time"].to_pylist(), t["price"].to_pylist()) for key, ident, t in parts}
    assert got == {
        ("binance-futures", "BTCUSDT"): (("BTC", "USDT", "perpetual"), [T0 + 40 * S, T0 + 10 * S, T0 + 65 * S],
                                         [101.0, 100.0, 102.0]),
        ("bybit", "ETHUSDT"): (("ETH", "USDT", "perpetual"), [T0 + 70 * S, T0 + 5 * S], [2000.0, 1990.0]),
    }
    # only the columns bars read cross the data plane; the event type rides in the schema
    table = next(t for key, _, t in parts if key == ("binance-futures", "BTCUSDT"))
    assert table.column_names == ["event_time", "price", "size", "notional_usd", "taker_side"]
    assert table.schema.metadata[b"event_type"] == b"trade"
    assert split_by_instrument(records_to_batches("trade", [])) == []


def test_bars_of_several_instruments_and_event_types() -> None:
    rows = run_bars()
    assert sorted(rows) == [("BTCUSDT", M0), ("BTCUSDT", M0 + 60 * SEC), ("ETHUSDT", M0), ("ETHUSDT", M0 + 60 * SEC)]
    btc0 = rows[("BTCUSDT", M0)]
    # trades 10 s @100 sell 1, 20 s @99 buy 3, 40 s @101 buy 2, 50 s @100.5 sell 2 (two batches)
    _check(btc0, open=100.0, high=101.0, low=99.0, close=100.5, first_trade_ts=M0 + 10 * SEC,
           last_trade_ts=M0 + 50 * SEC, volume_base=8.0, volume_usd=800.0, taker_buy_usd=499.0,
           taker_sell_usd=301.0, trade_count=4, base="BTC", quote="USDT", kind="perpetual", exchange="binance-futures")
    # liquidations: long 398, short 100
    _check(btc0, long_liq_count=1, long_liq_usd=398.0, short_liq_count=1, short_liq_usd=100.0, max_liq_usd=398.0,
           liquidation_events=2)
    # OI first (5 s, 490, reported 49 000); last (45 s, 500, no price -> 500 x close 100.5)
    _check(btc0, oi_first=490.0, oi_first_usd=49_000.0, oi_first_usd_reported=49_000.0, oi_first_ts=M0 + 5 * SEC,
           oi_last=500.0, oi_last_usd=50_250.0, oi_last_usd_reported=None, oi_last_ts=M0 + 45 * SEC, oi_events=2)
    _check(btc0, funding_rate_last=None, mark_price_last=None, index_price_last=None, funding_ts=None, funding_events=0)
    _check(rows[("BTCUSDT", M0 + 60 * SEC)], open=102.0, close=102.0, volume_usd=102.0, taker_buy_usd=102.0,
           taker_sell_usd=0.0, trade_count=1, long_liq_usd=0.0, max_liq_usd=None, liquidation_events=0, oi_first=None,
           oi_first_usd=None, oi_events=0)
    _check(rows[("ETHUSDT", M0)], open=1990.0, close=1990.0, volume_usd=1990.0, trade_count=1, short_liq_count=1,
           short_liq_usd=3990.0, max_liq_usd=3990.0, funding_rate_last=0.0001, mark_price_last=1992.0,
           index_price_last=1991.0, funding_ts=M0 + 30 * SEC, funding_events=1, oi_first=None, exchange="bybit")
    _check(rows[("ETHUSDT", M0 + 60 * SEC)], open=2000.0, volume_usd=1000.0, taker_sell_usd=1000.0, taker_buy_usd=0.0,
           volume_base=0.5, trade_count=1)


def test_prior_bar_merges_into_a_minute_touched_by_two_batches() -> None:
    rows = run_bars(prior=[PRIOR_BTC_M0, PRIOR_ETH_M5])
    assert len(rows) == 5
    btc0 = rows[("BTCUSDT", M0)]
    # trades: prior 5 s @98 and 55 s @103 around the new 10..50 s ones
    _check(btc0, open=98.0, high=103.0, low=98.0, close=103.0, first_trade_ts=M0 + 5 * SEC,
           last_trade_ts=M0 + 55 * SEC, volume_base=9.5, volume_usd=949.5, taker_buy_usd=597.0,
           taker_sell_usd=352.5, trade_count=6)
    # liquidations: longs 398 + 500, short 100
    _check(btc0, long_liq_count=2, long_liq_usd=898.0, short_liq_count=1, short_liq_usd=100.0, max_liq_usd=500.0,
           liquidation_events=3)
    # OI: first is the prior's (2 s, 480, no price) -> valued at the merged close 103; last (45 s, 500) x 103
    _check(btc0, oi_first=480.0, oi_first_usd=49_440.0, oi_first_usd_reported=None, oi_first_ts=M0 + 2 * SEC,
           oi_last=500.0, oi_last_usd=51_500.0, oi_last_ts=M0 + 45 * SEC, oi_events=3)
    # the untouched instrument/minutes are as without prior bars; the stored ETH minute 5 comes back as stored
    _check(rows[("BTCUSDT", M0 + 60 * SEC)], open=102.0, volume_usd=102.0, trade_count=1)
    _check(rows[("ETHUSDT", M0)], volume_usd=1990.0, short_liq_usd=3990.0, funding_events=1)
    assert rows[("ETHUSDT", M0 + 300 * SEC)] == PRIOR_ETH_M5


def test_one_symbol_with_two_idents_is_one_bar_like_the_merge() -> None:
    # a venue's metadata changed within the minute (base renamed): the partials of both idents
    # merge into one bar, as merge_partials does, with the smaller ident ("BTC" < "XBT")
    xbt = {**BTC, "base": "XBT"}
    batch = records_to_batches("trade", [trade(xbt, T0 + 1 * S, 100.0, 1.0, "buy"),
                                         trade(BTC, T0 + 2 * S, 101.0, 1.0, "sell")])
    parts = split_by_instrument(batch)
    assert sorted(ident for _, ident, _ in parts) == [("BTC", "USDT", "perpetual"), ("XBT", "USDT", "perpetual")]
    (row,) = instrument_bars(("binance-futures", "BTCUSDT"), [(ident, t) for _, ident, t in parts])
    _check(row, base="BTC", open=100.0, close=101.0, volume_usd=201.0, taker_buy_usd=100.0, taker_sell_usd=101.0,
           trade_count=2, minute_ts=M0)


def test_column_wise_rows_equal_the_merge_of_partials() -> None:
    """The column-wise path (one ident, no stored bars) and the merge path (forced here by a
    stored bar of a far minute) agree on random events with ties, nulls and every event type."""
    rng = random.Random(11)
    times = [T0 + rng.randrange(0, 5 * 60 * S, 250_000) for _ in range(400)]  # many equal times

    def t() -> int:
        return rng.choice(times)

    events = {
        "trade": [trade(BTC, t(), rng.choice([99.0, 100.0, 100.5]), rng.choice([0.1, 1.0, 2.5]),
                        rng.choice(["buy", "sell"])) for _ in range(300)],
        "liquidation": [liq(BTC, t(), rng.choice(["long", "short"]), 100.0, rng.choice([1.0, 3.0])) for _ in range(40)],
        "open_interest": [oi(BTC, T0 + rng.randrange(0, 7 * 60 * S, 500_000), rng.choice([10.0, 11.0]),
                             rng.choice([None, 1_000.0])) for _ in range(40)],
        "funding": [funding(BTC, t(), rng.choice([99.0, 101.0]), rng.choice([None, 1e-4]), rng.choice([None, 99.5]))
                    for _ in range(40)],
    }
    parts = [(ident, table) for et, recs in events.items() for i in range(0, len(recs), 17)
             for _, ident, table in split_by_instrument(records_to_batches(et, recs[i:i + 17]))]
    column_wise = instrument_bars(("binance-futures", "BTCUSDT"), parts)
    far = stored_bar(BTC, M0 + dt.timedelta(hours=5), funding_events=1, mark_price_last=1.0,
                     funding_ts=M0 + dt.timedelta(hours=5))
    merged = instrument_bars(("binance-futures", "BTCUSDT"), parts, prior_rows=[far])
    assert merged[-1]["minute_ts"] == far["minute_ts"]
    assert len(column_wise) == 7  # OI runs to minute 6, the other event types to minute 4
    for a, b in zip(column_wise, merged[:-1], strict=True):
        assert a.keys() == b.keys()
        for col in a:
            if col == "volume_base":  # float sum: order-dependent in the last bits
                assert a[col] == pytest.approx(b[col], rel=1e-12)
            else:
                assert (col, a[col], type(a[col])) == (col, b[col], type(b[col]))


def test_usd_beyond_float_exact_integers_is_divided_exactly() -> None:
    # 9,007,199,254.740993 USD = 2**53 + 1 micro-USD in one minute: float(micros) would round
    # to 2**53, so the column-wise path divides those in Python, like partial_to_row
    recs = [{**trade(BTC, T0 + S, 1.0, 1.0, "sell"), "notional_usd": 9_007_199_254.740993}]
    parts = [(ident, t) for _, ident, t in split_by_instrument(records_to_batches("trade", recs))]
    (row,) = instrument_bars(("binance-futures", "BTCUSDT"), parts)
    assert row["volume_usd"] == row["taker_sell_usd"] == (2**53 + 1) / 1_000_000
    assert row["taker_buy_usd"] == 0.0
