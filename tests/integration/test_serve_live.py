"""The live desk follows the real streaming job through a simulated cascade, seen in headless Chromium.

A simulated market day (preset A's crowded longs, BTC shocks an hour in) is published to a real local
broker minute by minute while `liqstream stream` consumes it and `liqstream serve` shows it; Chromium
loads the desk page once and the test watches its DOM: an episode appears on the live panel while the
day is still being published (its last ten minutes are held back until then), the page keeps
updating without a reload to the day's last minute, and its 1 h / 24 h totals equal the saved queries
and a hand computation over the marts. The screenshot goes to data/test-artifacts/.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.config import KafkaSettings
from connectors.kafka.publish import publish_raw_stream
from connectors.kafka.topics import ensure_topics
from pipelines import warehouse
from tests.chromium import CHROMIUM, HeadlessChromium
from tests.conftest import REPO
from tests.helpers import DeskServer, expected_liquidation_totals

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium "
                                                               "(make chromium / apt-get install -y chromium)")]

SCREENSHOT = REPO / "data" / "test-artifacts" / "serve-screenshot.png"
SCREENSHOT_LIVE = REPO / "data" / "test-artifacts" / "serve-live-screenshot.png"
HOUR = 3600.0
HELD_MINUTES = 10  # the day's last minutes, published only once the page has shown an episode


def _simulated_day() -> list:
    from connectors.simulator.runner import Simulation
    from connectors.simulator.scenarios import Shock

    sim = Simulation("A", 7, duration="2h", trades_per_second=1.0, symbols=["BTC", "ETH", "SOL", "DOGE"],
                     venues=["binance-futures", "bybit", "okx"],
                     shocks=(Shock("macro", 0.25 * HOUR, 1.0 * HOUR, -0.0172, "BTC", "risk-off"),
                             Shock("whale_sell", 1.25 * HOUR, 0.5 * HOUR, -0.0172, "BTC", "whale sells")))
    return list(sim.messages())


def _stream_job(db: Path, bootstrap: str, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "LIQSTREAM_"))}
    env.update(KAFKA_BOOTSTRAP_SERVERS=bootstrap, LIQSTREAM_DB=str(db), LIQSTREAM_DATA_DIR=str(db.parent),
               KAFKA_REQUEST_TIMEOUT_MS="4000")
    # the job's own defaults for snapshots (what a desk gets); a fast cycle and rare DQ keep the test short
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", "stream", "--interval", "0.5", "--dq-every", "3600"],
                            cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115


def _snapshot_minute(db: Path) -> int | None:
    """Latest bar minute (epoch s) the readers can see now, or None before the first snapshot."""
    if not warehouse.snapshot_path(db).exists():
        return None
    con = warehouse.connect(db, read_only=True)
    try:
        (m,) = con.execute("SELECT epoch(max(minute_ts))::BIGINT FROM bars_1m").fetchone()
        return m
    finally:
        con.close()


class Producer(threading.Thread):
    """Publishes the day one simulated minute at a time, never more than a few minutes ahead of what the
    readers can see (so events are still flowing whatever this machine's speed), holding the last
    HELD_MINUTES until ``release`` is set."""

    def __init__(self, messages: list, kafka: KafkaSettings, db: Path) -> None:
        super().__init__(daemon=True)
        self.by_minute: dict[int, list] = {}
        for m in messages:
            self.by_minute.setdefault(m.received_at_us // 60_000_000 * 60, []).append(m)
        self.minutes = sorted(self.by_minute)
        self.kafka, self.db = kafka, db
        self.release = threading.Event()
        self.published_until: int | None = None  # the last minute published so far
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            hold_from = self.minutes[-HELD_MINUTES]
            for minute in self.minutes:
                if minute == hold_from:
                    self.release.wait(600)
                elif minute > self.minutes[0] + 65 * 60:  # the quiet first hour goes at full speed
                    for _ in range(240):  # at most ~60 s per minute: stay <= 5 minutes ahead of the readers
                        seen = _snapshot_minute(self.db)
                        if seen is not None and seen >= minute - 300:
                            break
                        time.sleep(0.25)
                publish_raw_stream(self.by_minute[minute], self.kafka, create_topics=False)
                self.published_until = minute
        except BaseException as exc:  # reported by the test
            self.error = exc


def _dom_totals(browser: HeadlessChromium) -> dict[tuple[str, str, str, str], Decimal]:
    cells = browser.evaluate("""JSON.stringify(Array.from(document.querySelectorAll('tr[data-level] td[data-usd]'))
        .map(td => [td.parentElement.dataset.level, td.parentElement.dataset.name, td.dataset.span, td.dataset.side,
                    td.dataset.usd]))""")
    return {(lv, n, s, side): Decimal(usd) for lv, n, s, side, usd in json.loads(cells)}


def _wait(cond, what: str, tries: int = 2400, step: float = 0.25):
    for _ in range(tries):  # bounded polling, ~10 min at most: the machine may be shared
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"gave up waiting for {what}")


def test_the_desk_shows_an_episode_while_the_day_streams_in(fresh_broker, tmp_path: Path) -> None:
    messages = _simulated_day()
    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    ensure_topics(kafka)
    db = tmp_path / "desk.duckdb"
    job = _stream_job(db, fresh_broker.bootstrap, tmp_path / "stream.log")
    producer = Producer(messages, kafka, db)
    desk = browser = None
    try:
        producer.start()
        _wait(lambda: warehouse.snapshot_path(db).exists(), "the job's first snapshot")
        desk = DeskServer(db, tmp_path / "serve.log")
        browser = HeadlessChromium(tmp_path / "chromium")
        browser.navigate(desk.url)
        browser.evaluate("window.loadedOnce = true")  # gone if the page ever reloads

        def episode_on_page() -> int:
            assert producer.error is None, producer.error
            return browser.evaluate("document.querySelectorAll('#live tr.episode').length")

        _wait(episode_on_page, "an episode on the live panel")
        published_then = producer.published_until
        browser.screenshot(SCREENSHOT_LIVE)  # the page as the first episode came in
        # events were still flowing: the day's last minutes had not been published yet
        assert published_then is not None and published_then < producer.minutes[-HELD_MINUTES], published_then
        producer.release.set()
        producer.join(timeout=600)
        assert producer.error is None and producer.published_until == producer.minutes[-1]

        # the same page keeps following the job to the day's last minute, without a reload
        last = datetime.fromtimestamp(producer.minutes[-1], UTC)
        _wait(lambda: f"{last:%Y-%m-%d %H:%M}" in browser.evaluate("document.getElementById('asof').textContent"),
              f"the page's clock to reach {last:%H:%M}")
        assert browser.evaluate("window.loadedOnce") is True
        assert int(browser.evaluate("document.body.dataset.updates")) >= 2
        assert browser.errors() == []

        # stop the job (it publishes a last snapshot); the page re-reads the database, then compare
        job.send_signal(signal.SIGTERM)
        assert job.wait(timeout=600) == 0, (tmp_path / "stream.log").read_text()[-3000:]
        _wait(lambda: "the database" in browser.evaluate("document.getElementById('asof').textContent"),
              "the page to read the database after the job stopped")
        page = _dom_totals(browser)
        saved = json.loads(subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "query", "--saved", "liquidation_totals", "--format", "json",
             "--db", str(db)], cwd=REPO, capture_output=True, text=True, check=True).stdout)
        by_hand = expected_liquidation_totals(db)
        by_venue_24h = json.loads(subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "query", "--saved", "liquidations_by_venue_24h", "--format", "json",
             "--db", str(db)], cwd=REPO, capture_output=True, text=True, check=True).stdout)
        assert by_hand and saved
        for r in saved:
            if r["span"] in ("1h", "24h"):
                for side in ("long", "short"):
                    key = (r["level"], r["name"], r["span"], side)
                    assert page[key] == Decimal(str(r[f"{side}_usd"])) == by_hand[key[:3]][f"{side}_usd"], key
        assert {(lv, n, s) for lv, n, s, _ in page if s in ("1h", "24h")} == \
               {k for k in by_hand if k[2] in ("1h", "24h")}
        for r in by_venue_24h:
            assert page[("venue", r["exchange"], "24h", "long")] == Decimal(str(r["long_usd"]))
            assert page[("venue", r["exchange"], "24h", "short")] == Decimal(str(r["short_usd"]))

        shot = browser.screenshot(tmp_path / "desk.png")
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, SCREENSHOT)
        print(f"desk screenshots: {SCREENSHOT_LIVE} (first episode), {SCREENSHOT} (end of the day)")
    except AssertionError as exc:  # what the job, the desk and the page were doing says more than the assert
        state = ""
        if browser is not None:
            state = browser.evaluate("document.getElementById('conn').textContent + ' | ' + "
                                     "document.getElementById('asof').textContent + ' | updates ' + "
                                     "document.body.dataset.updates")
        logs = "\n".join(f"--- {name} ---\n{(tmp_path / name).read_text()[-3000:]}"
                         for name in ("stream.log", "serve.log") if (tmp_path / name).exists())
        raise AssertionError(f"{exc}\npage: {state}\nproducer at {producer.published_until}\n{logs}") from exc
    finally:
        producer.release.set()
        if browser is not None:
            browser.close()
        if desk is not None:
            desk.stop()
        if job.poll() is None:
            job.send_signal(signal.SIGTERM)
            try:
                job.wait(timeout=60)
            except subprocess.TimeoutExpired:
                job.kill()
                job.wait()
