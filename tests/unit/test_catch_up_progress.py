"""The progress lines of a long catch-up (issue 23): events read of to read, rate, phase."""

from __future__ import annotations

import logging
import time

from connectors.kafka.reader import READ_COUNT
from pipelines.jobs.load import CatchUpProgress


def _wait_for_line(caplog, text: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for r in caplog.records:
            if r.name == "liqstream.progress" and text in r.getMessage():
                return r.getMessage()
        time.sleep(0.01)
    raise AssertionError(f"no progress line with {text!r}: {[r.getMessage() for r in caplog.records]}")


def test_progress_lines_count_what_the_readers_read_since_the_cycle_began(caplog):
    caplog.set_level(logging.INFO, logger="liqstream.progress")
    READ_COUNT.records += 7  # earlier cycles' reads are not this one's
    with CatchUpProgress("load-x", 1_000, every_s=0.01) as progress:
        READ_COUNT.records += 250
        line = _wait_for_line(caplog, "250 of 1,000 events read (25%)")
        assert line.startswith("load-x: ") and "/s over " in line and line.endswith("phase read")
        progress.phase = "commit"
        READ_COUNT.records += 750
        _wait_for_line(caplog, "1,000 of 1,000 events read (100%)")
        _wait_for_line(caplog, "phase commit")


def test_a_short_cycle_prints_nothing(caplog):
    caplog.set_level(logging.INFO, logger="liqstream.progress")
    with CatchUpProgress("load-y", 1_000, every_s=3600):
        READ_COUNT.records += 1_000
    assert not [r for r in caplog.records if r.name == "liqstream.progress"]
