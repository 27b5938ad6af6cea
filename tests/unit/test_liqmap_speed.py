"""The liquidation-map estimator's cheaper fuel rows (ADR 049) against the estimator before it: the same
rows and stored state, bit for bit.

The reference is pipelines/transforms/liqmap.py as it was at commit 16fda91 (before ADR 049), read with
``git show`` and loaded as a module of its own (``bench.liqmap.load_reference``): the current code is
compared with that code's run on the same inputs, not with a snapshot of its own output. Also pinned:
:func:`liqmap.run_sums` / :func:`liqmap.runs_sums` reproduce numpy's pairwise ``np.add.reduce`` (a numpy
whose summation changes fails here, not as a silent difference in the marts).
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bench.liqmap import load_reference, synth_columns
from pipelines.transforms import liqmap
from pipelines.transforms.config import AnalyticsConfig
from pipelines.transforms.panel import base_bars_from_columns

BEFORE = "16fda91"  # main before ADR 049
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def before(tmp_path_factory):
    try:
        src = subprocess.run(["git", "show", f"{BEFORE}:pipelines/transforms/liqmap.py"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:  # (no git, or a copy without the history)
        pytest.skip(f"the reference needs git and commit {BEFORE}: {e}")
    path = tmp_path_factory.mktemp("before") / "liqmap_before.py"
    path.write_bytes(src)
    return load_reference(str(path))


def test_run_sums_are_numpys_pairwise_sums():
    rng = np.random.default_rng(3)
    for n in [*range(1, 300), 511, 512, 701, 1000, 4099]:
        x = rng.gamma(0.5, 10.0, (6, n)) * (rng.random((6, n)) < 0.7) * 10.0 ** rng.uniform(-5, 8, (6, 1))
        got = liqmap.run_sums(x)
        assert got.tolist() == [float(np.add.reduce(row)) for row in x], n
    # runs of any length at any offset, several lengths in one call, empty runs 0.0
    x = rng.gamma(0.5, 10.0, (40, 300))
    row = rng.integers(0, 40, 500)
    lo = rng.integers(0, 300, 500)
    hi = np.minimum(lo + rng.integers(0, 200, 500), 300)
    want = [float(np.add.reduce(x[r, a:b])) if b > a else 0.0 for r, a, b in zip(row, lo, hi, strict=True)]
    assert liqmap.runs_sums(x, row, lo, hi).tolist() == want
    assert len(set((hi - lo).tolist())) > 50


def _rows(module, cfg: AnalyticsConfig, bb, emit_from_us, **kw) -> list:
    return list(module.estimate_base(bb, cfg, emit_from_us, **kw))


CONFIGS = {
    "default": AnalyticsConfig(),
    "one minute a batch": dataclasses.replace(AnalyticsConfig(), liqmap_fuel_batch_minutes=1),
    "7 minutes a batch, wider range, finer buckets (runs over 128 buckets)": dataclasses.replace(
        AnalyticsConfig(), liqmap_fuel_batch_minutes=7, liqmap_range_pct=30.0, liqmap_bucket_bp=10.0,
        liqmap_cluster_multiple=1.5, liqmap_every_minutes=7),
    "whole-bucket crossing, calibration relative to the venue's ratio": dataclasses.replace(
        AnalyticsConfig(), liqmap_partial_crossing=False, liqmap_calibration_keep_uncrossed=False,
        liqmap_fuel_batch_minutes=100),
}


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_rows_equal_the_estimator_before_adr_049(before, name, seed):
    cfg = dataclasses.replace(CONFIGS[name], liqmap_warmup_minutes=120)
    bb = base_bars_from_columns("BTC", synth_columns("BTC", 700, seed), cfg)
    m = bb.panel.minutes
    kw = {"settled_us": int(m[500])}
    want = _rows(before, cfg, bb, int(m[150]), **kw)
    got = _rows(liqmap, cfg, bb, int(m[150]), **kw)
    assert len(got) == len(want) > 1000
    assert got == want  # every float equal, the rows in the same order (the state's books as float64 bytes)
    fuel = [r for t, r in want if t == liqmap.FUEL_TAG]
    assert len(fuel) > 500
    assert any(r["long_cluster_usd"] is not None for r in fuel) and any(r["short_cluster_usd"] is not None
                                                                        for r in fuel)
    # continued from the stored state: the job's and the scorer's calls
    state = [r for t, r in want if t == liqmap.STATE_TAG]
    assert len(state) == 4
    for fuel_, venues in ((True, True), (False, False)):
        kw = {"state": state, "data_from_us": int(m[490]), "fuel": fuel_, "venues": venues}
        got = _rows(liqmap, cfg, bb, int(m[560]), **kw)
        assert got and got == _rows(before, cfg, bb, int(m[560]), **kw)
