"""The liquidation-map scorer on hand-built truths, and (heavy) the scoring table against the simulator."""

from __future__ import annotations

import dataclasses
import math
import os

import pytest

from pipelines.transforms.config import AnalyticsConfig
from pipelines.transforms.liqmap_score import (
    TUNING,
    baseline_config,
    held_out_rows,
    map_score_table,
    meets_targets,
    oracle_levels,
    overlap,
    score_map,
    side_range,
    swept_overlap,
    swept_profile,
    top_decile,
    true_mix_weights,
)

CFG = dataclasses.replace(AnalyticsConfig(), liqmap_bucket_bp=100.0, liqmap_range_pct=10.0)  # 1 % buckets
W = 0.01


def test_overlap_by_hand():
    assert overlap({1: 2.0, 2: 2.0}, {1: 5.0, 2: 5.0}, 0, 9) == pytest.approx(1.0)  # same shape, any scale
    assert overlap({1: 1.0}, {2: 1.0}, 0, 9) == 0.0
    # est (3/4, 1/4), truth (1/2, 1/2): min -> 1/2 + 1/4
    assert overlap({1: 3.0, 2: 1.0}, {1: 1.0, 2: 1.0}, 0, 9) == pytest.approx(0.75)
    assert overlap({1: 1.0}, {20: 1.0}, 0, 9) is None  # truth outside the range: skipped


def test_side_range_and_top_decile():
    lo, hi = side_range(100.0, "long", 10.0, W)
    # mids exp((b + 0.5) W) within [90, 100]
    assert math.exp((lo + 0.5) * W) >= 90 and math.exp((lo - 0.5) * W) < 90
    assert math.exp((hi + 0.5) * W) <= 100 and math.exp((hi + 1.5) * W) > 100
    est = {lo + i: float(i) for i in range(hi - lo + 1)}  # ~11 buckets: top decile = the 2 largest
    assert top_decile(est, lo, hi) == {hi, hi - 1}


def _snapshot(minute_us: int, price: float, long_usd: dict[float, float]) -> dict:
    """A true snapshot on a 1 % grid (one true bucket per estimate bucket)."""
    lo_log = math.floor(math.log(price * 0.85) / W) * W
    n = 40
    long = [0.0] * n
    for px, usd in long_usd.items():
        long[int(math.floor((math.log(px) - lo_log) / W))] += usd
    return {"minute_us": minute_us, "base": "BTC", "price": price, "lo_log": lo_log, "bin": W,
            "long_usd": long, "short_usd": [0.0] * n}


def _level(minute_us: int, px: float, usd: float) -> dict:
    b = math.floor(math.log(px) / W)
    return {"exchange": "all", "base": "BTC", "as_of_ts": minute_us, "side": "long",
            "price_low": math.exp(b * W), "usd": usd}


def _hand_case() -> tuple[dict, list[dict]]:
    """truth: 100 USD of longs at 95, 100 at 92; next hour: 30 USD liquidated at 95 and 10 at 92, 60 two hours on;
    estimate: 50 at 95, 30 at 97, 20 at 92."""
    m = 60_000_000
    truth = {"liquidation_books": {
        "snapshots": [_snapshot(0, 100.0, {95.0: 100.0, 92.0: 100.0})],
        "liquidations": [[10 * m, "BTC", "long", 95.0, 30.0], [20 * m, "BTC", "long", 92.0, 10.0],
                         [180 * m, "BTC", "long", 95.0, 60.0]]}}
    return truth, [_level(0, 95.0, 50.0), _level(0, 97.0, 30.0), _level(0, 92.0, 20.0)]


def test_score_map_by_hand():
    truth, levels = _hand_case()
    m = 60_000_000
    s = score_map(levels, truth, CFG)
    # map: est density 0.5 / 0.3 / 0.2, truth 0.5 / 0 / 0.5 -> overlap 0.5 + 0.2
    assert s["map_overlap"] == pytest.approx(0.7)
    # prediction: swept = the buckets from 100 down to 92, all three estimated buckets in it;
    # realized 0.75 at 95, 0.25 at 92 -> min(0.5, 0.75) + min(0.2, 0.25)
    assert s["prediction"] == pytest.approx(0.7)
    # the issue's literal share: top decile of 11 buckets = the 2 largest (95, 97) hold 30 of 40
    assert s["top_decile_share"] == pytest.approx(30 / 40)
    assert s["liquidated_usd_next_hour"] == pytest.approx(40.0)
    # the true books as the estimate: every liquidation was at a level of the book, in proportion
    # only if the closes match the book; here 30 : 10 against 100 : 100 -> min(.5, .75) + min(.5, .25)
    assert score_map(oracle_levels(truth, W), truth, CFG)["prediction"] == pytest.approx(0.75)
    # liquidations exactly the true book's levels and amounts: a perfect prediction
    exact = {"liquidation_books": {**truth["liquidation_books"], "liquidations": [
        [10 * m, "BTC", "long", 95.0, 100.0], [20 * m, "BTC", "long", 92.0, 100.0]]}}
    assert score_map(oracle_levels(exact, W), exact, CFG)["prediction"] == pytest.approx(1.0)


def test_swept_profile_by_hand():
    # test_score_map_by_hand's case. Bucket mids on the 1 % grid: 95 -> bucket 455, mid e^4.555 =
    # 95.10 (4.90 % below 100); 97 -> 457, mid 97.03 (2.97 %); 92 -> 452, mid 92.30 (7.70 %).
    # Bands [0, 1), [1, 3), [3, 5), [5, inf). The swept range (100 down to 92) holds all three
    # estimated buckets (E = 100) and both true ones (T = 200); realized R = 40, 30 at 95, 10 at 92.
    truth, levels = _hand_case()
    m = 60_000_000
    p = swept_profile(levels, truth, CFG, bands_pct=(1.0, 3.0, 5.0))
    assert p["realized"] == pytest.approx([0.0, 0.0, 0.75, 0.25])
    assert p["estimate"] == pytest.approx([0.0, 0.3, 0.5, 0.2])
    assert p["truth"] == pytest.approx([0.0, 0.0, 0.5, 0.5])
    # min(0.5, 0.75) at 95 and min(0.2, 0.25) at 92: the sum is the prediction, 0.7
    assert p["matched"] == pytest.approx([0.0, 0.0, 0.5, 0.2])
    assert sum(p["matched"]) == pytest.approx(score_map(levels, truth, CFG)["prediction"])
    # a second snapshot side with no estimate in its swept range: its realized USD counts, nothing
    # matched; each side weighs by its realized USD (40 and 40 -> every share halves)
    truth["liquidation_books"]["snapshots"].append(_snapshot(120 * m, 100.0, {95.0: 100.0}))
    levels.append(_level(120 * m, 80.0, 10.0))
    p = swept_profile(levels, truth, CFG, bands_pct=(1.0, 3.0, 5.0))
    # the second side: 60 at 95 (bucket 455, 3-5 %) in its next hour
    assert p["realized"] == pytest.approx([0.0, 0.0, (30 + 60) / 100, 10 / 100])
    assert p["matched"] == pytest.approx([0.0, 0.0, 0.5 * 40 / 100, 0.2 * 40 / 100])
    assert p["truth"] == pytest.approx([0.0, 0.0, (0.5 * 40 + 60) / 100, 0.5 * 40 / 100])


def test_swept_overlap_by_hand():
    # price in bucket 8, longs liquidated in buckets 3 and 5: swept = 3..8; the estimate's bucket 1 and 20
    # lie outside it, so within it the estimate is all in bucket 5: min(1, 1/2) = 0.5
    assert swept_overlap({1: 1.0, 5: 1.0, 20: 2.0}, {3: 1.0, 5: 1.0}, 8) == pytest.approx(0.5)
    # proportions right in the swept range, whatever the scale
    assert swept_overlap({3: 2.0, 5: 6.0, 30: 9.0}, {3: 1.0, 5: 3.0}, 8) == pytest.approx(1.0)
    # a map with nothing where the price went predicts nothing; a short squeeze sweeps upwards
    assert swept_overlap({1: 5.0}, {3: 1.0}, 8) == 0.0
    assert swept_overlap({10: 1.0, 12: 1.0}, {12: 4.0}, 8) == pytest.approx(0.5)


def test_baseline_is_fixed_tiers_without_learning():
    b = baseline_config(AnalyticsConfig())
    assert b.liqmap_leverage_tiers == (10.0, 25.0, 50.0, 100.0) and b.liqmap_calibration_rate == 0.0
    assert b.liqmap_turnover_per_day == 0.0 and b.liqmap_taker_tilt == 0.0 and b.liqmap_initial_margin_gap == 0.0


@pytest.mark.heavy
def test_liquidation_map_scores_against_the_true_books():
    """Prints the table of docs/analytics.md (make test-heavy); the issue's bar (>= 1.5x the baseline
    on overlap and prediction, prediction >= 0.6) is the ``target`` column, reported there. Asserted:
    the scorer is consistent with the simulator — the true books, scored as if they were the estimate,
    have a perfect map and predict where the next hour's liquidations fell (>= 0.9: only positions
    opened after the snapshot can miss) — and every run was scored."""
    rows = held_out_rows(int(os.environ.get("LIQSTREAM_SCORING_PROCESSES", "3")))
    print("\n" + map_score_table(rows))
    for r in rows:
        assert r["est_snapshots"] > 0 and r["est_map_overlap"] is not None and r["est_prediction"] is not None
        assert r["oracle_map_overlap"] == pytest.approx(1.0)
        assert r["oracle_prediction"] >= 0.9


def test_the_issue_bar_per_run():
    row = {"est_map_overlap": 0.46, "base_map_overlap": 0.30, "est_prediction": 0.62, "base_prediction": 0.40}
    assert meets_targets(row)  # 1.53x, 1.55x and >= 0.6
    assert not meets_targets({**row, "est_prediction": 0.59, "base_prediction": 0.38})  # 1.55x but below 0.6
    assert not meets_targets({**row, "base_map_overlap": 0.32})  # overlap 1.44x
    assert not meets_targets({**row, "base_prediction": 0.42})  # prediction 1.48x


def test_true_mix_on_the_estimator_tiers_by_hand():
    """The oracle prior of ADR 058: each simulator leverage's weight to the nearest tier in log leverage."""
    tiers = AnalyticsConfig().liqmap_leverage_tiers  # 3 5 7 10 15 20 25 30 40 50 75 100
    # high mix over 2..100x: 0 0 .5 .5 1 1 2 3 5 7.5 15 25 22 17.5 (sum 100); 2x goes to 3x, 12x to 10x
    # (ln 12/10 = 0.182 < ln 15/12 = 0.223)
    want = (0.0, 0.5, 0.5, 2.0, 2.0, 3.0, 5.0, 7.5, 15.0, 25.0, 22.0, 17.5)
    assert true_mix_weights("high", tiers) == pytest.approx(tuple(x / 100.0 for x in want))
    # default mix (model weights 2 3 8 10 14 10 12 12 9 4 3 1.5 1 0.5, sum 90) on 10x / 40x: 2-15x to 10x,
    # 20x a tie (ln 2 each way) split, 25-100x to 40x
    assert true_mix_weights("default", (10.0, 40.0)) == pytest.approx((65.0 / 90.0, 25.0 / 90.0))


def test_tuning_runs_are_seed_1_only():
    assert len(TUNING) == len(set(TUNING)) == 24 and {r[1] for r in TUNING} == {1}
    assert {r[3] for r in TUNING} == {"gapped", "near"} and {r[2] for r in TUNING} == {"default", "low", "high"}
