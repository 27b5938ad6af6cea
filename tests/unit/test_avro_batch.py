"""The block decoder (connectors.avro_batch) gives exactly what the per-record decoder gives.

Every schema in schemas/, values drawn by hypothesis (nulls, unions, enums, extreme longs and ints,
NaN / -0.0 / infinities, multi-byte strings, bytes), clean and with corrupt values mixed in: the
decoded rows, their order and the rejects with their reasons must equal ``AvroDecoder.decode``
applied value by value (the reference: fastavro's C reader, which the block path does not use).
"""

from __future__ import annotations

import math
import re

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas
from connectors.avro import MAGIC, AvroDecoder, AvroEncoder, SchemaDecodeError
from connectors.avro_batch import LEAF, BatchDecoder
from tests.unit.test_avro_codec import _records

VERSIONS = {f"{sv.event_type}.v{sv.version}": sv for sv in schemas.all_versions()}


def _reference(event_type: str, version: int | None, values: list[bytes | None]):
    """Per-record decode: (rows as comparable tuples, kept indices, (index, reason) rejects)."""
    dec = AvroDecoder(event_type, version)
    rows, kept, rejects = [], [], []
    for i, v in enumerate(values):
        try:
            rows.append(dec.decode(v or b""))
        except SchemaDecodeError as exc:
            rejects.append((i, _stable(str(exc))))
            continue
        kept.append(i)
    return rows, kept, rejects


def _stable(reason: str) -> str:
    # fastavro names the BytesIO it read from: an address that differs between two decodes
    return re.sub(r"0x[0-9a-f]+", "0x?", reason)


def _comparable(row: dict) -> tuple:
    # NaN != NaN and -0.0 == 0.0: compare floats by their bits
    return tuple(sorted((k, v.hex() if isinstance(v, float) else v) for k, v in row.items()))


def _check(event_type: str, version: int | None, values: list[bytes | None]) -> BatchDecoder:
    bd = BatchDecoder(event_type, version)
    batch, idx, rejects = bd.decode(values)
    rows, kept, want_rejects = _reference(event_type, version, values)
    assert batch.schema == pa.RecordBatch.from_pylist(rows, schema=bd.schema).schema
    assert batch.schema.metadata == {b"event_type": event_type.encode()}
    assert [_comparable(r) for r in batch.to_pylist()] == [_comparable(r) for r in rows]
    assert idx.tolist() == kept
    assert [(i, _stable(r)) for i, r in rejects] == want_rejects
    assert bd.block_values + bd.single_values == len(values)
    return bd


def _values(sv: schemas.SchemaVersion, data: st.DataObject, at_least: int) -> list[bytes]:
    """Encoded records of ``sv``: a few drawn ones, repeated to make a block of ``at_least`` or more."""
    records = data.draw(st.lists(_records(sv.raw, allow_nan=True), min_size=1, max_size=12))
    enc = AvroEncoder(sv.event_type, sv.version)
    once = [enc.encode(r) for r in records]
    return (once * (at_least // len(once) + 1))[: max(at_least, len(once))] + once


#: a few drawn record sets per schema; large blocks are slow to draw, which is expected here
_HYPOTHESIS = settings(max_examples=10, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])


@pytest.mark.parametrize("name", sorted(VERSIONS))
@_HYPOTHESIS
@given(data=st.data())
def test_clean_values_decode_in_one_block_exactly_as_one_by_one(name, data):
    sv = VERSIONS[name]
    values = _values(sv, data, LEAF + 1)
    bd = _check(sv.event_type, sv.version, values)
    assert bd.block_values == len(values)  # the block path was taken, not the fallback


def _corruptions(value: bytes, other_type_header: bytes) -> list[bytes | None]:
    body = value[10:]
    return [
        None,  # a tombstone
        b"",
        value[:-1],  # truncated
        value[: 10 + len(body) // 2],
        value + b"\x00",  # a trailing byte: the per-record reader ignores it, and so must the block path
        value + b"garbage!",
        value + body,  # two records in one value: the per-record reader takes the first, ignores the rest
        value[:10] + b"\xff" + body[1:],  # a varint / string length garbled
        value[:10] + bytes([body[0] | 0x80, 0x00]) + body[1:],  # a non-canonical (two-byte) first varint
        value[:10] + b"\x02\xff" + body[2:],  # invalid UTF-8 (or another value) in the first field
        value[:10] + body[:-1] + bytes([body[-1] ^ 0x5A]),  # last byte flipped
        MAGIC + b"\x00" * 8 + body,  # unknown fingerprint
        other_type_header + body,  # another event type's header
        b"{\"json\": true}",
    ]


@pytest.mark.parametrize("name", sorted(VERSIONS))
@_HYPOTHESIS
@given(data=st.data())
def test_corrupt_values_are_rejected_alone_with_the_per_record_reason(name, data):
    sv = VERSIONS[name]
    values: list[bytes | None] = list(_values(sv, data, 3 * LEAF))
    other = next(o for o in schemas.all_versions() if o.event_type != sv.event_type)
    bad = _corruptions(values[0], MAGIC + other.fingerprint)  # (only its length is used)
    picks = data.draw(st.lists(st.tuples(st.integers(0, len(values) - 1), st.integers(0, len(bad) - 1)),
                               min_size=1, max_size=4))
    clean = list(values)
    for at, which in picks:
        values[at] = _corruptions(clean[at], MAGIC + other.fingerprint)[which]
    _check(sv.event_type, sv.version, values)


def test_older_writer_versions_are_resolved_one_by_one_and_kept_in_order():
    old, new = (sv for sv in schemas.all_versions() if sv.event_type == "cascade_alert")
    rec = {"episode_id": "e1", "severity_level": 1, "alert_type": "start", "scope": "BTC", "direction": "long_liquidation",
           "kind": "cascade", "alert_ts": 1, "minute_ts": 2, "start_ts": 3, "detected_ts": None, "liq_usd": 1.5,
           "minute_liq_usd": 0.5, "threshold_usd": 1.0, "severity": 1.5, "price_move_pct": None,
           "oi_change_usd": -2.0, "oi_change_pct": None, "feedback": None, "committed_ts": 4, "run_id": "r"}
    v1 = AvroEncoder("cascade_alert", old.version)
    v2 = AvroEncoder("cascade_alert", new.version)
    values = [(v1 if i % 7 == 0 else v2).encode({**rec, "severity_level": i}) for i in range(100)]
    bd = _check("cascade_alert", None, values)
    assert bd.single_values == 15 and bd.block_values == 85
    batch, _, _ = bd.decode(values)
    assert batch.column("severity_level").to_pylist() == list(range(100))
    assert batch.column("fuel_1pct_usd").null_count == 100


def test_hand_built_block_equals_the_spec_values():
    """Values written by hand from the Avro spec (independent of both decoders)."""
    fp = schemas.latest("open_interest").fingerprint
    def zz(n: int) -> bytes:  # zigzag varint
        z, out = (n << 1) ^ (n >> 63), bytearray()
        while z >= 0x80:
            out.append((z & 0x7F) | 0x80)
            z >>= 7
        return bytes(out + bytes([z]))
    def s(x: str) -> bytes:
        b = x.encode()
        return zz(len(b)) + b
    import struct
    values = []
    for i in range(40):
        body = (s("okx") + s("BTC-USDT-SWAP") + s("BTC") + s("USDT") + zz(0)  # kind = perpetual (index 0)
                + (zz(1) + zz(1_700_000_000_000 + i) if i % 2 else zz(0))  # expiry: union branch 1 / null
                + zz(1_700_000_000_000_000 + i) + zz(1_700_000_000_000_500) + struct.pack("<d", 1000.0 + i)
                + (zz(1) + struct.pack("<d", -0.0) if i % 3 else zz(0)))
        values.append(MAGIC + fp + body)
    bd = BatchDecoder("open_interest")
    batch, idx, rejects = bd.decode(values)
    assert bd.block_values == 40 and not rejects and idx.tolist() == list(range(40))
    assert batch.column("expiry").to_pylist() == [1_700_000_000_000 + i if i % 2 else None for i in range(40)]
    assert batch.column("event_time").to_pylist()[39] == 1_700_000_000_000_039
    assert batch.column("kind").to_pylist() == ["perpetual"] * 40
    oi = batch.column("open_interest_usd").to_pylist()
    assert oi[0] is None and math.copysign(1.0, oi[1]) == -1.0
