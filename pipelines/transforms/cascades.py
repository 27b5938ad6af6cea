"""DetectCascades: bars -> liquidation-cascade episodes (``cascades``) and ``cascade_alerts``.

Definition (docs/analytics.md, every threshold a field of AnalyticsConfig): per scope (a base
asset across its perpetual venues, and the whole market) and per direction (long liquidation
cascade / short squeeze), a minute is hot when that side's liquidated USD reaches ``hot_oi_bp``
of the scope's OI; consecutive hot minutes, bridging gaps shorter than ``quiet_gap_minutes``,
form a run; a run becomes an episode (start alert) once its liquidated USD reaches
``episode_oi_bp`` of OI and the scope's floor; the level rises (escalation alerts) at each
``severity_tiers`` multiple of that threshold.

Why GroupByKey + a sequential pass: the episode is a state machine over ORDERED minutes (start,
escalate, wait out the quiet gap), so each scope's minutes are gathered in one place; the rolling
sums, baselines and price moves are vectorized numpy, only the state transitions loop.

The input is a window of bars_1m rows (the touched minutes plus ``lookback_minutes()['cascades']``
read back from the mart), so a streaming cycle and a backfill run the same code and produce the
same episode ids (hash of scope, direction and start minute).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.transforms.bars import micros_to_ts
from pipelines.transforms.config import USD_MICROS, AnalyticsConfig
from pipelines.transforms.panel import AnalyticsTransform, BaseBars, BasePanels, SymbolPanel, panel_before
from pipelines.transforms.params import resolve

LONG = "long_liquidation"  # longs force-sold, price falling
SHORT = "short_squeeze"  # shorts force-bought, price rising
ALERTS_TAG = "alerts"
#: a windowed backfill's carried OI per scope (ADR 036): Arrow tables of (scope, minute_us, oi, q)
CARRY_TAG = "cascade_carry"
OPEN_STARTS_TAG = "open_starts"


@dataclass
class OIHistory:
    """A scope's OI as the whole range has it: ``before`` the ``oi_reference_minutes`` before the
    window's first minute (NaN where it has none), ``known`` from that minute on, as far as the
    windows before computed it; ``q_known`` likewise for the market index's growth factor."""

    before: np.ndarray
    known: np.ndarray
    q_known: np.ndarray | None = None
    #: per direction, the whole range's running sums before the window's first minute (liquidated
    #: USD, expected impact): the detector's prefix sums continue from them, to the last bit
    sums: dict[str, tuple[float, float]] | None = None


@dataclass
class CarriedOI:
    """What a windowed backfill (ADR 036) carries of one scope from window to window: its OI (and
    for the market, its index's growth factor) per minute of the whole range's grid, from the
    windows before; ``first_us`` where that grid begins; ``reference`` the OI reference from SQL
    before the whole range's window (``OI_REFERENCE_SQL``), as the whole range's run has it."""

    minutes: np.ndarray
    oi: np.ndarray
    q: np.ndarray | None
    first_us: int | None
    reference: float | None
    #: the running sums through each minute: cs_long, cs_short, csi_long, csi_short (CARRY_SUMS)
    sums: dict[str, np.ndarray] | None = None

    def history(self, m0: int, n: int, config: AnalyticsConfig) -> OIHistory | None:
        """The history of a window whose grid begins at ``m0``; None when the whole range's grid
        begins there too (nothing before it)."""
        if self.first_us is None or self.first_us >= m0:
            return None
        bar, r = config.bar_us, max(1, config.oi_reference_minutes)
        before = np.full(r, np.nan)
        sel = (self.minutes >= m0 - r * bar) & (self.minutes < m0)
        before[(self.minutes[sel] - (m0 - r * bar)) // bar] = self.oi[sel]
        i = int(np.searchsorted(self.minutes, m0))
        run = self.minutes[i:i + n]
        ok = run == m0 + np.arange(len(run), dtype=np.int64) * bar  # the carried minutes contiguous from m0
        k = len(run) if ok.all() else int(np.argmin(ok))
        q = None
        if self.q is not None:
            # the index's factor at m0: carried, or (a gap before m0: no move) the last one before
            q = self.q[i:i + k] if k else (self.q[i - 1:i] if i else None)
        sums = None
        if self.sums is not None and i:  # through the last carried minute before m0 (a gap adds nothing)
            sums = {LONG: (float(self.sums["cs_long"][i - 1]), float(self.sums["csi_long"][i - 1])),
                    SHORT: (float(self.sums["cs_short"][i - 1]), float(self.sums["csi_short"][i - 1]))}
        return OIHistory(before, self.oi[i:i + k], q, sums)
#: episode kinds (the ``kind`` column of cascades and cascade_alerts)
CASCADE = "cascade"
BURST = "liquidation_burst"
#: severity_level of the alert row that reports a liquidation burst: below watch (0) and every
#: cascade tier (>= 1), so "severity_level >= 1" selects cascades only
BURST_LEVEL = -1


def episode_id(scope: str, direction: str, start_us: int) -> str:
    return hashlib.sha1(f"{scope}|{direction}|{start_us}".encode()).hexdigest()[:16]


def _nz(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def _ols(y: np.ndarray, cols: list[np.ndarray]) -> np.ndarray:
    x = np.column_stack([np.ones_like(y), *cols])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return coef


def reference_sigma(ret_pct: np.ndarray, s: int, config: AnalyticsConfig) -> float:
    """The volatility reference (%) of a run starting at minute ``s``: the scale of the scope's
    1-minute returns over the ``vol_lookback_minutes`` before ``s`` (ADR 027, docs/analytics.md
    "The volatility reference"). ``ret_pct`` is what the scale is taken of -- the detector passes
    each minute's return net of its forced orders' expected impact when ``vol_net_of_impact``.

    Normal-equivalent robust scale: median |x - c| / 0.6745, with c the window's median when
    ``vol_centered`` (the MAD: a drift is not noise) and 0 otherwise (median |return|, before
    ADR 027). With ``vol_trim_sigmas`` > 0 the minutes farther than that many first-pass sigmas
    from c (a scheduled shock, a cascade's own minutes) are dropped and the scale re-taken over
    the rest (for normal noise this drops ~6e-5 of the minutes at 4: no correction needed).
    Fewer than ``vol_min_points`` finite returns in the window: all returns before ``s`` (the
    window so far); fewer than 2: NaN."""
    if s <= 0:
        return np.nan
    x = ret_pct[max(0, s - config.vol_lookback_minutes) : s]
    x = x[np.isfinite(x)]
    if x.size < config.vol_min_points and s > config.vol_lookback_minutes:
        x = ret_pct[:s]
        x = x[np.isfinite(x)]
    if x.size < 2:
        return np.nan
    c = float(np.median(x)) if config.vol_centered else 0.0
    dev = np.abs(x - c)
    sigma = float(np.median(dev)) / 0.6745
    if config.vol_trim_sigmas > 0 and sigma > 0:
        kept = dev[dev <= config.vol_trim_sigmas * sigma]
        if kept.size >= 2:
            sigma = float(np.median(kept)) / 0.6745
    return sigma if sigma > 0 else np.nan


def feedback_ratio(liq_usd: np.ndarray, adverse_ret_pct: np.ndarray, min_points: int) -> float | None:
    """Branching ratio of the liquidation -> price -> liquidation loop (discrete self-excitation).

    Two least-squares fits over consecutive minutes (liquidations in $M, returns in %):
      L_t = mu + alpha * L_{t-1} + gamma * A_{t-1}     (liquidations excited by last minute's
                                                         liquidations and adverse move)
      A_t = c + kappa * L_t                            (price impact of liquidations)
    feedback = alpha + gamma * kappa: the USD of next-minute liquidations caused per USD
    liquidated now, directly and through the price it moved. > 1 is a self-sustaining cascade.
    alpha and gamma are not separately identified when A follows L closely, but their sum along
    kappa is (least squares returns the minimum-norm split), which is why only it is reported.
    """
    lm = np.asarray(liq_usd, dtype=float) / 1e6
    a = np.asarray(adverse_ret_pct, dtype=float)
    y, x1, x2 = lm[1:], lm[:-1], a[:-1]
    ok = np.isfinite(y) & np.isfinite(x1) & np.isfinite(x2)
    if ok.sum() < min_points or np.ptp(x1[ok]) == 0:
        return None
    _, alpha, gamma = _ols(y[ok], [x1[ok], x2[ok]])
    ok2 = np.isfinite(lm) & np.isfinite(a)
    _, kappa = _ols(a[ok2], [lm[ok2]])
    return max(0.0, float(alpha + gamma * kappa))


#: the band of bars_1m's depth columns (depth_*_usd_100bp): 100 bp = 1 % of the mid
DEPTH_BAND_PCT = 1.0


def expected_impact_pct(liq_usd: np.ndarray, depth_usd: np.ndarray | None, oi_usd: np.ndarray,
                        config: AnalyticsConfig) -> np.ndarray:
    """Per minute: the move (%) the minute's forced orders on one side can cause by themselves.

    From the book (ADR 024): cascade_book_walk_coef x liquidated USD / the USD resting within
    100 bp on the side they hit x 1 % -- walking a linear book, X USD into a side holding D within
    1 % moves price X / D %. A minute whose depth is unknown (NaN, or no depth given) falls back
    to the prior: cascade_impact_pct_per_bp x bp of ``oi_usd`` liquidated (NaN without OI)."""
    liq = np.asarray(liq_usd, dtype=float)
    oi = np.asarray(oi_usd, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        prior = np.where(oi > 0, config.cascade_impact_pct_per_bp * liq / oi * 1e4, np.nan)
        if depth_usd is None:
            return prior
        d = np.asarray(depth_usd, dtype=float)
        book = config.cascade_book_walk_coef * liq / d * DEPTH_BAND_PCT
        return np.where(np.isfinite(d) & (d > 0), book, prior)


def detect_scope(
    scope: str,
    minutes: np.ndarray,
    long_micros: np.ndarray,
    short_micros: np.ndarray,
    long_count: np.ndarray,
    short_count: np.ndarray,
    price: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    oi_usd: np.ndarray,
    venue_names: list[str],
    venue_long_micros: np.ndarray,
    venue_short_micros: np.ndarray,
    config: AnalyticsConfig,
    oi_reference_before: float | None = None,
    expected_long_pct: np.ndarray | None = None,
    expected_short_pct: np.ndarray | None = None,
    history: OIHistory | None = None,
    sums_out: dict | None = None,
) -> tuple[list[dict], list[dict]]:
    """Episodes and alerts of one scope over contiguous minutes (see module docstring).

    ``oi_reference_before``: the scope's highest OI over the ``oi_reference_minutes`` before the
    window, when the job supplies it (a streaming cycle does not read days of bars); else the
    reference is computed from the window alone.
    ``expected_long_pct`` / ``expected_short_pct``: per minute, the move (%) that side's forced
    orders can cause (:func:`expected_impact_pct`, from the book's depth); NaN minutes, or None,
    use the prior cascade_impact_pct_per_bp x bp of reference OI liquidated.
    ``history`` (a windowed backfill, ADR 036): the scope's OI as the whole range has it before the
    window's first minute and over its first minutes, so the reference OI is the whole range's;
    ``sums_out``: filled with each direction's running sums through each minute (the next window's
    history).
    """
    episodes: list[dict] = []
    alerts: list[dict] = []
    n = len(minutes)
    if n == 0:
        return episodes, alerts
    bar_us = config.bar_us
    floor = config.floor_usd(scope)
    hot_floor = floor * config.hot_oi_bp / config.episode_oi_bp
    price = np.asarray(price, dtype=float)
    oi_usd = np.asarray(oi_usd, dtype=float)
    before = np.array([])
    if history is not None:  # the minutes before the window, and the first ones as the whole range has them
        oi_usd = oi_usd.copy()
        k = min(len(history.known), n)
        oi_usd[:k] = history.known[:k]
        before = history.before
    ext = np.concatenate([before, oi_usd])
    oi_prev = np.concatenate([ext[:1], ext[:-1]])
    # OI the thresholds scale with: the highest of the oi_reference_minutes before, so the
    # leverage a crash just removed still sets the bar for the next wave
    oi_ref = (
        pd.Series(oi_prev).rolling(max(1, config.oi_reference_minutes), min_periods=1).max().to_numpy()
    )[len(before):]
    oi_prev = oi_prev[len(before):]
    if oi_reference_before is not None and np.isfinite(oi_reference_before):
        oi_ref = np.fmax(oi_ref, float(oi_reference_before))
    with np.errstate(invalid="ignore", divide="ignore"):
        ret_pct = np.concatenate([[np.nan], (price[1:] / price[:-1] - 1.0) * 100.0])
    # each side's expected move per minute: from the book where its depth is known, else the
    # prior over the reference OI (the impact criterion's numerator, per run below)
    def own_move(side_micros: np.ndarray, expected: np.ndarray | None) -> np.ndarray:
        prior = expected_impact_pct(np.asarray(side_micros) / USD_MICROS, None, oi_ref, config)
        return prior if expected is None else np.where(np.isfinite(expected), expected, prior)

    own_long, own_short = own_move(long_micros, expected_long_pct), own_move(short_micros, expected_short_pct)
    # the volatility reference (ADR 027): the scale of the returns net of the forced orders' own
    # expected move (long liquidations push down, short squeezes up), taken only at the minutes
    # runs start at (a few per window), each over the vol_lookback_minutes before it
    vol_ret = ret_pct - (np.nan_to_num(own_short) - np.nan_to_num(own_long)) if config.vol_net_of_impact else ret_pct
    sigma_cache: dict[int, float] = {}

    def sigma_at(s: int) -> float:
        if s not in sigma_cache:
            sigma_cache[s] = reference_sigma(vol_ret, s, config)
        return sigma_cache[s]

    def thresholds(t: int) -> tuple[float, float]:
        oi = oi_ref[t]
        if not np.isfinite(oi):
            return hot_floor, floor
        return max(hot_floor, config.hot_oi_bp * 1e-4 * oi), max(floor, config.episode_oi_bp * 1e-4 * oi)

    with np.errstate(invalid="ignore"):
        hot_min = np.where(np.isfinite(oi_ref), np.maximum(hot_floor, config.hot_oi_bp * 1e-4 * oi_ref), hot_floor)

    def price_before(s: int) -> float:
        return price[s - 1] if s > 0 and np.isfinite(price[s - 1]) else price[s]

    def run(direction: str, side_micros: np.ndarray, sign: float, expected: np.ndarray | None) -> None:
        liq = np.asarray(side_micros, dtype=np.int64)
        liq_usd = liq / USD_MICROS
        # prefix sums added one minute at a time from the whole range's sum before the window (0.0
        # at its start): the same floats as over the whole range
        c0, ci0 = (0.0, 0.0) if history is None or not history.sums else history.sums[direction]
        cs = np.cumsum(np.concatenate([[c0], liq_usd]))
        # the move each minute's forced orders can cause: from the book where its depth is known,
        # else the prior over the reference OI; cumulated for the runs' impact z
        own = own_long if direction == LONG else own_short
        cs_impact = np.cumsum(np.concatenate([[ci0], np.nan_to_num(own)]))
        if sums_out is not None:
            sums_out[direction] = (cs[1:], cs_impact[1:])
        if config.baseline_multiple > 0:
            idx = np.arange(n)
            lo = np.maximum(0, idx - config.baseline_minutes)
            cnt = idx - lo
            base_rate = np.where(cnt > 0, (cs[idx] - cs[lo]) / np.maximum(cnt, 1), 0.0)
            base_ok = liq_usd >= config.baseline_multiple * base_rate
        else:
            base_ok = np.ones(n, dtype=bool)
        venue_side = venue_long_micros if direction == LONG else venue_short_micros
        # minutes that can start a run (the loop's own test, vectorized): idle minutes skip it
        can_start = ((liq_usd >= hot_min) & base_ok).tolist()

        def level_of(cum_usd: float, threshold: float) -> int:
            return sum(1 for tier in config.severity_tiers if cum_usd >= tier * threshold)

        def judge(s: int, t: int) -> dict[str, Any]:
            """Cascade or burst for the run [s, t] (docs/analytics.md, "Cascade or burst")."""
            window = low[s : t + 1] if direction == LONG else high[s : t + 1]
            p0 = price_before(s)
            with np.errstate(invalid="ignore", divide="ignore"):
                extreme = np.nan if np.isnan(window).all() else (
                    np.nanmin(window) if direction == LONG else np.nanmax(window))
                move = sign * (extreme / p0 - 1.0) * 100.0
                z = move / (sigma_at(s) * np.sqrt(t - s + 1))
                liq_bp = (cs[t + 1] - cs[s]) / oi_ref[s] * 1e4 if np.isfinite(oi_ref[s]) else np.nan
                per_bp = move / liq_bp
                # the move the forced closes themselves can have caused, against the noise: an
                # exogenous move that liquidations merely followed has a large z but too few bp
                # liquidated per sqrt(minute) to have made it (docs/analytics.md)
                impact_z = (cs_impact[t + 1] - cs_impact[s]) / (sigma_at(s) * np.sqrt(t - s + 1))
            # each criterion is off at 0; on, an unknown value (no volatility or OI yet) fails it
            z_ok = config.cascade_move_z <= 0 or bool(np.isfinite(z) and z >= config.cascade_move_z)
            bp_ok = config.cascade_min_move_pct_per_bp <= 0 or bool(
                np.isfinite(per_bp) and per_bp >= config.cascade_min_move_pct_per_bp)
            # off at cascade_min_impact_z 0, or with no depth input and no prior (kappa 0)
            impact_ok = config.cascade_min_impact_z <= 0 or (
                expected is None and config.cascade_impact_pct_per_bp <= 0) or bool(
                np.isfinite(impact_z) and impact_z >= config.cascade_min_impact_z)
            cascade = z_ok and bp_ok and impact_ok
            return {"kind": CASCADE if cascade else BURST, "price_move_pct": _nz(move),
                    "price_move_z": _nz(z), "move_pct_per_liq_bp": _nz(per_bp),
                    "vol_1m_pct": _nz(sigma_at(s))}

        def adverse_ok(s: int, t: int) -> bool:
            if config.min_adverse_move_pct <= 0:
                return True
            with np.errstate(invalid="ignore", divide="ignore"):
                move = (price[t] / price_before(s) - 1.0) * 100.0
            return bool(np.isfinite(move) and sign * move >= config.min_adverse_move_pct)

        def close(st: dict, status: str, decided: int | None) -> None:
            s, end = st["start"], st["last_hot"]
            sl = slice(s, end + 1)
            side_usd = int(liq[sl].sum()) / USD_MICROS
            p0 = price_before(s)
            o0 = oi_prev[s]
            window = low[sl] if direction == LONG else high[sl]
            # minutes without a trade have no price: an episode of only those has no extreme (NaN)
            if np.isnan(window).all():
                extreme = np.nan
            else:
                extreme = np.nanmin(window) if direction == LONG else np.nanmax(window)
            per_venue = venue_side[:, sl].sum(axis=1)
            tot = per_venue.sum()
            share: dict[str, float] = {}
            if tot > 0:
                by_ex: dict[str, int] = {}
                for name, v in zip(venue_names, per_venue, strict=True):
                    by_ex[name] = by_ex.get(name, 0) + int(v)
                share = {k: round(v / tot, 4) for k, v in sorted(by_ex.items()) if v > 0}
            fb_lo = max(0, s - config.feedback_pre_minutes)
            # adverse return: the move that hurts the liquidated side, positive when it hurts
            adverse_ret = sign * ret_pct[fb_lo : end + 1]
            with np.errstate(invalid="ignore", divide="ignore"):
                drawdown = (extreme / p0 - 1.0) * 100.0
                oi_chg = (oi_usd[end] / o0 - 1.0) * 100.0
            peak = s + int(np.argmax(liq_usd[sl]))
            start_us = int(minutes[s])
            verdict = judge(s, end)
            # once an alert called the run a cascade it stays one (the alert was sent)
            kind = CASCADE if CASCADE in (verdict["kind"], st["kind"]) else BURST
            episodes.append(
                {
                    "episode_id": episode_id(scope, direction, start_us),
                    "scope": scope,
                    "direction": direction,
                    "status": status,
                    "start_ts": micros_to_ts(start_us),
                    "detected_ts": micros_to_ts(int(minutes[st["confirmed"]]) + bar_us),
                    "peak_ts": micros_to_ts(int(minutes[peak])),
                    "end_ts": micros_to_ts(int(minutes[end]) + bar_us),
                    # when the quiet gap confirmed the end (None while open)
                    "closed_ts": None if decided is None else micros_to_ts(int(minutes[decided]) + bar_us),
                    "duration_minutes": end - s + 1,
                    "long_liq_usd": int(long_micros[sl].sum()) / USD_MICROS,
                    "short_liq_usd": int(short_micros[sl].sum()) / USD_MICROS,
                    "liq_count": int(long_count[sl].sum() + short_count[sl].sum()),
                    "peak_minute_liq_usd": float(liq_usd[peak]),
                    "price_start": _nz(p0),
                    "price_extreme": _nz(extreme),
                    "price_end": _nz(price[end]),
                    "drawdown_pct": _nz(drawdown),
                    "oi_start_usd": _nz(o0),
                    "oi_end_usd": _nz(oi_usd[end]),
                    "oi_change_usd": _nz(oi_usd[end] - o0),
                    "oi_change_pct": _nz(oi_chg),
                    "venue_share": json.dumps(share, sort_keys=True),
                    "threshold_usd": st["episode_threshold"],
                    "severity": side_usd / st["episode_threshold"],
                    "severity_level": level_of(side_usd, st["episode_threshold"]) if kind == CASCADE else BURST_LEVEL,
                    "feedback": feedback_ratio(liq_usd[fb_lo : end + 1], adverse_ret, config.feedback_min_points),
                    "kind": kind,
                    "price_move_pct": verdict["price_move_pct"],
                    "price_move_z": verdict["price_move_z"],
                    "move_pct_per_liq_bp": verdict["move_pct_per_liq_bp"],
                    "vol_1m_pct": verdict["vol_1m_pct"],
                }
            )

        def alert(st: dict, t: int, kind: str, level: int, cum: float) -> None:
            s = st["start"]
            with np.errstate(invalid="ignore", divide="ignore"):
                mv = (price[t] / price_before(s) - 1.0) * 100.0
            alerts.append(
                {
                    "episode_id": episode_id(scope, direction, int(minutes[s])),
                    "severity_level": level,
                    "alert_type": kind,
                    "scope": scope,
                    "direction": direction,
                    "alert_ts": micros_to_ts(int(minutes[t]) + bar_us),
                    "minute_ts": micros_to_ts(int(minutes[t])),
                    "start_ts": micros_to_ts(int(minutes[s])),
                    "liq_usd": cum,
                    "minute_liq_usd": float(liq_usd[t]),
                    "threshold_usd": st["episode_threshold"],
                    "price_move_pct": _nz(mv),
                    "severity": cum / st["episode_threshold"],
                    "kind": {"watch": "watch", "burst": BURST}.get(kind, CASCADE),
                }
            )

        state: dict[str, Any] | None = None
        for t in range(n):
            if state is None:
                if not can_start[t]:
                    continue
                hot_thr, ep_thr = thresholds(t)
                if not (liq_usd[t] >= hot_thr and base_ok[t]):
                    continue
                state = {"start": t, "last_hot": t, "quiet_run": 0, "hot_threshold": hot_thr,
                         "episode_threshold": ep_thr, "confirmed": None, "level": 0, "kind": None}
                # early warning at the close of the first hot minute: the run may still fizzle
                # (then no cascades row follows); level 0 in cascade_alerts
                alert(state, t, "watch", 0, float(liq_usd[t]))
            elif liq_usd[t] >= state["hot_threshold"] and base_ok[t]:
                state["last_hot"], state["quiet_run"] = t, 0
            else:
                state["quiet_run"] += 1
            # the run's USD counts up to its last hot minute (quiet minutes may never be part of it)
            cum = float(cs[state["last_hot"] + 1] - cs[state["start"]])
            lvl = level_of(cum, state["episode_threshold"]) if state["last_hot"] == t else state["level"]
            if state["confirmed"] is None:
                if lvl >= 1 and adverse_ok(state["start"], t):
                    state["confirmed"] = t
                    state["kind"] = judge(state["start"], t)["kind"]
                    if state["kind"] == CASCADE:
                        state["level"] = lvl
                        alert(state, t, "start", lvl, cum)
                    else:
                        # the USD is there, the price criterion is not: a burst, reported once and
                        # below every cascade level; it becomes a cascade if price follows
                        alert(state, t, "burst", BURST_LEVEL, cum)
            elif state["kind"] == BURST:
                if judge(state["start"], t)["kind"] == CASCADE:
                    state["kind"], state["level"] = CASCADE, lvl
                    alert(state, t, "start", lvl, cum)
            elif lvl > state["level"]:
                state["level"] = lvl
                alert(state, t, "escalation", lvl, cum)
            if state["quiet_run"] >= config.quiet_gap_minutes:
                if state["confirmed"] is not None:
                    close(state, "closed", t)
                state = None
        if state is not None and state["confirmed"] is not None:
            close(state, "open", None)

    run(LONG, long_micros, -1.0, expected_long_pct)
    run(SHORT, short_micros, 1.0, expected_short_pct)
    return episodes, alerts


def panel_expected_impact(panel: SymbolPanel, config: AnalyticsConfig) -> tuple[np.ndarray, np.ndarray]:
    """The base's per-minute expected moves (%) of its long / short liquidations: long
    liquidations sell into the bids, short squeezes buy the asks (:func:`expected_impact_pct`);
    NaN where the depth is unknown (the detector's prior applies there)."""
    nan = np.full(len(panel.minutes), np.nan)
    return (expected_impact_pct(panel.long_liq_usd, panel.bid_depth_usd, nan, config),
            expected_impact_pct(panel.short_liq_usd, panel.ask_depth_usd, nan, config))


def detect_panel(
    panel: SymbolPanel, config: AnalyticsConfig, oi_reference_before: float | None = None,
    history: OIHistory | None = None, sums_out: dict | None = None,
) -> tuple[list[dict], list[dict]]:
    exp_long, exp_short = panel_expected_impact(panel, config)
    return detect_scope(
        panel.base,
        panel.minutes,
        panel.long_liq_usd_micros,
        panel.short_liq_usd_micros,
        panel.long_liq_count,
        panel.short_liq_count,
        panel.price,
        panel.low,
        panel.high,
        panel.oi_usd,
        [v[0] for v in panel.venues],
        panel.venue_long_liq_micros,
        panel.venue_short_liq_micros,
        config,
        oi_reference_before,
        exp_long,
        exp_short,
        history,
        sums_out,
    )


def market_parts(panel: SymbolPanel) -> dict[str, Any]:
    """What the market scope needs of one base (small: arrays per minute, venues by exchange)."""
    return {
        "base": panel.base,
        "minutes": panel.minutes,
        "long": panel.long_liq_usd_micros,
        "short": panel.short_liq_usd_micros,
        "long_n": panel.long_liq_count,
        "short_n": panel.short_liq_count,
        "price": panel.price,
        "oi": panel.oi_usd,
        "venues": [v[0] for v in panel.venues],
        "v_long": panel.venue_long_liq_micros,
        "v_short": panel.venue_short_liq_micros,
        "bid_depth": panel.bid_depth_usd,
        "ask_depth": panel.ask_depth_usd,
    }


def market_index(prices: np.ndarray, oi: np.ndarray, q_known: np.ndarray | None = None) -> np.ndarray:
    """OI-weighted market price index (100 at the first minute): 100 x :func:`market_growth`."""
    return 100.0 * market_growth(prices, oi, q_known)


def market_growth(prices: np.ndarray, oi: np.ndarray, q_known: np.ndarray | None = None) -> np.ndarray:
    """The market index's cumulative growth factor (1 at the first minute).

    r_m(t) = sum_b w_b(t-1) r_b(t) / sum_b w_b(t-1), w = OI in USD: a base moves the market index
    in proportion to the leverage riding on it, which is what liquidations respond to.
    ``q_known`` (a windowed backfill, ADR 036): the whole range's factors of the first minutes;
    the product continues from the last of them, one factor at a time as over the whole range,
    so every value is the whole range's to the last bit.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        r = prices[:, 1:] / prices[:, :-1] - 1.0
    w = np.nan_to_num(oi[:, :-1], nan=0.0)
    ok = np.isfinite(r) & (w > 0)
    den = np.where(ok, w, 0.0).sum(axis=0)
    num = np.where(ok, w * np.nan_to_num(r), 0.0).sum(axis=0)
    rm = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    steps = np.concatenate([[1.0], 1.0 + rm])
    k = 0 if q_known is None else min(len(q_known), len(steps))
    if k == 0:
        return np.cumprod(steps)
    return np.concatenate([q_known[:k - 1], np.cumprod(np.concatenate([q_known[k - 1:k], steps[k:]]))])


def detect_market(
    parts: Iterable[dict], config: AnalyticsConfig, oi_reference_before: float | None = None,
    carried: CarriedOI | None = None, series: dict | None = None,
) -> tuple[list[dict], list[dict]]:
    """The market scope from its bases' parts. ``carried`` (a windowed backfill, ADR 036): the
    market's OI and index as the windows before had them (:class:`CarriedOI`); ``series``: filled
    with the market's minutes, OI and index growth, for the next window's ``carried``."""
    parts = sorted(parts, key=lambda p: p["base"])
    if not parts:
        return [], []
    bar_us = config.bar_us
    m0 = min(int(p["minutes"][0]) for p in parts)
    m1 = max(int(p["minutes"][-1]) for p in parts)
    n = (m1 - m0) // bar_us + 1
    minutes = m0 + np.arange(n, dtype=np.int64) * bar_us
    exchanges = sorted({v for p in parts for v in p["venues"]})
    ex_i = {e: i for i, e in enumerate(exchanges)}
    long_, short_ = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    ln, sn = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    prices, ois = np.full((len(parts), n), np.nan), np.full((len(parts), n), np.nan)
    # per base, the expected move of its forced orders (from its book, else the prior over its OI)
    exp_long, exp_short = np.zeros((len(parts), n)), np.zeros((len(parts), n))
    v_long = np.zeros((len(exchanges), n), dtype=np.int64)
    v_short = np.zeros((len(exchanges), n), dtype=np.int64)
    for k, p in enumerate(parts):
        o = (int(p["minutes"][0]) - m0) // bar_us
        sl = slice(o, o + len(p["minutes"]))
        long_[sl] += p["long"]
        short_[sl] += p["short"]
        ln[sl] += p["long_n"]
        sn[sl] += p["short_n"]
        prices[k, sl], ois[k, sl] = p["price"], p["oi"]
        exp_long[k, sl] = expected_impact_pct(p["long"] / USD_MICROS, p.get("bid_depth"), p["oi"], config)
        exp_short[k, sl] = expected_impact_pct(p["short"] / USD_MICROS, p.get("ask_depth"), p["oi"], config)
        for vi, name in enumerate(p["venues"]):
            v_long[ex_i[name], sl] += p["v_long"][vi]
            v_short[ex_i[name], sl] += p["v_short"][vi]
    history = None if carried is None else carried.history(m0, n, config)
    growth = market_growth(prices, ois, None if history is None else history.q_known)
    index = 100.0 * growth
    oi_total = np.where(np.isfinite(ois).any(axis=0), np.nansum(ois, axis=0), np.nan)
    if series is not None:
        series.update(minutes=minutes, oi=oi_total, q=growth, sums={})
    # the index moves by each base's move weighted by its OI share (market_index): so does the
    # expected move of the bases' forced orders (with the prior alone this is the prior over the
    # market's current OI)
    w = np.nan_to_num(ois, nan=0.0)
    w = w / np.where(w.sum(axis=0) > 0, w.sum(axis=0), 1.0)
    return detect_scope(
        config.market_scope, minutes, long_, short_, ln, sn, index, index, index, oi_total,
        exchanges, v_long, v_short, config, oi_reference_before,
        (w * np.nan_to_num(exp_long)).sum(axis=0), (w * np.nan_to_num(exp_short)).sum(axis=0), history,
        None if series is None else series["sums"],
    )


def open_minute_starts(alerts: Iterable[dict], closed_before_us: int) -> list[dict]:
    """The ``start`` alerts a detection over bars that include open (partial) minutes raised in
    those minutes: the open minute's liquidations and move met the detector's own cascade test
    (the same :func:`detect_scope`, so the rule exists once). The stream job raises a watch for
    each (ADR 018); the complete-minute detection confirms or withdraws it at the minute's close."""
    from pipelines.transforms.bars import ts_to_micros

    return [a for a in alerts if a["alert_type"] == "start" and ts_to_micros(a["minute_ts"]) >= closed_before_us]


class _DetectPerBase(beam.DoFn):
    """One base's scope, detected where its panel is; its episodes and alerts travel with its
    market parts to the one market element (no Flatten of per-base and market rows: the runner
    materializes a Flatten, pickling every row). With ``closed_before_us`` the episodes and alerts
    come from the closed minutes only, and a second detection over all minutes yields the open
    minutes' cascade starts."""

    def __init__(self, config: AnalyticsConfig, closed_before_us: int | None = None,
                 carry_range: tuple[int, int | None] | None = None) -> None:
        self.config = config
        self.closed_before_us = closed_before_us
        self.carry_range = carry_range

    def start_bundle(self) -> None:
        self._cut = resolve(self.closed_before_us)  # a RunParam is read when the graph runs (ADR 045)

    def process(self, keyed: tuple[str, BaseBars], oi_reference: dict | None = None):
        base, bb = keyed
        panel = bb.panel
        if panel is None:
            return
        ref, history = _reference((oi_reference or {}).get(base), int(panel.minutes[0]), len(panel.minutes),
                                  self.config)
        closed = panel if self._cut is None else panel_before(panel, self._cut)
        sums: dict | None = None if self.carry_range is None else {}
        episodes, alerts = detect_panel(closed, self.config, ref, history, sums) if closed is not None else ([], [])
        carry = None
        if sums:  # (a windowed backfill: no open minute, closed is the panel)
            carry = carry_table(base, panel.minutes, panel.oi_usd, None, sums, *self.carry_range)
        full_parts, opened = None, []
        if closed is not panel:
            full_parts = market_parts(panel)
            opened = open_minute_starts(detect_panel(panel, self.config, ref)[1], self._cut)
        closed_parts = market_parts(closed) if closed is not None else None
        yield self.config.market_scope, (closed_parts, full_parts, episodes, alerts, opened, carry)


def _reference(ref: float | CarriedOI | None, m0: int, n: int,
               config: AnalyticsConfig) -> tuple[float | None, OIHistory | None]:
    """A scope's side input -> (OI reference before the window, history): a float from
    ``OI_REFERENCE_SQL``, or a windowed backfill's :class:`CarriedOI` (ADR 036)."""
    if isinstance(ref, CarriedOI):
        return ref.reference, ref.history(m0, n, config)
    return ref, None


#: the running sums a window carries per scope and minute (``detect_scope``'s ``sums_out``)
CARRY_SUMS = ("cs_long", "cs_short", "csi_long", "csi_short")


def carry_table(scope: str, minutes: np.ndarray, oi: np.ndarray, q: np.ndarray | None, sums: dict, lo_us: int,
                hi_us: int | None) -> pa.Table:
    """A scope's OI, index growth and running sums at its minutes in [lo_us, hi_us), as
    :data:`CARRY_TAG` rows."""
    keep = minutes >= lo_us if hi_us is None else (minutes >= lo_us) & (minutes < hi_us)
    n = int(keep.sum())
    cols = {"scope": [scope] * n, "minute_us": minutes[keep], "first_us": np.full(n, int(minutes[0])),
            "oi": np.asarray(oi, dtype=float)[keep],
            "q": np.full(n, np.nan) if q is None else np.asarray(q, dtype=float)[keep]}
    cols.update({"cs_long": sums[LONG][0][keep], "csi_long": sums[LONG][1][keep],
                 "cs_short": sums[SHORT][0][keep], "csi_short": sums[SHORT][1][keep]})
    return pa.table(cols)


class _DetectMarket(beam.DoFn):
    def __init__(self, config: AnalyticsConfig, emit_from_us: int | None, closed_before_us: int | None = None,
                 carry_range: tuple[int, int | None] | None = None) -> None:
        self.config = config
        self.emit_from_us = emit_from_us
        self.closed_before_us = closed_before_us
        self.carry_range = carry_range

    def start_bundle(self) -> None:
        # this run's values (RunParams are read when the graph runs, ADR 045)
        emit_from_us = resolve(self.emit_from_us)
        self.keep_episode = _emitted(emit_from_us, "closed_ts")
        self.keep_alert = _emitted(emit_from_us, "alert_ts")
        self._cut = resolve(self.closed_before_us)

    def process(self, keyed: tuple[str, Iterable[tuple]], oi_reference: dict | None = None):
        items = list(keyed[1])
        ref = (oi_reference or {}).get(self.config.market_scope)
        carried = ref if isinstance(ref, CarriedOI) else None
        if carried is not None:
            ref = carried.reference
        series: dict = {}
        parts = [c for c, *_ in items if c is not None]
        market = detect_market(parts, self.config, ref, carried, series)
        if self.carry_range is not None and parts:
            tables = [c for *_, c in items if c is not None]
            tables.append(carry_table(self.config.market_scope, series["minutes"], series["oi"], series["q"],
                                      series["sums"], *self.carry_range))
            yield beam.pvalue.TaggedOutput(CARRY_TAG, pa.concat_tables(tables))
        for episodes, alerts in [(e, a) for _, _, e, a, *_ in items] + [market]:
            yield from filter(self.keep_episode, episodes)
            for a in filter(self.keep_alert, alerts):
                yield beam.pvalue.TaggedOutput(ALERTS_TAG, a)
        if self._cut is None:
            return
        full = detect_market([c if f is None else f for c, f, *_ in items], self.config, ref)[1]
        for a in [a for *_, opened, _ in items for a in opened] + open_minute_starts(full, self._cut):
            yield beam.pvalue.TaggedOutput(OPEN_STARTS_TAG, a)


def _emitted(emit_from_us: int | None, col: str):
    from pipelines.transforms.bars import ts_to_micros

    def keep(row: dict) -> bool:
        return emit_from_us is None or row.get("status") == "open" or ts_to_micros(row[col]) > emit_from_us

    return keep


class DetectCascadesOnPanels(AnalyticsTransform):
    """(base, BaseBars) -> {"cascades": episode rows, "cascade_alerts": alert rows}.

    Each base's scope is detected where its panel is; the market scope gathers the bases' small
    per-minute parts (:func:`market_parts`) and their rows with one GroupByKey, where every row is
    emitted. Arguments as DetectCascades, and ``closed_before_us`` (the stream job's first open
    minute): episodes and alerts from the minutes before it only, plus "cascade_open_starts", the
    ``start`` alerts the open minutes' partial bars would raise (:func:`open_minute_starts`).
    """

    def __init__(self, *args: Any, closed_before_us: int | None = None,
                 carry_range: tuple[int, int | None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.closed_before_us = closed_before_us
        self.carry_range = carry_range

    def expand(self, panels: beam.PCollection) -> dict[str, beam.PCollection]:
        side = {} if self.oi_reference is None else {"oi_reference": beam.pvalue.AsDict(self.oi_reference)}
        cut = self.closed_before_us
        per_base = panels | "DetectPerBase" >> beam.ParDo(_DetectPerBase(self.config, cut, self.carry_range), **side)
        market = (
            per_base
            | "GroupMarket" >> beam.GroupByKey()
            | "DetectMarket"
            >> beam.ParDo(_DetectMarket(self.config, self.emit_from_us, cut, self.carry_range), **side).with_outputs(
                ALERTS_TAG, OPEN_STARTS_TAG, CARRY_TAG, main="episodes")
        )
        out = {"cascades": market.episodes, "cascade_alerts": market[ALERTS_TAG]}
        if self.carry_range is not None:
            out[CARRY_TAG] = market[CARRY_TAG]
        if cut is not None:
            out["cascade_open_starts"] = market[OPEN_STARTS_TAG]
        return out


class DetectCascades(AnalyticsTransform):
    """bars_1m rows -> {"cascades": episode rows, "cascade_alerts": alert rows}.

    ``emit_from_us``: rows whose end (episodes) / alert time is at or before it are context from
    the lookback and are not emitted again (they are already in the mart, unchanged).
    ``oi_reference``: optional PCollection of (scope, highest OI USD over the
    ``oi_reference_minutes`` before the window), e.g. from ``OI_REFERENCE_SQL``; without it the
    bars must cover that span (``lookback_minutes()['cascades']``).
    """

    def expand(self, bars: beam.PCollection) -> dict[str, beam.PCollection]:
        return (
            bars
            | "BasePanels" >> BasePanels(self.config)
            | "Detect" >> DetectCascadesOnPanels(self.config, self.emit_from_us, self.oi_reference)
        )


#: The job's query for DetectCascades(oi_reference=...): each scope's highest OI over
#: [window_start - oi_reference_minutes, window_start) from bars_1m_symbol. Parameters:
#: $window_start (TIMESTAMPTZ), $minutes (oi_reference_minutes), $market (config.market_scope).
#: The market's OI is summed in base order, as detect_market sums it (np.nansum over bases sorted):
#: a plain sum of doubles adds in the scan's thread order, and its last digit moved the thresholds
#: (and the cascades rows) between runs and between cycle cuts.
OI_REFERENCE_SQL = """
SELECT base AS scope, max(oi_usd) AS oi_reference_usd
FROM bars_1m_symbol
WHERE minute_ts >= $window_start - to_minutes($minutes) AND minute_ts < $window_start
GROUP BY base
UNION ALL
SELECT $market AS scope, max(total) AS oi_reference_usd
FROM (SELECT minute_ts, sum(oi_usd ORDER BY base) AS total FROM bars_1m_symbol
      WHERE minute_ts >= $window_start - to_minutes($minutes) AND minute_ts < $window_start
      GROUP BY minute_ts)
"""
