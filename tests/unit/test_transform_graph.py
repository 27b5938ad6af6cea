"""The shared analytics graph end to end: generated events -> every mart, loaded into the
mart DDL of pipelines/marts/ (column names, types and primary keys must accept the rows)."""

from __future__ import annotations

import dataclasses

import apache_beam as beam
import duckdb
from apache_beam.testing.test_pipeline import TestPipeline

from pipelines.transforms import AnalyticsConfig, build_analytics, build_bars, records_to_batches
from tests.unit.test_transform_bars import T0, Collect, generate_events


class _Read(beam.DoFn):
    def __init__(self, events):
        self.events = events

    def process(self, _):
        for et, recs in self.events.items():
            yield records_to_batches(et, recs)


def test_graph_fills_every_mart_and_rows_fit_the_ddl() -> None:
    events = generate_events(seed=2, n_trades=2000, minutes=40)
    cfg = dataclasses.replace(
        AnalyticsConfig(), beta_windows_minutes=(10,), beta_min_points=5, contagion_every_minutes=5,
        oi_spans_minutes=(("1h", 60), ("10m", 10)), allowed_lateness_s=900, floor_usd_symbol=1.0,
        floor_usd_market=1.0, min_adverse_move_pct=0.0, baseline_multiple=0.0, feedback_min_points=3,
    )
    watermark = T0 + 25 * 60_000_000  # with 15 min lateness: events before minute 10 are late
    outs: dict[str, list] = {}
    with TestPipeline(runner="FnApiRunner") as p:
        batches = p | beam.Create([None]) | beam.ParDo(_Read(events))
        first = build_bars(batches, cfg, watermark_us=watermark)
        marts = {**first, **build_analytics(first["bars_1m"], cfg)}
        for name, pc in marts.items():
            outs[name] = []
            pc | f"Collect_{name}" >> Collect(outs[name])
    n_events = sum(len(v) for v in events.values())
    assert 0 < len(outs["late_events"]) < n_events
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    from pipelines.warehouse import migrate

    migrate(con)  # every migration, as the jobs apply them
    for name, rows in outs.items():
        assert rows, f"{name} is empty"
        for r in rows:
            cols = list(r)
            con.execute(f"INSERT INTO {name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                        [r[c] for c in cols])
        (count,) = con.execute(f"SELECT count(*) FROM {name}").fetchone()
        assert count == len(rows)
    # bars only from on-time events (minutes >= 10 after T0)
    (early,) = con.execute("SELECT count(*) FROM bars_1m WHERE minute_ts < to_timestamp($1 / 1e6)",
                           [T0 + 10 * 60_000_000]).fetchone()
    assert early == 0


def test_config_from_env_and_lookbacks() -> None:
    cfg = AnalyticsConfig.from_env({
        "LIQSTREAM_ALLOWED_LATENESS_S": "120", "LIQSTREAM_HOT_OI_BP": "2.5",
        "LIQSTREAM_SYMBOL_KINDS": "perpetual,future", "LIQSTREAM_SEVERITY_TIERS": "1,10",
        "LIQSTREAM_CASCADE_MOVE_Z": "5.5", "LIQSTREAM_VOL_LOOKBACK_MINUTES": "120",
    })
    assert (cfg.allowed_lateness_s, cfg.hot_oi_bp) == (120, 2.5)
    assert (cfg.cascade_move_z, cfg.vol_lookback_minutes) == (5.5, 120)
    assert cfg.symbol_kinds == ("perpetual", "future") and cfg.severity_tiers == (1.0, 10.0)
    lb = AnalyticsConfig().lookback_minutes()
    # 30 d span + 30 min carry; the volatility lookback (12 h, longer than the 1 h baseline) + a
    # day-long episode + the gap + carry (+ a week of OI reference unless the job passes it from
    # OI_REFERENCE_SQL)
    assert lb["oi_deltas"] == 43_200 + 30
    assert lb["cascades"] == 720 + 1_440 + 4 + 30 and lb["cascades_oi_reference"] == 10_080
    assert lb["contagion"] == 1_440 + 1 + 30
    assert lb["liquidation_map"] == 60 + 30  # the fuel's hour of volatility + carry; the book is stored state


def test_oi_reference_sql_runs_on_the_ddl() -> None:
    import datetime as dt

    from pipelines.transforms.cascades import OI_REFERENCE_SQL
    from pipelines.warehouse import migrate

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    migrate(con)
    m0 = dt.datetime(2024, 1, 1)
    # BTC 10 then 12 (max) then 9; ETH 3, 4; one BTC minute after the window start is ignored
    for m, base, oi in ((0, "BTC", 10.0), (1, "BTC", 12.0), (2, "BTC", 9.0), (0, "ETH", 3.0), (1, "ETH", 4.0),
                        (10, "BTC", 99.0)):
        con.execute("INSERT INTO bars_1m_symbol (minute_ts, base, venues, volume_base, volume_usd, trade_count, "
                    "taker_buy_usd, taker_sell_usd, long_liq_count, long_liq_usd, short_liq_count, short_liq_usd, "
                    "max_liq_usd, oi_usd, oi_venues) VALUES (?, ?, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ?, 1)",
                    [m0 + dt.timedelta(minutes=m), base, oi])
    got = dict(con.execute(OI_REFERENCE_SQL, {"window_start": m0 + dt.timedelta(minutes=10), "minutes": 60,
                                              "market": "market"}).fetchall())
    assert got == {"BTC": 12.0, "ETH": 4.0, "market": 16.0}  # market: minute 1 = 12 + 4


def test_oi_reference_sums_the_market_in_base_order_whatever_the_row_order() -> None:
    """The market's OI reference is a sum of doubles: added in the rows' (thread) order its last digit
    depended on how the rows were stored and scanned. Summed in base order, it is the same for any
    order and equals detect_market's own sum (np.nansum over the bases sorted)."""
    import datetime as dt

    import numpy as np

    from pipelines.transforms.cascades import OI_REFERENCE_SQL
    from pipelines.warehouse import migrate

    m0 = dt.datetime(2024, 1, 1)
    rows = [("A", 0.1), ("B", 0.2), ("C", 0.3)]  # (0.1 + 0.2) + 0.3 != 0.1 + (0.2 + 0.3) in doubles
    got = []
    for stored in (rows, rows[::-1]):
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET threads = 1")  # one thread: the scan order is the stored order
        migrate(con)
        for base, oi in stored:
            con.execute("INSERT INTO bars_1m_symbol (minute_ts, base, venues, volume_base, volume_usd, trade_count, "
                        "taker_buy_usd, taker_sell_usd, long_liq_count, long_liq_usd, short_liq_count, short_liq_usd, "
                        "max_liq_usd, oi_usd, oi_venues) VALUES (?, ?, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ?, 1)",
                        [m0, base, oi])
        got.append(dict(con.execute(OI_REFERENCE_SQL, {"window_start": m0 + dt.timedelta(minutes=1), "minutes": 60,
                                                       "market": "market"}).fetchall())["market"])
        con.close()
    in_window = float(np.nansum(np.array([[oi] for _, oi in sorted(rows)]), axis=0)[0])
    assert got[0] == got[1] == in_window


def test_the_liquidation_map_can_be_turned_off() -> None:
    """liqmap_enabled=False (bench/liqmap.py's "off"): the graph has no liquidation map outputs."""
    import dataclasses

    import apache_beam as beam

    from pipelines.transforms.graph import build_analytics_on_panels

    def marts(config: AnalyticsConfig) -> set[str]:
        with beam.Pipeline() as p:
            return set(build_analytics_on_panels(p | beam.Create([]), config, liqmap_state={}))

    on, off = marts(AnalyticsConfig()), marts(dataclasses.replace(AnalyticsConfig(), liqmap_enabled=False))
    assert {"liquidation_levels", "liquidation_fuel", "liquidation_map_state"} <= on
    assert on - off == {"liquidation_levels", "liquidation_fuel", "liquidation_map_state"}
