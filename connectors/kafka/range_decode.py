"""Offset ranges -> decoded events and rejects, without Apache Beam (ADR 053).

The reading and decoding behind the Beam source (:mod:`connectors.kafka.beam_source`, whose
DoFns wrap :class:`RangeDecoder`) and the stream job's reader processes
(:mod:`connectors.kafka.fetch`, which run it directly). The reader processes are spawned at the
job's start and must be ready for its first fetch: importing Apache Beam there took 0.6-1 s of
CPU per reader (``python -X importtime``), on the critical path of a cold catch-up and on the
same two cores as the job's own start. Nothing here imports Beam.

A reject is yielded as a :class:`Reject` (its row, as the rejects mart stores it); the Beam DoFns
turn it into a ``TaggedOutput(REJECTS, row)`` and count it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from connectors.avro import AvroDecoder, SchemaDecodeError
from connectors.avro_batch import BatchDecoder
from connectors.config import KafkaSettings
from connectors.kafka.rdkafka_reader import range_reader
from connectors.kafka.reader import OffsetRange
from connectors.normalize import TOPIC_EVENT, TOPICS
from connectors.plausibility import implausibility, implausible_rows


class Reject:
    """A record that goes to the rejects mart: undecodable, implausible, or a dead letter."""

    __slots__ = ("row",)

    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row


class RangeDecoder:
    """Reads an OffsetRange with the configured Kafka client (``setup`` first, ``close`` at the end).

    :meth:`records`: main topics yield ``(event_type, record)``; a value that cannot be decoded or
    that no market produces, and every dead letter read from a ``.dlq`` topic, yield a
    :class:`Reject` row with its topic/partition/offset, so it is counted and stored, never dropped
    and never fatal. :meth:`batches`: the same, the events as pyarrow RecordBatches of up to
    ``batch_size`` records of one event type (decoded together by
    :class:`~connectors.avro_batch.BatchDecoder`), with the Kafka position columns
    ``_topic, _partition, _offset`` and the event type in the schema metadata."""

    def __init__(self, settings: KafkaSettings, batch_size: int = 50_000) -> None:
        self._settings = settings
        self._batch_size = batch_size
        self._reader: Any = None  # a RangeReader or a ConfluentRangeReader (KafkaSettings.reader_client)
        self._decoders: dict[str, AvroDecoder] = {}
        self._batch_decoders: dict[str, BatchDecoder] = {}
        self._dead: AvroDecoder | None = None

    def setup(self) -> None:
        self._reader = range_reader(self._settings)
        self._decoders = {et: AvroDecoder(et) for et in TOPICS}
        self._dead = AvroDecoder("dead_letter")

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def records(self, rng: OffsetRange):
        assert self._reader is not None
        event_type = TOPIC_EVENT.get(rng.topic)
        for rec in self._reader.read(rng):
            where = {"topic": rng.topic, "partition": rng.partition, "offset": rec.offset}
            if event_type is None:  # a dead-letter topic
                yield Reject(self._dead_letter_row(rec.value, where))
                continue
            try:
                record = self._decoders[event_type].decode(rec.value)
            except SchemaDecodeError as exc:
                yield Reject(reject_row(rng, rec.offset, key_exchange(rec.key), event_type, "decode_error", str(exc),
                                        rec.timestamp, rec.value))
                continue
            why = implausibility(event_type, record)  # as _plausible_batch, row by row
            if why is not None:
                yield Reject(reject_row(rng, rec.offset, record.get("exchange"), event_type, *why, rec.timestamp,
                                        rec.value))
                continue
            yield event_type, record

    def batches(self, rng: OffsetRange):
        assert self._reader is not None
        event_type = TOPIC_EVENT.get(rng.topic)
        if event_type is None:  # dead letters: few, row by row (all rejects)
            yield from self.records(rng)
            return
        decoder = self._batch_decoders.get(event_type)
        if decoder is None:
            decoder = self._batch_decoders[event_type] = BatchDecoder(event_type)
        for offsets, values, keys, kafka_ts in self._reader.read_columns(rng, self._batch_size):
            yield from self._decoded_batch(decoder, rng, event_type, offsets, kafka_ts, values, keys)

    def _dead_letter_row(self, value: bytes | None, where: dict[str, Any]) -> dict[str, Any]:
        assert self._dead is not None
        try:
            d = self._dead.decode(value or b"")
        except SchemaDecodeError as exc:
            return {**where, "exchange": None, "event_type": None, "reason": "decode_error", "detail": str(exc)[:500],
                    "source": None, "received_at": 0, "raw": value or b""}
        return {**where, **d}

    def _decoded_batch(self, decoder: BatchDecoder, rng: OffsetRange, event_type: str, offsets: list[int],
                       kafka_ts: list[int | None], values: list[bytes | None], keys: list[bytes | None]):
        """The values decoded in one go (connectors.avro_batch): undecodable ones rejected with
        their reason, one by one, the rest on through :meth:`_plausible_batch`."""
        batch, kept, bad = decoder.decode(values)
        for i, reason in bad:
            yield Reject(reject_row(rng, _at(offsets, i), key_exchange(_at(keys, i)), event_type, "decode_error",
                                    reason, _at(kafka_ts, i), _at(values, i)))
        if bad:
            offsets, kafka_ts, values = _take(offsets, kept), _take(kafka_ts, kept), _take(values, kept)
        if batch.num_rows:
            yield from self._plausible_batch(batch, rng, event_type, offsets, kafka_ts, values)

    def _plausible_batch(self, batch, rng: OffsetRange, event_type: str, offsets: list[int],
                         kafka_ts: list[int | None], values: list[bytes | None]):
        """The batch with its Kafka positions, less the rows no market produces, which are rejected
        with their reason: what reached the topic without liqstream's normalizer (an old or foreign
        producer) must not reach the sinks (a price of 1e30 overflows the exact DECIMAL sums of
        liquidations_1m) nor move the watermark (connectors/plausibility.py)."""
        bad = implausible_rows(event_type, batch, int(time.time() * 1_000_000))
        if bad:
            import pyarrow as pa

            exchanges = batch.column(batch.schema.get_field_index("exchange")).to_pylist()
            for i, reason, detail in bad:
                yield Reject(reject_row(rng, _at(offsets, i), exchanges[i], event_type, reason, detail,
                                        _at(kafka_ts, i), _at(values, i)))
            drop = {i for i, _, _ in bad}
            keep = [i for i in range(batch.num_rows) if i not in drop]
            batch = batch.take(pa.array(keep, pa.int64()))
            offsets = _take(offsets, np.asarray(keep, np.int64))
            if not keep:
                return
        yield with_position(batch, rng, offsets)


def _at(column: Any, i: int) -> Any:
    """Item ``i`` of a column of :meth:`RangeReader.read_columns` as a Python value (the columns are
    lists, or NumPy / Arrow arrays from parsed record batches: ADR 060)."""
    v = column[i]
    if isinstance(v, np.generic):
        return v.item()
    return v.as_py() if hasattr(v, "as_py") else v


def _take(column: Any, idx: np.ndarray) -> Any:
    """The items ``idx`` of a column of :meth:`RangeReader.read_columns`, of the same kind."""
    if isinstance(column, np.ndarray):
        return column[idx]
    if isinstance(column, list):
        return [column[i] for i in idx.tolist()]
    return column.take(idx)


def reject_row(rng: OffsetRange, offset: int, exchange: str | None, event_type: str, reason: str, detail: str,
               kafka_ts: int | None, raw: bytes | None) -> dict[str, Any]:
    """A rejects row for a record of a main topic (a dead-letter topic's rows come from the letter)."""
    return {"topic": rng.topic, "partition": rng.partition, "offset": offset, "exchange": exchange,
            "event_type": event_type, "reason": reason, "detail": detail[:500],
            "source": f"{rng.topic}[{rng.partition}]@{offset}", "received_at": (kafka_ts or 0) * 1000, "raw": raw or b""}


def key_exchange(key: bytes | None) -> str | None:
    if not key:
        return None
    return key.decode(errors="replace").split(":", 1)[0]


def with_position(batch, rng: OffsetRange, offsets: list[int]):
    """The batch + its Kafka position columns (constant topic and partition: built once, not per row)."""
    import pyarrow as pa

    from schemas.arrow import POSITION_FIELDS

    n = batch.num_rows
    cols = [*batch.columns, pa.array([rng.topic] * n, POSITION_FIELDS[0].type),
            pa.array([rng.partition] * n, POSITION_FIELDS[1].type), pa.array(offsets, POSITION_FIELDS[2].type)]
    return pa.RecordBatch.from_arrays(cols, schema=batch.schema.append(POSITION_FIELDS[0])
                                      .append(POSITION_FIELDS[1]).append(POSITION_FIELDS[2]))
