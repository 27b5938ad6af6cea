"""Expectation suites, one per table, one expectation per stated property."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ExpectationConfig:
    """What GX's ``Expectation.configuration`` gives (``type``, ``kwargs``) for an :class:`Expect`."""

    type: str
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class Expect:
    """An expectation stated without importing Great Expectations (ADR 053): the name of its GX
    class (``great_expectations.expectations.<name>``) and its arguments, as GX keeps them (floats
    where GX coerces to floats: tests/unit/test_dq_suites.py requires ``configuration`` to equal
    the GX object's). The gates DuckDB evaluates (``sql.py``, ADR 031) need only this; :meth:`to_gx`
    makes the GX object when a checkpoint is built. GX's import and context were ~2 s of CPU on the
    first gate's path."""

    name: str
    kwargs: dict[str, Any] = field(hash=False)

    @property
    def configuration(self) -> ExpectationConfig:
        return ExpectationConfig(re.sub(r"(?<!^)(?=[A-Z])", "_", self.name).lower(), dict(self.kwargs))

    def to_gx(self) -> Any:
        import great_expectations.expectations as gx_expectations

        return getattr(gx_expectations, self.name)(**self.kwargs)


class _Expectations:
    """``gxe.ExpectX(**kwargs)`` -> ``Expect("ExpectX", kwargs)``: the suites read as GX's API."""

    def __getattr__(self, name: str) -> Callable[..., Expect]:
        if not name.startswith("Expect"):
            raise AttributeError(name)
        return lambda **kwargs: Expect(name, kwargs)


gxe = _Expectations()


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    table: str
    critical: bool
    expectations: Callable[[], list[Any]]
    #: a derived check: SQL whose ``{since}`` is the first time the gate checks (a TIMESTAMPTZ
    #: expression); ``table`` then names what it guards. Plain suites validate ``SELECT * FROM table``.
    query: str | None = None
    #: whether a failure that DuckDB finds in a gate between the stream job's full ones runs GX for
    #: the verdict stored (ADR 031). False (a non-critical suite only): DuckDB's verdict is stored,
    #: with the checked rows (``DUCKDB_FAILURE_ROWS``), and GX validates the suite at the full gates
    #: (ADR 059). The freshness suite: a catch-up of a backlog older than its limit fails it by
    #: design, and loading GX for that page was most of a cold catch-up's DQ gate
    gx_on_failure: bool = True

    def __post_init__(self) -> None:
        if self.critical and not self.gx_on_failure:
            raise ValueError(f"suite {self.name}: a critical suite's failure quarantines rows: GX decides it")


def _liquidations_1m() -> list[Any]:
    keys = ["exchange", "symbol", "side", "minute"]
    return [
        *(gxe.ExpectColumnValuesToNotBeNull(column=k) for k in keys),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=keys),
        gxe.ExpectColumnValuesToBeInSet(column="side", value_set=["long", "short"]),
        gxe.ExpectColumnValuesToBeBetween(column="notional_usd", min_value=0.0, strict_min=True),
        gxe.ExpectColumnValuesToBeBetween(column="liq_count", min_value=1.0),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="notional_usd", column_B="max_notional_usd", or_equal=True),
    ]


def _bars_1m() -> list[Any]:
    keys = ["exchange", "symbol", "minute_ts"]
    return [
        *(gxe.ExpectColumnValuesToNotBeNull(column=k) for k in keys),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=keys),
        gxe.ExpectColumnValuesToBeInSet(column="kind", value_set=["perpetual", "future", "spot", "option"]),
        gxe.ExpectColumnValuesToBeBetween(column="volume_usd", min_value=0.0),
        gxe.ExpectColumnValuesToBeBetween(column="long_liq_usd", min_value=0.0),
        gxe.ExpectColumnValuesToBeBetween(column="short_liq_usd", min_value=0.0),
        gxe.ExpectColumnValuesToBeBetween(column="low", min_value=0.0, strict_min=True),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="high", column_B="low", or_equal=True,
                                                     ignore_row_if="either_value_is_missing"),
    ]


def _cascades() -> list[Any]:
    return [
        gxe.ExpectColumnValuesToNotBeNull(column="episode_id"),
        gxe.ExpectColumnValuesToBeUnique(column="episode_id"),
        gxe.ExpectColumnValuesToBeInSet(column="direction", value_set=["long_liquidation", "short_squeeze"]),
        gxe.ExpectColumnValuesToBeInSet(column="status", value_set=["open", "closed"]),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="end_ts", column_B="start_ts", or_equal=False),
        gxe.ExpectColumnValuesToBeBetween(column="severity", min_value=0.0),
        gxe.ExpectColumnValuesToBeInSet(column="kind", value_set=["cascade", "liquidation_burst"]),
        # a burst is never at cascade severity, a cascade always reached a tier (ADR 011)
        gxe.ExpectColumnPairValuesToBeInSet(
            column_A="kind", column_B="severity_level",
            value_pairs_set=[("liquidation_burst", -1)] + [("cascade", k) for k in range(1, 33)]),
    ]


def _oi_deltas() -> list[Any]:
    keys = ["level", "exchange", "symbol", "as_of_ts", "span"]
    return [
        *(gxe.ExpectColumnValuesToNotBeNull(column=k) for k in ("level", "symbol", "as_of_ts", "span")),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=keys),
    ]


def _contagion() -> list[Any]:
    keys = ["base", "as_of_ts", "window_minutes"]
    return [
        *(gxe.ExpectColumnValuesToNotBeNull(column=k) for k in keys),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=keys),
    ]


def _liquidation_levels() -> list[Any]:
    keys = ["base", "exchange", "symbol", "as_of_ts", "side", "price_low"]
    return [
        *(gxe.ExpectColumnValuesToNotBeNull(column=k) for k in [*keys, "usd", "price"]),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=keys),
        gxe.ExpectColumnValuesToBeInSet(column="side", value_set=["long", "short"]),
        gxe.ExpectColumnValuesToBeBetween(column="usd", min_value=0.0),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="price_high", column_B="price_low", or_equal=False),
    ]


def _liquidation_fuel() -> list[Any]:
    keys = ["base", "minute_ts"]
    usd = [f"{s}_usd_{p}pct" for s in ("long", "short") for p in (1, 2, 5)]
    return [
        *(gxe.ExpectColumnValuesToNotBeNull(column=k) for k in [*keys, "price", *usd]),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=keys),
        *(gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0.0) for c in usd),
        # within 2 % holds within 1 %, within 5 % holds within 2 %
        *(gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A=f"{s}_usd_{b}pct", column_B=f"{s}_usd_{a}pct",
                                                       or_equal=True)
          for s in ("long", "short") for a, b in ((1, 2), (2, 5))),
    ]


# bars are continuous in time per active venue symbol: the largest gap between consecutive minutes
# with a bar, per series, over the checked rows (a venue that stops sending shows up here)
BAR_CONTINUITY_SQL = """
SELECT exchange, symbol, count(*) AS bars,
       coalesce(max(gap_minutes), 1) AS max_gap_minutes
FROM (SELECT exchange, symbol,
             (epoch(minute_ts) - epoch(lag(minute_ts) OVER (PARTITION BY exchange, symbol ORDER BY minute_ts))) / 60
                 AS gap_minutes
      FROM bars_1m WHERE minute_ts >= {since})
GROUP BY exchange, symbol
"""

# row counts against the source: liquidations_1m (per side, from the raw events) and bars_1m
# (from event batches) are two aggregations of the same liquidation events; per venue symbol
# and minute their counts must agree (minutes with late liquidations excepted: bars drop those).
LIQUIDATION_RECONCILIATION_SQL = """
WITH l AS (SELECT exchange, symbol, minute AS minute_ts, sum(liq_count) AS n, sum(notional_usd) AS usd
           FROM liquidations_1m WHERE minute >= {since} GROUP BY ALL),
     b AS (SELECT exchange, symbol, minute_ts, long_liq_count + short_liq_count AS n,
                  long_liq_usd + short_liq_usd AS usd
           FROM bars_1m WHERE minute_ts >= {since} AND long_liq_count + short_liq_count > 0),
     late AS (SELECT DISTINCT exchange, symbol, time_bucket(INTERVAL 1 MINUTE, event_ts) AS minute_ts
              FROM late_events WHERE event_type = 'liquidation' AND event_ts >= {since})
SELECT coalesce(l.exchange, b.exchange) AS exchange, coalesce(l.symbol, b.symbol) AS symbol,
       coalesce(l.minute_ts, b.minute_ts) AS minute_ts,
       coalesce(l.n, 0) - coalesce(b.n, 0) AS count_difference,
       abs(coalesce(l.usd, 0) - coalesce(b.usd, 0)) AS usd_difference
FROM l FULL JOIN b USING (exchange, symbol, minute_ts)
WHERE NOT EXISTS (SELECT 1 FROM late WHERE late.exchange = coalesce(l.exchange, b.exchange)
                  AND late.symbol = coalesce(l.symbol, b.symbol) AND late.minute_ts = coalesce(l.minute_ts, b.minute_ts))
"""


# staging: every archived trade and liquidation since the check (the normalized events themselves):
# notional_usd must equal price x size, where size is already in base units (contract value applied,
# inverse contracts converted), per venue symbol the largest relative difference. {archive_files} is
# the list of the archive's Parquet files of the days checked (the suite is skipped when there are none).
STAGING_NOTIONAL_SQL = """
SELECT exchange, symbol, event_type, count(*) AS events,
       max(abs(notional_usd - price * size) / greatest(abs(notional_usd), 1e-9)) AS max_rel_error,
       min(price) AS min_price, min(size) AS min_size
FROM (SELECT *, regexp_extract(filename, '/([a-z_]+)/date=', 1) AS event_type
      FROM read_parquet({archive_files}, union_by_name=true, hive_partitioning=true, filename=true))
WHERE notional_usd IS NOT NULL AND kind <> 'option'  -- option notional is the underlying's value
  AND event_time >= epoch_us({since})
GROUP BY ALL
"""

# freshness: seconds between now and the newest bar (WARN only: a replay of history is stale by design)
FRESHNESS_SQL = """
SELECT epoch(now()) - epoch(max(minute_ts) + INTERVAL 1 MINUTE) AS staleness_s, count(*) AS bars
FROM bars_1m WHERE minute_ts >= {since}
HAVING count(*) > 0
"""


def _staging_notional() -> list[Any]:
    return [
        gxe.ExpectColumnValuesToBeBetween(column="max_rel_error", min_value=0.0, max_value=1e-9),
        gxe.ExpectColumnValuesToBeBetween(column="min_price", min_value=0.0, strict_min=True),
        gxe.ExpectColumnValuesToBeBetween(column="min_size", min_value=0.0, strict_min=True),
        gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=["trade", "liquidation"]),
    ]


def _freshness() -> list[Any]:
    import os

    limit = float(os.environ.get("LIQSTREAM_FRESHNESS_S", "300"))
    return [gxe.ExpectColumnValuesToBeBetween(column="staleness_s", max_value=limit)]


def _bar_continuity() -> list[Any]:
    return [gxe.ExpectColumnValuesToBeBetween(column="max_gap_minutes", min_value=1.0, max_value=5.0)]


def _liquidation_reconciliation() -> list[Any]:
    return [
        gxe.ExpectColumnValuesToBeBetween(column="count_difference", min_value=0.0, max_value=0.0),
        gxe.ExpectColumnValuesToBeBetween(column="usd_difference", min_value=0.0, max_value=0.01),
    ]


SUITES: dict[str, SuiteSpec] = {
    "stg_events_notional": SuiteSpec("stg_events_notional", "archive", critical=True,
                                     expectations=_staging_notional, query=STAGING_NOTIONAL_SQL),
    "bars_1m_freshness": SuiteSpec("bars_1m_freshness", "bars_1m", critical=False, expectations=_freshness,
                                   query=FRESHNESS_SQL, gx_on_failure=False),
    "bars_1m_continuity": SuiteSpec("bars_1m_continuity", "bars_1m", critical=False, expectations=_bar_continuity,
                                    query=BAR_CONTINUITY_SQL),
    "liquidations_reconciliation": SuiteSpec("liquidations_reconciliation", "liquidations_1m", critical=True,
                                             expectations=_liquidation_reconciliation,
                                             query=LIQUIDATION_RECONCILIATION_SQL),
    "liquidations_1m": SuiteSpec("liquidations_1m", "liquidations_1m", critical=True, expectations=_liquidations_1m),
    "bars_1m": SuiteSpec("bars_1m", "bars_1m", critical=True, expectations=_bars_1m),
    "cascades": SuiteSpec("cascades", "cascades", critical=True, expectations=_cascades),
    "oi_deltas": SuiteSpec("oi_deltas", "oi_deltas", critical=False, expectations=_oi_deltas),
    "contagion": SuiteSpec("contagion", "contagion", critical=False, expectations=_contagion),
    "liquidation_levels": SuiteSpec("liquidation_levels", "liquidation_levels", critical=False,
                                    expectations=_liquidation_levels),
    "liquidation_fuel": SuiteSpec("liquidation_fuel", "liquidation_fuel", critical=False,
                                  expectations=_liquidation_fuel),
}
