"""Benchmark data: simulator messages and their normalized events, and large synthetic event sets.

Two sources, both seeded:

* ``simulator_pool`` runs the cascade simulator (``connectors.simulator``) for a
  stated scenario, duration and trade rate, and normalizes its raw messages with
  the venue normalizers: realistic multi-venue events (trades, liquidations, OI,
  funding) for the stages whose sizes are moderate (normalize, Kafka, streaming).
* ``synth_tables`` generates normalized events directly as Arrow tables with
  NumPy, for the sizes the simulator is too slow for (it formats every message in
  Python, ~110k msg/s, and normalizing costs about as much again): ComputeBars at
  millions of events and the 10M-50M event backfills. The instrument list is the
  simulator's (4 venues x 8 symbols); the event mix is 97.5% trades, 0.5% liquidations,
  1% OI snapshots, 1% mark/funding updates (liquidations are rarer still in real feeds); prices follow a random walk per
  instrument, sizes are log-normal.
"""

from __future__ import annotations

import multiprocessing as mp
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from connectors.normalize import TOPICS
from schemas.arrow import arrow_schema

DAY_US = 86_400_000_000
#: 2024-01-01T00:00:00Z: start of the synthetic archives
SYNTH_START_US = 1_704_067_200_000_000
EVENT_TYPES = ("trade", "liquidation", "open_interest", "funding")
#: share of each event type in the synthetic mix
MIX = {"trade": 0.975, "liquidation": 0.005, "open_interest": 0.01, "funding": 0.01}

# (exchange, symbol template, quote): the simulator's venues
_VENUES = [("binance-futures", "{b}USDT", "USDT"), ("bybit", "{b}USDT", "USDT"),
           ("okx", "{b}-USDT-SWAP", "USDT"), ("hyperliquid", "{b}", "USD")]
_BASES = [("BTC", 60_000.0), ("ETH", 3_000.0), ("SOL", 150.0), ("XRP", 0.6), ("BNB", 550.0),
          ("DOGE", 0.15), ("ADA", 0.45), ("AVAX", 35.0)]


@dataclass(frozen=True)
class Instruments:
    exchange: pa.Array
    symbol: pa.Array
    base: pa.Array
    quote: pa.Array
    price: np.ndarray

    @property
    def n(self) -> int:
        return len(self.price)


def instruments() -> Instruments:
    ex, sym, base, quote, price = [], [], [], [], []
    for e, tmpl, q in _VENUES:
        for b, p in _BASES:
            ex.append(e)
            sym.append(tmpl.format(b=b))
            base.append(b)
            quote.append(q)
            price.append(p)
    return Instruments(pa.array(ex), pa.array(sym), pa.array(base), pa.array(quote), np.array(price))


def _take(dictionary: pa.Array, idx: np.ndarray) -> pa.Array:
    # dictionary-encoded then cast: a C-level take, no Python string per row
    return pa.DictionaryArray.from_arrays(pa.array(idx.astype(np.int32)), dictionary).cast(pa.string())


def synth_tables(n: int, start_us: int, span_us: int, seed: int, inst: Instruments | None = None,
                 offset0: int = 0) -> dict[str, pa.Table]:
    """``n`` normalized events with event times uniform in [start_us, start_us + span_us), per event type.

    Tables follow ``schemas.arrow.arrow_schema(et, with_position=True)``: the Kafka
    position columns are filled as if event type ``et`` was read from one partition
    of its topic starting at ``offset0`` (the archive deduplicates on them).
    """
    inst = inst or instruments()
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, [MIX[et] for et in EVENT_TYPES])
    out = {}
    for et, k in zip(EVENT_TYPES, counts, strict=True):
        k = int(k)
        t = np.sort(rng.integers(start_us, start_us + span_us, size=k, dtype=np.int64))
        i = rng.integers(0, inst.n, size=k)
        # a per-instrument random walk, in time order within this table
        drift = np.cumsum(rng.normal(0, 2e-4, size=k))
        price = inst.price[i] * np.exp(drift - drift.mean())
        size_usd = np.exp(rng.normal(7.0, 1.5, size=k))
        cols: dict[str, pa.Array] = {
            "exchange": _take(inst.exchange, i), "symbol": _take(inst.symbol, i),
            "base": _take(inst.base, i), "quote": _take(inst.quote, i),
            "kind": pa.array(np.full(k, "perpetual", dtype=object), pa.string()) if k < 1000 else
            _take(pa.array(["perpetual"]), np.zeros(k, np.int32)),
            "expiry": pa.nulls(k, pa.int64()),
            "event_time": pa.array(t),
            "ingest_time": pa.array(t + rng.integers(1_000, 50_000, size=k)),
        }
        if et == "trade":
            cols.update(trade_id=pa.nulls(k, pa.string()), price=pa.array(price), size=pa.array(size_usd / price),
                        notional_usd=pa.array(size_usd),
                        taker_side=_take(pa.array(["buy", "sell"]), rng.integers(0, 2, size=k)))
        elif et == "liquidation":
            liq = size_usd * 20
            cols.update(side=_take(pa.array(["long", "short"]), rng.integers(0, 2, size=k)), price=pa.array(price),
                        size=pa.array(liq / price), notional_usd=pa.array(liq), order_id=pa.nulls(k, pa.string()))
        elif et == "open_interest":
            oi = 1e5 / inst.price[i] * 1e4 * (1 + rng.normal(0, 0.01, size=k))
            cols.update(open_interest=pa.array(oi), open_interest_usd=pa.array(oi * price))
        else:
            cols.update(mark_price=pa.array(price), index_price=pa.array(price * (1 - 1e-4)),
                        funding_rate=pa.array(rng.normal(1e-4, 5e-5, size=k)),
                        next_funding_time=pa.array((t // 1000 // 28_800_000 + 1) * 28_800_000))
        cols.update(_topic=_take(pa.array([TOPICS[et]]), np.zeros(k, np.int32)),
                    _partition=pa.array(np.zeros(k, np.int32)),
                    _offset=pa.array(np.arange(offset0, offset0 + k, dtype=np.int64)))
        schema = arrow_schema(et, with_position=True)
        out[et] = pa.table([cols[f.name].cast(f.type) for f in schema], schema=schema)
    return out


def write_synth_archive(archive: Path, n_events: int, days: int, seed: int, chunk: int = 2_000_000,
                        hours_per_day: int = 24) -> dict[str, object]:
    """A normalized-event archive (``pipelines.archive`` layout) of ``n_events`` spread over ``days`` UTC days.

    Written a chunk at a time (memory stays flat whatever ``n_events``), one
    Parquet file per event type, day and chunk, zstd as the streaming job writes.
    Events fall in the first ``hours_per_day`` hours of each day (fewer bars per
    day at the same events per bar). Returns the size, first day and file count.
    """
    inst = instruments()
    files = 0
    offsets: dict[str, int] = defaultdict(int)
    for d in range(days):
        day_start = SYNTH_START_US + d * DAY_US
        in_day = n_events // days + (n_events % days if d == days - 1 else 0)
        n_chunks = max(1, -(-in_day // chunk))
        span = hours_per_day * 3_600_000_000 // n_chunks
        for part in range(n_chunks):
            k = in_day // n_chunks + (in_day % n_chunks if part == n_chunks - 1 else 0)
            tables = synth_tables(k, day_start + part * span, span, seed * 100_003 + d * 1_009 + part, inst)
            day = np.datetime64(day_start // 1_000_000, "s").astype("datetime64[D]")
            for et, table in tables.items():
                if not table.num_rows:
                    continue
                table = table.set_column(table.schema.get_field_index("_offset"), "_offset",
                                         pa.array(np.arange(offsets[et], offsets[et] + table.num_rows, dtype=np.int64)))
                offsets[et] += table.num_rows
                folder = archive / et / f"date={day}"
                folder.mkdir(parents=True, exist_ok=True)
                pq.write_table(table, folder / f"part-bench-{uuid.uuid4().hex}.parquet", compression="zstd")
                files += 1
    first = np.datetime64(SYNTH_START_US // 1_000_000, "s").astype("datetime64[D]")
    return {"events": n_events, "days": days, "hours_per_day": hours_per_day, "first_day": str(first),
            "files": files}


# ---- simulator ---------------------------------------------------------------------------------
@dataclass
class SimPool:
    """One simulator run: its raw messages (by venue) and the normalized records they became."""

    scenario: str
    seed: int
    duration: str
    trades_per_second: float
    lines_by_venue: dict[str, list[str]]
    records: list[tuple[str, dict]]
    generate_s: float

    @property
    def messages(self) -> int:
        return sum(len(v) for v in self.lines_by_venue.values())

    def config(self) -> dict[str, object]:
        return {"scenario": self.scenario, "seed": self.seed, "duration": self.duration,
                "trades_per_second": self.trades_per_second, "raw_messages": self.messages,
                "normalized_events": len(self.records),
                "generate_msgs_per_s": round(self.messages / self.generate_s) if self.generate_s else None}


def simulator_pool(scenario: str = "A", seed: int = 7, duration: str = "10m",
                   trades_per_second: float = 400.0) -> SimPool:
    """Run the simulator and normalize every message (records keep the simulator's times)."""
    import time

    from connectors.kafka.publish import account
    from connectors.simulator import Simulation

    t0 = time.perf_counter()
    msgs = list(Simulation(scenario, seed, duration=duration, trades_per_second=trades_per_second).messages())
    gen_s = time.perf_counter() - t0
    lines: dict[str, list[str]] = defaultdict(list)
    records: list[tuple[str, dict]] = []
    normalizers: dict = {}
    for m in msgs:
        lines[m.venue].append(m.raw)
        _, outcome = account(m, normalizers)
        records.extend(outcome.records)
    return SimPool(scenario, seed, duration, trades_per_second, dict(lines), records, gen_s)


def records_to_tables(records: list[tuple[str, dict]]) -> dict[str, pa.Table]:
    """(event_type, record) pairs -> one Arrow table per event type (no position columns)."""
    by: dict[str, list[dict]] = defaultdict(list)
    for et, r in records:
        by[et].append(r)
    return {et: pa.Table.from_pylist(rs, schema=arrow_schema(et)) for et, rs in by.items()}


def iter_batches(tables: dict[str, pa.Table], rows: int = 50_000) -> Iterator[pa.RecordBatch]:
    from pipelines.sinks import compact_batches

    for table in tables.values():
        yield from compact_batches(table, rows)


#: producer overrides of the two ways a backlog lies in Kafka. "bulk": published as fast as possible
#: (``liqstream replay FILE``): few large record batches. "paced": the layout a live feed leaves, a few
#: records per batch (a feed of ~1,400 msg/s with a 20 ms linger over 12 partitions batches 2-3 records),
#: made here without the wait by capping the batch at 512 bytes; acks=1 without idempotence lets many
#: small produce requests be in flight, so a test or bench builds 100k events of it in about a minute
LAYOUTS: dict[str, dict[str, object]] = {
    "bulk": {},
    "paced": {"linger_ms": 0, "batch_size": 512, "acks": 1, "enable_idempotence": False,
              "max_in_flight_requests_per_connection": 50},
}


def in_time_order(tables: dict[str, pa.Table]) -> Iterator[tuple[str, dict]]:
    """(event_type, record) of every table, all types merged in event-time order (as a feed sends them)."""
    merged = pa.concat_tables([t.drop_columns([c for c in ("_topic", "_partition", "_offset") if c in t.column_names])
                               .append_column("_et", pa.array([et] * t.num_rows)) for et, t in tables.items()],
                              promote_options="permissive").sort_by("event_time")
    for rec in merged.to_pylist():  # the other types' columns are None: the Avro encoder ignores them
        yield rec.pop("_et"), rec


def publish_events(kafka, events: Iterator[tuple[str, dict]], layout: str = "bulk") -> int:
    """Publish (event_type, record) pairs with the producer settings of ``layout`` (:data:`LAYOUTS`)."""
    from connectors.kafka.producer import EventProducer
    from connectors.kafka.topics import ensure_topics

    ensure_topics(kafka)
    n = 0
    with EventProducer(kafka, **LAYOUTS[layout]) as producer:
        encode, send = producer.encode_event, producer.send_encoded
        for et, rec in events:
            send(*encode(et, rec))
            n += 1
        producer.flush()
    return n


class RdkafkaEventProducer:
    """The load generator's producer on librdkafka (confluent-kafka): the same records, encoding,
    keys and timestamps as :class:`connectors.kafka.producer.EventProducer` (its ``encode_event``)
    and the same delivery settings (acks=all, idempotent, ``KafkaSettings.producer_linger_ms``), with the per-record send in C.

    The paced benchmarks measure the job, not the generator: a kafka-python send costs tens of µs of
    Python per record, so at 10k events/s two kafka-python producer processes took a large share of
    the two cores the job runs on (2026-12-03: 7.7k/s achieved of a 10k target on an idle machine)."""

    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka import Producer

        from connectors.config import KafkaSettings
        from connectors.kafka.producer import EventEncoder

        settings = KafkaSettings.from_env(bootstrap_servers=bootstrap)  # KAFKA_PRODUCER_LINGER_MS reaches the feed
        self.encode_event = EventEncoder().encode_event
        self._errors: list[str] = []
        self._p = Producer({**settings.rdkafka_config(), "acks": "all", "enable.idempotence": True,
                            "linger.ms": settings.producer_linger_ms, "batch.size": 256 * 1024,
                            "queue.buffering.max.messages": 1_000_000})

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self._errors.append(str(err))

    def send_encoded(self, topic: str, key: bytes, value: bytes, timestamp_ms: int | None) -> None:
        while True:
            try:
                self._p.produce(topic, value=value, key=key, timestamp=timestamp_ms or 0,
                                on_delivery=self._on_delivery)
                break
            except BufferError:  # local queue full: serve delivery reports, then retry
                self._p.poll(0.05)
        self._p.poll(0)

    def flush(self, timeout: float = 60.0) -> None:
        left = self._p.flush(timeout)
        if left or self._errors:
            raise RuntimeError(f"{left} message(s) still queued, {len(self._errors)} failed; first error: "
                               f"{self._errors[:1]}")

    def __enter__(self) -> RdkafkaEventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()


def run_producers(target: Callable[..., None], args_per_process: Sequence[tuple], timeout_s: float,
                  join_timeout_s: float = 30.0) -> list[dict]:
    """Run ``target(*args, result_q)`` in one spawned process per entry of ``args_per_process``
    and return what each put on ``result_q`` (one dict per process, in the order they finished).

    The benchmarks that publish at a paced rate (bench/streaming.py, bench/alert_latency.py) split
    their rate over several producer processes: one kafka-python producer tops out near 10k msg/s
    on an idle core, and the GIL keeps threads from adding to it. Spawned, not forked: the parent
    runs the stream job's threads, which a fork would copy mid-state."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, q)) for args in args_per_process]
    for pr in procs:
        pr.start()
    try:
        return [q.get(timeout=timeout_s) for _ in procs]
    finally:
        for pr in procs:
            pr.join(timeout=join_timeout_s)
            if pr.is_alive():  # a producer stuck after an error in the parent: it is ours to end
                pr.terminate()
