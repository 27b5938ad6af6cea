"""Trade fast paths shared by the venue normalizers (``normalize_raw``, see connectors/normalize.py).

Trades are the bulk of what a venue sends (97.5% of the simulator's mix), and
the general path spends most of its time building dicts (JSON objects, the
record from ``common_fields()``) and naming what is wrong with a message that
has nothing wrong. A venue's ``normalize_raw`` decodes its trade frame with
msgspec into a typed struct (the fields a Trade needs, nothing else), looks the
symbol's terms up in ``InstrumentBook.trade_terms`` (``fill_trade_terms`` on a
miss) and hands each trade to :func:`trade_record`, which returns the record the
checked path would build, or None as soon as a value is one the checked path
would refuse; the whole frame then goes to the general path, which dead-letters
it with the reason. Same float operations as ``Instrument.to_base_and_usd`` and
``to_float``/``to_epoch_us``, so the records are equal, not just close
(tests/unit/test_ingest_fast_path.py).
"""

from __future__ import annotations

from typing import Any

from connectors.instruments import TradeTerms
from connectors.normalize import Normalized
from connectors.plausibility import bounds

_INF = float("inf")
#: a venue missing from the launch table: the fast path declines, implausibility() decides
_NO_LAUNCH = 1 << 62
#: The typed decoders run with ``strict=False`` so that a ``float`` field reads the venues' decimal
#: strings in C. Where it accepts a string, the value is ``float(string)``'s (the same correctly
#: rounded parse; ``"-0"`` gives 0.0, not -0.0, and NaN/inf spellings read as NaN/inf: all three
#: are refused below as not > 0, as the checked path refuses them); what it refuses (``" 1.5"``,
#: ``"1_000"``, ``"1e400"``) goes to the general path. Lax mode would also turn ``"true"`` into a
#: bool and ``"12"`` into an int, so the structs declare no bool or int field: flags and times
#: are ``Any`` and checked here, as the checked path checks them. The structs are ``gc=False``:
#: decoded JSON holds no reference cycles, so tracking them is wasted work.
LAX_FLOATS = {"strict": False}
#: to_epoch_us' plausible window (2009-01-01 .. 2100-01-01) in epoch milliseconds
MIN_EPOCH_MS, MAX_EPOCH_MS = 1_230_768_000_000, 4_102_444_800_000


def trade_record(terms: TradeTerms, price: float, qty: float, t_ms: Any, trade_id: Any, taker_side: str,
                 received_at_us: int) -> Normalized | None:
    """The Trade of one well-formed venue trade, or None when the checked path would dead-letter it.

    ``price``/``qty`` are the venue's decimals as msgspec read them (see
    :data:`LAX_FLOATS`), quantity in the venue's unit (contracts or base units,
    as ``terms`` say); ``t_ms`` the trade time in epoch ms as sent (only an int
    is taken), ``trade_id`` the venue's id as sent (None: no id).
    """
    # to_float(positive=True): finite and > 0 (0 < x < inf is false for NaN too); to_epoch_us' window
    if not (0.0 < price < _INF and 0.0 < qty < _INF and t_ms.__class__ is int and MIN_EPOCH_MS <= t_ms <= MAX_EPOCH_MS):
        return None
    exchange, symbol, base, quote, kind, expiry, contract_value, inverse = terms
    # Instrument.to_base_and_usd, inlined (same operations, same floats)
    if inverse:
        usd = qty * contract_value
        size = usd / price
    else:
        size = qty * contract_value
        usd = size * price
    if not (0.0 < usd < _INF and 0.0 < size < _INF):  # overflow/underflow: the checked path dead-letters it
        return None
    # connectors/plausibility.py, the checks route() makes on the checked path's records: decline what
    # no market produces, so that the checked path dead-letters it with its reason
    b = bounds()
    event_us = t_ms * 1000
    if not (b.min_price < price <= b.max_price and size <= b.max_size and usd <= b.max_notional_usd
            and (event_us <= received_at_us + b.max_future_skew_us or received_at_us <= 0)
            and event_us >= b.launch_by_venue_us.get(exchange, _NO_LAUNCH)):
        return None
    return "trade", {
        "exchange": exchange, "symbol": symbol, "base": base, "quote": quote, "kind": kind, "expiry": expiry,
        "event_time": event_us,
        "ingest_time": received_at_us,
        "trade_id": None if trade_id is None else str(trade_id),
        "price": price,
        "size": size,
        "notional_usd": usd,
        "taker_side": taker_side,
    }
