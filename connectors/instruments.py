"""Instrument metadata: normalized symbols and contract terms, kept apart from parsing.

Every venue normalizer looks its symbols up here to get ``base``, ``quote``,
``kind``, ``expiry`` and the contract terms that turn a venue quantity into
base units and USD. Metadata comes from the venues' instrument endpoints, is
stored as a versioned JSON file per venue in ``connectors/exchanges/instruments/``
(refreshed by ``liqstream instruments refresh``) and bundled, so replay works
offline. A symbol missing from the file falls back to the venue's symbol
grammar (``parse_symbol``) with contract value 1, which is exact for linear
contracts quoted in base units (Binance USDⓈ-M, Bybit linear, Hyperliquid).

Instrument history (ADR 014). A backfill of an old day needs the terms of
instruments that have since expired and left the venue's listing, so a refresh
never forgets: an instrument the new listing no longer holds, or holds with other
terms, moves to the file's ``history`` with ``listed_until`` = the refresh that
no longer saw it (the key is instrument + listing period). Lookups try the
current listing, then the history (the latest period of that symbol), then the
venue's grammar.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

INSTRUMENT_DIR = Path(__file__).resolve().parent / "exchanges" / "instruments"

#: What an unknown-instrument dead letter tells the operator to run (venue filled in).
REFRESH_HINT = "run `liqstream instruments refresh {venue}` to bring its metadata up to date"

#: Aliases some venues use for a base asset.
BASE_ALIASES = {"XBT": "BTC"}
#: Quote currencies treated as USD 1:1 for notional_usd (documented in connectors/README.md).
USD_QUOTES = frozenset({"USD", "USDT", "USDC", "BUSD", "FDUSD", "USDE"})


def normalize_asset(asset: str) -> str:
    a = asset.upper()
    return BASE_ALIASES.get(a, a)


@dataclass(frozen=True, slots=True)
class Instrument:
    venue: str
    symbol: str
    base: str
    quote: str
    kind: str  # perpetual | future | spot | option
    expiry_ms: int | None = None
    #: Linear: base units per contract (OKX ctVal, 1 where quantities are already in base units).
    #: Inverse: USD per contract (Binance COIN-M contract size, Bybit/Deribit inverse = 1 or 10 USD).
    contract_value: float = 1.0
    inverse: bool = False

    def to_base_and_usd(self, price: float, qty: float) -> tuple[float, float]:
        """A venue quantity (contracts or base units) at ``price`` -> (base units, USD notional)."""
        if self.inverse:
            usd = qty * self.contract_value
            return usd / price, usd
        size = qty * self.contract_value
        return size, size * price

    def trade(self, price: float, qty: float, event_us: int, received_us: int, trade_id: Any,
              taker_side: str) -> tuple[str, dict]:
        """The checked path's ``("trade", record)`` of one venue trade: ``qty`` in the venue's unit
        (contracts or base units), ``trade_id`` as sent (None: no id)."""
        size, usd = self.to_base_and_usd(price, qty)
        return "trade", {
            **self.common_fields(),
            "event_time": event_us,
            "ingest_time": received_us,
            "trade_id": None if trade_id is None else str(trade_id),
            "price": price,
            "size": size,
            "notional_usd": usd,
            "taker_side": taker_side,
        }

    def common_fields(self) -> dict:
        """The leading fields every normalized record shares."""
        return {
            "exchange": self.venue,
            "symbol": self.symbol,
            "base": self.base,
            "quote": self.quote,
            "kind": self.kind,
            "expiry": self.expiry_ms,
        }


#: (exchange, symbol, base, quote, kind, expiry_ms, contract_value, inverse) of an Instrument
TradeTerms = tuple[str, str, str, str, str, int | None, float, bool]


class InstrumentBook:
    """Instruments of one venue: bundled metadata first, the symbol grammar as fallback."""

    def __init__(
        self,
        venue: str,
        instruments: dict[str, Instrument],
        parse_symbol: Callable[[str], Instrument | None] | None = None,
        version: str | None = None,
    ) -> None:
        self.venue = venue
        self._by_symbol = instruments
        self._parse_symbol = parse_symbol
        self.version = version
        #: symbol -> the instrument of its latest listing period among those no longer listed
        self.history: dict[str, Instrument] = {}
        self._parsed: dict[str, Instrument | None] = {}
        #: symbol -> :data:`TradeTerms` of the instruments the trade fast paths have looked up
        self.trade_terms: dict[str, TradeTerms] = {}

    def get(self, symbol: str) -> Instrument | None:
        inst = self._by_symbol.get(symbol)
        if inst is not None:
            return inst
        inst = self.history.get(symbol)
        if inst is not None:
            return inst
        if symbol not in self._parsed:
            self._parsed[symbol] = self._parse_symbol(symbol) if self._parse_symbol else None
        return self._parsed[symbol]

    def fill_trade_terms(self, symbol: str) -> TradeTerms | None:
        """Look ``symbol`` up and remember its terms in :attr:`trade_terms` (None: unknown symbol).

        The venues' trade fast paths read ``book.trade_terms.get(symbol)`` first: one
        dict lookup per trade instead of an Instrument's attributes and ``common_fields()``.
        """
        inst = self.get(symbol)
        if inst is None:
            return None
        terms = self.trade_terms[symbol] = (inst.venue, inst.symbol, inst.base, inst.quote, inst.kind,
                                            inst.expiry_ms, inst.contract_value, inst.inverse)
        return terms

    def set_parser(self, parse_symbol: Callable[[str], Instrument | None]) -> None:
        """Replace the grammar fallback (a venue whose grammar reads the book itself sets it after loading)."""
        self._parse_symbol = parse_symbol
        self._parsed.clear()

    def known(self) -> list[Instrument]:
        """Every instrument of the file: the current listing and the latest period of each expired one."""
        return [*self._by_symbol.values(), *(i for s, i in self.history.items() if s not in self._by_symbol)]

    def __len__(self) -> int:
        return len(self._by_symbol)

    def __iter__(self):
        """The bundled instruments (not the ones parsed from symbols on the fly)."""
        return iter(self._by_symbol.values())

    @classmethod
    def load(cls, venue: str, parse_symbol: Callable[[str], Instrument | None] | None = None,
             path: Path | None = None) -> InstrumentBook:
        path = path or INSTRUMENT_DIR / f"{venue}.json"
        if not path.exists():
            return cls(venue, {}, parse_symbol, None)
        doc = json.loads(path.read_text())
        insts = {}
        for row in doc["instruments"]:
            inst = _instrument_of(venue, row)
            insts[inst.symbol] = inst
        book = cls(venue, insts, parse_symbol, doc.get("version"))
        # periods sorted by listed_until: the last one of a symbol wins
        for row in sorted(doc.get("history", []), key=lambda r: (r["symbol"], r["listed_until"])):
            book.history[row["symbol"]] = _instrument_of(venue, row)
        return book


def _instrument_of(venue: str, row: dict) -> Instrument:
    row = {k: v for k, v in row.items() if k != "listed_until"}
    row.setdefault("venue", venue)
    return Instrument(**row)


def _row(inst: Instrument) -> dict:
    r = asdict(inst)
    r.pop("venue", None)
    return r


def merge_history(old_doc: dict | None, instruments: list[Instrument], fetched_at: str) -> list[dict]:
    """The history rows of a refreshed file: the old history, plus every instrument of the old listing
    that the new one lacks or lists with other terms (``listed_until`` = this refresh). Never shrinks."""
    if not old_doc:
        return []
    history = [dict(r) for r in old_doc.get("history", [])]
    seen = {json.dumps({k: v for k, v in r.items() if k != "listed_until"}, sort_keys=True) for r in history}
    new_rows = {i.symbol: _row(i) for i in instruments}
    for row in old_doc.get("instruments", []):
        row = {k: v for k, v in row.items() if k != "venue"}
        if new_rows.get(row["symbol"]) == row:
            continue  # still listed with the same terms
        key = json.dumps(row, sort_keys=True)
        if key not in seen:
            seen.add(key)
            history.append({**row, "listed_until": fetched_at})
    return sorted(history, key=lambda r: (r["symbol"], r["listed_until"]))


def write_instrument_file(venue: str, instruments: list[Instrument], source: str, fetched_at: str,
                          path: Path | None = None) -> Path:
    """Store refreshed metadata (sorted, one instrument per line for readable diffs)."""
    path = path or INSTRUMENT_DIR / f"{venue}.json"
    old_doc = json.loads(path.read_text()) if path.exists() else None
    history = merge_history(old_doc, instruments, fetched_at)
    rows = sorted((_row(i) for i in instruments), key=lambda r: r["symbol"])
    body = ",\n".join("    " + json.dumps(r, sort_keys=True) for r in rows)
    text = (
        "{\n"
        f'  "venue": {json.dumps(venue)},\n'
        f'  "version": {json.dumps(fetched_at)},\n'
        f'  "source": {json.dumps(source)},\n'
        '  "instruments": [\n' + body + "\n  ]"
    )
    if history:
        text += ',\n  "history": [\n' + ",\n".join("    " + json.dumps(r, sort_keys=True) for r in history) + "\n  ]"
    path.write_text(text + "\n}\n")
    return path


@cache
def book(venue: str, parse_symbol: Callable[[str], Instrument | None] | None = None) -> InstrumentBook:
    return InstrumentBook.load(venue, parse_symbol)
