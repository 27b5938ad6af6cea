"""Parallel fetch of offset ranges into Arrow IPC files, by reader processes kept across cycles.

Reading Kafka is the one per-message step of a streaming cycle (the Kafka client's record
parsing; the Avro decode, since ADR 021 one block per batch in Polars' reader): about half of a
cycle's work when it catches up a backlog (docs/performance.md). Beam's local runner can
spread it over worker processes only by starting them anew for every pipeline (each cycle)
and by pickling every batch through its data plane, which measured slower than one process.
So the stream job keeps ``workers`` reader processes alive (spawned once, each with its
long-lived consumer) and hands them the cycle's ranges, cut into chunks; each chunk is read
by :class:`~connectors.kafka.range_decode.RangeDecoder` — the same code the Beam source
runs, without importing Beam (ADR 053) — and written to one Arrow IPC file, which the cycle's Beam pipeline then reads
(``ReadArrowFiles``). Nothing changes for exactly-once: the files live in the cycle's
temporary directory, and offsets are committed with the marts as before; a cycle that fails
(a reader process dying included) is retried from the committed offsets.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pyarrow as pa

from connectors.config import KafkaSettings
from connectors.kafka.reader import READ_COUNT, OffsetRange

#: largest range one task reads: enough chunks for the workers to share a partition's backlog
CHUNK = 50_000
#: smallest cycle (in offsets) worth the readers: below it the cycle reads in its own process (a
#: fresh range reader per cycle, the Beam source) and its events phase is the graph. Every cycle
#: goes to the readers (ADR 039): live cycles then take the vectorized events pass. It was 50,000
#: while the confluent-kafka readers stalled 5-minute live runs (ADR 032/033; the cause was the
#: local broker's fetch on a long log of small batches against their fixed 10 ms wait, fixed in
#: ADR 035); with kafka-python readers an idle 5-minute run at 10k events/s watched 8/8 episodes
#: in 122 live cycles of 2.27 s mean (p95 6.40 s, before ADR 037) against p95 8.98 s with 50,000
MIN_OFFSETS = 1

log = logging.getLogger(__name__)


@dataclass
class Fetched:
    """What a fetch produced: IPC files of event batches, the rejected rows, the counts."""

    files: list[str] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    records: int = 0

    @property
    def rejected(self) -> int:
        return len(self.rejects)


class ParallelFetcher:
    """``fetch(ranges, out_dir)`` with ``workers`` reader processes (started at the first fetch)."""

    def __init__(self, settings: KafkaSettings, workers: int = 2, chunk: int = CHUNK,
                 min_offsets: int = MIN_OFFSETS) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.settings = settings
        self.workers = workers
        self.chunk = chunk
        self.min_offsets = min_offsets
        self._pool: ProcessPoolExecutor | None = None
        #: what a reader runs per chunk: (range, directory) -> (file, records, rejects). A module-level
        #: function (pickled by name into the spawned readers); tests wrap it to kill a reader mid-chunk
        self.task: Callable[[OffsetRange, str], tuple[str | None, int, list[dict[str, Any]]]] = _fetch_chunk

    def worth_it(self, ranges: list[OffsetRange]) -> bool:
        """Whether these ranges should go to the readers (else the caller reads them itself)."""
        return sum(r.size for r in ranges) >= self.min_offsets

    def fetch(self, ranges: list[OffsetRange], out_dir: Path) -> Fetched:
        """Read the ranges into IPC files under ``out_dir``.

        A reader process that dies (OOM-killed, a crash in a C library) breaks the whole pool, and
        the break surfaces at ``submit`` or at ``result`` depending on when the pool notices it. In
        both cases the pool is replaced and the fetch is read again once from scratch, in a new
        directory, so no chunk is taken from the broken attempt (nothing lost, nothing twice). A
        second death in a row fails the fetch (the cycle is retried from the committed offsets)."""
        for attempt in range(2):
            try:
                return self._fetch_once(ranges, out_dir / f"attempt-{attempt}")
            except BrokenProcessPool:
                self.close()  # the next start() spawns new readers
                if attempt:
                    raise
                log.warning("a reader process died: reading the cycle's ranges again with new readers")
        raise AssertionError("unreachable")

    def _fetch_once(self, ranges: list[OffsetRange], out_dir: Path) -> Fetched:
        out_dir.mkdir(parents=True, exist_ok=True)
        chunks = [c for r in ranges for c in r.split(self.chunk)]
        pool = self.start()
        futures: list[Future] = []
        try:
            for c in chunks:
                futures.append(pool.submit(self.task, c, str(out_dir)))
                # the readers' records are counted as their chunks finish (progress of a long catch-up)
                futures[-1].add_done_callback(lambda f, n=c.size: _count_chunk(f, n))
            parts = [f.result() for f in futures]
        except BaseException:
            for f in futures:  # e.g. a read timed out (broker down): drop the chunks not started yet
                f.cancel()
            raise
        out = Fetched()
        for path, rows, rejects in parts:
            if path:
                out.files.append(path)
            out.records += rows
            out.rejects.extend(rejects)
        return out

    def start(self) -> ProcessPoolExecutor:
        """Start the reader processes now (they take ~1 s to import and connect), not at the first fetch."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"),
                                             initializer=_worker_init, initargs=(self.settings, os.getpid()))
            for _ in range(self.workers):
                self._pool.submit(int)  # a no-op task per worker makes the pool spawn them all
        return self._pool

    def close(self, wait: bool = True) -> None:
        """Stop the readers: after their running chunks (``wait``), or at once (a read may be stalled
        on the broker for its timeout: an abandoned cycle must not wait for it)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            if not wait:
                for proc in list((pool._processes or {}).values()):  # no public way to end busy workers
                    proc.terminate()
            pool.shutdown(wait=wait, cancel_futures=True)

    def __enter__(self) -> ParallelFetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _count_chunk(future: Future, offsets: int) -> None:
    if not future.cancelled() and future.exception() is None:
        READ_COUNT.records += offsets


# ---- in the reader processes ----------------------------------------------------------------------
_READER: Any = None


def _worker_init(settings: KafkaSettings, parent_pid: int) -> None:
    global _READER
    # a worker outlives a parent killed with -9 (the pool cannot tell it): leave with it. Watched
    # from the start: the imports below take seconds on a loaded machine, and a parent may die then
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    import logging

    from connectors.kafka.range_decode import RangeDecoder

    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # clean closes log tracebacks (README)
    _READER = RangeDecoder(settings)
    _READER.setup()


def _exit_with_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(0)


def _fetch_chunk(rng: OffsetRange, out_dir: str) -> tuple[str | None, int, list[dict[str, Any]]]:
    """One chunk -> (its IPC file or None, records read, reject rows), counted as the Beam source
    counts them: a dead-letter topic's records are read and rejected, a main topic's decoded
    events are read, its undecodable ones rejected."""
    from connectors.normalize import TOPIC_EVENT

    rows, rejects, writer, path = 0, [], None, None
    try:
        for item in _READER.batches(rng):
            if isinstance(item, pa.RecordBatch):
                if writer is None:
                    path = str(Path(out_dir) / f"fetch-{rng.topic}-{rng.partition}-{rng.start}.arrow")
                    writer = pa.ipc.new_file(path, item.schema)
                writer.write_batch(item)
                rows += item.num_rows
            else:  # a range_decode.Reject
                rejects.append(item.row)
    finally:
        if writer is not None:
            writer.close()
    if TOPIC_EVENT.get(rng.topic) is None:
        rows += len(rejects)
    return path, rows, rejects


class FetchAhead:
    """The next cycle's ranges, planned and read by the reader processes while this cycle's
    analytics and DQ gate run (the stream job, ADR 043).

    Started once a cycle's events phase committed: from the offsets just committed
    (``committed``) to the log ends asked then, read into ``out_dir`` by a thread of its own
    that hands the ranges to ``fetcher`` (the job's thread does not touch the fetcher meanwhile).
    The next cycle takes its ranges and files with :meth:`take` only if it starts from the same
    committed offsets; else, or if the plan or the read failed, it plans and reads as before.
    Nothing is committed here: the files are temporary, the offsets are committed with the marts
    of the cycle that takes them, so a crash at any point re-reads from the committed offsets."""

    def __init__(self, fetcher: ParallelFetcher, plan: Callable[[], list[OffsetRange]],
                 committed: dict[tuple[str, int], int], out_dir: Path) -> None:
        """``plan``: the ranges from ``committed`` to the log ends (called in the thread)."""
        self.committed = dict(committed)
        self.out_dir = out_dir
        self._result: tuple[list[OffsetRange], Fetched | None] | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        # a daemon thread: a fetch stalled on the broker must not hold the interpreter at exit
        self._thread = threading.Thread(target=self._run, args=(fetcher, plan), name="fetch-ahead", daemon=True)
        self._thread.start()

    def _run(self, fetcher: ParallelFetcher, plan: Callable[[], list[OffsetRange]]) -> None:
        try:
            ranges = plan()
            self._result = (ranges, fetcher.fetch(ranges, self.out_dir) if ranges else None)
        except BaseException as exc:  # reported by take(): the cycle then reads its ranges itself
            self._error = exc
        finally:
            self._done.set()

    def take(self, committed: dict[tuple[str, int], int]) -> tuple[list[OffsetRange], Fetched] | None:
        """Wait for the read; its (ranges, fetched) if planned from ``committed`` and read, else None."""
        self._done.wait()
        if self._error is not None:
            log.warning("reading ahead failed (%s: %s): the cycle reads its ranges itself",
                        type(self._error).__name__, self._error)
            return None
        ranges, fetched = self._result or ([], None)
        if fetched is None or not ranges or committed != self.committed:
            return None
        return ranges, fetched

    def discard(self, wait: bool = True) -> None:
        """Remove the files (after the read ended, unless ``wait`` is False: the job is abandoned)."""
        import shutil

        if wait:
            self._done.wait()
        shutil.rmtree(self.out_dir, ignore_errors=True)
