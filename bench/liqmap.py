"""The liquidation map's cost in the live job (issue 22): cycle throughput with the estimator on vs off.

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

    args = [int(a) for a in sys.argv[1:]] or [60_000, 60, 30, 2]
    with tempfile.TemporaryDirectory(prefix="bench-liqmap-") as tmp:
        print(json.dumps(stage_liqmap(*args, workdir=Path(tmp)), indent=2))
