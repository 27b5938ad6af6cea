"""book_depth.v1 events into bars_1m (migration 0020): the minute's last depth record per
instrument and the count, the same through partial bars (merged in any split), the per-day
column path and a stored row read back."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from pipelines.transforms.bars import (
    BAR_EVENT_COLUMNS,
    IDENT_COLUMNS,
    bar_row_to_partial,
    day_bars,
    merge_partials,
    partial_bars,
    partial_to_row,
    records_to_batches,
)

T0 = 1_769_990_400_000_000  # a minute boundary (µs)
S = 1_000_000


def depth(t_us: int, bid: float | None, ask: float | None, symbol: str = "BTCUSDT") -> dict:
    return {"exchange": "binance-futures", "symbol": symbol, "base": "BTC", "quote": "USDT", "kind": "perpetual",
            "expiry": None, "event_time": t_us, "ingest_time": t_us + 5_000, "best_bid": 99.99, "best_ask": 100.01,
            "bid_reach_bp": 250.0 if bid is not None else 60.0, "ask_reach_bp": 250.0,
            "bid_usd_10bp": None, "bid_usd_50bp": None, "bid_usd_100bp": bid, "bid_usd_200bp": None,
            "ask_usd_10bp": None, "ask_usd_50bp": None, "ask_usd_100bp": ask, "ask_usd_200bp": None, "levels": 40}


RECORDS = [
    depth(T0 + 50 * S, 110e6, 190e6),  # minute 0's last (out of order on purpose)
    depth(T0 + 10 * S, 100e6, 200e6),
    depth(T0 + 70 * S, None, 300e6),  # minute 1: the bid book view does not reach 100 bp
]
# by hand: minute 0 -> the record at 50 s, 2 records; minute 1 -> bid null, ask 300M, 1 record
EXPECTED = {
    T0: (110e6, 190e6, T0 + 50 * S, 2),
    T0 + 60 * S: (None, 300e6, T0 + 70 * S, 1),
}


def _depth_cols(row: dict) -> tuple:
    ts = row["depth_ts"]
    us = None if ts is None else int((ts.replace(tzinfo=dt.UTC) - dt.datetime(1970, 1, 1, tzinfo=dt.UTC))
                                     .total_seconds() * 1e6)
    return row["depth_bid_usd_100bp"], row["depth_ask_usd_100bp"], us, row["depth_events"]


def _rows(partials: list) -> dict[int, dict]:
    merged: dict = {}
    for key, p in partials:
        merged[key] = merge_partials(merged.get(key), p)
    return {key[2]: partial_to_row(p) for key, p in merged.items()}


def test_depth_bars_from_partials_in_any_split() -> None:
    one = _rows(partial_bars(records_to_batches("book_depth", RECORDS)))
    split = _rows([*partial_bars(records_to_batches("book_depth", RECORDS[:1])),
                   *partial_bars(records_to_batches("book_depth", RECORDS[1:]))])
    for rows in (one, split):
        assert {m: _depth_cols(r) for m, r in rows.items()} == EXPECTED
        # a minute with depth only has no trade, liquidation, OI or funding figures
        assert all(r["trade_count"] == 0 and r["close"] is None and r["oi_events"] == 0 for r in rows.values())


def test_depth_bars_by_day_columns_and_read_back_from_the_mart() -> None:
    table = pa.Table.from_batches([records_to_batches("book_depth", RECORDS)])
    day = day_bars({"book_depth": table.select([*IDENT_COLUMNS, *BAR_EVENT_COLUMNS["book_depth"]])})
    by_minute = {}
    for r in day.to_pylist():
        m = int((r["minute_ts"] - dt.datetime(1970, 1, 1)).total_seconds() * 1e6)
        by_minute[m] = r
    assert {m: _depth_cols(r) for m, r in by_minute.items()} == EXPECTED
    # a stored row back to a partial, merged with a later record of the same minute: the later wins
    (_key, p), = [bar_row_to_partial(_rows(partial_bars(records_to_batches("book_depth", RECORDS)))[T0])]
    later = partial_bars(records_to_batches("book_depth", [depth(T0 + 55 * S, 120e6, 180e6)]))[0][1]
    assert _depth_cols(partial_to_row(merge_partials(p, later))) == (120e6, 180e6, T0 + 55 * S, 3)
