"""LiquidationsPerMinute with TestPipeline/TestStream: expected values computed by hand."""

from __future__ import annotations

from decimal import Decimal

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from pipelines.liquidations import LiquidationsPerMinute

T0 = 1_700_000_040_000_000  # 2023-11-14 22:14:00 UTC in epoch micros: a minute boundary
MIN = 60_000_000


def liq(offset_us: int, side: str, usd: float, symbol: str = "BTCUSDT", exchange: str = "binance-futures"):
    t = T0 + offset_us
    rec = {"exchange": exchange, "symbol": symbol, "base": symbol[:3], "quote": "USDT", "side": side,
           "event_time": t, "notional_usd": usd}
    return TimestampedValue(rec, t / 1e6)


def row(minute_us, side, n, total, mx, first, last, symbol="BTCUSDT", exchange="binance-futures"):
    return {"exchange": exchange, "symbol": symbol, "side": side, "minute": minute_us, "base": symbol[:3],
            "quote": "USDT", "liq_count": n, "notional_usd": Decimal(total), "max_notional_usd": Decimal(mx),
            "first_event_time": first, "last_event_time": last}


def test_minute_windows_split_at_the_boundary_and_by_side_and_symbol():
    events = [
        liq(0, "long", 100.10),                 # first instant of minute 0
        liq(59_999_999, "long", 250.25),        # last microsecond of minute 0
        liq(60_000_000, "long", 1000.0),        # first instant of minute 1
        liq(30_000_000, "short", 0.333333),     # minute 0, other side
        liq(30_000_000, "short", 0.333333),
        liq(5_000_000, "long", 42.0, symbol="ETHUSDT"),
        # minute 2 is empty: no row at all; minute 3:
        liq(3 * MIN + 1, "long", 7.5),
    ]
    expected = [
        row(T0, "long", 2, "350.350000", "250.250000", T0, T0 + 59_999_999),
        row(T0 + MIN, "long", 1, "1000.000000", "1000.000000", T0 + MIN, T0 + MIN),
        row(T0, "short", 2, "0.666666", "0.333333", T0 + 30_000_000, T0 + 30_000_000),
        row(T0, "long", 1, "42.000000", "42.000000", T0 + 5_000_000, T0 + 5_000_000, symbol="ETHUSDT"),
        row(T0 + 3 * MIN, "long", 1, "7.500000", "7.500000", T0 + 3 * MIN + 1, T0 + 3 * MIN + 1),
    ]
    with TestPipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(events) | LiquidationsPerMinute()
        assert_that(out, equal_to(expected))


def test_out_of_order_events_within_the_stream_land_in_their_event_time_minute():
    stream = (TestStream()
              .add_elements([liq(61_000_000, "long", 5.0)])
              .add_elements([liq(1_000_000, "long", 3.0)])   # arrives later, belongs to minute 0
              .advance_watermark_to((T0 + 2 * MIN) / 1e6)
              .advance_watermark_to_infinity())
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        out = p | stream | LiquidationsPerMinute()
        assert_that(out, equal_to([
            row(T0, "long", 1, "3.000000", "3.000000", T0 + 1_000_000, T0 + 1_000_000),
            row(T0 + MIN, "long", 1, "5.000000", "5.000000", T0 + 61_000_000, T0 + 61_000_000),
        ]))
