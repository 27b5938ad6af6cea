"""Every query the docs show runs on the generated day, and its sample output has today's columns.

docs/queries.md (every `liqstream query` command, every sample and every ```sql block), the README's
and docs/marts.md's: a query the docs show cannot break unseen. The samples' figures come from a run
on the generated day (tests/unit/test_report_day.py); they are not compared (any change to the
simulator or the analytics moves them), the commands, titles and columns are. To rewrite the samples
of docs/queries.md from the generated day after such a change:

    LIQSTREAM_WRITE_QUERY_SAMPLES=1 .venv/bin/python -m pytest -q tests/unit/test_documented_queries.py
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines import queries
from pipelines.cli import main
from tests.unit.test_report_day import REPO, GeneratedDay, get_generated_day

QUERIES_DOC = REPO / "docs" / "queries.md"
DOCS = [QUERIES_DOC, REPO / "README.md", REPO / "docs" / "marts.md"]
_FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
_COMMAND = re.compile(r"^\s*(?:\$\s+)?(?:\.venv/bin/)?liqstream query (.+)$")
_RULE = re.compile(r"^-+(?:  -+)*$")
#: ```sql blocks that are not queries on the marts, and why
NOT_QUERIES = {"SELECT ...": "the header template of a saved query",
               "ATTACH": "copies the database file (the analyst sandbox refuses files by design)"}


@dataclass
class Block:
    doc: Path
    line: int  # 1-based line of the opening fence
    lang: str
    lines: list[str]


def fenced_blocks(doc: Path) -> list[Block]:
    blocks, current = [], None
    for i, line in enumerate(doc.read_text().splitlines(), start=1):
        m = _FENCE.match(line)
        if m and current is None:
            current = Block(doc, i, m[2], [])
        elif m and current is not None:
            blocks.append(current)
            current = None
        elif current is not None:
            current.lines.append(line)
    return blocks


def command_args(text: str) -> list[str]:
    """`liqstream query ...` as shown -> its arguments (a trailing comment, pipe or redirect dropped)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars="|>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    args = []
    for tok in lexer:
        if tok in ("|", ">", ">>"):
            break
        args.append(tok)
    return args


def documented_commands() -> list[tuple[str, list[str]]]:
    out = []
    for doc in DOCS:
        for b in fenced_blocks(doc):
            if b.lang == "sql":
                continue
            for k, line in enumerate(b.lines):
                m = _COMMAND.match(line)
                if m:
                    out.append((f"{doc.name}:{b.line + 1 + k}", command_args(m[1])))
    return out


def documented_sql() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        for b in fenced_blocks(doc):
            text = "\n".join(b.lines)
            if b.lang == "sql" and not any(marker in text for marker in NOT_QUERIES):
                out.append((f"{doc.name}:{b.line}", text))
    return out


@dataclass
class Sample:
    where: str
    args: list[str]
    shown: list[str]  # the output lines the doc shows under the command
    start: int  # 0-based index of the command line in the doc
    end: int  # 0-based index after the sample's last line


def documented_samples(doc: Path) -> list[Sample]:
    """`$ liqstream query ...` lines in a plain block, each with the output shown under it."""
    samples = []
    lines = doc.read_text().splitlines()
    for b in fenced_blocks(doc):
        if b.lang:
            continue
        rows = b.lines
        starts = [k for k, ln in enumerate(rows) if ln.startswith("$ liqstream query")]
        for j, k in enumerate(starts):
            stop = starts[j + 1] if j + 1 < len(starts) else len(rows)
            shown = rows[k + 1:stop]
            while shown and not shown[-1].strip():
                shown.pop()
            first = b.line + k  # 0-based index of the command line in the file
            assert lines[first] == rows[k]
            samples.append(Sample(f"{doc.name}:{first + 1}", command_args(_COMMAND.match(rows[k])[1]), shown,
                                  first, first + 1 + len(shown)))
    return samples


@pytest.fixture(scope="session")
def generated_day(pytestconfig: pytest.Config) -> GeneratedDay:
    return get_generated_day(pytestconfig)


def _query(db: Path, args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["query", "--db", str(db), *args])
    return rc, out.getvalue(), err.getvalue()


def _header(lines: list[str]) -> tuple[list[str], list[str]]:
    """(the lines above the column header, the column names) of a table output."""
    for k in range(1, len(lines)):
        if _RULE.match(lines[k].strip()):
            return [ln.rstrip() for ln in lines[:k - 1]], lines[k - 1].split()
    return [ln.rstrip() for ln in lines], []


def test_the_docs_show_queries_to_check() -> None:
    commands = documented_commands()
    assert len([c for c in commands if c[0].startswith("queries.md")]) >= 13, commands
    assert {a[a.index("--saved") + 1] for _, a in commands if "--saved" in a} >= {q.name for q in queries.list_saved()}
    assert len(documented_sql()) >= 2


@pytest.mark.parametrize(("where", "args"), documented_commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_a_documented_command_runs_on_the_generated_day(generated_day: GeneratedDay, where: str, args: list[str]) -> None:
    rc, out, err = _query(generated_day.db, args)
    assert rc == 0, f"{where}: liqstream query {shlex.join(args)} -> exit {rc}: {err}"
    assert out.strip(), where


@pytest.mark.parametrize(("where", "sql"), documented_sql(), ids=lambda v: v if ":" in v and "\n" not in v else "")
def test_a_documented_sql_block_runs_on_the_generated_day(generated_day: GeneratedDay, where: str, sql: str) -> None:
    con = queries.connect_read_only(generated_day.db)  # the analysts' sandbox, as `liqstream query`
    try:
        statements = [s.strip() for s in sql.split(";") if s.strip() and not s.strip().startswith("--")]
        for statement in statements:
            if statement.upper().startswith("SET TIMEZONE"):
                continue  # the sandbox is in UTC already and locks its settings
            queries.run_query(con, statement)
    finally:
        con.close()


def test_samples_show_todays_titles_and_columns(generated_day: GeneratedDay) -> None:
    if os.environ.get("LIQSTREAM_WRITE_QUERY_SAMPLES"):
        _write_samples(generated_day)
    problems = []
    for doc in DOCS:
        for s in documented_samples(doc):
            rc, out, err = _query(generated_day.db, s.args)
            assert rc == 0, f"{s.where}: {err}"
            above, columns = _header(out.splitlines())
            shown_above, shown_columns = _header(s.shown)
            if shown_columns != columns:
                problems.append(f"{s.where}: columns {shown_columns} != {columns}")
            if doc == QUERIES_DOC and shown_above != above:  # the README trims the title lines
                problems.append(f"{s.where}: title lines {shown_above} != {above}")
    assert problems == [], "\n".join(problems) + "\n(rewrite: see this module's docstring)"


def _write_samples(day: GeneratedDay) -> None:
    lines = QUERIES_DOC.read_text().splitlines()
    for s in reversed(documented_samples(QUERIES_DOC)):
        rc, out, err = _query(day.db, s.args)
        assert rc == 0, err
        lines[s.start + 1:s.end] = out.rstrip("\n").splitlines()
    QUERIES_DOC.write_text("\n".join(lines) + "\n")
