"""The report's SVG drawing helpers: axis ticks and labels, gaps, bands, heatmap cells (hand-made inputs)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from pipelines.report import svg

T0 = datetime(2026, 3, 9, 12, 0, tzinfo=UTC).timestamp()


def test_nice_ticks_and_labels_have_enough_decimals() -> None:
    assert svg.nice_ticks(0.0, 10.0, 5) == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    t = svg.nice_ticks(7.605, 7.625)
    assert [svg.tick_formatter(t)(v) for v in t] == ["7.605", "7.610", "7.615", "7.620", "7.625"]
    t = svg.nice_ticks(78e9, 90e9)
    assert [svg.tick_formatter(t)(v) for v in t] == ["80.0B", "82.5B", "85.0B", "87.5B", "90.0B"]
    assert [svg.tick_formatter([-10.0, -5.0, 0.0], "%")(v) for v in (-10.0, 0.0)] == ["-10%", "0%"]


def test_time_ticks_step_and_compact_numbers() -> None:
    # 3 hours, at most 8 ticks: every 30 minutes on the half hour
    ticks = svg.time_ticks(T0 + 60, T0 + 3 * 3600)
    assert ticks[0] == T0 + 1800 and {b - a for a, b in zip(ticks, ticks[1:], strict=False)} == {1800.0}
    assert (svg.fmt_usd(441_000_000), svg.fmt_usd(-1_250), svg.fmt_num(0.0123)) == ("$441M", "-$1.25k", "0.0123")


def test_line_chart_breaks_at_gaps_and_draws_bands_in_range() -> None:
    xs = [T0 + 60 * i for i in range(6)]
    out = svg.line_chart("p", "t", [svg.Series("BTC", xs, [1.0, 2.0, None, 3.0, 4.0, 5.0], "#000000")],
                         bands=[svg.Band(T0 + 60, T0 + 120, "#ff0000", "ep"),
                                svg.Band(T0 + 3600, T0 + 7200, "#ff0000", "outside the x range")])
    assert out.count("<polyline") == 2  # the None splits the line
    assert out.count("class='band'") == 1  # the band after the last point is clipped away
    assert "data-plot='p'" in out


def test_heatmap_draws_one_cell_per_positive_value_with_its_figure() -> None:
    out = svg.heatmap("h", "t", ["BTC", "ETH"], [T0, T0 + 300], 300, [[1_000_000.0, 0.0], [10.0, 20.0]], "#d62728")
    cells = re.findall(r"<rect x='[\d.]+' y='[\d.]+' width='[\d.]+' height='20' fill='(#[0-9a-f]{6})'><title>([^<]+)", out)
    assert [t for _, t in cells] == ["BTC 2026-03-09 12:00 UTC: $1M", "ETH 2026-03-09 12:00 UTC: $10",
                                     "ETH 2026-03-09 12:05 UTC: $20"]
    # log scale: the largest cell is the full colour, the smallest 15 % of the way from white:
    # 255 + (0xd6 - 255) x 0.15 = 248.85 -> f9; 255 + (0x27 - 255) x 0.15 = 222.6 -> df; 0x28 -> 222.75 -> df
    assert cells[0][0] == "#d62728" and cells[1][0] == "#f9dfdf"
    assert "no liquidations" in svg.heatmap("h", "t", ["BTC"], [T0], 60, [[0.0]], "#d62728")


def test_level_heatmap_places_cells_by_time_and_price_with_price_line_and_marks() -> None:
    cells = [svg.LevelCell(T0, T0 + 1800, 90.0, 91.0, 1_000_000.0), svg.LevelCell(T0 + 1800, T0 + 3600, 109.0, 110.0, 10.0),
             svg.LevelCell(T0, T0 + 1800, 95.0, 96.0, 0.0)]
    price = svg.Series("BTC price", [T0, T0 + 3600], [100.0, 101.0], "#222222")
    out = svg.level_heatmap("m", "t", cells, price, [(T0 + 600, 100.5, 5e5, svg.LONG_COLOR)], width=1100, height=320)
    rects = re.findall(r"<rect x='([\d.]+)' y='([\d.]+)' width='([\d.]+)' height='([\d.]+)' fill='(#[0-9a-f]{6})'><title>([^<]+)", out)
    assert [r[5] for r in rects] == ["90-91: $1M", "109-110: $10"]  # the empty cell is not drawn
    (x_a, y_a, *_), (x_b, y_b, *_) = rects
    # later in time further right; the higher price higher up (smaller y)
    assert float(x_b) > float(x_a) and float(y_b) < float(y_a)
    assert rects[0][4] == "#6a00a8"  # the largest cell: the full colour
    assert out.count("<polyline") == 1 and out.count("<circle") == 1
    assert "no estimated" in svg.level_heatmap("m", "t", [], price)
