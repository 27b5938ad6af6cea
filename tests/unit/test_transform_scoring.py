"""Cascade detection scored against the simulator's ground truth, per class (issue 13).

The fast tests check the scorer itself on hand-made events. The slow ones simulate presets A-D
and calm (each with its decoys: absorbed bursts, a price-only move, a slow grind), run the real
Beam graph (build_bars + build_analytics on the FnApiRunner) over the normalized events, and
require cascade recall and precision >= 0.95, no burst and no price-only move reported as a
cascade, >= 90 % of bursts classified as liquidation bursts, a median time to first alert <= 60 s
of event time and >= 95 % of recalled cascades with liquidated USD within 5 % of the truth; the
score table is printed (pytest -m "slow or heavy" -s). Thresholds were tuned on seeds 1-3; seeds
11-13 are held out (docs/analytics.md). About a minute per 24 h run, several for B's week.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from pipelines.transforms.cascades import BURST, CASCADE, LONG, SHORT
from pipelines.transforms.scoring import run_simulated, score_episodes, score_table

E = dt.datetime(1970, 1, 1)


def _us(minute: int) -> int:
    return minute * 60_000_000


def _det(scope, direction, start_m, end_m, confirm_m, usd, eid, kind=CASCADE) -> dict:
    return {"episode_id": eid, "kind": kind, "scope": scope, "direction": direction,
            "start_ts": E + dt.timedelta(minutes=start_m),
            "end_ts": E + dt.timedelta(minutes=end_m), "detected_ts": E + dt.timedelta(minutes=confirm_m),
            "long_liq_usd": usd if direction == LONG else 0.0, "short_liq_usd": usd if direction == SHORT else 0.0}


def _true(scope, direction, start_m, end_m, usd, event_class="cascade") -> dict:
    return {"scope": scope, "direction": direction, "start_us": _us(start_m), "end_us": _us(end_m),
            "event_class": event_class,
            "start": str(start_m), "liquidated_long_usd": usd if direction == "long" else 0.0,
            "liquidated_short_usd": usd if direction == "short" else 0.0}


def test_scorer_by_hand() -> None:
    truth = {"episodes": [
        _true("BTC", "long", 10, 20, 100.0),  # found: first alert (watch) at 11, confirmed at 13
        _true("ETH", "long", 30, 35, 50.0),  # found with 10 % more USD
        _true("SOL", "short", 50, 52, 10.0),  # missed: detected as the wrong direction
    ]}
    detected = [
        _det("BTC", LONG, 10, 20, 13, 100.0, "a"),
        _det("ETH", LONG, 31, 36, 32, 55.0, "b"),
        _det("SOL", LONG, 50, 52, 51, 10.0, "c"),  # false: no true long episode on SOL
        _det("BNB", LONG, 70, 71, 71, 1.0, "d"),  # false
    ]
    alerts = [{"episode_id": "a", "alert_ts": E + dt.timedelta(minutes=11)},
              {"episode_id": "a", "alert_ts": E + dt.timedelta(minutes=13)}]
    s = score_episodes(detected, truth, alerts)
    assert (s["true_episodes"], s["detected_episodes"]) == (3, 4)
    assert s["recall"] == pytest.approx(2 / 3) and s["precision"] == pytest.approx(2 / 4)
    # time to first alert: BTC 60 s (watch at 11), ETH 120 s (confirmed at 32) -> median 90 s
    assert s["median_time_to_alert_s"] == 90.0 and s["max_time_to_alert_s"] == 120.0
    assert s["median_time_to_confirm_s"] == (180.0 + 120.0) / 2
    assert s["max_usd_error_pct"] == pytest.approx(10.0) and s["share_usd_within_5pct"] == 0.5
    assert s["missed"] == [("SOL", "50", "short")]
    assert {f[0] for f in s["false"]} == {"SOL", "BNB"}


def test_scorer_per_class_by_hand() -> None:
    truth = {"episodes": [
        _true("BTC", "long", 10, 20, 100.0),
        _true("LINK", "long", 30, 31, 13.0, "burst"),  # classified as a burst: right
        _true("AVAX", "long", 40, 41, 13.0, "burst"),  # reported as a cascade: wrong
        _true("LINK", "short", 60, 65, 0.0, "price_move"),  # nothing detected: right
        _true("DOGE", "long", 80, 90, 3.0, "slow_delev"),  # reported as a cascade (other side): wrong
    ]}
    detected = [
        _det("BTC", LONG, 10, 20, 12, 100.0, "a"),
        _det("LINK", LONG, 30, 31, 31, 13.0, "b", kind=BURST),
        _det("AVAX", LONG, 40, 41, 41, 13.0, "c"),
        _det("DOGE", SHORT, 85, 86, 86, 1.0, "d"),
    ]
    s = score_episodes(detected, truth)
    assert (s["true_episodes"], s["detected_episodes"], s["recall"]) == (1, 3, 1.0)
    assert s["precision"] == pytest.approx(1 / 3)  # the AVAX and DOGE cascades are false
    assert (s["true_bursts"], s["detected_bursts"], s["burst_recall"]) == (2, 1, 0.5)
    assert (s["bursts_as_cascade"], s["price_moves_as_cascade"], s["slow_delev_as_cascade"]) == (1, 0, 1)
    assert s["decoys_as_cascade"]["burst"] == [("AVAX", "40", "long")]


# ---------------------------------------------------------------------------------------------
SCORES: list[dict] = []


@pytest.fixture(scope="module", autouse=True)
def _print_score_table():
    yield
    if SCORES:
        print("\n" + score_table(SCORES))


def _check_marts_against_truth(preset: str, out: dict) -> None:
    truth = out["truth"]
    bars = out["bars_1m"]
    long_usd = sum(float(r["long_liq_usd"]) for r in bars)
    assert long_usd == pytest.approx(truth["totals"]["liquidated_long_usd"], rel=0.01)
    sym = {}
    for r in out["bars_1m_symbol"]:
        sym.setdefault(r["base"], []).append(r)
    for base, t in truth["returns"].items():
        rows = sorted(sym[base], key=lambda r: r["minute_ts"])
        ret = (rows[-1]["price"] / t["open"] - 1) * 100
        assert ret == pytest.approx(t["return_pct"], abs=0.3), base
    if preset == "A":
        # the day's contagion ranking (mean rank of the intraday windows)
        ranks: dict[str, list[int]] = {}
        for r in out["contagion"]:
            if r["window_minutes"] == 240:
                ranks.setdefault(r["base"], []).append(r["rank"])
        mean = {b: float(np.mean(v)) for b, v in ranks.items()}
        assert max(mean["SOL"], mean["DOGE"]) < mean["ETH"] < mean["BNB"], mean
    if preset == "B":
        last = max(r["as_of_ts"] for r in out["oi_deltas"] if r["level"] == "market" and r["span"] == "24h")
        (mk,) = [r for r in out["oi_deltas"] if r["level"] == "market" and r["span"] == "24h" and r["as_of_ts"] == last]
        t = truth["totals"]
        true_pct = (t["oi_usd_end"] / t["oi_usd_24h_before_end"] - 1) * 100
        assert mk["oi_change_pct"] == pytest.approx(true_pct, abs=0.3)


# make test runs one run (preset D seed 1: both directions, bursts, a price-only move and a slow
# deleveraging run); the full matrix (A-D + calm x tuning seeds 1-3 and held-out seeds 11-13, B
# is a simulated week: several minutes a run here) is `make test-heavy`, which prints the table.
# The classifier's thresholds were tuned on seeds 1-10, the depth-aware impact's (ADR 024) and the
# volatility reference's (ADR 027) on seeds 1-3; 11-13 are held out (docs/analytics.md).
#: runs that miss a target as measured, (preset, seed) -> the figure and why (docs/analytics.md,
#: "Targets missed"): their precision below 0.95 is reported as an xfail naming it, never a pass.
#: None left: C-1/11/13's false XRP cascade was the truth counting the refill of an earlier
#: cascade's impact against a second wave (fixed in connectors/simulator/truth.py).
#: None left either of B-12's XRP 17:44 slow run (truth impact z 4.49), reported as a cascade with
#: median |return| and a cut of 4.6: the volatility reference of ADR 027 and its cut (4.95, the
#: middle of the tuning seeds' clean range) score it 4.75, a burst; B-12 must now be clean.
KNOWN_MISSES: dict[tuple[str, int], str] = {}
MATRIX = [
    pytest.param(preset, seed, marks=[pytest.mark.slow] + ([] if (preset, seed) == ("D", 1) else [pytest.mark.heavy]))
    for preset in ("A", "B", "C", "D", "calm") for seed in (1, 2, 3, 11, 12, 13)
]


@pytest.mark.parametrize(("preset", "seed"), MATRIX)
def test_detection_scores_against_simulator_truth(preset: str, seed: int) -> None:
    out = run_simulated(preset, seed)
    s = score_episodes(out["cascades"], out["truth"], out["cascade_alerts"])
    SCORES.append({"preset": preset, "seed": seed, **s})
    print(score_table([SCORES[-1]]), "\nmissed:", s["missed"], "\nfalse:", s["false"],
          "\ndecoys as cascades:", s["decoys_as_cascade"], "\nUSD outliers:", s["usd_outliers"])
    # every preset carries two absorbed bursts (docs/simulator.md, "Decoys")
    assert s["true_bursts"] >= 2
    assert s["recall"] >= 0.95
    assert s["bursts_as_cascade"] == 0 and s["price_moves_as_cascade"] == 0
    assert s["burst_recall"] >= 0.9
    if s["median_time_to_alert_s"] is not None:
        assert s["median_time_to_alert_s"] <= 60
        assert s["share_usd_within_5pct"] >= 0.95
    _check_marts_against_truth(preset, out)
    # every other target is asserted above; only the precision of a measured miss is an xfail
    if s["precision"] < 0.95 and (preset, seed) in KNOWN_MISSES:
        pytest.xfail(f"{KNOWN_MISSES[(preset, seed)]}; this run: {s['precision']:.3f}, false {s['false']}")
    assert s["precision"] >= 0.95


@pytest.mark.slow
def test_depth_removes_the_false_cascades_the_fixed_impact_prior_reports_on_b() -> None:
    """B's books move ~0.040 % per bp of OI liquidated, half the fixed prior's 0.08: on B seed 3
    (a tuning seed) the detector without depth calls LINK's short run after the +3 % price-only
    move a cascade; with each scope's book depth (the simulator's book_depth records) it does not.
    The detector on the truth's per-minute arrays (the same detect_scope / detect_market)."""
    from connectors.simulator import Simulation
    from pipelines.transforms.scoring import detect_on_truth_minutes

    sim = Simulation("B", seed=3)
    depth: list[dict] = []
    for _ in sim.messages():
        depth += sim.take_book_depth()
    truth = sim.truth.finish()
    import dataclasses

    from pipelines.transforms.config import AnalyticsConfig

    # the detector before ADR 024: no depth (the prior), its volatility reference and impact cut
    before = dataclasses.replace(AnalyticsConfig(), vol_lookback_minutes=240, cascade_min_impact_z=3.0,
                                 vol_net_of_impact=False, vol_centered=False, vol_trim_sigmas=0.0)
    c, a = detect_on_truth_minutes(truth, before, None)
    old = score_episodes(c, truth, a)
    c, a = detect_on_truth_minutes(truth, None, depth)
    new = score_episodes(c, truth, a)
    assert old["false"], "the prior-only detector had a false cascade on B-3"
    assert new["false"] == [] and new["precision"] == 1.0
    assert new["slow_delev_as_cascade"] == 0 and new["price_moves_as_cascade"] == 0
    assert new["burst_recall"] == 1.0
