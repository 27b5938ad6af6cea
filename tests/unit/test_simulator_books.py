"""Issue 22: the simulator exports its true liquidation books into the run's truth."""

from __future__ import annotations

import math

from connectors.simulator import Simulation


def test_true_liquidation_books_are_exported_on_the_snapshot_grid() -> None:
    """The model's books by liquidation price every 30 minutes, and every forced close with its price."""
    sim = Simulation("A", 5, duration="65m", trades_per_second=2)
    for _ in sim.messages():
        pass
    books = sim.truth.finish()["liquidation_books"]
    snaps = books["snapshots"]
    start = sim.scenario.start_us
    # minutes 0, 30 and 60 (aligned to 30 min; each as of its close, as the estimator's): one per symbol
    assert sorted({s["minute_us"] - start for s in snaps}) == [0, 30 * 60_000_000, 60 * 60_000_000]
    assert len(snaps) == 3 * len(sim.scenario.symbols)
    for s in snaps:
        k_price = (math.log(s["price"]) - s["lo_log"]) / s["bin"]
        # crossed buckets are emptied: no long liquidation level above the price, no short one below
        assert all(u == 0 for k, u in enumerate(s["long_usd"]) if k > k_price + 1)
        assert all(u == 0 for k, u in enumerate(s["short_usd"]) if k < k_price - 1)
        assert sum(s["long_usd"]) > 0 and sum(s["short_usd"]) > 0
    for _, base, side, _, usd in books["liquidations"]:
        assert base in {s.base for s in sim.scenario.symbols} and side in ("long", "short") and usd > 0
