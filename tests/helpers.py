"""Test data built independently of liqstream's code: raw venue messages and their expected totals."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from decimal import Decimal

from connectors.sources.capture import RawMessage


def memory_warehouse():
    """An in-memory DuckDB with every mart migrated, in UTC (the DQ tests' database)."""
    import duckdb

    from pipelines import warehouse

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    warehouse.migrate(con)
    return con

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


def expected_liquidation_totals(db, window_end=None) -> dict[tuple[str, str, str], dict]:
    """The saved query liquidation_totals by hand: Python over liquidations_1m's raw rows (the base
    table, not the view the query reads). Keys (level, name, span); window_end defaults to the close
    of the latest liquidation minute."""
    from datetime import timedelta

    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        cur = con.execute("SELECT * FROM liquidations_1m")
        cols = [d[0] for d in cur.description]
        rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()
    end = window_end or max(r["minute"] for r in rows) + timedelta(minutes=1)
    out: dict = {}
    for span, hours in (("1h", 1), ("4h", 4), ("12h", 12), ("24h", 24)):
        for r in rows:
            if not end - timedelta(hours=hours) <= r["minute"] < end:
                continue
            for level, name in (("venue", r["exchange"]), ("base", r["base"])):
                t = out.setdefault((level, name, span), {"long_usd": Decimal(0), "short_usd": Decimal(0),
                                                         "liquidations": 0, "largest_usd": Decimal(0)})
                t[f"{r['side']}_usd"] += r["notional_usd"]
                t["liquidations"] += r["liq_count"]
                t["largest_usd"] = max(t["largest_usd"], r["max_notional_usd"])
    for t in out.values():
        t["total_usd"] = t["long_usd"] + t["short_usd"]
        t["window_end"] = end
    return out


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


# ---- the live desk (`liqstream serve`) ---------------------------------------------------------------
class DeskServer:
    """`liqstream serve` as its own process on a free loopback port (the real uvicorn server)."""

    def __init__(self, db, log_path, *extra: str) -> None:
        import os
        import subprocess
        import sys
        import time
        import urllib.request

        from connectors.kafka.local_broker import free_port
        from tests.conftest import REPO

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "LIQSTREAM_"))}
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "--db", str(db),
                                      "--port", str(self.port), "--poll", "0.25", *extra],
                                     cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180  # import + bind: seconds alone, much longer on a loaded machine
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: {open(log_path).read()[-2000:]}")
            try:
                urllib.request.urlopen(self.url + "healthz", timeout=2).read()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"serve did not answer /healthz within 180 s: {open(log_path).read()[-2000:]}")

    def get(self, path: str) -> tuple[int, str]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=60) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stop(self) -> None:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        self._log.close()

    def __enter__(self) -> DeskServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class DeskPage:
    """What a desk page shows, parsed from its HTML: totals cells, episode rows, plots and their bands."""

    def __init__(self, html: str) -> None:
        from html.parser import HTMLParser

        self.totals: dict[tuple[str, str, str, str], Decimal] = {}  # (level, name, span, side) -> USD
        self.episodes: list[dict] = []
        self.plots: list[str] = []
        self.bands: dict[str, int] = {}
        self.bars: dict[str, int] = {}
        page = self

        class _P(HTMLParser):
            row: tuple[str, str] | None = None
            plot: str | None = None

            def handle_starttag(self, tag: str, attrs: list) -> None:
                a = dict(attrs)
                if tag == "tr" and "data-level" in a:
                    self.row = (a["data-level"], a["data-name"])
                if tag == "td" and self.row and "data-usd" in a:
                    page.totals[(*self.row, a["data-span"], a["data-side"])] = Decimal(a["data-usd"])
                if tag == "tr" and "data-episode" in a:
                    page.episodes.append({"id": a["data-episode"], "class": a.get("class", "")})
                if tag == "svg" and "data-plot" in a:
                    self.plot = a["data-plot"]
                    page.plots.append(self.plot)
                    page.bands[self.plot] = page.bars[self.plot] = 0
                if tag == "rect" and self.plot and a.get("class") in ("band", "bar"):
                    (page.bands if a["class"] == "band" else page.bars)[self.plot] += 1

            def handle_endtag(self, tag: str) -> None:
                if tag == "tr":
                    self.row = None
                if tag == "svg":
                    self.plot = None

        _P().feed(html)


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
                 "cascade_alerts", "oi_deltas", "contagion", "liquidation_levels", "liquidation_fuel")


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
