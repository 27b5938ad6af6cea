"""tardis.dev downloadable CSV datasets -> normalized records (``liqstream backfill --source tardis``).

tardis.dev sells its archives as gzipped CSV files, one per exchange, data type, day and symbol,
named ``<exchange>_<data type>_<YYYY-MM-DD>_<symbol>.csv.gz`` (tardis-dev's ``downloadDatasets``).
The data types liqstream reads, by the columns tardis documents (read by name, so order is free):

* ``trades``: ``exchange, symbol, timestamp, local_timestamp, id, side, price, amount`` -> Trade.
  ``side`` is the taker's (``buy``/``sell``; ``unknown`` cannot be a Trade: dead letter).
* ``liquidations``: same columns -> Liquidation. tardis's ``side`` is the liquidation ORDER's:
  ``sell`` closes a **long**, ``buy`` a **short**; ``id`` -> ``order_id``.
* ``derivative_ticker``: ``exchange, symbol, timestamp, local_timestamp, funding_timestamp,
  funding_rate, predicted_funding_rate, open_interest, last_price, index_price, mark_price`` ->
  Funding (when ``mark_price`` is given; a dated future's funding is null) and OpenInterest (when
  ``open_interest`` is given; converted at the row's mark price, else its last price).

``timestamp`` (the exchange's time) and ``local_timestamp`` (tardis's receive time) are epoch
microseconds -> ``event_time`` / ``ingest_time``. ``amount`` and ``open_interest`` are "as
provided by the exchange": contracts where the venue counts contracts, converted with the same
instrument terms as the venue normalizers (``Instrument.to_base_and_usd``), so a day from tardis
lands in the same units as the same day from a capture. Known difference: for Binance
``liquidations`` tardis's ``price`` is the order price ``p``, where liqstream's forceOrder reading
takes the average fill price ``ap``.

Every row ends in exactly one place, as with :func:`connectors.normalize.route`: records, or a
dead letter whose ``source`` is ``<file>:<line>`` (a row with a broken or missing value, an unknown
symbol, a file whose name or header is not a tardis dataset's).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from connectors.exchanges import normalizer_for
from connectors.instruments import REFRESH_HINT, USD_QUOTES, Instrument
from connectors.normalize import DeadLetter, Malformed, Normalized, Outcome, to_epoch_us, to_float
from connectors.sources.capture import TARDIS_VENUES, open_text

#: tardis data type -> liqstream event type of a dead letter, and the columns each row must have
DATA_TYPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "trades": ("trade", ("symbol", "timestamp", "local_timestamp", "side", "price", "amount")),
    "liquidations": ("liquidation", ("symbol", "timestamp", "local_timestamp", "side", "price", "amount")),
    "derivative_ticker": ("funding", ("symbol", "timestamp", "local_timestamp", "mark_price", "open_interest")),
}
_LIQUIDATED = {"sell": "long", "buy": "short"}


def dataset_of(path: str | Path) -> tuple[str, str] | None:
    """(liqstream venue, tardis data type) from a tardis dataset file name, else None."""
    name = Path(str(path)).name
    exchange, _, rest = name.partition("_")
    venue = TARDIS_VENUES.get(exchange)
    if venue is None:
        return None
    data_type = next((t for t in DATA_TYPES if rest.startswith(t + "_")), None)
    return None if data_type is None else (venue, data_type)


def read_tardis_csv(path: str | Path, normalizers: dict | None = None) -> Iterator[tuple[str, Outcome]]:
    """Yield ``(venue, Outcome)`` for every data row of one tardis CSV dataset file."""
    name = Path(str(path)).name
    found = dataset_of(path)
    if found is None:
        yield "unknown", Outcome(dead=DeadLetter(None, None, "bad_capture_line",
                                                 "not a tardis dataset name <exchange>_<trades|liquidations|"
                                                 "derivative_ticker>_<date>_<symbol>.csv.gz", f"{name}:0", 0, b""))
        return
    venue, data_type = found
    normalizers = {} if normalizers is None else normalizers
    norm = normalizers.get(venue) or normalizers.setdefault(venue, normalizer_for(venue))
    event_type, required = DATA_TYPES[data_type]
    with open_text(path) as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        missing = [c for c in required if header is None or c not in header]
        if missing:
            yield venue, Outcome(dead=DeadLetter(venue, event_type, "bad_capture_line",
                                                 f"{data_type} header lacks {', '.join(missing)}", f"{name}:1", 0,
                                                 ",".join(header or []).encode()))
            return
        for row in reader:
            src = f"{name}:{reader.line_num}"
            line = ",".join(row)
            if len(row) != len(header):
                yield venue, Outcome(dead=DeadLetter(venue, event_type, "bad_capture_line",
                                                     f"{len(row)} values for {len(header)} columns", src, 0,
                                                     line.encode()))
                continue
            cells = dict(zip(header, row, strict=True))
            try:
                received = _micros(cells, "local_timestamp", event_type)
                records = _ROW_READERS[data_type](norm.instruments, venue, cells, received)
            except Malformed as bad:
                yield venue, Outcome(dead=DeadLetter(venue, bad.event_type, bad.reason, bad.detail[:500], src,
                                                     _safe_micros(cells), line.encode()))
                continue
            yield venue, Outcome(records=records)


# --- one row -> records -----------------------------------------------------------------------------------

def _number(cells: dict, name: str, et: str, *, positive: bool = False, optional: bool = False) -> float | None:
    text = cells.get(name, "")
    if text == "":
        if optional:
            return None
        raise Malformed("missing_field", f"{name} is empty", et)
    return to_float(text, name, et, positive=positive)


def _micros(cells: dict, name: str, et: str) -> int:
    text = cells.get(name, "")
    if not text.isdigit():
        raise Malformed("bad_value" if text else "missing_field", f"{name}={text!r} is not epoch microseconds", et)
    return to_epoch_us(int(text), name, et, unit="us")


def _safe_micros(cells: dict) -> int:
    text = cells.get("local_timestamp", "")
    return int(text) if text.isdigit() and len(text) < 19 else 0


def _instrument(book: Any, venue: str, cells: dict, et: str) -> Instrument:
    symbol = cells.get("symbol", "")
    inst = book.get(symbol) if symbol else None
    if inst is None:
        raise Malformed("unknown_symbol", f"cannot normalize symbol {symbol!r}: " + REFRESH_HINT.format(venue=venue),
                        et)
    return inst


def _trade_row(book: Any, venue: str, cells: dict, received_us: int) -> list[Normalized]:
    et = "trade"
    inst = _instrument(book, venue, cells, et)
    side = cells["side"]
    if side not in ("buy", "sell"):
        raise Malformed("bad_value", f"side={side!r}: a trade needs its taker side", et)
    price = _number(cells, "price", et, positive=True)
    qty = _number(cells, "amount", et, positive=True)
    return [inst.trade(price, qty, _micros(cells, "timestamp", et), received_us, cells.get("id") or None, side)]


def _liquidation_row(book: Any, venue: str, cells: dict, received_us: int) -> list[Normalized]:
    et = "liquidation"
    inst = _instrument(book, venue, cells, et)
    side = _LIQUIDATED.get(cells["side"])
    if side is None:
        raise Malformed("bad_value", f"side={cells['side']!r} is neither buy nor sell", et)
    price = _number(cells, "price", et, positive=True)
    size, usd = inst.to_base_and_usd(price, _number(cells, "amount", et, positive=True))
    return [(et, {
        **inst.common_fields(),
        "event_time": _micros(cells, "timestamp", et),
        "ingest_time": received_us,
        "side": side,
        "price": price,
        "size": size,
        "notional_usd": usd,
        "order_id": cells.get("id") or None,
    })]


def _ticker_row(book: Any, venue: str, cells: dict, received_us: int) -> list[Normalized]:
    inst = _instrument(book, venue, cells, "funding")
    event_time = _micros(cells, "timestamp", "funding")
    mark = _number(cells, "mark_price", "funding", positive=True, optional=True)
    out: list[Normalized] = []
    if mark is not None:
        rate = nft = None
        if inst.kind != "future":  # a dated future has no funding (tardis may still carry a zero rate)
            rate = _number(cells, "funding_rate", "funding", optional=True)
            nft = _micros(cells, "funding_timestamp", "funding") // 1000 if cells.get("funding_timestamp") else None
        out.append(("funding", {
            **inst.common_fields(),
            "event_time": event_time,
            "ingest_time": received_us,
            "mark_price": mark,
            "index_price": _number(cells, "index_price", "funding", optional=True),
            "funding_rate": rate,
            "next_funding_time": nft,
        }))
    oi = _number(cells, "open_interest", "open_interest", optional=True)
    if oi is not None:
        if oi < 0:
            raise Malformed("bad_value", f"open_interest={oi} is negative", "open_interest")
        price = mark if mark is not None else _number(cells, "last_price", "open_interest", positive=True,
                                                      optional=True)
        if price is None:
            raise Malformed("no_reference_price", "open_interest without a mark or last price to convert it",
                            "open_interest")
        base, usd = inst.to_base_and_usd(price, oi)
        out.append(("open_interest", {
            **inst.common_fields(),
            "event_time": event_time,
            "ingest_time": received_us,
            "open_interest": base,
            "open_interest_usd": usd if inst.inverse or inst.quote in USD_QUOTES else None,
        }))
    if not out:
        raise Malformed("missing_field", "derivative_ticker row with neither mark_price nor open_interest", "funding")
    return out


_ROW_READERS = {"trades": _trade_row, "liquidations": _liquidation_row, "derivative_ticker": _ticker_row}
