"""Ground truth of a simulated run: what a detector and the marts are scored against.

Everything here is accumulated from the messages as they are written (the
rounded numbers in the raw messages), per minute, so it is exactly what a
parser of the raw messages can recover: liquidated USD per minute, venue,
symbol and side; the last OI snapshot per minute, venue and symbol; the
model's price per symbol and minute (open/high/low/close); the exogenous
shocks. Memory is O(minutes x symbols x venues), independent of the number of
messages.

Labelled events (also in docs/simulator.md). For each scope -- the market
(all symbols) and each symbol (all venues) -- a minute is *hot* when its
forced-liquidation USD (long + short) is at least ``hot_bp`` basis points of
the scope's open interest at the start of the run. Hot minutes closer than
``max_gap_min`` quiet minutes apart are merged into one run; a run is an
**event** when its total liquidated USD is at least ``min_total_bp`` basis
points of the scope's starting OI (the size of what a desk looks at). Its
**class** comes from the model's own causal attribution, never from the size:

* ``burst`` -- at least half of the liquidated USD was closed by a scheduled
  absorbed burst (no forced-order impact);
* ``cascade`` -- the feedback loop: at least ``min_endogenous_share`` of the
  liquidated USD hit levels the price reached only through the recent
  forced-order impact (the model's counterfactual, ``liq_*_endo_base``), and
  the forced orders' own price impact, against the liquidated side, reached at
  least ``min_impact_z`` times the scope's exogenous noise over the minutes it
  took, at some minute of the run (``impact_z``: the largest over the run's
  prefixes ``[start, t]`` of impact / (noise x sqrt(minutes)); the loop ran,
  and a trailing small close after it does not undo that -- the detector's
  rule too: once a cascade, it stays one). Own impact = the model's impact
  term of the forced orders as they hit the book (``forced_impact_return``),
  not net of the fade: the book refilling after an earlier run's impact is a
  reversal of that run's move, not something these forced orders did (counted
  net, a second wave within ~30 min of a first lost up to ~1 % of its impact to
  the first's refill). Noise = the robust standard deviation (median absolute
  deviation / 0.6745) of the scope's per-minute return *minus* that impact over
  the whole run (:func:`exogenous_noise`): everything that moved the price
  other than the scope's own forced orders, which for an altcoin includes
  BTC's move carried with its beta (model step 1), not only its own random
  flow (``vol_daily``, which for B's betas of 1.5-1.9 is ~60 % of it);
* ``slow_delev`` -- any other run: liquidations driven by the exogenous drift
  whose own impact stays within the noise;
* ``price_move`` -- a scheduled ``price_only`` shock on a symbol with no
  cascade run of that scope overlapping it (a move with ~no leverage near price).

An event spans ``[start, end)`` from the first hot minute's start to the last
hot minute's end (a price move: the shock window); ``direction`` is the side
with more liquidated USD (``long`` = a downward cascade, ``short`` = a
squeeze); price start/low/high/end are the scope's price (BTC for the market)
at the first minute's open, the extremes inside, and the last minute's close;
``impact_share`` is the part of the price move inside the event that came
from forced orders (0 = all exogenous).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from connectors.simulator.scenarios import Scenario


def exogenous_noise(total_ret: np.ndarray, impact_ret: np.ndarray) -> np.ndarray:
    """Per column: the robust standard deviation (MAD / 0.6745) of the per-minute log return that
    was not the forced orders' own impact -- the noise a run's impact has to stand out from. The
    median makes it ignore the few shock and cascade minutes (exogenous shocks are scheduled,
    rare minutes; a mean would be inflated by them)."""
    exo = np.asarray(total_ret, dtype=float) - np.asarray(impact_ret, dtype=float)
    return np.median(np.abs(exo - np.median(exo, axis=0)), axis=0) / 0.6745


def peak_impact_z(adverse_impact: np.ndarray, noise_per_min: float) -> float:
    """The largest over prefixes [0, t] of a run of sum(adverse impact) / (noise x sqrt(t + 1))."""
    cum = np.cumsum(np.asarray(adverse_impact, dtype=float))
    if cum.size == 0 or noise_per_min <= 0:
        return 0.0
    return float(np.max(cum / (noise_per_min * np.sqrt(np.arange(1, cum.size + 1)))))


def iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Episode:
    scope: str  # "market" or a base asset ("BTC")
    start: str
    end: str
    start_us: int
    end_us: int
    peak_minute: str
    direction: str  # long | short (side of the positions liquidated)
    liquidated_long_usd: float
    liquidated_short_usd: float
    hot_minutes: int
    price_start: float
    price_low: float
    price_high: float
    price_end: float
    drawdown_pct: float  # low vs start (negative) for long cascades, high vs start for squeezes
    oi_start_usd: float
    oi_end_usd: float
    impact_share: float
    #: cascade | burst | slow_delev | price_move (see the module docstring)
    event_class: str = "cascade"
    impact_pct: float = 0.0  # forced-order price impact against the liquidated side (%)
    impact_z: float = 0.0  # peak over the run's prefixes of impact / (exogenous noise x sqrt(minutes))
    endogenous_share: float = 0.0  # liquidated USD caused by the loop / liquidated USD
    absorbed_share: float = 0.0  # liquidated USD of absorbed bursts / liquidated USD


class GroundTruthBuilder:
    """Collects per-minute figures while a run is generated; ``finish()`` -> the truth dict."""

    def __init__(self, sc: Scenario, seed: int, price_impact: bool, overrides: dict[str, Any],
                 *, hot_bp: float = 0.5, min_total_bp: float = 5.0, max_gap_min: int = 3,
                 min_endogenous_share: float = 0.5, min_impact_z: float = 5.0) -> None:
        self.sc = sc
        self.seed = seed
        self.price_impact = price_impact
        self.overrides = overrides
        self.hot_bp = hot_bp
        self.min_total_bp = min_total_bp
        self.max_gap_min = max_gap_min
        self.min_endogenous_share = min_endogenous_share
        self.min_impact_z = min_impact_z
        self.bases = [s.base for s in sc.symbols]
        self.venues = [v.name for v in sc.venues]
        S, V = len(self.bases), len(self.venues)
        self.n_min = m = int(np.ceil(sc.duration_s / 60.0))
        self.t0 = sc.start_us
        self.liq_usd = np.zeros((m, S, V, 2))  # side 0 long, 1 short
        self.liq_msgs = np.zeros((m, S, V), dtype=np.int64)
        self.oi_usd = np.full((m, S, V), np.nan)
        self.oi_base = np.full((m, S, V), np.nan)
        self.ohlc = np.full((m, S, 4), np.nan)
        self.impact_ret = np.zeros((m, S))
        # model attribution per minute and symbol (USD, long + short): forced closes caused by the
        # loop, and closes of absorbed bursts
        self.endo_usd = np.zeros((m, S))
        self.absorbed_usd = np.zeros((m, S))
        self.total_ret = np.zeros((m, S))
        self.messages: dict[str, int] = {}
        self.finished: dict[str, Any] | None = None

    def minute(self, t_us: int) -> int:
        return min(self.n_min - 1, max(0, (t_us - self.t0) // 60_000_000))

    def add_liquidation(self, t_us: int, s: int, v: int, long: bool, usd: float) -> None:
        m = self.minute(t_us)
        self.liq_usd[m, s, v, 0 if long else 1] += usd
        self.liq_msgs[m, s, v] += 1

    def add_oi(self, t_us: int, s: int, v: int, base: float, usd: float) -> None:
        m = self.minute(t_us)
        self.oi_base[m, s, v] = base
        self.oi_usd[m, s, v] = usd

    def add_prices(self, t_us: int, price: np.ndarray, impact_ret: np.ndarray, total_ret: np.ndarray) -> None:
        m = self.minute(t_us - 1)
        row = self.ohlc[m]
        if np.isnan(row[0, 0]):
            row[:, 0] = price
            row[:, 1] = price
            row[:, 2] = price
        else:
            np.maximum(row[:, 1], price, out=row[:, 1])
            np.minimum(row[:, 2], price, out=row[:, 2])
        row[:, 3] = price
        self.impact_ret[m] += impact_ret
        self.total_ret[m] += total_ret

    def add_attribution(self, t_us: int, endo_usd: np.ndarray, absorbed_usd: np.ndarray) -> None:
        m = self.minute(t_us - 1)
        self.endo_usd[m] += endo_usd
        self.absorbed_usd[m] += absorbed_usd

    def count(self, venue: str) -> None:
        self.messages[venue] = self.messages.get(venue, 0) + 1

    # -- finish ---------------------------------------------------------------------------------
    def _ffill(self, a: np.ndarray) -> np.ndarray:
        out = a.copy()
        for i in range(1, out.shape[0]):
            miss = np.isnan(out[i])
            out[i][miss] = out[i - 1][miss]
        return out

    def _episodes(self, scope: str, liq_long: np.ndarray, liq_short: np.ndarray, price_ohlc: np.ndarray,
                  oi_usd: np.ndarray, impact: np.ndarray, total: np.ndarray, endo: np.ndarray,
                  absorbed: np.ndarray, noise_per_min: float) -> list[Episode]:
        oi0 = float(oi_usd[~np.isnan(oi_usd)][0]) if np.any(~np.isnan(oi_usd)) else 0.0
        if oi0 <= 0:
            return []
        liq = liq_long + liq_short
        hot = np.nonzero(liq >= self.hot_bp * 1e-4 * oi0)[0]
        runs: list[list[int]] = []
        for m in hot:
            if runs and m - runs[-1][-1] - 1 <= self.max_gap_min:
                runs[-1].append(int(m))
            else:
                runs.append([int(m)])
        out = []
        for run in runs:
            a, b = run[0], run[-1] + 1
            lu, su = float(liq_long[a:b].sum()), float(liq_short[a:b].sum())
            if lu + su < self.min_total_bp * 1e-4 * oi0:
                continue
            direction = "long" if lu >= su else "short"
            p_start, p_end = float(price_ohlc[a, 0]), float(price_ohlc[b - 1, 3])
            p_low, p_high = float(np.nanmin(price_ohlc[a:b, 2])), float(np.nanmax(price_ohlc[a:b, 1]))
            extreme = p_low if direction == "long" else p_high
            move = float(np.sum(total[a:b]))
            imp = float(np.sum(impact[a:b]))
            oi_before = oi_usd[a - 1] if a > 0 else oi_usd[a]
            liq_run = lu + su
            endo_share = float(endo[a:b].sum()) / liq_run
            absorbed_share = float(absorbed[a:b].sum()) / liq_run
            # impact against the liquidated side: down for longs, up for shorts (log -> %)
            sign = -1.0 if direction == "long" else 1.0
            impact_pct = 100.0 * sign * imp
            impact_z = peak_impact_z(sign * impact[a:b], noise_per_min)
            if absorbed_share >= 0.5:
                cls = "burst"
            elif endo_share >= self.min_endogenous_share and impact_z >= self.min_impact_z:
                cls = "cascade"
            else:
                cls = "slow_delev"
            out.append(Episode(
                scope=scope,
                start=iso(self.t0 + a * 60_000_000), end=iso(self.t0 + b * 60_000_000),
                start_us=self.t0 + a * 60_000_000, end_us=self.t0 + b * 60_000_000,
                peak_minute=iso(self.t0 + (a + int(np.argmax(liq[a:b]))) * 60_000_000),
                direction=direction,
                liquidated_long_usd=round(lu, 2), liquidated_short_usd=round(su, 2),
                hot_minutes=len(run),
                price_start=p_start, price_low=p_low, price_high=p_high, price_end=p_end,
                drawdown_pct=round(100 * (extreme / p_start - 1), 3),
                oi_start_usd=round(float(oi_before), 2), oi_end_usd=round(float(oi_usd[b - 1]), 2),
                impact_share=round(max(0.0, min(1.0, imp / move)) if abs(move) > 1e-12 else 0.0, 3),
                event_class=cls, impact_pct=round(impact_pct, 4), impact_z=round(float(impact_z), 3),
                endogenous_share=round(endo_share, 4), absorbed_share=round(absorbed_share, 4),
            ))
        return out

    def _price_moves(self, s: int, base: str, ohlc: np.ndarray, oi_usd: np.ndarray,
                     events: list[Episode]) -> list[Episode]:
        """Scheduled price-only shocks on symbol s that no cascade of that scope overlaps."""
        out = []
        for sh in self.sc.shocks:
            if sh.kind != "price_only" or sh.symbol != base:
                continue
            a = self.minute(self.t0 + int(sh.start_s * 1e6))
            b = min(self.n_min, self.minute(self.t0 + int((sh.start_s + sh.duration_s) * 1e6) - 1) + 1)
            s_us, e_us = self.t0 + a * 60_000_000, self.t0 + b * 60_000_000
            if any(e.scope == base and e.event_class == "cascade" and e.start_us < e_us and s_us < e.end_us
                   for e in events):
                continue
            direction = "long" if sh.log_return < 0 else "short"
            p_start, p_low, p_high = float(ohlc[a, 0]), float(np.nanmin(ohlc[a:b, 2])), float(np.nanmax(ohlc[a:b, 1]))
            extreme = p_low if direction == "long" else p_high
            imp, move = float(np.sum(self.impact_ret[a:b, s])), float(np.sum(self.total_ret[a:b, s]))
            out.append(Episode(
                scope=base, start=iso(s_us), end=iso(e_us), start_us=s_us, end_us=e_us,
                peak_minute=iso(s_us), direction=direction,
                liquidated_long_usd=round(float(self.liq_usd[a:b, s, :, 0].sum()), 2),
                liquidated_short_usd=round(float(self.liq_usd[a:b, s, :, 1].sum()), 2),
                hot_minutes=0, price_start=p_start, price_low=p_low, price_high=p_high,
                price_end=float(ohlc[b - 1, 3]), drawdown_pct=round(100 * (extreme / p_start - 1), 3),
                oi_start_usd=round(float(oi_usd[a - 1] if a > 0 else oi_usd[a]), 2),
                oi_end_usd=round(float(oi_usd[b - 1]), 2),
                impact_share=round(max(0.0, min(1.0, imp / move)) if abs(move) > 1e-12 else 0.0, 3),
                event_class="price_move",
            ))
        return out

    def finish(self) -> dict[str, Any]:
        if self.finished is not None:
            return self.finished
        sc = self.sc
        oi_usd = self._ffill(self.oi_usd)  # (m, S, V)
        oi_base = self._ffill(self.oi_base)
        ohlc = self._ffill(self.ohlc)
        sym_oi = np.nansum(oi_usd, axis=2)  # (m, S)
        liq_sym = self.liq_usd.sum(axis=2)  # (m, S, 2)
        # the exogenous noise per minute (log), per symbol: everything but its own forced orders
        noise = exogenous_noise(self.total_ret, self.impact_ret)
        # the market: OI-weighted (as the detector's index), its own exogenous noise likewise
        w = np.nan_to_num(sym_oi)
        w = w / np.where(w.sum(1, keepdims=True) > 0, w.sum(1, keepdims=True), 1.0)
        m_impact, m_total = (w * self.impact_ret).sum(1), (w * self.total_ret).sum(1)
        episodes: list[Episode] = []
        episodes += self._episodes("market", liq_sym[:, :, 0].sum(1), liq_sym[:, :, 1].sum(1), ohlc[:, 0, :],
                                   sym_oi.sum(1), m_impact, m_total,
                                   self.endo_usd.sum(1), self.absorbed_usd.sum(1),
                                   float(exogenous_noise(m_total, m_impact)))
        for s, base in enumerate(self.bases):
            episodes += self._episodes(base, liq_sym[:, s, 0], liq_sym[:, s, 1], ohlc[:, s, :], sym_oi[:, s],
                                       self.impact_ret[:, s], self.total_ret[:, s], self.endo_usd[:, s],
                                       self.absorbed_usd[:, s], float(noise[s]))
        for s, base in enumerate(self.bases):
            episodes += self._price_moves(s, base, ohlc[:, s, :], sym_oi[:, s], episodes)
        day = min(self.n_min, 1440)
        returns = {}
        for s, base in enumerate(self.bases):
            p0 = sc.symbols[s].price
            close = float(ohlc[-1, s, 3])
            returns[base] = {
                "open": p0, "close": close,
                "low": float(np.nanmin(ohlc[:, s, 2])), "high": float(np.nanmax(ohlc[:, s, 1])),
                "return_pct": round(100 * (close / p0 - 1), 4),
                "low_return_pct": round(100 * (float(np.nanmin(ohlc[:, s, 2])) / p0 - 1), 4),
                "high_return_pct": round(100 * (float(np.nanmax(ohlc[:, s, 1])) / p0 - 1), 4),
                # last 24 h of the run (the "in 24 h" figures of a week-long preset)
                "return_last_24h_pct": round(100 * (close / float(ohlc[-day, s, 0]) - 1), 4),
            }
        liq_tot = self.liq_usd.sum(axis=0)  # (S, V, 2)
        last_day = self.liq_usd[-day:].sum(axis=0)
        shocks = [{**asdict(sh), "start": iso(self.t0 + int(sh.start_s * 1e6)),
                   "end": iso(self.t0 + int((sh.start_s + sh.duration_s) * 1e6))} for sh in sc.shocks]
        self.finished = {
            "scenario": sc.name, "summary": sc.summary, "seed": self.seed, "price_impact": self.price_impact,
            "overrides": {k: v for k, v in self.overrides.items()},
            "start": iso(self.t0), "end": iso(self.t0 + int(sc.duration_s * 1e6)),
            "start_us": self.t0, "duration_s": sc.duration_s, "step_s": sc.step_s,
            "symbols": self.bases, "venues": self.venues,
            "scale_note": "the simulated venues stand for the whole derivatives market (shares sum to 1)",
            "episode_definition": {"hot_bp_of_scope_oi_per_minute": self.hot_bp,
                                   "min_total_bp_of_scope_oi": self.min_total_bp,
                                   "max_gap_minutes": self.max_gap_min,
                                   "cascade_min_endogenous_share": self.min_endogenous_share,
                                   "cascade_min_impact_z": self.min_impact_z,
                                   "impact_z": "peak over the run's prefixes of the forced orders' own impact "
                                               "/ (exogenous noise x sqrt(minutes))",
                                   "exogenous_noise_pct_per_min": {
                                       "market": round(100 * float(exogenous_noise(m_total, m_impact)), 5),
                                       **{b: round(100 * float(v), 5) for b, v in zip(self.bases, noise, strict=True)}}},
            "bursts": [{**asdict(b), "start": iso(self.t0 + int(b.start_s * 1e6)),
                        "end": iso(self.t0 + int((b.start_s + b.duration_s) * 1e6))} for b in sc.bursts],
            "targets": sc.targets,
            "totals": {
                "liquidated_long_usd": round(float(liq_tot[..., 0].sum()), 2),
                "liquidated_short_usd": round(float(liq_tot[..., 1].sum()), 2),
                "liquidated_long_usd_last_24h": round(float(last_day[..., 0].sum()), 2),
                "liquidated_short_usd_last_24h": round(float(last_day[..., 1].sum()), 2),
                "liquidation_messages": int(self.liq_msgs.sum()),
                "by_symbol": {b: {"long_usd": round(float(liq_tot[s, :, 0].sum()), 2),
                                  "short_usd": round(float(liq_tot[s, :, 1].sum()), 2),
                                  "long_usd_last_24h": round(float(last_day[s, :, 0].sum()), 2)}
                              for s, b in enumerate(self.bases)},
                "by_venue": {v: {"long_usd": round(float(liq_tot[:, i, 0].sum()), 2),
                                 "short_usd": round(float(liq_tot[:, i, 1].sum()), 2)}
                             for i, v in enumerate(self.venues)},
                "oi_usd_start": round(float(np.nansum(oi_usd[0])), 2),
                "oi_usd_end": round(float(np.nansum(oi_usd[-1])), 2),
                "oi_usd_24h_before_end": round(float(np.nansum(oi_usd[-day])), 2),
            },
            "messages": dict(sorted(self.messages.items())),
            "returns": returns,
            "episodes": [asdict(e) for e in episodes],
            "shocks": shocks,
            "minutes": {
                "start_us": self.t0, "count": self.n_min,
                # [minute][symbol][venue] (last snapshot in the minute, carried forward)
                "oi_usd": np.round(oi_usd, 2).tolist(),
                "oi_base": np.round(oi_base, 6).tolist(),
                # [minute][symbol] forced-liquidation USD, all venues
                "liquidated_long_usd": np.round(liq_sym[:, :, 0], 2).tolist(),
                "liquidated_short_usd": np.round(liq_sym[:, :, 1], 2).tolist(),
                # [minute][symbol] model price open/high/low/close
                "price_ohlc": np.round(ohlc, 8).tolist(),
            },
        }
        return self.finished

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.finish(), separators=(",", ":")))
        return path
