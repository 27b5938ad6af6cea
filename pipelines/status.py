"""`liqstream status`: the on-call view — broker, streaming job, lag, last cycle, data quality.

Each check answers one question and says what to do when the answer is bad. The exit code is
the most severe finding, in this order:

    4  no broker reachable (TCP or Kafka metadata)
    1  no database, or the last job run failed
    3  data quality failing: the latest verdict of a critical suite failed, or loads are quarantined
    5  no streaming cycle committed within --stale-after seconds (the job is not running)
    0  healthy

Lag is measured like the streaming job measures it: per partition, log end (``log_bounds``) minus
the offset committed with the marts (``kafka_offsets``; the log start when nothing is committed).
The streaming job records every cycle in ``pipeline_runs`` (job ``load``, one row per cycle with
new data) — its last row is the "last cycle"; an idle job commits nothing, so with
``--metrics-port`` the job's own ``liqstream_last_cycle_timestamp_seconds`` is used as well.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipelines.settings import JobSettings

EXIT_OK, EXIT_FAILED, EXIT_DQ, EXIT_NO_BROKER, EXIT_NOT_RUNNING = 0, 1, 3, 4, 5
_SEVERITY = {EXIT_NO_BROKER: 0, EXIT_FAILED: 1, EXIT_DQ: 2, EXIT_NOT_RUNNING: 3, EXIT_OK: 9}
#: pipeline_runs.job values written by the jobs that consume Kafka (the streaming cycle runs run_load)
STREAM_JOBS = ("load", "stream")


@dataclass
class Check:
    name: str
    ok: bool | None  # None: could not be determined (e.g. lag without a broker)
    summary: str
    hint: str = ""
    exit_code: int = EXIT_OK


@dataclass
class Status:
    checks: list[Check] = field(default_factory=list)
    lag: dict[str, int] = field(default_factory=dict)  # "topic[partition]" -> messages behind
    metrics: dict[str, float] = field(default_factory=dict)
    alerts: dict[str, dict[str, int]] = field(default_factory=dict)  # sink -> {pending, sent, dead}
    checked_at: str = ""

    @property
    def exit_code(self) -> int:
        codes = [c.exit_code for c in self.checks if c.exit_code != EXIT_OK]
        return min(codes, key=_SEVERITY.__getitem__) if codes else EXIT_OK

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "checked_at": self.checked_at,
                "checks": [asdict(c) for c in self.checks], "lag": self.lag, "metrics": self.metrics,
                "alerts": self.alerts}


def _with_timeout(fn: Any, timeout_s: float) -> Any:
    """Run ``fn`` in a daemon thread: kafka-python clients can block far longer than an on-call wants."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except Exception as exc:  # reported by the caller
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise TimeoutError(f"no answer within {timeout_s:g}s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _check_broker(settings: JobSettings, timeout_s: float) -> tuple[Check, str | None]:
    from connectors.kafka.local_broker import port_open

    bootstrap = settings.kafka.bootstrap_servers
    hint = f"run `make broker` (local) or set KAFKA_BOOTSTRAP_SERVERS / --bootstrap-servers (now {bootstrap})"
    reachable = []
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        if port.isdigit() and port_open(host or "127.0.0.1", int(port), timeout=min(timeout_s, 1.0)):
            reachable.append(server.strip())
    if not reachable:
        return Check("broker", False, f"no broker at {bootstrap} (TCP connection refused)", hint, EXIT_NO_BROKER), None

    def metadata() -> tuple[str, int, int]:
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(**settings.kafka.client_kwargs())
        try:
            cluster = admin.describe_cluster()
            topics = admin.list_topics()
            return str(cluster["cluster_id"]), len(cluster.get("brokers", [])), len(topics)
        finally:
            admin.close()

    try:
        cluster_id, brokers, topics = _with_timeout(metadata, timeout_s)
    except Exception as exc:
        return Check("broker", False, f"{', '.join(reachable)} accepts TCP but answers no Kafka metadata "
                                      f"({type(exc).__name__}: {exc})", hint, EXIT_NO_BROKER), None
    return Check("broker", True, f"up at {', '.join(reachable)}: cluster {cluster_id}, {brokers} broker(s), "
                                 f"{topics} topic(s)"), cluster_id


def _read_metrics(port: int, timeout_s: float) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as resp:  # noqa: S310 - loopback
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


def _age(ts: datetime | None, now: datetime) -> float | None:
    return None if ts is None else (now - ts.astimezone(UTC)).total_seconds()


def _fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"


def collect_status(settings: JobSettings, metrics_port: int | None = None, stale_after_s: float = 120.0,
                   timeout_s: float = 5.0, now: datetime | None = None) -> Status:
    """Run every check; never raises for an unhealthy system (that is what the checks report)."""
    from pipelines.queries import connect_read_only

    now = now or datetime.now(UTC)
    st = Status(checked_at=now.isoformat(timespec="seconds"))
    broker, cluster_id = _check_broker(settings, timeout_s)
    st.checks.append(broker)

    metrics_cycle_age = None
    if metrics_port:
        try:
            st.metrics = _read_metrics(metrics_port, timeout_s)
            last = st.metrics.get("liqstream_last_cycle_timestamp_seconds", 0.0)
            metrics_cycle_age = time.time() - last if last > 0 else None
            st.checks.append(Check("metrics", True, f"streaming job answers on :{metrics_port}/metrics: "
                                   f"{st.metrics.get('liqstream_cycles_total', 0):.0f} cycles "
                                   f"({st.metrics.get('liqstream_cycles_failed_total', 0):.0f} failed), last "
                                   f"{_fmt_age(metrics_cycle_age)}"))
        except Exception as exc:
            st.checks.append(Check("metrics", False, f"nothing answers on http://127.0.0.1:{metrics_port}/metrics "
                                   f"({type(exc).__name__})", "start the job: `liqstream stream --metrics-port "
                                   f"{metrics_port}`", EXIT_NOT_RUNNING))

    try:
        con = connect_read_only(settings.db)
    except FileNotFoundError:
        st.checks.append(Check("database", False, f"no database at {settings.db}",
                               "run `make run` (demo) or `liqstream load` / `liqstream stream` first", EXIT_FAILED))
        return st
    except Exception as exc:
        st.checks.append(Check("database", False, f"cannot open {settings.db} read-only: {exc}",
                               "another process may hold it for writing; retry in a moment", EXIT_FAILED))
        return st
    try:
        st.checks.append(Check("database", True, f"{settings.db} opened read-only"))
        _job_checks(con, st, now, stale_after_s, metrics_cycle_age)
        _lag_check(con, st, settings, cluster_id, broker.ok, timeout_s)
        _dq_checks(con, st)
        _alerts_check(con, st, now)
    finally:
        con.close()
    return st


def _job_checks(con: Any, st: Status, now: datetime, stale_after_s: float, metrics_cycle_age: float | None) -> None:
    last = con.execute(
        "SELECT run_id, job, status, started_at, finished_at, events_in, rejects_in, rows_written, duration_s, message "
        "FROM pipeline_runs ORDER BY coalesce(finished_at, started_at) DESC, run_id DESC LIMIT 1").fetchone()
    if last is None:
        st.checks.append(Check("last run", None, "no job has run yet", "run `make run` or `liqstream stream`"))
    else:
        run_id, job, status, started, finished, events, rejects, rows, dur, msg = last
        ok = status in ("ok", "empty")
        # rejects: dead letters and records the source refused (implausible, undecodable), in `rejects`
        summary = (f"{job} {run_id}: {status}, {events or 0:,} events, {rejects or 0:,} rejects, {rows or 0:,} rows, "
                   f"{dur or 0:.1f}s, finished {_fmt_age(_age(finished or started, now))}"
                   + (f" — {msg}" if msg else ""))
        hint = "" if ok else ("data-quality gate failed: see `liqstream query --saved dq_latest`"
                              if status == "dq_failed" else "see the job's log; rerun it")
        code = EXIT_OK if ok else (EXIT_DQ if status == "dq_failed" else EXIT_FAILED)
        st.checks.append(Check("last run", ok, summary, hint, code))
    dropped = con.execute("SELECT value_us FROM job_state WHERE name = 'duplicates_dropped'").fetchone()
    if dropped and dropped[0]:
        # copies of events already counted (a producer rerun): informative, never a failure (ADR 016)
        st.checks.append(Check("duplicates", True, f"{dropped[0]:,} duplicate events dropped since the offsets were reset"))
    cycle = con.execute("SELECT max(coalesce(finished_at, started_at)) FROM pipeline_runs WHERE list_contains(?, job)",
                        [list(STREAM_JOBS)]).fetchone()[0]
    ages = [a for a in (_age(cycle, now), metrics_cycle_age) if a is not None]
    age = min(ages) if ages else None
    running = age is not None and age <= stale_after_s
    st.checks.append(Check(
        "streaming job", running,
        (f"running: last cycle {_fmt_age(age)}" if running else
         f"not running: last cycle {_fmt_age(age)} (stale after {stale_after_s:g}s)"),
        "" if running else "start it: `liqstream stream` (or `make run` for the one-shot demo)",
        EXIT_OK if running else EXIT_NOT_RUNNING))


def _lag_check(con: Any, st: Status, settings: JobSettings, cluster_id: str | None, broker_ok: bool | None,
               timeout_s: float) -> None:
    committed = con.execute('SELECT topic, "partition", next_offset, cluster_id FROM kafka_offsets').fetchall()
    if not broker_ok:
        st.checks.append(Check("lag", None, f"unknown without a broker ({len(committed)} partition offsets committed)"))
        return
    from connectors.kafka.reader import log_bounds
    from pipelines.jobs.load import LOAD_TOPICS

    others = sorted({c for (_, _, _, c) in committed if c != cluster_id})
    if others:
        st.checks.append(Check("lag", False, f"the marts' offsets belong to cluster {others[0]}, the broker is "
                               f"{cluster_id} (a restarted local broker is a new, empty cluster)",
                               "reload with `liqstream load --reset-offsets`, or point at the original cluster",
                               EXIT_FAILED))
        return
    try:
        bounds = _with_timeout(lambda: log_bounds(settings.kafka, LOAD_TOPICS), timeout_s * 2)
    except Exception as exc:
        st.checks.append(Check("lag", None, f"could not read log ends ({type(exc).__name__}: {exc})"))
        return
    done = {(t, p): o for (t, p, o, _) in committed}
    for (topic, part), (begin, end) in sorted(bounds.items()):
        st.lag[f"{topic}[{part}]"] = max(0, end - done.get((topic, part), begin))
    total = sum(st.lag.values())
    worst = max(st.lag.items(), key=lambda kv: kv[1], default=("-", 0))
    st.checks.append(Check("lag", True, f"{total:,} messages behind the log end over {len(st.lag)} partition(s)"
                           + (f"; most on {worst[0]} ({worst[1]:,})" if total else "")))


def _dq_checks(con: Any, st: Status) -> None:
    latest = con.execute(
        "SELECT suite, success, critical, failed_expectations, checked_at FROM dq_results "
        "QUALIFY row_number() OVER (PARTITION BY suite ORDER BY checked_at DESC, run_id DESC) = 1 ORDER BY suite"
    ).fetchall()
    if not latest:
        st.checks.append(Check("data quality", None, "no checkpoint has run yet", "run `liqstream dq`"))
    else:
        failing = [s for (s, ok, crit, _, _) in latest if not ok and crit]
        warning = [s for (s, ok, crit, _, _) in latest if not ok and not crit]
        when = max(r[4] for r in latest)
        if failing:
            st.checks.append(Check("data quality", False, f"FAIL: critical suite(s) {', '.join(failing)} failed "
                                   f"(latest checkpoint {when:%Y-%m-%d %H:%M:%S} UTC)",
                                   "see `liqstream query --saved dq_latest`; the load is quarantined until a "
                                   "backfill rebuilds those days", EXIT_DQ))
        else:
            st.checks.append(Check("data quality", True, f"PASS: {len(latest)} suite(s)"
                                   + (f", warnings: {', '.join(warning)}" if warning else "")
                                   + f" (latest checkpoint {when:%Y-%m-%d %H:%M:%S} UTC)"))
    q = con.execute("SELECT count(*), min(from_ts), max(to_ts) FROM quarantine").fetchone()
    if q[0]:
        st.checks.append(Check("quarantine", False, f"{q[0]} quarantined load(s) hidden from the v_* views, "
                               f"{q[1]:%Y-%m-%d %H:%M} to {q[2]:%Y-%m-%d %H:%M} UTC",
                               "rebuild those days: `liqstream backfill --from DAY --to DAY`", EXIT_DQ))
    else:
        st.checks.append(Check("quarantine", True, "no quarantined loads"))


#: a pending alert older than this means a sink is not taking deliveries
ALERT_PENDING_STALE_S = 300.0


def _alerts_check(con: Any, st: Status, now: datetime) -> None:
    """Alert deliveries per sink. Reported, but not in the exit code: the marts are fine, a receiver is not."""
    from pipelines.alerts.outbox import counts

    try:
        st.alerts = counts(con)
        oldest = con.execute("SELECT min(enqueued_at) FROM alert_deliveries WHERE status = 'pending'").fetchone()[0]
    except Exception:  # a database from before the alert outbox (migration 0012) existed
        return
    if not st.alerts:
        st.checks.append(Check("alerts", None, "no cascade alert committed yet"))
        return
    dead = sum(c["dead"] for c in st.alerts.values())
    age = _age(oldest, now)
    stale = age is not None and age > ALERT_PENDING_STALE_S
    summary = "; ".join(f"{sink}: {c['sent']:,} delivered, {c['pending']:,} pending, {c['dead']:,} dead-lettered"
                        for sink, c in st.alerts.items())
    hint = []
    if stale:
        hint.append(f"oldest pending alert queued {_fmt_age(age)}: is the stream job running and the sink reachable?")
    if dead:
        hint.append("undeliverable alerts: `liqstream query \"SELECT * FROM alert_dead_letters\"`")
    st.checks.append(Check("alerts", not (dead or stale), summary, "; ".join(hint)))


def format_status(st: Status) -> str:
    mark = {True: "ok  ", False: "FAIL", None: "--  "}
    width = max(len(c.name) for c in st.checks)
    lines = [f"liqstream status at {st.checked_at}"]
    for c in st.checks:
        lines.append(f"  [{mark[c.ok]}] {c.name:<{width}}  {c.summary}")
        if c.hint:
            lines.append(f"         {'':<{width}}  → {c.hint}")
    meaning = {EXIT_OK: "healthy", EXIT_NO_BROKER: "no broker", EXIT_FAILED: "failure", EXIT_DQ: "data quality",
               EXIT_NOT_RUNNING: "streaming job not running"}
    lines.append(f"exit {st.exit_code}: {meaning[st.exit_code]}")
    return "\n".join(lines)
