"""What the CLI, the status and the report print must not depend on the order rows are stored or
scanned in (a GROUP BY or a parallel scan returns them in thread order). Rows that tie on every
ORDER BY column are added to a copy of the generated day, then every table is stored reversed: the
output must be the same, byte for byte. Each ORDER BY ends with a unique key."""

from __future__ import annotations

import contextlib
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipelines import queries, warehouse
from tests.unit.test_report_day import GeneratedDay, copy_db, get_generated_day


@pytest.fixture(scope="session")
def generated_day(pytestconfig: pytest.Config) -> GeneratedDay:
    return get_generated_day(pytestconfig)


def _add_ties(con) -> None:
    """Rows equal on what the outputs order by, apart from their keys."""
    at = datetime(2026, 3, 9, 16, 0, tzinfo=UTC)
    for run_id in ("load-tie-a", "load-tie-b"):  # two runs finished at the same instant
        con.execute("INSERT INTO pipeline_runs (run_id, job, started_at, finished_at, status, events_in, rejects_in, "
                    "rows_written, duration_s, message) VALUES (?, 'load', ?, ?, 'ok', 1, 0, 1, 1.0, NULL)",
                    [run_id, at, at + timedelta(seconds=1)])
    for offset, reason in enumerate(("tie_reason_a", "tie_reason_b")):  # two reject reasons counted the same
        con.execute("INSERT INTO rejects (topic, \"partition\", \"offset\", reason) VALUES ('raw.v1.dlq', 0, ?, ?)",
                    [offset, reason])
    # two liquidation minutes of the same size in the same minute, on two venues: the top of the summary
    con.execute("""INSERT INTO liquidations_1m SELECT * REPLACE (exchange || '-tie' AS exchange, 1e12 AS notional_usd)
                   FROM liquidations_1m ORDER BY ALL LIMIT 1""")
    con.execute("""INSERT INTO liquidations_1m SELECT * REPLACE (exchange || '-tie2' AS exchange, 1e12 AS notional_usd)
                   FROM liquidations_1m WHERE exchange NOT LIKE '%-tie' ORDER BY ALL LIMIT 1""")
    # an episode of the other direction as large as the largest, starting with it
    con.execute("""INSERT INTO cascades SELECT * REPLACE ('short_squeeze' AS direction, episode_id || '-tie' AS episode_id,
                       long_liq_usd AS short_liq_usd)
                   FROM cascades WHERE direction = 'long_liquidation' ORDER BY long_liq_usd DESC, episode_id LIMIT 1""")


def _store_reversed(con) -> None:
    tables = [t for (t,) in con.execute("SELECT table_name FROM information_schema.tables "
                                        "WHERE table_schema = 'main' AND table_type = 'BASE TABLE'").fetchall()]
    for t in tables:
        con.execute(f'CREATE TEMP TABLE _copy AS SELECT * FROM "{t}"')
        con.execute(f'DELETE FROM "{t}"')
        con.execute(f'INSERT INTO "{t}" SELECT * FROM _copy ORDER BY ALL DESC')
        con.execute("DROP TABLE _copy")


def _outputs(db: Path) -> dict[str, str]:
    from pipelines.report import render_report
    from pipelines.status import Status, _job_checks
    from pipelines.summary import print_summary

    out: dict[str, str] = {}
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print_summary(db)
    out["summary"] = buf.getvalue()
    con = warehouse.connect(db, read_only=True)
    try:
        con.execute("SET threads = 1")  # one thread: rows come back in the order they are stored
        st = Status()
        _job_checks(con, st, datetime(2026, 3, 10, tzinfo=UTC), 120.0, None)
        out["status"] = st.check("last run").summary
        for q in queries.list_saved():
            out[q.name] = queries.render(*queries.run_query(con, q.sql), max_rows=0)
        out["report"] = re.sub(r"generated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "generated", render_report(con))
    finally:
        con.close()
    return out


def _change(db: Path, change) -> None:
    con = warehouse.connect(db)
    try:
        con.execute("SET threads = 1")
        change(con)
    finally:
        con.close()


def test_outputs_do_not_depend_on_the_order_rows_are_stored_in(generated_day: GeneratedDay, tmp_path: Path) -> None:
    db = copy_db(generated_day, tmp_path)
    _change(db, _add_ties)
    before = _outputs(db)
    _change(db, _store_reversed)
    after = _outputs(db)
    assert "tie_reason_a=1, tie_reason_b=1" in before["summary"]
    assert [k for k in before if before[k] != after[k]] == []
