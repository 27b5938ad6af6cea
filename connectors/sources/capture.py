"""Capture files: read (for replay) and write (for recording) raw venue messages.

Two formats are read, optionally gzip-compressed (detected by magic bytes):

* liqstream JSONL: one ``{"exchange": venue, "received_at": <epoch seconds float
  or epoch micros int>, "raw": <the message as received: a JSON value or a string>}``
  per line. This is what ``liqstream capture`` and ``liqstream simulate`` write.
* cryptofeed captures (``../shared/fixtures/exchange-captures``): ``T: JSON`` for a
  received websocket message, ``URL -> T: JSON`` for a REST response,
  ``URL <-> T`` (connection opened) and ``URL <- T: JSON`` (sent by the client)
  which are not market data and are skipped as ``client_line``. The venue comes
  from the file name (``BINANCE_FUTURES.ws.1.0.gz`` -> ``binance-futures``) or
  the caller.

* tardis.dev raw replay files: one ``<ISO local timestamp> <venue JSON>`` line per
  message (``2020-12-18T00:30:58.3740000Z {"table":...}``), as tardis.dev's raw data
  API serves them. The venue comes from the caller or the file name's tardis exchange
  id (``okex-swap_2020-12-18.json.gz`` -> ``okx``; :data:`TARDIS_VENUES`).

Every line yields a :class:`RawMessage` or a :class:`CaptureLineError`; nothing
is dropped without being counted.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import msgspec

#: cryptofeed's exchange ids -> liqstream venue ids
CRYPTOFEED_VENUES = {
    "BINANCE_FUTURES": "binance-futures",
    "BINANCE_DELIVERY": "binance-delivery",
    "BYBIT": "bybit",
    "OKX": "okx",
    "HYPERLIQUID": "hyperliquid",
    "DERIBIT": "deribit",
    "BITMEX": "bitmex",
    "KRAKEN_FUTURES": "kraken-futures",
    "GATEIO_FUTURES": "gateio-futures",
}

#: tardis.dev exchange ids -> liqstream venue ids (tardis names OKX "okex", per market until 2021)
TARDIS_VENUES = {
    "binance-futures": "binance-futures",
    "binance-delivery": "binance-delivery",
    "bybit": "bybit",
    "okex": "okx",
    "okex-swap": "okx",
    "okex-futures": "okx",
    "deribit": "deribit",
    "hyperliquid": "hyperliquid",
}

_decode_json = msgspec.json.Decoder().decode
_TARDIS_LINE = re.compile(r"^(?P<t>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z) (?P<json>.*)$", re.S)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CF_RECEIVED = re.compile(r"^(?P<t>\d+(?:\.\d+)?): (?P<json>.*)$", re.S)
_CF_REST = re.compile(r"^(?P<url>\S+) -> (?P<t>\d+(?:\.\d+)?): (?P<json>.*)$", re.S)
_CF_CLIENT = re.compile(r"^\S+ (?:<->|<-) \d+(?:\.\d+)?")


@dataclass(frozen=True, slots=True)
class RawMessage:
    venue: str
    received_at_us: int
    raw: str  # the message text exactly as received
    source: str  # file:line
    channel: str = "ws"  # ws | rest


@dataclass(frozen=True, slots=True)
class CaptureLineError:
    """A capture line that is not a message at all (counted, dead-lettered as raw)."""

    venue: str | None
    reason: str  # bad_capture_line | client_line | connection_line
    detail: str
    source: str
    raw: str
    received_at_us: int = 0


def open_text(path: str | Path | IO[bytes]) -> IO[str]:
    """Open a capture file (gzip or plain) or a binary stream ('-' = stdin) as text."""
    if isinstance(path, (str, Path)):
        if str(path) == "-":
            import sys

            raw: IO[bytes] = sys.stdin.buffer
        else:
            raw = open(path, "rb")  # noqa: SIM115 - returned to caller
    else:
        raw = path
    buffered = io.BufferedReader(raw) if not hasattr(raw, "peek") else raw
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.GzipFile(fileobj=buffered), encoding="utf-8", errors="replace")
    return io.TextIOWrapper(buffered, encoding="utf-8", errors="replace")


def venue_from_filename(path: str | Path) -> str | None:
    """cryptofeed's ``BINANCE_FUTURES.ws.1.0.gz`` or tardis.dev's ``okex-swap_<...>`` file names."""
    name = Path(str(path)).name
    return CRYPTOFEED_VENUES.get(name.split(".")[0].upper()) or TARDIS_VENUES.get(name.split("_")[0].lower())


def iso_local_us(text: str) -> int:
    """tardis.dev's ISO local timestamp (7 fractional digits: beyond µs is dropped) -> epoch µs, exactly."""
    head, _, frac = text.rstrip("Z").partition(".")
    d = datetime.fromisoformat(head).replace(tzinfo=UTC) - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + int((frac + "000000")[:6])


def _received_us(value: Any) -> int:
    if isinstance(value, int) and value > 10_000_000_000_000:  # already epoch micros
        return value
    return int(round(float(value) * 1_000_000))


def read_capture(path: str | Path, venue: str | None = None, fmt: str = "auto") -> Iterator[RawMessage | CaptureLineError]:
    """Yield every line of a capture file as a message or a counted line error."""
    name = str(path)
    fh = open_text(path)
    with fh:
        first_venue = venue or venue_from_filename(name)
        kind = fmt
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            src = f"{Path(name).name}:{lineno}"
            if kind == "auto":  # the first line decides for the whole file
                kind = "jsonl" if line.startswith("{") else "tardis" if _TARDIS_LINE.match(line) else "cryptofeed"
            if kind == "jsonl":
                yield _jsonl_line(line, src, venue)
            elif kind == "tardis":
                yield _tardis_line(line, src, first_venue)
            else:
                yield _cryptofeed_line(line, src, first_venue)


def _jsonl_line(line: str, src: str, venue: str | None) -> RawMessage | CaptureLineError:
    try:
        try:
            # msgspec (ADR 005) gives json.loads' value wherever it accepts; the stdlib reads the rest
            # (NaN / Infinity, lone surrogate escapes) and raises the errors, as before
            doc = _decode_json(line)
        except (ValueError, RecursionError):
            doc = json.loads(line)
        exchange = venue or doc["exchange"]
        received = _received_us(doc["received_at"])
        raw = doc["raw"]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:  # RecursionError: nested too deep
        return CaptureLineError(venue, "bad_capture_line", f"not a liqstream capture line: {exc}", src, line)
    if not isinstance(exchange, str):
        return CaptureLineError(None, "bad_capture_line", "exchange is not a string", src, line)
    text = raw if isinstance(raw, str) else json.dumps(raw, separators=(",", ":"))
    return RawMessage(exchange, received, text, src, doc.get("channel", "ws"))


def _cryptofeed_line(line: str, src: str, venue: str | None) -> RawMessage | CaptureLineError:
    if venue is None:
        return CaptureLineError(None, "unknown_venue", "cannot tell the venue: pass --venue", src, line)
    if line.startswith(("wss://", "ws://", "https://", "http://")):
        m = _CF_REST.match(line)
        if m:
            return RawMessage(venue, _received_us(m["t"]), m["json"], src, "rest")
        if _CF_CLIENT.match(line):
            return CaptureLineError(venue, "client_line", "connection or client-sent line", src, line)
        return CaptureLineError(venue, "bad_capture_line", "unrecognised URL line", src, line)
    if line.startswith("configuration:"):
        return CaptureLineError(venue, "client_line", "capture configuration line", src, line)
    m = _CF_RECEIVED.match(line)
    if m:
        return RawMessage(venue, _received_us(m["t"]), m["json"], src, "ws")
    return CaptureLineError(venue, "bad_capture_line", "neither 'T: JSON' nor a URL line", src, line)


def _tardis_line(line: str, src: str, venue: str | None) -> RawMessage | CaptureLineError:
    if venue is None:
        return CaptureLineError(None, "unknown_venue", "cannot tell the venue: pass --venue or name the file "
                                "<tardis exchange id>_...", src, line)
    m = _TARDIS_LINE.match(line)
    if m is None:
        return CaptureLineError(venue, "bad_capture_line", "not '<ISO local timestamp> <JSON>'", src, line)
    try:
        received = iso_local_us(m["t"])
    except ValueError as exc:
        return CaptureLineError(venue, "bad_capture_line", f"bad local timestamp: {exc}", src, line)
    return RawMessage(venue, received, m["json"], src, "ws")


class CaptureWriter:
    """Writes liqstream JSONL captures (gzip when the name ends in .gz)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.suffix == ".gz":
            self._fh: IO[str] = io.TextIOWrapper(gzip.open(self.path, "wb", compresslevel=5), encoding="utf-8")
        else:
            self._fh = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
        self.count = 0

    def write(self, venue: str, received_at_us: int, raw: str | dict | list, channel: str = "ws") -> None:
        doc: dict[str, Any] = {"exchange": venue, "received_at": received_at_us / 1e6, "raw": raw}
        if channel != "ws":
            doc["channel"] = channel
        self._fh.write(json.dumps(doc, separators=(",", ":")) + "\n")
        self.count += 1

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
