"""A generated day in the marts, shared by the report, saved-query and status tests.

Built once per test session (module-level cache: the fixture is imported by several modules) and
kept small: a 3-hour simulator run of preset A's crowded-long market (4 bases, 3 venues, 1 trade
message/s) with its two BTC shocks moved into the first hours, backfilled from the capture through
the real Beam graph and DQ gate. About 30-40 s on this machine; the day holds several cascade
episodes (the shocks set off the cascade), OI deltas and a contagion ranking (60-minute window,
since a 3-hour day cannot fill the default 240-minute one).
"""

from __future__ import annotations

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


def get_generated_day(tmp_path_factory: pytest.TempPathFactory) -> GeneratedDay:
    """The session's generated day, built on first use (each test module wraps this in its own
    ``generated_day`` fixture; the cache here makes the build happen once per session)."""
    with _lock:
        if "day" not in _built:
            _built["day"] = build_generated_day(tmp_path_factory.mktemp("generated-day"))
        return _built["day"]


@pytest.fixture(scope="session")
def generated_day(tmp_path_factory: pytest.TempPathFactory) -> GeneratedDay:
    return get_generated_day(tmp_path_factory)


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
