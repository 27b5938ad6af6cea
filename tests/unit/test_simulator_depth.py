"""The simulator's book_depth records (connectors/simulator/depth.py): the depth the model's price
impact implies, per venue by OI share, every depth_interval_s; the market and the truth do not
depend on them."""

from __future__ import annotations

import pytest

from connectors.simulator import Simulation
from connectors.simulator.depth import BANDS_BP
from connectors.simulator.model import CascadeModel
from schemas import latest


def _run(**overrides) -> tuple[Simulation, list[dict], int]:
    sim = Simulation("D", seed=5, duration="30m", **overrides)
    depth, n = [], 0
    for _ in sim.messages():
        n += 1
        depth += sim.take_book_depth()
    return sim, depth + sim.take_book_depth(), n


def test_depth_is_what_the_model_impact_implies_and_changes_nothing_else() -> None:
    sim, depth, n_msgs = _run()
    sc = sim.scenario
    model = CascadeModel(sc, 5)
    listed = {(r["exchange"], r["base"]) for r in depth}
    # every 60 s of sim time per listed venue and symbol: 30 records each over 30 minutes
    assert len(depth) == 30 * len(listed)
    assert all(r["event_time"] <= r["ingest_time"] for r in depth)
    # the records are valid book_depth.v1 records
    from fastavro.validation import validate

    assert all(validate(r, latest("book_depth").parsed) for r in depth[:50])
    # summed over the venues, the 100 bp book walks the model's impact: X USD into it moves price
    # X / D_100 % -- the model's impact * X / depth_usd in log terms -- up to the depth noise (5 %)
    t = depth[-1]["event_time"]
    for s, spec in enumerate(sc.symbols):
        recs = [r for r in depth if r["base"] == spec.base and t - 60_000_000 < r["event_time"] <= t]
        d100 = sum(r["bid_usd_100bp"] for r in recs)
        x = 10e6
        model_move_pct = model.impact * x / model.depth_usd[s] * 100
        assert abs(x / d100 / model_move_pct - 1) < 0.15
        # bands are linear in their width, bid and ask within the noise of each other
        r = recs[0]
        for b in BANDS_BP:
            assert r[f"bid_usd_{b}bp"] == pytest.approx(r["bid_usd_100bp"] * b / 100, rel=1e-12)
        assert abs(r["ask_usd_100bp"] / r["bid_usd_100bp"] - 1) < 0.3
    # no depth records: the same messages and the same truth
    sim0, depth0, n0 = _run(depth_interval_s=0)
    assert depth0 == [] and n0 == n_msgs
    assert sim0.truth.finish()["episodes"] == sim.truth.finish()["episodes"]
    assert sim0.truth.finish()["minutes"]["price_ohlc"] == sim.truth.finish()["minutes"]["price_ohlc"]
