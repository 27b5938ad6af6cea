"""Vectorized parsing of Kafka record batches (message format v2) into columns (ADR 060).

kafka-python parses a fetch response one record at a time in Python (``DefaultRecordBatch._read_msg``:
six varints, two slices, a ``ConsumerRecord`` per record): most of a range reader's CPU (issue 21).
Here a response's whole record batches are read into columns instead:

* the batch headers one ``struct`` call per batch: base offset, CRC, attributes, first/max
  timestamp, record count; the CRC-32C of every batch checked as kafka-python checks it
  (``check_crcs``, its default), a compressed batch's records section decompressed with the codec
  kafka-python uses (gzip with the standard library, the others with ``kafka.codec``);
* every record's start by a walk over the length varints (one cheap step per record);
* then every field of every record of the response at once with NumPy at those starts (the
  attributes, timestamp delta, offset delta, key and value lengths, header count) and the keys and
  values gathered into Arrow binary arrays.

A record must end exactly where its length says and a batch exactly where its length says (what
kafka-python checks); a batch that fails any check, has headers, is a control batch of a
transaction we would have to read (never: the readers read uncommitted, where kafka-python skips
control batches and keeps aborted records, as here), has another magic or an unknown codec, is
handed back whole to kafka-python's own parsing (:class:`Fallback`), which yields its records or
raises its error: nothing is lost, nothing is read differently. A truncated last batch (a response
cut at its byte limit) is left out, as kafka-python leaves it out (it is fetched again).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

try:
    from crc32c import crc32c as _crc32c
except ImportError:  # kafka-python's own (pure Python, slow) fallback
    from kafka.record.util import calc_crc32c as _crc32c

#: the v2 batch header (kafka.record.default_records.DefaultRecordBase.HEADER_STRUCT)
HEADER = struct.Struct(">qiibIhiqqqhii")
#: where the CRC'd part of a batch starts (attributes), and where its length's bytes stop
CRC_FROM = 21
LOG_OVERHEAD = 12
CODEC_MASK, LOG_APPEND_TIME_MASK, CONTROL_MASK = 0x07, 0x08, 0x20
#: zero bytes after the records: a varint read past a corrupt record's end never leaves the buffer
_PAD = bytes(64)


@dataclass
class Columns:
    """Records of one or more consecutive batches: offsets and timestamps (ms) as int64 arrays, keys
    and values as Arrow binary arrays (a null for a null key or value: a tombstone)."""

    offsets: np.ndarray
    timestamps: np.ndarray
    keys: pa.BinaryArray
    values: pa.BinaryArray

    def __len__(self) -> int:
        return len(self.offsets)

    def slice(self, start: int, stop: int) -> Columns:
        return Columns(self.offsets[start:stop], self.timestamps[start:stop], self.keys.slice(start, stop - start),
                       self.values.slice(start, stop - start))

    @staticmethod
    def concat(parts: list[Columns]) -> Columns:
        if len(parts) == 1:
            return parts[0]
        return Columns(np.concatenate([p.offsets for p in parts]), np.concatenate([p.timestamps for p in parts]),
                       pa.concat_arrays([p.keys for p in parts]), pa.concat_arrays([p.values for p in parts]))


@dataclass
class Fallback:
    """One whole batch for kafka-python's own parsing (``data``: its bytes, from the base offset on)."""

    data: memoryview
    next_offset: int


@dataclass
class Parsed:
    """A response's whole batches in order: :class:`Columns` runs and :class:`Fallback` batches, each
    with the offset after its last batch (``ends``: what the fetch position moves to; -1 after a batch
    of an older message format, whose last offset kafka-python finds as it parses it)."""

    parts: list[Columns | Fallback]
    ends: list[int]


class _Batch:
    __slots__ = ("at", "size", "base", "attrs", "first_ts", "max_ts", "count", "next_offset", "body", "ok")


def _batches(buf: memoryview, check_crcs: bool) -> list[_Batch]:
    """The whole batches of ``buf`` (a truncated last one left out), their records sections (``body``:
    decompressed) read and checked; ``ok`` False: the batch goes to kafka-python."""
    out = []
    n, at = len(buf), 0
    while at + LOG_OVERHEAD <= n:
        (length,) = struct.unpack_from(">i", buf, at + 8)
        end = at + LOG_OVERHEAD + length
        if end > n:
            break  # truncated: fetched again (as kafka-python's MemoryRecords leaves it)
        b = _Batch()
        b.at, b.size, b.ok, b.body = at, end - at, False, None
        b.next_offset = -1
        if length + LOG_OVERHEAD >= HEADER.size and buf[at + 16] == 2:
            (b.base, _, _, _, crc, b.attrs, last_delta, b.first_ts, b.max_ts, _, _, _,
             b.count) = HEADER.unpack_from(buf, at)
            b.next_offset = b.base + last_delta + 1
            b.ok = b.count >= 0 and (not check_crcs or _crc32c(buf[at + CRC_FROM:end]) == crc)
            if b.ok:
                b.body = _records_section(buf[at + HEADER.size:end], b.attrs & CODEC_MASK)
                b.ok = b.body is not None
        out.append(b)
        at = end
    return out


def _records_section(data: memoryview, codec: int) -> bytes | memoryview | None:
    if codec == 0:
        return data
    try:
        if codec == 1:  # one gzip member (what producers write) in C, else the standard library's loop
            d = zlib.decompressobj(31)
            out = d.decompress(data)
            return out if d.eof and not d.unused_data else gzip.decompress(data)
        from kafka import codec as kc

        if codec == 2 and kc.has_snappy():
            return kc.snappy_decode(data.tobytes())
        if codec == 3 and kc.has_lz4():
            return kc.lz4_decode(data.tobytes())
        if codec == 4 and kc.has_zstd():
            return kc.zstd_decode(data.tobytes())
    except Exception:  # noqa: BLE001 - kafka-python raises its own error for it
        return None
    return None


def _walk(body: bytes | memoryview, base: int, count: int, starts: list[int]) -> bool:
    """Append the starts (+ ``base``) of the ``count`` records of ``body``; False unless they
    exactly fill it (kafka-python's "unconsumed bytes" / "invalid record size" checks follow later)."""
    p, n = 0, len(body)
    for _ in range(count):
        if p >= n:
            return False
        v = body[p]
        w = 1
        if v >= 0x80:
            v &= 0x7F
            shift = 7
            while True:
                if p + w >= n or w >= 5:
                    return False
                c = body[p + w]
                v |= (c & 0x7F) << shift
                w += 1
                shift += 7
                if c < 0x80:
                    break
        length = (v >> 1) ^ -(v & 1)
        if length < 0:
            return False
        starts.append(base + p)
        p += w + length
    return p == n


def _varints(data: np.ndarray, pos: np.ndarray, max_bytes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(zigzag-decoded value, width, valid) of the varint at every ``pos`` of ``data`` (padded)."""
    b = data[pos]
    val = (b & 0x7F).astype(np.uint64)
    width = np.ones(len(pos), np.int64)
    cont = np.flatnonzero(b >= 0x80)
    k = 1
    while len(cont) and k < max_bytes:
        c = data[pos[cont] + k]
        val[cont] |= (c & 0x7F).astype(np.uint64) << np.uint64(7 * k)
        width[cont] += 1
        cont = cont[c >= 0x80]
        k += 1
    valid = np.ones(len(pos), bool)
    valid[cont] = False  # longer than a varint of this type may be
    signed = (val >> np.uint64(1)).astype(np.int64) ^ -(val & np.uint64(1)).astype(np.int64)
    return signed, width, valid


def _binary(joined: pa.Buffer, starts: np.ndarray, lengths: np.ndarray) -> pa.BinaryArray:
    """The byte strings joined[start:start + length] (a null where length is -1) as one Arrow array.

    The starts are increasing and the strings do not overlap, so they and the gaps between them are
    one binary array over ``joined`` (offsets start, start + length, next start, ...); its even
    elements, taken by Arrow (a copy per string), are the strings."""
    n = len(starts)
    valid = lengths >= 0
    bounds = np.empty(2 * n + 1, np.int32)
    bounds[0:2 * n:2] = starts
    bounds[1:2 * n:2] = starts + np.where(valid, lengths, 0)
    bounds[2 * n] = bounds[2 * n - 1] if n else 0
    nulls = n - int(valid.sum())
    bitmap = None
    if nulls:
        both = np.ones(2 * n, bool)
        both[0::2] = valid
        bitmap = pa.py_buffer(np.packbits(both, bitorder="little"))
    spans = pa.BinaryArray.from_buffers(pa.binary(), 2 * n, [bitmap, pa.py_buffer(bounds), joined],
                                        null_count=nulls)
    return spans.take(pa.array(np.arange(0, 2 * n, 2, dtype=np.int64)))


def parse(records: bytes | memoryview, check_crcs: bool = True) -> Parsed:
    """A fetch response's records (one partition's) -> its whole batches as :class:`Parsed`.

    Control batches (their one record is not returned by kafka-python either) are left out, their
    offsets included in the fetch position."""
    buf = memoryview(records).cast("B") if records else memoryview(b"")
    batches = _batches(buf, check_crcs)
    parts: list[Columns | Fallback] = []
    ends: list[int] = []
    if not batches:
        return Parsed(parts, ends)
    # every ok, non-control batch's records section in one buffer, their record starts in it
    bodies: list[bytes | memoryview] = []
    starts: list[int] = []
    counts: list[int] = []
    used: list[_Batch] = []
    filled = 0
    for b in batches:
        if not b.ok or b.attrs & CONTROL_MASK:
            continue
        mark = len(starts)
        if not _walk(b.body, filled, b.count, starts):
            del starts[mark:]
            b.ok = False
            continue
        bodies.append(b.body)
        counts.append(b.count)
        used.append(b)
        filled += len(b.body)
    cols, spans = (_columns(b"".join(bodies), np.asarray(starts, np.int64), used, counts, filled) if used
                   else (None, {}))
    # in order: runs of parsed batches (consecutive records of `cols`) and the batches for kafka-python
    runs: list[list[int] | Fallback] = []
    cursor = 0
    for b in batches:
        lo, hi = spans.get(id(b), (cursor, cursor))  # a control batch: no records
        cursor = hi
        if not b.ok:
            runs.append(Fallback(buf[b.at:b.at + b.size], b.next_offset))
            ends.append(b.next_offset)
        elif runs and isinstance(runs[-1], list):
            runs[-1][1] = hi
            ends[-1] = b.next_offset
        else:
            runs.append([lo, hi])
            ends.append(b.next_offset)
    for r in runs:
        if isinstance(r, Fallback):
            parts.append(r)
        else:
            parts.append(cols.slice(r[0], r[1]) if cols is not None else _empty())
    return Parsed(parts, ends)


def _empty() -> Columns:
    empty = pa.array([], pa.binary())
    return Columns(np.zeros(0, np.int64), np.zeros(0, np.int64), empty, empty)


def _step(p: np.ndarray, end: np.ndarray, ok: np.ndarray, filled: int) -> tuple[np.ndarray, np.ndarray]:
    """A field's end: past its record's end it fails the record; reads stay inside the buffer."""
    return np.minimum(p, filled), ok & (p <= end)


def _columns(joined: bytes, starts: np.ndarray, used: list[_Batch], counts: list[int],
             filled: int) -> tuple[Columns, dict[int, tuple[int, int]]]:
    """Every record of the ``used`` batches decoded at once, and id(batch) -> its records' [lo, hi) in
    them. A batch with any record that does not check out is marked not ok (kafka-python parses it)."""
    whole = pa.py_buffer(joined + _PAD)
    data = np.frombuffer(whole, np.uint8)
    batch_of = np.repeat(np.arange(len(used)), counts)
    length, w, ok = _varints(data, starts, 5)
    end = starts + w + length  # the record's end
    p = starts + w
    ok &= data[p] < 0x80  # attributes: one byte (kafka-python reads a varint: the same for 0-127)
    p = p + 1
    ts_delta, w, v = _varints(data, p, 10)
    ok &= v
    p, ok = _step(p + w, end, ok, filled)
    off_delta, w, v = _varints(data, p, 5)
    ok &= v
    p, ok = _step(p + w, end, ok, filled)
    key_len, w, v = _varints(data, p, 5)
    ok &= v & (key_len >= -1)
    key_at = p + w
    p, ok = _step(key_at + np.maximum(key_len, 0), end, ok, filled)
    value_len, w, v = _varints(data, p, 5)
    ok &= v & (value_len >= -1)
    value_at = p + w
    p, ok = _step(value_at + np.maximum(value_len, 0), end, ok, filled)
    headers, w, v = _varints(data, p, 5)
    ok &= v & (headers == 0) & (p + w == end)  # headers (unused here): kafka-python reads them
    base = np.array([b.base for b in used], np.int64)
    first_ts = np.array([b.first_ts for b in used], np.int64)
    max_ts = np.array([b.max_ts for b in used], np.int64)
    append_time = np.array([bool(b.attrs & LOG_APPEND_TIME_MASK) for b in used])
    offsets = base[batch_of] + off_delta
    stamps = np.where(append_time[batch_of], max_ts[batch_of], first_ts[batch_of] + ts_delta)
    bad = set(np.unique(batch_of[~ok]).tolist()) if not ok.all() else set()
    key_len, key_at = np.where(ok, key_len, -1), np.where(ok, key_at, starts)  # increasing starts
    value_len, value_at = np.where(ok, value_len, -1), np.where(ok, value_at, starts)
    keys = _binary(whole, key_at, key_len)
    values = _binary(whole, value_at, value_len)
    spans: dict[int, tuple[int, int]] = {}
    at = 0
    for i, (b, c) in enumerate(zip(used, counts, strict=True)):
        if i in bad:
            b.ok = False
        spans[id(b)] = (at, at + c)
        at += c
    return Columns(offsets, stamps, keys, values), spans
