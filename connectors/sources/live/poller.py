"""REST polls for data a venue does not push on its websocket.

Binance (USDⓈ-M and COIN-M) has no open-interest stream: ``GET /fapi/v1/openInterest``
and ``GET /dapi/v1/openInterest`` return the current OI of one symbol (request
weight 1). :class:`RestPoller` fetches a list of URLs every ``interval_s`` with
:mod:`urllib` in a thread executor (a blocking call must not stall the websocket
event loop) and hands each response body on as a ``RawMessage`` with
``channel="rest"`` and ``source`` = the URL, exactly like a capture's REST line.
Failures are counted per reason and never raised: a poll that fails is a gap in
open interest, not a reason to stop recording trades.

Binance's diff-depth books start from a REST snapshot (``GET /fapi/v1/depth`` /
``/dapi/v1/depth``, ``limit=1000``, weight 20): :func:`depth_snapshot_urls`, polled every
``book_snapshot_interval_s`` (a snapshot a book in sync does not need is ignored; one after a
gap resyncs it, connectors/book.py). The USDⓈ-M response carries no symbol, so
:func:`tag_depth_symbol` writes the URL's symbol into the body as its first field (COIN-M's
has its own ``symbol`` and is left as it is).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote, urlsplit

from connectors.sources.capture import RawMessage
from connectors.sources.live.client import MessageHandler

#: REST bases of the venues whose open interest is polled.
REST_BASES = {
    "binance-futures": ("https://fapi.binance.com", "/fapi/v1/openInterest"),
    "binance-delivery": ("https://dapi.binance.com", "/dapi/v1/openInterest"),
}

#: REST depth-snapshot endpoints of the venues whose diff-depth books sync from one
DEPTH_PATHS = {"binance-futures": "/fapi/v1/depth", "binance-delivery": "/dapi/v1/depth"}
#: levels per side of a depth snapshot (1000: the deepest Binance serves, weight 20)
DEPTH_SNAPSHOT_LIMIT = 1000

USER_AGENT = "liqstream/0.1 (+capture)"


def open_interest_urls(venue: str, symbols: Sequence[str], base_override: str | None = None) -> list[str]:
    """The openInterest URL of every symbol (Binance wants the symbol upper-case)."""
    if venue not in REST_BASES:
        return []
    base, path = REST_BASES[venue]
    base = (base_override or base).rstrip("/")
    return [f"{base}{path}?symbol={quote(s.upper())}" for s in symbols]


def depth_snapshot_urls(venue: str, symbols: Sequence[str], base_override: str | None = None,
                        limit: int = DEPTH_SNAPSHOT_LIMIT) -> list[str]:
    """The REST depth-snapshot URL of every symbol (empty for a venue whose books need none)."""
    if venue not in DEPTH_PATHS:
        return []
    base = (base_override or REST_BASES[venue][0]).rstrip("/")
    return [f"{base}{DEPTH_PATHS[venue]}?symbol={quote(s.upper())}&limit={limit}" for s in symbols]


def tag_depth_symbol(url: str, body: str) -> str:
    """A depth snapshot body with ``"symbol"`` (from ``url``'s query) as its first field when it has none."""
    symbol = parse_qs(urlsplit(url).query).get("symbol", [None])[0]
    text = body.lstrip()
    if symbol is None or not text.startswith("{") or '"symbol"' in text[:400]:
        return body
    rest = text[1:].lstrip()
    return '{"symbol":' + json.dumps(symbol) + ("" if rest.startswith("}") else ",") + rest


@dataclass
class PollerStats:
    venue: str
    requests: int = 0
    ok: int = 0
    errors: Counter = field(default_factory=Counter)
    last_error: str | None = None

    def as_dict(self) -> dict:
        return {"venue": self.venue, "requests": self.requests, "ok": self.ok,
                "errors": dict(self.errors), "last_error": self.last_error}


def _fetch(url: str, timeout_s: float) -> tuple[int, str, float | None]:
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - fixed https venue URLs
            return resp.status, resp.read().decode("utf-8", errors="replace"), None
    except urllib.error.HTTPError as exc:
        retry_after = exc.headers.get("Retry-After") if exc.headers else None
        body = exc.read().decode("utf-8", errors="replace") if exc.fp else ""
        try:
            wait = float(retry_after) if retry_after else None
        except ValueError:
            wait = None
        return exc.code, body, wait


class RestPoller:
    """Poll ``urls`` every ``interval_s``; deliver each 2xx body to ``on_message``."""

    def __init__(
        self,
        venue: str,
        urls: Sequence[str],
        interval_s: float,
        on_message: MessageHandler,
        timeout_s: float = 10.0,
        transform: Callable[[str, str], str] | None = None,
        label: str | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.venue = venue
        self.urls = list(urls)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.on_message = on_message
        #: (url, body) -> the body delivered (e.g. :func:`tag_depth_symbol`); None: as received
        self.transform = transform
        #: names the poller in a capture's summary (default: the venue)
        self.label = label or venue
        self.stats = PollerStats(venue)

    async def poll_once(self) -> float | None:
        """Fetch every URL once; returns a Retry-After the venue asked for, if any."""
        loop = asyncio.get_running_loop()
        retry_after: float | None = None
        for url in self.urls:
            self.stats.requests += 1
            try:
                status, body, wait = await loop.run_in_executor(None, _fetch, url, self.timeout_s)
            except Exception as exc:  # noqa: BLE001 - DNS, refused, timeout, TLS: counted, polled again later
                self.stats.errors[type(exc).__name__] += 1
                self.stats.last_error = f"{url}: {type(exc).__name__}: {exc}"
                continue
            if not 200 <= status < 300:
                # 429 = rate limited, 418 = IP banned after ignoring 429s (Binance): back off.
                self.stats.errors[f"http_{status}"] += 1
                self.stats.last_error = f"{url}: HTTP {status} {body[:200]}"
                if wait is not None:
                    retry_after = max(retry_after or 0.0, wait)
                continue
            self.stats.ok += 1
            if self.transform is not None:
                body = self.transform(url, body)
            result = self.on_message(RawMessage(self.venue, time.time_ns() // 1000, body, url, "rest"))
            if inspect.isawaitable(result):
                await result
        return retry_after

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; one cycle every ``interval_s`` (or Retry-After)."""
        while not stop.is_set():
            started = time.monotonic()
            retry_after = await self.poll_once()
            delay = max(self.interval_s - (time.monotonic() - started), retry_after or 0.0, 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
