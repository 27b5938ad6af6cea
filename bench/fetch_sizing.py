"""A range reader's cycles on a growing log of small batches, with and without fetch sizing (ADR 056).

    .venv/bin/python -m bench.fetch_sizing [--batches 40000] [--rate 12000] [--cycles 20] [--every 1.0]

A fresh local broker; one topic of 3 partitions is first filled with ``--batches`` record batches of
5 records per partition (the log a live feed leaves after a while: at 40k events/s, 8 producers and a
20 ms linger write ~400 batches a second into a trade partition), then a librdkafka producer thread
keeps writing ``--rate`` records a second with a 2 ms linger (small batches, a live feed). Every
``--every`` seconds a cycle asks the log bounds and reads each partition's new records since the
previous cycle with a long-lived ``RangeReader`` (as a reader process does), alternately the one
with ``KafkaSettings.reader_fetch_bytes_factor`` 0 (no limit per fetch, as before ADR 056) and the
one with the default; each reader reads from where the last cycle of either left off, so both read
the same sizes of range on the same log. Per cycle: the read's wall seconds, the broker's CPU
seconds over it (``/proc/<pid>/stat``), the fetch requests sent; the records read are checked
against the ranges (every offset once).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

TOPIC = "sizing.v1"
PARTITIONS = 3


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _fill(bootstrap: str, batches: int) -> None:
    """``batches`` batches of 5 records (120-byte values) into every partition, as fast as the broker takes them."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "batch.num.messages": 5, "acks": 1,
                  "queue.buffering.max.messages": 1_000_000})
    for _ in range(batches * 5):
        for q in range(PARTITIONS):
            while True:
                try:
                    p.produce(TOPIC, b"x" * 120, partition=q)
                    break
                except BufferError:
                    p.poll(0.05)
        p.poll(0)
    p.flush(120)


def _feed(bootstrap: str, rate: float, stop: threading.Event) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2, "acks": 1})
    t0, n = time.monotonic(), 0
    while not stop.is_set():
        due = int((time.monotonic() - t0) * rate)
        while n < due:
            p.produce(TOPIC, b"y" * 120, partition=n % PARTITIONS)
            n += 1
        p.poll(0)
        time.sleep(0.005)
    p.flush(30)


def run(batches: int, rate: float, cycles: int, every_s: float, workdir: Path) -> list[dict]:
    from kafka.admin import KafkaAdminClient, NewTopic

    from connectors.config import KafkaSettings
    from connectors.kafka import reader as R
    from connectors.kafka.local_broker import LocalBroker

    broker = LocalBroker(port=0, run_dir=workdir / "broker").start()
    stop = threading.Event()
    try:
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
        admin.close()
        t0 = time.monotonic()
        _fill(broker.bootstrap, batches)
        print(f"filled {batches:,} batches a partition in {time.monotonic() - t0:.1f} s", flush=True)
        base = KafkaSettings(bootstrap_servers=broker.bootstrap)
        feed = threading.Thread(target=_feed, args=(broker.bootstrap, rate, stop), daemon=True)
        feed.start()
        readers = {f: R.RangeReader(KafkaSettings(bootstrap_servers=broker.bootstrap, reader_fetch_bytes_factor=f))
                   for f in (0.0, base.reader_fetch_bytes_factor)}
        pos = {q: end for (_, q), (_, end) in R.log_bounds(base, [TOPIC]).items()}
        for reader in readers.values():  # connect, learn the topic: not timed
            for q in range(PARTITIONS):
                for _ in reader.read(R.OffsetRange(TOPIC, q, max(0, pos[q] - 50), pos[q])):
                    pass
        rows = []
        for i in range(cycles):
            time.sleep(every_s)
            factor = list(readers)[i % 2]
            reader = readers[factor]
            sent: list[int] = []
            send = reader._consumer._fetcher._manager.send

            def counting_send(request, *a, _send=send, _sent=sent, **kw):  # type: ignore[no-untyped-def]
                if type(request).__name__.startswith("FetchRequest"):
                    _sent.append(request.max_bytes)
                return _send(request, *a, **kw)

            reader._consumer._fetcher._manager.send = counting_send
            bounds = R.log_bounds(base, [TOPIC])
            cpu0, t_start = _cpu_s(broker.process.pid), time.perf_counter()
            n = offsets = 0
            for (_, q), (_, end) in sorted(bounds.items()):
                rng = R.OffsetRange(TOPIC, q, pos[q], end)
                seen = [rec.offset for rec in reader.read(rng)]
                assert seen == list(range(rng.start, rng.end)), f"partition {q}: offsets read differ from the range"
                n += len(seen)
                offsets += rng.size
                pos[q] = end
            wall, cpu = time.perf_counter() - t_start, _cpu_s(broker.process.pid) - cpu0
            reader._consumer._fetcher._manager.send = send
            rows.append({"cycle": i, "factor": factor, "records": n, "read_s": round(wall, 3),
                         "broker_cpu_s": round(cpu, 3), "fetches": len(sent), "load": os.getloadavg()[0]})
            print(json.dumps(rows[-1]), flush=True)
        for reader in readers.values():
            reader.close()
        return rows
    finally:
        stop.set()
        broker.stop()


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - manual runs
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, default=40_000)
    ap.add_argument("--rate", type=float, default=12_000)
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--every", type=float, default=1.0)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-fetch-sizing-") as tmp:
        rows = run(args.batches, args.rate, args.cycles, args.every, Path(tmp))
    for factor in sorted({r["factor"] for r in rows}):
        mine = [r for r in rows if r["factor"] == factor][1:]  # the first cycle of each: a longer range
        if mine:
            print(f"factor {factor}: {len(mine)} cycles, read s mean {sum(r['read_s'] for r in mine) / len(mine):.3f}, "
                  f"broker CPU s mean {sum(r['broker_cpu_s'] for r in mine) / len(mine):.3f}, fetches mean "
                  f"{sum(r['fetches'] for r in mine) / len(mine):.1f}, records mean "
                  f"{sum(r['records'] for r in mine) / len(mine):,.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
