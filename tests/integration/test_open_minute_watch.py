"""The stream cycle's open-minute watch (ADR 018) through the real broker: a cascade that starts
mid-minute is watched in a cycle whose events all lie inside that minute, then confirmed by the
detector's own start alert at the close; an absorbed burst is watched, then withdrawn at the close.
Expected amounts, thresholds, moves and episode ids are computed here from the published events."""

from __future__ import annotations

import hashlib
import time
from collections import Counter

import duckdb
import pytest

from bench.alert_latency import CascadeScenario, Shock, Venue
from bench.data import SYNTH_START_US, publish_events
from connectors.config import KafkaSettings
from connectors.kafka.reader import RangeReader, log_bounds, plan_ranges
from connectors.kafka.topics import ALERTS_TOPIC
from pipelines.alerts.delivery import AlertDispatcher
from pipelines.alerts.record import decoder
from pipelines.jobs.load import run_load
from pipelines.settings import JobSettings
from pipelines.transforms.config import MINUTE_US

pytestmark = pytest.mark.integration

BTC = Venue("binance-futures", "BTCUSDT", "BTC", "USDT")
T0 = SYNTH_START_US
CASCADE_MIN, BURST_MIN = 40, 46  # minutes after T0; the first run ends (4 quiet minutes) before the second
EXPECTED_THRESHOLD = max(500_000.0, 5.0 * 1e-4 * 4e9)  # floor_usd_symbol vs episode_oi_bp x the $4B OI


def _episode_id(scope: str, start_us: int) -> str:
    return hashlib.sha1(f"{scope}|long_liquidation|{start_us}".encode()).hexdigest()[:16]


def _rows(db, sql: str, params: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def test_watch_from_the_open_minute_then_confirmed_or_withdrawn_at_its_close(fresh_broker, tmp_path):
    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    settings = JobSettings(db=tmp_path / "w.duckdb", data_dir=tmp_path, kafka=kafka)
    shocks = [Shock("BTC", T0 + CASCADE_MIN * MINUTE_US + 10_000_000, absorbed=False),
              Shock("BTC", T0 + BURST_MIN * MINUTE_US + 10_000_000, absorbed=True)]
    sc = CascadeScenario(T0, (BURST_MIN + 2) * 60, [BTC], {"BTC": 60_000.0}, shocks, seed=3)
    events = sc.all_events(rate=0.5, seed=4)  # a trade every 2 s, OI every 2 s: a quiet, paced feed
    liqs = [(i, e) for i, e in enumerate(events) if e[0] == "liquidation"]
    crossings = [i for i, e in enumerate(events) if e[2]]
    assert len(crossings) == 2 and all(events[i][0] == "liquidation" for i in crossings)

    published = 0

    def cycle_through(last: int) -> int:
        """Publish events[published:last + 1] in batches of 20 (the paced feed), then one cycle; returns
        the latest event time the cycle read."""
        nonlocal published
        batch = events[published:last + 1]
        for k in range(0, len(batch), 20):
            publish_events(kafka, ((et, r) for et, r, _ in batch[k:k + 20]), layout="paced")
        published = last + 1
        run_load(settings, run_dq=False, open_minute_watch=True)
        return max(r["event_time"] for _, r, _ in events[:published])

    def watches() -> dict[str, tuple]:
        return {r[0]: r[1:] for r in _rows(settings.db, "SELECT episode_id, state, epoch_us(minute_ts), "
                                           "epoch_us(seen_ts), level, liq_usd, threshold_usd, price_move_pct, "
                                           "confirmed_level FROM cascade_watches")}

    def last_trade_price(before_us: int) -> float:
        return [r["price"] for et, r, _ in events if et == "trade" and r["event_time"] < before_us][-1]

    for n, (minute, crossing) in enumerate(zip((CASCADE_MIN, BURST_MIN), crossings, strict=True)):
        m_us = T0 + minute * MINUTE_US
        ep = _episode_id("BTC", m_us)
        # the feed up to the liquidation before the crossing: the run is hot, no watch yet
        cycle_through(crossing - 1)
        assert ep not in watches()
        # the crossing liquidation: watched by a cycle whose events all lie inside the open minute
        read_to = cycle_through(crossing)
        assert m_us <= read_to < m_us + MINUTE_US
        state, minute_us, seen_us, level, liq_usd, threshold, move, _ = watches()[ep]
        run_liqs = [r["notional_usd"] for i, (et, r, _) in liqs if i <= crossing and r["event_time"] >= m_us]
        assert (state, minute_us, level) == ("watch", m_us, 1)
        assert m_us <= seen_us < m_us + MINUTE_US
        assert liq_usd == pytest.approx(sum(run_liqs)) and len(run_liqs) == 5
        assert threshold == pytest.approx(EXPECTED_THRESHOLD)
        # move at the watch: the partial minute's close against the close before the run
        assert move == pytest.approx((last_trade_price(read_to + 1) / last_trade_price(m_us) - 1) * 100, rel=1e-9)
        # partial-minute state stays out of the marts: no alert of the open minute yet
        assert _rows(settings.db, "SELECT count(*) FROM cascade_alerts WHERE minute_ts >= make_timestamp(?::BIGINT)",
                     [m_us]) == [(0,)]
        # the rest of the minute: still open, still a watch
        last_in_minute = max(i for i, (_, r, _) in enumerate(events) if r["event_time"] < m_us + MINUTE_US)
        cycle_through(last_in_minute)
        assert watches()[ep][0] == "watch"
        # the next minute's first events close it
        cycle_through(last_in_minute + 10)
        state, *_, confirmed_level = watches()[ep]
        total = sum(r["notional_usd"] for _, (et, r, _) in liqs
                    if m_us <= r["event_time"] < m_us + MINUTE_US)
        alerts = {lvl: (t, usd) for lvl, t, usd in _rows(
            settings.db, "SELECT severity_level, alert_type, liq_usd FROM cascade_alerts WHERE episode_id = ?", [ep])}
        if n == 0:  # 10 x $450k with a 2 % drop: a cascade, level 1 (< 5 x the threshold)
            assert total == pytest.approx(4_500_000.0)
            assert (state, confirmed_level) == ("confirmed", 1)
            assert alerts[1] == ("start", pytest.approx(total))
        else:  # 45 x $450k with a 0.2 % drop: 0.2 % / 50.6 bp < 0.02 %/bp, a burst
            assert total == pytest.approx(20_250_000.0)
            assert (state, confirmed_level) == ("withdrawn", None)
            assert alerts[-1] == ("burst", pytest.approx(total))
            assert not [lvl for lvl in alerts if lvl >= 1]
    assert not [w for w in watches() if w not in (_episode_id("BTC", T0 + CASCADE_MIN * MINUTE_US),
                                                  _episode_id("BTC", T0 + BURST_MIN * MINUTE_US))]

    # the rest of the feed, then a cycle with nothing new: no watch or delivery twice
    cycle_through(len(events) - 1)
    outbox = _rows(settings.db, "SELECT episode_id, severity_level FROM alert_deliveries")
    run_load(settings, run_dq=False, open_minute_watch=True)
    assert _rows(settings.db, "SELECT episode_id, severity_level FROM alert_deliveries") == outbox
    assert max(Counter(outbox).values()) == 1

    # delivered: the subscriber learns the watch, then the confirmation or the withdrawal
    dispatcher = AlertDispatcher(settings).start()
    con = duckdb.connect(str(settings.db))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            dispatcher.sync(con)
            if not con.execute("SELECT count(*) FROM alert_deliveries WHERE status <> 'sent'").fetchone()[0]:
                break
            time.sleep(0.2)
    finally:
        con.close()
        dispatcher.close()
    with RangeReader(kafka, idle_timeout_s=20) as reader:
        records = [decoder().decode(rec.value) for rng in plan_ranges(log_bounds(kafka, [ALERTS_TOPIC]), {})
                   for rec in reader.read(rng)]
    got = Counter((a["episode_id"], a["severity_level"], a["alert_type"], a["kind"]) for a in records)
    assert max(got.values()) == 1
    cascade, burst = (_episode_id("BTC", T0 + m * MINUTE_US) for m in (CASCADE_MIN, BURST_MIN))
    mine = {k[1:] for k in got if k[0] == cascade}
    assert {(-2, "cascade_watch", "watch"), (1, "start", "cascade")} <= mine
    assert not [k for k in mine if k[0] == -3]
    mine = {k[1:] for k in got if k[0] == burst}
    assert {(-2, "cascade_watch", "watch"), (-3, "watch_withdrawn", "watch"), (-1, "burst", "liquidation_burst")} <= mine
    assert not [k for k in mine if k[0] >= 1]
    watch_rec = next(a for a in records if a["episode_id"] == cascade and a["severity_level"] == -2)
    assert watch_rec["minute_ts"] <= watch_rec["alert_ts"] < watch_rec["minute_ts"] + MINUTE_US
