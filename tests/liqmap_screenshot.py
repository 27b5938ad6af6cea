"""docs/img/liquidation-map.png: the README's picture of the liquidation map (issue 22).

    .venv/bin/python -m tests.liqmap_screenshot [PRESET] [SEED] [HOURS]

Simulates a preset (default A seed 3, 24 h) through the Beam bars graph, estimates the map with the
default config (snapshots every 15 min for a denser picture), writes liquidation_levels and
bars_1m_symbol into a scratch DuckDB mart and draws BTC with ``liquidation_map_chart`` — the function
the report and the live desk draw it with — then screenshots it in headless Chromium (tests/chromium.py).
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "img" / "liquidation-map.png"


def main(preset: str = "A", seed: int = 3, hours: int = 24, base: str = "BTC") -> Path:
    import pyarrow as pa

    from pipelines import warehouse
    from pipelines.report import liquidation_map_chart
    from pipelines.transforms.config import AnalyticsConfig
    from pipelines.transforms.liqmap import LEVELS_TAG, estimate_base
    from pipelines.transforms.panel import base_bars_from_columns, columns_from_rows
    from pipelines.transforms.scoring import run_simulated
    from tests.chromium import HeadlessChromium

    cfg = dataclasses.replace(AnalyticsConfig(), liqmap_every_minutes=15)
    out = run_simulated(preset, seed, cfg, duration=f"{hours}h")
    rows = [r for r in out["bars_1m"] if r["base"] == base]
    levels = [r for tag, r in estimate_base(base_bars_from_columns(base, columns_from_rows(rows), cfg), cfg, None,
                                            fuel=False, venues=False) if tag == LEVELS_TAG]
    symbol_bars = [r for r in out["bars_1m_symbol"] if r["base"] == base]
    with tempfile.TemporaryDirectory(prefix="liqmap-shot-") as tmp:
        con = warehouse.connect(Path(tmp) / "m.duckdb")
        warehouse.migrate(con)
        for table, data in (("liquidation_levels", levels), ("bars_1m_symbol", symbol_bars)):
            arrow = pa.Table.from_pylist(data)  # noqa: F841 - read by DuckDB's replacement scan
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM arrow")
        t0 = min(r["minute_ts"] for r in symbol_bars)
        t1 = max(r["minute_ts"] for r in symbol_bars)
        chart = liquidation_map_chart(con, base, t0, t1 + timedelta(minutes=1), height=460)
        con.close()
        page = Path(tmp) / "map.html"
        page.write_text(f"<!doctype html><meta charset='utf-8'><body style='margin:8px;background:#fff'>"
                        f"<p style='font:13px sans-serif'>liqstream — simulated preset {preset} seed {seed}, "
                        f"{hours} h, estimated from public data only ({datetime.now(UTC):%Y-%m-%d})</p>{chart}</body>")
        browser = HeadlessChromium(Path(tmp) / "chromium", width=1140, height=560)
        try:
            browser.navigate(page.as_uri())
            browser.screenshot(OUT)
        finally:
            browser.close()
    return OUT


if __name__ == "__main__":
    args = sys.argv[1:]
    print(main(*(args[:1]), *(int(a) for a in args[1:3])))
