"""A venue-agnostic asyncio websocket client: connect, subscribe, keep alive, reconnect.

One :class:`LiveFeed` covers one venue and a list of venue symbols; its
:class:`~connectors.sources.live.venues.VenueSpec` splits them into connections
(:class:`ConnectionPlan`). Each connection loops forever:

    connect -> send the subscription frames -> receive, answering venue heartbeats
            -> lost (closed, reset, handshake refused, stale) -> back off -> reconnect

Every received frame, whatever it holds, is handed on as a
:class:`~connectors.sources.capture.RawMessage` (``source`` = the URL): JSON or not,
text or binary. Deciding what is garbage is the normalizer router's job (it
dead-letters), so the client never drops a frame and never dies on one.

Gap accounting, per connection: ``disconnects`` counts lost connections (after at
least one successful connect), ``failed_connects`` counts attempts that never got
connected, and each outage records a gap from the last frame received before the
loss to the first frame received after the reconnect (``gap_seconds`` sums them;
``gaps`` keeps the most recent intervals in epoch microseconds, so a consumer can tell
which minutes of a capture are incomplete).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from connectors.sources.capture import RawMessage
from connectors.sources.live.venues import ALL_CHANNELS, ConnectionPlan, VenueSpec, spec_for

log = logging.getLogger(__name__)

MessageHandler = Callable[[RawMessage], Awaitable[None] | None]

_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """Connection policy. Defaults suit production; tests shrink the intervals."""

    #: Reconnect delay: initial * factor**attempt, capped at backoff_max_s, then reduced
    #: by up to ``backoff_jitter`` (fraction) at random so that many clients cut at
    #: once (an exchange restart) do not reconnect in lock-step.
    backoff_initial_s: float = 1.0
    backoff_factor: float = 2.0
    backoff_max_s: float = 60.0
    backoff_jitter: float = 0.5
    #: A connection that stayed up this long resets the backoff to its initial value.
    stable_after_s: float = 30.0
    open_timeout_s: float = 10.0
    close_timeout_s: float = 2.0
    #: No frame at all for this long -> the link is presumed dead -> reconnect.
    stale_after_s: float | None = 120.0
    #: Websocket protocol pings (answered by every server); detects half-open TCP links.
    ws_ping_interval_s: float | None = 20.0
    ws_ping_timeout_s: float | None = 20.0
    #: Override the venue's application heartbeat interval (None = the venue's rule).
    heartbeat_interval_s: float | None = None
    max_frame_bytes: int = 16 * 1024 * 1024
    #: Frames waiting for a slow consumer; when full, reading pauses (TCP backpressure)
    #: instead of dropping.
    queue_size: int = 10_000
    #: HTTP proxy for the websocket: True = from the environment (HTTPS_PROXY ...),
    #: None = direct, or a proxy URL. Loopback URLs always connect directly.
    proxy: str | bool | None = True
    #: How many recent gap intervals each connection keeps.
    gaps_kept: int = 1000


def backoff_delay(attempt: int, config: LiveConfig, rng: random.Random | None = None) -> float:
    """Delay before reconnect attempt ``attempt`` (0-based): capped exponential with jitter."""
    base = min(config.backoff_max_s, config.backoff_initial_s * config.backoff_factor ** min(attempt, 64))
    r = (rng or random).random()
    return base * (1.0 - config.backoff_jitter * r)


@dataclass
class ConnectionStats:
    """Counters for one connection (one :class:`ConnectionPlan`)."""

    venue: str
    label: str
    url: str
    connects: int = 0
    disconnects: int = 0
    failed_connects: int = 0
    stale_reconnects: int = 0
    heartbeat_timeouts: int = 0
    messages: int = 0
    bytes: int = 0
    binary_frames: int = 0
    heartbeats_sent: int = 0
    heartbeat_replies: int = 0
    replies_sent: int = 0
    subscribe_frames_sent: int = 0
    gap_seconds: float = 0.0
    gaps: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=1000))
    #: Start (epoch us) of the outage in progress, None when data is flowing.
    gap_open_since_us: int | None = None
    last_message_us: int | None = None
    last_error: str | None = None
    connected: bool = False

    def as_dict(self) -> dict:
        d = asdict(self)
        d["gaps"] = [list(g) for g in self.gaps]
        return d


#: Counters summed over a venue's connections by :meth:`LiveFeed.summary`.
_SUMMED = (
    "connects", "disconnects", "failed_connects", "stale_reconnects", "heartbeat_timeouts", "messages",
    "bytes", "binary_frames", "heartbeats_sent", "heartbeat_replies", "replies_sent", "subscribe_frames_sent",
)


class HandlerError(RuntimeError):
    """The consumer's ``on_message`` raised: ends :meth:`LiveFeed.run` instead of reconnecting."""


def _decode_binary(frame: bytes) -> str:
    # A binary frame holding UTF-8 text (some proxies re-frame) stays readable; anything
    # else is mapped byte-for-byte to latin-1 so no information is lost in the capture.
    try:
        return frame.decode("utf-8")
    except UnicodeDecodeError:
        return frame.decode("latin-1")


class LiveFeed:
    """Live websocket feed of one venue: connections, heartbeats, reconnects, counters.

    Use either a handler (``LiveFeed(..., on_message=f)`` then ``await feed.run(stop)``)
    or iterate (``async for msg in feed.messages(stop): ...``).
    """

    def __init__(
        self,
        venue: str,
        symbols: Sequence[str],
        channels: Iterable[str] = ALL_CHANNELS,
        config: LiveConfig | None = None,
        url_override: str | None = None,
        on_message: MessageHandler | None = None,
        spec: VenueSpec | None = None,
    ) -> None:
        if not symbols:
            raise ValueError(f"{venue}: no symbols to subscribe to")
        self.venue = venue
        self.spec = spec or spec_for(venue)
        self.config = config or LiveConfig()
        self.plans: list[ConnectionPlan] = self.spec.plans(list(symbols), channels, url_override)
        self.stats: dict[str, ConnectionStats] = {
            p.label: ConnectionStats(venue, p.label, p.url, gaps=deque(maxlen=self.config.gaps_kept)) for p in self.plans
        }
        self._on_message = on_message
        self._queue: asyncio.Queue[RawMessage] | None = None
        self._last_rx: dict[str, float] = {p.label: 0.0 for p in self.plans}
        self._stop = asyncio.Event()
        self._rng = random.Random()

    # ------------------------------------------------------------------ public API

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run every connection until ``stop`` (or :meth:`stop`) is set; then close cleanly.

        Network trouble never ends this; an exception raised by ``on_message`` does
        (after closing every connection), because it is a consumer bug or a full disk,
        which reconnecting would not cure.
        """
        self._stop = asyncio.Event()
        tasks = [asyncio.create_task(self._run_connection(p), name=f"{self.venue}:{p.label}") for p in self.plans]
        waiters = [asyncio.create_task(self._stop.wait())]
        if stop is not None:
            waiters.append(asyncio.create_task(stop.wait()))
        failed: BaseException | None = None
        try:
            done, _ = await asyncio.wait([*waiters, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t in tasks and not t.cancelled() and t.exception() is not None:
                    failed = t.exception()
        finally:
            self._stop.set()
            for w in waiters:
                w.cancel()
            # Connections see _stop between frames; cancel those blocked in recv/backoff.
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, *waiters, return_exceptions=True)
            for st in self.stats.values():
                st.connected = False
                if st.gap_open_since_us is not None:
                    log.info("%s %s stopped during a gap open since %d", self.venue, st.label, st.gap_open_since_us)
        if failed is not None:
            raise failed

    def stop(self) -> None:
        """Stop a running feed (a call before :meth:`run` has no effect: run starts afresh)."""
        self._stop.set()

    async def messages(self, stop: asyncio.Event | None = None) -> AsyncIterator[RawMessage]:
        """Iterate over received frames while the feed runs in the background."""
        if self._on_message is not None:
            raise RuntimeError("messages() needs a LiveFeed built without on_message")
        self._queue = asyncio.Queue(self.config.queue_size)
        runner = asyncio.create_task(self.run(stop))
        try:
            while True:
                get = asyncio.create_task(self._queue.get())
                done, _ = await asyncio.wait({get, runner}, return_when=asyncio.FIRST_COMPLETED)
                if get in done:
                    yield get.result()
                    continue
                get.cancel()
                while not self._queue.empty():  # drain what arrived before the stop
                    yield self._queue.get_nowait()
                return
        finally:
            self._stop.set()
            await asyncio.gather(runner, return_exceptions=True)

    def summary(self) -> dict:
        """Per-venue totals plus per-connection detail (JSON-serialisable)."""
        total: dict = {k: sum(getattr(s, k) for s in self.stats.values()) for k in _SUMMED}
        total["venue"] = self.venue
        total["gap_seconds"] = round(sum(s.gap_seconds for s in self.stats.values()), 6)
        total["connections"] = {label: s.as_dict() for label, s in self.stats.items()}
        return total

    # ------------------------------------------------------------------ internals

    async def _deliver(self, msg: RawMessage) -> None:
        if self._on_message is not None:
            result = self._on_message(msg)
            if inspect.isawaitable(result):
                await result
        elif self._queue is not None:
            await self._queue.put(msg)

    def _proxy_for(self, url: str) -> str | bool | None:
        host = urlsplit(url).hostname or ""
        return None if host in _LOOPBACK_HOSTS else self.config.proxy

    async def _run_connection(self, plan: ConnectionPlan) -> None:
        st = self.stats[plan.label]
        cfg = self.config
        attempt = 0
        while not self._stop.is_set():
            started = time.monotonic()
            was_connected = False
            try:
                async with connect(
                    plan.url,
                    open_timeout=cfg.open_timeout_s,
                    close_timeout=cfg.close_timeout_s,
                    ping_interval=cfg.ws_ping_interval_s,
                    ping_timeout=cfg.ws_ping_timeout_s,
                    max_size=cfg.max_frame_bytes,
                    proxy=self._proxy_for(plan.url),
                ) as ws:
                    was_connected = True
                    st.connected = True
                    st.connects += 1
                    self._last_rx[plan.label] = time.monotonic()
                    for frame in plan.subscribe:
                        await ws.send(frame)
                        st.subscribe_frames_sent += 1
                    await self._serve(ws, plan, st)
            except (asyncio.CancelledError, HandlerError):
                raise
            except ConnectionClosed as exc:
                st.last_error = f"closed: {exc}"
            except Exception as exc:  # noqa: BLE001 - refused, reset, DNS, bad handshake: all mean "retry"
                st.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                st.connected = False
            if self._stop.is_set():
                break
            if was_connected:
                st.disconnects += 1
                if st.gap_open_since_us is None:
                    st.gap_open_since_us = st.last_message_us or time.time_ns() // 1000
            else:
                st.failed_connects += 1
            if time.monotonic() - started >= cfg.stable_after_s:
                attempt = 0
            delay = backoff_delay(attempt, cfg, self._rng)
            attempt += 1
            log.warning("%s %s lost (%s); reconnect in %.2fs", self.venue, plan.label, st.last_error, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=delay)

    async def _serve(self, ws: ClientConnection, plan: ConnectionPlan, st: ConnectionStats) -> None:
        hb_task = asyncio.create_task(self._heartbeat(ws, plan, st)) if plan.heartbeat else None
        try:
            await self._receive(ws, plan, st)
        finally:
            if hb_task is not None:
                hb_task.cancel()
                await asyncio.gather(hb_task, return_exceptions=True)

    async def _receive(self, ws: ClientConnection, plan: ConnectionPlan, st: ConnectionStats) -> None:
        spec = self.spec
        stale = self.config.stale_after_s
        while not self._stop.is_set():
            try:
                if stale:
                    frame = await asyncio.wait_for(ws.recv(), timeout=stale)
                else:
                    frame = await ws.recv()
            except TimeoutError:
                st.stale_reconnects += 1
                st.last_error = f"no frame for {stale}s"
                await ws.close(code=1001, reason="stale")
                return
            now_us = time.time_ns() // 1000
            self._last_rx[plan.label] = time.monotonic()
            if isinstance(frame, str):
                text = frame
                st.bytes += len(text)
            else:
                text = _decode_binary(frame)
                st.binary_frames += 1
                st.bytes += len(frame)
            st.messages += 1
            if st.gap_open_since_us is not None:
                st.gaps.append((st.gap_open_since_us, now_us))
                st.gap_seconds += (now_us - st.gap_open_since_us) / 1e6
                st.gap_open_since_us = None
            st.last_message_us = now_us
            for reply in spec.replies(text):
                await ws.send(reply)
                st.replies_sent += 1
            if spec.is_heartbeat_reply(text):
                st.heartbeat_replies += 1
            try:
                await self._deliver(RawMessage(self.venue, now_us, text, plan.url, "ws"))
            except Exception as exc:
                raise HandlerError(f"{self.venue} message handler failed: {exc!r}") from exc

    async def _heartbeat(self, ws: ClientConnection, plan: ConnectionPlan, st: ConnectionStats) -> None:
        hb = plan.heartbeat
        assert hb is not None
        interval = self.config.heartbeat_interval_s or hb.interval_s
        last_sent = time.monotonic()
        ping_sent_at: float | None = None
        try:
            while True:
                now = time.monotonic()
                last_rx = self._last_rx[plan.label]
                if hb.mode == "idle":
                    if ping_sent_at is not None and last_rx < ping_sent_at:
                        # OKX rule: a ping sent when idle must be answered within N seconds.
                        if now - ping_sent_at >= interval:
                            st.heartbeat_timeouts += 1
                            st.last_error = f"no answer to heartbeat within {interval}s"
                            await ws.close(code=1001, reason="heartbeat timeout")
                            return
                        due = ping_sent_at + interval
                    else:
                        due = last_rx + interval
                else:
                    due = last_sent + interval
                if due > now:
                    await asyncio.sleep(due - now)
                    continue
                await ws.send(hb.message)
                st.heartbeats_sent += 1
                last_sent = ping_sent_at = time.monotonic()
        except ConnectionClosed:
            return
