"""Columnar decode of many single-object-encoded values of one event type into one Arrow batch.

Decoding one value at a time (``fastavro.schemaless_reader`` per record, then
``RecordBatch.from_pylist``) was the largest part of a streaming catch-up's CPU (issue 21: ~30 %
of all samples). Here the values written with the reader's own schema (the common case: their
10-byte single-object header equals the reader's) lose that header and are read as ONE Avro
object-container block under the same schema, by Polars' Rust reader (``polars.read_avro``:
columns, no Python object per record); everything else — an older writer version needing schema
resolution, an unknown fingerprint, a tombstone — goes through :meth:`AvroDecoder.decode` one by
one, as before. The wire format is unchanged (ADR 002, ADR 021).

A block holds no record boundaries, so a corrupt value could shift the records after it. Two
checks make the block's rows exactly what the per-record path gives:

* the canonical encoded length of every decoded row (computed from its values: varint widths,
  string byte lengths, union branches) must equal its value's body length. A reader never consumes
  fewer bytes than the canonical length of what it decoded, and Polars never reads past the block
  (it fails instead), so equal lengths for every row mean every record was read from exactly its
  own bytes;
* any failure of Polars (it raises, or panics, on garbled input) or any length mismatch sends the
  block to bisection: halves are decoded again, and a part of :data:`LEAF` values or fewer goes to
  the per-record path, where an undecodable value becomes a reject with ``decode()``'s own reason.

So a corrupt record costs a few extra block reads and is dead-lettered alone with its reason;
nothing is lost and nothing is decoded differently (``tests/unit/test_avro_batch.py`` checks both
paths on every schema in ``schemas/``, corrupt values included).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import schemas
from connectors.avro import HEADER_LEN, AvroDecoder, SchemaDecodeError, _version, strip_keys
from schemas.arrow import EVENT_TYPE_META, avro_to_arrow

#: a part of the block this small (after bisection) is decoded value by value
LEAF = 16
#: the container's sync marker: any 16 bytes (the block is never written anywhere)
_SYNC = b"liqstream-block!"


def _varint_len(z: np.ndarray) -> np.ndarray:
    """Bytes of the canonical varint of each (already zigzagged, unsigned) value."""
    n = np.ones(z.shape, np.int64)
    for k in range(1, 10):
        n += z >= np.uint64(1 << (7 * k))
    return n


def _zigzag(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.int64, copy=False)
    return ((v << 1) ^ (v >> 63)).view(np.uint64)


def _avro_long(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


class _Unsupported(Exception):
    """A schema shape the block path does not check (nested records, arrays, wide unions...)."""


def _field_length(avro_type: Any) -> Any:
    """A function (Arrow column -> encoded bytes per row) for one field's type."""
    if isinstance(avro_type, list):
        branches = [t for t in avro_type if t != "null"]
        if len(avro_type) != 2 or len(branches) != 1:
            raise _Unsupported(f"union {avro_type}")
        inner = _field_length(branches[0])

        def union(col: pa.Array) -> np.ndarray:
            # the branch index is one byte (0 or 1, zigzagged); a null has no body
            valid = col.is_valid().to_numpy(zero_copy_only=False)
            if not valid.all():
                col = col.filter(pc.is_valid(col))
                body = np.zeros(len(valid), np.int64)
                body[valid] = inner(col)
                return 1 + body
            return 1 + inner(col)

        return union
    if isinstance(avro_type, dict):
        kind = avro_type.get("type")
        if kind == "enum":
            symbols = pa.array(avro_type["symbols"], pa.string())
            return lambda col: _varint_len(_zigzag(pc.index_in(col, value_set=symbols).to_numpy()))
        if kind in ("record", "array", "map", "fixed") or isinstance(kind, (dict, list)):
            raise _Unsupported(f"type {kind}")
        return _field_length(kind)
    if avro_type in ("string", "bytes"):
        def length_prefixed(col: pa.Array) -> np.ndarray:
            n = pc.binary_length(col).to_numpy().astype(np.int64)
            return _varint_len(_zigzag(n)) + n
        return length_prefixed
    if avro_type in ("long", "int"):
        return lambda col: _varint_len(_zigzag(col.to_numpy()))
    fixed = {"double": 8, "float": 4, "boolean": 1}.get(avro_type)
    if fixed is None:
        raise _Unsupported(f"type {avro_type}")
    return lambda col: np.full(len(col), fixed, np.int64)


class BatchDecoder:
    """``decode(values)`` -> (Arrow batch of the decoded rows, their indices in ``values``, rejects).

    ``event_type`` (and ``version``, default the newest) fix the reader schema, as for
    :class:`~connectors.avro.AvroDecoder`. The batch has the reader's Arrow schema
    (``schemas.arrow``); ``rejects`` are ``(index, reason)`` for the values that do not decode, the
    reason being what ``AvroDecoder.decode`` raises for that value."""

    def __init__(self, event_type: str, version: int | None = None) -> None:
        sv = schemas.latest(event_type) if version is None else _version(event_type, version)
        self.per_record = AvroDecoder(event_type, version)
        fields = sv.raw["fields"]
        self.schema = pa.schema([pa.field(f["name"], avro_to_arrow(f["type"])) for f in fields],
                                metadata={EVENT_TYPE_META: event_type.encode()})
        try:
            self._lengths = [_field_length(f["type"]) for f in fields]
        except _Unsupported:
            self._lengths = None  # every value goes through the per-record path
        self._container_header = self._block_header(sv.raw)
        self._header = pa.scalar(self.per_record.fast_header, pa.binary())
        #: values this decoder read in container blocks / one by one (the latter: other writer
        #: versions, rejects, and the small parts bisection leaves around a corrupt value)
        self.block_values = 0
        self.single_values = 0

    def _block_header(self, raw: dict) -> bytes:
        """The container's header: the writer schema as Polars reads it, or b"" if it cannot.

        Defaults are left out (the block is read with its writer schema, so no default is ever used,
        and Polars' schema parser refuses a string field's default); logical types too, as in
        :class:`AvroDecoder` (times stay epoch integers)."""
        import fastavro
        import polars as pl

        head = io.BytesIO()
        fastavro.writer(head, fastavro.parse_schema(strip_keys(raw, "logicalType", "default")), [],
                        sync_marker=_SYNC)
        try:
            pl.read_avro(io.BytesIO(head.getvalue()))
        except Exception:  # a schema Polars' reader does not take: every value goes one by one
            self._lengths = None
            return b""
        return head.getvalue()

    def decode(self, values: list[bytes | None] | pa.BinaryArray) -> tuple[pa.RecordBatch, np.ndarray,
                                                                           list[tuple[int, str]]]:
        """``values``: bytes (None: a tombstone), as a list or an Arrow binary array."""
        arr = values if isinstance(values, pa.Array) else pa.array(values, pa.binary())
        if self._lengths is not None and len(arr):
            fast = pc.fill_null(pc.equal(pc.binary_slice(arr, 0, HEADER_LEN), self._header), False).to_numpy(
                zero_copy_only=False)
        else:
            fast = np.zeros(len(arr), bool)
        pieces: list[tuple[np.ndarray, pa.RecordBatch]] = []
        rejects: list[tuple[int, str]] = []
        fast_idx = np.flatnonzero(fast)
        if len(fast_idx):
            bodies = pc.binary_slice(arr if len(fast_idx) == len(arr) else arr.take(fast_idx), HEADER_LEN, (1 << 31) - 1)
            self._decode_block(bodies, fast_idx, values, pieces, rejects)
        slow_idx = np.flatnonzero(~fast)
        if len(slow_idx):
            self._decode_each(slow_idx, values, pieces, rejects)
        rejects.sort()
        if len(pieces) == 1:
            idx, batch = pieces[0]
            return batch, idx, rejects
        if not pieces:
            return pa.RecordBatch.from_pylist([], schema=self.schema), np.zeros(0, np.int64), rejects
        idx = np.concatenate([i for i, _ in pieces])
        order = np.argsort(idx, kind="stable")
        table = pa.Table.from_batches([b for _, b in pieces], schema=self.schema).take(order)
        return table.combine_chunks().to_batches()[0], idx[order], rejects

    # ---- the two paths ----------------------------------------------------------------------------
    def _decode_block(self, bodies: pa.BinaryArray, idx: np.ndarray, values: list[bytes | None],
                      pieces: list, rejects: list) -> None:
        if len(idx) <= LEAF:
            self._decode_each(idx, values, pieces, rejects)
            return
        batch = self._read_block(bodies)
        if batch is not None:
            self.block_values += len(idx)
            pieces.append((idx, batch))
            return
        half = len(idx) // 2
        self._decode_block(bodies.slice(0, half), idx[:half], values, pieces, rejects)
        self._decode_block(bodies.slice(half), idx[half:], values, pieces, rejects)

    def _read_block(self, bodies: pa.BinaryArray) -> pa.RecordBatch | None:
        """The bodies as one container block read by Polars; None unless every row checks out."""
        import polars as pl

        n = len(bodies)
        offsets = np.frombuffer(bodies.buffers()[1], np.int32, n + 1, bodies.offset * 4).astype(np.int64)
        start, end = int(offsets[0]), int(offsets[-1])
        data = bodies.buffers()[2]
        blob = b"".join((self._container_header, _avro_long(n), _avro_long(end - start),
                         memoryview(data)[start:end] if data is not None else b"", _SYNC))
        try:
            df = pl.read_avro(io.BytesIO(blob))
        except BaseException as exc:  # noqa: BLE001 - a garbled body makes the Rust reader panic
            if isinstance(exc, (KeyboardInterrupt, SystemExit, MemoryError)):
                raise
            return None
        if df.height != n or df.width != len(self.schema):
            return None
        table = df.to_arrow()
        try:
            cols = [table.column(i).combine_chunks().cast(f.type) for i, f in enumerate(self.schema)]
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        length = np.zeros(n, np.int64)
        for col, field_length in zip(cols, self._lengths, strict=True):
            length += field_length(col)
        if not np.array_equal(length, np.diff(offsets)):
            return None
        return pa.RecordBatch.from_arrays(cols, schema=self.schema)

    def _decode_each(self, idx: np.ndarray, values: list[bytes | None], pieces: list, rejects: list) -> None:
        decode = self.per_record.decode
        self.single_values += len(idx)
        rows, kept = [], []
        arrow = isinstance(values, pa.Array)
        for i in idx.tolist():
            try:
                rows.append(decode((values[i].as_py() if arrow else values[i]) or b""))
            except SchemaDecodeError as exc:
                rejects.append((i, str(exc)))
                continue
            kept.append(i)
        if rows:
            pieces.append((np.asarray(kept, np.int64), pa.RecordBatch.from_pylist(rows, schema=self.schema)))
