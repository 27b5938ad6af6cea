"""Beam source for bounded Kafka offset ranges (the local driver of every job).

Offset ranges are tiny descriptors, so they may go through ``beam.Create``;
the records themselves are read inside the DoFn (ARCHITECTURE.md: Create
pickles its elements, reading in a DoFn does not). Production runs the same
downstream graph on ``ReadFromKafka`` instead (pipelines/production.py, docs/deployment.md).
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue

from connectors.config import KafkaSettings
from connectors.kafka.range_decode import RangeDecoder, Reject
from connectors.kafka.reader import OffsetRange
from connectors.normalize import TOPIC_EVENT

#: tag of the rejects output: records that could not be decoded, and dead letters read from DLQ topics
REJECTS = "rejects"


class ReadDecodedRanges(beam.DoFn):
    """(OffsetRange) -> decoded records, timestamped by event time, tagged by event type.

    Main topics yield to the output named after the event type; a value that
    cannot be decoded, and every dead letter read from a ``.dlq`` topic, goes to
    :data:`REJECTS` as a row with its topic/partition/offset, so it is counted
    and stored, never dropped and never fatal. The reading and decoding is
    :class:`~connectors.kafka.range_decode.RangeDecoder`'s (no Beam there: the stream job's
    reader processes run it directly, ADR 053).
    """

    def __init__(self, settings: KafkaSettings, batch_size: int = 50_000) -> None:
        self._core = RangeDecoder(settings, batch_size)
        self._read = Metrics.counter("liqstream", "records_read")
        self._rejected = Metrics.counter("liqstream", "records_rejected")

    def setup(self) -> None:
        self._core.setup()

    def teardown(self) -> None:
        self._core.close()

    def process(self, rng: OffsetRange):
        for item in self._core.records(rng):
            self._read.inc()
            if isinstance(item, Reject):
                self._rejected.inc()
                yield pvalue.TaggedOutput(REJECTS, item.row)
                continue
            event_type, record = item
            yield pvalue.TaggedOutput(event_type, TimestampedValue(record, record["event_time"] / 1e6))


class ReadRangeBatches(ReadDecodedRanges):
    """(OffsetRange) -> pyarrow RecordBatches of decoded events, one event type per batch.

    The vectorized source: the values of up to ``batch_size`` records are decoded together into
    Arrow columns (:class:`~connectors.avro_batch.BatchDecoder`: no Python object per record, the
    same rows and rejects as decoding one by one); the rest of the graph works on Arrow batches
    (ARCHITECTURE.md: batching pays).
    Each batch carries the Kafka position columns ``_topic, _partition, _offset``
    and its event type in the schema metadata. Rejects go to :data:`REJECTS`.
    """

    def process(self, rng: OffsetRange):
        if TOPIC_EVENT.get(rng.topic) is None:  # dead letters: few, row by row
            yield from super().process(rng)
            return
        for item in self._core.batches(rng):
            if isinstance(item, Reject):
                self._rejected.inc()
                yield pvalue.TaggedOutput(REJECTS, item.row)
                continue
            self._read.inc(item.num_rows)
            yield item


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

