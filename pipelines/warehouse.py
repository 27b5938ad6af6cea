"""The DuckDB warehouse: connections, versioned migrations, the job's state.

Only the job writes (one process, short transactions). DuckDB blocks other
processes while one holds the file for writing, so the streaming job publishes
a snapshot between cycles and readers (``connect(read_only=True)``: ``liqstream
query``, ``report``, ``status``) read the snapshot while a job is running, the
database itself otherwise. Migrations are the numbered ``pipelines/marts/NNNN_*.sql`` files,
applied in order once each and recorded in ``schema_version``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import duckdb

MARTS_DIR = Path(__file__).resolve().parent / "marts"
_MIGRATION = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class ClusterMismatch(RuntimeError):
    pass


def snapshot_path(db: str | Path) -> Path:
    db = Path(db)
    return db.with_name(db.stem + ".snapshot" + db.suffix)


def writer_pid_path(db: str | Path) -> Path:
    db = Path(db)
    return db.with_name(db.name + ".writer.pid")


def writer_running(db: str | Path) -> int | None:
    """The pid of a live streaming job writing ``db``, if any."""
    import os

    try:
        pid = int(writer_pid_path(db).read_text().split()[0])
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError, IndexError):
        return None


def publish_snapshot(db: str | Path) -> Path:
    """Copy the checkpointed database to ``<db>.snapshot`` atomically, for readers.

    DuckDB lets one process hold a database file for writing and blocks other
    processes meanwhile (readers included), so while the streaming job runs,
    analysts read this snapshot: a rename never disturbs a reader that has the
    previous snapshot open. The job calls this between cycles, where it holds
    no connection.
    """
    import os
    import shutil

    db = Path(db)
    con = duckdb.connect(str(db))
    try:
        con.execute("CHECKPOINT")
    finally:
        con.close()
    snap = snapshot_path(db)
    tmp = snap.with_name(snap.name + ".tmp")
    shutil.copyfile(db, tmp)
    os.replace(tmp, snap)
    return snap


def read_version(db: str | Path) -> tuple:
    """Changes whenever what a read-only connection would read changes: the published snapshot while
    a streaming job writes (it is replaced whole), else the database and its write-ahead log. A stat,
    no connection: a reader can watch for new data without ever taking the file's lock."""
    db = Path(db)
    snap = snapshot_path(db)
    files = [snap] if writer_running(db) and snap.exists() else [db, db.with_name(db.name + ".wal")]
    out = []
    for f in files:
        try:
            st = f.stat()
            out.append((str(f), st.st_mtime_ns, st.st_size, st.st_ino))
        except FileNotFoundError:
            out.append((str(f), None))
    return tuple(out)


def connect(path: str | Path, read_only: bool = False, config: dict | None = None) -> duckdb.DuckDBPyConnection:
    """A connection to the marts; ``read_only`` ones take the published snapshot while the stream job
    writes. ``config``: DuckDB options of a read-only connection (the analyst sandbox)."""
    path = Path(path)
    if read_only:
        if not path.exists():
            raise FileNotFoundError(f"no database at {path}: run `make run` (or `liqstream load`) first")
        snap = snapshot_path(path)
        cfg = config or {}
        if writer_running(path) and snap.exists():
            # never take the file the streaming job writes: read its latest published snapshot
            return duckdb.connect(str(snap), read_only=True, config=cfg)
        try:
            return duckdb.connect(str(path), read_only=True, config=cfg)
        except duckdb.IOException:
            if snap.exists():
                return duckdb.connect(str(snap), read_only=True, config=cfg)
            raise
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    return con


def migrations() -> list[tuple[int, str, Path]]:
    found = []
    for p in sorted(MARTS_DIR.glob("*.sql")):
        m = _MIGRATION.match(p.name)
        if m:
            found.append((int(m[1]), m[2], p))
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        # two branches that each added "the next" migration: one would fail or be skipped on some databases
        dup = sorted({v for v in versions if versions.count(v) > 1})
        raise RuntimeError(f"migrations in {MARTS_DIR} share version numbers {dup}: renumber one of each pair")
    return found


def migrate(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Apply the migrations not applied yet; returns their versions."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
        "applied_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp)"
    )
    done = {v for (v,) in con.execute("SELECT version FROM schema_version").fetchall()}
    applied = []
    for version, name, path in migrations():
        if version in done:
            continue
        con.execute("BEGIN")
        try:
            con.execute(path.read_text())
            con.execute("INSERT INTO schema_version (version, name) VALUES (?, ?)", [version, name])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied


def committed_offsets(con: duckdb.DuckDBPyConnection, cluster_id: str, topics: list[str]) -> dict[tuple[str, int], int]:
    rows = con.execute(
        "SELECT topic, \"partition\", next_offset, cluster_id FROM kafka_offsets WHERE list_contains(?, topic)",
        [topics],
    ).fetchall()
    others = {c for (_, _, _, c) in rows if c != cluster_id}
    if others:
        raise ClusterMismatch(
            f"the marts were loaded from Kafka cluster {sorted(others)[0]!r} but the broker now is {cluster_id!r} "
            "(a restarted local broker is a new, empty cluster). Re-read the topics into the marts with "
            "--reset-offsets, or point KAFKA_BOOTSTRAP_SERVERS at the original cluster."
        )
    return {(t, p): o for (t, p, o, _) in rows}


def store_offsets(con: duckdb.DuckDBPyConnection, cluster_id: str, next_offsets: dict[tuple[str, int], int]) -> None:
    now = datetime.now(UTC)
    for (topic, part), off in sorted(next_offsets.items()):
        con.execute(
            "INSERT INTO kafka_offsets VALUES (?, ?, ?, ?, ?) ON CONFLICT (topic, \"partition\") "
            "DO UPDATE SET next_offset = excluded.next_offset, cluster_id = excluded.cluster_id, "
            "updated_at = excluded.updated_at",
            [topic, part, off, cluster_id, now],
        )


def reset_state(con: duckdb.DuckDBPyConnection, tables: list[str]) -> None:
    """Forget consumed offsets and empty the marts they fed (for --reset-offsets)."""
    con.execute("BEGIN")
    con.execute("DELETE FROM kafka_offsets")
    for t in tables:
        con.execute(f"DELETE FROM {t}")
    con.execute("COMMIT")


def get_state(con: duckdb.DuckDBPyConnection, name: str) -> int | None:
    row = con.execute("SELECT value_us FROM job_state WHERE name = ?", [name]).fetchone()
    return None if row is None else row[0]


def set_state(con: duckdb.DuckDBPyConnection, name: str, value_us: int | None) -> None:
    con.execute(
        "INSERT INTO job_state VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET value_us = excluded.value_us, "
        "updated_at = excluded.updated_at",
        [name, value_us, datetime.now(UTC)],
    )
