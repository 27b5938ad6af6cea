"""The HTML report rendered from a generated day: every plot, the episode table, DQ and quarantine;
opened in headless Chromium (no console errors) with a screenshot written by the test run."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import pytest

from pipelines import warehouse
from pipelines.cli import main
from pipelines.report import parse_bound, write_report
from tests.unit.test_report_day import GeneratedDay, copy_db, get_generated_day

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
#: where the test run leaves the screenshot for people to look at (data/ is git-ignored)
SCREENSHOT = REPO / "data" / "test-artifacts" / "report-screenshot.png"


@pytest.fixture(scope="session")
def generated_day(pytestconfig: pytest.Config) -> GeneratedDay:
    return get_generated_day(pytestconfig)


class _Report(HTMLParser):
    """Collects the plots (svg data-plot), episode rows, bands per plot and the episode count."""

    def __init__(self) -> None:
        super().__init__()
        self.plots: list[str] = []
        self.bands: dict[str, int] = {}
        self.episode_rows = 0
        self.quarantine_rows = 0
        self.episode_count_text = ""
        self.external: list[str] = []
        self.scripts = 0
        self._plot: str | None = None
        self._table: str | None = None
        self._in_count = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "svg" and "data-plot" in a:
            self._plot = a["data-plot"]
            self.plots.append(self._plot)
            self.bands[self._plot] = 0
        if tag == "rect" and a.get("class") == "band" and self._plot:
            self.bands[self._plot] += 1
        if tag == "table" and a.get("id"):
            self._table = a["id"]
        if tag == "tr" and a.get("class") == "episode" and self._table == "episodes":
            self.episode_rows += 1
        if tag == "tr" and self._table == "quarantine" and a.get("class") is not None:
            self.quarantine_rows += 1
        if tag == "span" and a.get("id") == "episode-count":
            self._in_count = True
        if tag == "script":
            self.scripts += 1
        for k in ("src", "href"):
            if a.get(k, "").startswith(("http:", "https:", "//")):
                self.external.append(a[k])

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._plot = None
        if tag == "table":
            self._table = None
        if tag == "span":
            self._in_count = False

    def handle_data(self, data: str) -> None:
        if self._in_count:
            self.episode_count_text += data


def _parse(path: Path) -> _Report:
    p = _Report()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def _sql(db: Path, sql: str, params: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def test_report_has_every_plot_and_the_episode_table(generated_day: GeneratedDay, tmp_path: Path) -> None:
    out = write_report(generated_day.db, tmp_path / "report.html")
    r = _parse(out)
    # expected figures straight from the base tables (no quarantine in the generated day)
    bases = {b for (b,) in _sql(generated_day.db, "SELECT DISTINCT base FROM bars_1m_symbol")}
    oi_bases = {b for (b,) in _sql(generated_day.db, "SELECT DISTINCT base FROM oi_deltas WHERE level = 'symbol'")}
    windows = {w for (w,) in _sql(generated_day.db, "SELECT DISTINCT window_minutes FROM contagion")}
    (n_episodes,) = _sql(generated_day.db, "SELECT count(*) FROM cascades")[0]
    assert n_episodes >= 1
    map_bases = {b for (b,) in _sql(generated_day.db, "SELECT DISTINCT base FROM liquidation_levels")}
    assert map_bases
    expected_plots = ({f"price-{b}" for b in bases} | {"liquidation-heatmap-long", "liquidation-heatmap-short"}
                      | {f"oi-deltas-{b}" for b in oi_bases} | {f"contagion-ranking-{w}" for w in windows}
                      | {f"liquidation-map-{b}" for b in map_bases})
    assert set(r.plots) == expected_plots
    assert r.episode_rows == n_episodes and r.episode_count_text == str(n_episodes)
    # each price plot shades that base's episodes plus (as a top strip) the market-wide ones
    per_scope = dict(_sql(generated_day.db, "SELECT scope, count(*) FROM cascades GROUP BY scope"))
    for b in bases:
        assert r.bands[f"price-{b}"] == per_scope.get(b, 0) + per_scope.get("market", 0), b
    # self-contained: no scripts, nothing fetched from the network; no "no data" placeholders
    html = out.read_text()
    assert r.scripts == 0 and r.external == []
    assert "no data in the selected range" not in html and "no liquidations in the selected range" not in html
    # the DQ section shows the latest verdict of every suite the backfill's gate ran
    suites = [s for (s,) in _sql(generated_day.db, "SELECT DISTINCT suite FROM dq_results ORDER BY 1")]
    dq = html[html.index("id='dq'"):]
    assert all(f">{s}<" in dq for s in suites) and dq.count(">PASS<") >= len(suites)


def test_report_range_keeps_the_overlapping_episodes(generated_day: GeneratedDay, tmp_path: Path) -> None:
    t0, t1 = parse_bound("2026-03-09T13:30"), parse_bound("2026-03-09T13:38")
    out = write_report(generated_day.db, tmp_path / "r.html", t0, t1)
    # overlap by hand: an episode [start, end) overlaps [t0, t1) when start < t1 and end > t0
    rows = _sql(generated_day.db, "SELECT start_ts, end_ts FROM cascades")
    expected = sum(1 for s, e in rows if s < t1 and e > t0)
    assert 0 < expected < len(rows)
    r = _parse(out)
    assert r.episode_rows == expected and r.episode_count_text == str(expected)
    assert "2026-03-09 13:30 – 2026-03-09 13:38 UTC" in out.read_text()


def test_parse_bound() -> None:
    assert parse_bound("2026-03-09") == datetime(2026, 3, 9, tzinfo=UTC)
    assert parse_bound("2026-03-09", end=True) == datetime(2026, 3, 10, tzinfo=UTC)
    assert parse_bound("2026-03-09T13:05") == datetime(2026, 3, 9, 13, 5, tzinfo=UTC)
    assert parse_bound("2026-03-09T15:05+02:00") == datetime(2026, 3, 9, 13, 5, tzinfo=UTC)


def test_quarantined_load_hides_its_episodes_and_is_listed(generated_day: GeneratedDay, tmp_path: Path) -> None:
    db = copy_db(generated_day, tmp_path)
    q0, q1 = datetime(2026, 3, 9, 13, 20, tzinfo=UTC), datetime(2026, 3, 9, 13, 30, tzinfo=UTC)
    con = warehouse.connect(db)
    con.execute("INSERT INTO quarantine VALUES ('bad-load', ?, ?, 'bars_1m', now())", [q0, q1])
    con.close()
    starts = [s for (s,) in _sql(db, "SELECT start_ts FROM cascades")]
    hidden = sum(1 for s in starts if q0 <= s < q1)
    assert hidden >= 1
    r = _parse(write_report(db, tmp_path / "q.html"))
    assert r.episode_rows == len(starts) - hidden
    assert r.quarantine_rows == 1
    assert "bad-load" in (tmp_path / "q.html").read_text()


def test_report_of_an_empty_database_says_there_is_no_data(tmp_path: Path) -> None:
    con = warehouse.connect(tmp_path / "empty.duckdb")
    warehouse.migrate(con)
    con.close()
    r = _parse(write_report(tmp_path / "empty.duckdb", tmp_path / "e.html"))
    assert r.episode_rows == 0 and r.episode_count_text == "0"
    assert {"price", "contagion-ranking", "oi-deltas"} <= set(r.plots)
    assert "no bars in the selected range" in (tmp_path / "e.html").read_text()


def test_cli_report(generated_day: GeneratedDay, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli.html"
    assert main(["report", "--db", str(generated_day.db), "--out", str(out), "--from", "2026-03-09"]) == 0
    assert str(out.resolve()) in capsys.readouterr().out
    assert _parse(out).episode_count_text == str(_sql(generated_day.db, "SELECT count(*) FROM cascades")[0][0])
    assert main(["report", "--db", str(generated_day.db), "--from", "yesterday"]) == 2
    assert main(["report", "--db", str(tmp_path / "missing.duckdb"), "--out", str(out)]) == 1
    assert "run `make run`" in capsys.readouterr().err


# ---- headless Chromium -----------------------------------------------------------------------------
def _chromium(url: str, shot: Path, profile: Path, size: str = "1400,3000") -> str:
    """Load ``url`` headless, write a screenshot; returns Chromium's stderr (console messages included)."""
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           f"--screenshot={shot}", f"--window-size={size}", "--enable-logging=stderr", "--v=0", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "LANG": "C.UTF-8"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stderr


def _console_messages(stderr: str) -> list[str]:
    # Chromium logs page console output as "...:INFO:CONSOLE(line)] "message", source: ..." (and at
    # ERROR level for console.error); any of them means the page ran something: ours has no script.
    return [line for line in stderr.splitlines() if re.search(r":CONSOLE[:(]", line) or "Uncaught" in line]


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless check needs Debian chromium at /usr/bin/chromium: "
                                                   "apt-get update && apt-get install -y chromium")
def test_report_opens_in_headless_chromium_without_errors(generated_day: GeneratedDay, tmp_path: Path) -> None:
    out = write_report(generated_day.db, tmp_path / "report.html")
    shot = tmp_path / "report.png"
    stderr = _chromium(out.resolve().as_uri(), shot, tmp_path / "profile")
    assert _console_messages(stderr) == []
    assert _png_size(shot) == (1400, 3000) and shot.stat().st_size > 50_000  # a rendered page, not a blank one
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, SCREENSHOT)
    print(f"report screenshot: {SCREENSHOT}")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install -y chromium)")
def test_the_console_check_catches_a_page_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>undefinedFunction();</script>page</body></html>")
    stderr = _chromium(bad.resolve().as_uri(), tmp_path / "bad.png", tmp_path / "profile", size="300,200")
    assert any("Uncaught ReferenceError" in m for m in _console_messages(stderr))



def test_liquidation_map_chart_does_not_depend_on_row_order(generated_day: GeneratedDay, tmp_path: Path) -> None:
    """The desk and the report draw the same map byte for byte: cells are drawn in (time, price) order, not
    in whatever order the table's rows come back in (a GROUP BY over several threads)."""
    from pipelines.report import liquidation_map_chart

    db = copy_db(generated_day, tmp_path)
    con = warehouse.connect(db)
    try:
        base, t0, t1 = con.execute("""SELECT base, min(as_of_ts), max(as_of_ts) + INTERVAL 1 MINUTE
            FROM liquidation_levels WHERE exchange = 'all' GROUP BY base ORDER BY count(*) DESC LIMIT 1""").fetchone()
        con.execute("SET threads = 1")
        before = liquidation_map_chart(con, base, t0, t1)
        # the same rows stored in the reverse order
        con.execute("CREATE TEMP TABLE levels_copy AS SELECT * FROM liquidation_levels")
        con.execute("DELETE FROM liquidation_levels")
        con.execute("INSERT INTO liquidation_levels SELECT * FROM levels_copy "
                    "ORDER BY as_of_ts DESC, price_low DESC, side DESC, exchange DESC")
        after = liquidation_map_chart(con, base, t0, t1)
    finally:
        con.close()
    assert before.count("<rect") > 10 and after == before
