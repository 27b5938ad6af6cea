"""Cascade alerts on the topic cascade_alerts.v1 with a real broker: kill -9 between the commit and
the delivery, and between the broker's ack and the outbox update; the restart sends exactly the
missing levels, once. Alert amounts are checked against sums computed from the raw messages."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import duckdb
import pytest

from connectors.config import KafkaSettings
from connectors.kafka.publish import publish_raw_stream
from connectors.kafka.reader import RangeReader, log_bounds, plan_ranges
from connectors.kafka.topics import ALERTS_TOPIC
from pipelines.alerts.faults import ENV as CRASH_ENV
from pipelines.alerts.record import decoder
from pipelines.settings import JobSettings
from pipelines.status import collect_status
from tests.conftest import REPO
from tests.helpers import T0_MS, binance_force_orders
from tests.integration.test_stream_job import _stream_proc

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _topic_alerts(kafka: KafkaSettings) -> list[tuple[bytes, dict]]:
    """(key, decoded alert) of every record on the alert topic."""
    out = []
    with RangeReader(kafka, idle_timeout_s=20) as reader:
        for rng in plan_ranges(log_bounds(kafka, [ALERTS_TOPIC]), {}):
            out += [(rec.key, decoder().decode(rec.value)) for rec in reader.read(rng)]
    return out


def _db_rows(db, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _liquidated_usd(messages, scope: str, side: str, start_us: int, end_us: int) -> Decimal:
    """USD of one side's liquidations of a scope in [start, end), from the raw Binance JSON."""
    total = Decimal(0)
    for m in messages:
        o = json.loads(m.raw)["data"]["o"]
        base = o["s"].removesuffix("USDT")
        if (scope in ("market", base) and ("long" if o["S"] == "SELL" else "short") == side
                and start_us <= o["T"] * 1000 < end_us):
            total += (Decimal(o["ap"]) * Decimal(o["z"])).quantize(Decimal("0.000001"))
    return total


@pytest.mark.parametrize("crash_at", ["after_commit", "after_produce"])
def test_kill9_around_delivery_then_restart_sends_each_level_exactly_once(fresh_broker, tmp_path, crash_at):
    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    first = binance_force_orders(600, seed=7)
    publish_raw_stream(first, kafka)
    db = tmp_path / "alerts.duckdb"

    crashed = _stream_proc(db, fresh_broker.bootstrap, env_extra={CRASH_ENV: crash_at})
    out, _ = crashed.communicate(timeout=900)  # bounded; generous for a loaded machine
    assert crashed.returncode == -signal.SIGKILL, out[-3000:]
    committed = set(_db_rows(db, "SELECT episode_id, severity_level FROM cascade_alerts"))
    assert committed, "the first cycle committed no alert"
    assert set(_db_rows(db, "SELECT episode_id, severity_level FROM alert_deliveries WHERE status = 'pending'")) \
        == committed  # nothing was marked sent before the kill
    on_topic = [(a["episode_id"], a["severity_level"]) for _, a in _topic_alerts(kafka)]
    if crash_at == "after_commit":
        assert on_topic == []
    else:  # acknowledged by the broker, not recorded in the outbox
        assert set(on_topic) == committed and len(on_topic) == len(committed)

    second = binance_force_orders(600, seed=8, t0_ms=T0_MS + 2 * 3600 * 1000)  # new episodes after the restart
    publish_raw_stream(second, kafka)
    final = _stream_proc(db, fresh_broker.bootstrap, "--exit-when-idle", "2")
    out, _ = final.communicate(timeout=900)  # bounded; generous for a loaded machine
    assert final.returncode == 0, out[-3000:]

    records = _topic_alerts(kafka)
    sent = Counter((a["episode_id"], a["severity_level"]) for _, a in records)
    all_alerts = set(_db_rows(db, "SELECT episode_id, severity_level FROM cascade_alerts"))
    assert len(all_alerts) > len(committed)
    assert set(sent) == all_alerts
    assert max(sent.values()) == 1, [k for k, n in sent.items() if n > 1]
    assert all(key == a["episode_id"].encode() for key, a in records)
    assert _db_rows(db, "SELECT DISTINCT status FROM alert_deliveries") == [("sent",)]

    # what each record says, against the raw messages: the side's USD from the start to the alert minute's end
    by_key = {(a["episode_id"], a["severity_level"]): a for _, a in records}
    for ep, lvl, scope, direction, run_id in _db_rows(
            db, "SELECT a.episode_id, a.severity_level, a.scope, a.direction, d.run_id FROM cascade_alerts a "
                "JOIN alert_deliveries d USING (episode_id, severity_level)"):
        a = by_key[(ep, lvl)]
        assert (a["scope"], a["direction"], a["run_id"]) == (scope, direction, run_id)
        side = "long" if direction == "long_liquidation" else "short"
        expected = _liquidated_usd(first + second, scope, side, a["start_ts"], a["minute_ts"] + 60_000_000)
        assert a["liq_usd"] == pytest.approx(float(expected), rel=1e-9), (ep, lvl)
        assert a["alert_ts"] == a["minute_ts"] + 60_000_000
        assert a["committed_ts"] > a["alert_ts"]  # history replayed now: committed long after the event time

    settings = JobSettings(db=db, data_dir=tmp_path, kafka=kafka)
    st = collect_status(settings, timeout_s=5)
    assert st.alerts == {f"kafka:{ALERTS_TOPIC}": {"pending": 0, "sent": len(all_alerts), "dead": 0}}
    assert st.check("alerts").ok is True

    # the subscriber's view: liqstream alerts tail decodes the same records
    env = {"KAFKA_BOOTSTRAP_SERVERS": fresh_broker.bootstrap, "PATH": "/usr/bin:/bin"}
    tail = subprocess.run([sys.executable, "-m", "pipelines.cli", "alerts", "tail", "--from-beginning",
                           "--format", "json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert tail.returncode == 0, tail.stderr[-2000:]
    lines = [json.loads(line) for line in tail.stdout.splitlines()]
    assert Counter((x["episode_id"], x["severity_level"]) for x in lines) == sent
    assert [x["alert_ts"] for x in lines] == sorted(x["alert_ts"] for x in lines)
    first_line = lines[0]
    assert first_line["schema"] == "cascade_alert.v2"
    assert datetime.fromisoformat(first_line["alert_ts"].replace("Z", "+00:00")) == datetime(
        1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=min(a["alert_ts"] for _, a in records))


def test_frozen_broker_alerts_wait_then_go_out_once_and_the_cycle_path_never_blocks(fresh_broker, tmp_path):
    """The broker stops answering (SIGSTOP) while alerts are sent on a live connection: the sends
    time out with their outcome unknown (the broker may still append them when it resumes), are
    retried after reading the topic back, and each level lands once after SIGCONT."""
    import os
    import time
    from dataclasses import replace

    from pipelines import warehouse
    from pipelines.alerts.delivery import AlertDispatcher
    from pipelines.jobs.load import run_load

    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap, request_timeout_ms=1500)
    settings = JobSettings(db=tmp_path / "o.duckdb", data_dir=tmp_path, kafka=kafka)
    settings = settings.replace(alerts=replace(settings.alerts, kafka_timeout_s=2.0))
    dispatcher = AlertDispatcher(settings).start()
    con = warehouse.connect(settings.db)

    def settle(timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while not dispatcher.idle() and time.monotonic() < deadline:
            dispatcher.sync(con)
            time.sleep(0.2)
        dispatcher.sync(con)

    def load(messages) -> None:
        con.close()  # run_load opens the database itself, as the stream job's cycle does
        # the loads with the default request timeout: only the alert sends are meant to time out fast,
        # and a loaded machine's broker can take longer than 1.5 s to answer the load's requests
        unhurried = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
        publish_raw_stream(messages, unhurried)
        run_load(settings.replace(kafka=unhurried), run_dq=False)

    try:
        load(binance_force_orders(600, seed=7))
        con = warehouse.connect(settings.db)
        dispatcher.sync(con)
        settle()  # the producer is connected now
        load(binance_force_orders(600, seed=8, t0_ms=T0_MS + 2 * 3600 * 1000))
        con = warehouse.connect(settings.db)
        pending = con.execute("SELECT count(*) FROM alert_deliveries WHERE status = 'pending'").fetchone()[0]
        assert pending > 0
        os.kill(fresh_broker.process.pid, signal.SIGSTOP)
        try:
            assert dispatcher.sync(con) == pending  # handed out at once, frozen broker or not

            def attempts() -> int:
                dispatcher.sync(con)
                return con.execute("SELECT min(attempts) FROM alert_deliveries WHERE status = 'pending'"
                                   ).fetchone()[0] or 0

            deadline = time.monotonic() + 300
            while attempts() < 1 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert attempts() >= 1, "no send attempt failed while the broker was frozen"
        finally:
            os.kill(fresh_broker.process.pid, signal.SIGCONT)
        settle()
    finally:
        con.close()
        dispatcher.close()
    committed = set(_db_rows(settings.db, "SELECT episode_id, severity_level FROM cascade_alerts"))
    sent = Counter((a["episode_id"], a["severity_level"]) for _, a in _topic_alerts(kafka))
    assert set(sent) == committed and max(sent.values()) == 1
    assert _db_rows(settings.db, "SELECT DISTINCT status FROM alert_deliveries") == [("sent",)]
