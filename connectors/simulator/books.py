"""The true liquidation books of a run, exported into its truth (issue 22: scoring the liquidation map).

``CascadeModel.book`` holds, per side and symbol, base units by liquidation-price bucket (log grid,
``BIN`` = 5 bp, bucket b of symbol s covers log prices ``[grid0[s] + b BIN, grid0[s] + (b + 1) BIN)``).
Every ``every_minutes`` (aligned; the estimator's ``liqmap_every_minutes``) the buckets within
``range_pct`` of the price are copied as USD (base units x bucket mid), as of the end of the minute
``minute_us`` (the estimator's snapshot of that minute is as of the same instant). Each step's forced
closes of the book are kept per crossed bucket at its liquidation level (the bucket's mid), so a
scorer can tell at which levels the next hour's liquidations were; the absorbed bursts (one account
closed by its own margin, at no level of the book) are kept apart with the step's price.

Only reads the model: the market path is the same with or without it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from connectors.simulator.model import BIN, CascadeModel, StepResult
from connectors.simulator.scenarios import Scenario

MINUTE_US = 60_000_000
SIDE_NAMES = ("long", "short")


class TrueBooks:
    def __init__(self, sc: Scenario, every_minutes: int = 30, range_pct: float = 12.0) -> None:
        self.bases = [s.base for s in sc.symbols]
        self.every_us = every_minutes * MINUTE_US
        self.every_minutes = every_minutes
        self.half = int(math.ceil(math.log1p(range_pct / 100.0) / BIN))
        self.range_pct = range_pct
        self.snapshots: list[dict[str, Any]] = []
        self.liquidations: list[list] = []  # [t_us, base, side, liquidation level, usd]
        self.burst_liquidations: list[list] = []  # [t_us, base, side, step price, usd]

    def record(self, model: CascadeModel, r: StepResult) -> None:
        # a book close is kept at its liquidation level (the crossed bucket's mid), not at the step's
        # price: in a cascade one 2 s step jumps over many buckets, and the step's price would put
        # all of them in the last one (the map is scored on where the levels were)
        for side, s, lo, seg in model.last_crossed:
            nz = np.flatnonzero(seg > 0)
            mids = np.exp(float(model.grid0[s]) + (lo + nz + 0.5) * BIN)
            name = SIDE_NAMES[side]
            for px, usd in zip(mids.tolist(), (seg[nz] * mids).tolist(), strict=True):
                if usd >= 0.005:
                    self.liquidations.append([r.t_us, self.bases[s], name, round(px, 8), round(usd, 2)])
        # an absorbed burst closes one account by its own margin, at no level of the book
        for side, q in ((0, r.liq_long_absorbed_base), (1, r.liq_short_absorbed_base)):
            for s in np.flatnonzero(q > 0).tolist():
                p = float(r.price[s])
                self.burst_liquidations.append([r.t_us, self.bases[s], SIDE_NAMES[side], round(p, 8),
                                                round(float(q[s]) * p, 2)])
        if r.t_us % MINUTE_US or (r.t_us - MINUTE_US) % self.every_us:
            return
        i = ((model.x - model.grid0) / BIN).astype(np.int64)
        for s, base in enumerate(self.bases):
            lo, hi = max(0, int(i[s]) - self.half), min(model.nb, int(i[s]) + self.half + 1)
            lo_log = float(model.grid0[s]) + lo * BIN
            mids = np.exp(lo_log + (np.arange(hi - lo) + 0.5) * BIN)
            self.snapshots.append({
                "minute_us": r.t_us - MINUTE_US, "base": base, "price": round(float(r.price[s]), 8),
                "lo_log": lo_log, "bin": BIN,
                "long_usd": np.round(model.book[0, s, lo:hi] * mids, 2).tolist(),
                "short_usd": np.round(model.book[1, s, lo:hi] * mids, 2).tolist(),
            })

    def export(self) -> dict[str, Any]:
        return {"every_minutes": self.every_minutes, "range_pct": self.range_pct,
                "note": "USD by liquidation price, bucket k of a snapshot: log price [lo_log + k bin, + bin)",
                "snapshots": self.snapshots, "liquidations": self.liquidations,
                "burst_liquidations": self.burst_liquidations}
