"""ScoreContagion: bars -> ``contagion`` (dominance-weighted BTC contagion per altcoin).

Per altcoin b and as-of minute t, over each trailing window W of ``beta_windows_minutes`` (240 min and a day) of minute bars
aggregated across perpetual venues (bars_1m_symbol):

  beta_b       = cov(r_b, r_BTC) / var(r_BTC) of minute log returns in the window
  D            = w * D_oi + (1 - w) * D_vol, BTC's share of derivatives OI at t and of volume in
                 the window (w = dominance_oi_weight)
  lev_b        = OI_b(t) / (mean minute volume_b * 1440): OI in days of volume
  exposure_b   = (lev_b / lev_BTC) ** leverage_exponent
                 * (1 + funding_weight * max(f_b, 0) / funding_norm)
                 * (1 + liq_intensity_weight * LI_b)
                 with f_b the mean funding rate in the window and LI_b the liquidated USD in the
                 window as % of OI_b(t)
  score_b      = beta_b * D * exposure_b
  impulse_b    = score_b * BTC move over the window (%): the move BTC transmits to b

Why this shape: beta says how much of BTC's move b has followed; dominance says how much of the
market's leverage (and so of its forced flow) BTC carries, i.e. how strongly a BTC move is the
market's move; exposure says how much forced flow b itself can generate in response: leverage
relative to BTC (square root: diminishing), crowded longs paying funding, and liquidations
already running. Everything relative to BTC keeps the score unit-free and comparable over days.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
import numpy as np

from pipelines.transforms.bars import micros_to_ts
from pipelines.transforms.config import USD_MICROS, AnalyticsConfig
from pipelines.transforms.panel import AnalyticsTransform, BaseBars, BasePanels
from pipelines.transforms.params import resolve


def _f(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _cov(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.cov(a, b, ddof=1)`` step for step (same array layout, mean, BLAS dot and scaling, so
    bit-identical) without its argument handling, which cost 2/3 of its time on these small
    windows (tens of thousands of calls a week)."""
    x = np.array([a, b], dtype=float)
    x -= x.mean(axis=1)[:, None]
    c = np.dot(x, x.T.conj())
    c *= np.true_divide(1, x.shape[1] - 1)
    return c


def _nan_to_num(v: float) -> float:
    """``np.nan_to_num`` of one value without its array round trip (~50x faster on a scalar)."""
    v = float(v)
    if v != v:
        return 0.0
    if v in (math.inf, -math.inf):
        return math.copysign(sys.float_info.max, v)
    return v


def _parts(panel) -> dict[str, Any]:
    return {
        "base": panel.base,
        "minutes": panel.minutes,
        "price": panel.price,
        "oi": panel.oi_usd,
        "volume": panel.volume_usd_micros / USD_MICROS,
        "liq": (panel.long_liq_usd_micros + panel.short_liq_usd_micros) / USD_MICROS,
        "funding": panel.funding_rate,
    }


def score_contagion(parts: Iterable[dict], config: AnalyticsConfig, emit_from_us: int | None = None) -> list[dict]:
    parts = sorted(parts, key=lambda p: p["base"])
    ref = next((p for p in parts if p["base"] == config.reference_base), None)
    if ref is None:
        return []
    bar_us = config.bar_us
    m0 = min(int(p["minutes"][0]) for p in parts)
    m1 = max(int(p["minutes"][-1]) for p in parts)
    n = (m1 - m0) // bar_us + 1
    k = len(parts)

    def grid(key: str, fill: float = np.nan) -> np.ndarray:
        g = np.full((k, n), fill)
        for i, p in enumerate(parts):
            o = (int(p["minutes"][0]) - m0) // bar_us
            g[i, o : o + len(p["minutes"])] = p[key]
        return g

    price, oi, vol, liq, fund = grid("price"), grid("oi"), grid("volume", 0.0), grid("liq", 0.0), grid("funding")
    with np.errstate(invalid="ignore", divide="ignore"):
        logp = np.log(price)
    ret = np.full((k, n), np.nan)
    ret[:, 1:] = logp[:, 1:] - logp[:, :-1]
    ri = [p["base"] for p in parts].index(config.reference_base)
    out: list[dict] = []
    for win in config.beta_windows_minutes:
        out.extend(_score_window(parts, config, win, ri, m0, m1, price, oi, vol, liq, fund, logp, ret, emit_from_us))
    return out


def _score_window(parts, config, win, ri, m0, m1, price, oi, vol, liq, fund, logp, ret, emit_from_us) -> list[dict]:
    bar_us = config.bar_us
    step = config.contagion_every_minutes * bar_us
    first = m0 + win * bar_us if emit_from_us is None else max(m0 + win * bar_us, emit_from_us)
    first = -(-first // step) * step
    out: list[dict] = []
    for t_us in range(first, m1 + 1, step):
        j = (t_us - m0) // bar_us
        sl = slice(j - win + 1, j + 1)
        oi_t = oi[:, j]
        oi_ok = np.isfinite(oi_t)
        if not oi_ok[ri]:
            continue
        d_oi = oi_t[ri] / oi_t[oi_ok].sum()
        vol_w = vol[:, sl].sum(axis=1)
        d_vol = vol_w[ri] / vol_w.sum() if vol_w.sum() > 0 else np.nan
        dom = (config.dominance_oi_weight * d_oi + (1 - config.dominance_oi_weight) * d_vol
               if np.isfinite(d_vol) else d_oi)
        with np.errstate(invalid="ignore", divide="ignore"):
            lev = oi_t / (vol_w / win * 1440.0)
            li_pct = liq[:, sl].sum(axis=1) / oi_t * 100.0
            move = (np.exp(logp[:, j] - logp[:, j - win]) - 1.0) * 100.0
        f_win = fund[:, sl]
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a base without funding in the window
            f_mean = np.where(np.isfinite(f_win).any(axis=1), np.nanmean(f_win, axis=1), np.nan)
        rb = ret[ri, sl]
        as_of = micros_to_ts(t_us)
        rows = []
        for i, p in enumerate(parts):
            if i == ri:
                continue
            ra = ret[i, sl]
            ok = np.isfinite(ra) & np.isfinite(rb)
            if ok.sum() < config.beta_min_points or np.var(rb[ok]) == 0 or not oi_ok[i]:
                continue
            cov = _cov(ra[ok], rb[ok])
            beta = cov[0, 1] / cov[1, 1]
            corr = cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1]) if cov[0, 0] > 0 else np.nan
            lev_rel = lev[i] / lev[ri] if np.isfinite(lev[i]) and lev[ri] > 0 else np.nan
            crowd = 1.0 + config.funding_weight * max(_nan_to_num(f_mean[i]), 0.0) / config.funding_norm
            liq_mult = 1.0 + config.liq_intensity_weight * _nan_to_num(li_pct[i])
            lev_term = lev_rel**config.leverage_exponent if np.isfinite(lev_rel) else 1.0
            exposure = lev_term * crowd * liq_mult
            score = beta * dom * exposure
            rows.append({
                "base": p["base"],
                "as_of_ts": as_of,
                "window_minutes": win,
                "beta": float(beta),
                "correlation": _f(corr),
                "n_returns": int(ok.sum()),
                "btc_dominance_oi": float(d_oi),
                "btc_dominance_volume": _f(d_vol),
                "dominance": float(dom),
                "oi_usd": float(oi_t[i]),
                "volume_usd": float(vol_w[i]),
                "leverage": _f(lev[i]),
                "leverage_rel_btc": _f(lev_rel),
                "funding_rate_mean": _f(f_mean[i]),
                "liq_usd": float(liq[i, sl].sum()),
                "liq_intensity_pct": _f(li_pct[i]),
                "exposure": float(exposure),
                "contagion_score": float(score),
                "btc_move_pct": _f(move[ri]),
                "move_pct": _f(move[i]),
                "expected_move_pct": _f(beta * move[ri]),
                "contagion_impulse_pct": _f(score * move[ri]),
            })
        rows.sort(key=lambda r: (-r["contagion_score"], r["base"]))
        for rank, r in enumerate(rows, start=1):
            r["rank"] = rank
        out.extend(rows)
    return out


class _PanelParts(beam.DoFn):
    def process(self, keyed: tuple[str, BaseBars]):
        panel = keyed[1].panel
        if panel is not None:
            yield ("market", _parts(panel))


class _Score(beam.DoFn):
    def __init__(self, config: AnalyticsConfig, emit_from_us: int | None) -> None:
        self.config, self.emit_from_us = config, emit_from_us

    def process(self, keyed: tuple[str, Iterable[dict]]):
        yield from score_contagion(list(keyed[1]), self.config, resolve(self.emit_from_us))


class ScoreContagionOnPanels(AnalyticsTransform):
    """(base, BaseBars) -> contagion rows: the bases' small per-minute parts gathered with one
    GroupByKey, because beta, dominance and the ranking compare every base with BTC at the same
    minute."""

    def expand(self, panels: beam.PCollection) -> beam.PCollection:
        return (
            panels
            | "Panel" >> beam.ParDo(_PanelParts())
            | "GroupMarket" >> beam.GroupByKey()
            | "Score" >> beam.ParDo(_Score(self.config, self.emit_from_us))
        )


class ScoreContagion(AnalyticsTransform):
    """bars_1m rows (touched minutes + ``lookback_minutes()['contagion']``) -> contagion rows
    (BasePanels, then ScoreContagionOnPanels)."""

    def expand(self, bars: beam.PCollection) -> beam.PCollection:
        return (
            bars
            | "BasePanels" >> BasePanels(self.config)
            | "Score" >> ScoreContagionOnPanels(self.config, self.emit_from_us)
        )
