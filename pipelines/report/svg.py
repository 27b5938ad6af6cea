"""Small static SVG charts for the HTML report: time-series lines with shaded bands, heatmaps.

matplotlib is not among the project's pinned dependencies, so the report draws its own SVG: it
embeds in the HTML as text (no files, no scripts), scales with the page and keeps hover titles.
Times are epoch seconds (UTC); every chart carries ``data-plot="<id>"`` so tests and readers can
find it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f", "#d62728"]
LONG_COLOR = "#d62728"   # long positions closed: price falling
SHORT_COLOR = "#2ca02c"  # short positions closed: price rising
FONT = "font-family='system-ui, -apple-system, Segoe UI, Roboto, sans-serif'"


@dataclass(frozen=True)
class Series:
    name: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    color: str
    dash: str = ""  # SVG stroke-dasharray, e.g. "5 3": a total drawn over the lines it sums


@dataclass(frozen=True)
class Band:
    """A shaded time interval [x0, x1); ``strip`` draws it as a thin strip along the top only."""

    x0: float
    x1: float
    color: str
    label: str
    opacity: float = 0.18
    strip: bool = False


def fmt_num(v: float) -> str:
    """Compact number for axes: 1.2B, 350M, 12k, 0.35."""
    a = abs(v)
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            s = f"{v / div:.3g}"
            return s + suffix
    if a >= 100 or v == 0:
        return f"{v:.0f}"
    return f"{v:.3g}"


def tick_formatter(ticks: Sequence[float], suffix_unit: str = "") -> Callable[[float], str]:
    """Axis labels with just enough decimals for the tick step (7.605, 7.610 rather than 7.61, 7.61)."""
    if len(ticks) < 2:
        return lambda v: fmt_num(v) + suffix_unit
    step = abs(ticks[1] - ticks[0]) or 1.0
    top = max(abs(t) for t in ticks)
    div, suffix = next(((d, x) for d, x in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")) if top >= 10 * d),
                       (1.0, ""))
    decimals = 0
    while decimals < 8 and abs(round(step / div, decimals) - step / div) > 1e-9 * max(step / div, 1e-12):
        decimals += 1

    def fmt(v: float) -> str:
        return f"{v / div:,.{decimals}f}{suffix}{suffix_unit}"

    return fmt


def fmt_usd(v: float) -> str:
    return ("-$" if v < 0 else "$") + fmt_num(abs(v))


def fmt_pct(v: float) -> str:
    return f"{v:+.2f}%"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + (abs(lo) * 0.01 or 1.0)
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


_TIME_STEPS_MIN = (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080)


def time_ticks(t0: float, t1: float, n: int = 8) -> list[float]:
    span_min = max((t1 - t0) / 60.0, 1.0)
    step = next((s for s in _TIME_STEPS_MIN if span_min / s <= n), _TIME_STEPS_MIN[-1]) * 60
    first = math.ceil(t0 / step) * step
    return [float(t) for t in range(int(first), int(t1) + 1, int(step))]


def _time_label(t: float, with_date: bool) -> str:
    d = datetime.fromtimestamp(t, UTC)
    if with_date:
        return d.strftime("%m-%d %H:%M")
    return d.strftime("%H:%M")


class _Frame:
    def __init__(self, x0: float, x1: float, y0: float, y1: float, width: int, height: int,
                 left: int = 64, right: int = 16, top: int = 34, bottom: int = 30, invert: bool = False) -> None:
        self.x0, self.x1 = x0, (x1 if x1 > x0 else x0 + 60)
        self.y0, self.y1 = y0, (y1 if y1 > y0 else y0 + 1)
        self.w, self.h = width, height
        self.left, self.right, self.top, self.bottom = left, right, top, bottom
        self.invert = invert

    @property
    def pw(self) -> float:
        return self.w - self.left - self.right

    @property
    def ph(self) -> float:
        return self.h - self.top - self.bottom

    def x(self, t: float) -> float:
        return self.left + (t - self.x0) / (self.x1 - self.x0) * self.pw

    def y(self, v: float) -> float:
        f = (v - self.y0) / (self.y1 - self.y0)
        if self.invert:
            f = 1 - f
        return self.top + (1 - f) * self.ph


def _open(plot_id: str, title: str, width: int, height: int) -> list[str]:
    return [f"<svg class='plot' data-plot='{escape(plot_id)}' xmlns='http://www.w3.org/2000/svg' "
            f"viewBox='0 0 {width} {height}' width='100%' role='img' aria-label='{escape(title)}' {FONT}>",
            f"<title>{escape(title)}</title>",
            f"<rect x='0' y='0' width='{width}' height='{height}' fill='#fff'/>",
            f"<text x='8' y='18' font-size='13' font-weight='600' fill='#222'>{escape(title)}</text>"]


def _time_axis(fr: _Frame, out: list[str]) -> None:
    ticks = time_ticks(fr.x0, fr.x1)
    days = {datetime.fromtimestamp(t, UTC).date() for t in ticks}
    base = fr.top + fr.ph
    out.append(f"<line x1='{fr.left}' y1='{base}' x2='{fr.left + fr.pw}' y2='{base}' stroke='#999'/>")
    prev_day = None
    for t in ticks:
        x = fr.x(t)
        day = datetime.fromtimestamp(t, UTC).date()
        label = _time_label(t, with_date=len(days) > 1 and day != prev_day)
        prev_day = day
        out.append(f"<line x1='{x:.1f}' y1='{fr.top}' x2='{x:.1f}' y2='{base}' stroke='#eee'/>")
        out.append(f"<text x='{x:.1f}' y='{base + 16}' font-size='10' fill='#555' text-anchor='middle'>{label}</text>")


def _value_axis(fr: _Frame, ticks: list[float], fmt: Callable[[float], str], out: list[str]) -> None:
    for v in ticks:
        y = fr.y(v)
        out.append(f"<line x1='{fr.left}' y1='{y:.1f}' x2='{fr.left + fr.pw}' y2='{y:.1f}' stroke='#eee'/>")
        out.append(f"<text x='{fr.left - 6}' y='{y + 3:.1f}' font-size='10' fill='#555' "
                   f"text-anchor='end'>{escape(fmt(v))}</text>")


def _legend(items: list[tuple[str, str]], width: int, out: list[str], y: int = 18) -> None:
    x = width - 12
    for name, color in reversed(items):
        label = escape(name)
        out.append(f"<text x='{x:.1f}' y='{y}' font-size='11' fill='#333' text-anchor='end'>{label}</text>")
        x -= 6.2 * len(name) + 4
        out.append(f"<rect x='{x - 10:.1f}' y='{y - 9}' width='10' height='10' fill='{color}'/>")
        x -= 22


def no_data(plot_id: str, title: str, reason: str, width: int = 1100, height: int = 80) -> str:
    out = _open(plot_id, title, width, height)
    out.append(f"<text x='{width / 2}' y='{height / 2 + 12}' font-size='12' fill='#888' "
               f"text-anchor='middle'>{escape(reason)}</text></svg>")
    return "\n".join(out)


def line_chart(plot_id: str, title: str, series: Sequence[Series], *, bands: Sequence[Band] = (),
               width: int = 1100, height: int = 230, y_fmt: Callable[[float], str] | None = None,
               x_range: tuple[float, float] | None = None, invert: bool = False, integer_y: bool = False,
               markers: bool = False, zero_line: bool = False, y_unit: str = "") -> str:
    """Lines (gaps where y is None) over time, with shaded bands drawn beneath them."""
    ys = [y for s in series for y in s.ys if y is not None and math.isfinite(y)]
    xs = [x for s in series for x in s.xs]
    if not ys or not xs:
        return no_data(plot_id, title, "no data in the selected range", width)
    x0, x1 = x_range if x_range else (min(xs), max(xs))
    lo, hi = min(ys), max(ys)
    if zero_line:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    pad = (hi - lo) * 0.06 or abs(hi) * 0.01 or 1.0
    if integer_y:
        lo, hi = math.floor(lo) - 0.5, math.ceil(hi) + 0.5
        ticks = [float(v) for v in range(math.ceil(lo), math.floor(hi) + 1)]
    else:
        ticks = nice_ticks(lo - pad, hi + pad)
        lo, hi = min(ticks[0], lo - pad), max(ticks[-1], hi + pad)
    fr = _Frame(x0, x1, lo, hi, width, height, invert=invert)
    out = _open(plot_id, title, width, height)
    _value_axis(fr, ticks, y_fmt or tick_formatter(ticks, y_unit), out)
    _time_axis(fr, out)
    for b in bands:
        a, z = max(b.x0, fr.x0), min(b.x1, fr.x1)
        if z <= a:
            continue
        xa, xz = fr.x(a), fr.x(z)
        y, h = (fr.top, 6) if b.strip else (fr.top, fr.ph)
        out.append(f"<rect class='band' x='{xa:.1f}' y='{y}' width='{max(xz - xa, 1.5):.1f}' height='{h}' "
                   f"fill='{b.color}' fill-opacity='{1 if b.strip else b.opacity}'><title>{escape(b.label)}</title></rect>")
    if zero_line and fr.y0 < 0 < fr.y1:
        out.append(f"<line x1='{fr.left}' y1='{fr.y(0):.1f}' x2='{fr.left + fr.pw}' y2='{fr.y(0):.1f}' stroke='#888'/>")
    for s in series:
        segment: list[str] = []
        segments: list[list[str]] = []
        for x, y in zip(s.xs, s.ys, strict=True):
            if y is None or not math.isfinite(y) or x < fr.x0 or x > fr.x1:
                if segment:
                    segments.append(segment)
                segment = []
                continue
            segment.append(f"{fr.x(x):.1f},{fr.y(y):.1f}")
        if segment:
            segments.append(segment)
        for seg in segments:
            if len(seg) == 1:
                cx, cy = seg[0].split(",")
                out.append(f"<circle cx='{cx}' cy='{cy}' r='2' fill='{s.color}'/>")
            else:
                dash = f" stroke-dasharray='{s.dash}'" if s.dash else ""
                out.append(f"<polyline points='{' '.join(seg)}' fill='none' stroke='{s.color}' stroke-width='1.6' "
                           f"stroke-linejoin='round'{dash}><title>{escape(s.name)}</title></polyline>")
        if markers:
            for x, y in zip(s.xs, s.ys, strict=True):
                if y is not None and math.isfinite(y) and fr.x0 <= x <= fr.x1:
                    out.append(f"<circle cx='{fr.x(x):.1f}' cy='{fr.y(y):.1f}' r='2.4' fill='{s.color}'/>")
    _legend([(s.name, s.color) for s in series], width, out)
    out.append("</svg>")
    return "\n".join(out)


def _ramp(color: str, f: float) -> str:
    """White -> color at f in [0, 1]."""
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    f = min(max(f, 0.0), 1.0)
    return "#{:02x}{:02x}{:02x}".format(*(round(255 + (c - 255) * f) for c in (r, g, b)))


def heatmap(plot_id: str, title: str, rows: Sequence[str], col_starts: Sequence[float], col_seconds: float,
            values: Sequence[Sequence[float]], color: str, *, width: int = 1100,
            value_fmt: Callable[[float], str] = fmt_usd, unit: str = "") -> str:
    """Rows x time cells, colour on a log scale from the smallest non-zero cell to the largest."""
    flat = [v for row in values for v in row if v > 0]
    if not rows or not col_starts or not flat:
        return no_data(plot_id, title, "no liquidations in the selected range", width)
    row_h = 22
    height = 34 + row_h * len(rows) + 30 + 24
    fr = _Frame(col_starts[0], col_starts[-1] + col_seconds, 0, 1, width, height, left=64, bottom=30 + 24)
    lo, hi = math.log10(min(flat)), math.log10(max(flat))
    out = _open(plot_id, title, width, height)
    _time_axis(fr, out)
    cw = fr.pw / len(col_starts)
    for i, (name, row) in enumerate(zip(rows, values, strict=True)):
        y = fr.top + i * row_h
        out.append(f"<text x='{fr.left - 6}' y='{y + row_h / 2 + 4}' font-size='11' fill='#333' "
                   f"text-anchor='end'>{escape(name)}</text>")
        for j, v in enumerate(row):
            if v <= 0:
                continue
            f = 1.0 if hi == lo else 0.15 + 0.85 * (math.log10(v) - lo) / (hi - lo)
            t = datetime.fromtimestamp(col_starts[j], UTC).strftime("%Y-%m-%d %H:%M")
            out.append(f"<rect x='{fr.left + j * cw:.1f}' y='{y + 1}' width='{cw + 0.3:.1f}' height='{row_h - 2}' "
                       f"fill='{_ramp(color, f)}'><title>{escape(name)} {t} UTC: {escape(value_fmt(v))}</title></rect>")
    # colour scale
    ly = height - 16
    out.append(f"<text x='{fr.left}' y='{ly + 9}' font-size='10' fill='#555'>{escape(value_fmt(min(flat)))}{unit}</text>")
    for k in range(40):
        out.append(f"<rect x='{fr.left + 60 + k * 4}' y='{ly}' width='4' height='10' fill='{_ramp(color, 0.15 + 0.85 * k / 39)}'/>")
    out.append(f"<text x='{fr.left + 226}' y='{ly + 9}' font-size='10' fill='#555'>{escape(value_fmt(max(flat)))}{unit} "
               f"per {int(col_seconds // 60)} min (log scale)</text>")
    out.append("</svg>")
    return "\n".join(out)


@dataclass(frozen=True)
class LevelCell:
    """One estimated liquidation-level bucket of one snapshot: [x0, x1) in time, [p0, p1) in price."""

    x0: float
    x1: float
    p0: float
    p1: float
    usd: float


def level_heatmap(plot_id: str, title: str, cells: Sequence[LevelCell], price: Series,
                  marks: Sequence[tuple[float, float, float, str]] = (), *, width: int = 1100,
                  height: int = 320) -> str:
    """Coinglass-style liquidation map: time on x, price on y, estimated USD as heat (log scale, one ramp),
    the price line on top and realized liquidations as marks ``(t, price, usd, color)`` sized by USD."""
    flat = [c.usd for c in cells if c.usd > 0]
    ys = [y for y in price.ys if y is not None and math.isfinite(y)]
    if not flat or not ys:
        return no_data(plot_id, title, "no estimated liquidation levels in the selected range", width)
    lo = min(min(c.p0 for c in cells), min(ys))
    hi = max(max(c.p1 for c in cells), max(ys))
    ticks = nice_ticks(lo, hi)
    x0 = min(min(c.x0 for c in cells), min(price.xs))
    x1 = max(max(c.x1 for c in cells), max(price.xs))
    fr = _Frame(x0, x1, lo, hi, width, height)
    out = _open(plot_id, title, width, height)
    _value_axis(fr, ticks, tick_formatter(ticks), out)
    _time_axis(fr, out)
    vlo, vhi = math.log10(min(flat)), math.log10(max(flat))
    heat = "#6a00a8"
    for c in cells:
        if c.usd <= 0 or c.p1 < lo or c.p0 > hi:
            continue
        f = 1.0 if vhi == vlo else 0.1 + 0.9 * (math.log10(c.usd) - vlo) / (vhi - vlo)
        ya, yb = fr.y(min(c.p1, hi)), fr.y(max(c.p0, lo))
        out.append(f"<rect x='{fr.x(c.x0):.1f}' y='{ya:.1f}' width='{fr.x(c.x1) - fr.x(c.x0) + 0.3:.1f}' "
                   f"height='{max(yb - ya, 0.6):.1f}' fill='{_ramp(heat, f)}'><title>{fmt_num(c.p0)}-{fmt_num(c.p1)}: "
                   f"{escape(fmt_usd(c.usd))}</title></rect>")
    pts = [f"{fr.x(x):.1f},{fr.y(y):.1f}" for x, y in zip(price.xs, price.ys, strict=True)
           if y is not None and math.isfinite(y)]
    out.append(f"<polyline points='{' '.join(pts)}' fill='none' stroke='{price.color}' stroke-width='1.4'>"
               f"<title>{escape(price.name)}</title></polyline>")
    top = max((m[2] for m in marks), default=0.0)
    for t, p, usd, color in marks:
        if usd > 0 and lo <= p <= hi:
            r = 1.5 + 4.5 * math.sqrt(usd / top)
            out.append(f"<circle cx='{fr.x(t):.1f}' cy='{fr.y(p):.1f}' r='{r:.1f}' fill='{color}' fill-opacity='0.7'>"
                       f"<title>liquidated {escape(fmt_usd(usd))}</title></circle>")
    _legend([(price.name, price.color), ("long liquidations", LONG_COLOR), ("short liquidations", SHORT_COLOR),
             (f"estimated levels {fmt_usd(min(flat))}-{fmt_usd(max(flat))} (log)", heat)], width, out)
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(plot_id: str, title: str, starts: Sequence[float], bucket_s: float,
              stacks: Sequence[Series], *, x_range: tuple[float, float] | None = None, width: int = 1100,
              height: int = 150, y_fmt: Callable[[float], str] = fmt_usd) -> str:
    """Stacked bars per time bucket (``starts`` in epoch seconds, each ``bucket_s`` long), one colour per
    stack; with the same ``x_range`` and width as a ``line_chart`` the two share their time axis, so
    liquidations can sit under the price they moved. Each stack's ``ys`` runs parallel to ``starts``."""
    totals = [sum(s.ys[j] or 0.0 for s in stacks) for j in range(len(starts))]
    if not starts or not any(v > 0 for v in totals):
        return no_data(plot_id, title, "no liquidations in the selected range", width)
    x0, x1 = x_range if x_range else (starts[0], starts[-1] + bucket_s)
    ticks = nice_ticks(0.0, max(totals), 3)
    fr = _Frame(x0, x1, 0.0, max(ticks[-1], max(totals)), width, height)
    out = _open(plot_id, title, width, height)
    _value_axis(fr, ticks, y_fmt, out)
    _time_axis(fr, out)
    bar_w = max(fr.x(x0 + bucket_s) - fr.x(x0) - 0.6, 0.8)
    for j, t in enumerate(starts):
        if t + bucket_s <= fr.x0 or t >= fr.x1:
            continue
        base = 0.0
        label = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")
        for s in stacks:
            v = s.ys[j] or 0.0
            if v <= 0:
                continue
            y_top, y_bottom = fr.y(base + v), fr.y(base)
            out.append(f"<rect class='bar' x='{fr.x(max(t, fr.x0)):.1f}' y='{y_top:.1f}' width='{bar_w:.1f}' "
                       f"height='{max(y_bottom - y_top, 0.8):.1f}' fill='{s.color}'><title>{escape(s.name)} "
                       f"{label} UTC: {escape(y_fmt(v))}</title></rect>")
            base += v
    _legend([(s.name, s.color) for s in stacks], width, out)
    out.append("</svg>")
    return "\n".join(out)
