"""tardis.dev datasets: CSV files (trades, liquidations, derivative_ticker) and raw replay files.

The files are written by the tests in the layout tardis.dev documents (file name
``<exchange>_<data type>_<date>_<symbol>.csv.gz``, header row, epoch-µs times; raw replay lines
``<ISO local timestamp> <venue JSON>``). Expected records are worked out by hand.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from connectors.sources.capture import CaptureLineError, RawMessage, iso_local_us, read_capture
from connectors.sources.tardis import dataset_of, read_tardis_csv
from pipelines.jobs.backfill import tardis_files
from tests.venue_helpers import assert_all_encode

T0 = 1_608_251_458_374_000  # 2020-12-18T00:30:58.374Z in µs
TRADES_HEADER = "exchange,symbol,timestamp,local_timestamp,id,side,price,amount"
TICKER_HEADER = ("exchange,symbol,timestamp,local_timestamp,funding_timestamp,funding_rate,predicted_funding_rate,"
                 "open_interest,last_price,index_price,mark_price")


def _write(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def _outcomes(path: Path) -> list:
    return list(read_tardis_csv(path))


def test_dataset_names() -> None:
    assert dataset_of("okex-swap_liquidations_2020-12-18_BTC-USD-SWAP.csv.gz") == ("okx", "liquidations")
    assert dataset_of("binance-futures_derivative_ticker_2021-07-22_BTCUSDT.csv.gz") == \
        ("binance-futures", "derivative_ticker")
    assert dataset_of("bybit_trades_2020-05-28_BTCUSD.csv.gz") == ("bybit", "trades")
    assert dataset_of("bybit_book_snapshot_25_2020-05-28_BTCUSD.csv.gz") is None
    assert dataset_of("ftx_trades_2020-05-28_BTC-PERP.csv.gz") is None


def test_trades_in_contracts_and_base_units(tmp_path: Path) -> None:
    path = _write(tmp_path / "okex-swap_trades_2020-12-18_BTC-USD-SWAP.csv.gz", [
        TRADES_HEADER,
        f"okex-swap,BTC-USD-SWAP,{T0},{T0 + 1500},4238862,buy,22376.9,3",  # 3 x 100 USD = 300 USD
        f"okex-swap,BTC-USDT-SWAP,{T0},{T0 + 1500},77,sell,22376.9,2",  # 2 x 0.01 BTC = 0.02 BTC
        f"okex-swap,BTC-USD-SWAP,{T0},{T0 + 1500},,buy,1,1",  # no id
    ])
    [(v1, o1), (_, o2), (_, o3)] = _outcomes(path)
    assert v1 == "okx"
    [(et, rec)] = o1.records
    assert (et, rec) == ("trade", {
        "exchange": "okx", "symbol": "BTC-USD-SWAP", "base": "BTC", "quote": "USD", "kind": "perpetual",
        "expiry": None, "event_time": T0, "ingest_time": T0 + 1500, "trade_id": "4238862", "price": 22376.9,
        "size": 300 / 22376.9, "notional_usd": 300.0, "taker_side": "buy"})
    [(_, rec2)] = o2.records
    assert rec2["size"] == pytest.approx(0.02, rel=1e-12) and rec2["notional_usd"] == pytest.approx(447.538, rel=1e-12)
    assert rec2["taker_side"] == "sell" and o3.records[0][1]["trade_id"] is None
    assert_all_encode(o1.records + o2.records)


def test_liquidation_side_is_the_order_side_so_sell_closes_a_long(tmp_path: Path) -> None:
    path = _write(tmp_path / "binance-delivery_liquidations_2021-07-22_BTCUSD_PERP.csv.gz", [
        TRADES_HEADER,
        f"binance-delivery,BTCUSD_PERP,{T0},{T0 + 9},,sell,32000,5",  # 5 contracts x 100 USD = 500 USD
        f"binance-delivery,BTCUSD_PERP,{T0},{T0 + 9},abc,buy,32000,1",
    ])
    [(_, long_), (_, short)] = _outcomes(path)
    [(et, rec)] = long_.records
    assert (et, rec["side"], rec["notional_usd"], rec["order_id"], rec["event_time"], rec["ingest_time"]) == \
        ("liquidation", "long", 500.0, None, T0, T0 + 9)
    assert rec["size"] == pytest.approx(500 / 32000, rel=1e-12)
    assert (short.records[0][1]["side"], short.records[0][1]["order_id"]) == ("short", "abc")


def test_derivative_ticker_rows_give_funding_and_open_interest(tmp_path: Path) -> None:
    path = _write(tmp_path / "binance-futures_derivative_ticker_2021-01-05_BTCUSDT.csv.gz", [
        TICKER_HEADER,
        # a perpetual: rate and next funding; OI 1000 BTC at the mark 31799.5 = 31,799,500 USD
        f"binance-futures,BTCUSDT,{T0},{T0 + 7},1609833600000000,0.0001,0.0002,1000,31790,31307.034,31799.5",
        # a dated future: tardis carries a zero rate; it has no funding
        f"binance-futures,BTCBUSD_210129,{T0},{T0 + 7},,0,,,31790,31307.034,31799.2773",
        # OI before any mark: converted at the row's last price
        f"binance-futures,ETHUSDT,{T0},{T0 + 7},,,,10,2000,,",
    ])
    [(_, perp), (_, future), (_, oi_only)] = _outcomes(path)
    (et1, f), (et2, oi) = perp.records
    assert (et1, f["mark_price"], f["index_price"], f["funding_rate"], f["next_funding_time"], f["event_time"]) == \
        ("funding", 31799.5, 31307.034, 0.0001, 1609833600000, T0)
    assert (et2, oi["open_interest"], oi["open_interest_usd"]) == ("open_interest", 1000.0, 31799500.0)
    [(_, fut)] = future.records
    assert (fut["kind"], fut["funding_rate"], fut["next_funding_time"]) == ("future", None, None)
    [(et, rec)] = oi_only.records
    assert (et, rec["open_interest"], rec["open_interest_usd"]) == ("open_interest", 10.0, 20000.0)
    assert_all_encode(perp.records + future.records + oi_only.records)


def test_malformed_rows_are_dead_letters_with_file_and_line(tmp_path: Path) -> None:
    name = "bybit_trades_2020-05-28_BTCUSD.csv.gz"
    path = _write(tmp_path / name, [
        TRADES_HEADER,
        f"bybit,BTCUSD,{T0},{T0},1,buy,9452,100",  # line 2: fine
        f"bybit,BTCUSD,{T0},{T0},2,unknown,9452,100",  # 3: no taker side
        f"bybit,BTCUSD,{T0},{T0},3,buy,NaN,100",  # 4
        f"bybit,BTCUSD,{T0},{T0},4,buy,9452",  # 5: a value short
        f"bybit,NOPE,{T0},{T0},5,buy,9452,100",  # 6
        f"bybit,BTCUSD,12,{T0},6,buy,9452,100",  # 7: not an epoch-µs time
        f"bybit,BTCUSD,{T0},{T0},7,buy,9452,",  # 8
    ])
    outcomes = [o for _, o in _outcomes(path)]
    assert outcomes[0].records and all(o.dead is not None for o in outcomes[1:])
    assert [(o.dead.reason, o.dead.source) for o in outcomes[1:]] == [
        ("bad_value", f"{name}:3"), ("bad_value", f"{name}:4"), ("bad_capture_line", f"{name}:5"),
        ("unknown_symbol", f"{name}:6"), ("bad_value", f"{name}:7"), ("missing_field", f"{name}:8")]
    assert "liqstream instruments refresh bybit" in outcomes[4].dead.detail
    assert outcomes[1].dead.raw == f"bybit,BTCUSD,{T0},{T0},2,unknown,9452,100".encode()


def test_a_file_that_is_not_a_dataset_is_one_dead_letter(tmp_path: Path) -> None:
    bad_header = _write(tmp_path / "bybit_trades_2020-05-28_BTCUSD.csv.gz", ["a,b,c", "1,2,3"])
    [(_, out)] = _outcomes(bad_header)
    assert (out.dead.reason, out.dead.source) == ("bad_capture_line", "bybit_trades_2020-05-28_BTCUSD.csv.gz:1")
    [(_, out)] = _outcomes(_write(tmp_path / "notes.csv.gz", ["x"]))
    assert out.dead.reason == "bad_capture_line"


def test_raw_replay_lines_read_as_a_capture(tmp_path: Path) -> None:
    msg = {"table": "swap/liquidation", "data": [{"loss": "0", "size": "8", "price": "3.523",
                                                  "created_at": "2020-12-18T00:30:58.374Z", "type": "3",
                                                  "instrument_id": "UNI-USD-SWAP"}]}
    path = _write(tmp_path / "okex-swap_2020-12-18.json.gz", [
        "2020-12-18T00:30:58.3761234Z " + json.dumps(msg),
        "2020-12-18T00:30:59Z {\"event\":\"subscribe\",\"channel\":\"swap/liquidation:UNI-USD-SWAP\"}",
        "garbage",
    ])
    first, second, third = read_capture(path)
    assert isinstance(first, RawMessage) and (first.venue, first.received_at_us) == ("okx", 1608251458376123)
    assert json.loads(first.raw) == msg and first.source == "okex-swap_2020-12-18.json.gz:1"
    assert isinstance(second, RawMessage) and second.received_at_us == 1608251459000000
    assert isinstance(third, CaptureLineError) and third.reason == "bad_capture_line"
    assert iso_local_us("1970-01-01T00:00:01.5Z") == 1_500_000


def test_tardis_files_split_csv_from_raw(tmp_path: Path) -> None:
    for name in ("bybit_trades_2020-05-28_BTCUSD.csv.gz", "bybit_2020-05-28.json.gz", ".hidden"):
        (tmp_path / name).write_bytes(b"")
    assert [Path(p).name for p in tardis_files(tmp_path, "tardis")] == ["bybit_trades_2020-05-28_BTCUSD.csv.gz"]
    assert [Path(p).name for p in tardis_files(tmp_path, "tardis-raw")] == ["bybit_2020-05-28.json.gz"]
