"""Job settings: one typed place, defaults that run, overridable by env var and CLI flag.

Each field ``name`` reads env ``LIQSTREAM_<NAME>``; Kafka connection settings
come from ``connectors.config.KafkaSettings`` (``KAFKA_*``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from connectors.config import KafkaSettings
from connectors.kafka.fetch import MIN_OFFSETS
from connectors.kafka.topics import ALERTS_TOPIC


@dataclass(frozen=True)
class AlertSettings:
    """Where cascade alerts go (pipelines/alerts, ADR 012). Env ``LIQSTREAM_ALERT_<NAME>``.

    ``webhooks`` and ``webhook_token`` are secrets (a webhook URL often embeds its token):
    ``repr`` masks them and logs show :func:`pipelines.alerts.webhook.redact_url` only.
    """

    #: Kafka topic of the alert records ("" = no Kafka delivery)
    topic: str = ALERTS_TOPIC
    #: URLs receiving each alert as an HTTP POST of JSON (env: comma- or space-separated)
    webhooks: tuple[str, ...] = field(default=(), repr=False)
    #: sent as ``Authorization: Bearer <token>`` to every webhook (env or LIQSTREAM_ALERT_WEBHOOK_TOKEN_FILE)
    webhook_token: str | None = field(default=None, repr=False)
    #: alert kinds POSTed to webhooks (env: comma-separated). Webhooks page people: a
    #: ``liquidation_burst`` (USD without the price move, level -1) is on the topic for subscribers
    #: that want it, but pages no one unless listed here
    webhook_kinds: tuple[str, ...] = ("watch", "cascade")
    webhook_timeout_s: float = 5.0
    #: attempts per alert and webhook before it goes to alert_dead_letters
    webhook_max_attempts: int = 6
    #: first retry delay; doubles per attempt up to webhook_max_backoff_s
    webhook_backoff_s: float = 1.0
    webhook_max_backoff_s: float = 60.0
    #: records per partition read back from the topic's end to learn what a crashed run already sent
    reconcile_records: int = 10_000
    #: seconds a send to Kafka may take before it is retried (after reading the topic back)
    kafka_timeout_s: float = 30.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> AlertSettings:
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get("LIQSTREAM_ALERT_" + f.name.upper())
            if raw is None or (raw == "" and f.name != "topic"):
                continue
            t = str(f.type)
            if f.name in ("webhooks", "webhook_kinds"):
                values[f.name] = tuple(u for u in raw.replace(",", " ").split() if u)
            elif t.startswith("int"):
                values[f.name] = int(raw)
            elif t.startswith("float"):
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        token_file = env.get("LIQSTREAM_ALERT_WEBHOOK_TOKEN_FILE")
        if token_file and "webhook_token" not in values:
            values["webhook_token"] = Path(token_file).read_text().strip()
        return cls(**values)


#: the archive's Parquet writer settings (``JobSettings.archive_parquet``; ``pipelines.archive.parquet_options``)
ARCHIVE_PARQUET = ("lean", "full")


@dataclass(frozen=True)
class JobSettings:
    db: Path = Path("data/liqstream.duckdb")
    data_dir: Path = Path("data")
    #: largest offset range one Beam work item reads (ranges are split to spread over workers)
    max_range: int = 200_000
    #: Beam FnApiRunner workers for bounded runs (1 = in-process, fastest for small cycles)
    workers: int = 1
    #: worker processes of a backfill (each runs whole days' work items; 2 = both cores here)
    backfill_workers: int = 2
    #: days of a backfill whose analytics run at once, oldest first (ADR 036): each window reads its
    #: days plus ~1.5 days (the cascades' lookback; not oi_deltas' 30-day span, made at the end from
    #: 5-minute samples of the windows) and carries on the whole range's state (the liquidation
    #: map's books, each scope's OI, the market index, the detector's running sums), so the marts
    #: are the whole range's row for row while its panels no longer grow with the range;
    #: 0 = the whole range in one run (as before; also what the Dask runner does). 14, not 7: at 90
    #: days 7-day windows peaked at 885 MB in 186 s, 14-day ones at 923 MB in 130 s (main: 1,619 MB,
    #: 75 s; docs/performance.md)
    backfill_analytics_days: int = 14
    #: bytes from which the backfill's allocations get their own mapping, returned to the system
    #: when freed (glibc's M_MMAP_THRESHOLD, set for the backfill process and its day workers);
    #: 0 = glibc's default, which rises to 32 MB as arrays are freed so that the analytics' NumPy
    #: arrays of a long range stayed in the heap, freed but resident (docs/performance.md)
    backfill_mmap_threshold: int = 262_144
    #: Arrow's memory pool in the backfill process and its day workers: "system" (glibc malloc, which
    #: honours ``backfill_mmap_threshold``), "jemalloc", "mimalloc", or "" = pyarrow's default
    #: (mimalloc, or what ARROW_DEFAULT_MEMORY_POOL names). mimalloc's purging of freed memory cost
    #: a day worker 2-3 s of kernel time per 3 days read and the 4M-event backfill peaked ~25 %
    #: higher than with "system" (ADR 047, docs/performance.md)
    backfill_arrow_pool: str = "system"
    #: the same for the stream job and its reader processes: "system" (default), "jemalloc", "mimalloc"
    #: (pyarrow's own default), or "" = pyarrow's default. mimalloc gives freed memory back to the
    #: kernel within 10 ms and faults it in again: in a live cycle of 200k events the bars of the same
    #: table took 0.2-0.3 s of the job thread's CPU, 0.14-0.22 s of it kernel time, against 0.06 s with
    #: "system"; the cycle's CPU 1.47-> 1.29 s, resident memory no higher (ADR 047, ADR 062)
    stream_arrow_pool: str = "system"
    #: Beam runner of `liqstream backfill`: "local" (this host, ADR 007) or "dask" (a dask.distributed
    #: cluster, ADR 017)
    backfill_runner: str = "local"
    #: the Dask scheduler of ``--runner dask`` (tcp://HOST:PORT); "" = a LocalCluster of
    #: ``backfill_workers`` processes on this host
    dask_scheduler: str = ""
    #: seconds to reach the Dask scheduler before the backfill gives up (names the address)
    dask_connect_timeout_s: int = 10
    #: days whose pipelines are on the Dask cluster at once (the next is submitted as one finishes)
    dask_days_in_flight: int = 16
    #: where Dask workers write the backfill's intermediate Parquet: a folder every worker and this
    #: client see (shared mount) or an fsspec URL (s3://…, gs://…); "" = a temporary folder here
    #: (fine for a LocalCluster only)
    staging: str = ""
    #: reader processes of the stream job (connectors.kafka.fetch; 1 = read inside the Beam pipeline)
    fetch_workers: int = 2
    #: smallest cycle (offsets) the reader processes read; below it the cycle reads inside its Beam
    #: pipeline and its events phase is the graph (connectors.kafka.fetch.MIN_OFFSETS: 1, every
    #: cycle, ADR 039; a fetched cycle's events phase is the vectorized pass)
    fetch_min_offsets: int = MIN_OFFSETS
    #: seconds between progress lines of a long load / stream catch-up (events read of to read, rate)
    progress_every_s: int = 5
    #: seconds of event time before the watermark within which a copy of an event already counted
    #: (a producer rerun, a feed's resend) is recognised and dropped; 0 = no dedupe (ADR 016).
    #: Bounds the event_keys table: ~16 bytes per event of that span
    dedupe_horizon_s: int = 21_600
    #: the stream job's DQ gates run Great Expectations itself (and rebuild the Data Docs) at most
    #: every this many seconds; the gates between have DuckDB evaluate the same expectations
    #: (pipelines/dq/sql.py) and run GX, with its Data Docs page built at once, only on a failure
    #: (but the freshness suite's: DuckDB's verdict, ADR 059). 0 = GX at every gate (ADR 031). One-shot `load`, `backfill` and `dq` always run GX.
    dq_gx_every_s: int = 600
    #: when the stream job loads Great Expectations (~2 s of CPU, 5-10 s on a loaded machine) with
    #: dq_gx_every_s > 0, whose first gates DuckDB decides without GX (ADR 053): "caught_up" (default),
    #: in a thread once a cycle left no lag, so a catch-up's cycles do not share the cores with it, or
    #: right after a cycle's events commit when DuckDB finds a suite failing that GX must validate in
    #: that gate (not the freshness suite a stale backlog fails: DuckDB decides it, ADR 059); "start": in a thread at the job's
    #: start, as before. dq_gx_every_s = 0 (GX at every gate) always loads it at the start
    dq_gx_warm_up: str = "caught_up"
    #: the stream job's read ahead (ADR 043): the reader processes plan and read the next cycle's
    #: ranges while this cycle goes on; the next cycle takes them if it starts from the offsets
    #: they were planned from. 2: as soon as this cycle's fetch ended (overlaps its events pass,
    #: commit, analytics and DQ gate); 1: once its events committed (overlaps analytics and DQ);
    #: 0 (default): each cycle plans and reads itself. Off by default: on the shared 2-core machine
    #: it ran more, shorter cycles but did not lower the alert latency (docs/performance.md)
    fetch_ahead: int = 0
    #: the stream job's analytics graph is built, translated and fused once and re-run every cycle,
    #: its per-cycle values read from a file when it runs (ADR 045); 0 = a fresh pipeline per cycle
    #: (as before). On by default: the analytics phase took 0.60-0.72x main's CPU in the A/B of
    #: docs/performance.md ("Analytics graph reuse"), every mart row equal
    analytics_graph_reuse: int = 1
    #: the stream job keeps the liquidation map's books it committed in its process and hands them
    #: to the next cycle's graph instead of exporting liquidation_map_state to Parquet and reading it
    #: back (ADR 061); they are still stored with the marts every cycle, and a cycle reads the table
    #: whenever it may hold other books (a restart, another writer, a rolled-back cycle: job_state's
    #: token is not the kept one). 0 = export and read back every cycle (as before)
    liqmap_state_in_process: int = 1
    #: the raw-event archive's Parquet writer (pipelines.archive.ARCHIVE_PARQUET, ADR 046): "lean"
    #: (default) = dictionaries for the string columns and statistics for the others only, half
    #: the write time of "full" (Arrow's defaults: both for every column, as before) and smaller
    #: files; same rows and values either way (docs/performance.md)
    archive_parquet: str = "lean"
    #: 1 = a fetched cycle's events pass (ADR 028) writes the archive in a thread while it computes
    #: the marts (both mostly outside the GIL), and returns once both are written (ADR 046); 0 = one
    #: after the other
    events_pass_archive_thread: int = 0
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)

    def __post_init__(self) -> None:
        # a typo in the environment stops the job at its start, not at its first busy cycle
        if self.archive_parquet not in ARCHIVE_PARQUET:
            raise ValueError(f"LIQSTREAM_ARCHIVE_PARQUET={self.archive_parquet!r}: use one of "
                             f"{', '.join(ARCHIVE_PARQUET)}")
        if self.events_pass_archive_thread not in (0, 1):
            raise ValueError(f"LIQSTREAM_EVENTS_PASS_ARCHIVE_THREAD={self.events_pass_archive_thread!r}: use 0 or 1")
        if self.dq_gx_warm_up not in ("caught_up", "start"):
            raise ValueError(f"LIQSTREAM_DQ_GX_WARM_UP={self.dq_gx_warm_up!r}: use caught_up or start")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> JobSettings:
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {"kafka": KafkaSettings.from_env(env), "alerts": AlertSettings.from_env(env)}
        for f in fields(cls):
            key = "LIQSTREAM_" + f.name.upper()
            if f.name not in ("kafka", "alerts") and env.get(key):
                t = str(f.type)
                values[f.name] = Path(env[key]) if "Path" in t else env[key] if t == "str" else int(env[key])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> JobSettings:
        return replace(self, **changes)
