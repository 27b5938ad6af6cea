"""Saved analyst queries (`liqstream query --saved NAME`) and the aligned-table printer.

Each query is one ``<name>.sql`` file in this package. Its header comment documents it::

    -- title: Largest cascades
    -- answers: Which cascade episodes force-closed the most USD ...
    -- note: (optional, may continue on indented ``--`` lines)
    -- columns:
    --   scope: base asset or 'market'
    --   ...
    -- source: the view it reads
    SELECT ...

The SQL reads the analyst views (``v_*``, which hide quarantined loads) wherever one exists,
and is run on a read-only connection: a saved or typed query cannot change the marts.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

QUERIES_DIR = Path(__file__).resolve().parent
_KEY = re.compile(r"^--\s?(title|answers|note|columns|source):\s*(.*)$")
_COLUMN = re.compile(r"^--\s{2,}([A-Za-z_][A-Za-z0-9_]*):\s*(.*)$")
_CONTINUATION = re.compile(r"^--\s{2,}(.*)$")


@dataclass(frozen=True)
class SavedQuery:
    name: str
    title: str
    answers: str
    sql: str
    path: Path
    note: str = ""
    source: str = ""
    columns: dict[str, str] = field(default_factory=dict)


def _parse(path: Path) -> SavedQuery:
    meta: dict[str, str] = {"title": "", "answers": "", "note": "", "source": ""}
    columns: dict[str, str] = {}
    key = None
    sql_lines: list[str] = []
    in_header = True
    for line in path.read_text().splitlines():
        if in_header and line.startswith("--"):
            m = _KEY.match(line)
            if m:
                key = m[1]
                if key != "columns":
                    meta[key] = m[2].strip()
                continue
            m = _COLUMN.match(line) if key == "columns" else None
            if m:
                columns[m[1]] = m[2].strip()
                continue
            m = _CONTINUATION.match(line)
            if m and key and key != "columns":
                meta[key] = f"{meta[key]} {m[1].strip()}".strip()
            continue
        in_header = False
        sql_lines.append(line)
    sql = "\n".join(sql_lines).strip().rstrip(";")
    if not meta["title"] or not sql:
        raise ValueError(f"{path}: a saved query needs a '-- title:' header and a SQL body")
    return SavedQuery(name=path.stem, title=meta["title"], answers=meta["answers"], sql=sql, path=path,
                      note=meta["note"], source=meta["source"], columns=columns)


def list_saved() -> list[SavedQuery]:
    """Every saved query, by name."""
    return [_parse(p) for p in sorted(QUERIES_DIR.glob("*.sql"))]


def load_saved(name: str) -> SavedQuery:
    """The saved query ``name`` (file stem; ``-`` and ``_`` are interchangeable)."""
    path = QUERIES_DIR / f"{name.replace('-', '_')}.sql"
    if not path.is_file():
        known = ", ".join(q.name for q in list_saved())
        raise KeyError(f"no saved query {name!r}; known: {known} (list them with `liqstream query --list-saved`)")
    return _parse(path)


def describe_saved(queries: list[SavedQuery] | None = None) -> str:
    """The ``--list-saved`` text: name, title and the question each answers."""
    queries = list_saved() if queries is None else queries
    width = max((len(q.name) for q in queries), default=0)
    lines = []
    for q in queries:
        lines.append(f"{q.name:<{width}}  {q.title}")
        if q.answers:
            lines.append(f"{'':<{width}}  {q.answers}")
    return "\n".join(lines)


# ---- running and printing ------------------------------------------------------------------------
#: DuckDB options of every analyst connection (query, report, status): an SQL endpoint over the marts
#: must not be a file-system or network client. External access off refuses COPY ... TO, reading
#: files (read_csv, read_text, read_parquet, glob), ATTACH, INSTALL and LOAD; the configuration is
#: locked once the connection is set up, so SET cannot turn it back on. No view reads the Parquet
#: archive, so no path needs allowing (``allowed_directories`` would be the way if one did).
SANDBOX = {"enable_external_access": False}


def connect_read_only(db: str | Path, attempts: int = 5, wait_s: float = 0.4) -> Any:
    """A read-only, sandboxed connection in UTC; retried briefly because DuckDB refuses other processes
    while a writer holds the file (the streaming job commits in short transactions between cycles)."""
    from pipelines import warehouse

    for i in range(attempts):
        try:
            con = warehouse.connect(db, read_only=True, config=SANDBOX)
            con.execute("SET TimeZone = 'UTC'")
            con.execute("SET lock_configuration = true")  # after the time zone: nothing can be SET after it
            return con
        except FileNotFoundError:
            raise
        except Exception as exc:  # duckdb.IOException: "Could not set lock on file ..."
            if "lock" not in str(exc).lower() or i == attempts - 1:
                raise
            time.sleep(wait_s * (i + 1))
    raise AssertionError("unreachable")


def set_window_end(con: Any, end: datetime | None) -> None:
    """End the windows of the saved queries that measure "the last N hours" at ``end`` (exclusive,
    aware) instead of at the data's latest minute; ``None`` restores that default. A session
    variable, so it works on the read-only connection and needs no parameter in the SQL files."""
    if end is None:
        con.execute("RESET VARIABLE window_end")
        return
    if end.tzinfo is None:
        raise ValueError("window end must be an aware datetime (UTC)")
    # the literal is built from a datetime, never from text a user typed
    con.execute(f"SET VARIABLE window_end = TIMESTAMPTZ '{end.isoformat()}'")


class ReadOnlyQueryError(RuntimeError):
    """A statement tried to change the marts through a read-only connection."""


class SandboxError(RuntimeError):
    """A statement tried to reach files, the network, extensions or the settings (see :data:`SANDBOX`)."""


def run_query(con: Any, sql: str) -> tuple[list[str], list[tuple]]:
    """Execute ``sql`` on ``con``; (column names, rows). A statement without a result gives ([], [])."""
    import duckdb

    try:
        cur = con.execute(sql)
    except Exception as exc:
        text = str(exc)
        if isinstance(exc, duckdb.PermissionException) or "configuration has been locked" in text:
            raise SandboxError(
                "analyst queries cannot reach files, the network, extensions or settings "
                f"({text.splitlines()[0]}); export with --format csv|json to stdout") from exc
        if "read-only" in str(exc).lower() or "read only" in str(exc).lower():
            raise ReadOnlyQueryError(
                "the marts are opened read-only for queries, so this statement cannot change them "
                f"({str(exc).splitlines()[0]}); only the jobs (load, stream, backfill) write") from exc
        raise
    if cur.description is None:
        return [], []
    return [d[0] for d in cur.description], cur.fetchall()


def format_value(value: Any) -> str:
    """A cell for humans: thousands separators on large numbers, minutes on UTC timestamps."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M" if value.second == 0 and value.microsecond == 0 else "%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (float, Decimal)):
        v = float(value)
        if v != v:  # NaN
            return "NaN"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 1 or v == 0:
            return f"{v:,.2f}"
        return f"{v:.4g}"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def format_table(columns: list[str], rows: list[tuple], max_rows: int | None = None) -> str:
    """An aligned text table: numbers right-aligned, text left-aligned, a rule under the header."""
    shown = rows if max_rows is None or max_rows <= 0 else rows[:max_rows]
    cells = [[format_value(v) for v in row] for row in shown]
    numeric = [any(_is_number(r[i]) for r in shown) and all(r[i] is None or _is_number(r[i]) for r in shown)
               for i in range(len(columns))]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()

    out = [line(columns), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in cells)
    footer = f"({len(rows):,} row{'s' if len(rows) != 1 else ''}"
    if len(shown) < len(rows):
        footer += f", first {len(shown):,} shown; --max-rows N for more, --format csv for all"
    out.append(footer + ")")
    return "\n".join(out)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return value


def render(columns: list[str], rows: list[tuple], fmt: str = "table", max_rows: int | None = 50) -> str:
    """Rows as ``table`` (aligned, human), ``csv`` or ``json`` (every row, for scripts)."""
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(columns)
        for row in rows:
            w.writerow(["" if v is None else _jsonable(v) for v in row])
        return buf.getvalue().rstrip("\n")
    if fmt == "json":
        return json.dumps([{c: _jsonable(v) for c, v in zip(columns, row, strict=True)} for row in rows])
    if fmt == "table":
        return format_table(columns, rows, max_rows)
    raise ValueError(f"unknown format {fmt!r}: table, csv or json")
