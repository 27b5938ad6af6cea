"""Beam source for bounded Kafka offset ranges (the local driver of every job).

Offset ranges are tiny descriptors, so they may go through ``beam.Create``;
the records themselves are read inside the DoFn (ARCHITECTURE.md: Create
pickles its elements, reading in a DoFn does not). Production runs the same
downstream graph on ``ReadFromKafka`` instead (pipelines/production.py, docs/deployment.md).
"""

from __future__ import annotations

import time
from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue

from connectors.avro import AvroDecoder, SchemaDecodeError
from connectors.avro_batch import BatchDecoder
from connectors.config import KafkaSettings
from connectors.kafka.rdkafka_reader import range_reader
from connectors.kafka.reader import OffsetRange
from connectors.normalize import TOPICS
from connectors.plausibility import implausibility, implausible_rows

#: tag of the rejects output: records that could not be decoded, and dead letters read from DLQ topics
REJECTS = "rejects"
_TOPIC_EVENT = {topic: et for et, topic in TOPICS.items()}


class ReadDecodedRanges(beam.DoFn):
    """(OffsetRange) -> decoded records, timestamped by event time, tagged by event type.

    Main topics yield to the output named after the event type; a value that
    cannot be decoded, and every dead letter read from a ``.dlq`` topic, goes to
    :data:`REJECTS` as a row with its topic/partition/offset, so it is counted
    and stored, never dropped and never fatal.
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._reader: Any = None  # a RangeReader or a ConfluentRangeReader (KafkaSettings.reader_client)
        self._decoders: dict[str, AvroDecoder] = {}
        self._read = Metrics.counter("liqstream", "records_read")
        self._rejected = Metrics.counter("liqstream", "records_rejected")

    def setup(self) -> None:
        self._reader = range_reader(self._settings)
        self._decoders = {et: AvroDecoder(et) for et in TOPICS}
        self._dead = AvroDecoder("dead_letter")

    def teardown(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def process(self, rng: OffsetRange):
        assert self._reader is not None
        event_type = _TOPIC_EVENT.get(rng.topic)
        for rec in self._reader.read(rng):
            self._read.inc()
            where = {"topic": rng.topic, "partition": rng.partition, "offset": rec.offset}
            if event_type is None:  # a dead-letter topic
                self._rejected.inc()
                yield pvalue.TaggedOutput(REJECTS, self._dead_letter_row(rec.value, where))
                continue
            try:
                record = self._decoders[event_type].decode(rec.value)
            except SchemaDecodeError as exc:
                self._rejected.inc()
                yield pvalue.TaggedOutput(REJECTS, _reject_row(rng, rec.offset, _key_exchange(rec.key), event_type,
                                                               "decode_error", str(exc), rec.timestamp, rec.value))
                continue
            why = implausibility(event_type, record)  # as ReadRangeBatches._plausible_batch, row by row
            if why is not None:
                self._rejected.inc()
                yield pvalue.TaggedOutput(REJECTS, _reject_row(rng, rec.offset, record.get("exchange"), event_type,
                                                               *why, rec.timestamp, rec.value))
                continue
            yield pvalue.TaggedOutput(event_type, TimestampedValue(record, record["event_time"] / 1e6))

    def _dead_letter_row(self, value: bytes | None, where: dict[str, Any]) -> dict[str, Any]:
        try:
            d = self._dead.decode(value or b"")
        except SchemaDecodeError as exc:
            return {**where, "exchange": None, "event_type": None, "reason": "decode_error", "detail": str(exc)[:500],
                    "source": None, "received_at": 0, "raw": value or b""}
        return {**where, **d}


def _reject_row(rng: OffsetRange, offset: int, exchange: str | None, event_type: str, reason: str, detail: str,
                kafka_ts: int | None, raw: bytes | None) -> dict[str, Any]:
    """A rejects row for a record of a main topic (a dead-letter topic's rows come from the letter)."""
    return {"topic": rng.topic, "partition": rng.partition, "offset": offset, "exchange": exchange,
            "event_type": event_type, "reason": reason, "detail": detail[:500],
            "source": f"{rng.topic}[{rng.partition}]@{offset}", "received_at": (kafka_ts or 0) * 1000, "raw": raw or b""}


def _key_exchange(key: bytes | None) -> str | None:
    if not key:
        return None
    return key.decode(errors="replace").split(":", 1)[0]


class ReadRangeBatches(ReadDecodedRanges):
    """(OffsetRange) -> pyarrow RecordBatches of decoded events, one event type per batch.

    The vectorized source: the values of up to ``batch_size`` records are decoded together into
    Arrow columns (:class:`~connectors.avro_batch.BatchDecoder`: no Python object per record, the
    same rows and rejects as decoding one by one); the rest of the graph works on Arrow batches
    (ARCHITECTURE.md: batching pays).
    Each batch carries the Kafka position columns ``_topic, _partition, _offset``
    and its event type in the schema metadata. Rejects go to :data:`REJECTS`.
    """

    def __init__(self, settings: KafkaSettings, batch_size: int = 50_000) -> None:
        super().__init__(settings)
        self._batch_size = batch_size
        self._batch_decoders: dict[str, BatchDecoder] = {}

    def process(self, rng: OffsetRange):
        assert self._reader is not None
        event_type = _TOPIC_EVENT.get(rng.topic)
        if event_type is None:  # dead letters: few, row by row
            yield from super().process(rng)
            return
        decoder = self._batch_decoders.get(event_type)
        if decoder is None:
            decoder = self._batch_decoders[event_type] = BatchDecoder(event_type)
        for offsets, values, keys, kafka_ts in self._reader.read_columns(rng, self._batch_size):
            yield from self._decoded_batch(decoder, rng, event_type, offsets, kafka_ts, values, keys)

    def _decoded_batch(self, decoder: BatchDecoder, rng: OffsetRange, event_type: str, offsets: list[int],
                       kafka_ts: list[int | None], values: list[bytes | None], keys: list[bytes | None]):
        """The values decoded in one go (connectors.avro_batch): undecodable ones to :data:`REJECTS`
        with their reason, one by one, the rest on through :meth:`_plausible_batch`."""
        batch, kept, bad = decoder.decode(values)
        for i, reason in bad:
            self._rejected.inc()
            yield pvalue.TaggedOutput(REJECTS, _reject_row(rng, offsets[i], _key_exchange(keys[i]), event_type,
                                                           "decode_error", reason, kafka_ts[i], values[i]))
        if bad:
            keep = kept.tolist()
            offsets = [offsets[i] for i in keep]
            kafka_ts = [kafka_ts[i] for i in keep]
            values = [values[i] for i in keep]
        if batch.num_rows:
            yield from self._plausible_batch(batch, rng, event_type, offsets, kafka_ts, values)

    def _plausible_batch(self, batch, rng: OffsetRange, event_type: str, offsets: list[int],
                         kafka_ts: list[int | None], values: list[bytes | None]):
        """The batch with its Kafka positions, less the rows no market produces, which go to
        :data:`REJECTS` with their reason: what reached the topic without liqstream's normalizer (an
        old or foreign producer) must not reach the sinks (a price of 1e30 overflows the exact
        DECIMAL sums of liquidations_1m) nor move the watermark (connectors/plausibility.py)."""
        bad = implausible_rows(event_type, batch, int(time.time() * 1_000_000))
        if bad:
            import pyarrow as pa

            exchanges = batch.column(batch.schema.get_field_index("exchange")).to_pylist()
            for i, reason, detail in bad:
                self._rejected.inc()
                yield pvalue.TaggedOutput(REJECTS, _reject_row(rng, offsets[i], exchanges[i], event_type, reason, detail,
                                                               kafka_ts[i], values[i]))
            drop = {i for i, _, _ in bad}
            keep = [i for i in range(batch.num_rows) if i not in drop]
            batch = batch.take(pa.array(keep, pa.int64()))
            offsets = [offsets[i] for i in keep]
            if not keep:
                return
        self._read.inc(batch.num_rows)
        yield _with_position(batch, rng, offsets)


def _with_position(batch, rng: OffsetRange, offsets: list[int]):
    """The batch + its Kafka position columns (constant topic and partition: built once, not per row)."""
    import pyarrow as pa

    from schemas.arrow import POSITION_FIELDS

    n = batch.num_rows
    cols = [*batch.columns, pa.array([rng.topic] * n, POSITION_FIELDS[0].type),
            pa.array([rng.partition] * n, POSITION_FIELDS[1].type), pa.array(offsets, POSITION_FIELDS[2].type)]
    return pa.RecordBatch.from_arrays(cols, schema=batch.schema.append(POSITION_FIELDS[0])
                                      .append(POSITION_FIELDS[1]).append(POSITION_FIELDS[2]))


class ReadKafkaRangeBatches(beam.PTransform):
    """Offset ranges -> {'batches': RecordBatches of events, 'rejects': rows}."""

    def __init__(self, settings: KafkaSettings, ranges: list[OffsetRange], batch_size: int = 50_000) -> None:
        super().__init__()
        self._settings = settings
        self._ranges = ranges
        self._batch_size = batch_size

    def expand(self, pbegin):
        return (
            pbegin
            | "OffsetRanges" >> beam.Create(self._ranges or [], reshuffle=False)
            | "SpreadRanges" >> beam.Reshuffle()
            | "ReadAndDecode" >> beam.ParDo(ReadRangeBatches(self._settings, self._batch_size)).with_outputs(
                REJECTS, main="batches"
            )
        )


class ReadKafkaRanges(beam.PTransform):
    """Offset ranges -> {event_type: PCollection of timestamped records, 'rejects': rows}."""

    def __init__(self, settings: KafkaSettings, ranges: list[OffsetRange]) -> None:
        super().__init__()
        self._settings = settings
        self._ranges = ranges

    def expand(self, pbegin):
        return (
            pbegin
            | "OffsetRanges" >> beam.Create(self._ranges or [], reshuffle=False)
            | "SpreadRanges" >> beam.Reshuffle()
            | "ReadAndDecode" >> beam.ParDo(ReadDecodedRanges(self._settings)).with_outputs(
                REJECTS, *TOPICS.keys()
            )
        )
