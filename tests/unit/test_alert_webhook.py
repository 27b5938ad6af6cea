"""Alert records and the webhook sink against a real local HTTP server: slow, failing, down, refusing.

The outbox is a real DuckDB file with hand-written cascade_alerts / cascades rows; the expected
webhook body is written out by hand from those rows.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from connectors.kafka.local_broker import free_port
from pipelines import warehouse
from pipelines.alerts import outbox
from pipelines.alerts.delivery import AlertDispatcher, deliver_pending
from pipelines.alerts.record import decoder, encoder, to_json, to_record
from pipelines.jobs.stream import StreamHealth
from pipelines.settings import AlertSettings, JobSettings
from pipelines.status import collect_status, format_status

SECRET_URL_PART, SECRET_TOKEN = "T0PSECRETPATH", "B3ARERSECRET"

ALERT_ROW = ("ep-btc-1", 1, "start", "BTC", "long_liquidation", "2026-01-01 00:02:00+00", "2026-01-01 00:01:00+00",
             "2026-01-01 00:00:00+00", 1_500_000.5, 900_000.25, 500_000.0, -2.5, 3.000001)
#: the webhook body of ALERT_ROW with its episode, by hand (committed_ts is the wall clock: checked apart)
EXPECTED_BODY = {
    "schema": "cascade_alert.v2", "episode_id": "ep-btc-1", "severity_level": 1, "alert_type": "start",
    "scope": "BTC", "direction": "long_liquidation", "kind": "cascade", "alert_ts": "2026-01-01T00:02:00Z",
    "minute_ts": "2026-01-01T00:01:00Z", "start_ts": "2026-01-01T00:00:00Z", "detected_ts": "2026-01-01T00:02:00Z",
    "liq_usd": 1_500_000.5, "minute_liq_usd": 900_000.25, "threshold_usd": 500_000.0, "severity": 3.000001,
    "price_move_pct": -2.5, "oi_change_usd": -40_000_000.0, "oi_change_pct": -2.0, "feedback": 1.25,
    "fuel_1pct_usd": None, "fuel_2pct_usd": None, "fuel_5pct_usd": None,  # no liquidation map here
    "run_id": "run-1",
}


def _outbox_db(tmp_path, settings: JobSettings) -> None:
    """A warehouse holding one alert and its episode, queued for the configured sinks."""
    con = warehouse.connect(settings.db)
    warehouse.migrate(con)
    con.execute("INSERT INTO cascade_alerts (episode_id, severity_level, alert_type, scope, direction, alert_ts, "
                "minute_ts, start_ts, liq_usd, minute_liq_usd, threshold_usd, price_move_pct, severity) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", list(ALERT_ROW))
    con.execute("""INSERT INTO cascades (episode_id, scope, direction, status, start_ts, detected_ts, peak_ts, end_ts,
                   duration_minutes, long_liq_usd, short_liq_usd, liq_count, peak_minute_liq_usd, oi_change_usd,
                   oi_change_pct, threshold_usd, severity, severity_level, feedback)
                   VALUES ('ep-btc-1', 'BTC', 'long_liquidation', 'open', '2026-01-01 00:00:00+00',
                   '2026-01-01 00:02:00+00', '2026-01-01 00:01:00+00', '2026-01-01 00:02:00+00', 2, 1500000.5, 0,
                   12, 900000.25, -40000000, -2.0, 500000, 3.000001, 1, 1.25)""")
    keys = tmp_path / "new_alerts.parquet"
    con.execute(f"COPY (SELECT episode_id, severity_level FROM cascade_alerts) TO '{keys}' (FORMAT parquet)")
    con.execute("BEGIN")
    assert outbox.enqueue(con, "run-1", [str(keys)], settings) == 1
    con.execute("COMMIT")
    # a second cycle re-emitting the same alert queues nothing more
    assert outbox.enqueue(con, "run-2", [str(keys)], settings) == 0
    con.close()


class Receiver:
    """A webhook receiver on a free loopback port answering each request per ``script``
    (an HTTP status, or "hold": keep the request until released); the rest get 200."""

    def __init__(self, script: list) -> None:
        self.script = list(script)
        self.requests: list[dict] = []
        self.release = threading.Event()
        self.holding = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    action = receiver.script.pop(0) if receiver.script else 200
                if action == "hold":
                    receiver.holding.set()
                    receiver.release.wait(30)
                    return  # the client timed out long ago; nothing to answer
                self.send_response(action)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/{SECRET_URL_PART}?token=x"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory():
    made = []

    def make(script):
        r = Receiver(script)
        made.append(r)
        return r
    yield make
    for r in made:
        r.close()


def _settings(tmp_path, url: str, **alerts) -> JobSettings:
    a = AlertSettings(topic="", webhooks=(url,), webhook_token=SECRET_TOKEN, webhook_timeout_s=0.5,
                      webhook_max_attempts=3, webhook_backoff_s=0.05, webhook_max_backoff_s=0.2, **alerts)
    return JobSettings(db=tmp_path / "w.duckdb", data_dir=tmp_path, alerts=a)


def _rows(settings: JobSettings, sql: str) -> list[tuple]:
    con = warehouse.connect(settings.db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _assert_body(req: dict, before_us: int) -> None:
    body = dict(req["body"])
    committed = datetime.fromisoformat(body.pop("committed_ts").replace("Z", "+00:00"))
    assert committed.timestamp() * 1e6 >= before_us - 1
    assert body == EXPECTED_BODY
    assert req["headers"]["Idempotency-Key"] == "ep-btc-1:1"
    assert req["headers"]["Authorization"] == f"Bearer {SECRET_TOKEN}"
    assert req["headers"]["Content-Type"] == "application/json"


def _no_secret_anywhere(settings: JobSettings, caplog) -> None:
    texts = [r.getMessage() for r in caplog.records]
    texts += [repr(r) for r in _rows(settings, "SELECT * FROM alert_deliveries")]
    texts += [repr(r) for r in _rows(settings, "SELECT * FROM alert_dead_letters")]
    texts.append(repr(settings))
    texts.append(format_status(collect_status(settings, timeout_s=0.5)))
    for t in texts:
        assert SECRET_URL_PART not in t and SECRET_TOKEN not in t and "token=" not in t, t


def test_failing_receiver_5xx_then_ok_gets_the_alert_once_with_one_idempotency_key(tmp_path, receiver_factory, caplog):
    rx = receiver_factory([503, 502])
    s = _settings(tmp_path, rx.url)
    before_us = datetime.now(UTC).timestamp() * 1e6
    _outbox_db(tmp_path, s)
    with caplog.at_level(logging.WARNING, logger="liqstream.alerts"):
        counts = deliver_pending(s, timeout_s=30)
    sink = outbox.sink_names(s)[0]
    assert counts == {sink: {"pending": 0, "sent": 1, "dead": 0}}
    assert len(rx.requests) == 3  # two refusals, then delivered
    for req in rx.requests:
        _assert_body(req, before_us)
    assert _rows(s, "SELECT status, attempts, last_error FROM alert_deliveries") == [("sent", 3, None)]
    assert _rows(s, "SELECT count(*) FROM alert_dead_letters") == [(0,)]
    assert sum("HTTP 503" in r.getMessage() for r in caplog.records) == 1
    _no_secret_anywhere(s, caplog)


def test_slow_receiver_times_out_is_retried_and_never_blocks_the_cycle(tmp_path, receiver_factory):
    rx = receiver_factory(["hold"])  # the first request hangs until the end of the test
    s = _settings(tmp_path, rx.url)
    _outbox_db(tmp_path, s)
    dispatcher = AlertDispatcher(s).start()
    con = warehouse.connect(s.db)
    try:
        # the job's side: sync hands the alert out and returns while the receiver holds the request
        done = threading.Event()
        threading.Thread(target=lambda: (dispatcher.sync(con), done.set()), daemon=True).start()
        assert done.wait(20), "sync waited for the webhook"
        assert rx.holding.wait(20)
        assert not rx.release.is_set()
        done.clear()
        while not dispatcher.idle():  # the timed-out attempt is retried and the retry answered
            dispatcher.sync(con)
            rx.holding.wait(0.05)
        dispatcher.sync(con)
    finally:
        con.close()
        dispatcher.close()
    assert [r["headers"]["Idempotency-Key"] for r in rx.requests] == ["ep-btc-1:1", "ep-btc-1:1"]
    status, attempts, error = _rows(s, "SELECT status, attempts, last_error FROM alert_deliveries")[0]
    assert (status, attempts, error) == ("sent", 2, None)


def test_receiver_down_dead_letters_the_alert_after_its_retries_without_leaking_secrets(tmp_path, caplog):
    port = free_port()  # nothing listens there
    s = _settings(tmp_path, f"http://127.0.0.1:{port}/hooks/{SECRET_URL_PART}?token=x")
    _outbox_db(tmp_path, s)
    with caplog.at_level(logging.WARNING, logger="liqstream.alerts"):
        counts = deliver_pending(s, timeout_s=30)
    sink = outbox.sink_names(s)[0]
    assert counts == {sink: {"pending": 0, "sent": 0, "dead": 1}}
    ((ep, lvl, dl_sink, attempts, reason, payload),) = _rows(
        s, "SELECT episode_id, severity_level, sink, attempts, reason, payload FROM alert_dead_letters")
    assert (ep, lvl, dl_sink, attempts) == ("ep-btc-1", 1, sink, 3)
    assert "unreachable" in reason and "gave up after 3 attempts" in reason
    assert json.loads(payload)["liq_usd"] == 1_500_000.5
    st = collect_status(s, timeout_s=0.5)
    assert st.check("alerts").ok is False and "alert_dead_letters" in st.check("alerts").hint
    # /metrics of the stream job: the outbox's counts per sink
    dispatcher = AlertDispatcher(s)
    con = warehouse.connect(s.db)
    try:
        dispatcher.sync(con)  # hands nothing out: nothing is pending
    finally:
        con.close()
    health = StreamHealth(extra_metrics=dispatcher.metrics_lines)
    metrics = health.render().splitlines()
    for name, value in (("delivered", 0), ("pending", 0), ("dead_lettered", 1)):
        assert f'liqstream_alerts_{name}{{sink="{sink}"}} {value}' in metrics
    assert st.alerts == {sink: {"pending": 0, "sent": 0, "dead": 1}}
    _no_secret_anywhere(s, caplog)


def test_receiver_refusing_the_request_is_dead_lettered_at_once(tmp_path, receiver_factory):
    rx = receiver_factory([400])
    s = _settings(tmp_path, rx.url)
    _outbox_db(tmp_path, s)
    deliver_pending(s, timeout_s=30)
    assert len(rx.requests) == 1  # a 400 is not retried: the same request would be refused again
    assert _rows(s, "SELECT attempts, reason FROM alert_dead_letters") == [(1, "HTTP 400")]


def test_record_takes_columns_by_name_kind_flows_through_and_round_trips_avro():
    row = {"episode_id": "e", "severity_level": 0, "alert_type": "watch", "scope": "market",
           "direction": "short_squeeze", "alert_ts": datetime(2026, 3, 9, 23, 31, tzinfo=UTC),
           "minute_ts": datetime(2026, 3, 9, 23, 30, tzinfo=UTC), "start_ts": datetime(2026, 3, 9, 23, 30, tzinfo=UTC),
           "liq_usd": 2e6, "minute_liq_usd": 2e6, "threshold_usd": 5e6, "price_move_pct": math.nan,
           "severity": 0.4, "detected_ts": None, "oi_change_usd": None, "oi_change_pct": None, "feedback": None}
    rec = to_record(row, "run-9", 1_773_099_061_000_001)
    assert rec["kind"] == "cascade" and rec["price_move_pct"] is None and rec["detected_ts"] is None
    assert rec["alert_ts"] == 1_773_099_060_000_000  # 2026-03-09T23:31:00Z
    burst = to_record({**row, "kind": "liquidation_burst"}, "run-9", 1)
    assert burst["kind"] == "liquidation_burst"
    assert decoder().decode(encoder().encode(burst)) == burst
    body = to_json(rec)
    assert body["alert_ts"] == "2026-03-09T23:31:00Z" and body["committed_ts"] == "2026-03-09T23:31:01.000001Z"
    with pytest.raises(ValueError, match="scope"):
        to_record({k: v for k, v in row.items() if k != "scope"}, "run-9", 1)


def test_alert_settings_from_env_and_config_file_keep_secrets_out_of_repr(tmp_path):
    from pipelines.config_file import apply_config

    conf = tmp_path / "liqstream.toml"
    conf.write_text(f'LIQSTREAM_ALERT_WEBHOOKS = "https://a.example/{SECRET_URL_PART}, http://b.example:8080/x"\n'
                    'LIQSTREAM_ALERT_WEBHOOK_MAX_ATTEMPTS = 4\n')
    token = tmp_path / "token"
    token.write_text(SECRET_TOKEN + "\n")
    env = {"LIQSTREAM_ALERT_WEBHOOK_TOKEN_FILE": str(token), "LIQSTREAM_ALERT_WEBHOOK_TIMEOUT_S": "2.5"}
    apply_config(conf, env)
    s = JobSettings.from_env(env)
    assert s.alerts.webhooks == (f"https://a.example/{SECRET_URL_PART}", "http://b.example:8080/x")
    assert (s.alerts.webhook_max_attempts, s.alerts.webhook_timeout_s) == (4, 2.5)
    assert s.alerts.webhook_token == SECRET_TOKEN and s.alerts.topic == "cascade_alerts.v1"
    names = outbox.sink_names(s)
    assert names[0] == "kafka:cascade_alerts.v1" and names[1].startswith("webhook:a.example#")
    assert names[2].startswith("webhook:b.example:8080#")
    for text in (repr(s), *names):
        assert SECRET_URL_PART not in text and SECRET_TOKEN not in text
    assert JobSettings.from_env({"LIQSTREAM_ALERT_TOPIC": ""}).alerts.topic == ""  # Kafka delivery off


def test_a_burst_goes_to_the_topic_but_pages_no_webhook_unless_listed(tmp_path):
    """kind liquidation_burst (level -1): queued for the Kafka topic, not for a webhook of the default kinds;
    a webhook that lists the kind gets it."""
    def queued(**alerts) -> list[tuple]:
        d = tmp_path / str(len(list(tmp_path.iterdir())))
        d.mkdir()
        s = JobSettings(db=d / "w.duckdb", data_dir=d, alerts=AlertSettings(
            topic="cascade_alerts.v1", webhooks=("http://127.0.0.1:9/hook",), **alerts))
        con = warehouse.connect(s.db)
        warehouse.migrate(con)
        con.execute("INSERT INTO cascade_alerts (episode_id, severity_level, alert_type, scope, direction, alert_ts, "
                    "minute_ts, start_ts, liq_usd, minute_liq_usd, threshold_usd, price_move_pct, severity, kind) "
                    "VALUES ('ep-burst', -1, 'burst', 'LINK', 'long_liquidation', '2026-01-01 00:02:00+00', "
                    "'2026-01-01 00:01:00+00', '2026-01-01 00:01:00+00', 14e6, 14e6, 5e6, -0.2, 2.8, "
                    "'liquidation_burst')")
        keys = d / "new_alerts.parquet"
        con.execute(f"COPY (SELECT episode_id, severity_level FROM cascade_alerts) TO '{keys}' (FORMAT parquet)")
        assert outbox.enqueue(con, "run-1", [str(keys)], s) == 1
        rows = con.execute("SELECT episode_id, severity_level, split_part(sink, ':', 1) FROM alert_deliveries "
                           "ORDER BY sink").fetchall()
        con.close()
        return rows

    assert queued() == [("ep-burst", -1, "kafka")]
    assert queued(webhook_kinds=("cascade", "liquidation_burst")) == [("ep-burst", -1, "kafka"),
                                                                      ("ep-burst", -1, "webhook")]
