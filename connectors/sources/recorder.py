"""``liqstream capture``: record what the live clients receive to a JSONL capture.

Every websocket frame and every REST poll body is written as one liqstream JSONL
line (``{"exchange","received_at","raw"[,"channel"]}``, gzip when the file name ends
in ``.gz``) by :class:`connectors.sources.capture.CaptureWriter`, in arrival order,
so ``liqstream normalize`` / replay can later run the same day through the
normalizers. Nothing is filtered: subscription acks, pongs and garbage are recorded
too, because the capture is the evidence of what the venue sent.

The file is flushed every ``flush_interval_s`` (gzip: a sync flush, so a
crash loses at most that interval and the file stays readable up to the last flush).
Recording stops cleanly on SIGINT/SIGTERM, when ``duration_s`` has elapsed, or when
``stop_event`` is set: connections are closed, the poller ends, the file is closed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from connectors.sources.capture import CaptureWriter, RawMessage
from connectors.sources.live.client import LiveConfig, LiveFeed
from connectors.sources.live.poller import (
    REST_BASES,
    RestPoller,
    depth_snapshot_urls,
    open_interest_urls,
    tag_depth_symbol,
)
from connectors.sources.live.venues import ALL_CHANNELS, SPECS

log = logging.getLogger(__name__)


@dataclass
class RecordResult:
    """What a recording wrote and how the feeds behaved."""

    path: Path
    lines: int = 0
    lines_by_venue: Counter = field(default_factory=Counter)
    elapsed_s: float = 0.0
    stop_reason: str = ""
    feeds: dict[str, dict] = field(default_factory=dict)
    pollers: dict[str, dict] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "path": str(self.path), "lines": self.lines, "lines_by_venue": dict(self.lines_by_venue),
            "elapsed_s": round(self.elapsed_s, 3), "stop_reason": self.stop_reason,
            "feeds": self.feeds, "pollers": self.pollers,
        }


def _symbols_by_venue(venues: Sequence[str], symbols: Sequence[str] | Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    if isinstance(symbols, Mapping):
        missing = [v for v in venues if not symbols.get(v)]
        if missing:
            raise ValueError(f"no symbols for venue(s) {missing}")
        return {v: list(symbols[v]) for v in venues}
    return {v: list(symbols) for v in venues}


async def record(
    venues: Sequence[str],
    symbols: Sequence[str] | Mapping[str, Sequence[str]],
    out_path: str | Path,
    duration_s: float | None = None,
    stop_event: asyncio.Event | None = None,
    *,
    channels: Iterable[str] = ALL_CHANNELS,
    config: LiveConfig | None = None,
    url_override: str | None = None,
    oi_poll_interval_s: float | None = 10.0,
    book_snapshot_interval_s: float | None = 60.0,
    rest_url_override: str | None = None,
    flush_interval_s: float = 1.0,
    progress: Callable[[dict], None] | None = None,
    progress_interval_s: float = 60.0,
) -> RecordResult:
    """Record ``venues`` to ``out_path`` until ``duration_s`` passes or ``stop_event`` is set.

    ``symbols`` is one list of venue symbols for every venue, or a mapping
    venue -> symbols. ``url_override`` points every websocket at one URL (a local test
    server, a relay); ``rest_url_override`` does the same for REST polls.
    ``oi_poll_interval_s`` = None or 0 disables the open-interest REST poll;
    ``book_snapshot_interval_s`` the same for Binance's depth snapshots (the ``book`` channel's
    diff-depth books sync from them: without the poll they never sync).
    ``progress`` is called every ``progress_interval_s`` with running counters.
    """
    unknown = [v for v in venues if v not in SPECS]
    if unknown:
        raise ValueError(f"no live feed for venue(s) {unknown}; known: {sorted(SPECS)}")
    per_venue = _symbols_by_venue(venues, symbols)
    channels = tuple(channels)
    stop = stop_event or asyncio.Event()
    result = RecordResult(Path(out_path))
    started = time.monotonic()

    with CaptureWriter(out_path) as writer:

        def write(msg: RawMessage) -> None:
            # Frames are stored as received (a string), never re-serialised, so replay
            # hands the normalizers byte-identical text.
            writer.write(msg.venue, msg.received_at_us, msg.raw, msg.channel)
            result.lines_by_venue[msg.venue] += 1

        feeds = [LiveFeed(v, per_venue[v], channels, config, url_override, on_message=write) for v in venues]
        pollers: list[RestPoller] = []
        if oi_poll_interval_s and "open_interest" in channels:
            for v in venues:
                if v in REST_BASES:
                    urls = open_interest_urls(v, per_venue[v], rest_url_override)
                    pollers.append(RestPoller(v, urls, oi_poll_interval_s, write))
        if book_snapshot_interval_s and "book" in channels:
            for v in venues:
                urls = depth_snapshot_urls(v, per_venue[v], rest_url_override)
                if urls:
                    pollers.append(RestPoller(v, urls, book_snapshot_interval_s, write,
                                              transform=tag_depth_symbol, label=f"{v}:depth"))

        async def flush_regularly() -> None:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=flush_interval_s)
                _flush(writer)

        async def stop_after(seconds: float) -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=seconds)
            if not stop.is_set():
                result.stop_reason = "duration"
                stop.set()

        async def report_progress() -> None:
            assert progress is not None
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=progress_interval_s)
                progress({
                    "elapsed_s": round(time.monotonic() - started, 1), "lines": writer.count,
                    "feeds": {f.venue: {k: f.summary()[k] for k in ("messages", "disconnects", "gap_seconds")}
                              for f in feeds},
                })

        tasks = [asyncio.create_task(f.run(stop)) for f in feeds]
        if progress is not None and progress_interval_s > 0:
            tasks.append(asyncio.create_task(report_progress()))
        tasks += [asyncio.create_task(p.run(stop)) for p in pollers]
        tasks.append(asyncio.create_task(flush_regularly()))
        if duration_s is not None:
            tasks.append(asyncio.create_task(stop_after(duration_s)))
        stop_waiter = asyncio.create_task(stop.wait())
        failure: BaseException | None = None
        try:
            done, _ = await asyncio.wait([stop_waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stop_waiter and not t.cancelled() and t.exception() is not None:
                    failure = t.exception()
                    result.stop_reason = "error"
        finally:
            stop.set()
            stop_waiter.cancel()
            done = await asyncio.gather(*tasks, return_exceptions=True)
            for outcome in done:
                if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
                    log.error("capture task failed: %r", outcome)
            result.stop_reason = result.stop_reason or "stopped"
            result.lines = writer.count
            result.elapsed_s = time.monotonic() - started
            result.feeds = {f.venue: f.summary() for f in feeds}
            result.pollers = {p.label: p.stats.as_dict() for p in pollers}
    if failure is not None:
        raise failure
    return result


def _flush(writer: CaptureWriter) -> None:
    # TextIOWrapper.flush -> GzipFile.flush (Z_SYNC_FLUSH) for .gz: readable up to here.
    flush = getattr(writer, "flush", None)
    if callable(flush):
        flush()
    else:
        writer._fh.flush()  # noqa: SLF001 - CaptureWriter has no public flush yet


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``liqstream capture``."""
    parser.add_argument("--venue", action="append", required=True, choices=sorted(SPECS),
                        help="venue to record; repeat for several venues")
    parser.add_argument("--symbols", action="append", required=True,
                        help="comma-separated venue symbols (BTCUSDT,ETHUSDT); give it once for all venues "
                             "or once per --venue, in the same order")
    parser.add_argument("--out", required=True, help="capture file to write (.gz = gzip)")
    parser.add_argument("--duration", type=float, default=None, help="seconds to record (default: until Ctrl-C)")
    parser.add_argument("--channels", default=",".join(ALL_CHANNELS),
                        help=f"comma-separated subset of {','.join(ALL_CHANNELS)}")
    parser.add_argument("--url-override", default=None,
                        help="connect every websocket to this URL instead of the venue's (local server, proxy)")
    parser.add_argument("--rest-url-override", default=None, help="base URL for REST polls instead of the venue's")
    parser.add_argument("--oi-poll", type=float, default=10.0,
                        help="seconds between Binance openInterest REST polls per symbol; 0 = off")
    parser.add_argument("--book-snapshot-poll", type=float, default=60.0,
                        help="seconds between Binance REST depth snapshots per symbol (the book channel's "
                             "diff-depth books sync from them); 0 = off")
    parser.add_argument("--backoff-max", type=float, default=60.0, help="cap of the reconnect backoff, seconds")
    parser.add_argument("--stats-every", type=float, default=60.0,
                        help="print feed counters to stderr every N seconds; 0 = only at the end")


def _parse_symbols(venues: list[str], symbols: list[str]) -> dict[str, list[str]]:
    lists = [[s.strip() for s in group.split(",") if s.strip()] for group in symbols]
    if len(lists) == 1:
        return {v: lists[0] for v in venues}
    if len(lists) != len(venues):
        raise ValueError("give --symbols once, or once per --venue")
    return dict(zip(venues, lists, strict=True))


def run(args: argparse.Namespace) -> int:
    """Entry point of ``liqstream capture``; returns the process exit code."""
    try:
        per_venue = _parse_symbols(args.venue, args.symbols)
        channels = tuple(c.strip() for c in args.channels.split(",") if c.strip())
    except ValueError as exc:
        print(f"capture: {exc}", file=sys.stderr)
        return 2
    config = LiveConfig(backoff_max_s=args.backoff_max)

    async def main() -> RecordResult:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        return await record(
            args.venue, per_venue, args.out, args.duration, stop, channels=channels, config=config,
            url_override=args.url_override, oi_poll_interval_s=args.oi_poll or None,
            book_snapshot_interval_s=args.book_snapshot_poll or None,
            rest_url_override=args.rest_url_override,
            progress=lambda p: print(f"capture: {json.dumps(p, sort_keys=True)}", file=sys.stderr),
            progress_interval_s=args.stats_every,
        )

    try:
        result = asyncio.run(main())
    except ValueError as exc:
        print(f"capture: {exc}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as exc:  # disk full, unwritable path, handler failure
        print(f"capture: failed: {exc!r}", file=sys.stderr)
        return 1
    summary = result.as_dict()
    for feed in summary["feeds"].values():
        feed.pop("connections", None)
    print(json.dumps(summary, sort_keys=True), file=sys.stderr)
    return 0
