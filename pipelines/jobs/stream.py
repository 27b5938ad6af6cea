"""`liqstream stream`: the local streaming job, as continuous bounded cycles (ADR 003).

Each cycle reads every partition from the offset committed with the marts to
the current log end, runs the Beam graph over exactly that range and commits
marts + offsets in one DuckDB transaction (``pipelines.jobs.load.run_load``).
Between cycles it sleeps ``interval`` seconds. It:

* survives a broker outage or restart of the broker process: the cycle fails,
  the job logs it and retries with capped backoff (a *new, empty* cluster is
  refused, see ClusterMismatch: its offsets mean something else);
* picks up partitions added to a topic (planned from their log start);
* counts malformed messages (already dead-lettered upstream) into ``rejects``;
* exposes health on ``/metrics`` (Prometheus text) and in ``pipeline_runs``;
* stops cleanly on SIGTERM/SIGINT: the running cycle finishes (or, on a second
  signal, is abandoned before its commit — both leave the marts consistent).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from connectors.kafka.fetch import FetchAhead, ParallelFetcher
from connectors.kafka.reader import log_bounds, plan_ranges
from pipelines import warehouse
from pipelines.alerts.delivery import AlertDispatcher
from pipelines.arrow_pool import use_arrow_pool
from pipelines.dq import DataQuality
from pipelines.jobs.load import DQ_SUITES, LOAD_TOPICS, LoadResult, gate_needs_gx, run_load
from pipelines.settings import JobSettings
from pipelines.warehouse import ClusterMismatch

log = logging.getLogger("liqstream.stream")
#: exit status of a stream job that stopped before it caught up (its last cycle failed, or lag remained)
EXIT_BEHIND = 5


@dataclass
class StreamHealth:
    """What /metrics shows; updated by the job thread, read by the HTTP thread."""

    started_at: float = field(default_factory=time.time)
    cycles: int = 0
    failed_cycles: int = 0
    events_total: int = 0
    rejects_total: int = 0
    duplicates_total: int = 0
    last_cycle_end: float = 0.0
    last_cycle_seconds: float = 0.0
    last_events_per_second: float = 0.0
    last_dq_ok: int = 1
    broker_up: int = 1
    lag: dict[tuple[str, int], int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: more lines from parts with their own state (the alert delivery)
    extra_metrics: Callable[[], list[str]] | None = None

    def render(self) -> str:
        with self.lock:
            lines = [
                "# HELP liqstream_cycles_total Bounded cycles completed.",
                "# TYPE liqstream_cycles_total counter",
                f"liqstream_cycles_total {self.cycles}",
                "# TYPE liqstream_cycles_failed_total counter",
                f"liqstream_cycles_failed_total {self.failed_cycles}",
                "# TYPE liqstream_events_total counter",
                f"liqstream_events_total {self.events_total}",
                "# TYPE liqstream_rejects_total counter",
                f"liqstream_rejects_total {self.rejects_total}",
                "# HELP liqstream_duplicates_total Copies of events already counted, dropped (ADR 016).",
                "# TYPE liqstream_duplicates_total counter",
                f"liqstream_duplicates_total {self.duplicates_total}",
                "# HELP liqstream_last_cycle_timestamp_seconds Unix time the last cycle committed.",
                "# TYPE liqstream_last_cycle_timestamp_seconds gauge",
                f"liqstream_last_cycle_timestamp_seconds {self.last_cycle_end:.3f}",
                "# TYPE liqstream_cycle_duration_seconds gauge",
                f"liqstream_cycle_duration_seconds {self.last_cycle_seconds:.3f}",
                "# TYPE liqstream_events_per_second gauge",
                f"liqstream_events_per_second {self.last_events_per_second:.1f}",
                "# HELP liqstream_dq_ok 1 if the last data-quality checkpoint passed its critical suites.",
                "# TYPE liqstream_dq_ok gauge",
                f"liqstream_dq_ok {self.last_dq_ok}",
                "# TYPE liqstream_broker_up gauge",
                f"liqstream_broker_up {self.broker_up}",
                "# HELP liqstream_consumer_lag Messages between the committed offset and the log end.",
                "# TYPE liqstream_consumer_lag gauge",
            ]
            for (topic, part), lag in sorted(self.lag.items()):
                lines.append(f'liqstream_consumer_lag{{topic="{topic}",partition="{part}"}} {lag}')
            if self.extra_metrics is not None:
                lines += self.extra_metrics()
        return "\n".join(lines) + "\n"


def serve_metrics(health: StreamHealth, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            if self.path.rstrip("/") not in ("/metrics", ""):
                self.send_error(404)
                return
            body = health.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


@dataclass
class StreamOptions:
    interval_s: float = 1.0  # cycle period: an empty cycle waits out the rest of it, a busy one does not
    dq_every_s: float = 60.0  # data-quality cadence in streaming (0 = every cycle)
    exit_when_idle: int = 0  # stop after this many consecutive empty cycles that left no lag (0 = never)
    #: with exit_when_idle: stop (exit 5, behind) after this many consecutive empty cycles that still left
    #: lag, i.e. messages the plan never gets to: a bounded job must end rather than spin
    stuck_after: int = 30
    max_backoff_s: float = 30.0
    metrics_port: int | None = None
    max_cycles: int = 0  # 0 = unbounded
    #: analytics cadence in seconds (0 = every cycle). Deferred analytics are never lost: the
    #: touched minutes stay marked in job_state until a cycle recomputes them.
    analytics_every_s: float = 0.0
    #: seconds between snapshots published for readers (0 = only when the job stops). Short, so the
    #: live desk (`liqstream serve`) follows the job within seconds (docs/adr/013) ...
    snapshot_every_s: float = 2.0
    #: ... but a snapshot copies the whole file: the next one waits at least this many times the last
    #: copy's duration, so copying takes at most ~1/N of the job's time as the database grows
    #: (measured: 0.12 s for a simulated day's 27 MB, i.e. every 2 s; a 30x larger file: every ~36 s)
    snapshot_cost_factor: float = 10.0
    #: an extra stop condition checked after each cycle (e.g. "the replay feeding me is done")
    done: object = None
    #: a cycle that starts within this many seconds of the last cycle's lag probe plans on the
    #: probe's log bounds instead of asking the broker again (0 = always ask; ADR 038): a busy
    #: cycle follows the probe at once, and each ask took 0.1-0.3 s of a 2 s live cycle
    bounds_reuse_s: float = 0.25


class StreamJob:
    def __init__(self, settings: JobSettings, options: StreamOptions, fetcher: ParallelFetcher | None = None) -> None:
        """``fetcher``: reader processes to use instead of the ones the job starts itself (tests)."""
        self.settings = settings
        self._fetcher = fetcher
        self.options = options
        self.health = StreamHealth()
        self._stop = threading.Event()
        self._signals = 0
        #: the last cycles' events, wall seconds, phases and events pass (the bench reads them)
        self.recent_cycles: deque[dict] = deque(maxlen=100)
        #: the last lag probe's (monotonic time, log bounds): the next cycle's plan when it is fresh
        self._probed: tuple[float, dict] | None = None
        #: the next cycle's ranges being read during this cycle's analytics (ADR 043)
        self._ahead: FetchAhead | None = None
        self._readers: ParallelFetcher | None = None
        #: Great Expectations is loading or loaded (ADR 053)
        self._gx_warming = False

    def request_stop(self, *_: object) -> None:
        self._signals += 1
        if self._signals == 1:
            log.warning("stop requested: finishing the current cycle (signal again to abandon it)")
            self._stop.set()
        else:
            raise KeyboardInterrupt  # abandons the cycle before its commit: marts stay consistent

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def run(self) -> int:
        opts = self.options
        # before the reader processes spawn: they take it from the environment (ADR 047)
        use_arrow_pool(self.settings.stream_arrow_pool, "LIQSTREAM_STREAM_ARROW_POOL")
        server = serve_metrics(self.health, opts.metrics_port) if opts.metrics_port else None
        if server:
            log.info("metrics on http://127.0.0.1:%d/metrics", opts.metrics_port)
        idle = 0
        stuck = 0  # consecutive empty cycles that left lag
        caught_up = False  # after the last cycle: it succeeded and left no lag
        backoff = 1.0
        last_snapshot = 0.0
        snapshot_gap = 0.0
        unpublished = False
        pid_file = warehouse.writer_pid_path(self.settings.db)
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(f"{os.getpid()}\n")
        last_dq = 0.0
        last_analytics = time.monotonic()
        cycles = 0
        alerts = AlertDispatcher(self.settings)  # delivery threads (ADR 012), started after the fork below
        self.health.extra_metrics = alerts.metrics_lines
        # reader processes kept across cycles (see connectors.kafka.fetch)
        fetcher = self._fetcher or (ParallelFetcher(self.settings.kafka, self.settings.fetch_workers,
                                                    min_offsets=self.settings.fetch_min_offsets)
                                    if self.settings.fetch_workers > 1 else None)
        if fetcher is not None:
            fetcher.start()
        self._readers = fetcher if self.settings.fetch_ahead else None
        alerts.start()
        # Great Expectations loads in a thread, its suites' checkpoints built there too (~1 s of the
        # first gate before, ADR 031). Its import was half of the job's CPU samples in a 100k-event
        # catch-up (py-spy, issue 21). With dq_gx_every_s > 0 the gates before the first full one are
        # DuckDB's and need no GX (ADR 053): it loads once a cycle left no lag ("caught_up"), not
        # on the cores a catch-up's first cycles use; with 0 (GX at every gate), from the start
        self._gx_warming = self.settings.dq_gx_every_s <= 0 or self.settings.dq_gx_warm_up == "start"
        if self._gx_warming:
            DataQuality.warm_up(DQ_SUITES)
        abandoned = False
        # The database stays open in this process for the job's life: each cycle's connections (the
        # cycle, the lag probe, the alert outbox's sync, the snapshot's checkpoint) then share one
        # DuckDB instance instead of opening the file anew — opening it was 15 % of the job thread's
        # samples in live cycles at 10k events/s (py-spy, 2026-12-04). Other processes never opened
        # the file while a job writes (they read its snapshot, warehouse.connect(read_only=True)).
        keeper = self._open_database()
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                want_dq = opts.dq_every_s <= 0 or time.monotonic() - last_dq >= opts.dq_every_s
                want_analytics = (opts.analytics_every_s <= 0 or idle > 0
                                  or time.monotonic() - last_analytics >= opts.analytics_every_s)
                # run_load takes the read ahead (its ranges, if they start at the committed offsets)
                # and removes its files when the cycle ends, whatever happened
                ahead, self._ahead = self._ahead, None
                try:
                    result = run_load(self.settings, run_dq=want_dq, run_analytics=want_analytics,
                                      fetcher=fetcher, after_analytics=alerts.sync_safely, open_minute_watch=True,
                                      dq_gx_every_s=self.settings.dq_gx_every_s, bounds=self._fresh_bounds(),
                                      ahead=ahead, read_ahead=self._read_ahead if self._readers else None,
                                      read_ahead_early=self.settings.fetch_ahead >= 2,
                                      after_events=None if self._gx_warming else self._gx_if_gate_needs_it)
                except ClusterMismatch:
                    raise  # not transient: the operator must decide (see the message)
                except Exception as exc:  # broker down, network: transient, retry
                    idle = 0  # a failed cycle says nothing about new messages: it never counts as idle
                    caught_up = False
                    with self.health.lock:
                        self.health.failed_cycles += 1
                        self.health.broker_up = 0
                    log.warning("cycle failed (%s: %s); retrying in %.0fs", type(exc).__name__, exc, backoff)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, opts.max_backoff_s)
                    continue
                backoff = 1.0
                if want_dq:
                    last_dq = time.monotonic()
                if want_analytics:
                    last_analytics = time.monotonic()
                alerts.after_cycle()
                caught_up = self._record(result, time.perf_counter() - t0)
                # a commit not yet in the snapshot is published once the spacing allows, even if the
                # cycles since were empty: else the last commit before a lull stays hidden from readers
                unpublished = unpublished or result.status != "empty"
                if (unpublished and opts.snapshot_every_s > 0
                        and time.monotonic() - last_snapshot >= max(opts.snapshot_every_s, snapshot_gap)):
                    t_snap = time.monotonic()
                    warehouse.publish_snapshot(self.settings.db)
                    last_snapshot = time.monotonic()
                    snapshot_gap = opts.snapshot_cost_factor * (last_snapshot - t_snap)
                    unpublished = False
                cycles += 1
                # idle = an empty cycle that left nothing behind. An empty cycle can still leave lag: a
                # log end the plan saw short (a broker's ListOffsets behind its high watermark whose
                # confirmation timed out on a loaded machine), or a lag probe that did not answer.
                # Counted as idle, two of them stopped the demo behind (exit 5) with events unread.
                idle = idle + 1 if result.status == "empty" and caught_up else 0
                stuck = stuck + 1 if result.status == "empty" and not caught_up else 0
                done = opts.done() if callable(opts.done) else True
                if opts.exit_when_idle and idle >= opts.exit_when_idle and done:
                    log.info("no new messages for %d cycle(s): exiting", idle)
                    break
                if opts.exit_when_idle and stuck >= opts.stuck_after and done:
                    log.warning("%d empty cycles in a row left lag (%d messages): giving up", stuck,
                                sum(self.health.lag.values()))
                    break
                if opts.max_cycles and cycles >= opts.max_cycles:
                    break
                if caught_up and not self._gx_warming:  # the job goes on: GX loads while it waits (ADR 053)
                    self._warm_up_gx()
                # interval_s is the cycle period: a busy cycle longer than it is followed at once
                self._stop.wait(max(0.0, opts.interval_s - (time.perf_counter() - t0)))
        except KeyboardInterrupt:
            abandoned = True  # a second signal: the cycle was dropped before its commit
            raise
        finally:
            if self._ahead is not None:  # read for a cycle that will not run
                self._ahead.discard(wait=not abandoned)
                self._ahead = None
            if keeper is not None:
                keeper.close()
            alerts.close()
            if fetcher is not None:
                # after an abandoned cycle, readers may sit in a stalled read: end them, do not wait
                fetcher.close(wait=not abandoned)
            if server:
                server.shutdown()
            try:
                if self.settings.db.exists():
                    warehouse.publish_snapshot(self.settings.db)
            except Exception as exc:  # e.g. another writer holds the file: readers keep the last snapshot
                log.warning("no snapshot published at stop (%s: %s)", type(exc).__name__, exc)
            finally:
                pid_file.unlink(missing_ok=True)
        if not caught_up:
            log.warning("stream stopped before it caught up (the last cycle failed or left lag): exit status %d",
                        EXIT_BEHIND)
            return EXIT_BEHIND
        return 0 if self.health.last_dq_ok else 3

    def _warm_up_gx(self) -> None:
        DataQuality.warm_up(DQ_SUITES)
        self._gx_warming = True

    def _gx_if_gate_needs_it(self, con: Any) -> None:
        """run_load's ``after_events``: a suite failing now in a way DuckDB does not decide (a failing
        critical check; not the freshness suite, whose failures DuckDB decides between full gates:
        ADR 059) makes the gate run GX: load it while the analytics run instead of in the gate
        (ADR 053). Best effort: the gate decides either way."""
        if self._gx_warming:
            return
        try:
            needed = gate_needs_gx(con, DQ_SUITES, self.settings.data_dir / "archive")
        except Exception as exc:  # the gate will say what is wrong
            log.debug("no early DQ verdict (%s: %s)", type(exc).__name__, exc)
            needed = True
        if needed:
            self._warm_up_gx()

    def _open_database(self) -> Any:
        try:
            return warehouse.connect(self.settings.db)
        except Exception as exc:  # e.g. another process holds the file: the cycles retry as before
            log.warning("database %s not kept open (%s: %s): each cycle opens it", self.settings.db,
                        type(exc).__name__, exc)
            return None

    def _read_ahead(self, committed: dict[tuple[str, int], int]) -> None:
        """run_load's ``read_ahead``: the readers plan and read the next cycle's ranges from
        ``committed`` (this cycle's offsets once committed) while this cycle goes on (ADR 043)."""
        import tempfile
        from pathlib import Path

        if self._ahead is not None:  # not taken (a failed cycle in between): its files go
            self._ahead.discard()
        kafka, max_range = self.settings.kafka, self.settings.max_range
        parent = self.settings.data_dir if self.settings.data_dir.exists() else None
        self._ahead = FetchAhead(self._readers, lambda: plan_ranges(log_bounds(kafka, LOAD_TOPICS), committed, max_range),
                                 committed, Path(tempfile.mkdtemp(prefix="liqstream-ahead-", dir=parent)))

    def _fresh_bounds(self) -> dict | None:
        """The last lag probe's log bounds if it is at most ``bounds_reuse_s`` old (used once)."""
        probed, self._probed = self._probed, None
        if probed is None or self.options.bounds_reuse_s <= 0 or time.monotonic() - probed[0] > self.options.bounds_reuse_s:
            return None
        return probed[1]

    def _record(self, result: LoadResult, seconds: float) -> bool:
        """Account a successful cycle; True if it left no lag (as far as the broker says)."""
        try:
            bounds = log_bounds(self.settings.kafka, LOAD_TOPICS)
            self._probed = (time.monotonic(), bounds)
            con = warehouse.connect(self.settings.db)
            committed = dict(((t, p), o) for t, p, o in con.execute(
                'SELECT topic, "partition", next_offset FROM kafka_offsets').fetchall())
            con.close()
            lag = {tp: max(0, end - committed.get(tp, begin)) for tp, (begin, end) in bounds.items()}
            probe_ok = True
        except Exception:  # lag is best effort; the cycle itself committed
            lag = self.health.lag
            probe_ok = False  # the broker did not answer the lag probe: /metrics says so at once
        with self.health.lock:
            h = self.health
            h.cycles += 1
            h.broker_up = int(probe_ok)
            h.events_total += result.events_in
            h.rejects_total += result.rejects_in
            h.duplicates_total += result.duplicates_in
            h.last_cycle_end = time.time()
            h.last_cycle_seconds = seconds
            h.last_events_per_second = result.events_in / seconds if seconds > 0 else 0.0
            if result.dq:
                h.last_dq_ok = int(result.dq_passed)
            h.lag = lag
        self.recent_cycles.append({"events": result.events_in, "seconds": seconds, "timings": dict(result.timings),
                                   "events_pass": result.events_pass, "read_ahead": result.read_ahead})
        if result.status != "empty":
            log.info("cycle %s: %s, %d events, %d rejects, %.2fs (%s; events pass: %s), lag %d",
                     result.run_id, result.status, result.events_in, result.rejects_in, seconds,
                     ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items()), result.events_pass,
                     sum(lag.values()))
        return probe_ok and not any(lag.values())
