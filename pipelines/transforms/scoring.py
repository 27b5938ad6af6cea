"""Score detected cascade episodes against a simulator run's ground truth, per class.

The truth (``connectors/simulator/truth.py``) lists labelled events per scope (``market`` and
each base) with ``[start_us, end_us)``, direction ``long``/``short``, liquidated USD by side and
an ``event_class`` from the model's own causal attribution: ``cascade`` (the feedback loop),
``burst`` (forced closes absorbed by the book), ``slow_delev`` (liquidations of a drift whose own
impact stays within the noise) and ``price_move`` (an exogenous move with ~no leverage near
price). A detected episode (``kind`` cascade or liquidation_burst) **matches** an event of the
same scope that it overlaps (cascades and bursts: also the same direction).

* cascade recall: true cascades matched by a detected cascade; cascade precision: detected
  cascades that match a true cascade (a detected cascade on a decoy is a false one);
* decoys reported as cascades: true bursts / price moves / slow deleveraging runs matched by a
  detected cascade (any direction);
* bursts classified as bursts: true bursts matched by a detected liquidation_burst.

Per recalled cascade: time to alert = first alert - true start (event time), and the USD error
of the best-overlapping detection (long + short liquidated USD) relative to the truth's.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from pipelines.transforms.bars import ts_to_micros
from pipelines.transforms.cascades import BURST, CASCADE, LONG, SHORT

_DIRECTION = {"long": LONG, "short": SHORT}
DECOY_CLASSES = ("burst", "price_move", "slow_delev")


def _overlap(a0: int, a1: int, b0: int, b1: int) -> int:
    return max(0, min(a1, b1) - max(a0, b0))


def _matches(d: dict, te: dict, same_direction: bool = True) -> bool:
    return (d["scope"] == te["scope"] and (not same_direction or d["direction"] == _DIRECTION[te["direction"]])
            and _overlap(d["_s"], d["_e"], te["start_us"], te["end_us"]) > 0)


def score_episodes(detected: Iterable[dict], truth: dict[str, Any], alerts: Iterable[dict] = ()) -> dict[str, Any]:
    """Per-class scores (module docstring), time to first alert (a ``watch`` alert when given,
    else detected_ts) and to the confirmed start, USD error per recalled cascade."""
    first_alert: dict[str, int] = {}
    for a in alerts:
        t = ts_to_micros(a["alert_ts"])
        first_alert[a["episode_id"]] = min(t, first_alert.get(a["episode_id"], t))
    det = [
        {**d, "_s": ts_to_micros(d["start_ts"]), "_e": ts_to_micros(d["end_ts"]), "_a": ts_to_micros(d["detected_ts"])}
        for d in detected
    ]
    det_cascades = [d for d in det if d.get("kind", CASCADE) == CASCADE]
    det_bursts = [d for d in det if d.get("kind", CASCADE) == BURST]
    events = truth["episodes"]
    true_eps = [e for e in events if e.get("event_class", "cascade") == "cascade"]
    recalled, delays, confirm_delays, usd_err, misses, outliers = 0, [], [], [], [], []
    for te in true_eps:
        cands = [d for d in det_cascades if _matches(d, te)]
        if not cands:
            misses.append(te)
            continue
        recalled += 1
        best = max(cands, key=lambda d: _overlap(d["_s"], d["_e"], te["start_us"], te["end_us"]))
        confirm_delays.append((min(d["_a"] for d in cands) - te["start_us"]) / 1e6)
        delays.append((min(first_alert.get(d["episode_id"], d["_a"]) for d in cands) - te["start_us"]) / 1e6)
        t_usd = te["liquidated_long_usd"] + te["liquidated_short_usd"]
        d_usd = float(best["long_liq_usd"]) + float(best["short_liq_usd"])
        usd_err.append(abs(d_usd / t_usd - 1.0) * 100.0 if t_usd else 0.0)
        if usd_err[-1] > 5.0:
            outliers.append((te["scope"], te["start"], round(t_usd), round(d_usd), str(best["start_ts"]),
                             str(best["end_ts"])))
    false = [d for d in det_cascades if not any(_matches(d, te) for te in true_eps)]
    decoys = {c: [e for e in events if e.get("event_class") == c] for c in DECOY_CLASSES}
    as_cascade = {c: [(e["scope"], e["start"], e["direction"]) for e in evs
                      if any(_matches(d, e, same_direction=False) for d in det_cascades)]
                  for c, evs in decoys.items()}
    bursts_found = [e for e in decoys["burst"] if any(_matches(d, e) for d in det_bursts)]
    n_true, n_det = len(true_eps), len(det_cascades)
    return {
        "true_episodes": n_true,
        "detected_episodes": n_det,
        "recall": recalled / n_true if n_true else 1.0,
        "precision": (n_det - len(false)) / n_det if n_det else 1.0,
        "true_bursts": len(decoys["burst"]),
        "detected_bursts": len(det_bursts),
        "burst_recall": len(bursts_found) / len(decoys["burst"]) if decoys["burst"] else 1.0,
        "true_price_moves": len(decoys["price_move"]),
        "true_slow_delev": len(decoys["slow_delev"]),
        "bursts_as_cascade": len(as_cascade["burst"]),
        "price_moves_as_cascade": len(as_cascade["price_move"]),
        "slow_delev_as_cascade": len(as_cascade["slow_delev"]),
        "decoys_as_cascade": as_cascade,
        "median_time_to_alert_s": statistics.median(delays) if delays else None,
        "max_time_to_alert_s": max(delays) if delays else None,
        "median_time_to_confirm_s": statistics.median(confirm_delays) if confirm_delays else None,
        "median_usd_error_pct": statistics.median(usd_err) if usd_err else None,
        "max_usd_error_pct": max(usd_err) if usd_err else None,
        "share_usd_within_5pct": sum(e <= 5.0 for e in usd_err) / len(usd_err) if usd_err else None,
        "usd_outliers": outliers,
        "missed": [(m["scope"], m["start"], m["direction"]) for m in misses],
        "false": [(f["scope"], str(f["start_ts"]), f["direction"]) for f in false],
    }


# ---------------------------------------------------------------------------------------------
# simulator -> Beam graph -> score (used by the slow scoring test and `make bench`)
# ---------------------------------------------------------------------------------------------
import apache_beam as beam  # noqa: E402

_RESULTS: dict[str, list] = {}
TRUTH_TAG = "truth"


class SimulatedEvents(beam.DoFn):
    """Runs a simulator preset inside the pipeline (data is produced where it is read, never
    shipped through Create) and yields RecordBatches of normalized events, the simulated books'
    book_depth records among them; the ground truth goes to the ``truth`` output once the run is
    exhausted."""

    def __init__(self, preset: str, seed: int, batch_size: int = 50_000, **overrides: Any) -> None:
        self.preset, self.seed, self.batch_size, self.overrides = preset, seed, batch_size, overrides

    def process(self, _):
        from connectors.exchanges import normalizer_for
        from connectors.normalize import route
        from connectors.simulator import Simulation
        from pipelines.transforms.bars import records_to_batches

        sim = Simulation(self.preset, seed=self.seed, **self.overrides)
        normalizers: dict = {}
        buf: dict[str, list[dict]] = {}
        def add(event_type: str, record: dict):
            recs = buf.setdefault(event_type, [])
            recs.append(record)
            if len(recs) >= self.batch_size:
                yield records_to_batches(event_type, recs)
                buf[event_type] = []

        for msg in sim.messages():
            nz = normalizers.get(msg.venue) or normalizers.setdefault(msg.venue, normalizer_for(msg.venue))
            for event_type, record in route(nz, msg.raw, msg.received_at_us, msg.source).records:
                yield from add(event_type, record)
            for record in sim.take_book_depth():  # the simulated books' depth (already normalized)
                yield from add("book_depth", record)
        for record in sim.take_book_depth():
            yield from add("book_depth", record)
        for event_type, recs in buf.items():
            if recs:
                yield records_to_batches(event_type, recs)
        yield beam.pvalue.TaggedOutput(TRUTH_TAG, sim.truth.finish())


def _keep(element: Any, key: str) -> None:
    _RESULTS[key].append(element)


def run_simulated(preset: str, seed: int, config: Any = None, **overrides: Any) -> dict[str, Any]:
    """Simulate, run build_bars + build_analytics on the FnApiRunner (in-process), return every
    mart's rows and the truth. In-process only: results are gathered in a module-level dict."""
    from pipelines.transforms.config import AnalyticsConfig
    from pipelines.transforms.graph import build_analytics, build_bars

    config = config or AnalyticsConfig()
    run_key = f"{preset}:{seed}:{id(config)}"
    names = ["bars_1m", "bars_1m_symbol", "cascades", "cascade_alerts", "oi_deltas", "contagion", TRUTH_TAG]
    for n in names:
        _RESULTS[f"{run_key}:{n}"] = []
    with beam.Pipeline(runner="FnApiRunner") as p:
        sim = p | beam.Create([None]) | beam.ParDo(SimulatedEvents(preset, seed, **overrides)).with_outputs(
            TRUTH_TAG, main="batches")
        bars = build_bars(sim.batches, config)
        marts = {"bars_1m": bars["bars_1m"], **build_analytics(bars["bars_1m"], config), TRUTH_TAG: sim[TRUTH_TAG]}
        for n, pc in marts.items():
            if n in names:  # the other marts (e.g. the liquidation map's) are not gathered
                pc | f"Keep_{n}" >> beam.Map(_keep, f"{run_key}:{n}")
    out = {n: _RESULTS.pop(f"{run_key}:{n}") for n in names}
    out[TRUTH_TAG] = out[TRUTH_TAG][0]
    return out


def depth_minutes(records: Iterable[dict], bases: list[str], start_us: int, n: int,
                  max_stale: int) -> dict[str, tuple[Any, Any]]:
    """book_depth records -> per base, the (bid, ask) USD within 100 bp per minute as the panel
    computes it (each instrument's last record of a minute, carried forward at most
    ``max_stale`` minutes, summed over the base's venues: panel.scope_depth)."""
    import numpy as np

    from pipelines.transforms.panel import scope_depth

    last: dict[tuple[str, str, str], dict[int, tuple[float, float]]] = {}
    for r in records:
        m = (int(r["event_time"]) - start_us) // 60_000_000
        if 0 <= m < n:
            last.setdefault((r["base"], r["exchange"], r["symbol"]), {})[m] = (
                np.nan if r["bid_usd_100bp"] is None else r["bid_usd_100bp"],
                np.nan if r["ask_usd_100bp"] is None else r["ask_usd_100bp"])
    out = {}
    for base in bases:
        keys = [k for k in last if k[0] == base]
        bid, ask = np.full((len(keys), n), np.nan), np.full((len(keys), n), np.nan)
        for i, k in enumerate(keys):
            for m, (b, a) in last[k].items():
                bid[i, m], ask[i, m] = b, a
        out[base] = (scope_depth(bid, max_stale), scope_depth(ask, max_stale))
    return out


def detect_on_truth_minutes(truth: dict[str, Any], config: Any = None,
                            book_depth: Iterable[dict] | None = None) -> tuple[list[dict], list[dict]]:
    """The detector (the same ``detect_scope`` / ``detect_market``) on the truth's own per-minute
    arrays -- the model's price, liquidated USD per symbol and OI per venue -- instead of the Beam
    graph over the venues' messages: ~1 s a run instead of minutes, for tuning and for the whole
    matrix when the Beam runs do not fit. An approximation: the model price is less noisy than a
    reference venue's trades, so borderline z's can differ (docs/analytics.md, "Scoring").
    ``book_depth``: the run's book_depth records (the detector's depth input, as the panel
    carries it: :func:`depth_minutes`); None = no depth (the prior)."""
    import numpy as np

    from pipelines.transforms.cascades import detect_market, detect_scope, expected_impact_pct
    from pipelines.transforms.config import AnalyticsConfig

    config = config or AnalyticsConfig()
    mins = truth["minutes"]
    n = int(mins["count"])
    minutes = int(mins["start_us"]) + np.arange(n, dtype=np.int64) * 60_000_000
    ohlc = np.asarray(mins["price_ohlc"], dtype=float)
    oi = np.nansum(np.asarray(mins["oi_usd"], dtype=float), axis=2)
    long_usd, short_usd = (np.asarray(mins[k], dtype=float) for k in ("liquidated_long_usd", "liquidated_short_usd"))
    zero = np.zeros(n, dtype=np.int64)
    nan = np.full(n, np.nan)
    depth = ({} if book_depth is None else
             depth_minutes(book_depth, list(truth["symbols"]), int(mins["start_us"]), n, config.depth_max_stale_minutes))
    episodes, alerts, parts = [], [], []
    for b, base in enumerate(truth["symbols"]):
        lm = np.round(long_usd[:, b] * 1e6).astype(np.int64)
        sm = np.round(short_usd[:, b] * 1e6).astype(np.int64)
        bid, ask = depth.get(base, (nan, nan))
        e, a = detect_scope(base, minutes, lm, sm, zero, zero, ohlc[:, b, 3], ohlc[:, b, 2], ohlc[:, b, 1], oi[:, b],
                            ["all"], lm[None, :], sm[None, :], config, None,
                            expected_impact_pct(long_usd[:, b], bid, nan, config),
                            expected_impact_pct(short_usd[:, b], ask, nan, config))
        episodes += e
        alerts += a
        parts.append({"base": base, "minutes": minutes, "long": lm, "short": sm, "long_n": zero, "short_n": zero,
                      "price": ohlc[:, b, 3], "oi": oi[:, b], "venues": ["all"], "v_long": lm[None, :],
                      "v_short": sm[None, :], "bid_depth": bid, "ask_depth": ask})
    e, a = detect_market(parts, config)
    return episodes + e, alerts + a


def run_on_truth_minutes(preset: str, seed: int, config: Any = None, depth: bool = True,
                         **overrides: Any) -> dict[str, Any]:
    """Simulate (the messages are generated and dropped; the book_depth records kept unless
    ``depth`` is False) and detect on the truth's minutes."""
    from connectors.simulator import Simulation

    sim = Simulation(preset, seed=seed, **overrides)
    book_depth: list[dict] = []
    for _ in sim.messages():
        book_depth += sim.take_book_depth()
    book_depth += sim.take_book_depth()
    truth = sim.truth.finish()
    cascades, alerts = detect_on_truth_minutes(truth, config, book_depth if depth else None)
    return {"cascades": cascades, "cascade_alerts": alerts, "truth": truth}


def score_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of score rows: cascades (true, found, recall, precision), bursts (true,
    classified as bursts), decoys reported as cascades (bursts / price moves / slow deleveraging),
    time to alert and confirmation, USD error."""
    head = (f"{'preset':<6} {'seed':>4} {'casc':>4} {'found':>5} {'recall':>6} {'precis':>6} "
            f"{'burst':>5} {'as_bst':>6} {'decoy->casc b/p/s':>17} {'slow':>4} "
            f"{'tta_s':>5} {'ttc_s':>5} {'usd_err%':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        def fmt(v: Any, spec: str) -> str:
            return "-" if v is None else format(v, spec)
        decoys = f"{r['bursts_as_cascade']}/{r['price_moves_as_cascade']}/{r['slow_delev_as_cascade']}"
        lines.append(
            f"{r['preset']:<6} {r['seed']:>4} {r['true_episodes']:>4} {r['detected_episodes']:>5} "
            f"{r['recall']:>6.3f} {r['precision']:>6.3f} {r['true_bursts']:>5} {r['burst_recall']:>6.3f} "
            f"{decoys:>17} {r['true_slow_delev']:>4} {fmt(r['median_time_to_alert_s'], '>5.0f')} "
            f"{fmt(r['median_time_to_confirm_s'], '>5.0f')} {fmt(r['median_usd_error_pct'], '>8.3f')}"
        )
    return "\n".join(lines)


def bench(presets: tuple[str, ...] = ("A", "B", "C", "D", "calm"), seeds: tuple[int, ...] = (1, 2, 3)) -> str:
    """Score every preset x seed through the Beam graph and return the table (for `make bench`:
    ``python -c "from pipelines.transforms.scoring import bench; print(bench())"``)."""
    rows = []
    for preset in presets:
        for seed in seeds:
            out = run_simulated(preset, seed)
            rows.append({"preset": preset, "seed": seed,
                         **score_episodes(out["cascades"], out["truth"], out["cascade_alerts"])})
    return score_table(rows)


def main(argv: list[str] | None = None) -> None:
    """``python -m pipelines.transforms.scoring --presets D,A --seeds 11,12,13``: score each run and
    print its table row as soon as it is done (the header first), then the decoys it called
    cascades and the cascades it missed."""
    import argparse

    # the named module, not __main__: run_simulated gathers rows in that module's dict
    from pipelines.transforms import scoring

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--presets", default="A,B,C,D,calm")
    ap.add_argument("--seeds", default="1,2,3,11,12,13")
    ap.add_argument("--on-truth-minutes", action="store_true",
                    help="detect on the truth's per-minute arrays, not the Beam graph (fast; an approximation)")
    args = ap.parse_args(argv)
    run = scoring.run_on_truth_minutes if args.on_truth_minutes else scoring.run_simulated
    header_done = False
    for preset in args.presets.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            out = run(preset, seed)
            s = scoring.score_episodes(out["cascades"], out["truth"], out["cascade_alerts"])
            table = scoring.score_table([{"preset": preset, "seed": seed, **s}]).splitlines()
            print("\n".join(table if not header_done else table[2:]), flush=True)
            header_done = True
            if s["missed"] or s["false"]:
                print(f"  missed {s['missed']} false {s['false']}", flush=True)


if __name__ == "__main__":
    main()
