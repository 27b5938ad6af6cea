"""Instrument metadata: normalized symbols and contract terms, kept apart from parsing.

Every venue normalizer looks its symbols up here to get ``base``, ``quote``,
``kind``, ``expiry`` and the contract terms that turn a venue quantity into
base units and USD. Metadata comes from the venues' instrument endpoints, is
stored as a versioned JSON file per venue in ``connectors/exchanges/instruments/``
(refreshed by ``liqstream instruments refresh``) and bundled, so replay works
offline. A symbol missing from the file falls back to the venue's symbol
grammar (``parse_symbol``) with contract value 1, which is exact for linear
contracts quoted in base units (Binance USDⓈ-M, Bybit linear, Hyperliquid).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

INSTRUMENT_DIR = Path(__file__).resolve().parent / "exchanges" / "instruments"

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
        self._parsed: dict[str, Instrument | None] = {}
        #: symbol -> :data:`TradeTerms` of the instruments the trade fast paths have looked up
        self.trade_terms: dict[str, TradeTerms] = {}

    def get(self, symbol: str) -> Instrument | None:
        inst = self._by_symbol.get(symbol)
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
            row = dict(row)
            row.setdefault("venue", venue)
            inst = Instrument(**row)
            insts[inst.symbol] = inst
        return cls(venue, insts, parse_symbol, doc.get("version"))


def write_instrument_file(venue: str, instruments: list[Instrument], source: str, fetched_at: str,
                          path: Path | None = None) -> Path:
    """Store refreshed metadata (sorted, one instrument per line for readable diffs)."""
    path = path or INSTRUMENT_DIR / f"{venue}.json"
    rows = sorted((asdict(i) for i in instruments), key=lambda r: r["symbol"])
    for r in rows:
        r.pop("venue", None)
    body = ",\n".join("    " + json.dumps(r, sort_keys=True) for r in rows)
    path.write_text(
        "{\n"
        f'  "venue": {json.dumps(venue)},\n'
        f'  "version": {json.dumps(fetched_at)},\n'
        f'  "source": {json.dumps(source)},\n'
        '  "instruments": [\n' + body + "\n  ]\n}\n"
    )
    return path


@cache
def book(venue: str, parse_symbol: Callable[[str], Instrument | None] | None = None) -> InstrumentBook:
    return InstrumentBook.load(venue, parse_symbol)
