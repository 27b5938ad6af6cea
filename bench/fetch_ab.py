"""The stream job's fetch phase with each reader client, back to back on the same backlog.

    .venv/bin/python -m bench.fetch_ab [--events 300000] [--reps 3] [--layout bulk|paced] [--variants ...]

One fresh local broker gets a backlog of ``--events`` synthetic events (bulk layout, as
``bench.streaming.run_catch_up`` publishes it). Then, ``--reps`` times and in rotated order, each
client (``KafkaSettings.reader_client``) reads the whole backlog through the job's reader
processes (``ParallelFetcher``, ``JobSettings.fetch_workers`` of them, started and connected
before the clock starts): window = ``fetch()`` called -> every chunk's Arrow IPC file written
(Kafka fetch, record-batch parsing, block decode, IPC write; what a catch-up cycle's ``fetch``
phase holds). The rows read are checked equal to the events published for every run. Variant
"kafka-python-records" is kafka-python with ``reader_batch_parse`` off (its own per-record parsing,
as before ADR 060); each run also reports the reader processes' CPU seconds per event
(``/proc/<pid>/stat``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

CLIENTS = ("kafka-python", "confluent-kafka")
#: variant -> KafkaSettings changes
VARIANTS = {"kafka-python": {"reader_client": "kafka-python"},
            "kafka-python-records": {"reader_client": "kafka-python", "reader_batch_parse": False},
            "confluent-kafka": {"reader_client": "confluent-kafka"}}


def _readers_cpu_s(fetcher) -> float:  # type: ignore[no-untyped-def]
    from bench.fetch_sizing import _cpu_s

    return sum(_cpu_s(pid) for pid in (fetcher._pool._processes or {}))


def fetch_ab(events: int, reps: int, workdir: Path, seed: int = 13, layout: str = "bulk",
             variants: tuple[str, ...] = CLIENTS) -> list[dict]:
    from dataclasses import replace

    from bench.data import in_time_order, publish_events, synth_tables
    from bench.streaming import _fresh_broker_and_mart
    from connectors.kafka.fetch import ParallelFetcher
    from connectors.kafka.reader import log_bounds, plan_ranges
    from pipelines.jobs.load import LOAD_TOPICS

    runs = []
    with _fresh_broker_and_mart(workdir) as (_broker, kafka, settings):
        start_us = int(time.time() * 1_000_000) - 600_000_000
        publish_events(kafka, in_time_order(synth_tables(events, start_us, 600_000_000, seed)), layout)
        ranges = plan_ranges(log_bounds(kafka, LOAD_TOPICS), {})
        for rep in range(reps):
            order = variants if rep % 2 == 0 else variants[::-1]
            for client in order:
                fetcher = ParallelFetcher(replace(kafka, **VARIANTS[client]), settings.fetch_workers)
                fetcher.start()
                fetcher.fetch(ranges[:1], workdir / f"warm-{rep}-{client}")  # readers imported and connected
                load = os.getloadavg()[0]
                cpu0 = _readers_cpu_s(fetcher)
                t = time.perf_counter()
                got = fetcher.fetch(ranges, workdir / f"fetch-{rep}-{client}")
                seconds = time.perf_counter() - t
                cpu = _readers_cpu_s(fetcher) - cpu0
                fetcher.close()
                if got.records != events:
                    raise RuntimeError(f"{client}: read {got.records:,} of {events:,} events")
                runs.append({"client": client, "rep": rep, "layout": layout, "events": got.records,
                             "seconds": seconds, "events_per_s": got.records / seconds, "reader_cpu_s": cpu,
                             "reader_cpu_us_per_event": cpu / got.records * 1e6,
                             "load_average": [load, os.getloadavg()[0]]})
                print(f"rep {rep} {client:<20} {got.records / seconds:>9,.0f} events/s ({seconds:.2f} s), readers' "
                      f"CPU {cpu / got.records * 1e6:.1f} us/event, load {load:.1f}", flush=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--layout", choices=("bulk", "paced"), default="bulk")
    ap.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(CLIENTS))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fetch-ab-") as tmp:
        runs = fetch_ab(args.events, args.reps, Path(tmp), layout=args.layout, variants=tuple(args.variants))
    for client in args.variants:
        rates = sorted(r["events_per_s"] for r in runs if r["client"] == client)
        cpu = sorted(r["reader_cpu_us_per_event"] for r in runs if r["client"] == client)
        print(f"{client:<20} min / median / max {rates[0]:,.0f} / {rates[len(rates) // 2]:,.0f} / {rates[-1]:,.0f} "
              f"events/s; readers' CPU {cpu[0]:.1f} / {cpu[len(cpu) // 2]:.1f} / {cpu[-1]:.1f} us/event")
    med = {c: sorted(r["events_per_s"] for r in runs if r["client"] == c)[args.reps // 2] for c in args.variants}
    for c in args.variants[1:]:
        print(f"{c} / {args.variants[0]} (medians): {med[c] / med[args.variants[0]]:.2f}x")
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(exist_ok=True)
    (out / "fetch_ab.json").write_text(json.dumps({"command": "python -m bench.fetch_ab "
                                                   + " ".join(argv if argv is not None else []), "runs": runs},
                                                  indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
