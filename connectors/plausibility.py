"""What can be a market event: the bounds every record must meet, in one typed place.

A normalizer that parses finite, positive numbers can still hand over something no market
produces: a BTCUSDT liquidation at price 1e30, a trade stamped in the year 2100, a size of 1e13
coins, an open interest of 0. Downstream such a value breaks exact sums (a DECIMAL(24, 6) minute
total overflows) or moves the watermark. So every record is checked here, twice:

* by :func:`connectors.normalize.route` for every venue (the trade fast paths decline such a
  trade, so it takes the checked path and is dead-lettered with the reason), and
* by the Kafka source on every decoded batch (:func:`implausible_rows`), for what reaches the
  topics without the normalizer (an old or foreign producer): those rows become rejects.

Reasons: ``implausible_time`` (event time before the venue existed, or further ahead of the
time it was received than any clock skew explains) and ``implausible_value`` (a price, size,
notional, open interest or funding rate outside the bounds below). The bounds are deliberately
wide: they separate garbage from markets, not unusual markets from usual ones
(connectors/README.md, "Plausibility"). Each is overridable as ``LIQSTREAM_<FIELD>``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from connectors.config import env_overrides

#: launch of each venue's derivatives market (UTC): no event of that venue can be older.
#: Binance USDⓈ-M futures 2019-09, COIN-M 2020-06 (archived messages of its first quarterly, BTCUSD_200925,
#: date from 2020-06-16), Bybit 2018-03 (inverse perpetual),
#: OKX (then OKEx) futures 2014, Hyperliquid 2022-11 (testnet; mainnet 2023), Deribit 2016-06.
VENUE_LAUNCH = {
    "binance-futures": "2019-09-01", "binance-delivery": "2020-06-01", "bybit": "2018-03-01",
    "okx": "2014-01-01", "hyperliquid": "2022-11-01", "deribit": "2016-06-01",
}
#: an exchange the table does not know (a foreign producer): nothing traded before Bitcoin did
EARLIEST_MARKET = "2009-01-03"


@dataclass(frozen=True)
class Plausibility:
    #: an event may be stamped at most this far ahead of the time it was received (clock skew)
    max_future_skew_s: int = 300
    #: prices (trade, liquidation, mark, index) in quote currency: above 0 (> min_price) and at most
    #: max_price. Option premiums in BTC go down to 1e-4, PEPE-like coins to 1e-7 USD.
    min_price: float = 1e-12
    max_price: float = 1e8
    #: one trade's or liquidation's size in base units (SHIB-like coins trade 1e10 at a time; 1e13 is garbage)
    max_size: float = 1e12
    #: one trade's or liquidation's USD notional: the largest prints are ~$1e8
    max_notional_usd: float = 1e10
    #: open interest of one instrument, base units and USD; 0 only for options and spot
    max_open_interest: float = 1e16
    max_open_interest_usd: float = 1e12
    #: |funding rate| per period: venues cap it at a few percent
    max_abs_funding_rate: float = 1.0
    #: resting USD of one book side within a depth band (book_depth): the deepest books hold ~$1e9 in 200 bp
    max_depth_usd: float = 1e12
    #: venue -> earliest plausible event date (YYYY-MM-DD); ``LIQSTREAM_VENUE_LAUNCH=okx=2014-01-01,...``
    venue_launch: dict[str, str] = field(default_factory=lambda: dict(VENUE_LAUNCH))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Plausibility:
        env = os.environ if environ is None else environ
        changes: dict[str, Any] = env_overrides(cls, "LIQSTREAM_", env, skip=("venue_launch",))
        raw = env.get("LIQSTREAM_VENUE_LAUNCH")
        if raw:
            changes["venue_launch"] = {**VENUE_LAUNCH, **dict(p.split("=", 1) for p in raw.split(",") if "=" in p)}
        return dataclasses.replace(cls(), **changes)

    def launch_us(self, exchange: str | None) -> int:
        return _day_start_us(self.venue_launch.get(exchange or "", EARLIEST_MARKET))

    @property
    def max_future_skew_us(self) -> int:
        return self.max_future_skew_s * 1_000_000

    @functools.cached_property
    def launch_by_venue_us(self) -> dict[str, int]:
        """:meth:`launch_us` of every venue in the table (looked up per trade by the fast paths)."""
        return {venue: self.launch_us(venue) for venue in self.venue_launch}


@functools.lru_cache(maxsize=256)
def _day_start_us(day: str) -> int:
    # checked on every record: parsing the ISO day each time was 11 of the check's 18 µs (issue 21)
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1_000_000)


@functools.cache
def bounds() -> Plausibility:
    """The process's bounds (from the environment, read once: checked on every record)."""
    return Plausibility.from_env()


_PRICE_FIELDS = ("price", "mark_price", "index_price", "best_bid", "best_ask")
#: book_depth's band amounts: USD >= 0 (an empty band is 0), null where the book view does not reach
DEPTH_USD_FIELDS = tuple(f"{side}_usd_{band}bp" for side in ("bid", "ask") for band in (10, 50, 100, 200))


def implausibility(event_type: str, rec: dict[str, Any], received_at_us: int | None = None,
                   b: Plausibility | None = None) -> tuple[str, str] | None:
    """(reason, detail) when ``rec`` cannot be a market event, else None.

    ``received_at_us``: when the message was received (default: the record's ``ingest_time``)."""
    b = b or bounds()
    t = rec.get("event_time")
    if t is not None:
        received = rec.get("ingest_time") if received_at_us is None else received_at_us
        # a receive time of 0 is one that was not recorded (captures without it): nothing to compare
        if received is not None and received > 0 and t > received + b.max_future_skew_us:
            return "implausible_time", (f"event_time {_iso(t)} is {(t - received) / 1e6:.0f} s after it was received "
                                        f"({_iso(received)}; max {b.max_future_skew_s} s)")
        if t < b.launch_us(rec.get("exchange")):
            return "implausible_time", f"event_time {_iso(t)} is before {rec.get('exchange')} existed"
    for name in _PRICE_FIELDS:
        v = rec.get(name)
        if v is not None and not b.min_price < v <= b.max_price:  # NaN fails too
            return "implausible_value", f"{name}={v!r} is outside ({b.min_price:g}, {b.max_price:g}]"
    for name, cap in (("size", b.max_size), ("notional_usd", b.max_notional_usd)):
        v = rec.get(name)
        if v is not None and not 0.0 < v <= cap:
            return "implausible_value", f"{name}={v!r} is outside (0, {cap:g}]"
    if event_type == "open_interest":
        zero_ok = rec.get("kind") in ("option", "spot")  # an unlisted-yet option strike holds no positions
        for name, cap in (("open_interest", b.max_open_interest), ("open_interest_usd", b.max_open_interest_usd)):
            v = rec.get(name)
            if v is not None and not ((0.0 <= v if zero_ok else 0.0 < v) and v <= cap):
                return "implausible_value", f"{name}={v!r} is outside ({'[' if zero_ok else '('}0, {cap:g}] for a {rec.get('kind')}"
    if event_type == "book_depth":
        for name in DEPTH_USD_FIELDS:
            v = rec.get(name)
            if v is not None and not 0.0 <= v <= b.max_depth_usd:
                return "implausible_value", f"{name}={v!r} is outside [0, {b.max_depth_usd:g}]"
    v = rec.get("funding_rate")
    if v is not None and not -b.max_abs_funding_rate <= v <= b.max_abs_funding_rate:
        return "implausible_value", f"funding_rate={v!r} is outside [-{b.max_abs_funding_rate:g}, {b.max_abs_funding_rate:g}]"
    return None


def _iso(us: int) -> str:
    try:
        return datetime.fromtimestamp(us / 1e6, UTC).isoformat(timespec="seconds")
    except (OverflowError, ValueError, OSError):
        return f"{us} us"


def implausible_rows(event_type: str, batch: Any, now_us: int,
                     b: Plausibility | None = None) -> list[tuple[int, str, str]]:
    """(row, reason, detail) of each row of an Arrow batch of decoded events that
    :func:`implausibility` refuses, or whose ``ingest_time`` lies ahead of ``now_us`` (nothing read
    now was received in the future: a forged ingest time cannot excuse a forged event time).

    A vectorized screen (NumPy over the columns) picks the rows the per-row check then names; a
    flagged row the per-row check accepts is kept (the screen never decides alone)."""
    import numpy as np
    import pyarrow.compute as pc

    b = b or bounds()
    if batch.num_rows == 0:
        return []
    names = batch.schema.names

    def col(name: str, fill: float) -> np.ndarray:
        return batch.column(names.index(name)).fill_null(fill).to_numpy(zero_copy_only=False).astype("float64")

    t = col("event_time", 0.0)
    ingest = col("ingest_time", 0.0)
    late_clock = ingest > now_us + b.max_future_skew_us
    bad = late_clock | ((t > ingest + b.max_future_skew_us) & (ingest > 0))
    exchanges = batch.column(names.index("exchange"))
    for ex in pc.unique(exchanges).to_pylist():
        bad |= pc.equal(exchanges, ex).fill_null(False).to_numpy(zero_copy_only=False) & (t < b.launch_us(ex))
    with np.errstate(invalid="ignore"):  # NaN compares False: flagged by the negations below
        for name in _PRICE_FIELDS:
            if name in names:
                v = col(name, 1.0)
                bad |= ~((v > b.min_price) & (v <= b.max_price))
        for name, cap in (("size", b.max_size), ("notional_usd", b.max_notional_usd)):
            if name in names:
                v = col(name, 1.0)
                bad |= ~((v > 0.0) & (v <= cap))
        for name, cap in (("open_interest", b.max_open_interest), ("open_interest_usd", b.max_open_interest_usd)):
            if name in names:
                v = col(name, 1.0)
                bad |= ~((v > 0.0) & (v <= cap))  # 0 too: the per-row check knows the kinds that allow it
        for name in DEPTH_USD_FIELDS:
            if name in names:
                v = col(name, 0.0)
                bad |= ~((v >= 0.0) & (v <= b.max_depth_usd))
        if "funding_rate" in names:
            v = col("funding_rate", 0.0)
            bad |= ~((v >= -b.max_abs_funding_rate) & (v <= b.max_abs_funding_rate))
    out = []
    for i in np.flatnonzero(bad).tolist():
        if late_clock[i]:
            out.append((i, "implausible_time", f"ingest_time {_iso(int(ingest[i]))} is ahead of the reader's clock "
                                               f"({_iso(now_us)}; max {b.max_future_skew_s} s)"))
            continue
        why = implausibility(event_type, batch.slice(i, 1).to_pylist()[0], b=b)
        if why is not None:
            out.append((i, *why))
    return out
