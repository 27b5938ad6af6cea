"""The vectorized record-batch parser (ADR 060) against kafka-python's own parsing, on batches built by
kafka-python's DefaultRecordBatchBuilder: the same records (offset, timestamp, key, value), the same
fetch position after a response, the same errors for corrupt batches, whatever the layout."""

from __future__ import annotations

import random
import struct

import pytest
from crc32c import crc32c
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.legacy_records import LegacyRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords
from kafka.structs import TopicPartition

from connectors.kafka.batch_parse import Columns, Fallback, parse
from connectors.kafka.reader import ColumnarPartitionRecords

TP = TopicPartition("t", 0)
T0 = 1_700_000_000_000


def build(base: int, recs: list[tuple[bytes | None, bytes | None, int]], codec: int = 0, deltas=None,
          headers=None, transactional: bool = False) -> bytes:
    """One v2 batch at ``base``; ``deltas``: the records' offset deltas (default 0, 1, 2...)."""
    b = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=transactional,
                                  producer_id=7 if transactional else -1, producer_epoch=0 if transactional else -1,
                                  base_sequence=0 if transactional else -1, batch_size=1 << 30)
    for i, (k, v, ts) in enumerate(recs):
        b.append(deltas[i] if deltas else i, timestamp=ts, key=k, value=v, headers=headers or [])
    buf = b.build()
    struct.pack_into(">q", buf, 0, base)
    return bytes(buf)


def recrc(batch: bytes | bytearray) -> bytes:
    """The batch with its CRC-32C made right again (after an edit)."""
    out = bytearray(batch)
    struct.pack_into(">I", out, 17, crc32c(bytes(out[21:])))
    return bytes(out)


def kafka_python(data: bytes, fetch_offset: int = 0) -> tuple[list[tuple], int]:
    """(records, next fetch offset) as kafka-python's PartitionRecords gives them."""
    part = Fetcher.PartitionRecords(fetch_offset, TP, MemoryRecords(data))
    recs = []
    while part:  # an error after some records is raised by the next take()
        recs += [(r.offset, r.timestamp, r.key, r.value) for r in part.take()]
    return recs, part.next_fetch_offset


def columnar(data: bytes, fetch_offset: int = 0) -> tuple[list[tuple], int]:
    part = ColumnarPartitionRecords(fetch_offset, TP, MemoryRecords(data))
    out = []
    while part:  # two items a take: a position between them must be right too
        for item in part.take(2):
            if isinstance(item, Columns):
                out += zip(item.offsets.tolist(), item.timestamps.tolist(), item.keys.to_pylist(),
                           item.values.to_pylist(), strict=True)
            else:
                out.append((item.offset, item.timestamp, item.key, item.value))
    return out, part.next_fetch_offset


def random_log(rnd: random.Random, batches: int, codecs=(0, 1, 4), max_records: int = 40) -> tuple[bytes, int]:
    data, base = b"", rnd.randint(0, 10**12)
    first = base
    for _ in range(batches):
        n = rnd.randint(1, max_records)
        recs = [(None if rnd.random() < 0.1 else rnd.randbytes(rnd.randint(0, 20)),
                 None if rnd.random() < 0.1 else rnd.randbytes(rnd.choice((0, 1, 63, 64, 200, 9_000))),
                 T0 + rnd.randint(-10**6, 10**9)) for _ in range(n)]
        gaps = sorted(rnd.sample(range(3 * n), n)) if rnd.random() < 0.3 else None  # compacted-like offsets
        data += build(base, recs, rnd.choice(codecs), gaps)
        base += (gaps[-1] if gaps else n - 1) + 1 + rnd.choice((0, 0, 5))
    return data, first


@pytest.mark.parametrize("seed", range(6))
def test_random_logs_parse_as_kafka_python_does(seed):
    rnd = random.Random(seed)
    data, first = random_log(rnd, rnd.choice((1, 3, 60)))
    want = kafka_python(data, first)
    assert want[0]  # the comparison compares something
    got = columnar(data, first)
    assert got == want
    parsed = parse(data)
    assert all(isinstance(p, Columns) for p in parsed.parts) and len(parsed.parts) == 1  # no fallback needed
    # a fetch offset inside the log (a range starting mid-batch): the records before it are dropped
    for at in (want[0][len(want[0]) // 2][0], want[0][-1][0], want[0][0][0] + 1):
        assert columnar(data, at) == kafka_python(data, at)


def test_every_cut_of_a_response_gives_its_whole_batches_and_the_position_after_them():
    """A response cut at its byte limit: its truncated last batch is left out (fetched again)."""
    rnd = random.Random(9)
    data, first = random_log(rnd, 4, max_records=5)
    for cut in range(0, len(data) + 1, 7):
        assert columnar(data[:cut], first) == kafka_python(data[:cut], first), cut


def test_an_offset_or_timestamp_off_by_one_is_seen():
    """What the comparison checks is real: a batch whose offset deltas or first timestamp are shifted
    reads differently (guards against a parser that ignores the deltas)."""
    recs = [(b"k", b"v%d" % i, T0 + 10 * i) for i in range(5)]
    data = build(100, recs)
    offsets, stamps = parse(data).parts[0].offsets.tolist(), parse(data).parts[0].timestamps.tolist()
    assert offsets == [100, 101, 102, 103, 104] and stamps == [T0 + 10 * i for i in range(5)]
    gaps = build(100, recs, deltas=[0, 2, 3, 7, 9])
    assert parse(gaps).parts[0].offsets.tolist() == [100, 102, 103, 107, 109]
    assert columnar(gaps) == kafka_python(gaps) and kafka_python(gaps)[1] == 110


def test_log_append_time_batches_take_the_max_timestamp():
    recs = [(None, b"v%d" % i, T0 + i) for i in range(4)]
    batch = bytearray(build(0, recs))
    (attrs,) = struct.unpack_from(">h", batch, 21)
    struct.pack_into(">h", batch, 21, attrs | 0x08)
    struct.pack_into(">q", batch, 35, T0 + 999)  # max timestamp
    data = recrc(batch)
    assert columnar(data) == kafka_python(data)
    assert {r[1] for r in columnar(data)[0]} == {T0 + 999}


def test_tombstones_and_empty_values_stay_apart():
    recs = [(b"a", None, T0), (None, b"", T0), (b"", b"x", T0), (None, None, T0)]
    data = build(5, recs, codec=1)
    got = columnar(data)[0]
    assert [(k, v) for _, _, k, v in got] == [(b"a", None), (None, b""), (b"", b"x"), (None, None)]
    assert got == kafka_python(data)[0]


def test_a_batch_with_a_bad_crc_is_left_to_kafka_python_which_raises_as_before():
    good1 = build(0, [(None, b"a", T0)] * 3)
    bad = bytearray(build(3, [(None, b"b", T0)] * 3))
    bad[-1] ^= 0xFF  # a flipped bit in the last value: the CRC no longer matches
    good2 = build(6, [(None, b"c", T0)] * 3)
    data = good1 + bytes(bad) + good2
    parts = parse(data).parts
    assert [type(p) for p in parts] == [Columns, Fallback, Columns]
    assert parse(data).ends == [3, 6, 9]
    with pytest.raises(CorruptRecordError):
        kafka_python(data)
    part = ColumnarPartitionRecords(0, TP, MemoryRecords(data))
    first = part.take()  # the records before the corrupt batch come, then kafka-python's error
    assert sum(len(i) for i in first) == 3
    with pytest.raises(CorruptRecordError):
        part.take()


@pytest.mark.parametrize("edit", ["record_length", "value_length", "trailing_byte", "count", "varint"])
def test_a_structurally_corrupt_batch_with_a_valid_crc_goes_to_kafka_python(edit):
    """A batch whose CRC matches but whose records do not add up (a buggy producer): never read
    differently, never lost silently: kafka-python's own parsing raises for it, as before."""
    recs = [(b"key", b"value-%d\x00" % i, T0 + i) for i in range(4)]
    batch = bytearray(build(50, recs))
    if edit == "record_length":
        batch[61] += 2  # the first record's length varint (zigzag: +1)
    elif edit == "value_length":
        at = bytes(batch).index(b"value-0") - 1
        batch[at] -= 4  # two bytes shorter: a header count would be read from the value
    elif edit == "trailing_byte":
        at = bytes(batch).index(b"value-0") - 1
        batch[at] -= 2  # one byte shorter: a header count of 0 is read (the value's last byte), then a byte is left
    elif edit == "count":
        struct.pack_into(">i", batch, 57, 5)
    else:
        batch[61] |= 0x80  # the length varint runs into the next byte
    data = recrc(batch)
    assert isinstance(parse(data).parts[0], Fallback)
    with pytest.raises(CorruptRecordError):
        kafka_python(data)
    with pytest.raises(CorruptRecordError):
        columnar(data)


def test_headers_control_batches_and_old_magic_are_read_as_kafka_python_reads_them():
    with_headers = build(0, [(b"k", b"v", T0), (b"k2", None, T0 + 1)], headers=[("h", b"x")])
    assert isinstance(parse(with_headers).parts[0], Fallback)
    control = bytearray(build(2, [(b"\x00\x00\x00\x00", b"\x00\x00\x00\x00\x00\x00", T0)], transactional=True))
    (attrs,) = struct.unpack_from(">h", control, 21)
    struct.pack_into(">h", control, 21, attrs | 0x20)
    control = recrc(control)
    plain = build(3, [(None, b"after", T0)])
    legacy = LegacyRecordBatchBuilder(magic=1, compression_type=0, batch_size=1 << 20)
    legacy.append(0, timestamp=T0, key=b"old", value=b"v1")
    old = bytearray(legacy.build())
    struct.pack_into(">q", old, 0, 4)
    data = with_headers + control + plain + bytes(old)
    parsed = parse(data)
    assert [type(p) for p in parsed.parts] == [Fallback, Columns, Fallback]  # the control batch: no records
    assert parsed.ends == [2, 4, -1]  # an old-format batch: kafka-python tells its last offset
    assert columnar(data) == kafka_python(data)
    assert [r[0] for r in columnar(data)[0]] == [0, 1, 3, 4]


def test_an_empty_or_tiny_response():
    assert columnar(b"") == kafka_python(b"") == ([], 0)
    assert parse(b"\x00" * 11).parts == []


def test_a_failure_of_the_parser_itself_leaves_the_response_to_kafka_python(monkeypatch):
    import connectors.kafka.reader as reader

    def broken(*_a, **_k):
        raise IndexError("a bug")

    data, first = random_log(random.Random(4), 5)
    want = kafka_python(data, first + 3)
    monkeypatch.setattr(reader, "parse", broken)
    assert columnar(data, first + 3) == want
