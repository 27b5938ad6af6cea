"""The bounded reader (``RangeReader``) over the same events laid out in bulk and paced (issue 23).

    python -m bench.read_layouts [EVENTS] [--fetch-max-wait-ms MS] [--no-steps]

For each layout (``bench.data.LAYOUTS``) a fresh local broker gets ``EVENTS`` synthetic events,
then one ``RangeReader`` reads every partition range after range, as a cycle's in-process read
does. ``--no-steps`` keeps the first max-wait for the whole read (the reader before ADR 009);
``--fetch-max-wait-ms`` sets it (default: ``KafkaSettings.fetch_max_wait_ms``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def read_layout(layout: str, events: int, fetch_max_wait_ms: int | None, steps: bool, workdir: Path) -> dict:
    import connectors.kafka.reader as reader_mod
    from bench.data import SYNTH_START_US, in_time_order, publish_events, synth_tables
    from connectors.config import KafkaSettings
    from connectors.kafka.local_broker import LocalBroker, free_port
    from connectors.normalize import TOPICS

    with LocalBroker(port=free_port(), run_dir=workdir / layout) as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap, read_timeout_ms=120_000,
                              **({"fetch_max_wait_ms": fetch_max_wait_ms} if fetch_max_wait_ms is not None else {}))
        t = time.perf_counter()
        publish_events(kafka, in_time_order(synth_tables(events, SYNTH_START_US, 600_000_000, 5)), layout)
        produce_s = time.perf_counter() - t
        ranges = reader_mod.plan_ranges(reader_mod.log_bounds(kafka, list(TOPICS.values())), {})
        saved = reader_mod.FETCH_WAIT_STEPS_MS
        if not steps:
            reader_mod.FETCH_WAIT_STEPS_MS = ()
        try:
            t = time.perf_counter()
            n = 0
            with reader_mod.RangeReader(kafka) as reader:
                for rng in ranges:
                    n += sum(1 for _ in reader.read(rng))
                seconds = time.perf_counter() - t
                wait = reader.fetch_max_wait_ms
        finally:
            reader_mod.FETCH_WAIT_STEPS_MS = saved
    return {"layout": layout, "events": n, "produce_s": round(produce_s, 1), "read_s": round(seconds, 2),
            "records_per_s": round(n / seconds), "final_fetch_max_wait_ms": wait, "steps": steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("events", type=int, nargs="?", default=100_000)
    ap.add_argument("--fetch-max-wait-ms", type=int)
    ap.add_argument("--no-steps", action="store_true")
    ap.add_argument("--layouts", default="bulk,paced")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-read-") as tmp:
        for layout in args.layouts.split(","):
            print(json.dumps(read_layout(layout, args.events, args.fetch_max_wait_ms, not args.no_steps, Path(tmp))),
                  flush=True)


if __name__ == "__main__":
    main()
