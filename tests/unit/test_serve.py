"""The live desk (`liqstream serve`) on the generated day: the real server process, its pages checked
against figures computed independently from the base tables, bad input, and the event stream."""

from __future__ import annotations

import json
import threading
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipelines import warehouse
from pipelines.cli import build_parser
from pipelines.report import svg
from tests.helpers import DeskPage, DeskServer, expected_liquidation_totals
from tests.unit.test_report import _sql
from tests.unit.test_report_day import DAY, GeneratedDay, copy_db, get_generated_day


@pytest.fixture(scope="session")
def generated_day(pytestconfig: pytest.Config) -> GeneratedDay:
    return get_generated_day(pytestconfig)


@pytest.fixture(scope="module")
def desk(generated_day: GeneratedDay, tmp_path_factory: pytest.TempPathFactory):
    with DeskServer(generated_day.db, tmp_path_factory.mktemp("desk") / "serve.log") as server:
        yield server


def _check_totals(page: DeskPage, expected: dict) -> None:
    """Every (level, name, span, side) cell equals the hand-computed total; names without liquidations in
    a span show 0."""
    names = {(lv, n) for lv, n, _ in expected}
    assert {(lv, n) for lv, n, _, _ in page.totals} == names
    for (level, name, span, side), usd in page.totals.items():
        e = expected.get((level, name, span))
        assert usd == (e[f"{side}_usd"] if e else 0), (level, name, span, side)


def test_live_page_shows_the_episodes_totals_and_charts(desk: DeskServer, generated_day: GeneratedDay) -> None:
    status, html = desk.get("/")
    assert status == 200
    page = DeskPage(html)
    db = generated_day.db
    # live view: the 24 h ending with the latest bar; the 3-hour day is inside it
    (last,) = _sql(db, "SELECT max(minute_ts) FROM bars_1m")[0]
    t1, t0 = last + timedelta(minutes=1), last + timedelta(minutes=1) - timedelta(hours=24)
    episodes = _sql(db, "SELECT episode_id, status FROM cascades WHERE start_ts < ? AND end_ts > ?", [t1, t0])
    assert episodes and {e["id"] for e in page.episodes} == {e for e, _ in episodes}
    # the saved query's totals, computed here by hand from liquidations_1m
    _check_totals(page, expected_liquidation_totals(db))
    # the largest base by OI is shown: price with its episodes and the market's shaded, bars, OI, funding
    (base,) = _sql(db, "SELECT base FROM bars_1m_symbol GROUP BY base ORDER BY max(oi_usd) DESC LIMIT 1")[0]
    assert page.plots == [f"price-{base}", f"liquidations-{base}", f"liquidation-map-{base}", f"oi-{base}",
                          f"funding-{base}"]
    # the liquidation map is the report's chart of the same base and range (one plotting path)
    from pipelines.report import liquidation_map_chart
    con = warehouse.connect(db, read_only=True)
    try:
        want = liquidation_map_chart(con, base, t0, t1, height=260)
    finally:
        con.close()
    assert "<rect" in want and want in html
    per_scope = dict(_sql(db, "SELECT scope, count(*) FROM cascades GROUP BY scope"))
    assert page.bands[f"price-{base}"] == per_scope.get(base, 0) + per_scope.get("market", 0)
    assert page.bars[f"liquidations-{base}"] > 0
    longs = _sql(db, "SELECT sum(notional_usd)::DOUBLE FROM liquidations_1m WHERE base = ? AND side = 'long'", [base])
    assert f"longs {svg.fmt_usd(longs[0][0])}" in html
    assert "data-live='1'" in html and "new EventSource('/events'" in html  # the live view follows the stream


def test_base_and_day_parameters(desk: DeskServer, generated_day: GeneratedDay) -> None:
    db = generated_day.db
    status, html = desk.get("/?base=ETH&hours=4")
    assert status == 200 and DeskPage(html).plots[0] == "price-ETH"
    status, html = desk.get(f"/?date={DAY.isoformat()}")
    # a past day is a still page: its body does not ask the script to follow the event stream
    assert status == 200 and f"HISTORY {DAY.isoformat()}" in html and "data-live='0'" in html
    page = DeskPage(html)
    d0 = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    episodes = _sql(db, "SELECT episode_id FROM cascades WHERE start_ts < ? AND end_ts > ?", [d0 + timedelta(days=1), d0])
    assert {e["id"] for e in page.episodes} == {e for (e,) in episodes}
    # a past day's spans end with its last liquidation minute: for the one-day data, the data's own end
    (liq_last,) = _sql(db, "SELECT max(minute) FROM liquidations_1m WHERE minute < ?", [d0 + timedelta(days=1)])[0]
    _check_totals(page, expected_liquidation_totals(db, liq_last + timedelta(minutes=1)))


@pytest.mark.parametrize(("path", "status", "says"), [
    ("/?date=2026-3-x", 400, "date must be a UTC day like 2026-03-09"),
    ("/?date=2020-01-01", 404, "no data on 2020-01-01: the marts cover 2026-03-09"),
    ("/?base=NOPE", 404, "no base &#x27;NOPE&#x27;"),
    ("/?base=BTC%27;DROP%20TABLE%20cascades;--", 404, "no base"),
    ("/?hours=7", 400, "hours must be one of 1, 4, 12, 24"),
    ("/admin", 404, "no page"),
])
def test_bad_input_gets_a_clear_page(desk: DeskServer, path: str, status: int, says: str) -> None:
    got, html = desk.get(path)
    assert got == status and says in html, html[-600:]
    assert "Traceback" not in html and "File \"" not in html


def test_only_get_and_loopback_by_default(desk: DeskServer) -> None:
    req = urllib.request.Request(desk.url, data=b"sql=DELETE FROM cascades", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 405
    assert build_parser().parse_args(["serve"]).host == "127.0.0.1"


def test_missing_database_is_a_clear_page(tmp_path: Path) -> None:
    with DeskServer(tmp_path / "none.duckdb", tmp_path / "serve.log") as server:
        status, html = server.get("/")
    assert status == 503 and "no database at" in html and "make run" in html
    assert "http-equiv='refresh'" in html  # not ready yet: the page retries by itself
    con = warehouse.connect(tmp_path / "empty.duckdb")
    warehouse.migrate(con)
    con.close()
    with DeskServer(tmp_path / "empty.duckdb", tmp_path / "serve2.log") as server:
        status, html = server.get("/")
    assert status == 503 and "no bars yet" in html and "http-equiv='refresh'" in html


def _events(url: str, stop: threading.Event, out: list[dict]) -> None:
    """Collect the event stream's 'update' payloads until ``stop`` is set."""
    with urllib.request.urlopen(url, timeout=120) as r:
        event = None
        for raw in r:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "update":
                out.append(json.loads(line[6:]))
            if stop.is_set():
                return


def test_event_stream_sends_the_panels_again_when_the_data_changes(generated_day: GeneratedDay, tmp_path: Path) -> None:
    db = copy_db(generated_day, tmp_path)
    with DeskServer(db, tmp_path / "serve.log") as server:
        updates: list[dict] = []
        stop = threading.Event()
        reader = threading.Thread(target=_events, args=(server.url + "events", stop, updates), daemon=True)
        reader.start()
        for _ in range(600):  # bounded wait for the first update: every panel
            if updates:
                break
            threading.Event().wait(0.1)
        assert updates and set(updates[0]) == {"asof", "kpis", "live", "totals", "charts"}
        # a job commits a new (open) episode: the live panel is sent again with it, the charts too
        con = warehouse.connect(db)
        con.execute("INSERT INTO cascades SELECT * REPLACE ('feedbeef00000000' AS episode_id, 'open' AS status) "
                    "FROM cascades ORDER BY start_ts DESC LIMIT 1")
        con.close()
        for _ in range(600):
            if any("feedbeef00000000" in u.get("live", "") for u in updates):
                break
            threading.Event().wait(0.1)
        stop.set()
    new = next(u for u in updates if "feedbeef00000000" in u.get("live", ""))
    assert "data-episode='feedbeef00000000'" in new["live"] and "OPEN" in new["live"]
    assert "kpis" in new  # one more open episode
