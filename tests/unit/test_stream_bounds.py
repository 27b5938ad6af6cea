"""A cycle that follows the lag probe at once plans on the probe's log bounds (ADR 038)."""

from __future__ import annotations

import time

from pipelines.jobs.stream import StreamJob, StreamOptions
from pipelines.settings import JobSettings

BOUNDS = {("trades.v1", 0): (0, 120), ("liquidations.v1", 0): (5, 9)}


def test_a_fresh_probe_is_the_next_plan_once(tmp_path):
    job = StreamJob(JobSettings(db=tmp_path / "x.duckdb", data_dir=tmp_path), StreamOptions(bounds_reuse_s=0.25))
    assert job._fresh_bounds() is None  # no probe yet: the plan asks the broker
    job._probed = (time.monotonic(), BOUNDS)
    assert job._fresh_bounds() == BOUNDS
    assert job._fresh_bounds() is None  # used once: the cycle after asks again unless probed anew


def test_a_stale_probe_or_reuse_off_asks_the_broker(tmp_path):
    job = StreamJob(JobSettings(db=tmp_path / "x.duckdb", data_dir=tmp_path), StreamOptions(bounds_reuse_s=0.25))
    job._probed = (time.monotonic() - 0.3, BOUNDS)  # an empty cycle waited out its interval
    assert job._fresh_bounds() is None
    off = StreamJob(JobSettings(db=tmp_path / "y.duckdb", data_dir=tmp_path), StreamOptions(bounds_reuse_s=0))
    off._probed = (time.monotonic(), BOUNDS)
    assert off._fresh_bounds() is None
