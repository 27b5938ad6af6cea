"""The backfill's Arrow memory pool (ADR 047): set for this process, the ones it forks and the ones it spawns."""

from __future__ import annotations

import multiprocessing as mp
import os

import pyarrow as pa
import pytest

from pipelines.arrow_pool import POOLS as ARROW_POOLS
from pipelines.arrow_pool import use_arrow_pool
from pipelines.settings import JobSettings


def _backend() -> str:
    import pyarrow

    return pyarrow.default_memory_pool().backend_name


@pytest.fixture
def restore_pool():
    pool, env = pa.default_memory_pool(), os.environ.get("ARROW_DEFAULT_MEMORY_POOL")
    yield
    pa.set_memory_pool(pool)
    if env is None:
        os.environ.pop("ARROW_DEFAULT_MEMORY_POOL", None)
    else:
        os.environ["ARROW_DEFAULT_MEMORY_POOL"] = env


@pytest.mark.parametrize("name", ["system", "jemalloc"])
def test_the_pool_is_used_here_and_in_forked_and_spawned_children(restore_pool, name):
    other = "mimalloc" if name != "mimalloc" else "system"
    pa.set_memory_pool(getattr(pa, f"{other}_memory_pool")())
    assert _backend() == other
    assert use_arrow_pool(name) == name
    assert _backend() == name
    assert pa.array(range(1000)).to_numpy().sum() == 499500  # allocations work from the new pool
    for method in ("fork", "spawn"):
        with mp.get_context(method).Pool(1) as pool:
            assert pool.apply(_backend) == name, method


def test_empty_changes_nothing(restore_pool):
    before = _backend()
    assert use_arrow_pool("") == before
    assert _backend() == before


def test_an_unknown_pool_is_refused_with_the_choices(restore_pool):
    before = _backend()
    with pytest.raises(ValueError, match="LIQSTREAM_STREAM_ARROW_POOL='tcmalloc': choose one of system, jemalloc, mimalloc"):
        use_arrow_pool("tcmalloc", "LIQSTREAM_STREAM_ARROW_POOL")
    assert _backend() == before


def test_the_settings_default_and_read_the_environment():
    assert JobSettings().backfill_arrow_pool == "system" and "system" in ARROW_POOLS
    assert JobSettings().stream_arrow_pool == "system"  # ADR 062 (mimalloc's kernel time in live cycles)
    env = {"LIQSTREAM_BACKFILL_ARROW_POOL": "jemalloc", "LIQSTREAM_STREAM_ARROW_POOL": "mimalloc"}
    assert JobSettings.from_env(env).backfill_arrow_pool == "jemalloc"
    assert JobSettings.from_env(env).stream_arrow_pool == "mimalloc"


def test_the_stream_job_refuses_an_unknown_pool_before_it_starts(tmp_path, restore_pool):
    from pipelines.jobs.stream import StreamJob, StreamOptions

    job = StreamJob(JobSettings(db=tmp_path / "m.duckdb", data_dir=tmp_path, stream_arrow_pool="tcmalloc"),
                    StreamOptions(max_cycles=1))
    with pytest.raises(ValueError, match="LIQSTREAM_STREAM_ARROW_POOL='tcmalloc'"):
        job.run()
    assert not (tmp_path / "m.duckdb").exists()  # nothing started


def test_the_backfill_refuses_an_unknown_pool_before_it_starts(tmp_path, restore_pool):
    import datetime as dt

    from pipelines.jobs.backfill import run_backfill

    settings = JobSettings(db=tmp_path / "m.duckdb", data_dir=tmp_path, backfill_arrow_pool="tcmalloc")
    with pytest.raises(ValueError, match="LIQSTREAM_BACKFILL_ARROW_POOL='tcmalloc'"):
        run_backfill(settings, dt.date(2024, 1, 1), dt.date(2024, 1, 1))
    assert not (tmp_path / "m.duckdb").exists()
