"""The backfill's per-day pass (ADR 022): a whole day's events aggregated once for every
instrument (``day_bars``, ``liquidation_minutes``) give the rows of the per-instrument path
(``instrument_bars``, ``LiquidationBatchesPerMinute``) exactly, and hand-computed values."""

from __future__ import annotations

import random
from decimal import Decimal

import apache_beam as beam
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.testing.test_pipeline import TestPipeline

from pipelines import archive
from pipelines.liquidations import LIQUIDATIONS_1M_SCHEMA, LiquidationBatchesPerMinute, liquidation_minutes
from pipelines.transforms.bars import (
    BAR_COLUMNS,
    BAR_EVENT_COLUMNS,
    IDENT_COLUMNS,
    day_bars,
    instrument_bars,
    records_to_batches,
    split_by_instrument,
)
from schemas.arrow import arrow_schema
from tests.unit.test_transform_bars_split import BATCHES, BTC, ETH, M0, SEC, T0, S, funding, liq, oi, trade


def _tables(events: dict[str, list[dict]], dictionary: bool = False) -> dict[str, pa.Table]:
    out = {}
    for et, recs in events.items():
        t = pa.Table.from_batches([records_to_batches(et, recs)]).select([*IDENT_COLUMNS, *BAR_EVENT_COLUMNS[et]])
        if dictionary:  # as read_day_columns reads them
            t = pa.table({c: t[c].dictionary_encode() if c in IDENT_COLUMNS else t[c] for c in t.column_names})
        out[et] = t
    return out


def _per_instrument(events: dict[str, list[dict]]) -> list[dict]:
    """The streaming path's rows: each batch split per instrument, each instrument's bars made at once."""
    parts: dict[tuple, list] = {}
    for et, recs in events.items():
        for i in range(0, len(recs), 13):  # several batches per type, as a reader yields them
            for key, ident, t in split_by_instrument(records_to_batches(et, recs[i:i + 13])):
                parts.setdefault(key, []).append((ident, t))
    return [row for key in sorted(parts) for row in instrument_bars(key, parts[key])]


def _assert_same_rows(day: pa.Table, rows: list[dict]) -> None:
    got = day.to_pylist()
    assert day.column_names == list(BAR_COLUMNS)
    assert len(got) == len(rows)
    for a, b in zip(got, rows, strict=True):
        for col in BAR_COLUMNS:
            # equal values; a Decimal compares by value (Decimal('0E-12') == Decimal('0.000000000000'))
            assert (col, a[col]) == (col, b[col])
            assert type(a[col]) is type(b[col]) or a[col] is None or b[col] is None, col


def _batches_by_type() -> dict[str, list[dict]]:
    events: dict[str, list[dict]] = {}
    for et, recs in BATCHES:
        events.setdefault(et, []).extend(recs)
    return events


def test_day_bars_equal_the_per_instrument_rows_and_the_hand_computed_values() -> None:
    events = _batches_by_type()
    for dictionary in (False, True):
        day = day_bars(_tables(events, dictionary))
        _assert_same_rows(day, _per_instrument(events))
    rows = {(r["symbol"], r["minute_ts"]): r for r in day.to_pylist()}
    btc0 = rows[("BTCUSDT", M0)]
    # trades 10 s @100 sell 1, 20 s @99 buy 3, 40 s @101 buy 2, 50 s @100.5 sell 2
    assert (btc0["open"], btc0["high"], btc0["low"], btc0["close"]) == (100.0, 101.0, 99.0, 100.5)
    assert (btc0["volume_usd"], btc0["taker_buy_usd"], btc0["taker_sell_usd"], btc0["trade_count"]) == (800.0, 499.0,
                                                                                                      301.0, 4)
    assert btc0["volume_base_exact"] == Decimal(8) and btc0["volume_base"] == 8.0
    # OI last at 45 s (500) without a price: valued at the close 100.5
    assert (btc0["oi_last"], btc0["oi_last_usd"], btc0["oi_first_usd"]) == (500.0, 50_250.0, 49_000.0)
    assert rows[("ETHUSDT", M0)]["funding_ts"] == M0 + 30 * SEC
    assert day_bars({"trade": None, "funding": _tables({"funding": []})["funding"]}) is None


def test_day_bars_of_random_unsorted_events_with_ties_nulls_and_huge_volumes() -> None:
    rng = random.Random(5)
    insts = [BTC, ETH, {**BTC, "exchange": "okx"}]
    times = [T0 + rng.randrange(0, 30 * 60 * S, 250_000) for _ in range(500)]  # many equal times

    def pick() -> tuple[dict, int]:
        return rng.choice(insts), rng.choice(times)

    events = {
        # sizes up to 1e7 base units: minute sums beyond 2**53 units of 1e-12 take the exact division
        "trade": [trade(*pick(), rng.choice([99.0, 100.0, 100.5]), rng.choice([0.1, 1.0, 2.5, 1e7, 0.3]),
                        rng.choice(["buy", "sell"])) for _ in range(2_000)],
        "liquidation": [liq(*pick(), rng.choice(["long", "short"]), 100.0, rng.choice([1.0, 3.0]))
                        for _ in range(200)],
        "open_interest": [oi(*pick(), rng.choice([10.0, 11.0]), rng.choice([None, 1_000.0])) for _ in range(200)],
        "funding": [funding(*pick(), rng.choice([99.0, 101.0]), rng.choice([None, 1e-4]), rng.choice([None, 99.5]))
                    for _ in range(200)],
    }
    day = day_bars(_tables(events))
    _assert_same_rows(day, _per_instrument(events))
    assert any(r["volume_base_exact"] > Decimal(9007) for r in day.to_pylist())  # the Python branch ran


def test_an_instrument_with_two_idents_takes_the_merge_path() -> None:
    # a venue renamed the base within the day: one bar per minute, as merge_partials makes it
    xbt = {**BTC, "base": "XBT"}
    events = {"trade": [trade(xbt, T0 + 1 * S, 100.0, 1.0, "buy"), trade(BTC, T0 + 2 * S, 101.0, 1.0, "sell"),
                        trade(ETH, T0 + 3 * S, 2000.0, 1.0, "buy")],
              "liquidation": [liq(xbt, T0 + 61 * S, "long", 100.0, 2.0)]}
    day = day_bars(_tables(events))
    _assert_same_rows(day.sort_by([("exchange", "ascending"), ("symbol", "ascending"), ("minute_ts", "ascending")]),
                      _per_instrument(events))
    btc = [r for r in day.to_pylist() if r["symbol"] == "BTCUSDT"]
    assert [(r["minute_ts"], r["base"], r["volume_usd"], r["long_liq_usd"]) for r in btc] == [
        (M0, "BTC", 201.0, 0.0), (M0 + 60 * SEC, "XBT", 0.0, 200.0)]


_SINK: dict[str, list] = {}  # FnApiRunner runs in this process: the pipeline appends here


def _append(row: dict, key: str) -> None:
    _SINK[key].append(row)


def _beam_liquidation_rows(recs: list[dict]) -> list[dict]:
    rows: list[dict] = []
    _SINK[str(id(rows))] = rows
    with TestPipeline(runner="FnApiRunner") as p:
        (p | beam.Create([records_to_batches("liquidation", recs[i:i + 7]) for i in range(0, len(recs), 7)])
         | LiquidationBatchesPerMinute() | beam.Map(_append, str(id(rows))))
    return pa.Table.from_pylist(rows, schema=LIQUIDATIONS_1M_SCHEMA).sort_by(
        [("exchange", "ascending"), ("symbol", "ascending"), ("side", "ascending"), ("minute", "ascending")]).to_pylist()


def test_liquidation_minutes_equal_the_beam_rows_and_duckdb_round_even_sums() -> None:
    rng = random.Random(3)
    recs = [liq(rng.choice([BTC, ETH]), T0 + rng.randrange(0, 10 * 60 * S, 500_000), rng.choice(["long", "short"]),
                100.0, 1.0) for _ in range(300)]
    # notionals on exact half micro-USD ties (2.5 and 3.5 micro): half-to-even -> 2 and 4
    for r, usd in zip(recs, [0.0000025, 0.0000035, 1234.5678905, 7.0, 1e-7] * 60, strict=True):
        r["notional_usd"] = usd
    recs[0]["base"] = ""  # an empty base: the minute's first non-empty one, as LiquidationStats
    table = pa.Table.from_batches([records_to_batches("liquidation", recs)])
    got = liquidation_minutes(table)
    assert got.schema == LIQUIDATIONS_1M_SCHEMA
    assert got.to_pylist() == _beam_liquidation_rows(recs)
    # independently: DuckDB's round_even of each notional in micro-USD, summed as integers
    con = duckdb.connect()
    con.register("liq", table)
    con.register("got", got)
    ref = con.execute("SELECT exchange, symbol, side, event_time // 60000000 * 60000000 AS m, count(*), "
                      "sum(round_even(notional_usd * 1e6, 0)::BIGINT), max(round_even(notional_usd * 1e6, 0)::BIGINT) "
                      "FROM liq GROUP BY ALL ORDER BY ALL").fetchall()
    mine = con.execute("SELECT exchange, symbol, side, epoch_us(minute), liq_count, (notional_usd * 1e6)::BIGINT, "
                       "(max_notional_usd * 1e6)::BIGINT FROM got ORDER BY ALL").fetchall()
    assert mine == ref
    assert liquidation_minutes(table.slice(0, 0)) is None and liquidation_minutes(None) is None


def test_read_day_columns_deduplicates_a_republished_range(tmp_path) -> None:
    # a crashed cycle's range published twice (overlapping offsets): each position once, in order
    recs = [trade(BTC, T0 + i * S, 100.0 + i, 1.0, "buy") for i in range(6)]
    schema = arrow_schema("trade", with_position=True)
    folder = tmp_path / "trade" / "date=2023-11-14"
    folder.mkdir(parents=True)

    def write(name: str, offsets: range) -> None:
        rows = [{**recs[o], "_topic": "t", "_partition": 0, "_offset": o} for o in offsets]
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / name)

    write("part-a.parquet", range(0, 4))
    write("part-b.parquet", range(2, 6))
    cols = ["exchange", "symbol", "event_time", "price"]
    got = archive.read_day_columns(tmp_path, "trade", "2023-11-14", cols, dictionary=("exchange",))
    assert got.column_names == cols
    assert got["price"].to_pylist() == [100.0 + i for i in range(6)]
    assert got.to_pydict() == archive.read_day(tmp_path, "trade", "2023-11-14").select(cols).to_pydict()
    assert archive.read_day_columns(tmp_path, "trade", "2023-11-15", cols) is None
    # disjoint files (the common case): read in position order, only the wanted columns
    (folder / "part-b.parquet").unlink()
    write("part-b.parquet", range(4, 6))
    got = archive.read_day_columns(tmp_path, "trade", "2023-11-14", cols)
    assert got["event_time"].to_pylist() == [T0 + i * S for i in range(6)]
