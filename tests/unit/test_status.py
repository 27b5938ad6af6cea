"""`liqstream status`: each check and the exit code it implies, without a Kafka broker.

The broker's metadata and log ends are faked where a test needs a broker that is up (this module
starts none); lag is checked against hand-computed differences. The metrics endpoint is the
streaming job's real HTTP server (``serve_metrics``) on a free port.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.kafka.local_broker import free_port
from pipelines import status, warehouse
from pipelines.cli import main
from pipelines.settings import JobSettings
from tests.unit.test_report_day import GeneratedDay, copy_db, get_generated_day


@pytest.fixture(scope="session")
def generated_day(pytestconfig: pytest.Config) -> GeneratedDay:
    return get_generated_day(pytestconfig)


def _settings(db: Path, bootstrap: str | None = None) -> JobSettings:
    s = JobSettings(db=db)
    return s.replace(kafka=s.kafka.with_bootstrap(bootstrap or f"127.0.0.1:{free_port()}"))


@pytest.fixture
def broker_up(monkeypatch: pytest.MonkeyPatch):
    """Pretend a broker of cluster 'c1' answers; log ends come from the returned dict."""
    bounds: dict[tuple[str, int], tuple[int, int]] = {}
    monkeypatch.setattr(status, "_check_broker",
                        lambda settings, timeout_s: (status.Check("broker", True, "up (fake)"), "c1"))
    import connectors.kafka.reader as reader

    monkeypatch.setattr(reader, "log_bounds", lambda settings, topics: dict(bounds))
    return bounds


def _add_cycle(db: Path, finished: datetime, state: str = "ok", job: str = "load") -> None:
    con = warehouse.connect(db)
    con.execute("INSERT INTO pipeline_runs VALUES (?, ?, ?, ?, ?, 10, 0, 10, 0.5, NULL, NULL)",
                [f"{job}-{finished.timestamp()}", job, finished - timedelta(seconds=1), finished, state])
    con.close()


def test_no_broker_exit_4_with_what_to_do(generated_day: GeneratedDay) -> None:
    st = status.collect_status(_settings(generated_day.db))
    b = st.check("broker")
    assert b.ok is False and "no broker at 127.0.0.1:" in b.summary and "make broker" in b.hint
    assert st.check("lag").ok is None  # unknown without a broker, not a failure of its own
    assert st.exit_code == status.EXIT_NO_BROKER
    # the rest of the picture is still reported: the backfill's run and its passing DQ gate
    assert st.check("last run").ok and "backfill" in st.check("last run").summary
    assert st.check("data quality").ok and st.check("quarantine").ok


def test_missing_database(tmp_path: Path, broker_up) -> None:
    st = status.collect_status(_settings(tmp_path / "none.duckdb"))
    assert st.check("database").ok is False and "make run" in st.check("database").hint
    assert st.exit_code == status.EXIT_FAILED


def test_stream_running_healthy_and_lag(generated_day: GeneratedDay, tmp_path: Path, broker_up) -> None:
    db = copy_db(generated_day, tmp_path)
    now = datetime.now(UTC)
    _add_cycle(db, now - timedelta(seconds=5))
    con = warehouse.connect(db)
    for topic, part, off in (("liquidations.v1", 0, 120), ("trades.v1", 0, 1000), ("trades.v1", 1, 990)):
        con.execute("INSERT INTO kafka_offsets VALUES (?, ?, ?, 'c1', now())", [topic, part, off])
    con.close()
    # log ends: 5 behind, 0 behind, 30 behind; a partition with nothing committed counts from its log start
    broker_up.update({("liquidations.v1", 0): (0, 125), ("trades.v1", 0): (0, 1000), ("trades.v1", 1): (0, 1020),
                      ("funding.v1", 0): (40, 47)})
    st = status.collect_status(_settings(db), now=now)
    assert st.check("streaming job").ok and "5s ago" in st.check("streaming job").summary
    assert st.lag == {"liquidations.v1[0]": 5, "trades.v1[0]": 0, "trades.v1[1]": 30, "funding.v1[0]": 7}
    assert "42 messages behind" in st.check("lag").summary and "trades.v1[1] (30)" in st.check("lag").summary
    assert st.exit_code == status.EXIT_OK


def test_stale_stream_exit_5(generated_day: GeneratedDay, tmp_path: Path, broker_up) -> None:
    db = copy_db(generated_day, tmp_path)
    now = datetime.now(UTC)
    _add_cycle(db, now - timedelta(seconds=600))
    st = status.collect_status(_settings(db), stale_after_s=120, now=now)
    assert st.check("streaming job").ok is False and "10 min ago" in st.check("streaming job").summary
    assert st.exit_code == status.EXIT_NOT_RUNNING
    assert status.collect_status(_settings(db), stale_after_s=900, now=now).exit_code == status.EXIT_OK


def test_offsets_of_another_cluster(generated_day: GeneratedDay, tmp_path: Path, broker_up) -> None:
    db = copy_db(generated_day, tmp_path)
    _add_cycle(db, datetime.now(UTC))
    con = warehouse.connect(db)
    con.execute("INSERT INTO kafka_offsets VALUES ('trades.v1', 0, 10, 'old-cluster', now())")
    con.close()
    st = status.collect_status(_settings(db))
    assert st.check("lag").ok is False and "old-cluster" in st.check("lag").summary
    assert "--reset-offsets" in st.check("lag").hint and st.exit_code == status.EXIT_FAILED


def test_dq_failing_and_quarantine_exit_3(generated_day: GeneratedDay, tmp_path: Path, broker_up) -> None:
    db = copy_db(generated_day, tmp_path)
    now = datetime.now(UTC)
    _add_cycle(db, now)
    con = warehouse.connect(db)
    con.execute("INSERT INTO dq_results VALUES ('late', 'bars_1m', 'bars_1m', now() + INTERVAL 1 MINUTE, false, true, "
                "10, 9, 1, 'expect_column_values_to_be_between', '{}')")
    con.close()
    st = status.collect_status(_settings(db), now=now)
    assert st.check("data quality").ok is False and "bars_1m" in st.check("data quality").summary
    assert st.exit_code == status.EXIT_DQ

    db2 = copy_db(generated_day, tmp_path / "..")  # a fresh copy: DQ passes, one load quarantined
    _add_cycle(db2, now)
    con = warehouse.connect(db2)
    con.execute("INSERT INTO quarantine VALUES ('bad', TIMESTAMPTZ '2026-03-09 13:00:00+00', "
                "TIMESTAMPTZ '2026-03-09 13:05:00+00', 'bars_1m', now())")
    con.close()
    st = status.collect_status(_settings(db2), now=now)
    assert st.check("data quality").ok and st.check("quarantine").ok is False
    assert "2026-03-09 13:00 to 2026-03-09 13:05" in st.check("quarantine").summary
    assert st.exit_code == status.EXIT_DQ


def test_failed_last_run_exit_1(generated_day: GeneratedDay, tmp_path: Path, broker_up) -> None:
    db = copy_db(generated_day, tmp_path)
    _add_cycle(db, datetime.now(UTC), state="failed")
    st = status.collect_status(_settings(db))
    assert st.check("last run").ok is False and st.exit_code == status.EXIT_FAILED


def test_metrics_endpoint_of_the_streaming_job(generated_day: GeneratedDay, tmp_path: Path, broker_up) -> None:
    from pipelines.jobs.stream import StreamHealth, serve_metrics

    db = copy_db(generated_day, tmp_path)  # its pipeline_runs hold no recent cycle: only /metrics knows
    health = StreamHealth(cycles=12, failed_cycles=1, last_cycle_end=time.time() - 3)
    port = free_port()
    server = serve_metrics(health, port)
    try:
        st = status.collect_status(_settings(db), metrics_port=port)
    finally:
        server.shutdown()
        server.server_close()
    assert st.metrics["liqstream_cycles_total"] == 12
    assert "12 cycles (1 failed)" in st.check("metrics").summary
    assert st.check("streaming job").ok and st.exit_code == status.EXIT_OK
    # nothing listening: the job is not running
    st = status.collect_status(_settings(db), metrics_port=free_port())
    assert st.check("metrics").ok is False and st.exit_code == status.EXIT_NOT_RUNNING


def test_cli_status(generated_day: GeneratedDay, capsys) -> None:
    rc = main(["status", "--db", str(generated_day.db), "--bootstrap-servers", f"127.0.0.1:{free_port()}"])
    out = capsys.readouterr().out
    assert rc == 4 and "exit 4: no broker" in out and "[FAIL] broker" in out
    assert main(["status", "--db", str(generated_day.db), "--format", "json",
                 "--bootstrap-servers", f"127.0.0.1:{free_port()}"]) == 4
    import json

    doc = json.loads(capsys.readouterr().out)
    assert doc["exit_code"] == 4 and {c["name"] for c in doc["checks"]} >= {"broker", "database", "data quality"}
