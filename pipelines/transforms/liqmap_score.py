"""Score an estimated liquidation map against a simulator run's true books (issue 22).

The truth (``truth["liquidation_books"]``, connectors/simulator/books.py) holds, every
``every_minutes``, each base's true USD by liquidation price (5 bp buckets) and every forced close
with its price. The estimate is ``liquidation_levels`` rows of scope ``all``. Both are put on the
estimate's grid (a true bucket goes to the estimate bucket holding its mid price) and compared per
snapshot and side within ``range_pct`` of the truth's price (longs below, shorts above):

* **map accuracy** = overlap of the two normalized densities, ``sum min(e_i / E, t_i / T)`` (1 = the
  same shape, 0 = disjoint); a side where the truth has no USD in range is skipped; mean over
  snapshots and sides;
* **prediction** = of the USD liquidated in the next ``horizon_minutes`` after the snapshot (the
  side's forced closes, at their step's price), the share whose price lies in the estimate's top-decile
  buckets: the ``ceil(n / 10)`` buckets with the most estimated USD among the ``n`` grid buckets of
  the side's range; USD-weighted over all snapshots.

The fixed-tier baseline (``baseline_config``) is the same estimator with new OI at 10/25/50/100x in
equal parts, no calibration, no turnover, 50/50 split, scored by the same functions.
"""

from __future__ import annotations

import dataclasses
import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from typing import Any

import numpy as np

from pipelines.transforms.bars import ts_to_micros
from pipelines.transforms.config import MINUTE_US, AnalyticsConfig

Buckets = dict[int, float]


def baseline_config(config: AnalyticsConfig) -> AnalyticsConfig:
    """Open tools' fixed tiers (py-liquidation-map): 10/25/50/100x, no calibration, no learning; the
    crossing removes whole buckets (as before ADR 034: the baseline is what it was)."""
    return dataclasses.replace(config, liqmap_leverage_tiers=(10.0, 25.0, 50.0, 100.0),
                               liqmap_leverage_weights=(1.0, 1.0, 1.0, 1.0), liqmap_venue_leverage_weights=(),
                               liqmap_calibration_rate=0.0, liqmap_turnover_per_day=0.0, liqmap_taker_tilt=0.0,
                               liqmap_initial_entry_spread=0.0, liqmap_initial_margin_gap=0.0,
                               liqmap_partial_crossing=False)


def estimate_buckets(levels: Iterable[dict], w: float) -> dict[tuple[str, int, str], Buckets]:
    """liquidation_levels rows (scope ``all``) -> {(base, minute_us, side): {grid index: USD}}."""
    out: dict[tuple[str, int, str], Buckets] = {}
    for r in levels:
        if r["exchange"] != "all":
            continue
        key = (r["base"], ts_to_micros(r["as_of_ts"]), r["side"])
        b = round(math.log(r["price_low"]) / w)
        d = out.setdefault(key, {})
        d[b] = d.get(b, 0.0) + float(r["usd"])
    return out


def true_buckets(snapshot: dict, side: str, w: float) -> Buckets:
    """One true snapshot side re-binned onto the estimate's grid (by each 5 bp bucket's mid)."""
    usd = np.asarray(snapshot[f"{side}_usd"], dtype=float)
    mids = snapshot["lo_log"] + (np.arange(len(usd)) + 0.5) * snapshot["bin"]
    idx = np.floor(mids / w).astype(np.int64)
    out: Buckets = {}
    for b, u in zip(idx.tolist(), usd.tolist(), strict=True):
        if u > 0:
            out[b] = out.get(b, 0.0) + u
    return out


def side_range(price: float, side: str, range_pct: float, w: float) -> tuple[int, int]:
    """[first, last] grid index of the side's range: mids in [P(1 - r), P] (long) or [P, P(1 + r)]."""
    lp, lr = math.log(price), math.log1p(range_pct / 100.0) if side == "short" else math.log1p(-range_pct / 100.0)
    lo, hi = (lp + lr, lp) if side == "long" else (lp, lp + lr)
    return math.ceil(lo / w - 0.5), math.floor(hi / w - 0.5)


def overlap(est: Buckets, true: Buckets, lo: int, hi: int) -> float | None:
    """Overlap of the normalized densities within [lo, hi]; None when the truth has nothing there."""
    t = {b: u for b, u in true.items() if lo <= b <= hi}
    e = {b: u for b, u in est.items() if lo <= b <= hi and u > 0}
    tt, et = sum(t.values()), sum(e.values())
    if tt <= 0:
        return None
    if et <= 0:
        return 0.0
    return sum(min(e.get(b, 0.0) / et, u / tt) for b, u in t.items())


def top_decile(est: Buckets, lo: int, hi: int) -> set[int]:
    n = hi - lo + 1
    k = math.ceil(n / 10)
    ranked = sorted(((u, b) for b, u in est.items() if lo <= b <= hi and u > 0), reverse=True)
    return {b for _, b in ranked[:k]}


def swept_overlap(est: Buckets, realized: Buckets, price_bucket: int) -> float:
    """Prediction of one snapshot side: the overlap of the estimate's density with the realized one
    over the **swept** buckets (from the price's bucket to the farthest bucket liquidated, both
    included): ``sum min(e_b / E, r_b / R)`` with E the estimate's USD in the swept buckets and R the
    realized USD. 0 when the estimate has nothing there (``realized`` must not be empty)."""
    lo, hi = min(min(realized), price_bucket), max(max(realized), price_bucket)
    e = {b: u for b, u in est.items() if lo <= b <= hi and u > 0}
    et, rt = sum(e.values()), sum(realized.values())
    if et <= 0:
        return 0.0
    return sum(min(e.get(b, 0.0) / et, u / rt) for b, u in realized.items())


def _next_hour_sides(est: dict[tuple[str, int, str], Buckets], truth: dict[str, Any], config: AnalyticsConfig,
                     horizon_minutes: int) -> Iterable[tuple[dict, str, Buckets, int, int, Buckets]]:
    """Every snapshot side the estimate has (a snapshot with no estimate of the base is skipped), with
    the side's estimate, its range ``[lo, hi]`` and the USD liquidated in the ``horizon_minutes``
    after the snapshot by grid bucket of its level (empty when none)."""
    books = truth["liquidation_books"]
    w = config.liqmap_bucket_bp / 10_000.0
    liqs: dict[tuple[str, str], list] = {}
    for t_us, base, side, price, usd in books["liquidations"]:
        liqs.setdefault((base, side), []).append((t_us, price, usd))
    for v in liqs.values():
        v.sort()
    times = {k: [x[0] for x in v] for k, v in liqs.items()}
    for snap in books["snapshots"]:
        m_us, base, price = snap["minute_us"], snap["base"], snap["price"]
        if (base, m_us, "long") not in est and (base, m_us, "short") not in est:
            continue  # no estimate for this snapshot (no bar of the base in the minute)
        for side in ("long", "short"):
            lo, hi = side_range(price, side, config.liqmap_range_pct, w)
            ts, rows = times.get((base, side), []), liqs.get((base, side), [])
            start = m_us + MINUTE_US  # the snapshot is as of the end of its minute
            i0, i1 = bisect_right(ts, start), bisect_left(ts, start + horizon_minutes * MINUTE_US + 1)
            realized: Buckets = {}
            for _, p, usd in rows[i0:i1]:
                b = math.floor(math.log(p) / w)
                realized[b] = realized.get(b, 0.0) + usd
            yield snap, side, est.get((base, m_us, side), {}), lo, hi, realized


def score_map(levels: Iterable[dict], truth: dict[str, Any], config: AnalyticsConfig,
              horizon_minutes: int = 60) -> dict[str, Any]:
    """Map accuracy and prediction of one estimate against one run's true books (module docstring)."""
    w = config.liqmap_bucket_bp / 10_000.0
    overlaps: list[float] = []
    hit = top_hit = total = 0.0
    snapshots = 0
    for snap, side, e, lo, hi, realized in _next_hour_sides(estimate_buckets(levels, w), truth, config, horizon_minutes):
        snapshots += side == "long"
        o = overlap(e, true_buckets(snap, side, w), lo, hi)
        if o is not None:
            overlaps.append(o)
        if not realized:
            continue
        r_usd = sum(realized.values())
        total += r_usd
        hit += r_usd * swept_overlap(e, realized, math.floor(math.log(snap["price"]) / w))
        top = top_decile(e, lo, hi)
        top_hit += sum(u for b, u in realized.items() if b in top)
    return {"snapshots": snapshots, "map_overlap": float(np.mean(overlaps)) if overlaps else None,
            "prediction": hit / total if total > 0 else None,
            "top_decile_share": top_hit / total if total > 0 else None, "liquidated_usd_next_hour": total}


def swept_profile(levels: Iterable[dict], truth: dict[str, Any], config: AnalyticsConfig,
                  bands_pct: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0, 5.0),
                  horizon_minutes: int = 60) -> dict[str, list[float]]:
    """Where the prediction is won or lost, by distance from the snapshot's price (ADR 063): per band
    ``[0, bands_pct[0])``, ..., ``[bands_pct[-1], inf)`` (% of the price, by bucket mid), as shares
    of all the scored realized USD: ``realized``; ``estimate`` and ``truth``, each snapshot side's
    estimate / true book within its swept range normalized to that side's realized USD; and
    ``matched``, the side's ``min(e_b / E, r_b / R) R`` (its sum is :func:`score_map`'s prediction)."""
    w = config.liqmap_bucket_bp / 10_000.0
    edges = [x / 100.0 for x in bands_pct]
    out = {k: [0.0] * (len(edges) + 1) for k in ("realized", "estimate", "truth", "matched")}
    total = 0.0
    for snap, side, e, _, _, realized in _next_hour_sides(estimate_buckets(levels, w), truth, config, horizon_minutes):
        if not realized:
            continue
        price = snap["price"]
        pb = math.floor(math.log(price) / w)
        lo, hi = min(min(realized), pb), max(max(realized), pb)

        def band(b: int, price: float = price) -> int:  # the band of bucket b's mid
            return bisect_right(edges, abs(math.exp((b + 0.5) * w) / price - 1.0))

        r_usd = sum(realized.values())
        total += r_usd
        for name, book in (("estimate", e), ("truth", true_buckets(snap, side, w))):
            swept = {b: u for b, u in book.items() if lo <= b <= hi and u > 0}
            s_usd = sum(swept.values())
            for b, u in swept.items():
                out[name][band(b)] += r_usd * u / s_usd
            if name == "estimate":
                for b, u in realized.items():
                    out["realized"][band(b)] += u
                    if s_usd > 0:
                        out["matched"][band(b)] += r_usd * min(swept.get(b, 0.0) / s_usd, u / r_usd)
    return {k: [x / total for x in v] if total > 0 else v for k, v in out.items()}


def oracle_levels(truth: dict[str, Any], w: float) -> list[dict]:
    """The true books as liquidation_levels rows on the estimate's grid: the scorer's ceiling (a perfect
    map scores overlap 1; its prediction share is the most any map can get under this definition)."""
    out = []
    for snap in truth["liquidation_books"]["snapshots"]:
        for side in ("long", "short"):
            for b, u in true_buckets(snap, side, w).items():
                out.append({"exchange": "all", "base": snap["base"], "as_of_ts": snap["minute_us"], "side": side,
                            "price_low": math.exp(b * w), "usd": u})
    return out


def simulate(preset: str, seed: int, config: AnalyticsConfig, mix: str = "default",
             book: str = "gapped") -> dict[str, Any]:
    """One simulator run through the Beam bars graph with the simulator's leverage ``mix``
    (``scenarios.LEVERAGE_MIXES``) and initial ``book`` (``scenarios.INITIAL_BOOKS``): its marts' rows
    and its truth."""
    from connectors.simulator.scenarios import INITIAL_BOOKS, LEVERAGE_MIXES
    from pipelines.transforms.scoring import run_simulated

    weights = LEVERAGE_MIXES[mix]
    return run_simulated(preset, seed, config, **({} if weights is None else {"leverage_weights": weights}),
                         **INITIAL_BOOKS[book])


def estimate_levels(out: dict[str, Any], config: AnalyticsConfig) -> list[dict]:
    """One simulated run's ``liquidation_levels`` rows (scope ``all``) estimated with ``config``."""
    from pipelines.transforms.liqmap import LEVELS_TAG, estimate_base
    from pipelines.transforms.panel import base_bars_from_columns, columns_from_rows

    by_base: dict[str, list[dict]] = {}
    for r in out["bars_1m"]:
        by_base.setdefault(r["base"], []).append(r)
    return [r for b, rows in sorted(by_base.items())
            for tag, r in estimate_base(base_bars_from_columns(b, columns_from_rows(rows), config), config, None,
                                        fuel=False, venues=False) if tag == LEVELS_TAG]


def score_run(out: dict[str, Any], config: AnalyticsConfig) -> dict[str, Any]:
    """Estimate one run's map with ``config`` and with the baseline, score both and the true books."""
    row: dict[str, Any] = {}
    for name, cfg in (("est", config), ("base", baseline_config(config))):
        s = score_map(estimate_levels(out, cfg), out["truth"], cfg)
        row.update({f"{name}_{k}": v for k, v in s.items()})
    s = score_map(oracle_levels(out["truth"], config.liqmap_bucket_bp / 10_000.0), out["truth"], config)
    row.update({f"oracle_{k}": v for k, v in s.items()})
    return row


def run_scored(preset: str, seed: int, config: AnalyticsConfig | None = None, mix: str = "default",
               book: str = "gapped") -> dict[str, Any]:
    """Simulate with the leverage ``mix`` and initial ``book``, estimate with ``config`` and the
    baseline, score both."""
    config = config or AnalyticsConfig()
    return {"preset": preset, "seed": seed, "mix": mix, "book": book,
            **score_run(simulate(preset, seed, config, mix, book), config)}


def meets_targets(r: dict[str, Any]) -> bool:
    """Issue 22's bar for one run: overlap and prediction >= 1.5x the baseline's, prediction >= 0.6."""
    def beats(k: str) -> bool:
        e, b = r[f"est_{k}"], r[f"base_{k}"]
        return e is not None and b is not None and (b <= 0 or e >= 1.5 * b)
    return beats("map_overlap") and beats("prediction") and (r["est_prediction"] or 0.0) >= 0.6


def map_score_table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'preset':<6} {'mix':<7} {'book':<6} {'seed':>4} {'snaps':>5} {'ovl_est':>7} {'ovl_base':>8} {'x':>5} "
            f"{'pred_est':>8} {'pred_base':>9} {'x':>5} {'pred_truth':>10} "
            f"{'top10_est':>9} {'top10_base':>10} {'top10_truth':>11} {'liq_usd_1h':>12} {'target':>6}")
    lines = [head, "-" * len(head)]

    def f(v: Any, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    def ratio(a: Any, b: Any) -> str:
        return "    -" if a is None or not b else f"{a / b:5.2f}"

    for r in rows:
        lines.append(f"{r['preset']:<6} {r.get('mix', 'default'):<7} {r.get('book', 'gapped'):<6} {r['seed']:>4} {r['est_snapshots']:>5} "
                     f"{f(r['est_map_overlap'], '7.3f')} {f(r['base_map_overlap'], '8.3f')} "
                     f"{ratio(r['est_map_overlap'], r['base_map_overlap'])} "
                     f"{f(r['est_prediction'], '8.3f')} {f(r['base_prediction'], '9.3f')} "
                     f"{ratio(r['est_prediction'], r['base_prediction'])} {f(r['oracle_prediction'], '10.3f')} "
                     f"{f(r['est_top_decile_share'], '9.3f')} {f(r['base_top_decile_share'], '10.3f')} "
                     f"{f(r['oracle_top_decile_share'], '11.3f')} "
                     f"{r['est_liquidated_usd_next_hour']:>12.0f} {'met' if meets_targets(r) else 'missed':>6}")
    return "\n".join(lines)


#: held out: (preset, seed, leverage mix, initial book); everything was tuned on seed 1 only
#: (docs/analytics.md)
HELD_OUT: tuple[tuple[str, int, str, str], ...] = (
    ("A", 2, "default", "gapped"), ("A", 3, "default", "gapped"), ("C", 2, "default", "gapped"),
    ("C", 3, "default", "gapped"), ("D", 2, "default", "gapped"), ("D", 3, "default", "gapped"),
    ("calm", 2, "default", "gapped"),
    # the simulator's other leverage mixes (scenarios.LEVERAGE_MIXES; "high" far above the prior)
    ("A", 2, "low", "gapped"), ("A", 2, "high", "gapped"), ("D", 3, "low", "gapped"), ("D", 3, "high", "gapped"),
    # initial books with levels near the price (scenarios.INITIAL_BOOKS["near"], ADR 050)
    ("A", 2, "default", "near"), ("calm", 2, "default", "near"), ("D", 3, "high", "near"))


def _scored(run: tuple[str, int, str, str]) -> dict[str, Any]:
    return run_scored(run[0], run[1], mix=run[2], book=run[3])


def _map_runs(fn: Any, args: list[Any], processes: int) -> list[dict[str, Any]]:
    """``fn`` over ``args``, ``processes`` at a time in spawned workers (each a whole simulation or
    score; order kept); in this process with ``processes`` <= 1."""
    if processes <= 1:
        return [fn(a) for a in args]
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        return pool.map(fn, args, chunksize=1)


def held_out_rows(processes: int = 3) -> list[dict[str, Any]]:
    """Every held-out run scored, ``processes`` at a time (each a whole simulation; order kept)."""
    return _map_runs(_scored, list(HELD_OUT), processes)


#: the tuning runs (seed 1 only; ADR 050): presets A, C, D, calm x mixes x start books
TUNING: tuple[tuple[str, int, str, str], ...] = tuple(
    (p, 1, m, b) for b in ("gapped", "near") for m in ("default", "low", "high") for p in ("A", "C", "D", "calm"))


def true_mix_weights(mix: str, tiers: Iterable[float]) -> tuple[float, ...]:
    """The simulator's leverage ``mix`` (``scenarios.LEVERAGE_MIXES`` over ``model.LEVERAGES``) on the
    estimator's ``tiers``: each simulator leverage's weight goes to the tier nearest to it in log
    leverage (half to each on a tie); normalized. The oracle prior of ADR 058 (how much of a run's
    miss is the leverage mix): a scoring aid, never an estimator input."""
    from connectors.simulator.model import LEVERAGE_WEIGHTS, LEVERAGES
    from connectors.simulator.scenarios import LEVERAGE_MIXES

    w = LEVERAGE_MIXES[mix]
    w = np.asarray(LEVERAGE_WEIGHTS if w is None else w, dtype=float)
    lt = np.log(np.asarray(tuple(tiers), dtype=float))
    out = np.zeros(len(lt))
    for lev, wt in zip(LEVERAGES.tolist(), (w / w.sum()).tolist(), strict=True):
        d = np.abs(lt - math.log(lev))
        near = np.flatnonzero(np.isclose(d, d.min(), rtol=0.0, atol=1e-12))
        out[near] += wt / len(near)
    return tuple(float(x) for x in out / out.sum())


def tuning_run(run: tuple[str, int, str, str], config: AnalyticsConfig, cache_dir: str,
               true_mix: bool = False) -> dict[str, Any]:
    """One tuning run scored with ``config`` (with ``true_mix``: the run's true mix as the prior,
    :func:`true_mix_weights`). The simulation is cached as a pickle in ``cache_dir`` (made with
    ``AnalyticsConfig()``: the bars do not depend on the map's fields) and reused."""
    import os
    import pickle

    preset, seed, mix, book = run
    path = os.path.join(cache_dir, f"{preset}{seed}_{mix}" + ("" if book == "gapped" else f"_{book}") + ".pkl")
    if os.path.exists(path):
        with open(path, "rb") as f:
            out = pickle.load(f)
    else:
        out = simulate(preset, seed, AnalyticsConfig(), mix, book)
        os.makedirs(cache_dir, exist_ok=True)
        with open(path + ".tmp", "wb") as f:
            pickle.dump(out, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(path + ".tmp", path)
    if true_mix:
        config = dataclasses.replace(config, liqmap_leverage_weights=true_mix_weights(mix, config.liqmap_leverage_tiers),
                                     liqmap_venue_leverage_weights=())
    return {"preset": preset, "seed": seed, "mix": mix, "book": book, **score_run(out, config)}


def _tuning(args: tuple[tuple[str, int, str, str], AnalyticsConfig, str, bool]) -> dict[str, Any]:
    return tuning_run(*args)


def tuning_rows(config: AnalyticsConfig, cache_dir: str, processes: int = 2,
                true_mix: bool = False) -> list[dict[str, Any]]:
    """The 24 :data:`TUNING` runs scored with ``config`` (:func:`tuning_run`), ``processes`` at a time."""
    return _map_runs(_tuning, [(r, config, cache_dir, true_mix) for r in TUNING], processes)


def tuning_summary(rows: list[dict[str, Any]]) -> str:
    """Mean overlap and prediction per start book and over all, runs meeting the bar, worst prediction."""
    out = []
    for name, sel in (("gapped", [r for r in rows if r["book"] == "gapped"]),
                      ("near", [r for r in rows if r["book"] == "near"]), ("all", rows)):
        if sel:
            out.append(f"{name} ({len(sel)}): ovl {np.mean([r['est_map_overlap'] for r in sel]):.3f} "
                       f"pred {np.mean([r['est_prediction'] for r in sel]):.3f} "
                       f"met {sum(meets_targets(r) for r in sel)} "
                       f"worst pred {min(r['est_prediction'] for r in sel):.3f}")
    return "\n".join(out)


def _overrides(args: Iterable[str]) -> dict[str, Any]:
    """``FIELD=JSON`` arguments as AnalyticsConfig overrides (JSON lists as tuples)."""
    import json

    over = {}
    for a in args:
        k, v = a.split("=", 1)
        val = json.loads(v)
        over[k] = tuple(val) if isinstance(val, list) else val
    return over


def profile_table(out: dict[str, Any], config: AnalyticsConfig) -> str:
    """:func:`swept_profile` of the estimate and of the fixed tiers on one simulated run, as text."""
    bands = (0.5, 1.0, 2.0, 3.0, 5.0)
    heads = [f"{a:g}-{b:g} %" for a, b in zip((0.0, *bands[:-1]), bands, strict=True)] + [f">{bands[-1]:g} %"]
    lines = []
    for name, cfg in (("estimate", config), ("fixed tiers", baseline_config(config))):
        p = swept_profile(estimate_levels(out, cfg), out["truth"], cfg, bands)
        lines += [f"{name}: prediction {sum(p['matched']):.3f}", f"{'':9}" + "".join(f"{h:>10}" for h in heads)]
        lines += [f"{k:9}" + "".join(f"{x:10.3f}" for x in v) for k, v in p.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    # python -m pipelines.transforms.liqmap_score [PROCESSES]: the held-out table;
    # python -m pipelines.transforms.liqmap_score tuning CACHE_DIR [PROCESSES] [--true-mix] [FIELD=JSON ...]:
    # the 24 seed-1 tuning runs with AnalyticsConfig fields overridden (ADR 058);
    # python -m pipelines.transforms.liqmap_score profile RUN_PICKLE [FIELD=JSON ...]: where one cached
    # run's prediction is won or lost, by distance from the price (ADR 063)
    import pickle
    import sys

    argv = sys.argv[1:]
    if argv[:1] == ["tuning"]:
        cache, rest = argv[1], argv[2:]
        procs = int(rest.pop(0)) if rest and rest[0].isdigit() else 2
        oracle = "--true-mix" in rest
        over = _overrides(a for a in rest if a != "--true-mix")
        rows = tuning_rows(dataclasses.replace(AnalyticsConfig(), **over), cache, procs, oracle)
        print(map_score_table(rows))
        print(tuning_summary(rows))
    elif argv[:1] == ["profile"]:
        with open(argv[1], "rb") as f:
            run = pickle.load(f)
        print(profile_table(run, dataclasses.replace(AnalyticsConfig(), **_overrides(argv[2:]))))
    else:
        print(map_score_table(held_out_rows(int(argv[0]) if argv else 3)))
