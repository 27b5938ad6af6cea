"""The shared analytics graph end to end: generated events -> every mart, loaded into the
0002_analytics.sql DDL (column names, types and primary keys must accept the rows)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import apache_beam as beam
import duckdb
from apache_beam.testing.test_pipeline import TestPipeline

from pipelines.transforms import AnalyticsConfig, build_analytics, build_bars, records_to_batches
from tests.unit.test_transform_bars import T0, Collect, generate_events

DDL = Path(__file__).resolve().parents[2] / "pipelines" / "marts" / "0002_analytics.sql"


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
    con.execute(DDL.read_text())
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
