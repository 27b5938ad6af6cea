"""Ground truth of a simulated run: what a detector and the marts are scored against.

Everything here is accumulated from the messages as they are written (the
rounded numbers in the raw messages), per minute, so it is exactly what a
parser of the raw messages can recover: liquidated USD per minute, venue,
symbol and side; the last OI snapshot per minute, venue and symbol; the
model's price per symbol and minute (open/high/low/close); the exogenous
shocks. Memory is O(minutes x symbols x venues), independent of the number of
messages.

Episode definition (also in docs/simulator.md). For each scope -- the market
(all symbols) and each symbol (all venues) -- a minute is *hot* when its
forced-liquidation USD (long + short) is at least ``hot_bp`` basis points of
the scope's open interest at the start of the run. Hot minutes closer than
``max_gap_min`` quiet minutes apart are merged into one run; a run is an
**episode** when its total liquidated USD is at least ``min_total_bp`` basis
points of the scope's starting OI. An episode spans ``[start, end)`` from the
first hot minute's start to the last hot minute's end; ``direction`` is the
side with more liquidated USD (``long`` = a downward cascade, ``short`` = a
squeeze); price start/low/high/end are the scope's price (BTC for the market)
at the first minute's open, the extremes inside, and the last minute's close;
``impact_share`` is the part of the price move inside the episode that came
from forced orders (model attribution: 0 = all exogenous).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from connectors.simulator.scenarios import Scenario


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


class GroundTruthBuilder:
    """Collects per-minute figures while a run is generated; ``finish()`` -> the truth dict."""

    def __init__(self, sc: Scenario, seed: int, price_impact: bool, overrides: dict[str, Any],
                 *, hot_bp: float = 0.5, min_total_bp: float = 5.0, max_gap_min: int = 3) -> None:
        self.sc = sc
        self.seed = seed
        self.price_impact = price_impact
        self.overrides = overrides
        self.hot_bp = hot_bp
        self.min_total_bp = min_total_bp
        self.max_gap_min = max_gap_min
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
                  oi_usd: np.ndarray, impact: np.ndarray, total: np.ndarray) -> list[Episode]:
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
        episodes: list[Episode] = []
        episodes += self._episodes("market", liq_sym[:, :, 0].sum(1), liq_sym[:, :, 1].sum(1), ohlc[:, 0, :],
                                   sym_oi.sum(1), self.impact_ret[:, 0], self.total_ret[:, 0])
        for s, base in enumerate(self.bases):
            episodes += self._episodes(base, liq_sym[:, s, 0], liq_sym[:, s, 1], ohlc[:, s, :], sym_oi[:, s],
                                       self.impact_ret[:, s], self.total_ret[:, s])
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
                                   "max_gap_minutes": self.max_gap_min},
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
