"""`make bench`: every stage's throughput (and the streaming latency), with references run side by side.

    .venv/bin/python -m bench.run            # full run (~10-15 min): writes bench/results.json
    .venv/bin/python -m bench.run --quick    # tiny sizes, < 1 min, checks the harness: bench/out/results.json

Data: the cascade simulator (scenario, seed, duration, trade rate stated in the
config) for normalize/Kafka; synthetic normalized events (``bench.data``,
seeded) where the simulator is too slow: ComputeBars, analytics, upserts,
streaming input and the archive backfills. The machine is shared: the load
average at start and end is recorded beside the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import data, stages

ROOT = Path(__file__).resolve().parent

FULL: dict[str, Any] = {
    "sim": {"scenario": "A", "seed": 7, "duration": "10m", "trades_per_second": 400.0},
    "normalize_seconds": 2.0, "agg_trades": 20_000, "book_messages": 20_000,
    "kafka_events": 50_000,
    "bars_events": 2_000_000, "naive_events": 40_000,
    "mart_events": 500_000, "analytics_hours": 3,
    "stream_rates": [10_000, 25_000, 40_000], "stream_seconds": 15.0, "stream_catch_up": 300_000,
    # issue 13: crossing event -> open-minute watch committed, 5 live minutes per rate (bench/alert_latency.py)
    "alert_rates": [10_000, 25_000], "alert_live_minutes": 5,
    # same events per day at two sizes, both with at least as many days as the backfill runs at
    # once (2 workers): peak memory must not grow with the number of days; 6 h of each day
    # (11,520 bars/day) keeps the analytics step within the run
    "dask_backfill": {"events": 2_000_000, "days": 4},  # bench/dask_backfill.py (ADR 017)
    "backfill": [{"events": 2_000_000, "days": 2, "hours_per_day": 6},
                 {"events": 4_000_000, "days": 4, "hours_per_day": 6}],
    # detection scored against the simulator's ground truth per class (issue 13): every preset x
    # the seeds the thresholds were tuned on (1-3) and held-out seeds (11-13), two runs at a time
    # in worker processes, after the timed stages
    "scoring": {"presets": ["A", "B", "C", "D", "calm"], "seeds": [1, 2, 3, 11, 12, 13], "overrides": {}},
    "liqmap": {"events": 60_000, "minutes": 60, "cycles": 30, "repeats": 2},  # bench/liqmap.py (issue 22)
    "seed": 42,
    # issue 21: the peers (bench/peers.py) beside the catch-up and the backfills; peak memory of a
    # 90-day backfill against a 10-day one at the same events per day
    "peers": True,
    "backfill_memory": [{"events": 200_000, "days": 10, "hours_per_day": 1},
                        {"events": 1_800_000, "days": 90, "hours_per_day": 1}],
    "backfill_scale": [(50_000_000, 25)],  # bench/backfill_scale.py: ~1.5 GB of archive, removed after
}
QUICK: dict[str, Any] = {
    "sim": {"scenario": "A", "seed": 7, "duration": "3m", "trades_per_second": 20.0},
    "normalize_seconds": 0.1, "agg_trades": 1_000, "book_messages": 200,
    "kafka_events": 2_000,
    "bars_events": 20_000, "naive_events": 5_000,
    "mart_events": 20_000, "analytics_hours": 1,
    "stream_rates": [300], "stream_seconds": 2.0, "stream_catch_up": 3_000,
    "backfill": [{"events": 20_000, "days": 1, "workers": 1, "run_dq": False}],
    "dask_backfill": {"events": 40_000, "days": 2},
    # checks the scoring harness only: an hour of preset A at a low trade rate
    "scoring": {"presets": ["A"], "seeds": [1], "overrides": {"duration": "1h", "trades_per_second": 5.0}},
    "liqmap": {"events": 3_000, "minutes": 10, "cycles": 3, "repeats": 1},
    "seed": 42,
    "peers": True,
}

#: the issue's targets on this 2-core machine
TARGETS = {
    "normalize_encode_per_core": 100_000, "streaming_rate": 40_000, "streaming_p95_s": 5.0,
    # issue 21: the catch-up (analytics and DQ included) against the best peer, and its own rate
    "catch_up_vs_best_peer": 1.2, "catch_up_events_per_s": 150_000, "backfill_memory_90_vs_10_days": 1.2,
    "backfill_events_per_s": 500_000, "backfill_vs_duckdb": 3.0,
    # the issue asks for bounded memory at 50M events; measured as peak RSS growth between two sizes
    "backfill_rss_growth": 1.1,
    # issue 22: the live job's throughput with the liquidation map on, within 10 % of it off
    "liqmap_on_vs_off": 0.9,
}


def _target(name: str, value: float | None, unit: str, target: float, op: str) -> dict[str, Any]:
    met = value is not None and (value >= target if op == ">=" else value <= target)
    return {"name": name, "value": value, "unit": unit, "target": target, "op": op, "met": bool(met)}


def run_stages(cfg: dict[str, Any], workdir: Path, broker_bootstrap: str | None = None,
               progress: bool = True) -> dict[str, Any]:
    """Every stage with ``cfg`` sizes; returns the stages dict (figures only, no targets)."""
    def say(msg: str) -> None:
        if progress:
            print(f"==> {msg}", flush=True)

    out: dict[str, Any] = {}
    seed = cfg["seed"]
    say("simulator: generate + normalize the raw messages")
    pool = data.simulator_pool(**cfg["sim"])
    out["simulator"] = pool.config()

    say("normalize + Avro encode vs json.loads")
    out["normalize"] = stages.stage_normalize(pool, cfg["normalize_seconds"], cfg["agg_trades"])
    say("order books -> book_depth, per venue (bench/book_depth.py)")
    from bench.book_depth import stage_book_depth

    out["book_depth"] = stage_book_depth(cfg.get("book_messages", 20_000))

    say("Kafka produce / consume vs raw kafka-python + fastavro")
    records = (pool.records * (cfg["kafka_events"] // max(1, len(pool.records)) + 1))[: cfg["kafka_events"]]
    from connectors.kafka.local_broker import LocalBroker, free_port

    if broker_bootstrap:
        out["kafka"] = stages.stage_kafka(broker_bootstrap, records)
    else:
        with LocalBroker(port=free_port(), run_dir=workdir / "broker") as broker:
            out["kafka"] = stages.stage_kafka(broker.bootstrap, records)

    if "dask_backfill" in cfg:
        from bench.dask_backfill import stage_dask_backfill

        say("archive backfill: local runner vs Dask runner with 1 and 2 workers")
        out["dask_backfill"] = stage_dask_backfill(cfg["dask_backfill"]["events"], cfg["dask_backfill"]["days"], workdir)

    say("ComputeBars (batched) vs naive per-element Beam")
    big = data.synth_tables(cfg["bars_events"], data.SYNTH_START_US, data.DAY_US, seed)
    small = data.synth_tables(cfg["naive_events"], data.SYNTH_START_US, data.DAY_US // 4, seed + 1)
    small = {et: t.drop_columns(["_topic", "_partition", "_offset"]) for et, t in small.items()}
    out["compute_bars"] = stages.stage_compute_bars(big, small)
    del big

    say("bars_1m for the mart stages")
    hours = cfg["analytics_hours"]
    mart_events = data.synth_tables(cfg["mart_events"], data.SYNTH_START_US, hours * 3_600_000_000, seed + 2)
    bar_files = stages.make_bar_files(mart_events, workdir / "marts")
    del mart_events
    say("analytics transforms")
    out["analytics"] = stages.stage_analytics(bar_files, workdir)
    out["analytics"]["hours_of_bars"] = hours
    say("DuckDB upserts")
    out["duckdb_upserts"] = stages.stage_duckdb_upserts(bar_files, workdir / "upserts.duckdb")
    say("Great Expectations checkpoint")
    out["gx_checkpoint"] = stages.stage_gx(workdir / "upserts.duckdb")

    say(f"end-to-end streaming at {cfg['stream_rates']} events/s, {cfg['stream_seconds']:g}s each")
    from bench import peers
    from bench.streaming import stage_streaming

    use_peers = bool(cfg.get("peers")) and peers.installed()
    out["peers"] = {"installed": use_peers, "versions": peers.versions()}
    out["streaming"] = stage_streaming(cfg["stream_rates"], cfg["stream_seconds"], workdir / "stream",
                                       catch_up_events=cfg.get("stream_catch_up", 0), peers=use_peers)

    if cfg.get("alert_rates"):  # real minutes must close: not in --quick
        say(f"alert latency at {cfg['alert_rates']} events/s, {cfg['alert_live_minutes']} live minutes each")
        from bench.alert_latency import stage_alert_latency

        out["alert_latency"] = stage_alert_latency(cfg["alert_rates"], cfg["alert_live_minutes"], workdir / "alert")

    from bench.backfill import duckdb_reference, run_backfill_measured

    runs = []
    for size in cfg["backfill"]:
        say(f"end-to-end backfill: {size['events']:,} events over {size['days']} day(s)")
        root = workdir / f"backfill-{size['events']}"
        info = data.write_synth_archive(root / "archive", size["events"], size["days"], seed,
                                        hours_per_day=size.get("hours_per_day", 24))
        first = info["first_day"]
        last = str(__import__("datetime").date.fromisoformat(first) + __import__("datetime").timedelta(days=size["days"] - 1))
        res = run_backfill_measured(root, root / "backfill.duckdb", first, last, workers=size.get("workers", 2),
                                    run_dq=size.get("run_dq", True))
        ref = duckdb_reference(root / "archive")
        res.update(archive=info, duckdb_reference=ref, ratio_to_duckdb=res["seconds"] / ref["seconds"],
                   bars_match=all(res[k] == ref[k] for k in ("bars", "trade_count", "volume_usd_micros")))
        if use_peers:  # the ratio is to DuckDB SQL computing bars and liquidation minutes, checked equal
            res["peers"] = peers.archive_peers(root / "archive", root / "backfill.duckdb")
            res["ratio_to_duckdb"] = res["seconds"] / res["peers"]["duckdb_sql"]["seconds"]
        runs.append(res)
    out["backfill"] = {"runs": runs, "memory": peers.memory_runs(cfg.get("backfill_memory", []), workdir, seed)}
    if cfg.get("backfill_scale"):  # issue 21: the 50M-event backfill against DuckDB SQL and Polars (ADR 022)
        from bench.backfill_scale import measure

        say("backfill at scale: " + ", ".join(f"{e:,} events / {d} days" for e, d in cfg["backfill_scale"]))
        out["backfill_scale"] = [measure(e, d, workdir, seed) for e, d in cfg["backfill_scale"]]

    say("the liquidation map's cost: live cycles with the estimator off vs on")
    from bench.liqmap import stage_liqmap

    out["liqmap"] = stage_liqmap(**cfg["liqmap"], workdir=workdir / "liqmap")

    sc = cfg["scoring"]
    if not sc:  # --no-scoring
        return out
    say(f"cascade detection scored against the simulator's truth: presets {sc['presets']} x seeds {sc['seeds']}")
    out["scoring"] = stage_scoring(sc["presets"], sc["seeds"], sc.get("overrides") or {})
    return out


def _score_one(preset: str, seed: int, overrides: dict[str, Any]) -> dict[str, Any]:
    from pipelines.transforms.scoring import run_simulated, score_episodes

    logging.disable(logging.WARNING)
    t0 = time.perf_counter()
    res = run_simulated(preset, seed, **overrides)
    s = score_episodes(res["cascades"], res["truth"], res["cascade_alerts"])
    return {"preset": preset, "seed": seed, "seconds": time.perf_counter() - t0,
            **{k: v for k, v in s.items() if not isinstance(v, (list, dict))}, "missed": len(s["missed"]),
            "false": len(s["false"])}


def stage_scoring(presets: list[str], seeds: list[int], overrides: dict[str, Any],
                  workers: int = 2) -> dict[str, Any]:
    """Recall, precision, time to alert and USD error of DetectCascades per preset and seed (the
    same function as tests/unit/test_transform_scoring.py), in ``workers`` processes."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    jobs = [(p, s) for p in presets for s in seeds]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=get_context("spawn")) as pool:
        rows = list(pool.map(_score_one, [p for p, _ in jobs], [s for _, s in jobs], [overrides] * len(jobs)))
    detected = [r for r in rows if r["median_time_to_alert_s"] is not None]
    return {"rows": rows, "seconds": time.perf_counter() - t0, "overrides": overrides,
            "min_recall": min(r["recall"] for r in rows), "min_precision": min(r["precision"] for r in rows),
            "min_burst_recall": min(r["burst_recall"] for r in rows),
            "decoys_as_cascade": sum(r["bursts_as_cascade"] + r["price_moves_as_cascade"] for r in rows),
            "slow_delev_as_cascade": sum(r["slow_delev_as_cascade"] for r in rows),
            "max_median_time_to_alert_s": max((r["median_time_to_alert_s"] for r in detected), default=None),
            "min_share_usd_within_5pct": min((r["share_usd_within_5pct"] for r in detected), default=None)}


def targets(st: dict[str, Any]) -> list[dict[str, Any]]:
    from bench import peers

    t = TARGETS
    stream = st["streaming"]
    best = stream["at_max"] or {}
    # the job's own rate vs the raw reader's on the same topics: the catch-up of a backlog (a live
    # step's throughput is capped by what the producers send); without it (older results), the
    # throughput at the highest sustained step over the kafka stage's raw loop
    catch_up = stream.get("catch_up") or {}
    runs = sorted(st["backfill"]["runs"], key=lambda r: r["events"])
    largest = runs[-1]
    # memory: peak PSS (see bench.backfill.PeakSampler) must not grow with the size (same events
    # per day, more days)
    growth = runs[-1]["peak_pss_mb"] / runs[0]["peak_pss_mb"] if len(runs) > 1 else None
    from bench.alert_latency import targets as alert_targets

    return [*alert_targets(st.get("alert_latency")),
        _target("normalize + Avro encode, simulator mix (msg/s per core)",
                st["normalize"]["normalize_encode_cpu_per_s"], "msg/s/core", t["normalize_encode_per_core"], ">="),
        _target("streaming: highest sustained input rate", stream["max_sustained_rate"], "events/s",
                t["streaming_rate"], ">="),
        _target("streaming: p95 event-to-mart latency at that rate", best.get("p95_s"), "s", t["streaming_p95_s"], "<="),
        _target(f"streaming catch-up (analytics + DQ included) / best peer ({catch_up.get('best_peer')}), same topics",
                catch_up.get("ratio_to_best_peer"), "ratio", t["catch_up_vs_best_peer"], ">="),
        _target("streaming catch-up rate (analytics + DQ included)", catch_up.get("job_events_per_s"), "events/s",
                t["catch_up_events_per_s"], ">="),
        *([_target(f"streaming catch-up, warm (readers and GX loaded) / best peer ({catch_up.get('best_peer')})",
                   catch_up["warm"].get("ratio_to_best_peer"), "ratio", t["catch_up_vs_best_peer"], ">="),
           _target("streaming catch-up rate, warm (analytics + DQ included)", catch_up["warm"].get("events_per_s"),
                   "events/s", t["catch_up_events_per_s"], ">=")] if catch_up.get("warm") else []),
        _target(f"backfill from archive ({largest['events']:,} events)", largest["events_per_s"], "events/s",
                t["backfill_events_per_s"], ">="),
        _target("backfill time / DuckDB SQL reference time", largest["ratio_to_duckdb"], "ratio",
                t["backfill_vs_duckdb"], "<="),
        _target(f"backfill peak memory (PSS), {largest['events']:,} / {runs[0]['events']:,} events "
                "(bounded: flat with size)", growth, "ratio", t["backfill_rss_growth"], "<="),
        *[_target(f"backfill time / DuckDB SQL time, {r['events']:,} events", r["ratio_to_duckdb_sql"], "ratio",
                  t["backfill_vs_duckdb"], "<=") for r in st.get("backfill_scale") or []],
        _target("backfill peak memory (PSS), 90 days / 10 days at the same events per day",
                peers.memory_ratio(st["backfill"].get("memory") or []), "ratio", t["backfill_memory_90_vs_10_days"],
                "<="),
        *([_target("liquidation map on / off: live cycles' throughput (events per wall second)",
                   st["liqmap"].get("on_vs_off"), "ratio", t["liqmap_on_vs_off"], ">=")] if st.get("liqmap") else []),
    ]


def _f(v: Any, digits: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def format_table(res: dict[str, Any]) -> str:
    st = res["stages"]
    rows: list[tuple[str, str, str, str]] = []
    n = st["normalize"]
    rows.append(("normalize + encode (sim mix)", _f(n["normalize_encode_cpu_per_s"]) + " msg/CPU-s",
                 "json.loads " + _f(n["json_loads_cpu_per_s"]), _f(n["ratio_to_json_loads"], 2)))
    for venue, r in sorted(n.get("per_venue", {}).items()):
        rows.append((f"  {venue} (sim lines)", _f(r["normalize_encode_per_s"]) + " msg/CPU-s",
                     "json.loads " + _f(r["json_loads_per_s"]), _f(r["ratio"], 2)))
    a = n["binance_aggtrade"]
    rows.append(("  binance aggTrade", _f(a["normalize_encode_per_s"]) + " msg/CPU-s",
                 "json.loads " + _f(a["json_loads_per_s"]), _f(a["ratio"], 2)))
    for venue, r in st.get("book_depth", {}).items():
        rows.append((f"  {venue} book -> book_depth", _f(r["messages_per_cpu_s"]) + " msg/CPU-s", "", ""))
    k = st["kafka"]
    rows.append(("kafka produce (EventProducer)", _f(k["produce_per_s"]) + " ev/s", "", ""))
    rows.append(("kafka consume+decode (RangeReader)", _f(k["range_reader_decode_per_s"]) + " ev/s",
                 "raw+fastavro " + _f(k["raw_consume_decode_per_s"]),
                 _f(k["range_reader_decode_per_s"] / k["raw_consume_decode_per_s"], 2)))
    rows.append(("  stream reader -> Arrow batches", _f(k["reader_batches_per_s"]) + " ev/s",
                 "raw+fastavro " + _f(k["raw_consume_decode_per_s"]), _f(k["reader_ratio_to_raw"], 2)))
    b = st["compute_bars"]
    rows.append((f"ComputeBars ({b['events']:,} ev)", _f(b["events_per_s"]) + " ev/s",
                 f"naive per-element {_f(b['naive_events_per_s'])}", _f(b["speedup_vs_naive_rate"], 1) + "x"))
    rows.append((f"  same {b['small_events']:,} ev", _f(b["small_events_per_s"]) + " ev/s",
                 f"naive {_f(b['naive_seconds'], 1)} s vs {_f(b['small_seconds'], 1)} s",
                 _f(b["speedup_vs_naive_same_input"], 1) + "x"))
    an = st["analytics"]
    rows.append((f"analytics ({an['bars_in']:,} bars)", _f(an["bars_per_s"]) + " bars/s", "", ""))
    u = st["duckdb_upserts"]
    rows.append(("DuckDB upsert bars_1m", _f(u["insert_rows_per_s"]) + " rows/s",
                 "conflicting " + _f(u["replace_rows_per_s"]), ""))
    g = st["gx_checkpoint"]["suites"]["bars_1m"]
    rows.append(("GX checkpoint bars_1m", _f(g["rows_per_s"]) + " rows/s", f"{g['rows']:,} rows {g['seconds']:.2f} s",
                 ""))
    for s in st["streaming"]["steps"]:
        rows.append((f"streaming @ {s['target_rate']:,.0f}/s in",
                     f"p50/95/99 {_f(s.get('p50_s'), 2)}/{_f(s.get('p95_s'), 2)}/{_f(s.get('p99_s'), 2)} s",
                     f"in {_f(s['achieved_input_rate'])}/s, out {_f(s['throughput_per_s'])}/s",
                     "sustained" if s["sustained"] else "NOT sustained"))
    for key, layout in (("catch_up", "bulk"), ("catch_up_paced", "paced")):
        c = st["streaming"].get(key)
        if c:
            rows.append((f"stream job catch-up, {c['events']:,} ev backlog ({layout})",
                         _f(c["job_events_per_s"]) + " ev/s",
                         f"raw kafka-python + fastavro {_f(c['raw_consume_decode_per_s'])} ev/s",
                         _f(c["ratio_to_raw"], 2)))
    for s in (st.get("alert_latency") or {}).get("steps", []):
        c, t = s["commit"], s["topic"]
        rows.append((f"alert latency @ {s['target_rate']:,.0f}/s ({s['watched']}/{s['episodes']} watched)",
                     f"to commit p50/95/max {_f(c['p50_s'], 2)}/{_f(c['p95_s'], 2)}/{_f(c['max_s'], 2)} s",
                     f"to topic {_f(t['p50_s'], 2)}/{_f(t['p95_s'], 2)}/{_f(t['max_s'], 2)} s",
                     f"in {_f(s['achieved_input_rate'])}/s"))
    for r in st["backfill"]["runs"]:
        rows.append((f"backfill {r['events']:,} ev / {r['archive']['days']} d", _f(r["events_per_s"]) + " ev/s",
                     f"DuckDB SQL {r['seconds'] / r['ratio_to_duckdb']:.2f} s vs {r['seconds']:.1f} s, "
                     f"peak PSS {r['peak_pss_mb']:,.0f} MB", _f(r["ratio_to_duckdb"], 1) + "x"))
    from bench.peers import peer_rows

    rows += peer_rows(st)
    if "scoring" in st:
        sc = st["scoring"]
        rows.append((f"cascade scoring ({len(sc['rows'])} runs)",
                     f"cascades: recall >= {sc['min_recall']:.3f}, precision >= {sc['min_precision']:.3f}; "
                     f"bursts as bursts >= {sc['min_burst_recall']:.3f}; bursts + price moves as cascades "
                     f"{sc['decoys_as_cascade']}, slow deleveraging as cascades {sc['slow_delev_as_cascade']}",
                     f"worst median time to alert {_f(sc['max_median_time_to_alert_s'])} s", f"{sc['seconds']:.0f} s"))
    header = ("stage", "figure", "reference", "ratio")
    widths = [max(len(x[i]) for x in [header, *rows]) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    if "scoring" in st:
        from pipelines.transforms.scoring import score_table

        lines += ["", "cascade detection vs the simulator's ground truth per class (issue 13: cascade recall "
                  "and precision >= 0.95, bursts and price moves as cascades 0, bursts as bursts >= 0.9; "
                  "thresholds tuned on seeds 1-3, 11-13 held out):", score_table(st["scoring"]["rows"])]
    if "dask_backfill" in st:
        from bench.dask_backfill import summary

        lines += ["", summary(st["dask_backfill"])]
    lines.append("")
    lines.append("targets:")
    for t in res["targets"]:
        v = t["value"]
        verdict, goal = ("met" if t["met"] else "MISSED", f"{t['op']} {t['target']:,} ") if t["target"] else ("-", "")
        lines.append(f"  [{verdict}] {t['name']}: {_f(v, 2) if isinstance(v, float) else v} {goal}{t['unit']}")
    return "\n".join(lines)


def default_out(quick: bool) -> Path:
    """--quick never overwrites the committed full-run results."""
    return ROOT / "out" / "results.json" if quick else ROOT / "results.json"


def run(quick: bool = False, out: Path | None = None, workdir: Path | None = None) -> dict[str, Any]:
    cfg = QUICK if quick else FULL
    out = out or default_out(quick)
    logging.disable(logging.WARNING)  # Beam's INFO chatter would bury the table
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # kafka-python logs clean closes as ERRORs (README)
    t0 = time.perf_counter()
    machine = stages.machine_info()
    with tempfile.TemporaryDirectory(prefix="liqstream-bench-") as tmp:
        st = run_stages(cfg, workdir or Path(tmp))
    machine["load_average_end"] = list(os.getloadavg())
    res = {"machine": machine, "config": {**cfg, "mode": "quick" if quick else "full",
                                          "total_seconds": time.perf_counter() - t0}, "stages": st}
    res["targets"] = targets(st)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, < 1 min: checks the harness (CI)")
    ap.add_argument("--out", type=Path, help="results file (default bench/results.json; --quick: bench/out/)")
    ap.add_argument("--no-scoring", action="store_true", help="skip the detection scoring (the slowest stage)")
    args = ap.parse_args(argv)
    if args.no_scoring:
        for cfg in (FULL, QUICK):
            cfg["scoring"] = None
    res = run(args.quick, args.out)
    print(format_table(res))
    print(f"\nload average {res['machine']['load_average_start']} -> {res['machine']['load_average_end']} "
          f"on {res['machine']['cores']} cores; total {res['config']['total_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
