"""`liqstream report`: one self-contained HTML file from the marts.

Sections: price per base with cascade episodes shaded; liquidation heatmaps (base x time, USD,
long and short separately); OI deltas per base and venue; the contagion ranking over time; the
episode table; data quality (latest verdicts, history, quarantines) and the last job runs.

Analytic sections read the analyst views (``v_*``), which hide quarantined loads; the data-quality
section reads ``dq_results`` and ``quarantine`` themselves, so a reader sees what was hidden and why.
The database is opened read-only (the streaming job may be writing: see ``connect_read_only``).
Charts are inline SVG (``pipelines.report.svg``): no scripts, no external files, no network.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any

from pipelines.queries import connect_read_only, format_value
from pipelines.report import svg

__all__ = ["connect_read_only", "parse_bound", "render_report", "write_report"]

_BUCKETS_MIN = (1, 2, 5, 10, 15, 30, 60, 120, 240, 360, 720, 1440)
_MAX_HEAT_COLUMNS = 160
_MAX_LINE_POINTS = 1500


def parse_bound(text: str, end: bool = False) -> datetime:
    """A UTC bound from ``2026-03-09`` or ``2026-03-09T13:00``; a date as an end means its end of day."""
    text = text.strip()
    if len(text) == 10:
        d = date.fromisoformat(text)
        dt = datetime(d.year, d.month, d.day, tzinfo=UTC)
        return dt + timedelta(days=1) if end else dt
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def write_report(db: Path, out: Path, start: datetime | None = None, end: datetime | None = None) -> Path:
    """Render the report of ``[start, end)`` (default: all the data) to ``out``; returns ``out``."""
    con = connect_read_only(db)
    try:
        html = render_report(con, start, end, db_label=str(db))
    finally:
        con.close()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)  # readers never see a half-written report
    return out


# ---- data ----------------------------------------------------------------------------------------
def _rows(con: Any, sql: str, params: list | None = None) -> list[dict]:
    cur = con.execute(sql, params or [])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _table_exists(con: Any, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]).fetchone()[0])


def _data_range(con: Any) -> tuple[datetime, datetime] | None:
    row = con.execute("SELECT min(minute_ts), max(minute_ts) FROM v_bars_1m").fetchone()
    if row[0] is None:
        row = con.execute("SELECT min(minute), max(minute) FROM v_liquidations_1m").fetchone()
    if row[0] is None:
        return None
    return row[0].astimezone(UTC), row[1].astimezone(UTC) + timedelta(minutes=1)


def _bucket_minutes(span_s: float, max_columns: int) -> int:
    span_min = max(span_s / 60.0, 1.0)
    return next((b for b in _BUCKETS_MIN if span_min / b <= max_columns), _BUCKETS_MIN[-1])


def _thin(xs: list[float], ys: list[float | None], max_points: int) -> tuple[list[float], list[float | None]]:
    if len(xs) <= max_points:
        return xs, ys
    step = math.ceil(len(xs) / max_points)
    return xs[::step], ys[::step]


# ---- sections ------------------------------------------------------------------------------------
def episodes_overlapping(con: Any, t0: datetime, t1: datetime) -> list[dict]:
    """Episodes of ``v_cascades_latest`` overlapping ``[t0, t1)``, oldest first: every column of the view
    (so a column added to ``cascades`` reaches the readers) plus epoch seconds and the side's USD."""
    return _rows(con, """
        SELECT *, epoch(start_ts) AS start_s, epoch(end_ts) AS end_s,
               CASE direction WHEN 'long_liquidation' THEN long_liq_usd ELSE short_liq_usd END::DOUBLE AS side_usd,
               long_liq_usd::DOUBLE AS long_usd, short_liq_usd::DOUBLE AS short_usd
        FROM v_cascades_latest WHERE start_ts < ? AND end_ts > ?
        ORDER BY start_ts, scope, direction""", [t1, t0])


def episode_band(e: dict, strip: bool = False) -> svg.Band:
    color = svg.LONG_COLOR if e["direction"] == "long_liquidation" else svg.SHORT_COLOR
    label = (f"{e['scope']} {e['direction'].replace('_', ' ')} {e['start_ts']:%H:%M}-{e['end_ts']:%H:%M} UTC, "
             f"{svg.fmt_usd(e['side_usd'])} (severity {e['severity']:.1f})")
    return svg.Band(e["start_s"], e["end_s"], color, label, strip=strip)


def base_price_chart(con: Any, base: str, t0: datetime, t1: datetime, episodes: list[dict], color: str,
                     height: int = 190) -> str:
    """One base's price over ``[t0, t1)`` with its episodes shaded and the market's as a top strip
    (the report and the live desk both draw it)."""
    pts = _rows(con, "SELECT epoch(minute_ts) AS t, price FROM v_bars_1m_symbol WHERE base = ? "
                     "AND minute_ts >= ? AND minute_ts < ? ORDER BY minute_ts", [base, t0, t1])
    xs, ys = _thin([p["t"] for p in pts], [p["price"] for p in pts], _MAX_LINE_POINTS)
    bands = ([episode_band(e) for e in episodes if e["scope"] == base]
             + [episode_band(e, strip=True) for e in episodes if e["scope"] == "market"])
    n_ep = sum(1 for e in episodes if e["scope"] == base)
    return svg.line_chart(f"price-{base}", f"{base} price (reference venue close, USD) — {n_ep} episode(s) shaded",
                          [svg.Series(base, xs, ys, color)], bands=bands, x_range=(t0.timestamp(), t1.timestamp()),
                          height=height)


def _price_section(con: Any, t0: datetime, t1: datetime, episodes: list[dict]) -> list[str]:
    x_range = (t0.timestamp(), t1.timestamp())
    bases = [r["base"] for r in _rows(con, """
        SELECT base FROM v_bars_1m_symbol WHERE minute_ts >= ? AND minute_ts < ?
        GROUP BY base ORDER BY max(oi_usd) DESC NULLS LAST, sum(volume_usd) DESC, base""", [t0, t1])]
    market = [episode_band(e, strip=True) for e in episodes if e["scope"] == "market"]
    plots = []
    if bases:
        for i, base in enumerate(bases):
            plots.append(base_price_chart(con, base, t0, t1, episodes, svg.PALETTE[i % len(svg.PALETTE)]))
    else:  # no perpetual aggregated (e.g. only dated futures): per venue symbol closes
        for i, r in enumerate(_rows(con, "SELECT DISTINCT exchange, symbol, base FROM v_bars_1m WHERE minute_ts >= ? "
                                         "AND minute_ts < ? ORDER BY base, exchange, symbol", [t0, t1])):
            pts = _rows(con, "SELECT epoch(minute_ts) AS t, close FROM v_bars_1m WHERE exchange = ? AND symbol = ? "
                             "AND minute_ts >= ? AND minute_ts < ? ORDER BY minute_ts", [r["exchange"], r["symbol"], t0, t1])
            xs, ys = _thin([p["t"] for p in pts], [p["close"] for p in pts], _MAX_LINE_POINTS)
            bands = [episode_band(e) for e in episodes if e["scope"] == r["base"]] + market
            plots.append(svg.line_chart(
                f"price-{r['base']}-{r['exchange']}-{r['symbol']}", f"{r['exchange']} {r['symbol']} close (USD)",
                [svg.Series(r["symbol"], xs, ys, svg.PALETTE[i % len(svg.PALETTE)])], bands=bands,
                x_range=x_range, height=190))
    if not plots:
        plots.append(svg.no_data("price", "Price", "no bars in the selected range"))
    return plots


def _heatmap_section(con: Any, t0: datetime, t1: datetime) -> list[str]:
    span = (t1 - t0).total_seconds()
    bucket_min = _bucket_minutes(span, _MAX_HEAT_COLUMNS)
    bucket_s = bucket_min * 60
    c0 = math.floor(t0.timestamp() / bucket_s) * bucket_s
    n_cols = max(1, math.ceil((t1.timestamp() - c0) / bucket_s))
    cells = _rows(con, """
        SELECT base, side, (floor(epoch(minute) / ?) * ?)::BIGINT AS bucket, sum(notional_usd)::DOUBLE AS usd
        FROM v_liquidations_1m WHERE minute >= ? AND minute < ? GROUP BY ALL
        ORDER BY base, side, bucket""", [bucket_s, bucket_s, t0, t1])  # the totals add up in this order
    totals: dict[str, float] = {}
    for c in cells:
        totals[c["base"]] = totals.get(c["base"], 0.0) + c["usd"]
    bases = sorted(totals, key=lambda b: (-totals[b], b))
    col_starts = [float(c0 + j * bucket_s) for j in range(n_cols)]
    plots = []
    for side, color in (("long", svg.LONG_COLOR), ("short", svg.SHORT_COLOR)):
        grid = [[0.0] * n_cols for _ in bases]
        for c in cells:
            if c["side"] == side:
                j = int((c["bucket"] - c0) // bucket_s)
                if 0 <= j < n_cols:
                    grid[bases.index(c["base"])][j] += c["usd"]
        total = sum(map(sum, grid))
        title = (f"Liquidated {side} positions, USD per {bucket_min} min and base (all venues) — "
                 f"total {svg.fmt_usd(total)}")
        plots.append(svg.heatmap(f"liquidation-heatmap-{side}", title, bases, col_starts, bucket_s, grid, color))
    return plots


def _oi_section(con: Any, t0: datetime, t1: datetime) -> tuple[list[str], list[dict], str | None]:
    spans = _rows(con, "SELECT span, min(span_minutes) AS m FROM v_oi_deltas WHERE as_of_ts >= ? AND as_of_ts < ? "
                       "GROUP BY span ORDER BY m", [t0, t1])
    if not spans:
        return [svg.no_data("oi-deltas", "Open-interest change", "no OI deltas in the selected range")], [], None
    span = spans[0]["span"]
    rows = _rows(con, """
        SELECT level, exchange, symbol, base, epoch(as_of_ts) AS t, oi_change_pct FROM v_oi_deltas
        WHERE span = ? AND level IN ('venue', 'symbol') AND as_of_ts >= ? AND as_of_ts < ?
        ORDER BY base, level DESC, exchange, symbol, as_of_ts""", [span, t0, t1])
    by_base: dict[str, dict[str, tuple[list, list]]] = {}
    for r in rows:
        name = "all venues" if r["level"] == "symbol" else f"{r['exchange']} {r['symbol']}"
        xs, ys = by_base.setdefault(r["base"], {}).setdefault(name, ([], []))
        xs.append(r["t"])
        ys.append(r["oi_change_pct"])
    order = [r["base"] for r in _rows(con, "SELECT base FROM v_oi_deltas WHERE span = ? AND level = 'symbol' "
                                           "AND as_of_ts >= ? AND as_of_ts < ? GROUP BY base "
                                           "ORDER BY max(oi_end_usd) DESC NULLS LAST, base", [span, t0, t1])]
    order += sorted(b for b in by_base if b not in order)
    plots = []
    for base in order:
        series = []
        # venues first, the base's total last and dashed: venues often move together and would hide it
        for i, (name, (xs, ys)) in enumerate(sorted(by_base.get(base, {}).items(), key=lambda kv: kv[0] == "all venues")):
            total = name == "all venues"
            series.append(svg.Series(name, xs, ys, "#222222" if total else svg.PALETTE[i % len(svg.PALETTE)],
                                     dash="6 4" if total else ""))
        plots.append(svg.line_chart(f"oi-deltas-{base}", f"{base}: open-interest change over {span}, % (per venue and all venues)",
                                    series, x_range=(t0.timestamp(), t1.timestamp()), y_unit="%",
                                    zero_line=True, height=200))
    latest = _rows(con, """
        SELECT level, exchange, symbol, as_of_ts, oi_end_usd, oi_change_usd, oi_change_pct, price_change_pct, regime
        FROM v_oi_deltas WHERE span = ? AND as_of_ts >= ? AND as_of_ts < ?
        QUALIFY row_number() OVER (PARTITION BY level, exchange, symbol ORDER BY as_of_ts DESC) = 1
        ORDER BY CASE level WHEN 'market' THEN 0 WHEN 'symbol' THEN 1 ELSE 2 END, oi_end_usd DESC NULLS LAST,
                 exchange, symbol""", [span, t0, t1])
    return plots, latest, span


def _contagion_section(con: Any, t0: datetime, t1: datetime) -> tuple[list[str], list[dict]]:
    windows = [r["w"] for r in _rows(con, "SELECT DISTINCT window_minutes AS w FROM v_contagion WHERE as_of_ts >= ? "
                                          "AND as_of_ts < ? ORDER BY w", [t0, t1])]
    if not windows:
        return [svg.no_data("contagion-ranking", "Contagion ranking over time",
                            "no contagion scores in the selected range (a window needs that many minutes of bars)")], []
    plots = []
    for w in windows:
        rows = _rows(con, "SELECT base, epoch(as_of_ts) AS t, rank FROM v_contagion WHERE window_minutes = ? "
                          "AND as_of_ts >= ? AND as_of_ts < ? ORDER BY base, as_of_ts", [w, t0, t1])
        series: dict[str, tuple[list, list]] = {}
        for r in rows:
            xs, ys = series.setdefault(r["base"], ([], []))
            xs.append(r["t"])
            ys.append(float(r["rank"]))
        plots.append(svg.line_chart(
            f"contagion-ranking-{w}", f"Contagion rank over time, {w}-minute window (1 = most exposed to a BTC move)",
            [svg.Series(b, *series[b], svg.PALETTE[i % len(svg.PALETTE)]) for i, b in enumerate(sorted(series))],
            x_range=(t0.timestamp(), t1.timestamp()), invert=True, integer_y=True, markers=True,
            y_fmt=lambda v: f"#{v:.0f}", height=200))
    latest = _rows(con, """
        SELECT window_minutes, rank, base, as_of_ts, contagion_score, beta, exposure, liq_intensity_pct, move_pct,
               expected_move_pct FROM v_contagion WHERE as_of_ts >= ? AND as_of_ts < ?
        QUALIFY as_of_ts = max(as_of_ts) OVER (PARTITION BY window_minutes) ORDER BY window_minutes, rank""", [t0, t1])
    return plots, latest


# ---- HTML ----------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;background:#f5f6f8;color:#222}
header{background:#1d2733;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:22px} header p{margin:0;color:#c9d1da;font-size:13px}
main{max-width:1180px;margin:0 auto;padding:12px 20px 40px}
section{background:#fff;border:1px solid #e1e4e8;border-radius:6px;margin:16px 0;padding:12px 18px}
h2{font-size:17px;margin:6px 0 8px} p.note{color:#555;font-size:13px;margin:4px 0 10px}
.kpis{display:flex;flex-wrap:wrap;gap:10px;margin:4px 0}
.kpi{border:1px solid #e1e4e8;border-radius:6px;padding:8px 12px;min-width:130px}
.kpi b{display:block;font-size:18px} .kpi span{font-size:12px;color:#666}
table{border-collapse:collapse;font-size:12px;width:100%;margin:6px 0}
th,td{padding:4px 6px;border-bottom:1px solid #eee;text-align:left;white-space:nowrap}
th{background:#fafbfc;font-weight:600} td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#1a7f37;font-weight:600} .fail{color:#cf222e;font-weight:600} .warn{color:#9a6700;font-weight:600}
.long{color:#d62728} .short{color:#2ca02c}
svg.plot{display:block;margin:6px 0 10px;border:1px solid #f0f0f0}
nav a{color:#9ecbff;margin-right:14px;font-size:13px}
.scroll{overflow-x:auto;max-width:100%}
"""


def _table(rows: list[dict], columns: list[str], row_class: str = "", table_id: str = "",
           fmt: dict[str, Any] | None = None) -> str:
    if not rows:
        return "<p class='note'>(none)</p>"
    fmt = fmt or {}
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = []
    for r in rows:
        tds = []
        for c in columns:
            v = r.get(c)
            text = fmt[c](v) if c in fmt and v is not None else format_value(v)
            num = isinstance(v, (int, float)) and not isinstance(v, bool) or type(v).__name__ == "Decimal"
            css = "num" if num else ""
            if c in ("verdict",):
                css = {"PASS": "pass", "FAIL": "fail", "WARN": "warn"}.get(str(v), "")
            if c == "direction":
                css = "long" if v == "long_liquidation" else "short"
            tds.append(f"<td class='{css}'>{escape(text)}</td>")
        body.append(f"<tr class='{row_class}'>{''.join(tds)}</tr>")
    ident = f" id='{table_id}'" if table_id else ""
    return (f"<div class='scroll'><table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody>"
            "</table></div>")


def _top_venue(share: Any) -> str:
    if share is None:
        return ""
    d = json.loads(share) if isinstance(share, str) else share
    if not d:
        return ""
    ex, s = max(d.items(), key=lambda kv: kv[1])
    return f"{ex} {100 * float(s):.0f}%"


def liquidation_map_chart(con: Any, base: str, t0: datetime, t1: datetime, *, height: int = 320) -> str:
    """One base's Coinglass-style map: the estimated liquidation levels (liquidation_levels, all venues,
    both sides) as heat over time and price, the price line and the realized liquidations per minute
    (v_bars_1m_symbol) as marks. The report and the live desk both draw it (one plotting path)."""
    plot_id, title = f"liquidation-map-{base}", f"{base}: estimated liquidation levels (all venues)"
    if not _table_exists(con, "liquidation_levels"):
        return svg.no_data(plot_id, title, "no liquidation_levels table")
    cells = _rows(con, """
        SELECT epoch(as_of_ts) AS t, price_low, price_high, sum(usd)::DOUBLE AS usd FROM liquidation_levels
        WHERE exchange = 'all' AND base = ? AND as_of_ts >= ? AND as_of_ts < ? GROUP BY ALL
        ORDER BY t, price_low, price_high""",
                 [base, t0, t1])
    bars = _rows(con, """
        SELECT epoch(minute_ts) AS t, price, long_liq_usd::DOUBLE AS long_usd, short_liq_usd::DOUBLE AS short_usd
        FROM v_bars_1m_symbol WHERE base = ? AND minute_ts >= ? AND minute_ts < ? ORDER BY t""", [base, t0, t1])
    times = sorted({c["t"] for c in cells})
    step = min((b - a for a, b in zip(times, times[1:], strict=False)), default=1800.0)
    levels = [svg.LevelCell(c["t"], c["t"] + step, c["price_low"], c["price_high"], c["usd"]) for c in cells]
    xs, ys = _thin([b["t"] for b in bars], [b["price"] for b in bars], 1500)
    marks = [(b["t"], b["price"], b[k], color) for b in bars for k, color in
             (("long_usd", svg.LONG_COLOR), ("short_usd", svg.SHORT_COLOR)) if b["price"] and b[k]]
    return svg.level_heatmap(plot_id, title, levels, svg.Series(f"{base} price", xs, ys, "#222222"), marks,
                             height=height)


def _liquidation_map_section(con: Any, t0: datetime, t1: datetime) -> list[str]:
    """Per base with estimated levels in the range: :func:`liquidation_map_chart`."""
    if not _table_exists(con, "liquidation_levels"):
        return [svg.no_data("liquidation-map", "Liquidation map", "no liquidation_levels table")]
    bases = [r["base"] for r in _rows(con, """SELECT DISTINCT base FROM liquidation_levels
        WHERE exchange = 'all' AND as_of_ts >= ? AND as_of_ts < ? ORDER BY base""", [t0, t1])]
    if not bases:
        return [svg.no_data("liquidation-map", "Liquidation map", "no estimated liquidation levels in the selected range")]
    return [liquidation_map_chart(con, base, t0, t1) for base in bases]


def render_report(con: Any, start: datetime | None = None, end: datetime | None = None, db_label: str = "") -> str:
    """The report HTML of ``[start, end)`` (defaults: the data's first and last minute)."""
    data = _data_range(con)
    generated = datetime.now(UTC)
    if data is None and (start is None or end is None):
        t0 = t1 = generated
    else:
        t0 = start or data[0]
        t1 = end or data[1]
    if t1 <= t0:
        t1 = t0 + timedelta(minutes=1)
    episodes = episodes_overlapping(con, t0, t1)
    liq = con.execute("SELECT coalesce(sum(notional_usd) FILTER (WHERE side = 'long'), 0)::DOUBLE, "
                      "coalesce(sum(notional_usd) FILTER (WHERE side = 'short'), 0)::DOUBLE, count(DISTINCT exchange), "
                      "count(DISTINCT base) FROM v_liquidations_1m WHERE minute >= ? AND minute < ?", [t0, t1]).fetchone()
    dq_latest = _rows(con, """
        SELECT suite, table_name, CASE WHEN success THEN 'PASS' WHEN critical THEN 'FAIL' ELSE 'WARN' END AS verdict,
               critical, successful, evaluated, failed_expectations, checked_at, run_id
        FROM dq_results QUALIFY row_number() OVER (PARTITION BY suite ORDER BY checked_at DESC, run_id DESC) = 1
        ORDER BY suite""")
    dq_history = _rows(con, """
        SELECT checked_at, run_id, suite, CASE WHEN success THEN 'PASS' WHEN critical THEN 'FAIL' ELSE 'WARN' END AS verdict,
               successful, evaluated, failed_expectations FROM dq_results ORDER BY checked_at DESC, suite, run_id DESC LIMIT 30""")
    quarantine = _rows(con, "SELECT run_id, from_ts, to_ts, suites, created_at FROM quarantine ORDER BY from_ts, run_id") \
        if _table_exists(con, "quarantine") else []
    runs = _rows(con, "SELECT run_id, job, status, started_at, duration_s, events_in, rejects_in, rows_written, message "
                      "FROM pipeline_runs ORDER BY started_at DESC, run_id DESC LIMIT 12")
    dq_fail = any(r["verdict"] == "FAIL" for r in dq_latest)

    price_plots = _price_section(con, t0, t1, episodes)
    heat_plots = _heatmap_section(con, t0, t1)
    map_plots = _liquidation_map_section(con, t0, t1)
    oi_plots, oi_latest, oi_span = _oi_section(con, t0, t1)
    cont_plots, cont_latest = _contagion_section(con, t0, t1)

    for e in episodes:
        e["liquidated_usd"] = e["side_usd"]
        e["top_venue"] = _top_venue(e["venue_share"])
    ep_cols = ["scope", "direction", "status", "start_ts", "peak_ts", "end_ts", "duration_minutes", "liquidated_usd",
               "liq_count", "peak_minute_liq_usd", "threshold_usd", "severity", "severity_level", "drawdown_pct",
               "oi_change_usd", "oi_change_pct", "feedback", "top_venue", "episode_id"]
    usd = {c: (lambda v: svg.fmt_usd(float(v))) for c in
           ("liquidated_usd", "peak_minute_liq_usd", "threshold_usd", "oi_change_usd", "oi_end_usd", "long_usd")}

    kpi = [("episodes", f"{len(episodes)}"), ("long liquidations", svg.fmt_usd(liq[0])),
           ("short liquidations", svg.fmt_usd(liq[1])), ("venues", f"{liq[2]}"), ("bases", f"{liq[3]}"),
           ("data quality", "FAILING" if dq_fail else ("PASS" if dq_latest else "not checked")),
           ("quarantined loads", f"{len(quarantine)}")]
    period = f"{t0:%Y-%m-%d %H:%M} – {t1:%Y-%m-%d %H:%M} UTC"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>liqstream report {escape(period)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>liqstream — liquidation cascades report</h1><p>{escape(period)} · generated "
        f"{generated:%Y-%m-%d %H:%M:%S} UTC from {escape(db_label)}</p>",
        "<nav><a href='#price'>price</a><a href='#heatmap'>liquidations</a><a href='#liquidation-map'>liquidation map</a><a href='#oi'>open interest</a>"
        "<a href='#contagion'>contagion</a><a href='#episodes-section'>episodes</a><a href='#dq'>data quality</a>"
        "<a href='#runs'>runs</a></nav></header><main>",
        "<section id='overview'><h2>Overview</h2><div class='kpis'>"
        + "".join(f"<div class='kpi'><b>{escape(v)}</b><span>{escape(k)}</span></div>" for k, v in kpi) + "</div>"
        "<p class='note'>Times are UTC. Charts and tables read the analyst views (v_*), which hide quarantined "
        "loads; the data-quality section lists what was quarantined. Definitions: docs/analytics.md.</p></section>",
        "<section id='price'><h2>Price per base, cascade episodes shaded</h2><p class='note'>Shaded: episodes of that "
        "base (<span class='long'>red</span> long liquidation, <span class='short'>green</span> short squeeze); "
        "strip along the top: market-wide episodes. Hover a band for its figures.</p>" + "".join(price_plots) + "</section>",
        "<section id='heatmap'><h2>Liquidation heatmap</h2><p class='note'>USD of positions force-closed per base and "
        "time bucket, summed over venues; long and short positions separately, log colour scale.</p>"
        + "".join(heat_plots) + "</section>",
        "<section id='liquidation-map'><h2>Liquidation map (estimated)</h2><p class='note'>Where leveraged positions "
        "would be force-closed, estimated from public data (OI, trades, liquidations; docs/analytics.md): USD per price "
        "bucket at each snapshot, log colour scale; black: price; dots: realized liquidations per minute.</p>"
        + "".join(map_plots) + "</section>",
        f"<section id='oi'><h2>Open-interest deltas per base and venue</h2><p class='note'>Change of open interest "
        f"over the trailing {escape(oi_span or '-')} at each as-of minute (v_oi_deltas); black dashed: the base across its "
        "perpetual venues.</p>" + "".join(oi_plots)
        + "<h3>Latest per series</h3>" + _table(oi_latest, ["level", "exchange", "symbol", "as_of_ts", "oi_end_usd",
                                                            "oi_change_usd", "oi_change_pct", "price_change_pct", "regime"],
                                                fmt=usd) + "</section>",
        "<section id='contagion'><h2>Contagion ranking over time</h2><p class='note'>Rank of each altcoin by "
        "contagion score (beta to BTC × BTC dominance × exposure) at each as-of minute, per trailing window.</p>"
        + "".join(cont_plots) + "<h3>Latest ranking</h3>"
        + _table(cont_latest, ["window_minutes", "rank", "base", "as_of_ts", "contagion_score", "beta", "exposure",
                               "liq_intensity_pct", "move_pct", "expected_move_pct"]) + "</section>",
        f"<section id='episodes-section'><h2>Cascade episodes (<span id='episode-count'>{len(episodes)}</span>)</h2>"
        "<p class='note'>Episodes overlapping the period, oldest first. liquidated_usd: the episode's side; severity: "
        "liquidated / threshold; drawdown_pct: price extreme vs the minute before the start.</p>"
        + _table(episodes, ep_cols, row_class="episode", table_id="episodes", fmt=usd) + "</section>",
        "<section id='dq'><h2>Data quality</h2><h3>Latest verdict per suite</h3>"
        + _table(dq_latest, ["suite", "table_name", "verdict", "critical", "successful", "evaluated",
                             "failed_expectations", "checked_at", "run_id"])
        + f"<h3>Quarantined loads ({len(quarantine)})</h3><p class='note'>Rows in these time ranges are hidden from "
          "the v_* views (kept in the base tables) until a backfill rebuilds the days and passes its gate.</p>"
        + _table(quarantine, ["run_id", "from_ts", "to_ts", "suites", "created_at"], table_id="quarantine")
        + "<h3>Recent checkpoints</h3>"
        + _table(dq_history, ["checked_at", "run_id", "suite", "verdict", "successful", "evaluated",
                              "failed_expectations"]) + "</section>",
        "<section id='runs'><h2>Recent job runs</h2>"
        + _table(runs, ["started_at", "job", "status", "duration_s", "events_in", "rejects_in", "rows_written",
                        "run_id", "message"]) + "</section>",
        "</main></body></html>",
    ]
    return "\n".join(parts)
