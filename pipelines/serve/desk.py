"""What the live desk shows, as HTML fragments rendered from one read-only connection.

Every number comes from the analyst views (``v_*``) through the code the other readers use: the
liquidation totals are the saved query ``liquidation_totals`` (the rows `liqstream query --saved
liquidation_totals` prints), the price chart is the report's ``base_price_chart`` and every chart is
drawn by ``pipelines.report.svg``. Nothing here takes SQL or a table name from a request: the
request's parameters are parsed into a ``View`` (a date, a base from the data, a span) first.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from html import escape
from typing import Any
from urllib.parse import urlencode

from pipelines import queries

# the report's readers and plotting code: one plotting path for the report and the desk
from pipelines.report import (
    _MAX_LINE_POINTS,
    _bucket_minutes,
    _rows,
    _thin,
    base_price_chart,
    liquidation_map_chart,
    svg,
)

#: chart spans offered by the page; the totals always show all four (the saved query's spans)
SPANS_H = (1, 4, 12, 24)
_TOTAL_SPANS = ("1h", "4h", "12h", "24h")
_MAX_BARS = 240


class DeskInputError(ValueError):
    """A request the desk cannot answer: an unknown base or day, a malformed parameter. ``status`` is
    the HTTP status of the page that says so."""

    def __init__(self, message: str, status: int = 404) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class View:
    """One page: live (``day`` None, following the data's latest minute) or a past UTC day."""

    day: date | None
    base: str
    span_h: int
    t0: datetime  # chart range [t0, t1)
    t1: datetime
    data_end: datetime  # close of the latest minute with bars in range: the page's clock
    window_end: datetime | None  # end of the totals' spans; None = the saved query's own (latest minute)
    bases: tuple[str, ...]
    first_day: date  # days with data, for the date picker
    last_day: date

    @property
    def live(self) -> bool:
        return self.day is None

    def query(self, **changes: Any) -> str:
        """The page's query string with ``changes`` applied (links of the base tabs and span buttons)."""
        params = {"date": self.day.isoformat() if self.day else None, "base": self.base,
                  "hours": None if self.day else str(self.span_h)}
        params.update({k: (None if v is None else str(v)) for k, v in changes.items()})
        return escape("?" + urlencode({k: v for k, v in params.items() if v}))


def parse_view(con: Any, date_text: str | None, base_text: str | None, hours_text: str | None) -> View:
    """Check the request's parameters against the data; DeskInputError says what is wrong."""
    span_h = 24
    if hours_text:
        if not hours_text.isdigit() or int(hours_text) not in SPANS_H:
            raise DeskInputError(f"hours must be one of {', '.join(map(str, SPANS_H))} (got {hours_text[:40]!r})", 400)
        span_h = int(hours_text)
    day = None
    if date_text:
        try:
            day = date.fromisoformat(date_text)
        except ValueError:
            raise DeskInputError(f"date must be a UTC day like 2026-03-09 (got {date_text[:40]!r})", 400) from None
    first, last = con.execute("SELECT min(minute_ts), max(minute_ts) FROM v_bars_1m").fetchone()
    if last is None:
        raise DeskInputError("the marts hold no bars yet: start the streaming job (`liqstream stream`) or run "
                             "`make run`; this page retries by itself", 503)
    first, last = first.astimezone(UTC), last.astimezone(UTC)
    data_end = last + timedelta(minutes=1)
    if day is None:
        t1 = data_end
        t0 = max(t1 - timedelta(hours=span_h), first)  # a younger database: no empty chart before its start
        window_end = None
    else:
        d0 = datetime(day.year, day.month, day.day, tzinfo=UTC)
        if not (first < d0 + timedelta(days=1) and d0 <= last):
            raise DeskInputError(f"no data on {day.isoformat()}: the marts cover {first:%Y-%m-%d %H:%M} to "
                                 f"{last:%Y-%m-%d %H:%M} UTC ({_days_text(first, last)})", 404)
        t0, t1 = max(d0, first), min(d0 + timedelta(days=1), data_end)
        data_end = t1
        # the day's totals end with its latest liquidation minute, as the saved query's do for the data
        (liq_last,) = con.execute("SELECT max(minute) FROM v_liquidations_1m WHERE minute >= ? AND minute < ?",
                                  [d0, d0 + timedelta(days=1)]).fetchone()
        window_end = (liq_last.astimezone(UTC) + timedelta(minutes=1)) if liq_last is not None else t1
    bases = tuple(r["base"] for r in _rows(con, """
        SELECT base FROM v_bars_1m_symbol WHERE minute_ts >= ? AND minute_ts < ?
        GROUP BY base ORDER BY max(oi_usd) DESC NULLS LAST, sum(volume_usd) DESC, base""", [t0, t1]))
    if base_text:
        if base_text not in bases:
            shown = ", ".join(bases) or "none"
            raise DeskInputError(f"no base {base_text[:40]!r} in {'the last ' + str(span_h) + ' h' if day is None else day.isoformat()}"
                                 f"; bases with data: {shown}", 404)
        base = base_text
    else:  # follow the action: the base of the newest open episode, else the largest by open interest
        row = con.execute("SELECT scope FROM v_cascades_latest WHERE status = 'open' AND start_ts < ? AND end_ts > ? "
                          "AND scope <> 'market' ORDER BY start_ts DESC, scope, direction LIMIT 1", [t1, t0]).fetchone()
        base = row[0] if row and row[0] in bases else (bases[0] if bases else "")
    return View(day, base, span_h, t0, t1, data_end, window_end, bases, first.date(), last.date())


def _days_text(first: datetime, last: datetime) -> str:
    n = (last.date() - first.date()).days + 1
    return f"{n} day{'s' if n != 1 else ''}: pick one of them"


# ---- panels ----------------------------------------------------------------------------------------
def _usd(v: Any) -> str:
    return "" if v is None else svg.fmt_usd(float(v))


def _pct(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):+.2f}%"


def _ratio(v: Any, decimals: int) -> str:
    """A multiple of the threshold; an episode row can lack one while its first minutes are computed."""
    return "–" if v is None else f"{float(v):.{decimals}f}×"


def _venue_shares(share: Any) -> str:
    """A thin stacked bar of the venues' shares of the episode's liquidations, largest first."""
    d = json.loads(share) if isinstance(share, str) else (share or {})
    if not d:
        return ""
    parts = sorted(((ex, float(s)) for ex, s in d.items()), key=lambda kv: -kv[1])
    bar = "".join(f"<i style='width:{100 * s:.1f}%;background:{svg.PALETTE[i % len(svg.PALETTE)]}' "
                  f"title='{escape(ex)} {100 * s:.0f}%'></i>" for i, (ex, s) in enumerate(parts))
    text = " · ".join(f"{escape(ex)} {100 * s:.0f}%" for ex, s in parts[:3])
    return f"<div class='shares'><div class='sharebar'>{bar}</div><small>{text}</small></div>"


def live_panel(con: Any, view: View, episodes: list[dict], max_episodes: int = 8, watch_minutes: int = 15) -> str:
    """Open episodes first, then the latest closed ones, then runs on watch (live view only)."""
    eps = list(episodes)
    alerts = {r["episode_id"]: r for r in _rows(con, """
        SELECT episode_id, alert_type, alert_ts FROM v_cascade_alerts WHERE alert_ts <= ?
        QUALIFY row_number() OVER (PARTITION BY episode_id ORDER BY severity_level DESC, alert_ts DESC) = 1""",
        [view.data_end])}
    eps.sort(key=lambda e: (e["status"] != "open", -e["start_s"]))
    shown = eps[:max_episodes]
    watches = [] if not view.live else _rows(con, """
        SELECT a.* FROM v_cascade_alerts AS a
        WHERE a.alert_type = 'watch' AND a.alert_ts > ? AND a.alert_ts <= ?
          AND a.episode_id NOT IN (SELECT episode_id FROM v_cascades_latest)
        ORDER BY a.alert_ts DESC, a.episode_id, a.severity_level LIMIT 5""", [view.data_end - timedelta(minutes=watch_minutes), view.data_end])
    n_open = sum(1 for e in eps if e["status"] == "open")
    head = (f"<div class='panel-head'><h2>Cascade episodes</h2><span class='count' id='episode-count'>{len(eps)}</span>"
            f"<span class='muted'>{n_open} open · {len(eps)} in {_range_text(view)}"
            f"{f', the latest {len(shown)} shown' if len(shown) < len(eps) else ''}</span></div>")
    if not shown and not watches:
        return head + "<p class='empty'>No cascade episode in this range.</p>"
    rows = []
    for w in watches:
        rows.append(
            f"<tr class='watch'><td><span class='badge watch'>WATCH</span></td><td><b>{escape(w['scope'])}</b></td>"
            f"<td class='{_dir_class(w['direction'])}'>{escape(_dir_text(w['direction']))}</td>"
            f"<td>watch</td><td class='num'>{_usd(w['liq_usd'])}</td><td class='num'>{_pct(w['price_move_pct'])}</td>"
            f"<td></td><td></td><td>{w['alert_ts']:%H:%M} UTC, {_ratio(w['severity'], 2)} threshold</td></tr>")
    for e in shown:
        a = alerts.get(e["episode_id"])
        status = "open" if e["status"] == "open" else "closed"
        kind = f"<span class='kind'>{escape(str(e['kind']).replace('_', ' '))}</span>" if e.get("kind") else ""
        level = f"L{e['severity_level'] or 0} · {_ratio(e['severity'], 1)}"
        if a:
            level += f" <small>{escape(a['alert_type'])} {a['alert_ts']:%H:%M}</small>"
        feedback = "" if e.get("feedback") is None else f"{e['feedback']:.2f}"
        rows.append(
            f"<tr class='episode {status}' data-episode='{escape(e['episode_id'])}'>"
            f"<td><span class='badge {status}'>{status.upper()}</span></td>"
            f"<td><b>{escape(e['scope'])}</b>{kind}</td>"
            f"<td class='{_dir_class(e['direction'])}'>{escape(_dir_text(e['direction']))}</td>"
            f"<td class='level l{min(int(e['severity_level'] or 0), 4)}'>{level}</td>"
            f"<td class='num'>{_usd(e['side_usd'])}</td><td class='num'>{_pct(e['drawdown_pct'])}</td>"
            f"<td class='num'>{feedback}</td><td>{_venue_shares(e.get('venue_share'))}</td>"
            f"<td>{e['start_ts']:%m-%d %H:%M}–{e['end_ts']:%H:%M} UTC · {e['duration_minutes']} min"
            f" · OI {_pct(e.get('oi_change_pct'))}</td></tr>")
    return (head + "<table class='grid' id='episodes'><thead><tr><th>status</th><th>scope</th><th>direction</th>"
            "<th>alert level</th><th class='num'>liquidated</th><th class='num'>move</th><th class='num'>feedback</th>"
            "<th>venue shares</th><th>when</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _dir_class(direction: str) -> str:
    return "long" if direction == "long_liquidation" else "short"


def _dir_text(direction: str) -> str:
    return "▼ longs liquidated" if direction == "long_liquidation" else "▲ short squeeze"


def _range_text(view: View) -> str:
    return f"{view.day.isoformat()}" if view.day else f"the last {view.span_h} h"


def liquidation_totals(con: Any, view: View) -> list[dict]:
    """The saved query ``liquidation_totals`` at the view's end: the same rows `liqstream query` prints."""
    queries.set_window_end(con, view.window_end)
    try:
        cols, rows = queries.run_query(con, queries.load_saved("liquidation_totals").sql)
    finally:
        queries.set_window_end(con, None)
    return [dict(zip(cols, r, strict=True)) for r in rows]


def totals_panel(view: View, rows: list[dict]) -> str:
    """``rows``: ``liquidation_totals(con, view)``."""
    end = rows[0]["window_end"] if rows else view.window_end
    end_text = f"{end:%Y-%m-%d %H:%M} UTC" if end else "—"
    tables = []
    for level, title in (("venue", "By venue"), ("base", "By base")):
        cells: dict[str, dict[str, dict]] = {}
        for r in rows:
            if r["level"] == level:
                cells.setdefault(r["name"], {})[r["span"]] = r
        names = sorted(cells, key=lambda n: (-float(cells[n].get("24h", {}).get("total_usd", 0) or 0), n))
        head = "".join(f"<th colspan='2' class='span'>{s}</th>" for s in _TOTAL_SPANS)
        sub = "<th class='num long'>long</th><th class='num short'>short</th>" * len(_TOTAL_SPANS)
        body = []
        for n in names:
            tds = []
            for s in _TOTAL_SPANS:
                r = cells[n].get(s)
                for side in ("long", "short"):
                    v = r[f"{side}_usd"] if r else 0
                    tds.append(f"<td class='num {side}' data-span='{s}' data-side='{side}' data-usd='{v}'>"
                               f"{_usd(v) if v else '–'}</td>")
            body.append(f"<tr data-level='{level}' data-name='{escape(n)}'><th>{escape(n)}</th>{''.join(tds)}</tr>")
        if not body:
            body.append(f"<tr><td colspan='{1 + 2 * len(_TOTAL_SPANS)}' class='empty'>no liquidations in 24 h</td></tr>")
        tables.append(f"<div class='totals-table'><h3>{title} × side</h3><table class='grid' id='totals-{level}'>"
                      f"<thead><tr><th></th>{head}</tr><tr><th></th>{sub}</tr></thead><tbody>{''.join(body)}</tbody>"
                      "</table></div>")
    return (f"<div class='panel-head'><h2>Liquidations</h2><span class='muted'>spans ending {end_text} "
            "(saved query <code>liquidation_totals</code>)</span></div><div class='totals'>" + "".join(tables) + "</div>")


def kpis(view: View, totals: list[dict], episodes: list[dict]) -> str:
    by = {s: [r for r in totals if r["level"] == "venue" and r["span"] == s] for s in ("1h", "24h")}
    open_n = sum(1 for e in episodes if e["status"] == "open")

    def total(span: str, side: str) -> float:
        return sum(float(r[f"{side}_usd"]) for r in by[span])

    items = [("1h longs liquidated", _usd(total("1h", "long")), "long"),
             ("1h shorts liquidated", _usd(total("1h", "short")), "short"),
             ("24h longs liquidated", _usd(total("24h", "long")), "long"),
             ("24h shorts liquidated", _usd(total("24h", "short")), "short"),
             ("open episodes", str(open_n), "alert" if open_n else "")]
    return "".join(f"<div class='kpi {cls}'><b>{escape(v)}</b><span>{escape(k)}</span></div>" for k, v, cls in items)


def charts_panel(con: Any, view: View, episodes: list[dict]) -> str:
    """The view's base: price with episodes shaded, liquidations under it, the estimated liquidation map
    (the report's chart), OI and funding per venue."""
    if not view.base:
        return "<p class='empty'>No perpetual bars in this range.</p>"
    tabs = "".join(f"<a class='tab{' on' if b == view.base else ''}' href='{view.query(base=b)}'>{escape(b)}</a>"
                   for b in view.bases)
    plots = [base_price_chart(con, view.base, view.t0, view.t1, episodes, svg.PALETTE[0], height=230),
             _liquidation_bars(con, view), liquidation_map_chart(con, view.base, view.t0, view.t1, height=260),
             _per_venue(con, view, "oi"), _per_venue(con, view, "funding")]
    return f"<div class='tabs'>{tabs}</div>" + "".join(plots)


def _liquidation_bars(con: Any, view: View) -> str:
    span_s = (view.t1 - view.t0).total_seconds()
    bucket_s = _bucket_minutes(span_s, _MAX_BARS) * 60
    c0 = math.floor(view.t0.timestamp() / bucket_s) * bucket_s
    n = max(1, math.ceil((view.t1.timestamp() - c0) / bucket_s))
    longs, shorts = [0.0] * n, [0.0] * n
    for r in _rows(con, """
            SELECT side, (floor(epoch(minute) / ?) * ?)::BIGINT AS bucket, sum(notional_usd)::DOUBLE AS usd
            FROM v_liquidations_1m WHERE base = ? AND minute >= ? AND minute < ? GROUP BY ALL ORDER BY side, bucket""",
                   [bucket_s, bucket_s, view.base, view.t0, view.t1]):
        j = int((r["bucket"] - c0) // bucket_s)
        if 0 <= j < n:
            (longs if r["side"] == "long" else shorts)[j] += r["usd"]
    starts = [float(c0 + j * bucket_s) for j in range(n)]
    title = (f"{view.base} liquidations, USD per {bucket_s // 60} min (all venues) — longs {svg.fmt_usd(sum(longs))}, "
             f"shorts {svg.fmt_usd(sum(shorts))}")
    return svg.bar_chart(f"liquidations-{view.base}", title, starts, bucket_s,
                         [svg.Series("longs", starts, longs, svg.LONG_COLOR),
                          svg.Series("shorts", starts, shorts, svg.SHORT_COLOR)],
                         x_range=(view.t0.timestamp(), view.t1.timestamp()))


def _per_venue(con: Any, view: View, what: str) -> str:
    """Open interest (USD) or funding rate (bp per the venue's interval) per perpetual venue symbol,
    the last value carried forward across minutes without one."""
    column, title, fmt = (("oi_last_usd", f"{view.base} open interest per venue (USD)", svg.fmt_usd) if what == "oi"
                          else ("funding_rate_last * 1e4", f"{view.base} funding rate per venue "
                                "(bp per the venue's funding interval)", None))
    rows = _rows(con, f"""
        SELECT exchange, symbol, epoch(minute_ts) AS t,
               last_value({column} IGNORE NULLS) OVER (PARTITION BY exchange, symbol ORDER BY minute_ts) AS v
        FROM v_bars_1m WHERE base = ? AND kind = 'perpetual' AND minute_ts >= ? AND minute_ts < ?
        ORDER BY exchange, symbol, minute_ts""", [view.base, view.t0, view.t1])
    series: dict[tuple[str, str], tuple[list, list]] = {}
    for r in rows:
        xs, ys = series.setdefault((r["exchange"], r["symbol"]), ([], []))
        xs.append(r["t"])
        ys.append(r["v"])
    symbols_per_exchange: dict[str, int] = {}
    for ex, _ in series:
        symbols_per_exchange[ex] = symbols_per_exchange.get(ex, 0) + 1
    lines = [svg.Series(ex if symbols_per_exchange[ex] == 1 else f"{ex} {sym}", *_thin(xs, ys, _MAX_LINE_POINTS),
                        svg.PALETTE[(i + 1) % len(svg.PALETTE)])
             for i, ((ex, sym), (xs, ys)) in enumerate(sorted(series.items()))]
    return svg.line_chart(f"{what}-{view.base}", title, lines, x_range=(view.t0.timestamp(), view.t1.timestamp()),
                          height=190, y_fmt=fmt, zero_line=what == "funding")

