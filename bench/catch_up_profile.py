"""Where a catch-up's wall time goes: py-spy over the stream job's drain windows only, per process.

    .venv/bin/python -m bench.catch_up_profile [--events 300000] [--layout bulk|paced] [--rate 100] [--out DIR]

Publishes a backlog as ``bench.streaming.run_catch_up`` does (10 minutes of synthetic events, 20
minutes old), then samples this process and its children (the reader processes) with
``py-spy record --subprocesses`` (the ``.[bench]`` extra) while a fresh ``StreamJob`` drains it
(*cold*) and, for ``bulk``, while a second one with started readers drains the next backlog
(*warm*; ``bench.streaming.CATCH_UP_WINDOWS``). Prints each window's phases (wall seconds, from the
job's cycles) and the samples per process (readers, the job's thread, its other threads) and per
frame, and writes the raw py-spy files (``<out>/<window>.txt``, one stack per line with its count).
Sampled seconds are CPU seconds only on an idle machine: under load a waiting-to-run thread is
sampled too. ADR 059, docs/performance.md ("Catch-up (ADR 059)").
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def summarize(raw_lines: list[str], rate: int, top: int = 25) -> dict:
    """py-spy's raw output (``frame;frame;... count``, ``--subprocesses``: the leading frames name
    the processes) -> sampled seconds per process kind and per (process kind, frame)."""
    per_process: collections.Counter = collections.Counter()
    per_frame: collections.Counter = collections.Counter()
    for line in raw_lines:
        stack, _, n = line.rstrip().rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = stack.split(";")
        procs = [f for f in frames if f.startswith("process ")]
        rest = [f for f in frames if not f.startswith("process ")]
        if len(procs) > 1:
            kind = "reader processes"
        else:  # the job's process: its main thread runs the script's <module>, the rest are threads
            kind = "job: main thread" if rest and rest[0].startswith("<module>") else "job: other threads"
        per_process[kind] += int(n)
        for f in set(rest):
            per_frame[(kind, f)] += int(n)
    return {"seconds_by_process": {k: round(v / rate, 2) for k, v in per_process.most_common()},
            "top_frames": [(k[0], k[1], round(v / rate, 2)) for k, v in per_frame.most_common(top)]}


def _spy(rate: int, out: Path) -> subprocess.Popen:
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if exe is None:
        raise SystemExit("py-spy not found: install the .[bench] extra")
    return subprocess.Popen([exe, "record", "--subprocesses", "--rate", str(rate), "--format", "raw", "-o", str(out),
                             "--pid", str(os.getpid())], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(p: subprocess.Popen) -> None:
    p.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    p.wait(timeout=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--layout", default="bulk", choices=["bulk", "paced"])
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    ap.add_argument("--out", type=Path, default=Path("bench/out/catch_up_profile"))
    args = ap.parse_args(argv)

    from bench.data import in_time_order, publish_events, synth_tables
    from bench.streaming import _drain, _fresh_broker_and_mart
    from connectors.kafka.fetch import ParallelFetcher
    from connectors.kafka.reader import OffsetRange, log_bounds, plan_ranges
    from pipelines.jobs.load import LOAD_TOPICS, run_load

    args.out.mkdir(parents=True, exist_ok=True)
    span_us = 600_000_000
    report = {}
    with tempfile.TemporaryDirectory(prefix="catch-up-profile-") as d, \
            _fresh_broker_and_mart(Path(d)) as (_broker, kafka, settings):
        run_load(settings)  # Beam's imports and the mart's migrations, as run_catch_up
        start_us = int(time.time() * 1_000_000) - 2 * span_us
        publish_events(kafka, in_time_order(synth_tables(args.events, start_us, span_us, 13)), args.layout)
        ranges = plan_ranges(log_bounds(kafka, [t for t in LOAD_TOPICS if not t.endswith(".dlq")]), {})
        windows = ["cold"] + (["warm"] if args.layout == "bulk" else [])
        for window in windows:
            fetcher = None
            if window == "warm":
                publish_events(kafka, in_time_order(synth_tables(args.events, start_us + span_us, span_us, 14)),
                               args.layout)
                fetcher = ParallelFetcher(settings.kafka, settings.fetch_workers)
                fetcher.fetch([OffsetRange(r.topic, r.partition, r.start, min(r.end, r.start + 100)) for r in ranges],
                              Path(d) / "readers-warm-up")
            raw = args.out / f"{window}.txt"
            spy = _spy(args.rate, raw)
            time.sleep(1.0)  # py-spy attached
            load = os.getloadavg()[0]
            try:
                drained = _drain(settings, fetcher)
            finally:
                time.sleep(0.3)
                _stop(spy)
                if fetcher is not None:
                    fetcher.close()
            drained["load_average"] = [load, os.getloadavg()[0]]
            drained.update(summarize(raw.read_text().splitlines(), args.rate) if raw.exists() else {})
            report[window] = drained
            print(f"{window}: {drained['events']:,} events in {drained['seconds']:.2f} s "
                  f"({drained['cycles']} cycle(s), load {load:.1f}), phases {drained['phases']}", flush=True)
            for kind, s in drained.get("seconds_by_process", {}).items():
                print(f"  {s:8.2f} s sampled  {kind}")
            for kind, frame, s in drained.get("top_frames", []):
                print(f"  {s:8.2f}  {kind:18} {frame[:110]}")
    (args.out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
