"""The read ahead of the stream job's next cycle (ADR 043): taken only when it is that cycle's plan."""

from __future__ import annotations

import threading

from connectors.kafka.fetch import FetchAhead, Fetched
from connectors.kafka.reader import OffsetRange

COMMITTED = {("trades.v1", 0): 10, ("trades.v1", 1): 4}
RANGES = [OffsetRange("trades.v1", 0, 10, 25), OffsetRange("trades.v1", 1, 4, 9)]


class _Readers:
    """Stands in for ParallelFetcher: records the ranges it was asked to read, writes one file."""

    def __init__(self, fail: bool = False, gate: threading.Event | None = None) -> None:
        self.asked: list[list[OffsetRange]] = []
        self.fail = fail
        self.gate = gate

    def fetch(self, ranges, out_dir):
        if self.gate is not None:
            self.gate.wait(5)
        if self.fail:
            raise RuntimeError("reader died twice")
        self.asked.append(list(ranges))
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "chunk.arrow").write_bytes(b"x")
        return Fetched(files=[str(out_dir / "chunk.arrow")], records=sum(r.size for r in ranges))


def test_taken_from_the_offsets_it_was_planned_from(tmp_path):
    readers = _Readers()
    ahead = FetchAhead(readers, lambda: RANGES, COMMITTED, tmp_path / "ahead")
    ranges, fetched = ahead.take(dict(COMMITTED))
    assert ranges == RANGES and readers.asked == [RANGES]
    assert fetched.records == 20 and (tmp_path / "ahead" / "chunk.arrow").exists()
    ahead.discard()
    assert not (tmp_path / "ahead").exists()


def test_not_taken_when_the_committed_offsets_moved(tmp_path):
    # e.g. offsets reset, or a commit it did not see: its ranges would read events twice or skip some
    ahead = FetchAhead(_Readers(), lambda: RANGES, COMMITTED, tmp_path / "ahead")
    assert ahead.take({**COMMITTED, ("trades.v1", 1): 6}) is None
    assert ahead.take({("trades.v1", 0): 10}) is None  # a partition it planned is not committed yet
    ahead.discard()


def test_not_taken_when_the_plan_or_the_read_failed_or_found_nothing(tmp_path):
    def no_broker():
        raise ConnectionError("broker down")

    assert FetchAhead(_Readers(), no_broker, COMMITTED, tmp_path / "a").take(COMMITTED) is None
    assert FetchAhead(_Readers(fail=True), lambda: RANGES, COMMITTED, tmp_path / "b").take(COMMITTED) is None
    readers = _Readers()
    assert FetchAhead(readers, lambda: [], COMMITTED, tmp_path / "c").take(COMMITTED) is None
    assert readers.asked == []  # nothing to read: the readers were not asked


def test_take_waits_for_the_read_and_the_plan_is_made_in_its_thread(tmp_path):
    gate = threading.Event()
    planned_in: list[str] = []

    def plan():
        planned_in.append(threading.current_thread().name)
        return RANGES

    ahead = FetchAhead(_Readers(gate=gate), plan, COMMITTED, tmp_path / "ahead")
    threading.Timer(0.2, gate.set).start()
    assert ahead.take(COMMITTED) is not None  # returned only once the read ended
    assert planned_in == ["fetch-ahead"]
    ahead.discard()
