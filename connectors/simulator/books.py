"""The true liquidation books of a run, exported into its truth (issue 22: scoring the liquidation map).

``CascadeModel.book`` holds, per side and symbol, base units by liquidation-price bucket (log grid,
``BIN`` = 5 bp, bucket b of symbol s covers log prices ``[grid0[s] + b BIN, grid0[s] + (b + 1) BIN)``).
Every ``every_minutes`` (aligned; the estimator's ``liqmap_every_minutes``) the buckets within
``range_pct`` of the price are copied as USD (base units x bucket mid), as of the end of the minute
``minute_us`` (the estimator's snapshot of that minute is as of the same instant). Each step's forced
closes are kept with the step's price, so a scorer can tell where the next hour's liquidations fell.

Only reads the model: the market path is the same with or without it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from connectors.simulator.model import BIN, CascadeModel, StepResult
from connectors.simulator.scenarios import Scenario

MINUTE_US = 60_000_000


class TrueBooks:
    def __init__(self, sc: Scenario, every_minutes: int = 30, range_pct: float = 12.0) -> None:
        self.bases = [s.base for s in sc.symbols]
        self.every_us = every_minutes * MINUTE_US
        self.every_minutes = every_minutes
        self.half = int(math.ceil(math.log1p(range_pct / 100.0) / BIN))
        self.range_pct = range_pct
        self.snapshots: list[dict[str, Any]] = []
        self.liquidations: list[list] = []  # [t_us, base, side, price, usd]

    def record(self, model: CascadeModel, r: StepResult) -> None:
        if r.liq_long_base.any() or r.liq_short_base.any():
            for side, q in ((0, r.liq_long_base), (1, r.liq_short_base)):
                for s in np.flatnonzero(q > 0).tolist():
                    p = float(r.price[s])
                    self.liquidations.append([r.t_us, self.bases[s], "long" if side == 0 else "short",
                                              round(p, 8), round(float(q[s]) * p, 2)])
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
                "snapshots": self.snapshots, "liquidations": self.liquidations}
