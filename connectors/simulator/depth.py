"""The simulator's order-book depth: book_depth.v1 records the model's price impact implies.

The model moves log price by ``impact * forced USD / depth_usd`` (connectors/simulator/model.py):
its book is linear, so the USD that walks price ``b`` basis points away from the mid is

    D_b = b * 1e-4 * depth_usd / impact

on each side. Each venue holds its OI share of that book. Every ``depth_interval_s`` of sim time
per venue and symbol (staggered by venue) a record carries D_10, D_50, D_100 and D_200 per side,
each side times ``exp(depth_noise * N(0, 1))`` (a book's depth is never read exactly: refills,
spoofed size). The noise has its own random stream, so the market path, the venues' messages and
the ground truth are the same with or without depth records.

The records are already normalized (schema book_depth.v1): the venues' raw book messages and their
normalizers are connectors/book.py's, not the simulator's (ADR 024).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from connectors.simulator.scenarios import Scenario

#: the bands of schemas/book_depth.v1.avsc (bp of the mid)
BANDS_BP = (10, 50, 100, 200)
#: how far the simulated book view reaches (bp): every band is inside it
REACH_BP = 250.0
#: half the simulated spread (bp of the mid)
HALF_SPREAD_BP = 0.5


def band_depth_usd(depth_usd: np.ndarray, impact: float, band_bp: float) -> np.ndarray:
    """Resting USD within ``band_bp`` of the mid on one side of a linear book whose forced orders
    move log price by ``impact * USD / depth_usd``."""
    if impact <= 0:
        return np.full_like(np.asarray(depth_usd, dtype=float), np.inf)
    return band_bp * 1e-4 * np.asarray(depth_usd, dtype=float) / impact


class DepthRecords:
    """book_depth records of one run, due every ``sc.depth_interval_s`` per venue and symbol."""

    def __init__(self, sc: Scenario, seed: int, identities: list[list[tuple[str, str] | None]],
                 oi_share: np.ndarray) -> None:
        """``identities[v][s]``: (venue symbol, quote) or None when venue v does not list symbol s;
        ``oi_share[s, v]``: the venue's share of the symbol's book."""
        self.sc = sc
        self.rng = np.random.default_rng([seed, 0xDE97])
        self.identities = identities
        self.oi_share = np.asarray(oi_share, dtype=float)
        self.every = max(1, int(round(sc.depth_interval_s / sc.step_s))) if sc.depth_interval_s > 0 else 0
        V = len(sc.venues)
        self.phase = [(vi * self.every) // max(V, 1) for vi in range(V)] if self.every else []
        self.names = [v.name for v in sc.venues]
        self.latency_us = [v.latency_ms * 1000 for v in sc.venues]

    def due(self, k: int, t_us: int, price: np.ndarray, depth_usd: np.ndarray, impact: float) -> list[dict[str, Any]]:
        """The records of model step ``k`` (ending at ``t_us``): one per listed symbol of each venue due."""
        if not self.every:
            return []
        out = []
        for vi, name in enumerate(self.names):
            if k % self.every != self.phase[vi]:
                continue
            for s, ident in enumerate(self.identities[vi]):
                if ident is None:
                    continue
                book = float(depth_usd[s]) * self.oi_share[s, vi]
                f_bid, f_ask = np.exp(self.sc.depth_noise * self.rng.standard_normal(2)).tolist()
                p = float(price[s])
                rec: dict[str, Any] = {
                    "exchange": name, "symbol": ident[0], "base": self.sc.symbols[s].base, "quote": ident[1],
                    "kind": "perpetual", "expiry": None, "event_time": t_us,
                    "ingest_time": t_us + self.latency_us[vi],
                    "best_bid": p * (1 - HALF_SPREAD_BP * 1e-4), "best_ask": p * (1 + HALF_SPREAD_BP * 1e-4),
                    "bid_reach_bp": REACH_BP, "ask_reach_bp": REACH_BP,
                    "levels": 2 * int(REACH_BP),
                }
                for b in BANDS_BP:
                    d = float(band_depth_usd(np.array([book]), impact, b)[0])
                    rec[f"bid_usd_{b}bp"] = d * f_bid
                    rec[f"ask_usd_{b}bp"] = d * f_ask
                out.append(rec)
        return out
