"""A day backfilled from tardis.dev files equals the same day backfilled from a capture of the same messages.

The demo capture (binance-futures, 2021-07-22) is rewritten by the test in tardis.dev's layouts:
a raw replay file (``<ISO local timestamp> <venue JSON>`` per message) and CSV datasets
(``trades``, ``liquidations``, ``derivative_ticker``; one file per data type, day and symbol) filled
with tardis's documented mapping of these messages. The raw file goes through the normalizers, so
every mart must be equal. The CSV datasets carry fewer facts: tardis's Binance liquidation price is
the order price ``p`` (liqstream reads the average fill ``ap``), and the CSV written here holds no
open interest; so trades, liquidation counts and funding must be equal, and the liquidation USD
must be the sum of price x amount of the CSV rows, computed by DuckDB from the CSV files alone.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pytest

from connectors.sources.capture import RawMessage, read_capture
from pipelines.jobs.backfill import run_backfill, tardis_files
from pipelines.settings import JobSettings
from tests.conftest import FIXTURES

pytestmark = pytest.mark.slow
DEMO = FIXTURES / "demo" / "binance-futures-demo.jsonl.gz"
DAY = date(2021, 7, 22)
MARTS = {"bars_1m": "exchange, symbol, minute_ts", "liquidations_1m": "exchange, symbol, side, minute",
         "bars_1m_symbol": "base, minute_ts", "cascades": "episode_id",
         "oi_deltas": "level, exchange, symbol, as_of_ts, span", "contagion": "base, as_of_ts, window_minutes"}
TRADE_AND_FUNDING_COLUMNS = ("open, high, low, close, first_trade_ts, last_trade_ts, volume_base, volume_usd, "
                             "trade_count, taker_buy_usd, taker_sell_usd, long_liq_count, short_liq_count, "
                             "funding_rate_last, mark_price_last, index_price_last, funding_ts")


def _rows(db: Path, sql: str) -> list:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _iso(us: int) -> str:
    # tardis writes 7 fractional digits (100 ns); the 7th is 0 for a µs time
    return datetime.fromtimestamp(us // 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{us % 1_000_000:06d}0Z"


def _messages() -> list[tuple[RawMessage, dict]]:
    out = []
    for m in read_capture(DEMO):
        if isinstance(m, RawMessage):
            try:
                out.append((m, json.loads(m.raw)))
            except ValueError:
                continue
    return out


def _write_raw(directory: Path) -> None:
    with gzip.open(directory / "binance-futures_2021-07-22.json.gz", "wt") as fh:
        for m in read_capture(DEMO):
            if isinstance(m, RawMessage):
                fh.write(f"{_iso(m.received_at_us)} {m.raw}\n")


def _write_csv(directory: Path) -> None:
    """tardis's documented CSV columns, filled as tardis maps Binance USDⓈ-M messages."""
    files: dict[tuple[str, str], list[list]] = defaultdict(list)
    for m, doc in _messages():
        d = doc.get("data", doc)
        if not isinstance(d, dict):
            continue
        if d.get("e") == "aggTrade":
            files[("trades", d["s"])].append(["binance-futures", d["s"], d["T"] * 1000, m.received_at_us, d["a"],
                                              "sell" if d["m"] else "buy", d["p"], d["q"]])
        elif d.get("e") == "forceOrder":
            o = d["o"]
            files[("liquidations", o["s"])].append(["binance-futures", o["s"], o["T"] * 1000, m.received_at_us, "",
                                                    o["S"].lower(), o["p"], o["z"]])
        elif d.get("e") == "markPriceUpdate":
            files[("derivative_ticker", d["s"])].append(["binance-futures", d["s"], d["E"] * 1000, m.received_at_us,
                                                         d["T"] * 1000, d["r"], "", "", "", d["i"], d["p"]])
    headers = {"trades": "exchange,symbol,timestamp,local_timestamp,id,side,price,amount",
               "liquidations": "exchange,symbol,timestamp,local_timestamp,id,side,price,amount",
               "derivative_ticker": "exchange,symbol,timestamp,local_timestamp,funding_timestamp,funding_rate,"
                                    "predicted_funding_rate,open_interest,last_price,index_price,mark_price"}
    for (data_type, symbol), rows in files.items():
        buf = io.StringIO()
        buf.write(headers[data_type] + "\n")
        csv.writer(buf, lineterminator="\n").writerows(rows)
        with gzip.open(directory / f"binance-futures_{data_type}_2021-07-22_{symbol}.csv.gz", "wt") as fh:
            fh.write(buf.getvalue())


@pytest.fixture(scope="module")
def from_capture(tmp_path_factory) -> JobSettings:
    tmp = tmp_path_factory.mktemp("capture")
    settings = JobSettings(db=tmp / "capture.duckdb", data_dir=tmp / "data", backfill_workers=1)
    r = run_backfill(settings, DAY, DAY, source="capture", captures=[str(DEMO)], run_dq=False)
    assert r.status == "ok" and r.events == 215
    return settings


def test_backfill_from_tardis_raw_replay_equals_the_capture(from_capture: JobSettings, tmp_path: Path) -> None:
    _write_raw(tmp_path)
    settings = from_capture.replace(db=tmp_path / "raw.duckdb")
    r = run_backfill(settings, DAY, DAY, source="tardis-raw", captures=tardis_files(tmp_path, "tardis-raw"),
                     run_dq=False)
    assert r.status == "ok" and r.events == 215
    for table, key in MARTS.items():
        sql = f"SELECT * FROM {table} ORDER BY {key}"
        assert _rows(settings.db, sql) == _rows(from_capture.db, sql), table


def test_backfill_from_tardis_csv_datasets(from_capture: JobSettings, tmp_path: Path) -> None:
    _write_csv(tmp_path)
    files = tardis_files(tmp_path, "tardis")
    assert {Path(f).name.split("_")[1] for f in files} == {"trades", "liquidations", "derivative"}
    settings = from_capture.replace(db=tmp_path / "csv.duckdb")
    r = run_backfill(settings, DAY, DAY, source="tardis", captures=files, run_dq=False)
    assert r.status == "ok" and r.events == 91 + 76 + 40  # trades, liquidations, funding: no OI in these CSVs
    sql = f"SELECT exchange, symbol, minute_ts, {TRADE_AND_FUNDING_COLUMNS} FROM bars_1m ORDER BY 1, 2, 3"
    assert _rows(settings.db, sql) == _rows(from_capture.db, sql)
    # liquidation USD per minute, symbol and side: sum(price x amount) of the CSV rows, by DuckDB alone
    expected = _rows(settings.db, f"""
        SELECT symbol, time_bucket(INTERVAL 1 MINUTE, make_timestamptz(timestamp)) AS minute,
               CASE side WHEN 'sell' THEN 'long' ELSE 'short' END AS pos,
               sum(CAST(price AS DECIMAL(24, 8)) * CAST(amount AS DECIMAL(24, 8)))::DECIMAL(24, 6)
        FROM read_csv('{tmp_path}/binance-futures_liquidations_*.csv.gz', all_varchar = true,
                      types = {{'timestamp': 'BIGINT'}})
        GROUP BY ALL ORDER BY 1, 2, 3""")
    got = _rows(settings.db, """
        SELECT symbol, minute_ts, 'long', long_liq_usd FROM bars_1m WHERE long_liq_count > 0
        UNION ALL SELECT symbol, minute_ts, 'short', short_liq_usd FROM bars_1m WHERE short_liq_count > 0
        ORDER BY 1, 2, 3""")
    assert got == expected and len(got) > 10
