"""A generated day in the marts, shared by the report, saved-query and status tests.

Built once per test session (module-level cache: the fixture is imported by several modules) and
kept small: a 3-hour simulator run of preset A's crowded-long market (4 bases, 3 venues, 1 trade
message/s) with its two BTC shocks moved into the first hours, backfilled from the capture through
the real Beam graph and DQ gate. About 30-40 s on this machine; the day holds several cascade
episodes (the shocks set off the cascade), OI deltas and a contagion ranking (60-minute window,
since a 3-hour day cannot fill the default 240-minute one).

The backfill's cost is mostly fixed (Beam pipeline, analytics, the Great Expectations gate): about
30 s on an idle 2-core machine, 60 s when other jobs share it, whatever the event count. So the
built day is kept in pytest's cache (``.pytest_cache/d/liqstream-generated-day/<key>``), keyed by a
hash of every source file that shapes it (connectors/, schemas/, pipelines/ except the report,
queries and status modules, and this file): any change to the simulator, the normalizers or the
pipeline rebuilds it; ``pytest --cache-clear`` forces a rebuild.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

DAY = date(2026, 3, 9)  # preset A starts 2026-03-09 12:00 UTC
BASES = ["BTC", "ETH", "SOL", "DOGE"]
VENUES = ["binance-futures", "bybit", "okx"]
_lock = threading.Lock()
_built: dict[str, GeneratedDay] = {}


@dataclass(frozen=True)
class GeneratedDay:
    root: Path
    db: Path
    capture: Path
    truth: dict


def build_generated_day(root: Path) -> GeneratedDay:
    from connectors.simulator.runner import Simulation
    from connectors.simulator.scenarios import Shock
    from connectors.sources.capture import CaptureWriter
    from pipelines.jobs.backfill import run_backfill
    from pipelines.settings import JobSettings
    from pipelines.transforms.config import AnalyticsConfig

    hour = 3600.0
    # The Shock overrides are not JSON-serializable for write_capture's truth file, so the
    # capture is written here from the Simulation directly (same writer, same format).
    sim = Simulation("A", 7, duration="3h", trades_per_second=1.0, symbols=BASES, venues=VENUES,
                     shocks=(Shock("macro", 0.25 * hour, 1.0 * hour, -0.0172, "BTC", "risk-off"),
                             Shock("whale_sell", 1.25 * hour, 0.5 * hour, -0.0172, "BTC", "whale sells")))
    capture = root / "A-3h.jsonl.gz"
    with CaptureWriter(capture) as w:
        for m in sim.messages():
            w.write(m.venue, m.received_at_us, m.raw, m.channel)
    truth = sim.truth.finish()
    db = root / "marts.duckdb"
    result = run_backfill(JobSettings(db=db, data_dir=root / "data", backfill_workers=1), DAY, DAY,
                          source="capture", captures=[str(capture)],
                          config=AnalyticsConfig(beta_windows_minutes=(60,)))
    assert result.status == "ok", result
    return GeneratedDay(root, db, capture, truth)


REPO = Path(__file__).resolve().parents[2]
_NOT_INPUTS = ("pipelines/report/", "pipelines/queries/", "pipelines/status.py")


def source_key() -> str:
    """sha1 over the files the generated day depends on (paths and contents)."""
    h = hashlib.sha1()
    files = [Path(__file__)]
    for top in ("connectors", "schemas", "pipelines"):
        files += [p for p in sorted((REPO / top).rglob("*")) if p.suffix in (".py", ".sql", ".avsc", ".json")
                  and not str(p.relative_to(REPO)).startswith(_NOT_INPUTS) and "__pycache__" not in p.parts]
    for p in files:
        h.update(str(p.relative_to(REPO)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def get_generated_day(config: pytest.Config) -> GeneratedDay:
    """The generated day: from pytest's cache when the sources are unchanged, else built (once per
    session; each test module wraps this in its own ``generated_day`` fixture)."""
    with _lock:
        if "day" in _built:
            return _built["day"]
        cache = Path(config.cache.mkdir("liqstream-generated-day"))
        final = cache / source_key()
        if not (final / "done.json").exists():
            for old in cache.iterdir():  # days of older sources
                shutil.rmtree(old, ignore_errors=True)
            work = cache / f"building-{final.name}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            day = build_generated_day(work)
            (work / "done.json").write_text(json.dumps({"truth": day.truth}, default=str))
            shutil.rmtree(final, ignore_errors=True)
            work.rename(final)  # another session sees a finished day or none
        truth = json.loads((final / "done.json").read_text())["truth"]
        _built["day"] = GeneratedDay(final, final / "marts.duckdb", final / "A-3h.jsonl.gz", truth)
        return _built["day"]


@pytest.fixture(scope="session")
def generated_day(pytestconfig: pytest.Config) -> GeneratedDay:
    return get_generated_day(pytestconfig)


def copy_db(day: GeneratedDay, dest: Path) -> Path:
    """A writable copy of the generated marts (tests that add quarantines, runs, DQ rows)."""
    import shutil

    out = dest / "copy.duckdb"
    shutil.copy(day.db, out)
    return out


def test_generated_day_has_cascades_and_analytics(generated_day: GeneratedDay) -> None:
    import duckdb

    con = duckdb.connect(str(generated_day.db), read_only=True)
    try:
        n = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
             for t in ("cascades", "oi_deltas", "contagion", "dq_results", "liquidations_1m", "bars_1m_symbol")}
        bases = {b for (b,) in con.execute("SELECT DISTINCT base FROM bars_1m_symbol").fetchall()}
    finally:
        con.close()
    assert n["cascades"] >= 1 and all(n.values()), n
    assert bases == set(BASES)
    # the simulator's own ground truth also saw episodes in this run
    assert generated_day.truth["episodes"]
