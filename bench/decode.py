"""Avro decode of a batch of Kafka values, three ways (issue 21: where the catch-up's CPU goes).

    .venv/bin/python -m bench.decode [N]      # N trade records (default 100,000), best of 3 each

The stream job's readers (``connectors.kafka.beam_source.ReadRangeBatches``) decode one value at a
time with ``fastavro.schemaless_reader`` and build the Arrow batch with ``RecordBatch.from_pylist``.
The alternatives measured here decode the same bodies in one call: the values' bodies (after the
10-byte single-object header) are concatenated into one Avro object-container block under the
registry's writer schema, then read by fastavro's container reader (still one dict per record) or
by Polars' Rust reader (``polars.read_avro``, columns, no dict per record). Every way's table is
checked equal to the per-record path's (Polars' strings and enums cast to the project's Arrow schema).
Polars is a peer of the bench extra (``.[bench]``), not a product dependency: this is evidence for
a decision, not the product's path.
"""

from __future__ import annotations

import sys
import time
from io import BytesIO

SYNC = b"liqstream-bench!"  # any 16 bytes: the container's sync marker


def _container(header: bytes, bodies: list[bytes]) -> bytes:
    from fastavro.io.binary_encoder import BinaryEncoder

    body = b"".join(bodies)
    buf = BytesIO()
    enc = BinaryEncoder(buf)
    enc.write_long(len(bodies))
    enc.write_long(len(body))
    enc.flush()
    return header + buf.getvalue() + body + SYNC


def main(argv: list[str] | None = None) -> int:
    import fastavro
    import pyarrow as pa

    from bench.data import SYNTH_START_US, synth_tables
    from connectors.avro import HEADER_LEN, AvroDecoder, AvroEncoder
    from schemas.arrow import arrow_schema

    n = int((argv or sys.argv[1:] or ["100000"])[0])
    table = synth_tables(int(n / 0.975), SYNTH_START_US, 600_000_000, 1)["trade"]
    values = [AvroEncoder("trade").encode(r) for r in table.drop_columns(["_topic", "_partition", "_offset"]).to_pylist()]
    schema = AvroDecoder("trade").fast_schema
    target = arrow_schema("trade")
    hdr = BytesIO()
    fastavro.writer(hdr, schema, [], sync_marker=SYNC)
    header = hdr.getvalue()

    def per_record() -> pa.RecordBatch:
        rows = []
        for v in values:
            buf = BytesIO(v)
            buf.seek(HEADER_LEN)
            rows.append(fastavro.schemaless_reader(buf, schema, None))
        return pa.RecordBatch.from_pylist(rows, schema=target)

    def fastavro_block() -> pa.RecordBatch:
        data = _container(header, [v[HEADER_LEN:] for v in values])
        return pa.RecordBatch.from_pylist(list(fastavro.reader(BytesIO(data))), schema=target)

    ways = {"fastavro per record + from_pylist (the readers today)": per_record,
            "fastavro container block + from_pylist": fastavro_block}
    try:
        import polars as pl

        def polars_block() -> pa.RecordBatch:
            data = _container(header, [v[HEADER_LEN:] for v in values])
            t = pl.read_avro(BytesIO(data)).to_arrow()
            return pa.RecordBatch.from_arrays([t[f.name].combine_chunks().cast(f.type) for f in target], schema=target)

        ways[f"polars {pl.__version__} read_avro of the block"] = polars_block
    except ImportError:
        print("polars not installed (pip install -e '.[bench]'): its row is skipped")
    want = per_record()
    for name, fn in ways.items():
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            got = fn()
            best = min(best, time.perf_counter() - t0)
        print(f"{name}: {len(values) / best:,.0f} records/s, equal to the per-record path: {got.equals(want)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
