"""Avro serde for normalized events, in Avro single-object encoding.

Each Kafka message value is ``C3 01`` + the writer schema's 8-byte CRC-64-AVRO
fingerprint (little-endian) + the Avro binary body. A consumer looks the
fingerprint up among every schema version in ``schemas/`` and resolves the
writer schema to the reader schema it was built with, so a v1 consumer keeps
decoding after a compatible v2 is published and vice versa (see ADR 002).
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

import schemas

MAGIC = b"\xc3\x01"
HEADER_LEN = 10


class SchemaDecodeError(ValueError):
    """The bytes are not a liqstream event this consumer can read."""


class AvroEncoder:
    """Encodes records of one event type with the newest schema of that type."""

    def __init__(self, event_type: str, version: int | None = None) -> None:
        sv = schemas.latest(event_type) if version is None else _version(event_type, version)
        self.schema = sv.parsed
        self.header = MAGIC + sv.fingerprint
        self._buf = BytesIO()

    def encode(self, record: dict[str, Any]) -> bytes:
        buf = self._buf
        buf.seek(0)
        buf.truncate()
        buf.write(self.header)
        schemaless_writer(buf, self.schema, record)
        return buf.getvalue()


class AvroDecoder:
    """Decodes single-object-encoded events into records of one reader schema.

    ``event_type`` fixes the reader schema (newest version unless ``version`` is
    given); the writer schema comes from the message's fingerprint.
    """

    def __init__(self, event_type: str, version: int | None = None) -> None:
        sv = schemas.latest(event_type) if version is None else _version(event_type, version)
        self.event_type = event_type
        # Times stay epoch integers (micros/millis) inside liqstream: converting
        # every timestamp to datetime would cost more than the rest of the decode.
        self.reader_schema = parse_schema(_strip_logical_types(sv.raw))
        self._writers = {fp: parse_schema(_strip_logical_types(w.raw))
                         for fp, w in schemas.by_fingerprint().items() if w.event_type == event_type}
        self._reader_fp = sv.fingerprint
        self._other_types = {fp: w.event_type for fp, w in schemas.by_fingerprint().items()}

    def decode(self, value: bytes) -> dict[str, Any]:
        if len(value) < HEADER_LEN or value[:2] != MAGIC:
            raise SchemaDecodeError("not Avro single-object encoded (missing C3 01 marker)")
        fp = value[2:HEADER_LEN]
        writer = self._writers.get(fp)
        if writer is None:
            if fp in self._other_types:
                raise SchemaDecodeError(f"message holds a {self._other_types[fp]}, expected a {self.event_type}")
            raise SchemaDecodeError(
                f"unknown writer schema fingerprint {fp.hex()}: this consumer's schemas/ "
                "folder lacks that version; upgrade liqstream"
            )
        buf = BytesIO(value)
        buf.seek(HEADER_LEN)
        try:
            if fp == self._reader_fp:
                return schemaless_reader(buf, writer, None)
            return schemaless_reader(buf, writer, self.reader_schema)
        except Exception as exc:  # fastavro raises a variety of errors on truncated/garbled bodies
            raise SchemaDecodeError(f"corrupt Avro body: {exc}") from exc


def _strip_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical_types(v) for v in node]
    return node


def _version(event_type: str, version: int) -> schemas.SchemaVersion:
    for sv in schemas.all_versions():
        if sv.event_type == event_type and sv.version == version:
            return sv
    raise KeyError(f"no schema {event_type}.v{version}")
