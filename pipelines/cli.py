"""`liqstream`: the command line of the whole project.

Exit codes: 0 ok, 1 a step failed, 2 usage error, 3 a data-quality gate
failed, 4 no Kafka broker reachable, 5 (status) no recent streaming cycle.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DQ, EXIT_NO_BROKER = 0, 1, 2, 3, 4


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def _settings(args: argparse.Namespace):
    from pipelines.settings import JobSettings

    overrides = {}
    if getattr(args, "db", None):
        overrides["db"] = Path(args.db)
    s = JobSettings.from_env(**overrides)
    if getattr(args, "bootstrap_servers", None):
        s = s.replace(kafka=s.kafka.with_bootstrap(args.bootstrap_servers))
    return s


def _no_broker(bootstrap: str) -> CliError:
    return CliError(f"no broker at {bootstrap} — run `make broker` or set KAFKA_BOOTSTRAP_SERVERS", EXIT_NO_BROKER)


def _check_broker(bootstrap: str) -> None:
    from connectors.kafka.local_broker import port_open

    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        if port_open(host or "127.0.0.1", int(port)):
            return
    raise _no_broker(bootstrap)


# ---- broker --------------------------------------------------------------------------------------
def cmd_broker(args: argparse.Namespace) -> int:
    from connectors.kafka.local_broker import LocalBroker, port_open

    broker = LocalBroker(port=args.port, run_dir=Path(args.run_dir), die_with_parent=False)
    if args.action == "start":
        broker.start()
        print(f"broker up at {broker.bootstrap} (cluster {broker.cluster_id}); log: {broker.log_path}; "
              f"stop with `make broker-stop` or `liqstream broker stop --port {args.port}`")
    elif args.action == "stop":
        print("broker stopped" if broker.stop() else f"no broker started by liqstream on port {args.port}")
    else:
        up = port_open(broker.host, broker.port)
        print(f"broker at {broker.bootstrap}: {'up' if up else 'down'}")
        return EXIT_OK if up else EXIT_NO_BROKER
    return EXIT_OK


# ---- replay / normalize --------------------------------------------------------------------------
def _capture_items(path: str, venue: str | None, speed: float):
    from connectors.sources.capture import read_capture

    items = read_capture(path, venue=venue)
    if speed <= 0:
        return items
    return _paced(items, speed)


def _paced(items, speed: float):
    t_wall0 = time.monotonic()
    t_rec0 = None
    for item in items:
        t = getattr(item, "received_at_us", 0)
        if t:
            if t_rec0 is None:
                t_rec0 = t
            delay = (t - t_rec0) / 1e6 / speed - (time.monotonic() - t_wall0)
            if delay > 0:
                time.sleep(delay)
        yield item


def print_route_summary(counters, out=sys.stdout) -> None:
    s = counters.summary()
    print(f"messages read: {s['messages']:,}  normalized: {s['normalized_messages']:,}  "
          f"dead letters: {sum(s['dead_letters'].values()):,}  ignored: {sum(s['ignored'].values()):,}  "
          f"(balanced: {'yes' if counters.balanced else 'NO'})", file=out)
    for title, key in (("records", "records"), ("dead letters", "dead_letters"), ("ignored", "ignored")):
        if s[key]:
            print(f"  {title}: " + ", ".join(f"{k}={v:,}" for k, v in s[key].items()), file=out)


def cmd_replay(args: argparse.Namespace) -> int:
    from connectors.kafka.publish import publish_raw_stream

    s = _settings(args)
    _check_broker(s.kafka.bootstrap_servers)
    counters = publish_raw_stream(_capture_items(args.file, args.venue, args.speed), s.kafka,
                                  progress=sys.stderr.isatty() or args.progress)
    print_route_summary(counters)
    return EXIT_OK


def cmd_normalize(args: argparse.Namespace) -> int:
    from connectors.kafka.publish import account
    from connectors.normalize import RouteCounters

    counters = RouteCounters()
    normalizers: dict = {}
    out = sys.stdout
    for item in _capture_items(args.file, args.venue, 0):
        venue, outcome = account(item, normalizers)
        counters.add(venue, outcome)
        if outcome.dead is not None:
            d = outcome.dead.to_record()
            d["raw"] = d["raw"].decode("utf-8", errors="replace")
            out.write(json.dumps({"dead_letter": True, **d}) + "\n")
        for event_type, record in outcome.records:
            out.write(json.dumps({"event_type": event_type, **record}) + "\n")
        if args.show_ignored and outcome.ignored:
            out.write(json.dumps({"ignored": outcome.ignored, "exchange": venue}) + "\n")
    print_route_summary(counters, out=sys.stderr)
    return EXIT_OK


# ---- load / dq / summary ---------------------------------------------------------------------------
def cmd_load(args: argparse.Namespace) -> int:
    from pipelines.jobs.load import run_load

    s = _settings(args)
    _check_broker(s.kafka.bootstrap_servers)
    logging.getLogger("liqstream.progress").setLevel(logging.INFO)  # a long catch-up's progress lines
    result = run_load(s, reset_offsets=args.reset_offsets, run_dq=not args.no_dq)
    read = sum(r.size for r in result.ranges)
    print(f"load {result.run_id}: {result.status}; {read:,} messages from {len(result.ranges)} offset range(s), "
          f"{result.rejects_in:,} rejected, {result.rows_written:,} mart rows merged in {result.duration_s:.1f}s")
    from pipelines.alerts.delivery import deliver_pending

    for sink, c in deliver_pending(s, timeout_s=args.alerts_timeout).items():
        print(f"  alerts to {sink}: {c['sent']:,} delivered, {c['pending']:,} pending, {c['dead']:,} dead-lettered")
    for r in result.dq:
        print(f"  DQ {r.suite}: {r.verdict} ({r.successful}/{r.evaluated} expectations, {r.rows_checked:,} rows)"
              + (f" failed: {', '.join(r.failed_expectations)}" if r.failed_expectations else ""))
    return EXIT_OK if result.dq_passed else EXIT_DQ


def cmd_dq(args: argparse.Namespace) -> int:
    from pipelines import warehouse
    from pipelines.dq import DataQuality
    from pipelines.dq.suites import SUITES

    s = _settings(args)
    con = warehouse.connect(s.db)
    warehouse.migrate(con)
    run_id = f"dq-{time.strftime('%Y%m%dT%H%M%S')}"
    ok = True
    for name in args.suite or list(SUITES):
        r = DataQuality.shared().validate(con, name, run_id, docs_dir=s.data_dir / "gx_docs",
                                          archive_dir=s.data_dir / "archive")
        ok &= r.success or not r.critical
        print(f"DQ {r.suite}: {r.verdict} ({r.successful}/{r.evaluated} expectations, {r.rows_checked:,} rows)")
    con.close()
    DataQuality.shared().publish_docs()
    print(f"Data Docs: {s.data_dir / 'gx_docs' / 'index.html'}")
    return EXIT_OK if ok else EXIT_DQ


def cmd_summary(args: argparse.Namespace) -> int:
    from pipelines.summary import print_summary

    s = _settings(args)
    return print_summary(s.db)


def cmd_query(args: argparse.Namespace) -> int:
    from pipelines import queries

    if args.list_saved:
        print(queries.describe_saved())
        return EXIT_OK
    if bool(args.saved) == bool(args.sql):
        raise CliError("give either SQL or --saved NAME (see --list-saved)", EXIT_USAGE)
    try:
        saved = queries.load_saved(args.saved) if args.saved else None
    except KeyError as exc:
        raise CliError(exc.args[0], EXIT_USAGE) from exc
    as_of = None
    if args.as_of:
        from pipelines.report import parse_bound

        try:
            as_of = parse_bound(args.as_of)
        except ValueError as exc:
            raise CliError(f"--as-of must be a date (2026-03-10) or an ISO time (2026-03-09T18:00) ({exc})",
                           EXIT_USAGE) from exc
    s = _settings(args)
    con = queries.connect_read_only(s.db)
    try:
        queries.set_window_end(con, as_of)
        columns, rows = queries.run_query(con, saved.sql if saved else args.sql)
    except queries.ReadOnlyQueryError as exc:
        raise CliError(str(exc)) from exc
    except queries.SandboxError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    except Exception as exc:  # duckdb errors carry a clear message
        raise CliError(f"query failed: {exc}") from exc
    finally:
        con.close()
    if columns:
        if saved and args.format == "table":
            print(f"{saved.title}\n{saved.answers}\n")
        print(queries.render(columns, rows, args.format, args.max_rows))
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from pipelines.report import parse_bound, write_report

    s = _settings(args)
    try:
        start = parse_bound(args.date_from) if args.date_from else None
        end = parse_bound(args.date_to, end=True) if args.date_to else None
    except ValueError as exc:
        raise CliError(f"--from/--to must be dates (2026-03-09) or ISO times (2026-03-09T13:00) ({exc})",
                       EXIT_USAGE) from exc
    out = write_report(s.db, Path(args.out) if args.out else s.data_dir / "report.html", start, end)
    print(f"report written: {out.resolve()}  (open it in a browser: file://{out.resolve()})")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from pipelines.serve.app import serve

    s = _settings(args)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: binding to {args.host} shows the desk to the network; it has no authentication",
              file=sys.stderr)
    url = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}/"
    print(f"liqstream desk: {url}  (reads {s.db} read-only, its snapshot while the streaming job runs; "
          "Ctrl-C stops)", flush=True)
    serve(s.db, host=args.host, port=args.port, poll_s=args.poll)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from pipelines.status import collect_status, format_status

    s = _settings(args)
    st = collect_status(s, metrics_port=args.metrics_port, stale_after_s=args.stale_after)
    print(json.dumps(st.to_dict(), indent=2) if args.format == "json" else format_status(st))
    return st.exit_code


def cmd_alerts(args: argparse.Namespace) -> int:
    from pipelines.alerts.tail import tail

    s = _settings(args)
    _check_broker(s.kafka.bootstrap_servers)
    topic = args.topic or s.alerts.topic
    if not topic:
        raise CliError("no alert topic: LIQSTREAM_ALERT_TOPIC is empty (Kafka delivery is off)", EXIT_USAGE)
    try:
        tail(s.kafka, topic, last=None if args.from_beginning else args.last, follow=args.follow, fmt=args.format)
    except LookupError as exc:
        raise CliError(str(exc)) from exc
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    from connectors.simulator import cli as sim_cli

    return sim_cli.run(args)


def cmd_capture(args: argparse.Namespace) -> int:
    from connectors.sources import recorder

    return recorder.run(args)


def cmd_instruments(args: argparse.Namespace) -> int:
    from connectors.exchanges import NORMALIZERS
    from connectors.instruments import InstrumentBook

    if args.venue not in NORMALIZERS:
        raise CliError(f"unknown venue {args.venue!r}; known: {', '.join(sorted(NORMALIZERS))}", EXIT_USAGE)
    if args.action == "show":
        book = InstrumentBook.load(args.venue)
        print(f"{args.venue}: {len(book)} instruments (version {book.version}), "
              f"{len(book.history)} more in the history of expired listings")
        for inst in book:
            print(f"  {inst.symbol:<24} {inst.base:<8} {inst.quote:<6} {inst.kind:<10} "
                  f"{'inverse' if inst.inverse else 'linear'} contract={inst.contract_value:g}")
        return EXIT_OK
    from connectors.instruments_refresh import refresh

    try:
        path = refresh(args.venue)
    except OSError as exc:
        raise CliError(f"could not reach {args.venue}'s instrument endpoint ({exc}); the bundled file is unchanged") from exc
    print(f"wrote {path}")
    return EXIT_OK


def cmd_stream(args: argparse.Namespace) -> int:
    from pipelines.jobs.stream import StreamJob, StreamOptions

    s = _settings(args)
    _check_broker(s.kafka.bootstrap_servers)
    logging.getLogger("liqstream").setLevel(logging.INFO)
    job = StreamJob(s, StreamOptions(interval_s=args.interval, dq_every_s=args.dq_every,
                                     exit_when_idle=args.exit_when_idle, metrics_port=args.metrics_port,
                                     max_cycles=args.max_cycles, snapshot_every_s=args.snapshot_every,
                                     analytics_every_s=args.analytics_every))
    job.install_signal_handlers()
    print(f"streaming from {s.kafka.describe()} into {s.db} every {args.interval:g}s"
          + (f"; metrics on http://127.0.0.1:{args.metrics_port}/metrics" if args.metrics_port else "")
          + "; Ctrl-C stops after the current cycle", flush=True)
    rc = job.run()
    h = job.health
    print(f"stream stopped: {h.cycles} cycles ({h.failed_cycles} failed), {h.events_total:,} events, "
          f"{h.rejects_total:,} rejects, lag {sum(h.lag.values()):,}")
    return rc


def cmd_backfill(args: argparse.Namespace) -> int:
    from datetime import date

    from pipelines.jobs.backfill import run_backfill

    s = _settings(args)
    try:
        start, end = date.fromisoformat(args.date_from), date.fromisoformat(args.date_to or args.date_from)
    except ValueError as exc:
        raise CliError(f"--from/--to must be dates like 2024-08-05 ({exc})", EXIT_USAGE) from exc
    if end < start:
        raise CliError("--to is before --from", EXIT_USAGE)
    if args.source == "capture" and not args.capture:
        raise CliError("--source capture needs one or more --capture FILE", EXIT_USAGE)
    captures = args.capture
    if args.source in ("tardis", "tardis-raw"):
        from pipelines.jobs.backfill import tardis_files

        if not args.tardis_dir or not Path(args.tardis_dir).is_dir():
            raise CliError(f"--source {args.source} needs --tardis-dir DIR (a directory)", EXIT_USAGE)
        captures = tardis_files(args.tardis_dir, args.source)
        if not captures:
            raise CliError(f"no {'CSV dataset' if args.source == 'tardis' else 'raw replay'} files in "
                           f"{args.tardis_dir}", EXIT_USAGE)
    runner = {k: v for k, v in (("backfill_runner", args.runner), ("dask_scheduler", args.dask_scheduler),
                                ("staging", args.staging)) if v}
    s = s.replace(**runner)
    if s.backfill_runner not in ("local", "dask"):
        raise CliError(f"--runner must be local or dask, not {s.backfill_runner!r}", EXIT_USAGE)
    if s.backfill_runner == "dask" and args.source == "kafka":
        raise CliError("--runner dask reads archive, capture and tardis sources; use --runner local for kafka",
                       EXIT_USAGE)
    if args.source == "kafka":
        _check_broker(s.kafka.bootstrap_servers)
    from pipelines.dask_runner import DaskSchedulerUnreachable

    try:
        r = run_backfill(s, start, end, source=args.source, captures=captures, run_dq=not args.no_dq,
                         progress=True)
    except DaskSchedulerUnreachable as exc:
        raise CliError(f"{exc}; nothing was published (set --dask-scheduler or LIQSTREAM_DASK_SCHEDULER)",
                       EXIT_USAGE) from exc
    print(f"backfill {r.run_id}: {r.status}; {r.events:,} events, {start}..{end} from {args.source}, "
          f"{r.duration_s:.1f}s ({r.events / max(r.duration_s, 1e-9):,.0f} events/s)")
    if r.timings:
        print("  time: " + ", ".join(f"{k} {v:.1f}s" for k, v in r.timings.items()))
    for table, n in r.rows.items():
        print(f"  {table:<18} {n:>10,} rows replaced")
    for d in r.dq:
        print(f"  DQ {d.suite}: {d.verdict} ({d.successful}/{d.evaluated}, {d.rows_checked:,} rows)"
              + (f" failed: {', '.join(d.failed_expectations)}" if d.failed_expectations else ""))
    if not r.dq_passed:
        print("critical data-quality failure: nothing was published (the transaction was rolled back)")
        return EXIT_DQ
    return EXIT_OK


# ---- demo: the whole default job -------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    """Broker + simulated preset replayed to Kafka while the streaming job consumes it + DQ + summary."""
    from connectors.kafka.local_broker import LocalBroker
    from connectors.kafka.topics import ensure_topics
    from pipelines.jobs.stream import StreamJob, StreamOptions
    from pipelines.summary import print_summary

    s = _settings(args)
    own_broker = not os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and not args.bootstrap_servers
    broker = desk = None
    t0 = time.perf_counter()
    capture = Path(args.capture) if args.capture else _demo_capture(s.data_dir, args.scenario, args.seed)
    try:
        if own_broker:
            broker = LocalBroker(port=args.port or 0, run_dir=s.data_dir / "broker")  # 0: a free port
            broker.start()
            s = s.replace(kafka=s.kafka.with_bootstrap(broker.bootstrap))
            _step(f"local broker up at {broker.bootstrap} (log: {broker.log_path})")
            # a fresh local broker is a new, empty cluster: rebuild the demo marts from it
            from pipelines import warehouse
            from pipelines.jobs.load import DERIVED_TABLES

            con = warehouse.connect(s.db)
            warehouse.migrate(con)
            warehouse.reset_state(con, DERIVED_TABLES)
            con.close()
        else:
            _check_broker(s.kafka.bootstrap_servers)
            _step(f"using the Kafka cluster at {s.kafka.describe()}")
        ensure_topics(s.kafka)
        if args.serve:
            desk = _start_desk(s, args.serve_port)
        _step(f"replaying {capture} to Kafka while the streaming job consumes it")
        # The replay runs in its own process: in a thread it would share the GIL with the Beam
        # cycles and the whole demo would run on one core (measured: 2k events/s both ways).
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            replay = pool.submit(_replay_capture, str(capture), s.kafka, sys.stderr.isatty())
            # analytics (episodes) once per hour of wall time keeps the replay fast; a desk watching asks for them
            # every few seconds, so the cascade shows while it streams in
            job = StreamJob(s, StreamOptions(interval_s=1.0, dq_every_s=0, exit_when_idle=2,
                                             analytics_every_s=5 if args.serve else 3600, done=replay.done))
            job.install_signal_handlers()  # Ctrl-C / SIGTERM: finish the cycle, stop the broker, exit
            rc = job.run()
            counters = None
            if not replay.done():  # the job was stopped (signal) before the replay ended
                for proc in list(getattr(pool, "_processes", {}).values()):
                    proc.terminate()
                _step("stopped before the replay ended")
            else:
                try:
                    counters = replay.result()
                except Exception as exc:
                    raise CliError(f"replay failed: {exc}") from exc
        if counters is not None:
            print_route_summary(counters)
        h = job.health
        _step(f"streaming job consumed {h.events_total:,} events in {h.cycles} cycles "
              f"({h.rejects_total:,} rejects, lag {sum(h.lag.values()):,})")
        _demo_alerts(s)
    finally:
        if broker is not None:
            broker.stop()
            _step("local broker stopped")
        if desk is not None and sys.exc_info()[0] is not None:  # the demo failed: take the desk down with it
            desk.stop()
    print_summary(s.db)
    _demo_report(s)
    print(f"\ndone in {time.perf_counter() - t0:.0f}s; marts in {s.db}  "
          f"(try: liqstream query \"SELECT * FROM v_cascades_latest LIMIT 5\")")
    if desk is None:
        port = int(os.environ.get("LIQSTREAM_SERVE_PORT", "8050"))
        print(f"live desk: run `make serve` (or `.venv/bin/liqstream serve --port {port}`), then open "
              f"http://127.0.0.1:{port}/ ; `liqstream demo --serve` shows the next run live")
        return rc
    import signal

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    # the stream job's handlers only asked it to finish its cycle; now a signal ends the wait for the desk
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        _step(f"the live desk stays up at {desk.url} (Ctrl-C stops it)")
        desk.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        desk.stop()
    return rc


def _demo_alerts(s) -> None:
    from pipelines import warehouse
    from pipelines.alerts.outbox import counts

    con = warehouse.connect(s.db)
    try:
        for sink, c in counts(con).items():
            _step(f"cascade alerts to {sink}: {c['sent']:,} delivered, {c['pending']:,} pending, "
                  f"{c['dead']:,} dead-lettered (liqstream alerts tail, while a broker runs)")
    finally:
        con.close()


class _DemoDesk:
    """`liqstream serve` beside the demo, in its own process (the demo's Beam cycles keep this one busy)."""

    def __init__(self, proc: subprocess.Popen, url: str) -> None:
        self.proc, self.url = proc, url

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def _start_desk(s, port: int) -> _DemoDesk:
    url = f"http://127.0.0.1:{port}/"
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "--db", str(s.db), "--port", str(port)],
                            stdout=subprocess.DEVNULL)
    _step(f"live desk: {url} — open it now to watch the cascade come in")
    return _DemoDesk(proc, url)


def _replay_capture(capture: str, kafka, progress: bool):
    """The demo's replay (run in a child process): normalize the capture and publish it."""
    from connectors.kafka.publish import publish_raw_stream

    return publish_raw_stream(_capture_items(capture, None, 0), kafka, create_topics=False, progress=progress)


def _demo_capture(data_dir: Path, scenario: str, seed: int) -> Path:
    """The simulated day, generated once per (scenario, seed, simulator version) and reused."""
    import hashlib

    from connectors.simulator import capture as sim_capture

    src = Path(sim_capture.__file__).parent
    digest = hashlib.sha1(b"".join(p.read_bytes() for p in sorted(src.glob("*.py")))).hexdigest()[:12]
    out = data_dir / "sim" / f"{scenario}-{seed}-{digest}.jsonl.gz"
    if not out.exists():
        _step(f"simulating scenario {scenario} (seed {seed}) -> {out}")
        tmp = out.with_suffix(".part.gz")
        summary = sim_capture.write_capture(str(tmp), scenario, seed,
                                            truth_path=str(out.with_name(out.name.replace(".jsonl.gz", ".truth.json"))),
                                            progress=sys.stderr.isatty())
        tmp.rename(out)
        _step(f"{summary['messages']:,} raw venue messages, {summary['episodes']} true cascade episodes, "
              f"${summary['liquidated_long_usd'] / 1e6:,.0f}M longs liquidated")
    else:
        _step(f"reusing the simulated day {out}")
    return out


def _demo_report(s) -> None:
    try:
        from pipelines.report import write_report
    except ImportError:
        return
    path = write_report(s.db, s.data_dir / "report.html")
    _step(f"report: {path}")


def quiet_third_party_logs(verbose: bool = False) -> None:
    """Beam warns about optional GCP clients on import; GX logs its temp docs dir. Neither helps a user."""

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "apitools not found" not in record.getMessage()

    for handler in logging.getLogger().handlers:
        handler.addFilter(_Drop())
    if not verbose:
        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        # kafka-python 3.0 logs closed sockets at ERROR on a clean close; real failures still raise to us
        logging.getLogger("kafka").setLevel(logging.CRITICAL)


def _step(msg: str) -> None:
    print(f"==> {msg}", flush=True)


# ---- parser ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="liqstream", formatter_class=fmt,
        description="Watch crypto liquidation cascades: venue feeds -> Kafka -> Beam -> DuckDB marts.",
        epilog=textwrap.dedent("""\
            examples:
              liqstream demo                         # broker + bundled capture + pipeline + DQ + summary
              liqstream broker start --port 9092
              liqstream replay capture.jsonl.gz      # normalize a capture onto Kafka
              liqstream load                         # consume new offsets into the marts
              liqstream query "SELECT * FROM liquidations_1m ORDER BY notional_usd DESC LIMIT 10"

            configuration: env KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM,
            KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD(_FILE), LIQSTREAM_DB, LIQSTREAM_DATA_DIR, ...;
            the same names in a TOML file (--config, $LIQSTREAM_CONFIG or ./liqstream.toml);
            flags override env, env overrides the file.
            exit codes: 0 ok, 1 failure, 2 usage, 3 data-quality gate failed, 4 no broker,
            5 (status) the streaming job has not completed a cycle recently."""))
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--config", metavar="FILE",
                   help="TOML file of settings named like the environment variables (default: $LIQSTREAM_CONFIG, "
                        "else ./liqstream.toml if present); flags > environment > file")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func, help: str, example: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help, formatter_class=fmt,
                            epilog="example:\n  " + example)
        sp.set_defaults(func=func)
        return sp

    def kafka_flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--bootstrap-servers", help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP_SERVERS, default 127.0.0.1:9092)")

    def db_flag(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--db", help="DuckDB file (env LIQSTREAM_DB, default data/liqstream.duckdb)")

    sp = add("broker", cmd_broker, "start/stop the local Kafka-protocol broker (Tansu)", "liqstream broker start --port 9092")
    sp.add_argument("action", choices=["start", "stop", "status"])
    sp.add_argument("--port", type=int, default=int(os.environ.get("LIQSTREAM_KAFKA_PORT", "9092")))
    sp.add_argument("--run-dir", default="data/broker", help="where the pid file and the broker log go")

    sp = add("replay", cmd_replay, "normalize a capture file (liqstream JSONL or cryptofeed) and publish it to Kafka",
             "liqstream replay tests/fixtures/demo/binance-futures-demo.jsonl.gz --speed 10")
    sp.add_argument("file", help="capture file (.gz allowed)")
    sp.add_argument("--venue", help="venue id when the file does not say it (cryptofeed captures named otherwise)")
    sp.add_argument("--speed", type=float, default=0.0, help="replay at recorded speed x SPEED (0 = as fast as possible)")
    sp.add_argument("--progress", action="store_true", help="progress bar even when stderr is not a terminal")
    kafka_flags(sp)

    sp = add("normalize", cmd_normalize, "print normalized records (and dead letters) of a capture as JSON lines",
             "liqstream normalize capture.jsonl.gz | head")
    sp.add_argument("file", nargs="?", default="-", help="capture file or - for stdin")
    sp.add_argument("--venue", help="venue of raw messages without envelope")
    sp.add_argument("--show-ignored", action="store_true", help="also print a line per ignored message")

    sp = add("load", cmd_load, "consume the topics' new offsets into the marts (bounded Beam run), then run DQ",
             "liqstream load")
    sp.add_argument("--reset-offsets", action="store_true",
                    help="forget consumed offsets and rebuild the marts from the topics' beginning")
    sp.add_argument("--no-dq", action="store_true", help="skip the data-quality checkpoint")
    sp.add_argument("--alerts-timeout", type=float, default=30.0,
                    help="seconds to deliver new cascade alerts after the load (the rest stay pending)")
    kafka_flags(sp)
    db_flag(sp)

    sp = add("stream", cmd_stream, "the streaming job: consume new offsets in continuous bounded cycles, exactly once",
             "liqstream stream --interval 1 --metrics-port 9108")
    sp.add_argument("--interval", type=float, default=float(os.environ.get("LIQSTREAM_INTERVAL", "1")),
                    help="cycle period in seconds: a busy cycle is followed at once, an empty one waits the rest (env LIQSTREAM_INTERVAL, default 1)")
    sp.add_argument("--dq-every", type=float, default=60.0, help="seconds between data-quality checkpoints (0 = every cycle)")
    sp.add_argument("--exit-when-idle", type=int, default=0, metavar="N",
                    help="stop after N consecutive cycles without new messages that left no lag (0 = run until stopped)")
    sp.add_argument("--max-cycles", type=int, default=0, help="stop after this many cycles (0 = unbounded)")
    sp.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus /metrics on this port")
    sp.add_argument("--snapshot-every", type=float, default=2.0,
                    help="seconds between read snapshots published for analysts and the live desk, at least 10x "
                         "the last snapshot's copy time (0 = only at stop; default 2)")
    sp.add_argument("--analytics-every", type=float, default=0.0,
                    help="seconds between analytics recomputations (0 = every cycle)")
    kafka_flags(sp)
    db_flag(sp)

    sp = add("backfill", cmd_backfill, "rebuild the marts of a date range with the streaming job's graph "
             "(replaces exactly those days; a failed DQ gate publishes nothing)",
             "liqstream backfill --from 2024-08-05 --to 2024-08-06 --source archive\n"
             "  liqstream backfill --from 2024-08-01 --to 2024-08-31 --runner dask --dask-scheduler tcp://10.0.0.5:8786 "
             "--staging /mnt/shared/liqstream-staging")
    sp.add_argument("--from", dest="date_from", required=True, help="first UTC day (YYYY-MM-DD)")
    sp.add_argument("--to", dest="date_to", help="last UTC day, inclusive (default: --from)")
    sp.add_argument("--source", choices=["archive", "capture", "kafka", "tardis", "tardis-raw"], default="archive",
                    help="archive: the normalized Parquet archive under LIQSTREAM_DATA_DIR/archive (default); "
                         "capture: --capture files; kafka: the topics, offsets found by time; tardis: tardis.dev "
                         "CSV datasets (trades, liquidations, derivative_ticker) in --tardis-dir; tardis-raw: "
                         "tardis.dev raw replay files in --tardis-dir")
    sp.add_argument("--capture", action="append", help="capture file for --source capture (repeatable)")
    sp.add_argument("--tardis-dir", help="directory of tardis.dev files for --source tardis / tardis-raw "
                                         "(named <exchange>_<data type>_<date>_<symbol>.csv.gz, raw: <exchange>_...)")
    sp.add_argument("--no-dq", action="store_true", help="skip the data-quality gate")
    sp.add_argument("--runner", choices=["local", "dask"],
                    help="local: this host's processes (default, env LIQSTREAM_BACKFILL_RUNNER); dask: Beam's "
                         "Dask runner on a dask.distributed cluster (docs/adr/017)")
    sp.add_argument("--dask-scheduler", help="tcp://HOST:PORT of the Dask scheduler for --runner dask (env "
                                             "LIQSTREAM_DASK_SCHEDULER; default: a LocalCluster on this host)")
    sp.add_argument("--staging", help="folder every Dask worker and this host see, or an fsspec URL (s3://, gs://), "
                                      "for the intermediate Parquet (env LIQSTREAM_STAGING; default: a local "
                                      "temporary folder, fine for a LocalCluster only)")
    kafka_flags(sp)
    db_flag(sp)

    sp = add("dq", cmd_dq, "run the data-quality suites now and store the results", "liqstream dq --suite liquidations_1m")
    sp.add_argument("--suite", action="append", help="suite name (repeatable; default all)")
    db_flag(sp)

    sp = add("summary", cmd_summary, "print rows per table, the last DQ verdicts and the top liquidation minutes",
             "liqstream summary")
    db_flag(sp)

    sp = add("query", cmd_query, "run SQL or a saved analyst query against the marts (read-only connection)",
             'liqstream query "SELECT side, sum(notional_usd) FROM liquidations_1m GROUP BY side"\n'
             "  liqstream query --saved largest_cascades\n"
             "  liqstream query --saved liquidations_by_venue_24h --format csv\n"
             "  liqstream query --saved liquidation_totals --as-of 2026-03-09T18:00\n"
             "  liqstream query --list-saved")
    sp.add_argument("sql", nargs="?", help="SQL to run (omit with --saved / --list-saved)")
    sp.add_argument("--saved", metavar="NAME", help="run a saved query from pipelines/queries/ (see --list-saved)")
    sp.add_argument("--list-saved", action="store_true", help="list the saved queries and what each answers")
    sp.add_argument("--format", choices=["table", "csv", "json"], default="table",
                    help="table: aligned, for people; csv / json: every row, for scripts")
    sp.add_argument("--max-rows", type=int, default=50, help="rows shown by --format table (0 = all)")
    sp.add_argument("--as-of", metavar="TIME",
                    help="end the 'last N hours' windows of liquidation_totals / liquidations_by_venue_24h here "
                         "(UTC date or ISO time, exclusive) instead of at the data's latest minute")
    db_flag(sp)

    sp = add("report", cmd_report, "write a self-contained HTML report of the marts (plots, episodes, DQ)",
             "liqstream report --from 2026-03-09 --to 2026-03-10 --out data/report.html")
    sp.add_argument("--from", dest="date_from", help="start (UTC date or ISO time; default: the data's first minute)")
    sp.add_argument("--to", dest="date_to", help="end, exclusive (a date means up to its end; default: the data's last)")
    sp.add_argument("--out", default=None, help="HTML file to write (default: LIQSTREAM_DATA_DIR/report.html)")
    db_flag(sp)

    sp = add("serve", cmd_serve, "the live desk: a web page of the episodes, liquidation totals and charts that "
             "follows the streaming job (or shows a past day)",
             "liqstream serve --port 8050   # then open http://127.0.0.1:8050/ (?date=2026-03-09 for a past day)")
    sp.add_argument("--host", default=os.environ.get("LIQSTREAM_SERVE_HOST", "127.0.0.1"),
                    help="address to bind (env LIQSTREAM_SERVE_HOST, default 127.0.0.1: this machine only)")
    sp.add_argument("--port", type=int, default=int(os.environ.get("LIQSTREAM_SERVE_PORT", "8050")),
                    help="port (env LIQSTREAM_SERVE_PORT, default 8050)")
    sp.add_argument("--poll", type=float, default=0.5,
                    help="seconds between checks for a new snapshot; the page updates after each change")
    db_flag(sp)

    sp = add("status", cmd_status, "is the broker up, the streaming job running, its lag, the last cycle, the DQ verdict",
             "liqstream status --metrics-port 9108\n"
             "exit codes: 0 healthy, 1 no database or the last run failed, 3 data quality failing or quarantined,\n"
             "  4 no broker, 5 no streaming cycle within --stale-after seconds")
    sp.add_argument("--metrics-port", type=int, default=None,
                    help="also read the streaming job's Prometheus /metrics on this port")
    sp.add_argument("--stale-after", type=float, default=120.0,
                    help="seconds after which the last cycle means the streaming job is not running (default 120)")
    sp.add_argument("--format", choices=["table", "json"], default="table")
    kafka_flags(sp)
    db_flag(sp)

    sp = add("alerts", cmd_alerts, "print the cascade alerts of the topic cascade_alerts.v1, decoded (tail: the last N, "
             "then new ones with --follow)",
             "liqstream alerts tail -n 20 --follow\n  liqstream alerts tail --from-beginning --format json | jq .")
    sp.add_argument("action", choices=["tail"])
    sp.add_argument("-n", "--last", type=int, default=10, help="alerts per partition read back, the last N shown (default 10)")
    sp.add_argument("--from-beginning", action="store_true", help="every alert the topic holds")
    sp.add_argument("-f", "--follow", action="store_true", help="keep printing new alerts until Ctrl-C")
    sp.add_argument("--format", choices=["text", "json"], default="text",
                    help="text: one line per alert; json: the webhook body, one JSON object per line")
    sp.add_argument("--topic", help="alert topic (env LIQSTREAM_ALERT_TOPIC, default cascade_alerts.v1)")
    kafka_flags(sp)

    sp = add("simulate", cmd_simulate, "generate a market day with liquidation cascades as raw venue messages "
             "(+ ground truth)", "liqstream simulate --scenario A --seed 7 --out data/sim/A.jsonl.gz")
    from connectors.simulator import cli as sim_cli

    sim_cli.add_arguments(sp)

    sp = add("capture", cmd_capture, "record live venue websockets to a liqstream JSONL capture",
             "liqstream capture --venue bybit --symbols BTCUSDT,ETHUSDT --out data/captures/bybit.jsonl.gz --duration 3600")
    from connectors.sources import recorder

    recorder.add_arguments(sp)

    sp = add("instruments", cmd_instruments, "refresh a venue's bundled instrument metadata from its REST endpoint",
             "liqstream instruments refresh okx")
    sp.add_argument("action", choices=["refresh", "show"])
    sp.add_argument("venue")

    sp = add("demo", cmd_demo, "the whole default job (make run): local broker, simulated preset replayed to Kafka, "
             "streaming job until consumed, DQ, summary, report", "liqstream demo --scenario A --seed 7")
    sp.add_argument("--capture", help="capture to replay instead of the simulated day")
    sp.add_argument("--scenario", default="A", help="simulator preset (liqstream simulate --list), default A")
    sp.add_argument("--seed", type=int, default=7, help="simulator seed, default 7")
    sp.add_argument("--port", type=int, help="port of the local broker (default: a free port)")
    sp.add_argument("--serve", action="store_true",
                    help="start the live desk (liqstream serve) before the replay and keep it up afterwards")
    sp.add_argument("--serve-port", type=int, default=int(os.environ.get("LIQSTREAM_SERVE_PORT", "8050")),
                    help="port of the live desk with --serve (env LIQSTREAM_SERVE_PORT, default 8050)")
    kafka_flags(sp)
    db_flag(sp)
    return p


def main(argv: list[str] | None = None) -> int:
    from pipelines.config_file import ConfigFileError, apply_config, find_config

    # the config file feeds the environment before the parser reads its env-based defaults
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    try:
        path = find_config(known.config)
        if path is not None:
            apply_config(path)
    except ConfigFileError as exc:
        print(f"liqstream: {exc}", file=sys.stderr)
        return EXIT_USAGE
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_third_party_logs(verbose=args.verbose)
    from kafka.errors import KafkaTimeoutError

    try:
        return args.func(args)
    except CliError as exc:
        print(f"liqstream {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except KafkaTimeoutError as exc:
        if "bootstrap" not in str(exc):
            raise
        s = _settings(args)
        print(f"liqstream {args.command}: {_no_broker(s.kafka.bootstrap_servers)}", file=sys.stderr)
        return EXIT_NO_BROKER
    except KeyboardInterrupt:
        print(f"liqstream {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from pipelines.errors import explain

        print(f"liqstream {args.command}: {explain(exc)}", file=sys.stderr)
        if args.verbose:
            raise
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
