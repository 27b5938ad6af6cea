"""`liqstream backfill --runner dask`: the same marts as the local runner, and its faults (ADR 017).

A real ``distributed.LocalCluster`` of 2 worker processes runs the backfill's Beam graph through
the Dask runner; every mart is compared row for row with a local-runner backfill of the same
two-day archive (the local runner is the reference the rest of the suite checks against the
streaming job and SQL)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import threading
import time
from datetime import date
from pathlib import Path

import pytest

from bench.data import write_synth_archive
from pipelines.jobs.backfill import run_backfill
from pipelines.settings import JobSettings
from tests.helpers import DERIVED_MARTS, mart_differences, mart_rows

pytestmark = pytest.mark.slow
FROM, TO = date(2024, 1, 1), date(2024, 1, 2)  # bench.data's synthetic archive starts 2024-01-01
#: the marts a backfill writes and this archive fills (late_events and rejects stay empty in a rebuild)
FILLED = ("bars_1m", "bars_1m_symbol", "liquidations_1m", "cascades", "cascade_alerts", "oi_deltas", "contagion")


@pytest.fixture(scope="module")
def archive_and_reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("dask_backfill")
    write_synth_archive(root / "archive", 120_000, 2, seed=11, hours_per_day=4)
    local = JobSettings(db=root / "local.duckdb", data_dir=root)
    r = run_backfill(local, FROM, TO, run_dq=False)
    assert r.status == "ok"
    return local, mart_rows(local.db)


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        with Client(c.scheduler_address) as client:
            yield c, client


class _SplitThrees(__import__("apache_beam").DoFn):
    """Multiples of 3 to a tagged output; the others buffered and emitted in finish_bundle, as
    (parity, x + the side input's offset) - the shapes the backfill's transforms use."""

    def start_bundle(self):
        self.buffered = []

    def process(self, x, offsets):
        import apache_beam as beam

        if x % 3 == 0:
            yield beam.pvalue.TaggedOutput("threes", x)
        else:
            self.buffered.append((x % 2, x + offsets["offset"]))

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.windowed_value import WindowedValue

        for kv in self.buffered:
            yield WindowedValue(kv, 0, [GlobalWindow()])


def test_dask_runner_computes_every_sink_with_tagged_outputs_bundle_ends_and_side_inputs(cluster, tmp_path):
    import apache_beam as beam
    import pyarrow.parquet as pq

    from pipelines.dask_runner import BackfillDaskRunner
    from pipelines.sinks import WriteRowsToParquet, parquet_glob

    p = beam.Pipeline(runner=BackfillDaskRunner(cluster[1]))
    offsets = p | "Offsets" >> beam.Create([("offset", 100)])
    split = (p | beam.Create(list(range(20))) | beam.Reshuffle()
             | beam.ParDo(_SplitThrees(), beam.pvalue.AsDict(offsets)).with_outputs("threes", main="rest"))
    (split.rest | beam.CombinePerKey(sum) | "SumRow" >> beam.Map(lambda kv: {"parity": kv[0], "total": kv[1]})
     | "WriteSums" >> WriteRowsToParquet(tmp_path, "sums"))
    split.threes | "ThreeRow" >> beam.Map(lambda x: {"x": x}) | "WriteThrees" >> WriteRowsToParquet(tmp_path, "threes")
    p.run().wait_until_finish()

    def rows(name):
        return [r for f in parquet_glob(tmp_path, name) for r in pq.read_table(f).to_pylist()]

    assert sorted(r["x"] for r in rows("threes")) == [0, 3, 6, 9, 12, 15, 18]
    # by hand: parity 0 -> 2, 4, 8, 10, 14, 16 (+100 each); parity 1 -> 1, 5, 7, 11, 13, 17, 19 (+100 each)
    assert sorted((r["parity"], r["total"]) for r in rows("sums")) == [(0, 654), (1, 773)]


def _dask(settings: JobSettings, cluster, db: Path, staging: str) -> JobSettings:
    return settings.replace(db=db, backfill_runner="dask", dask_scheduler=cluster[0].scheduler_address,
                            staging=staging)


def test_dask_backfill_writes_every_mart_as_the_local_runner(archive_and_reference, cluster, tmp_path):
    local, reference = archive_and_reference
    assert all(reference[t] for t in FILLED), {t: len(reference[t]) for t in FILLED}
    staging = tmp_path / "staging"
    # an fsspec URL: the workers write through fsspec, this client fetches the files back
    s = _dask(local, cluster, tmp_path / "dask.duckdb", f"file://{staging}")
    r = run_backfill(s, FROM, TO)  # with the GX gate, as a scheduled backfill runs
    assert (r.status, r.events, r.dq_passed) == ("ok", 120_000, True)
    got = mart_rows(s.db)
    assert set(got) == set(DERIVED_MARTS)
    assert mart_differences(reference, got) == {}
    assert not any(staging.iterdir())  # the run's staged Parquet is removed


def test_dask_backfill_of_a_capture_file_equals_the_local_runner(cluster, tmp_path):
    # capture files are normalized message by message inside the workers (another source shape)
    capture = Path(__file__).resolve().parents[1] / "fixtures" / "demo" / "binance-futures-demo.jsonl.gz"
    day = date(2021, 7, 22)
    local = JobSettings(db=tmp_path / "local.duckdb", data_dir=tmp_path)
    r1 = run_backfill(local, day, day, source="capture", captures=[str(capture)], run_dq=False)
    s = _dask(local, cluster, tmp_path / "dask.duckdb", str(tmp_path / "staging"))
    r2 = run_backfill(s, day, day, source="capture", captures=[str(capture)], run_dq=False)
    assert r1.events and (r2.status, r2.events) == (r1.status, r1.events)
    local_rows = mart_rows(local.db)
    assert local_rows["bars_1m"] and local_rows["liquidations_1m"]
    assert mart_differences(local_rows, mart_rows(s.db)) == {}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_scheduler_fails_naming_it_and_publishes_nothing(archive_and_reference, tmp_path,
                                                                     monkeypatch, capsys):
    from pipelines.cli import main

    local, reference = archive_and_reference
    db = tmp_path / "published.duckdb"
    shutil.copy(local.db, db)
    address = f"tcp://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("LIQSTREAM_DATA_DIR", str(local.data_dir))
    monkeypatch.setenv("LIQSTREAM_DASK_CONNECT_TIMEOUT_S", "2")
    rc = main(["backfill", "--from", str(FROM), "--to", str(TO), "--runner", "dask", "--dask-scheduler", address,
               "--db", str(db), "--no-dq"])
    assert rc == 2
    assert address in capsys.readouterr().err
    assert mart_differences(reference, mart_rows(db)) == {}  # the published marts are untouched


def test_worker_killed_mid_run_is_retried_or_fails_cleanly_and_a_rerun_is_identical(
        archive_and_reference, cluster, tmp_path):
    local, reference = archive_and_reference
    c, client = cluster
    s = _dask(local, cluster, tmp_path / "killed.duckdb", str(tmp_path / "staging"))
    outcome: dict[str, object] = {}

    def backfill() -> None:
        try:
            outcome["result"] = run_backfill(s, FROM, TO, run_dq=False)
        except Exception as exc:  # a failed run must publish nothing: checked below
            outcome["error"] = exc

    th = threading.Thread(target=backfill)
    th.start()
    while not any(client.processing().values()) and th.is_alive():  # a task is running on a worker
        time.sleep(0.02)
    assert th.is_alive(), "the run ended before a worker could be killed"
    pids = client.run(os.getpid)
    victim = max(pids.items(), key=lambda kv: len(client.processing().get(kv[0], ())))[1]
    os.kill(victim, signal.SIGKILL)
    th.join()
    print("killed worker:", "run failed: " + repr(outcome["error"]) if "error" in outcome else "run retried, ok")
    got = mart_rows(s.db)
    if "error" in outcome:
        assert all(not rows for rows in got.values()), "a failed run published rows"
    else:
        assert outcome["result"].status == "ok"
        assert mart_differences(reference, got) == {}
    client.wait_for_workers(2)  # the nanny restarted the killed worker
    r = run_backfill(s, FROM, TO, run_dq=False)
    assert r.status == "ok"
    assert mart_differences(reference, mart_rows(s.db)) == {}
