"""The liquidation map's cost in the live job (issue 22): cycle throughput with the estimator on vs off;
and the estimator alone on a backfill-sized input (:func:`stage_estimator`, issue 21).

The stream job runs one load cycle per interval: read the new offsets, bars, then the analytics over
the touched minutes (+ lookback), upsert in one transaction. Here the same events (synthetic, 32
venue symbols over 8 bases, in time order) are published in ``cycles`` parts and each part is loaded
by one ``run_load`` cycle (the stream job's cycle, without its DQ gate, which does not depend on the
map), once with ``liqmap_enabled`` off and once on, on fresh brokers and marts, alternating
``repeats`` times so the shared machine's load hits both alike. Throughput = events / the cycles'
wall seconds (publishing excluded), and events / the process's CPU seconds (the in-process runner and
DuckDB: less bent by other load on a shared machine); the first cycle (the warm-up) is reported apart.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

#: the venues of a synthetic base (bench and tests/unit/test_liqmap_vector.py)
VENUES = (("binance", "{}USDT"), ("bybit", "{}USDT"), ("okx", "{}-USDT-SWAP"), ("hyperliquid", "{}"))


def synth_columns(base: str, minutes: int, seed: int) -> dict[str, Any]:
    """Bars of one base on 4 venues: a random walk with cascades (jumps with liquidations and OI
    flushes), OI missing 10 % of minutes, one venue that publishes no liquidations, one silent for
    half an hour, one that appears a third into the data, OI flushed to almost 0 now and then (books
    closed whole, or pro rata far enough to renormalize), and a stretch without any price."""
    from pipelines.transforms.panel import COUNT_COLUMNS, FLOAT_COLUMNS, USD_COLUMNS

    rng = np.random.default_rng(seed)
    r = rng.normal(0, 0.0015, minutes)
    jumps = rng.random(minutes) < 0.005
    r[jumps] += rng.normal(0, 0.02, jumps.sum())
    price = 100.0 * np.exp(np.cumsum(r))
    cols: dict[str, list] = {k: [] for k in ("exchange", "symbol", "kind", "minute") + FLOAT_COLUMNS
                             + USD_COLUMNS + COUNT_COLUMNS}
    for vi, (ex, sym) in enumerate(VENUES):
        oi = np.maximum(1e5 * (1 + vi) + np.cumsum(rng.normal(0, 300, minutes) - 2000 * jumps), 1e3)
        flush = rng.random(minutes) < 0.002
        flush[(minutes * (vi + 2)) // 7] = True  # at least one a venue
        oi[flush] *= rng.choice([1e-12, 1e-4, 0.0], flush.sum())
        mark = price * np.exp(rng.normal(0, 2e-4, minutes))
        hi = np.maximum(mark, price) * (1 + np.abs(rng.normal(0, 0.0015, minutes)) + 0.03 * jumps * (r > 0))
        lo = np.minimum(mark, price) * (1 - np.abs(rng.normal(0, 0.0015, minutes)) - 0.03 * jumps * (r < 0))
        vol = rng.gamma(2.0, 50.0, minutes)
        buy = vol * mark * rng.uniform(0.2, 0.8, minutes)
        liq = rng.random(minutes) < 0.05
        long_liq = np.where(liq & (r < 0), rng.gamma(1.0, 2e4, minutes), 0.0) + np.where(jumps & (r < 0), 1e6, 0.0)
        short_liq = np.where(liq & (r > 0), rng.gamma(1.0, 2e4, minutes), 0.0) + np.where(jumps & (r > 0), 1e6, 0.0)
        oi_obs = np.where((rng.random(minutes) < 0.1) & ~flush, np.nan, oi)
        if vi == 3:
            long_liq[:] = short_liq[:] = 0.0
        keep = np.ones(minutes, bool)
        if vi == 2:
            keep[minutes // 3 : minutes // 3 + 30] = False
        if vi == 1:
            keep[: minutes // 3] = False
        close = np.where((np.arange(minutes) >= minutes // 2) & (np.arange(minutes) < minutes // 2 + 8), np.nan, mark)
        n = int(keep.sum())
        cols["exchange"] += [ex] * n
        cols["symbol"] += [sym.format(base)] * n
        cols["kind"] += ["perpetual"] * n
        cols["minute"].append(1_767_225_600_000_000 + np.arange(minutes, dtype=np.int64)[keep] * 60_000_000)
        vals = {"close": close, "high": np.where(np.isnan(close), np.nan, hi),
                "low": np.where(np.isnan(close), np.nan, lo), "mark_price_last": close,
                "oi_last_usd": oi_obs * mark, "oi_last": oi_obs, "funding_rate_last": np.full(minutes, 1e-4),
                "volume_base": vol, "depth_bid_usd_100bp": np.full(minutes, np.nan),
                "depth_ask_usd_100bp": np.full(minutes, np.nan), "volume_usd": np.round(vol * mark, 6),
                "taker_buy_usd": np.round(buy, 6), "taker_sell_usd": np.round(vol * mark - buy, 6),
                "long_liq_usd": np.round(long_liq, 6), "short_liq_usd": np.round(short_liq, 6),
                "max_liq_usd": np.round(np.maximum(long_liq, short_liq), 6)}
        for k, v in vals.items():
            cols[k].append(np.asarray(v, float)[keep])
        for k in COUNT_COLUMNS:
            cols[k].append(np.ones(n, np.int64))
    return {k: np.array(v, dtype=object) if k in ("exchange", "symbol", "kind") else np.concatenate(v)
            for k, v in cols.items()}


def load_reference(path: str) -> Any:
    """An older pipelines/transforms/liqmap.py (e.g. ``git show 629a57d:pipelines/transforms/liqmap.py``)
    as a module, for the A/B below."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("liqmap_reference", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["liqmap_reference"] = module  # (dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


def stage_estimator(bases: int = 8, minutes: int = 1_440, repeats: int = 3, reference: str | None = None,
                    seed: int = 21) -> dict[str, Any]:
    """The estimator alone (``estimate_base``, every row of a backfill: fuel each minute, levels of
    every scope each 30 minutes, the state once) on ``bases`` synthetic bases x 4 venues x ``minutes``
    (8 x 1,440: the 46,080 bars of the 4M-event backfill of docs/performance.md). CPU seconds
    (``time.process_time``) of each run, best of ``repeats``; with ``reference`` (an older liqmap.py),
    that code's runs alternate with this one's (A/B back to back, same load) and their rows must equal."""
    from pipelines.transforms import liqmap
    from pipelines.transforms.config import AnalyticsConfig
    from pipelines.transforms.panel import base_bars_from_columns

    config = AnalyticsConfig()
    names = [f"B{i:02d}" for i in range(bases)]
    bbs = [base_bars_from_columns(b, synth_columns(b, minutes, seed + i), config) for i, b in enumerate(names)]
    mods = {"current": liqmap} | ({"reference": load_reference(reference)} if reference else {})
    cpu: dict[str, list[float]] = {k: [] for k in mods}
    rows: dict[str, list] = {}
    for _ in range(repeats):
        for name, mod in mods.items():
            t = time.process_time()
            out = [list(mod.estimate_base(bb, config, None, settled_us=int(bb.panel.minutes[-1]))) for bb in bbs]
            cpu[name].append(time.process_time() - t)
            rows.setdefault(name, out)
    base_minutes = sum(len(bb.panel.minutes) for bb in bbs)
    res: dict[str, Any] = {"bases": bases, "venues": len(VENUES), "minutes": minutes, "base_minutes": base_minutes,
                           "rows": sum(len(o) for o in rows["current"]), "cpu_s": cpu,
                           "best_us_per_base_minute": {k: min(v) / base_minutes * 1e6 for k, v in cpu.items()}}
    if reference:
        res["rows_identical"] = rows["current"] == rows["reference"]
        res["speedup_best"] = min(cpu["reference"]) / min(cpu["current"])
    return res


def run_cycles(events: int, minutes: int, cycles: int, enabled: bool, workdir: Path, seed: int = 22) -> dict[str, Any]:
    from bench.data import SYNTH_START_US, in_time_order, publish_events, synth_tables
    from bench.streaming import _fresh_broker_and_mart
    from pipelines.jobs.load import run_load
    from pipelines.transforms.config import AnalyticsConfig

    config = dataclasses.replace(AnalyticsConfig.from_env(), liqmap_enabled=enabled)
    with _fresh_broker_and_mart(workdir) as (_broker, kafka, settings):
        run_load(settings, run_dq=False, config=config)  # warm-up on empty topics: imports, migrations
        evs = list(in_time_order(synth_tables(events, SYNTH_START_US, minutes * 60_000_000, seed)))
        seconds: list[float] = []
        cpu = 0.0  # this process's CPU (the FnApiRunner and DuckDB run in it): less bent by other load
        loaded = 0
        for i in range(cycles):
            publish_events(kafka, iter(evs[i * len(evs) // cycles:(i + 1) * len(evs) // cycles]))
            t, c = time.perf_counter(), time.process_time()
            loaded += run_load(settings, run_dq=False, config=config).events_in
            seconds.append(time.perf_counter() - t)
            cpu += time.process_time() - c
    steady = seconds[1:] or seconds
    return {"liqmap": enabled, "events": loaded, "cycles": cycles, "seconds": sum(seconds), "cpu_seconds": cpu,
            "events_per_s": loaded / sum(seconds), "first_cycle_s": seconds[0],
            "steady_mean_cycle_s": sum(steady) / len(steady),
            "steady_events_per_s": (loaded - loaded / cycles) / sum(steady) if len(seconds) > 1 else None}


def stage_liqmap(events: int, minutes: int, cycles: int, repeats: int, workdir: Path) -> dict[str, Any]:
    """Off and on, alternating ``repeats`` times; the ratio of the summed throughputs (on / off)."""
    runs = [run_cycles(events, minutes, cycles, enabled, workdir / f"{'on' if enabled else 'off'}-{r}")
            for r in range(repeats) for enabled in (False, True)]

    def total(enabled: bool, key: str) -> float:
        mine = [x for x in runs if x["liqmap"] is enabled]
        return sum(x["events"] for x in mine) / sum(x[key] for x in mine)

    steady = {e: sum(x["steady_mean_cycle_s"] for x in runs if x["liqmap"] is e) for e in (False, True)}
    return {"runs": runs, "on_vs_off": total(True, "seconds") / total(False, "seconds"),
            "cpu_on_vs_off": total(True, "cpu_seconds") / total(False, "cpu_seconds"),
            "steady_cycle_on_vs_off": steady[False] / steady[True]}


if __name__ == "__main__":
    import json
    import sys
    import tempfile

    if sys.argv[1:2] == ["estimator"]:  # python -m bench.liqmap estimator [BASES MINUTES REPEATS [REFERENCE.py]]
        rest = sys.argv[2:]
        print(json.dumps(stage_estimator(*(int(a) for a in rest[:3]), reference=rest[3] if len(rest) > 3 else None),
                         indent=2))
        sys.exit(0)
    args = [int(a) for a in sys.argv[1:]] or [60_000, 60, 30, 2]
    with tempfile.TemporaryDirectory(prefix="bench-liqmap-") as tmp:
        print(json.dumps(stage_liqmap(*args, workdir=Path(tmp)), indent=2))
