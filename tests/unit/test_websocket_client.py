"""Live websocket client, venue specs, REST poller and recorder against LOCAL servers.

Every server here is started by the test on 127.0.0.1 (free port) and stopped by it;
the recorded messages are real lines from ../shared/fixtures/exchange-captures copied
into tests/fixtures/ws/. Intervals are shrunk through LiveConfig so each test takes
well under a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import signal
import sys
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from connectors.sources.capture import RawMessage, read_capture
from connectors.sources.live import (
    LiveConfig,
    LiveFeed,
    RestPoller,
    backoff_delay,
    open_interest_urls,
    spec_for,
)
from connectors.sources.live.client import HandlerError
from connectors.sources.live.venues import bybit_category, okx_inst_type
from connectors.sources.recorder import add_arguments, record
from connectors.sources.recorder import run as run_capture

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ws"
ROOT = Path(__file__).resolve().parents[2]


def fixture_lines(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


FAST = LiveConfig(
    backoff_initial_s=0.2,
    backoff_factor=2.0,
    backoff_max_s=0.4,
    backoff_jitter=0.0,
    open_timeout_s=2.0,
    close_timeout_s=0.5,
    stale_after_s=5.0,
    ws_ping_interval_s=None,
)


def fast(**kw) -> LiveConfig:
    from dataclasses import replace

    return replace(FAST, **kw)


#: bound of a wait on a condition (met in milliseconds here; generous: CI machines are shared and loaded)
WAIT_S = 60.0


# --------------------------------------------------------------------------- local server


@dataclass
class ServerConn:
    ws: ServerConnection
    index: int
    path: str
    received: list[str | bytes] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)

    async def next_frame(self, timeout: float = WAIT_S) -> str | bytes:
        return await asyncio.wait_for(self.queue.get(), timeout)


@contextlib.asynccontextmanager
async def local_server(
    handler: Callable[[ServerConn], Awaitable[None]],
    responder: Callable[[str | bytes], str | None] | None = None,
):
    """A websocket server on 127.0.0.1:<free port>; yields (url, connections)."""
    conns: list[ServerConn] = []

    async def reader(conn: ServerConn) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in conn.ws:
                conn.received.append(frame)
                conn.received_at.append(time.monotonic())
                conn.queue.put_nowait(frame)
                if responder is not None and (answer := responder(frame)) is not None:
                    await conn.ws.send(answer)

    async def on_connect(ws: ServerConnection) -> None:
        conn = ServerConn(ws, len(conns), ws.request.path)
        conns.append(conn)
        task = asyncio.create_task(reader(conn))
        try:
            await handler(conn)
            await ws.wait_closed()
        finally:
            task.cancel()

    async with serve(on_connect, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}", conns


async def run_until(feed: LiveFeed, done: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Run ``feed`` until ``done()`` holds (or fail after ``timeout``), then stop it."""
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    deadline = time.monotonic() + timeout
    try:
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; stats={feed.summary()}")
            if task.done():
                task.result()
                raise AssertionError("feed.run() returned before the condition held")
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_S)


def arun(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 2 * WAIT_S))


# --------------------------------------------------------------------------- venue specs


def test_binance_futures_streams_ride_in_the_url_of_the_market_route():
    (plan,) = spec_for("binance-futures").plans(["BTCUSDT", "ETHUSDT"])
    assert plan.url == (
        "wss://fstream.binance.com/market/stream?streams="
        "btcusdt@aggTrade/btcusdt@forceOrder/btcusdt@markPrice@1s/btcusdt@depth@100ms/"
        "ethusdt@aggTrade/ethusdt@forceOrder/ethusdt@markPrice@1s/ethusdt@depth@100ms"
    )
    assert plan.subscribe == () and plan.heartbeat is None


def test_binance_delivery_uses_dstream_and_splits_above_200_streams():
    symbols = [f"C{i}USD_PERP" for i in range(70)]  # 70 x 3 streams = 210 -> 200 + 10
    plans = spec_for("binance-delivery").plans(symbols, ["trades", "liquidations", "funding"])
    assert [p.url.split("?streams=")[1].count("/") + 1 for p in plans] == [200, 10]
    assert plans[0].url.startswith("wss://dstream.binance.com/stream?streams=c0usd_perp@aggTrade/")
    # open interest alone has no Binance stream (polled over REST): no connection at all
    assert spec_for("binance-futures").plans(["BTCUSDT"], ["open_interest"]) == []


def test_bybit_splits_linear_and_inverse_and_chunks_ten_args():
    plans = spec_for("bybit").plans(["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BTCUSD", "ETHUSDH25"])
    by_label = {p.label: p for p in plans}
    assert by_label["linear"].url == "wss://stream.bybit.com/v5/public/linear"
    assert by_label["inverse"].url == "wss://stream.bybit.com/v5/public/inverse"
    # 4 linear symbols x 4 topics = 16 topics -> 10 + 6
    first, second = (json.loads(f) for f in by_label["linear"].subscribe)
    assert first["op"] == "subscribe" and len(first["args"]) == 10
    assert first["args"][:4] == ["publicTrade.BTCUSDT", "allLiquidation.BTCUSDT", "tickers.BTCUSDT",
                                 "orderbook.200.BTCUSDT"]
    assert second["args"] == ["tickers.SOLUSDT", "orderbook.200.SOLUSDT", "publicTrade.XRPUSDT",
                              "allLiquidation.XRPUSDT", "tickers.XRPUSDT", "orderbook.200.XRPUSDT"]
    assert json.loads(by_label["inverse"].subscribe[0])["args"] == [
        "publicTrade.BTCUSD", "allLiquidation.BTCUSD", "tickers.BTCUSD", "orderbook.200.BTCUSD",
        "publicTrade.ETHUSDH25", "allLiquidation.ETHUSDH25", "tickers.ETHUSDH25", "orderbook.200.ETHUSDH25",
    ]
    assert by_label["linear"].heartbeat.message == '{"op":"ping"}'
    assert by_label["linear"].heartbeat.interval_s == 20.0 and by_label["linear"].heartbeat.mode == "periodic"


@pytest.mark.parametrize(
    ("symbol", "category"),
    [("BTCUSDT", "linear"), ("BTCPERP", "linear"), ("BTC-27JUN25", "linear"), ("BTCUSD", "inverse"),
     ("ETHUSDM25", "inverse"), ("BTCUSDT-27JUN25", "linear")],
)
def test_bybit_category(symbol, category):
    assert bybit_category(symbol) == category


def test_okx_subscription_args_and_idle_text_ping():
    (plan,) = spec_for("okx").plans(["BTC-USDT-SWAP", "BTC-USD-250627"])
    (frame,) = plan.subscribe
    assert json.loads(frame) == {
        "op": "subscribe",
        "args": [
            {"channel": "trades", "instId": "BTC-USDT-SWAP"},
            {"channel": "open-interest", "instId": "BTC-USDT-SWAP"},
            {"channel": "funding-rate", "instId": "BTC-USDT-SWAP"},
            {"channel": "mark-price", "instId": "BTC-USDT-SWAP"},
            {"channel": "books", "instId": "BTC-USDT-SWAP"},
            {"channel": "trades", "instId": "BTC-USD-250627"},
            {"channel": "open-interest", "instId": "BTC-USD-250627"},
            {"channel": "mark-price", "instId": "BTC-USD-250627"},
            {"channel": "books", "instId": "BTC-USD-250627"},
            {"channel": "liquidation-orders", "instType": "SWAP"},
            {"channel": "liquidation-orders", "instType": "FUTURES"},
        ],
    }
    assert plan.url == "wss://ws.okx.com:8443/ws/v5/public"
    assert (plan.heartbeat.message, plan.heartbeat.mode) == ("ping", "idle")
    assert plan.heartbeat.interval_s < 30  # OKX cuts a connection silent for 30 s
    assert [okx_inst_type(s) for s in ("BTC-USDT-SWAP", "BTC-USD-250627", "BTC-USDT", "BTC-USD-250627-60000-C")] == [
        "SWAP", "FUTURES", "SPOT", "OPTION"]


def test_hyperliquid_and_deribit_frames():
    (hl,) = spec_for("hyperliquid").plans(["BTC", "kPEPE"], ["trades", "funding"])
    assert [json.loads(f) for f in hl.subscribe] == [
        {"method": "subscribe", "subscription": {"type": "trades", "coin": "BTC"}},
        {"method": "subscribe", "subscription": {"type": "activeAssetCtx", "coin": "BTC"}},
        {"method": "subscribe", "subscription": {"type": "trades", "coin": "kPEPE"}},
        {"method": "subscribe", "subscription": {"type": "activeAssetCtx", "coin": "kPEPE"}},
    ]
    assert hl.heartbeat.message == '{"method":"ping"}' and hl.heartbeat.interval_s < 60
    (db,) = spec_for("deribit").plans(["BTC-PERPETUAL"])
    hb, sub = (json.loads(f) for f in db.subscribe)
    assert hb == {"jsonrpc": "2.0", "id": 1, "method": "public/set_heartbeat", "params": {"interval": 30}}
    assert sub["method"] == "public/subscribe"
    assert sub["params"]["channels"] == ["trades.BTC-PERPETUAL.100ms", "ticker.BTC-PERPETUAL.100ms",
                                         "book.BTC-PERPETUAL.100ms"]  # the book channel is on by default
    (hl_book,) = spec_for("hyperliquid").plans(["BTC"], ["book"])
    assert [json.loads(f) for f in hl_book.subscribe] == [
        {"method": "subscribe", "subscription": {"type": "l2Book", "coin": "BTC"}}]


def test_deribit_answers_test_request_only():
    spec = spec_for("deribit")
    test_request = '{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}'
    (answer,) = spec.replies(test_request)
    assert json.loads(answer)["method"] == "public/test"
    assert spec.replies('{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"heartbeat"}}') == []
    assert spec.replies("test_request but not json") == []
    assert spec.is_heartbeat_reply(test_request)


def test_unknown_channel_and_venue_are_refused():
    with pytest.raises(ValueError, match="unknown channel"):
        spec_for("okx").plans(["BTC-USDT-SWAP"], ["orderbook"])
    with pytest.raises(ValueError, match="no live feed"):
        spec_for("bitmex")


def test_backoff_is_capped_exponential_with_jitter():
    cfg = LiveConfig(backoff_initial_s=1.0, backoff_factor=2.0, backoff_max_s=10.0, backoff_jitter=0.0)
    assert [backoff_delay(a, cfg) for a in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]

    class MaxRng:
        def random(self) -> float:
            return 1.0

    jittered = LiveConfig(backoff_initial_s=1.0, backoff_factor=2.0, backoff_max_s=10.0, backoff_jitter=0.5)
    # jitter takes off at most half: 4 s * (1 - 0.5 * 1.0) = 2 s; 10 s cap -> 5 s
    assert backoff_delay(2, jittered, MaxRng()) == 2.0
    assert backoff_delay(30, jittered, MaxRng()) == 5.0
    assert all(5.0 <= backoff_delay(30, jittered) <= 10.0 for _ in range(200))


# --------------------------------------------------------------------------- client vs local server


def test_binance_drop_midstream_garbage_binary_then_reconnect_and_continue():
    lines = fixture_lines("binance-futures.txt")  # 6 real aggTrade frames

    async def handler(conn: ServerConn) -> None:
        if conn.index == 0:
            for line in lines[:3]:
                await conn.ws.send(line)
            await asyncio.sleep(0.05)
            conn.ws.transport.abort()  # TCP reset mid-stream, no close frame
            return
        await conn.ws.send("this is not json {")
        await conn.ws.send(b"\x00\xff\xfe binary")
        for line in lines[3:]:
            await conn.ws.send(line)

    async def main() -> None:
        got: list[RawMessage] = []
        async with local_server(handler) as (url, conns):
            feed = LiveFeed("binance-futures", ["CTKUSDT", "AKROUSDT"], ["trades"], fast(), url, got.append)
            await run_until(feed, lambda: len(got) >= 8)
        # both connections asked for the same streams in the URL (resubscribe = same URL)
        assert [c.path for c in conns] == ["/stream?streams=ctkusdt@aggTrade/akrousdt@aggTrade"] * 2
        assert [m.raw for m in got] == lines[:3] + ["this is not json {", "\x00\xff\xfe binary"] + lines[3:]
        assert {m.venue for m in got} == {"binance-futures"}
        assert {m.source for m in got} == {url + "/stream?streams=ctkusdt@aggTrade/akrousdt@aggTrade"}
        assert all(m.channel == "ws" for m in got)
        assert [m.received_at_us for m in got] == sorted(m.received_at_us for m in got)
        st = feed.summary()
        assert (st["connects"], st["disconnects"], st["messages"], st["binary_frames"]) == (2, 1, 8, 1)
        (conn_stats,) = st["connections"].values()
        (gap,) = conn_stats["gaps"]
        # the gap spans the server's 50 ms pause plus the 200 ms first backoff (jitter 0)
        assert gap[0] == got[2].received_at_us and gap[1] == got[3].received_at_us
        assert 0.25 <= st["gap_seconds"] < 2.0
        assert st["gap_seconds"] == pytest.approx((gap[1] - gap[0]) / 1e6)

    arun(main())


def test_bybit_resubscribes_with_identical_frames_and_pings_every_interval():
    expected_sub = {"op": "subscribe", "args": ["publicTrade.BCHUSDT", "allLiquidation.BCHUSDT", "tickers.BCHUSDT",
                                                "orderbook.200.BCHUSDT"]}
    lines = fixture_lines("bybit.txt")

    def responder(frame: str | bytes) -> str | None:
        if frame == '{"op":"ping"}':
            return '{"success":true,"ret_msg":"pong","conn_id":"c1","op":"ping"}'
        return None

    async def handler(conn: ServerConn) -> None:
        sub = await conn.next_frame()
        assert json.loads(sub) == expected_sub
        if conn.index == 0:
            await conn.ws.send(lines[0])
            await conn.ws.close(1011, "server restart")  # clean close frame this time
            return
        for line in lines[1:]:
            await conn.ws.send(line)

    async def main() -> None:
        got: list[RawMessage] = []
        async with local_server(handler, responder) as (url, conns):
            feed = LiveFeed("bybit", ["BCHUSDT"], config=fast(heartbeat_interval_s=0.15), url_override=url,
                            on_message=got.append)
            await run_until(feed, lambda: feed.summary()["heartbeat_replies"] >= 2 and len(got) >= 7)
        assert len(conns) == 2
        assert [json.loads(c.received[0]) for c in conns] == [expected_sub, expected_sub]
        assert [m.raw for m in got if "ret_msg" not in m.raw] == lines
        pings = [f for f in conns[1].received if f == '{"op":"ping"}']
        assert len(pings) >= 2
        st = feed.summary()
        assert st["disconnects"] == 1 and st["heartbeats_sent"] >= 2 and st["subscribe_frames_sent"] == 2

    arun(main())


def test_okx_sends_text_ping_only_when_idle():
    lines = fixture_lines("okx.txt")

    async def handler(conn: ServerConn) -> None:
        await conn.next_frame()  # the subscription
        # busy for 0.6 s with a frame every 0.1 s: no ping expected (idle rule, interval 0.3 s)
        for i in range(6):
            await conn.ws.send(lines[i % len(lines)])
            conn.last_sent = time.monotonic()  # type: ignore[attr-defined]
            await asyncio.sleep(0.1)

    def responder(frame: str | bytes) -> str | None:
        return "pong" if frame == "ping" else None

    async def main() -> None:
        got: list[RawMessage] = []
        async with local_server(handler, responder) as (url, conns):
            feed = LiveFeed("okx", ["BTC-USDT-SWAP"], ["trades"], fast(heartbeat_interval_s=0.3), url, got.append)
            await run_until(feed, lambda: feed.summary()["heartbeat_replies"] >= 1)
        (conn,) = conns
        ping_times = [t for f, t in zip(conn.received, conn.received_at, strict=True) if f == "ping"]
        assert ping_times, "no ping while idle"
        # the first ping comes only after 0.3 s without any frame (the client saw the last
        # frame after the server sent it, so the bound holds whatever the scheduling delays)
        assert min(ping_times) >= conn.last_sent + 0.29
        assert [m.raw for m in got][-1] == "pong"  # the pong is delivered like every frame
        assert feed.summary()["disconnects"] == 0

    arun(main())


def test_okx_reconnects_when_ping_is_not_answered():
    async def handler(conn: ServerConn) -> None:
        await conn.next_frame()  # subscription; then total silence, pings unanswered

    async def main() -> None:
        async with local_server(handler) as (url, conns):
            feed = LiveFeed("okx", ["BTC-USDT-SWAP"], ["trades"], fast(heartbeat_interval_s=0.15), url)
            await run_until(feed, lambda: len(conns) >= 2 and len(conns[1].received) >= 1)
        st = feed.summary()
        assert st["heartbeat_timeouts"] >= 1 and st["connects"] >= 2
        assert conns[0].received[1] == "ping"

    arun(main())


def test_deribit_test_request_is_answered_with_public_test():
    lines = fixture_lines("deribit.txt")

    async def handler(conn: ServerConn) -> None:
        set_hb = json.loads(await conn.next_frame())
        sub = json.loads(await conn.next_frame())
        assert set_hb["method"] == "public/set_heartbeat" and set_hb["params"]["interval"] >= 10
        assert sub["params"]["channels"] == ["trades.ETH-30JUL21-2800-C.100ms", "ticker.ETH-30JUL21-2800-C.100ms",
                                             "book.ETH-30JUL21-2800-C.100ms"]
        await conn.ws.send('{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}')
        answer = json.loads(await conn.next_frame())
        assert answer["jsonrpc"] == "2.0" and answer["method"] == "public/test"
        for line in lines:
            await conn.ws.send(line)

    async def main() -> None:
        got: list[RawMessage] = []
        async with local_server(handler) as (url, conns):
            feed = LiveFeed("deribit", ["ETH-30JUL21-2800-C"], config=fast(), url_override=url, on_message=got.append)
            await run_until(feed, lambda: len(got) >= 1 + len(lines))
        assert [m.raw for m in got[1:]] == lines
        st = feed.summary()
        assert st["replies_sent"] == 1 and st["disconnects"] == 0

    arun(main())


def test_hyperliquid_pings_periodically_even_while_data_flows():
    async def handler(conn: ServerConn) -> None:
        for _ in range(2):
            await conn.next_frame()  # trades + activeAssetCtx subscriptions
        for i in range(40):
            await conn.ws.send(json.dumps({"channel": "trades", "data": [{"coin": "BTC", "tid": i}]}))
            await asyncio.sleep(0.025)

    def responder(frame: str | bytes) -> str | None:
        return '{"channel":"pong"}' if frame == '{"method":"ping"}' else None

    async def main() -> None:
        async with local_server(handler, responder) as (url, conns):
            feed = LiveFeed("hyperliquid", ["BTC"], config=fast(heartbeat_interval_s=0.2), url_override=url)
            await run_until(feed, lambda: feed.summary()["heartbeat_replies"] >= 2)
        (conn,) = conns
        # data kept flowing every 25 ms, yet pings went out (periodic, not idle, rule)
        assert conn.received.count('{"method":"ping"}') >= 2

    arun(main())


def test_stale_connection_is_dropped_and_refused_connects_are_counted():
    async def silent(conn: ServerConn) -> None:
        return  # accept, then never send a frame

    async def main() -> None:
        async with local_server(silent) as (url, conns):
            feed = LiveFeed("binance-futures", ["BTCUSDT"], ["trades"], fast(stale_after_s=0.3), url)
            await run_until(feed, lambda: len(conns) >= 2)
        assert feed.summary()["stale_reconnects"] >= 1
        # nothing listens on that port any more: every attempt fails, the feed keeps trying
        refused = LiveFeed("binance-futures", ["BTCUSDT"], ["trades"], fast(backoff_initial_s=0.05), url)
        await run_until(refused, lambda: refused.summary()["failed_connects"] >= 2)
        st = refused.summary()
        assert st["connects"] == 0 and st["disconnects"] == 0 and st["messages"] == 0

    arun(main())


def test_messages_async_iterator_stops_cleanly():
    lines = fixture_lines("okx.txt")

    async def handler(conn: ServerConn) -> None:
        await conn.next_frame()
        for line in lines:
            await conn.ws.send(line)

    async def main() -> None:
        async with local_server(handler) as (url, _):
            feed = LiveFeed("okx", ["BTC-USDT-SWAP"], ["trades"], fast(), url)
            stop = asyncio.Event()
            got = []
            async for msg in feed.messages(stop):
                got.append(msg.raw)
                if len(got) == len(lines):
                    stop.set()
        assert got == lines

    arun(main())


# --------------------------------------------------------------------------- REST poller


class _OIHandler(http.server.BaseHTTPRequestHandler):
    BODY = b'{"openInterest":"10659.509","symbol":"BTCUSDT","time":1589437530011}'

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        if "symbol=LIMITED" in self.path:
            self.send_response(429)
            self.send_header("Retry-After", "0.5")
            self.end_headers()
            self.wfile.write(b'{"code":-1003,"msg":"Too many requests"}')
            return
        body = self.BODY
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def _http_server(handler: type[http.server.BaseHTTPRequestHandler]):
    """A local HTTP server on a free port in a thread; yields its base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_open_interest_poller_against_local_http_server():
    assert open_interest_urls("binance-futures", ["btcusdt"]) == [
        "https://fapi.binance.com/fapi/v1/openInterest?symbol=BTCUSDT"]
    assert open_interest_urls("binance-delivery", ["BTCUSD_PERP"]) == [
        "https://dapi.binance.com/dapi/v1/openInterest?symbol=BTCUSD_PERP"]
    assert open_interest_urls("okx", ["BTC-USDT-SWAP"]) == []

    with _http_server(_OIHandler) as base:
        async def main() -> None:
            got: list[RawMessage] = []
            urls = open_interest_urls("binance-futures", ["BTCUSDT", "LIMITED"], base) + ["http://127.0.0.1:9/x"]
            poller = RestPoller("binance-futures", urls, 0.1, got.append, timeout_s=2)
            retry_after = await poller.poll_once()
            assert retry_after == 0.5
            (msg,) = got
            assert msg.raw == '{"openInterest":"10659.509","symbol":"BTCUSDT","time":1589437530011}'
            assert (msg.venue, msg.channel, msg.source) == (
                "binance-futures", "rest", f"{base}/fapi/v1/openInterest?symbol=BTCUSDT")
            st = poller.stats.as_dict()
            assert st["requests"] == 3 and st["ok"] == 1
            assert st["errors"]["http_429"] == 1 and sum(st["errors"].values()) == 2

        arun(main())


class _DepthHandler(_OIHandler):
    """Binance USDⓈ-M ``/fapi/v1/depth`` (its documented response: no symbol in it)."""

    BODY = (b'{"lastUpdateId":1027024,"E":1589436922972,"T":1589436922959,'
            b'"bids":[["4.00000000","431.00000000"]],"asks":[["4.00000200","12.00000000"]]}')


def test_depth_snapshot_poll_tags_the_symbol_and_syncs_the_book():
    from connectors.exchanges import normalizer_for
    from connectors.normalize import route
    from connectors.sources.live.poller import depth_snapshot_urls, tag_depth_symbol

    assert depth_snapshot_urls("binance-delivery", ["btcusd_perp"]) == [
        "https://dapi.binance.com/dapi/v1/depth?symbol=BTCUSD_PERP&limit=1000"]
    assert depth_snapshot_urls("okx", ["BTC-USDT-SWAP"]) == []  # its books come with their snapshots
    coinm = '{"lastUpdateId":1,"symbol":"BTCUSD_PERP","pair":"BTCUSD","bids":[],"asks":[]}'
    assert tag_depth_symbol("https://x/dapi/v1/depth?symbol=BTCUSD_PERP&limit=1000", coinm) == coinm
    with _http_server(_DepthHandler) as base:
        async def main() -> None:
            got: list[RawMessage] = []
            poller = RestPoller("binance-futures", depth_snapshot_urls("binance-futures", ["BTCUSDT"], base), 60,
                                got.append, timeout_s=2, transform=tag_depth_symbol, label="binance-futures:depth")
            await poller.poll_once()
            (msg,) = got
            assert json.loads(msg.raw)["symbol"] == "BTCUSDT" and json.loads(msg.raw)["lastUpdateId"] == 1027024
            norm = normalizer_for("binance-futures")
            assert route(norm, msg.raw, msg.received_at_us, msg.source).ignored == "book_synced"
            assert norm.books.books["BTCUSDT"].asks == {4.000002: 12.0}

        arun(main())


# --------------------------------------------------------------------------- recorder


def _serve_then_hold(lines: list[str], subscribe_frames: int = 1):
    async def handler(conn: ServerConn) -> None:
        for _ in range(subscribe_frames):
            await conn.next_frame()
        for line in lines:
            await conn.ws.send(line)

    return handler


def test_record_writes_a_capture_read_back_line_for_line(tmp_path):
    lines = fixture_lines("okx.txt") + ["garbage, not json"]
    out = tmp_path / "day.jsonl.gz"

    async def main() -> None:
        stop = asyncio.Event()
        async with local_server(_serve_then_hold(lines)) as (url, _):
            task = asyncio.create_task(record(["okx"], ["BTC-USDT-SWAP"], out, None, stop, channels=["trades"],
                                              config=fast(), url_override=url, flush_interval_s=0.05))
            # the file is sync-flushed while recording: the gzip stream has no end marker
            # yet, but every line written so far decompresses
            deadline = time.monotonic() + WAIT_S
            seen: list[bytes] = []
            while time.monotonic() < deadline and len(seen) < len(lines):
                await asyncio.sleep(0.05)
                if out.exists():
                    seen = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(out.read_bytes()).splitlines()
            assert [json.loads(x)["raw"] for x in seen] == lines
            stop.set()
            result = await task
        assert result.lines == len(lines) and result.stop_reason == "stopped"
        assert result.feeds["okx"]["messages"] == len(lines)

    arun(main())
    assert out.read_bytes()[:2] == b"\x1f\x8b"
    back = list(read_capture(out))
    assert [m.raw for m in back] == lines
    assert all(isinstance(m, RawMessage) and m.venue == "okx" and m.channel == "ws" for m in back)


def test_record_stops_after_duration(tmp_path):
    out = tmp_path / "short.jsonl"
    lines = fixture_lines("binance-futures.txt")

    async def main() -> None:
        async with local_server(_serve_then_hold(lines, 0)) as (url, _):
            t0 = time.monotonic()
            result = await record(["binance-futures"], ["CTKUSDT"], out, 0.5, channels=["trades"],
                                  config=fast(), url_override=url, oi_poll_interval_s=None)
            assert 0.5 <= time.monotonic() - t0 < 2.5
        assert result.stop_reason == "duration" and result.lines == len(lines)

    arun(main())
    assert [m.raw for m in read_capture(out)] == lines


def test_capture_cli_exits_cleanly_on_sigterm(tmp_path):
    """`liqstream capture` in a child process: SIGTERM -> file closed, exit 0."""
    out = tmp_path / "cli.jsonl"
    lines = fixture_lines("okx.txt")

    async def main() -> int:
        async with local_server(_serve_then_hold(lines)) as (url, _):
            code = (
                "import sys, argparse\n"
                "from connectors.sources.recorder import add_arguments, run\n"
                "p = argparse.ArgumentParser(); add_arguments(p)\n"
                "sys.exit(run(p.parse_args(sys.argv[1:])))\n"
            )
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", code, "--venue", "okx", "--symbols", "BTC-USDT-SWAP", "--out", str(out),
                "--channels", "trades", "--url-override", url, "--stats-every", "0",
                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=asyncio.subprocess.PIPE,
            )
            deadline = time.monotonic() + WAIT_S  # a fresh interpreter imports the recorder first
            while time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                if out.exists() and len(out.read_text().splitlines()) == len(lines):
                    break
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), WAIT_S)
            summary = json.loads(err.decode().strip().splitlines()[-1])
            assert summary["lines"] == len(lines) and summary["stop_reason"] == "stopped"
            return proc.returncode

    assert asyncio.run(main()) == 0
    assert [m.raw for m in read_capture(out)] == lines


def test_capture_cli_arguments(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--venue", "okx", "--venue", "bybit", "--symbols", "BTC-USDT-SWAP",
                              "--symbols", "BTCUSDT,ETHUSDT", "--out", str(tmp_path / "x.jsonl"), "--duration", "5"])
    assert args.venue == ["okx", "bybit"] and args.duration == 5.0
    bad = parser.parse_args(["--venue", "okx", "--venue", "bybit", "--symbols", "A", "--symbols", "B",
                             "--symbols", "C", "--out", str(tmp_path / "y.jsonl")])
    assert run_capture(bad) == 2
    assert not (tmp_path / "y.jsonl").exists()


def test_a_failing_consumer_ends_the_feed_instead_of_reconnecting():
    lines = fixture_lines("okx.txt")

    def boom(msg: RawMessage) -> None:
        raise OSError(28, "No space left on device")

    async def main() -> None:
        async with local_server(_serve_then_hold(lines)) as (url, conns):
            feed = LiveFeed("okx", ["BTC-USDT-SWAP"], ["trades"], fast(), url, boom)
            with pytest.raises(HandlerError, match="No space left"):
                await asyncio.wait_for(feed.run(asyncio.Event()), WAIT_S)
        assert len(conns) == 1 and feed.summary()["disconnects"] == 0

    arun(main())


def test_recorded_okx_session_routes_through_the_normalizer_with_every_frame_accounted(tmp_path):
    """Record -> read back -> route(): trades normalize, the pong is ignored, garbage is dead-lettered."""
    from connectors.exchanges import normalizer_for
    from connectors.normalize import route

    lines = fixture_lines("okx.txt")  # 5 real OKX v5 trade pushes, one trade each
    out = tmp_path / "okx.jsonl"

    async def handler(conn: ServerConn) -> None:
        await conn.next_frame()  # subscription
        for line in lines:
            await conn.ws.send(line)
        await conn.ws.send("pong")
        await conn.ws.send("<html>502 Bad Gateway</html>")

    async def main() -> None:
        async with local_server(handler) as (url, _):
            stop = asyncio.Event()
            task = asyncio.create_task(record(["okx"], ["BTC-USDT-SWAP"], out, None, stop, channels=["trades"],
                                              config=fast(), url_override=url, flush_interval_s=0.05))
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline and not (out.exists() and len(out.read_text().splitlines()) == 7):
                await asyncio.sleep(0.05)
            stop.set()
            await task

    arun(main())
    normalizer = normalizer_for("okx")
    outcomes = [route(normalizer, m.raw, m.received_at_us, m.source) for m in read_capture(out)]
    assert len(outcomes) == 7
    assert [len(o.records) for o in outcomes[:5]] == [1, 1, 1, 1, 1]
    assert outcomes[5].ignored is not None and not outcomes[5].records  # OKX's text "pong" keep-alive answer
    assert outcomes[6].dead is not None and not outcomes[6].records

