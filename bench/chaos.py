"""`make chaos`: a fault campaign anyone can rerun (issue 16, item 3; docs/reliability.md).

Parts, each against brokers and databases of its own in a temporary directory:

* ``fuzz``: >= 100,000 raw messages mutated from the real captures in
  ``/work/shared/fixtures/exchange-captures`` (truncated, wrong types, NaN/Infinity/1e400, 1e30,
  negative/zero sizes, unknown venues and events, invalid UTF-8, 10 MB lines, deep nesting, far
  future/past timestamps) replayed onto a local broker, then one `load`. Figures: the books balance
  (messages = normalized + dead + ignored), the topics hold exactly the records and the DLQs exactly
  the dead letters, every reject has a reason, no mart holds a price <= 0 or a bar outside the
  captures' time range.
* ``kills``: a simulated market day on a broker; the stream job SIGKILLed at random moments
  ``--kills`` times, then run until caught up; every mart compared row by row (EXCEPT ALL both
  ways) with an uninterrupted stream job over the same topics: 0 missing, 0 extra.

Prints a summary table, writes ``bench/chaos.json``; exits 1 when any figure fails.
Not run: the producer killed mid-replay, a backfill killed, a reader process killed, the broker
paused/restarted (docs/reliability.md says what is promised and tested elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

from connectors.config import KafkaSettings
from connectors.exchanges import NORMALIZERS
from connectors.kafka.local_broker import LocalBroker, free_port
from connectors.kafka.publish import publish_raw_stream
from connectors.kafka.reader import log_bounds
from connectors.kafka.topics import all_topics
from connectors.normalize import TOPICS
from connectors.sources.capture import RawMessage, read_capture

REPO = Path(__file__).resolve().parents[1]
CAPTURES = Path("/work/shared/fixtures/exchange-captures")
MARTS = ["bars_1m", "bars_1m_symbol", "liquidations_1m", "cascades", "cascade_alerts", "oi_deltas", "contagion",
         "rejects", "late_events"]
#: columns that say when or by which run a row was written, not what it holds
RUN_COLUMNS = {"run_id", "updated_at", "created_at", "checked_at", "loaded_at"}

PARTS = ("fuzz", "kills", "producer", "backfill")
#: parts whose failure is a known, documented gap (docs/reliability.md): printed as FAILED, but they
#: do not fail the campaign until the gap is closed
KNOWN_GAPS = {"producer": "no event-level dedup: a record published twice (a producer rerun after a crash) is "
                          "counted twice in the marts; Kafka's idempotent producer covers retries within one "
                          "producer session only"}

# ---- fuzz ------------------------------------------------------------------------------------------
_POISON_VALUES = ["NaN", "Infinity", "-Infinity", "1e400", "1e30", "-1", "0", '"abc"', "null", "{}", "[]", "true",
                  '"1e30"', '"-1"', '"0"', '"NaN"']


def seeds() -> tuple[list[RawMessage], list[RawMessage]]:
    """The captures' messages of the venues liqstream reads: (those giving records, the others).
    Most capture lines are order-book updates (ignored): mutations of market events find more."""
    from connectors.kafka.publish import account

    events, others, normalizers = [], [], {}
    for path in sorted(CAPTURES.glob("*.gz")):
        for m in read_capture(path):
            if isinstance(m, RawMessage) and m.venue in NORMALIZERS:
                (events if account(m, normalizers)[1].records else others).append(m)
    return events, others


MUTATIONS = ["value", "value", "value", "value", "truncate", "drop_field", "time", "time", "venue", "event", "utf8",
             "nesting", "none"]


def mutate(rng: random.Random, m: RawMessage, kind: str) -> RawMessage:
    """``m`` with the mutation ``kind`` applied."""
    raw = m.raw
    if kind == "value":  # a scalar replaced by a poison token (numbers, strings, booleans alike)
        starts = [i for i, c in enumerate(raw) if c == ":" and i + 1 < len(raw)]
        if starts:
            i = rng.choice(starts) + 1
            j = i
            if raw[j:j + 1] == '"':
                j = raw.find('"', j + 1) + 1 or len(raw)
            else:
                while j < len(raw) and raw[j] not in ",}]":
                    j += 1
            raw = raw[:i] + rng.choice(_POISON_VALUES) + raw[j:]
    elif kind == "truncate":
        raw = raw[:rng.randrange(max(1, len(raw)))]
    elif kind == "drop_field":
        i = raw.find('"', rng.randrange(max(1, len(raw))))
        j = raw.find(",", i)
        if i > 0 and j > i:
            raw = raw[:i] + raw[j + 1:]
    elif kind == "time":  # a 13-digit epoch ms (or 10-digit s) moved far into the future or the past
        import re

        hits = list(re.finditer(r"(?<![\d.])1[5-7]\d{11}(?!\d)", raw))
        if hits:
            h = rng.choice(hits)
            new = rng.choice(["4070908800000", "4102444700000", "946684800000", "1262304000000", "99999999999999"])
            raw = raw[:h.start()] + new + raw[h.end():]
    elif kind == "venue":
        return RawMessage(rng.choice(["bitmex", "kraken-futures", "", "?"]), m.received_at_us, raw, m.source, m.channel)
    elif kind == "event":
        raw = raw.replace('"e":"', '"e":"mystery', 1).replace('"channel":"', '"channel":"mystery', 1)
    elif kind == "utf8":
        b = raw.encode()
        i = rng.randrange(len(b) + 1)
        raw = (b[:i] + b"\xff\xfe\xc3" + b[i:]).decode("utf-8", errors="surrogateescape")
    elif kind == "nesting":
        depth = rng.choice([1000, 100_000])
        raw = "[" * depth + raw + "]" * depth
    elif kind == "huge":
        raw = raw[:-1] + ',"pad":"' + "x" * 10_000_000 + '"}' if raw.endswith("}") else raw + " " * 10_000_000
    return RawMessage(m.venue, m.received_at_us, raw, m.source, m.channel)


def _topic_counts(kafka: KafkaSettings) -> dict[str, int]:
    counts: dict[str, int] = {}
    for (topic, _), (lo, hi) in log_bounds(kafka, all_topics()).items():
        counts[topic] = counts.get(topic, 0) + hi - lo
    return counts


def part_fuzz(work: Path, n: int, seed: int, huge: int) -> dict[str, Any]:
    from pipelines.jobs.load import run_load
    from pipelines.settings import JobSettings

    rng = random.Random(seed)
    events, others = seeds()
    base = events + others
    lo_us = min(m.received_at_us for m in base) - 86_400_000_000
    hi_us = max(m.received_at_us for m in base) + 86_400_000_000
    msgs, kinds = [], {}
    for i in range(n):
        kind = "huge" if i < huge else rng.choice(MUTATIONS)  # 10 MB lines: a few (each is 10 MB of memory)
        kinds[kind] = kinds.get(kind, 0) + 1
        msgs.append(mutate(rng, rng.choice(events if rng.random() < 0.8 else others), kind))
    rng.shuffle(msgs)
    broker = LocalBroker(port=free_port(), run_dir=work / "broker-fuzz").start()
    try:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        t0 = time.perf_counter()
        crashed = None
        try:
            counters = publish_raw_stream(msgs, kafka)
        except Exception as exc:  # a crash is a failed figure, not a failed campaign
            crashed = f"{type(exc).__name__}: {exc}"[:300]
            counters = None
        replay_s = time.perf_counter() - t0
        out: dict[str, Any] = {"messages": len(msgs), "seed_messages": len(base), "seed_market_events": len(events),
                               "mutations": kinds, "replay_crash": crashed,
                               "replay_s": round(replay_s, 1)}
        if counters is None:
            return out
        topics = _topic_counts(kafka)
        records = sum(counters.records.values())
        dead = sum(counters.dead.values())
        ignored = sum(counters.ignored.values())
        on_topics = sum(topics.get(t, 0) for t in TOPICS.values())
        on_dlq = sum(v for t, v in topics.items() if t.endswith(".dlq"))
        settings = JobSettings(db=work / "fuzz.duckdb", data_dir=work / "fuzz-data", kafka=kafka)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        load_crash = None
        try:
            result = run_load(settings, run_dq=False)
            load_status = result.status
        except Exception as exc:
            load_crash, load_status = f"{type(exc).__name__}: {exc}"[:300], "crashed"
        con = duckdb.connect(str(settings.db), read_only=True)
        try:
            q = lambda sql, *a: con.execute(sql, list(a)).fetchone()[0]  # noqa: E731
            rejects = q("SELECT count(*) FROM rejects")
            no_reason = q("SELECT count(*) FROM rejects WHERE reason IS NULL OR reason = ''")
            reasons = dict(con.execute("SELECT reason, count(*) FROM rejects GROUP BY reason ORDER BY 2 DESC").fetchall())
            bad_price = q("SELECT count(*) FROM bars_1m WHERE least(open, high, low, close) <= 0")
            bars_outside = q("SELECT count(*) FROM bars_1m WHERE minute_ts < make_timestamp(?::BIGINT) "
                             "OR minute_ts > make_timestamp(?::BIGINT)", lo_us, hi_us)
            liq_outside = q("SELECT count(*) FROM liquidations_1m WHERE minute < make_timestamp(?::BIGINT) "
                            "OR minute > make_timestamp(?::BIGINT)", lo_us, hi_us)
            max_liq = q("SELECT coalesce(max(max_notional_usd), 0) FROM liquidations_1m")
        finally:
            con.close()
        out.update({
            "normalized_messages": sum(counters.normalized_messages.values()), "records": records,
            "dead_letters": dead, "ignored": ignored, "books_balance": counters.balanced,
            "on_topics": on_topics, "on_dlq": on_dlq,
            "topics_equal_records": on_topics == records, "dlq_equal_dead_letters": on_dlq == dead,
            "load_status": load_status, "load_crash": load_crash, "rejects": rejects,
            "rejects_without_reason": no_reason, "reject_reasons": reasons,
            "bars_price_le_0": bad_price, "bars_outside_range": bars_outside, "liquidation_minutes_outside_range": liq_outside,
            "max_liquidation_usd": float(max_liq),
        })
        out["passed"] = bool(crashed is None and load_crash is None and counters.balanced
                             and len(msgs) == out["normalized_messages"] + dead + ignored
                             and on_topics == records and on_dlq == dead and rejects >= dead and no_reason == 0
                             and bad_price == 0 and bars_outside == 0 and liq_outside == 0)
        return out
    finally:
        broker.stop()


# ---- kills -----------------------------------------------------------------------------------------
def _stream(db: Path, bootstrap: str, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "LIQSTREAM_"))}
    env.update(KAFKA_BOOTSTRAP_SERVERS=bootstrap, LIQSTREAM_DB=str(db), LIQSTREAM_DATA_DIR=str(db.parent),
               LIQSTREAM_MAX_RANGE="20000")  # many cycles: more moments to be killed in
    db.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", "stream", "--interval", "0.2", "--dq-every", "3600",
                             *extra], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def compare_marts(a: Path, b: Path) -> dict[str, dict[str, int]]:
    """Per mart: rows of ``a`` missing from ``b`` and extra in ``b`` (EXCEPT ALL, run columns left out)."""
    con = duckdb.connect()
    con.execute(f"ATTACH '{a}' AS a (READ_ONLY)")
    con.execute(f"ATTACH '{b}' AS b (READ_ONLY)")
    out = {}
    try:
        for t in MARTS:
            cols = [(c, ty) for c, ty in con.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_catalog = 'a' "
                "AND table_name = ? ORDER BY ordinal_position", [t]).fetchall() if c not in RUN_COLUMNS]
            # float sums (volume_base) depend on the order events are merged in, i.e. on where cycles
            # cut the stream (docs/analytics.md): compared to 12 significant digits. USD sums are exact.
            sel = ", ".join(f'"{c}"' if ty not in ("DOUBLE", "FLOAT") else
                            f'CASE WHEN "{c}" = 0 OR NOT isfinite("{c}") THEN "{c}" ELSE '
                            f'round("{c}", 11 - floor(log10(abs("{c}")))::INT) END AS "{c}"' for c, ty in cols)
            missing = con.execute(f"SELECT count(*) FROM (SELECT {sel} FROM a.{t} EXCEPT ALL SELECT {sel} FROM b.{t})").fetchone()[0]
            extra = con.execute(f"SELECT count(*) FROM (SELECT {sel} FROM b.{t} EXCEPT ALL SELECT {sel} FROM a.{t})").fetchone()[0]
            rows = con.execute(f"SELECT count(*) FROM a.{t}").fetchone()[0]
            out[t] = {"rows": rows, "missing": missing, "extra": extra}
    finally:
        con.close()
    return out


def compressed_purge(hours: float):
    """Preset A with its shocks moved into the first hour: ~$0.9B of longs liquidated in 10
    episodes within ``hours`` (2 h: ~32k messages), so that every mart has rows to compare."""
    from connectors.simulator.runner import Simulation
    from connectors.simulator.scenarios import Shock

    h = 3600.0
    return Simulation("A", 7, duration_s=int(hours * h), shocks=(
        Shock("macro", 0.25 * h, 0.5 * h, -0.02, "BTC", "risk-off"),
        Shock("whale_sell", 0.9 * h, 0.4 * h, -0.04, "BTC", "whale sells")))


def part_kills(work: Path, kills: int, seed: int, hours: float) -> dict[str, Any]:
    """The day is published in paced chunks while two stream jobs consume it: one never touched
    (the reference), one SIGKILLed ``kills`` times at random moments and restarted, then run until
    caught up. Every mart of the two is compared row by row."""
    import threading

    rng = random.Random(seed)
    broker = LocalBroker(port=free_port(), run_dir=work / "broker-kills").start()
    try:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        messages = list(compressed_purge(hours).messages())
        waits = [rng.uniform(2.0, 8.0) for _ in range(kills)]
        chunks = max(1, int(sum(waits) / 2.5))  # publishing spans the kills: they land mid-cycle, mid-catch-up
        size = -(-len(messages) // chunks)
        published: dict[str, Any] = {}

        def produce() -> None:
            from connectors.normalize import RouteCounters

            total = RouteCounters()
            for i in range(0, len(messages), size):
                c = publish_raw_stream(messages[i:i + size], kafka)
                for name in ("messages", "records", "normalized_messages", "dead", "ignored"):
                    getattr(total, name).update(getattr(c, name))
                time.sleep(2.5)
            published["counters"] = total

        producer = threading.Thread(target=produce)
        clean_db = work / "clean" / "liqstream.duckdb"
        killed_db = work / "killed" / "liqstream.duckdb"
        ensure = publish_raw_stream([], kafka)  # topics exist before the jobs start
        del ensure
        producer.start()
        clean = _stream(clean_db, broker.bootstrap, "--exit-when-idle", "50")  # ~10 s without data: done
        for wait in waits:
            proc = _stream(killed_db, broker.bootstrap)
            time.sleep(wait)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        producer.join()
        final = _stream(killed_db, broker.bootstrap, "--exit-when-idle", "5")
        _, err = final.communicate(timeout=3600)
        if final.returncode != 0:
            return {"passed": False, "final_run_failed": err[-500:]}
        _, err = clean.communicate(timeout=3600)
        if clean.returncode != 0:
            return {"passed": False, "clean_run_failed": err[-500:]}
        events = sum(published["counters"].records.values())
        diff = compare_marts(clean_db, killed_db)
        missing = sum(d["missing"] for d in diff.values())
        extra = sum(d["extra"] for d in diff.values())
        empty = [t for t, d in diff.items() if d["rows"] == 0]
        return {"messages": len(messages), "events": events, "kills": kills, "kill_after_s": [round(w, 2) for w in waits],
                "clean_db": str(clean_db), "marts": diff, "marts_empty": empty, "missing": missing, "extra": extra,
                "passed": missing == 0 and extra == 0 and kills >= 20}
    finally:
        broker.stop()


def _cli(args: list[str], env_extra: dict[str, str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "LIQSTREAM_"))}
    env.update(env_extra)
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, what: str) -> None:
    _, err = proc.communicate(timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} exited {proc.returncode}: {err[-500:]}")


def part_producer(work: Path, seed: int, hours: float) -> dict[str, Any]:
    """The replay (producer) SIGKILLed mid-way and rerun from the start, as an operator would: the
    topics then hold the killed run's records twice. Do the marts count them twice?"""
    from pipelines.jobs.load import run_load
    from pipelines.settings import JobSettings

    rng = random.Random(seed)
    capture = work / "day.jsonl.gz"
    _finish(_cli(["simulate", "--scenario", "A", "--seed", "7", "--duration", f"{int(hours * 60)}m", "--out",
                  str(capture), "--no-progress"], {}), "simulate")
    dbs, topics = {}, {}
    for run in ("clean", "killed"):
        broker = LocalBroker(port=free_port(), run_dir=work / f"broker-{run}").start()
        try:
            env = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap}
            if run == "killed":
                t0 = time.perf_counter()
                _finish(_cli(["replay", str(capture)], env), "replay")  # timed on an empty broker of its own
                took = time.perf_counter() - t0
                broker.stop()
                broker = LocalBroker(port=free_port(), run_dir=work / "broker-killed2").start()
                env = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap}
                proc = _cli(["replay", str(capture)], env)
                time.sleep(rng.uniform(0.3, 0.8) * took)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            _finish(_cli(["replay", str(capture)], env), "replay")
            kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
            topics[run] = sum(v for t, v in _topic_counts(kafka).items() if t in TOPICS.values())
            settings = JobSettings(db=work / f"producer-{run}" / "liqstream.duckdb", data_dir=work / f"producer-{run}",
                                   kafka=kafka)
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            run_load(settings, run_dq=False)
            dbs[run] = settings.db
        finally:
            broker.stop()
    diff = compare_marts(dbs["clean"], dbs["killed"])
    extra = sum(d["extra"] for d in diff.values())
    missing = sum(d["missing"] for d in diff.values())
    return {"records_clean": topics["clean"], "records_with_duplicates": topics["killed"],
            "duplicate_records_in_kafka": topics["killed"] - topics["clean"], "marts": diff, "missing": missing,
            "extra": extra, "passed": missing == 0 and extra == 0}


def part_backfill(work: Path, seed: int, kills: int, source_db: Path) -> dict[str, Any]:
    """A backfill (from the archive, with a cascade setting changed so that its marts differ from
    the stream job's) SIGKILLed at random moments: each time, every mart must be all old or all new;
    then rerun to the end: the new marts."""
    import shutil

    rng = random.Random(seed)
    con = duckdb.connect(str(source_db), read_only=True)
    try:
        first, last = con.execute("SELECT min(minute_ts)::DATE, max(minute_ts)::DATE FROM bars_1m").fetchone()
    finally:
        con.close()
    days = ["backfill", "--from", str(first), "--to", str(last), "--source", "archive", "--no-dq"]
    env = {"LIQSTREAM_DATA_DIR": str(source_db.parent), "LIQSTREAM_EPISODE_OI_BP": "2.0"}

    def fresh(name: str) -> Path:
        d = work / name / "liqstream.duckdb"
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source_db, d)
        return d

    new_db = fresh("backfill-new")
    t0 = time.perf_counter()
    _finish(_cli([*days, "--db", str(new_db)], env), "backfill")
    took = time.perf_counter() - t0
    changed = {t: d["missing"] + d["extra"] for t, d in compare_marts(source_db, new_db).items()}
    outcomes, mixed = [], 0
    for i in range(kills):
        db = fresh(f"backfill-killed-{i}")
        proc = _cli([*days, "--db", str(db)], env)
        time.sleep(rng.uniform(0.2, 1.1) * took)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        vs_old = compare_marts(source_db, db)
        vs_new = compare_marts(new_db, db)
        is_old = all(d["missing"] + d["extra"] == 0 for d in vs_old.values())
        is_new = all(d["missing"] + d["extra"] == 0 for d in vs_new.values())
        mixed += not (is_old or is_new)
        _finish(_cli([*days, "--db", str(db)], env), "backfill rerun")
        rerun_new = all(d["missing"] + d["extra"] == 0 for d in compare_marts(new_db, db).values())
        outcomes.append({"killed_at_s": round(time.perf_counter() - t0, 1), "state": "old" if is_old else "new" if is_new
                         else "MIXED", "rerun_equals_new": rerun_new})
        shutil.rmtree(db.parent)
    return {"days": [str(first), str(last)], "backfill_s": round(took, 1), "rows_changed_by_backfill": changed,
            "kills": outcomes, "mixed": mixed, "reruns_not_new": sum(not o["rerun_equals_new"] for o in outcomes),
            "passed": mixed == 0 and all(o["rerun_equals_new"] for o in outcomes) and sum(changed.values()) > 0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--huge", type=int, default=5, help="10 MB lines among the mutated messages")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--hours", type=float, default=2.0,
                    help="simulated hours of the kill part's day (preset A, its shocks in the first hour)")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--parts", default="fuzz,kills,producer,backfill")
    ap.add_argument("--backfill-kills", type=int, default=5)
    ap.add_argument("--out", default=str(REPO / "bench" / "chaos.json"))
    ap.add_argument("--keep", help="keep the brokers' and jobs' files in this directory (to look into a failure)")
    args = ap.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.ERROR)
    report: dict[str, Any] = {"seed": args.seed}
    with tempfile.TemporaryDirectory(prefix="liqstream-chaos-") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        parts = args.parts.split(",")
        if "fuzz" in parts:
            report["fuzz"] = part_fuzz(work, args.messages, args.seed, args.huge)
        if "kills" in parts:
            report["kills"] = part_kills(work, args.kills, args.seed, args.hours)
        if "producer" in parts:
            report["producer"] = part_producer(work, args.seed, min(args.hours, 3.0))
        if "backfill" in parts and report.get("kills", {}).get("clean_db"):
            report["backfill"] = part_backfill(work, args.seed, args.backfill_kills, Path(report["kills"]["clean_db"]))
    report["not_run"] = ["reader process killed", "broker SIGSTOPped / restarted"]
    report["known_gaps"] = KNOWN_GAPS
    Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"{'part':<8} {'figure':<36} {'value':>14}")
    for part in PARTS:
        for k, v in report.get(part, {}).items():
            if isinstance(v, (int, float, bool, str)) or v is None:
                print(f"{part:<8} {k:<36} {v!s:>14}")
    for part in ("kills", "producer"):
        for t, d in report.get(part, {}).get("marts", {}).items():
            print(f"{part:<8} {t:<36} {d['rows']:>6} rows {d['missing']:>3} missing {d['extra']:>3} extra")
    failed = [p for p in PARTS if p in report and not report[p].get("passed") and p not in KNOWN_GAPS]
    gaps = [p for p in KNOWN_GAPS if p in report and not report[p].get("passed")]
    for p in gaps:
        print(f"chaos: {p} FAILED, a known gap: {KNOWN_GAPS[p]}")
    print(f"chaos: {'FAILED: ' + ', '.join(failed) if failed else 'PASSED'} (bench/chaos.json)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
