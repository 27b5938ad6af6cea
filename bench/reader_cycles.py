"""Small live-like cycles read by one long-lived range reader, by its retry back-off (ADR 040).

    .venv/bin/python -m bench.reader_cycles [--backoffs 100 10] [--reps 2] [--cycles 6]

A fresh local broker; a producer thread writes 5 records to every partition of the four event
topics every 10 ms (many small batches, like a live feed). Each "cycle" asks the log bounds, then
one ``RangeReader`` (kafka-python, as a reader process holds it) reads every partition's new
records since the last cycle, one range after the other (200 records back at the first cycle);
0.5 s between cycles. Per back-off (alternately, ``--reps`` times): the cycles' read seconds after
the first (the first connects). The window: the reads of one cycle's ranges, nothing else.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

TOPICS = ["trades.v1", "liquidations.v1", "open_interest.v1", "funding.v1"]


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - manual runs
    from kafka import KafkaProducer

    from connectors.config import KafkaSettings
    from connectors.kafka import reader as R
    from connectors.kafka.local_broker import LocalBroker
    from connectors.kafka.topics import ensure_topics

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backoffs", type=int, nargs="+", default=[100, 10])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--cycles", type=int, default=6)
    args = ap.parse_args(argv)
    stop = threading.Event()
    with tempfile.TemporaryDirectory(prefix="bench-reader-") as tmp:
        broker = LocalBroker(port=0, run_dir=Path(tmp) / "broker").start()
        try:
            base = KafkaSettings(bootstrap_servers=broker.bootstrap)
            ensure_topics(base)
            producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
            parts = {t: len(producer.partitions_for(t)) for t in TOPICS}

            def produce() -> None:
                while not stop.is_set():
                    for t in TOPICS:
                        for q in range(parts[t]):
                            for _ in range(5):
                                producer.send(t, b"x" * 120, partition=q)
                    time.sleep(0.01)

            threading.Thread(target=produce, daemon=True).start()
            time.sleep(3)
            for _ in range(args.reps):
                for backoff in args.backoffs:
                    settings = KafkaSettings(bootstrap_servers=broker.bootstrap, reader_retry_backoff_ms=backoff)
                    pos: dict[tuple[str, int], int] = {}
                    times = []
                    with R.RangeReader(settings) as reader:
                        for _ in range(args.cycles):
                            bounds = R.log_bounds(base, TOPICS)
                            t0 = time.perf_counter()
                            for (t, q), (begin, end) in bounds.items():
                                start = pos.get((t, q), max(begin, end - 200))
                                if end > start:
                                    for _rec in reader.read(R.OffsetRange(t, q, start, end)):
                                        pass
                                pos[(t, q)] = end
                            times.append(time.perf_counter() - t0)
                            time.sleep(0.5)
                    rest = times[1:]
                    print(f"retry back-off {backoff:>4} ms: cycle reads {', '.join(f'{x:.3f}' for x in rest)} s; "
                          f"mean {sum(rest) / len(rest):.3f} s", flush=True)
        finally:
            stop.set()
            broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
