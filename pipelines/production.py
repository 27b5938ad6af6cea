"""Production driver: the same transforms, unbounded, on Flink or Dataflow (docs/deployment.md).

    ReadFromKafka x 4 event topics (+ the .dlq topics)      <- Java expansion service (Beam IO jar)
      -> DecodeKafkaValues (AvroDecoder; undecodable -> tagged ``rejects``)
      -> WindowIntoBars (event timestamps, 1-minute windows, watermark + late re-firings)
      -> RecordsToBatches -> ComputeBars                    -> bars_1m          (one pane per firing)
      -> liquidations per (exchange, symbol, side, minute)  -> liquidations_1m
      bars_1m -> AnalyticsInSlidingWindows                  -> bars_1m_symbol, cascades,
                 (the composites of pipelines.transforms.graph,  cascade_alerts, oi_deltas, contagion
                  each over sliding windows of its lookback)
      every mart -> sink (ParquetWindowSink: one Parquet file per mart, window and pane)
    loader (the ONE DuckDB writer): load_window_files() upserts the files, latest pane wins.

Why sliding windows for the analytics: the local jobs re-run them over "touched minutes plus
``AnalyticsConfig.lookback_minutes()``" read back from the mart (ADR 003). On an unbounded runner
the same input is a sliding window of ``lookback + period`` minutes every ``period`` minutes, and
only the rows dated in the window's last period are emitted (``KeepWindowTail``): each row comes
from exactly one window, which holds the row's whole lookback, so it equals the backfill's row.

Why files + a loader: DuckDB has one writer and its file cannot live on object storage for writes;
Flink/Dataflow workers are many processes on many hosts. Workers write immutable Parquet files
(object storage in production, a directory here) and one loader process upserts them into the
warehouse in short transactions, so analysts keep reading (read-only connections) meanwhile.

``--source local-ranges`` swaps ReadFromKafka for ``ReadKafkaRangeBatches`` (bounded Kafka offset
ranges read in a DoFn, kafka-python), so the identical downstream graph runs here, where the Java
expansion service cannot be downloaded (ARCHITECTURE.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import Duration
from apache_beam.utils.windowed_value import WindowedValue

from connectors.avro import AvroDecoder, SchemaDecodeError
from connectors.config import KafkaSettings
from connectors.normalize import TOPIC_EVENT, TOPICS
from connectors.plausibility import implausibility
from pipelines.liquidations import LIQUIDATIONS_1M_SCHEMA, LiquidationStats, _MinuteRow
from pipelines.transforms.bars import ComputeBars, WindowIntoBars, records_to_batches, ts_to_micros
from pipelines.transforms.cascades import DetectCascades
from pipelines.transforms.config import MINUTE_US, AnalyticsConfig
from pipelines.transforms.contagion import ScoreContagion
from pipelines.transforms.oi import ComputeOIDeltas
from pipelines.transforms.panel import ComputeSymbolBars

log = logging.getLogger(__name__)

SOURCES = ("kafka", "local-ranges")
REJECTS = "rejects"
#: consumer group of the production job (only used for offset commits on checkpoint finalize:
#: Beam's KafkaIO assigns partitions itself and keeps its positions in the runner's checkpoints)
DEFAULT_GROUP_ID = "liqstream-production"
#: env var naming a running expansion service (host:port) for ReadFromKafka; unset = Beam starts
#: the Java IO expansion service jar itself (downloads it once, needs Java)
EXPANSION_SERVICE_ENV = "LIQSTREAM_KAFKA_EXPANSION_SERVICE"
DEFAULT_ANALYTICS_PERIOD_MINUTES = 5

#: natural key of every mart (the PRIMARY KEY of pipelines/marts/*.sql): the loader upserts by it
MART_KEYS: dict[str, tuple[str, ...]] = {
    "bars_1m": ("exchange", "symbol", "minute_ts"),
    "liquidations_1m": ("exchange", "symbol", "side", "minute"),
    "bars_1m_symbol": ("base", "minute_ts"),
    "cascades": ("episode_id",),
    "cascade_alerts": ("episode_id", "severity_level"),
    "oi_deltas": ("level", "exchange", "symbol", "as_of_ts", "span"),
    "contagion": ("base", "as_of_ts", "window_minutes"),
    REJECTS: ("topic", "partition", "offset"),
}
MARTS = tuple(MART_KEYS)
_SCHEMAS = {"liquidations_1m": LIQUIDATIONS_1M_SCHEMA}


# ---------------------------------------------------------------------------------------------
# source: Kafka records -> (event_type, record) | rejects
# ---------------------------------------------------------------------------------------------
class KafkaRecord(NamedTuple):
    """The fields of a ReadFromKafka(with_metadata=True) element this job uses (a ``beam.Row``
    there; this tuple for local sources and tests). ``timestamp`` in epoch milliseconds."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


def consumer_config(settings: KafkaSettings, group_id: str = DEFAULT_GROUP_ID) -> dict[str, str]:
    """Java Kafka consumer properties from the same ``KAFKA_*`` settings the local jobs use.

    The Java client takes a JAAS line instead of username/password, and PEM trust material via
    ``ssl.truststore.type=PEM``. A client certificate for mTLS must be a PEM file holding the
    certificate chain AND the private key (``ssl.keystore.type=PEM``): set both
    KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION to that file.
    """
    cfg = {
        "bootstrap.servers": settings.bootstrap_servers,
        "security.protocol": settings.security_protocol,
        "client.id": settings.client_id,
        "group.id": group_id,
        # first start of a new job: read the retained history (restarts resume from checkpoints)
        "auto.offset.reset": "earliest",
        "request.timeout.ms": str(settings.request_timeout_ms),
    }
    if settings.sasl_mechanism:
        module = ("org.apache.kafka.common.security.plain.PlainLoginModule"
                  if settings.sasl_mechanism.upper() == "PLAIN"
                  else "org.apache.kafka.common.security.scram.ScramLoginModule")
        cfg["sasl.mechanism"] = settings.sasl_mechanism
        cfg["sasl.jaas.config"] = (f'{module} required username="{settings.sasl_username or ""}" '
                                   f'password="{settings.sasl_password or ""}";')
    if settings.ssl_ca_location:
        cfg["ssl.truststore.type"] = "PEM"
        cfg["ssl.truststore.location"] = settings.ssl_ca_location
    if settings.ssl_certificate_location:
        if settings.ssl_key_location and settings.ssl_key_location != settings.ssl_certificate_location:
            raise ValueError("the Java Kafka client needs the client certificate and its key in ONE PEM file: "
                             "point KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION at the same file")
        cfg["ssl.keystore.type"] = "PEM"
        cfg["ssl.keystore.location"] = settings.ssl_certificate_location
    return cfg


def kafka_read_transforms(
    settings: KafkaSettings,
    expansion_service: str | None = None,
    read_dead_letters: bool = True,
    group_id: str = DEFAULT_GROUP_ID,
    partition_poll_seconds: int | None = 300,
) -> dict[str, beam.PTransform]:
    """One ``ReadFromKafka`` per event topic (+ one for every .dlq topic), not yet expanded.

    CreateTime timestamps: the producer stamps each record with its event time
    (``connectors.kafka.producer``), so the source watermark follows event time per partition;
    WindowIntoBars then re-stamps each element with its exact event_time in microseconds.
    Expansion (the Java service) happens only when a transform is applied to a pipeline.
    ``partition_poll_seconds``: how often KafkaIO looks for partitions added to the topics
    (None: the partitions found at start only).
    """
    from apache_beam.io.kafka import ReadFromKafka

    cfg = consumer_config(settings, group_id)
    service = expansion_service or os.environ.get(EXPANSION_SERVICE_ENV) or None
    topics: dict[str, list[str]] = {topic: [topic] for topic in TOPICS.values()}
    if read_dead_letters:
        from connectors.kafka.topics import all_topics

        topics["dead_letters"] = [t for t in all_topics() if t.endswith(".dlq")]
    return {
        name: ReadFromKafka(
            consumer_config=cfg,
            topics=names,
            with_metadata=True,
            timestamp_policy=ReadFromKafka.create_time_policy,
            commit_offset_in_finalize=True,
            dynamic_read_poll_interval_seconds=partition_poll_seconds,
            expansion_service=service,
        )
        for name, names in topics.items()
    }


def _key_exchange(key: bytes | None) -> str | None:
    return key.decode(errors="replace").split(":", 1)[0] if key else None


def _reject_row(rec: Any, event_type: str | None, reason: str, detail: str) -> dict[str, Any]:
    return {
        "topic": rec.topic, "partition": int(rec.partition), "offset": int(rec.offset),
        "exchange": _key_exchange(rec.key), "event_type": event_type, "reason": reason, "detail": detail[:500],
        "source": f"{rec.topic}[{rec.partition}]@{rec.offset}",
        "received_at": dt.datetime.fromtimestamp((rec.timestamp or 0) / 1000, dt.UTC),
        "raw": rec.value or b"",
    }


class DecodeKafkaValues(beam.DoFn):
    """Kafka records of the event topics -> ``(event_type, record)``; a value that does not decode
    goes to the tagged output ``rejects`` with its position (never dropped, never fatal).
    Records of a ``.dlq`` topic are dead letters: decoded into rejects rows as they are."""

    def __init__(self) -> None:
        self._decoded = Metrics.counter("liqstream", "records_read")
        self._rejected = Metrics.counter("liqstream", "records_rejected")

    def setup(self) -> None:
        self._decoders = {et: AvroDecoder(et) for et in TOPICS}
        self._dead = AvroDecoder("dead_letter")

    def process(self, rec: Any) -> Iterator[Any]:
        event_type = TOPIC_EVENT.get(rec.topic)
        if event_type is None:
            self._rejected.inc()
            yield pvalue.TaggedOutput(REJECTS, self._dead_letter(rec))
            return
        try:
            record = self._decoders[event_type].decode(rec.value or b"")
        except SchemaDecodeError as exc:
            self._rejected.inc()
            yield pvalue.TaggedOutput(REJECTS, _reject_row(rec, event_type, "decode_error", str(exc)))
            return
        why = implausibility(event_type, record)  # what no market produces never reaches a sink (ADR 010)
        if why is not None:
            self._rejected.inc()
            yield pvalue.TaggedOutput(REJECTS, _reject_row(rec, event_type, *why))
            return
        self._decoded.inc()
        yield event_type, record

    def _dead_letter(self, rec: Any) -> dict[str, Any]:
        try:
            dead = self._dead.decode(rec.value or b"")
        except SchemaDecodeError as exc:
            return _reject_row(rec, None, "decode_error", str(exc))
        row = _reject_row(rec, dead.get("event_type"), dead.get("reason") or "dead_letter", dead.get("detail") or "")
        row.update({k: dead[k] for k in ("exchange", "source", "raw") if dead.get(k) is not None})
        if dead.get("received_at") is not None:  # epoch micros in the dead_letter schema
            row["received_at"] = dt.datetime.fromtimestamp(dead["received_at"] / 1e6, dt.UTC)
        return row


class _BatchRecords(beam.DoFn):
    """RecordBatches of the local range reader -> (event_type, record), position columns dropped."""

    def process(self, batch: pa.RecordBatch) -> Iterator[tuple[str, dict]]:
        from schemas.arrow import EVENT_TYPE_META

        event_type = batch.schema.metadata[EVENT_TYPE_META].decode()
        for row in batch.to_pylist():
            for col in ("_topic", "_partition", "_offset"):
                row.pop(col, None)
            yield event_type, row


# ---------------------------------------------------------------------------------------------
# the graph body: (event_type, record) -> every mart
# ---------------------------------------------------------------------------------------------
def _total_events(row: dict) -> int:
    return (row["trade_count"] or 0) + (row["liquidation_events"] or 0) + (row["oi_events"] or 0) + (
        row["funding_events"] or 0) + (row.get("depth_events") or 0)


class LatestBarPerMinute(beam.PTransform):
    """Keeps one bars_1m row per (exchange, symbol, minute) in each window.

    Bars fire once on time and again for each late event (accumulating panes), so a sliding
    window can receive several versions of a minute; every later pane holds a superset of the
    events, so the version with the most events is the newest.
    """

    def expand(self, bars: beam.PCollection) -> beam.PCollection:
        return (
            bars
            | "ByMinute" >> beam.Map(lambda r: ((r["exchange"], r["symbol"], ts_to_micros(r["minute_ts"])), r))
            | "Newest" >> beam.CombinePerKey(lambda rows: max(rows, key=_total_events, default=None))
            | "Rows" >> beam.Values()
        )


def _row_time_us(mart: str, row: dict) -> int:
    """The instant that dates a row of an analytic mart (which window's tail emits it)."""
    if mart == "cascades":
        # an episode is final when its quiet gap closes it; while open, it changes with its
        # last active minute (end_ts is exclusive: the close of that minute)
        ts = row["closed_ts"] if row.get("closed_ts") is not None else row["end_ts"]
        return ts_to_micros(ts) - 1
    if mart == "cascade_alerts":
        return ts_to_micros(row["minute_ts"])
    if mart in ("oi_deltas", "contagion"):
        return ts_to_micros(row["as_of_ts"])
    return ts_to_micros(row["minute_ts"])  # bars_1m_symbol


class KeepWindowTail(beam.DoFn):
    """Emits only the rows dated in the last ``period`` of their sliding window.

    Sliding windows overlap, so the same row is computed by ``size / period`` windows; the one
    whose last period holds the row's time has the complete lookback before it (the window
    size is ``lookback + period``): that copy is the one kept, the others are context.
    """

    def __init__(self, mart: str, period_us: int) -> None:
        self.mart = mart
        self.period_us = period_us

    def process(self, row: dict, win=beam.DoFn.WindowParam) -> Iterator[dict]:
        end_us = win.end.micros
        if end_us - self.period_us <= _row_time_us(self.mart, row) < end_us:
            yield row


class AnalyticsInSlidingWindows(beam.PTransform):
    """bars_1m (fixed 1-minute windows) -> the analytic marts of pipelines.transforms.graph.

    Each analytic runs over its own sliding window (its lookback from
    ``AnalyticsConfig.lookback_minutes()`` + ``period``), every ``period`` minutes, so the
    Beam state a runner keeps is bounded by the longest lookback, not the job's age.
    """

    def __init__(self, config: AnalyticsConfig, period_minutes: int = DEFAULT_ANALYTICS_PERIOD_MINUTES) -> None:
        super().__init__()
        self.config = config
        self.period_minutes = period_minutes

    def _windowed(self, bars: beam.PCollection, name: str, lookback_minutes: int) -> beam.PCollection:
        size_s = (lookback_minutes + self.period_minutes) * 60
        return (
            bars
            | f"{name}Window" >> beam.WindowInto(
                window.SlidingWindows(size_s, self.period_minutes * 60),
                # a late bar re-fires the windows holding it; their rows are complete re-computations
                trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
                accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
                allowed_lateness=Duration(seconds=self.config.allowed_lateness_s),
            )
            | f"{name}LatestBars" >> LatestBarPerMinute()
        )

    def expand(self, bars: beam.PCollection) -> dict[str, beam.PCollection]:
        cfg, lookback = self.config, self.config.lookback_minutes()
        period_us = self.period_minutes * MINUTE_US
        out: dict[str, beam.PCollection] = {}
        out["bars_1m_symbol"] = (self._windowed(bars, "SymbolBars", lookback["bars_1m_symbol"])
                                 | "ComputeSymbolBars" >> ComputeSymbolBars(cfg))
        # no oi_reference side input here: the window itself holds the oi_reference_minutes of
        # bars the thresholds scale with (as in a backfill); docs/deployment.md discusses the cost
        cascades_minutes = lookback["cascades"] + lookback.get("cascades_oi_reference", 0)
        cascades = self._windowed(bars, "Cascades", cascades_minutes) | "DetectCascades" >> DetectCascades(cfg)
        out["cascades"], out["cascade_alerts"] = cascades["cascades"], cascades["cascade_alerts"]
        out["oi_deltas"] = self._windowed(bars, "OIDeltas", lookback["oi_deltas"]) | "ComputeOIDeltas" >> ComputeOIDeltas(cfg)
        out["contagion"] = (self._windowed(bars, "Contagion", lookback["contagion"])
                            | "ScoreContagion" >> ScoreContagion(cfg))
        return {name: rows | f"Tail_{name}" >> beam.ParDo(KeepWindowTail(name, period_us)) for name, rows in out.items()}


class BatchPerWindow(beam.DoFn):
    """(event_type, record) -> one Arrow RecordBatch per (window, event type) per bundle.

    Used instead of ``RecordsToBatches`` (BatchElements): with one-minute windows its adaptive
    sizing sees a handful of elements per window and spends more time fitting batch sizes than
    the bars step spends aggregating. A bundle's records of one minute and type become one batch
    (at most ``max_rows``), emitted into the window they came from.
    """

    def __init__(self, max_rows: int = 50_000) -> None:
        self.max_rows = max_rows

    def start_bundle(self) -> None:
        self._buffers: dict[tuple[Any, str], list[dict]] = {}

    def process(self, element: tuple[str, dict], win=beam.DoFn.WindowParam) -> Iterator[pa.RecordBatch]:
        event_type, record = element
        buf = self._buffers.setdefault((win, event_type), [])
        buf.append(record)
        if len(buf) >= self.max_rows:
            del self._buffers[(win, event_type)]
            yield records_to_batches(event_type, buf)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for (win, event_type), buf in self._buffers.items():
            yield WindowedValue(records_to_batches(event_type, buf), win.max_timestamp(), [win])
        self._buffers = {}


class UnboundedMarts(beam.PTransform):
    """(event_type, record) elements of an unbounded source -> {mart name: rows}.

    The bars step is the bounded jobs' ComputeBars over Arrow batches (``BatchPerWindow``: a
    batch never mixes minutes).
    """

    def __init__(self, config: AnalyticsConfig, analytics_period_minutes: int = DEFAULT_ANALYTICS_PERIOD_MINUTES) -> None:
        super().__init__()
        self.config = config
        self.analytics_period_minutes = analytics_period_minutes

    def expand(self, events: beam.PCollection) -> dict[str, beam.PCollection]:
        windowed = events | "WindowIntoBars" >> WindowIntoBars(self.config)
        bars = windowed | "ToBatches" >> beam.ParDo(BatchPerWindow()) | "ComputeBars" >> ComputeBars(self.config)
        liquidations = (
            windowed
            | "Liquidations" >> beam.Filter(lambda e: e[0] == "liquidation")
            # the same combine as pipelines.liquidations.LiquidationsPerMinute, but in the windows
            # (and lateness) of the bars instead of re-windowing with the default trigger
            | "KeyByVenueSymbolSide" >> beam.Map(lambda e: ((e[1]["exchange"], e[1]["symbol"], e[1]["side"]), e[1]))
            | "SumPerMinute" >> beam.CombinePerKey(LiquidationStats())
            | "LiquidationRow" >> beam.ParDo(_MinuteRow())
        )
        analytics = bars | "Analytics" >> AnalyticsInSlidingWindows(self.config, self.analytics_period_minutes)
        return {"bars_1m": bars, "liquidations_1m": liquidations, **analytics}


# ---------------------------------------------------------------------------------------------
# sink: Parquet files per mart, window and pane; the loader is the single DuckDB writer
# ---------------------------------------------------------------------------------------------
class MartSink(Protocol):
    def for_mart(self, name: str) -> beam.PTransform: ...


_FILE = re.compile(r"^w(\d+)-p(\d+)-[0-9a-f]+\.parquet$")


class _WriteWindowFiles(beam.DoFn):
    """Buffers a bundle's rows per (window, pane) and writes one immutable Parquet file each.

    File name ``w<window end micros>-p<pane index>-<uuid>.parquet``: the loader applies files in
    (window end, pane) order, so a later, more complete pane of a window replaces an earlier one.
    A retried bundle writes its rows again under a new uuid; the loader's keyed upsert makes that
    harmless (same rows, same keys).
    """

    def __init__(self, root: str, mart: str, schema: pa.Schema | None = None) -> None:
        self.root = root
        self.mart = mart
        self.schema = schema

    def setup(self) -> None:
        from pyarrow import fs

        self._fs, base = fs.FileSystem.from_uri(self.root) if "://" in self.root else (fs.LocalFileSystem(),
                                                                                       str(Path(self.root).resolve()))
        self._dir = f"{base.rstrip('/')}/{self.mart}"
        self._fs.create_dir(self._dir, recursive=True)

    def start_bundle(self) -> None:
        self._rows: dict[tuple[int, int], list[dict]] = {}

    def process(self, row: dict, win=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam) -> None:
        end = win.end.micros if isinstance(win, window.IntervalWindow) else 0  # 0: global window
        self._rows.setdefault((end, pane.index if pane else 0), []).append(row)

    def finish_bundle(self) -> None:
        for (end, pane), rows in self._rows.items():
            table = pa.Table.from_pylist([_jsonable(r) for r in rows], schema=self.schema)
            path = f"{self._dir}/w{end}-p{pane}-{uuid.uuid4().hex}.parquet"
            with self._fs.open_output_stream(path) as out:
                pq.write_table(table, out)
        self._rows = {}


def _jsonable(row: dict) -> dict:
    """Dict values (cascades.venue_share) as JSON text, the way the mart stores them."""
    import json

    return {k: json.dumps(v, sort_keys=True) if isinstance(v, dict) else v for k, v in row.items()}


class ParquetWindowSink:
    """Sink of every mart: ``<root>/<mart>/w<window end>-p<pane>-<uuid>.parquet``.

    ``root`` is a local directory or any pyarrow filesystem URI (``gs://bucket/liqstream``,
    ``s3://...``): in production the workers write to object storage and the loader reads it.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = str(root)

    def for_mart(self, name: str) -> beam.PTransform:
        # liquidations_1m rows carry epoch-micros times (pipelines.liquidations): its schema says
        # they are timestamps; the other marts' types are inferred and cast by the loader
        return beam.ParDo(_WriteWindowFiles(self.root, name, _SCHEMAS.get(name)))


def build_unbounded_pipeline(
    p: beam.Pipeline,
    kafka_settings: KafkaSettings,
    config: AnalyticsConfig,
    sink: MartSink,
    *,
    source: str = "kafka",
    ranges: Sequence[Any] | None = None,
    records: beam.PCollection | None = None,
    expansion_service: str | None = None,
    analytics_period_minutes: int = DEFAULT_ANALYTICS_PERIOD_MINUTES,
) -> dict[str, beam.PCollection]:
    """Builds the production graph on ``p``; returns the mart PCollections (already sunk).

    ``source``: ``kafka`` (ReadFromKafka, the unbounded production source), ``local-ranges``
    (``ranges``: OffsetRanges read by ReadKafkaRangeBatches, bounded, runs here) or ``records``
    (a PCollection of KafkaRecord-like elements given by the caller, e.g. a test).
    """
    if records is not None:
        decoded = records | "Decode" >> beam.ParDo(DecodeKafkaValues()).with_outputs(REJECTS, main="events")
        events, rejects = decoded.events, decoded[REJECTS]
    elif source == "kafka":
        reads = kafka_read_transforms(kafka_settings, expansion_service)
        kafka_records = [p | f"Read_{name}" >> read for name, read in reads.items()]
        merged = kafka_records | "AllTopics" >> beam.Flatten()
        decoded = merged | "Decode" >> beam.ParDo(DecodeKafkaValues()).with_outputs(REJECTS, main="events")
        events, rejects = decoded.events, decoded[REJECTS]
    elif source == "local-ranges":
        from connectors.kafka.beam_source import REJECTS as RANGE_REJECTS
        from connectors.kafka.beam_source import ReadKafkaRangeBatches

        read = p | "ReadRanges" >> ReadKafkaRangeBatches(kafka_settings, list(ranges or []))
        events = read["batches"] | "BatchRecords" >> beam.ParDo(_BatchRecords())
        rejects = read[RANGE_REJECTS] | "RejectTimes" >> beam.Map(_received_at_datetime)
    else:
        raise ValueError(f"unknown source {source!r}: one of {SOURCES}")

    marts = dict(events | "Marts" >> UnboundedMarts(config, analytics_period_minutes))
    marts[REJECTS] = rejects
    for name, rows in marts.items():
        rows | f"Sink_{name}" >> sink.for_mart(name)
    return marts


def _received_at_datetime(row: dict) -> dict:
    """The range reader dates rejects in epoch micros; the file sink writes timestamps."""
    v = row.get("received_at")
    if isinstance(v, int):
        row = {**row, "received_at": dt.datetime.fromtimestamp(v / 1e6, dt.UTC)}
    return row


# ---------------------------------------------------------------------------------------------
# loader: the single DuckDB writer
# ---------------------------------------------------------------------------------------------
_LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS production_loaded_files (
    path        VARCHAR PRIMARY KEY,
    mart        VARCHAR NOT NULL,
    window_end  BIGINT NOT NULL,
    pane        INTEGER NOT NULL,
    loaded_at   TIMESTAMPTZ NOT NULL
)"""


def list_window_files(root: str | Path) -> dict[str, list[tuple[int, int, str]]]:
    """{mart: [(window end micros, pane, path)]} sorted in apply order."""
    from pyarrow import fs

    root = str(root)
    filesystem, base = fs.FileSystem.from_uri(root) if "://" in root else (fs.LocalFileSystem(),
                                                                           str(Path(root).resolve()))
    out: dict[str, list[tuple[int, int, str]]] = {}
    for mart in MARTS:
        infos = filesystem.get_file_info(fs.FileSelector(f"{base.rstrip('/')}/{mart}", allow_not_found=True))
        files = []
        for info in infos:
            m = _FILE.match(info.base_name)
            if info.type == fs.FileType.File and m:
                files.append((int(m[1]), int(m[2]), info.path))
        out[mart] = sorted(files)
    return out


def load_window_files(con: Any, root: str | Path) -> dict[str, int]:
    """Upserts the sink's files not loaded yet into the marts, in ONE transaction; returns rows per mart.

    Within a load, per natural key the row of the latest (window end, pane) wins; the files
    loaded are recorded in ``production_loaded_files``, so a re-run loads nothing twice. The
    rows' time range is added to ``job_state.dq_from_us`` for the next gate (``gate_load``).
    """
    import pyarrow.fs  # noqa: F401  (the filesystem registry, for object-storage URIs)

    from pipelines import warehouse

    warehouse.migrate(con)
    con.execute(_LEDGER_DDL)
    done = {p for (p,) in con.execute("SELECT path FROM production_loaded_files").fetchall()}
    from pipelines.jobs.backfill import TIME_COLUMNS

    loaded: dict[str, int] = {}
    min_time_us: int | None = None
    max_time_us: int | None = None
    con.execute("BEGIN")
    try:
        for mart, files in list_window_files(root).items():
            new = [f for f in files if f[2] not in done]
            if not new:
                continue
            tables = []
            for end, pane, path in new:
                t = _read_file(root, path)
                tables.append(t.append_column("_w", pa.array([end] * t.num_rows, pa.int64()))
                              .append_column("_p", pa.array([pane] * t.num_rows, pa.int32())))
            batch = pa.concat_tables(tables, promote_options="permissive")
            con.register("_production_batch", batch)
            if mart in TIME_COLUMNS:  # the rows' own times: what the DQ gate and a quarantine cover
                lo, hi = con.execute(f"SELECT epoch_us(min({TIME_COLUMNS[mart]})), epoch_us(max({TIME_COLUMNS[mart]})) "
                                     "FROM _production_batch").fetchone()
                if lo is not None:
                    min_time_us = lo if min_time_us is None else min(min_time_us, lo)
                    max_time_us = hi if max_time_us is None else max(max_time_us, hi)
            keys = ", ".join(f'"{k}"' for k in MART_KEYS[mart])
            con.execute(
                f"INSERT OR REPLACE INTO {mart} BY NAME SELECT * EXCLUDE (_w, _p, _rn) FROM ("
                f"SELECT *, row_number() OVER (PARTITION BY {keys} ORDER BY _w DESC, _p DESC) AS _rn "
                f"FROM _production_batch) WHERE _rn = 1"
            )
            con.unregister("_production_batch")
            loaded[mart] = batch.num_rows
            now = dt.datetime.now(dt.UTC)
            con.executemany("INSERT INTO production_loaded_files VALUES (?, ?, ?, ?, ?)",
                            [[path, mart, end, pane, now] for end, pane, path in new])
        if min_time_us is not None:
            pending = warehouse.get_state(con, "dq_from_us")
            warehouse.set_state(con, "dq_from_us", min_time_us if pending is None else min(pending, min_time_us))
            # as in the local stream: the latest time committed (a failed gate quarantines up to it)
            wm = warehouse.get_state(con, "watermark_us")
            warehouse.set_state(con, "watermark_us", max_time_us if wm is None else max(wm, max_time_us))
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return loaded


def gate_load(con: Any, loaded: dict[str, int]) -> Any:
    """Records the load in ``pipeline_runs`` and runs the local jobs' data-quality gate over the rows
    loaded since the last gate (pipelines.jobs.load.run_gate): a critical failure quarantines
    them. Returns the LoadResult (``dq_passed``)."""
    from pipelines.jobs.load import CROSS_MART_SUITES, DQ_SUITES, LoadResult, run_gate

    now = dt.datetime.now(dt.UTC)
    run_id = f"production-load-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    result = LoadResult(run_id=run_id, status="ok" if loaded else "empty", rows_written=sum(loaded.values()),
                        rejects_in=loaded.get(REJECTS, 0))
    con.execute("INSERT INTO pipeline_runs VALUES (?, 'production-load', ?, ?, ?, NULL, ?, ?, NULL, NULL, NULL)",
                [run_id, now, dt.datetime.now(dt.UTC), result.status, result.rejects_in, result.rows_written])
    run_gate(con, run_id, result, [s for s in DQ_SUITES if s not in CROSS_MART_SUITES])
    return result


def _read_file(root: str | Path, path: str) -> pa.Table:
    from pyarrow import fs

    root = str(root)
    filesystem = fs.FileSystem.from_uri(root)[0] if "://" in root else fs.LocalFileSystem()
    return pq.read_table(path, filesystem=filesystem)


# ---------------------------------------------------------------------------------------------
# command line: python -m pipelines.production run|load
# ---------------------------------------------------------------------------------------------
_ENV_REF = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")


def options_from_yaml(path: str | Path, environ: dict[str, str] | None = None) -> list[str]:
    """A runner options file of infra/runner/ -> Beam flags (``${VAR}`` / ``${VAR:-default}``
    expanded from the environment, so secrets and hosts stay out of the file)."""
    import yaml

    env = os.environ if environ is None else environ
    doc = yaml.safe_load(Path(path).read_text())
    flags = []
    for key, value in (doc.get("pipeline_options") or {}).items():
        if isinstance(value, bool):
            if value:
                flags.append(f"--{key}")
            continue
        if isinstance(value, list):
            for item in value:
                flags.append(f"--{key}={_expand(str(item), env)}")
            continue
        expanded = _expand(str(value), env)
        if expanded != "":  # ${VAR:-} left empty: the option is not set
            flags.append(f"--{key}={expanded}")
    return flags


def _expand(text: str, env: dict[str, str] | os._Environ) -> str:
    def sub(m: re.Match) -> str:
        if m[1] in env:
            return env[m[1]]
        if m[2] is not None:
            return m[2]
        raise KeyError(f"environment variable {m[1]} is not set (used in the runner options file)")

    return _ENV_REF.sub(sub, text)


def main(argv: Iterable[str] | None = None) -> int:
    from apache_beam.options.pipeline_options import PipelineOptions

    parser = argparse.ArgumentParser(prog="python -m pipelines.production", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="build and submit the unbounded pipeline (extra flags go to Beam)")
    run.add_argument("--source", choices=SOURCES, default="kafka")
    run.add_argument("--sink-root", required=True, help="directory or gs:// / s3:// URI for the mart files")
    run.add_argument("--options-file", help="infra/runner/flink.yaml or dataflow.yaml")
    run.add_argument("--analytics-period-minutes", type=int, default=DEFAULT_ANALYTICS_PERIOD_MINUTES)
    run.add_argument("--expansion-service", help=f"host:port of a Kafka expansion service (env {EXPANSION_SERVICE_ENV})")
    load = sub.add_parser("load", help="the single DuckDB writer: upsert the sink's new files")
    load.add_argument("--sink-root", required=True)
    load.add_argument("--db", default=os.environ.get("LIQSTREAM_DB", "data/liqstream.duckdb"))
    load.add_argument("--no-dq", action="store_true")
    args, beam_flags = parser.parse_known_args(list(argv) if argv is not None else None)

    if args.command == "load":
        from pipelines import warehouse

        con = warehouse.connect(args.db)
        try:
            loaded = load_window_files(con, args.sink_root)
            passed = True if args.no_dq else gate_load(con, loaded).dq_passed
        finally:
            con.close()
        log.info("loaded %s rows per mart; data quality %s", loaded, "passed" if passed else "FAILED (quarantined)")
        return 0 if passed else 3  # 3: the CLI's code for a failed data-quality gate

    flags = (options_from_yaml(args.options_file) if args.options_file else []) + beam_flags
    settings = KafkaSettings.from_env()
    config = AnalyticsConfig.from_env()
    ranges = None
    if args.source == "local-ranges":
        from connectors.kafka.beam_source import ReadKafkaRangeBatches  # noqa: F401  (fail early if missing)
        from connectors.kafka.reader import log_bounds, plan_ranges
        from connectors.kafka.topics import all_topics

        ranges = plan_ranges(log_bounds(settings, all_topics()), {}, 200_000)
    options = PipelineOptions(flags)
    with beam.Pipeline(options=options) as p:
        build_unbounded_pipeline(p, settings, config, ParquetWindowSink(args.sink_root), source=args.source,
                                 ranges=ranges, expansion_service=args.expansion_service,
                                 analytics_period_minutes=args.analytics_period_minutes)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    raise SystemExit(main())
