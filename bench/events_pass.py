"""A fetched cycle's events phase alone: the vectorized pass against the Beam graph (ADR 028).

    .venv/bin/python -m bench.events_pass [--events 300000] [--reps 2] [--passes vectorized,graph]
        [--archive-parquet lean|full] [--archive-thread 0|1] [--partitions 1]

Synthetic events (``bench.data.synth_tables``, 10 minutes) are written as the reader processes
write a fetch (one Arrow IPC file per event type, partition and chunk of 100k offsets); then each
rep times ``events_pass.run_events_pass`` and the graph (``load.build_event_graph`` over the same
files, run on the FnApiRunner), alternately. Both with the dedupe on (the default horizon), no
stored bars, no watermark: the work of a first catch-up cycle's events phase, without the fetch,
the commit and the rest of the cycle. ``--partitions N`` spreads each event type over N partitions
of its topic by instrument (as the producers key ``exchange:symbol``), each with its own offsets
from 0: the pass then writes one archive file per partition. Each line gives the wall time and the CPU time of this
process (every thread: DuckDB's and the writer's too), the latter less sensitive to the load.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def run(events: int, reps: int, passes: tuple[str, ...] = ("vectorized", "graph"),
        archive_parquet: str = "lean", archive_thread: int = 0, partitions: int = 1) -> list[dict]:
    import apache_beam as beam
    import pyarrow as pa
    import pyarrow.compute as pc
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from bench.data import SYNTH_START_US, synth_tables
    from connectors.kafka.fetch import Fetched
    from pipelines.events_pass import run_events_pass
    from pipelines.jobs.load import _run, _runner_options, build_event_graph
    from pipelines.settings import JobSettings
    from pipelines.transforms.config import AnalyticsConfig

    cfg = AnalyticsConfig()
    out = []
    with tempfile.TemporaryDirectory(prefix="events-pass-") as tmp:
        d = Path(tmp)
        files = []
        for et, t in synth_tables(events, SYNTH_START_US, 600_000_000, 13).items():
            t = _spread(t, partitions)
            for part in sorted(set(t["_partition"].to_pylist())):
                sub = t.filter(pc.equal(t["_partition"], part))
                for i, batch in enumerate(sub.to_batches(max_chunksize=100_000)):
                    path = d / f"fetch-{et}-{part}-{i}.arrow"
                    with pa.ipc.new_file(str(path), batch.schema) as w:
                        w.write_batch(batch)
                    files.append(str(path))
        fetched = Fetched(files=files, records=events)
        settings = JobSettings(db=d / "unused.duckdb", data_dir=d, archive_parquet=archive_parquet,
                               events_pass_archive_thread=archive_thread)
        for rep in range(reps):
            for name in passes:
                target = d / f"out-{name}-{rep}"
                load = os.getloadavg()[0]
                c0 = time.process_time()
                t0 = time.perf_counter()
                if name == "vectorized":
                    run_events_pass(fetched, target, cfg.allowed_lateness_us, None, [], True, None, cfg.bar_us,
                                    archive_parquet, bool(archive_thread))
                else:
                    p = beam.Pipeline(runner=FnApiRunner(), options=_runner_options(settings))
                    build_event_graph(p, settings, [], target, cfg, None, [], fetched, None)
                    _run(p)
                s = time.perf_counter() - t0
                cpu = time.process_time() - c0
                out.append({"pass": name, "rep": rep, "seconds": s, "cpu_seconds": cpu, "events_per_s": events / s,
                            "load": load})
                print(f"{name:<11} rep {rep}: {s:.2f} s, {events / s:,.0f} events/s, CPU {cpu:.2f} s "
                      f"(load {load:.1f})", flush=True)
    return out


def _spread(table, partitions: int):
    """``table`` with its rows on ``partitions`` partitions by instrument, offsets from 0 in each."""
    if partitions <= 1:
        return table
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    inst = pc.binary_join_element_wise(table["exchange"], table["symbol"], ":").combine_chunks().dictionary_encode()
    part = inst.indices.to_numpy().astype(np.int32) % partitions
    offsets = np.zeros(len(part), np.int64)
    for p in range(partitions):
        at = part == p
        offsets[at] = np.arange(int(at.sum()), dtype=np.int64)
    table = table.set_column(table.schema.get_field_index("_partition"), "_partition", pa.array(part, pa.int32()))
    return table.set_column(table.schema.get_field_index("_offset"), "_offset", pa.array(offsets))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--passes", default="vectorized,graph",
                    help="comma-separated passes to time, in this order per rep (default: vectorized,graph)")
    ap.add_argument("--archive-parquet", default="lean", choices=("lean", "full"),
                    help="the archive's Parquet writer settings (JobSettings.archive_parquet)")
    ap.add_argument("--archive-thread", type=int, default=0, choices=(0, 1),
                    help="the pass writes the archive in a thread (JobSettings.events_pass_archive_thread)")
    ap.add_argument("--partitions", type=int, default=1, help="partitions per topic (default 1)")
    args = ap.parse_args(argv)
    passes = tuple(p for p in args.passes.split(",") if p)
    unknown = set(passes) - {"vectorized", "graph"}
    if unknown or not passes:
        ap.error(f"--passes: use vectorized and/or graph, not {args.passes!r}")
    run(args.events, args.reps, passes, args.archive_parquet, args.archive_thread, args.partitions)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
