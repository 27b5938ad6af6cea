"""Planning offset ranges from committed offsets and log bounds."""

from __future__ import annotations

import pytest

from connectors.kafka.reader import OffsetRange, OffsetsAheadOfLog, plan_ranges


def test_resume_from_committed_and_read_new_partitions_from_log_start():
    bounds = {("t", 0): (0, 100), ("t", 1): (0, 40), ("t", 2): (10, 25)}  # partition 2 appeared later
    committed = {("t", 0): 60, ("t", 1): 40}
    assert plan_ranges(bounds, committed) == [OffsetRange("t", 0, 60, 100), OffsetRange("t", 2, 10, 25)]


def test_offsets_deleted_by_retention_resume_at_log_start():
    assert plan_ranges({("t", 0): (500, 900)}, {("t", 0): 120}) == [OffsetRange("t", 0, 500, 900)]


def test_split_into_chunks():
    assert plan_ranges({("t", 0): (0, 25)}, {}, max_range=10) == [
        OffsetRange("t", 0, 0, 10), OffsetRange("t", 0, 10, 20), OffsetRange("t", 0, 20, 25)]


def test_committed_beyond_log_end_is_an_error_that_says_what_to_do():
    with pytest.raises(OffsetsAheadOfLog, match="--reset-offsets"):
        plan_ranges({("t", 0): (0, 10)}, {("t", 0): 11})
