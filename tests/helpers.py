"""Test data built independently of liqstream's code: raw venue messages and their expected totals."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from decimal import Decimal

from connectors.sources.capture import RawMessage

T0_MS = 1_767_225_600_000  # 2026-01-01 00:00:00 UTC


def binance_force_orders(n: int, seed: int, t0_ms: int = T0_MS, span_s: int = 600,
                         symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT")) -> list[RawMessage]:
    """n Binance forceOrder messages (documented wire format) spread over span_s seconds."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t = t0_ms + rng.randrange(span_s * 1000)
        sym = rng.choice(symbols)
        price = {"BTCUSDT": 60000, "ETHUSDT": 3000, "SOLUSDT": 150}[sym] * (1 + rng.uniform(-0.05, 0.05))
        qty = round(rng.uniform(0.001, 5), 3)
        order = {"s": sym, "S": rng.choice(["SELL", "SELL", "BUY"]), "o": "LIMIT", "f": "IOC", "q": f"{qty}",
                 "p": f"{price * 0.99:.2f}", "ap": f"{price:.2f}", "X": "FILLED", "l": f"{qty}", "z": f"{qty}", "T": t}
        raw = json.dumps({"stream": f"{sym.lower()}@forceOrder", "data": {"e": "forceOrder", "E": t + 5, "o": order}})
        out.append(RawMessage("binance-futures", (t + 50) * 1000, raw, f"gen:{i}"))
    return out


def expected_liquidations(messages: list[RawMessage]) -> dict[tuple, tuple[int, Decimal]]:
    """(symbol, side, minute epoch s) -> (count, USD) computed with plain json and Decimal."""
    acc: dict[tuple, list] = defaultdict(lambda: [0, Decimal(0)])
    for m in messages:
        o = json.loads(m.raw)["data"]["o"]
        key = (o["s"], "long" if o["S"] == "SELL" else "short", o["T"] // 60_000 * 60)
        acc[key][0] += 1
        acc[key][1] += (Decimal(o["ap"]) * Decimal(o["z"])).quantize(Decimal("0.000001"))
    return {k: (n, usd) for k, (n, usd) in acc.items()}


def mart_liquidations(db) -> dict[tuple, tuple[int, Decimal]]:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            "SELECT symbol, side, epoch(minute)::BIGINT, liq_count, notional_usd FROM liquidations_1m").fetchall()
    finally:
        con.close()
    return {(s, side, m): (n, usd) for s, side, m, n, usd in rows}


def read_batches_fn(groups: list[tuple[str, list[dict]]]):
    """A DoFn yielding RecordBatches of (event_type, records) groups: builds the batches inside
    the pipeline (the way the real reader does), not via Create."""
    import apache_beam as beam

    from pipelines.transforms.bars import records_to_batches

    class _ReadBatches(beam.DoFn):
        def process(self, _):
            for event_type, records in groups:
                yield records_to_batches(event_type, records)

    return _ReadBatches()


def fetch_chunk_dying(marker_dir: str, deaths: int, rng, out_dir: str):
    """The reader processes' per-chunk task (connectors.kafka.fetch), except that one reader dies
    mid-chunk in each of the first ``deaths`` fetch attempts (each attempt reads into its own
    directory): a reader death at a known point, without a sleep racing the pool. Use as
    ``functools.partial(fetch_chunk_dying, dir, n)``; ``dir`` gets one marker file per death."""
    import hashlib
    import os

    from connectors.kafka.fetch import _fetch_chunk

    marker = os.path.join(marker_dir, "death-" + hashlib.sha1(out_dir.encode()).hexdigest()[:12])
    # attempts run one after another, so the markers of earlier attempts are all there to count
    if not os.path.exists(marker) and len(os.listdir(marker_dir)) < deaths:
        try:  # O_EXCL: one reader of the attempt creates the marker and dies, the others read on
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            pass
        else:
            os._exit(1)
    return _fetch_chunk(rng, out_dir)


#: every mart derived from the topics: what must not depend on how the events were cut into cycles
DERIVED_MARTS = ("bars_1m", "bars_1m_symbol", "liquidations_1m", "late_events", "rejects", "cascades",
                 "cascade_alerts", "oi_deltas", "contagion")


def mart_rows(db, tables: tuple[str, ...] = DERIVED_MARTS) -> dict[str, list[tuple]]:
    """Every row of each mart, in a total order, for exact comparison (NaN made comparable)."""
    import math

    import duckdb

    def cell(v):
        return "NaN" if isinstance(v, float) and math.isnan(v) else v

    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: [tuple(cell(v) for v in row) for row in con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()]
                for t in tables}
    finally:
        con.close()


def mart_differences(a: dict[str, list[tuple]], b: dict[str, list[tuple]]) -> dict[str, int]:
    """Rows in one and not the other, per mart (empty: equal row for row on every column)."""
    out = {}
    for t in a:
        sa, sb = set(a[t]), set(b[t])
        if sa != sb or len(a[t]) != len(b[t]):
            out[t] = len(sa ^ sb) or abs(len(a[t]) - len(b[t]))
    return out


def reader_task_stalling(marker: str, rng, out_dir: str):
    """A reader's per-chunk task that never ends (a read stalled on the broker); it creates
    ``marker`` first, so a test knows the reader is inside it."""
    import time

    open(marker, "w").close()
    time.sleep(3600)
