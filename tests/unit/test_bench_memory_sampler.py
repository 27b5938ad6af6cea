"""The bench's peak-memory sampler: the cheap RSS bound must never skip a new PSS peak."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.backfill import PeakSampler, _tree_pids, _tree_pss, _tree_rss


def test_tree_rss_bounds_pss_and_children_are_found() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(64 << 20); time.sleep(30)"])
    try:
        time.sleep(1.0)
        pids = _tree_pids(os.getpid())
        assert child.pid in pids
        rss, pss = _tree_pss(pids)
        assert 0 < pss <= rss
        assert _tree_rss(pids) >= pss  # the bound PeakSampler skips the page-table walk on
    finally:
        child.kill()
        child.wait()


def test_sampler_peak_equals_the_peak_of_pss_read_every_time() -> None:
    # a child that grows to ~200 MB, drops to ~20 MB, then holds: the peak is taken while it is high,
    # and the low phase (RSS below the peak PSS) is skipped without losing it
    code = ("import time\n"
            "b = bytearray(200 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\n"
            "time.sleep(1.5)\ndel b\nc = bytearray(20 << 20)\nfor i in range(0, len(c), 4096): c[i] = 1\n"
            "time.sleep(1.5)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    with PeakSampler(proc.pid, interval_s=0.05) as sampler:
        proc.wait()
    assert sampler.peak_pss >= 200 << 20
    assert sampler.peak_rss >= sampler.peak_pss
    assert sampler.pss_reads < sampler.samples  # the low phase did not walk the page tables
    assert sampler.cpu_s >= 0
