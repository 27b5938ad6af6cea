"""Expectation suites, one per table, one expectation per stated property."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    table: str
    critical: bool
    expectations: Callable[[], list[Any]]


def _liquidations_1m() -> list[Any]:
    import great_expectations.expectations as gxe

    keys = ["exchange", "symbol", "side", "minute"]
    return [
        *(gxe.ExpectColumnValuesToNotBeNull(column=k) for k in keys),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=keys),
        gxe.ExpectColumnValuesToBeInSet(column="side", value_set=["long", "short"]),
        gxe.ExpectColumnValuesToBeBetween(column="notional_usd", min_value=0, strict_min=True),
        gxe.ExpectColumnValuesToBeBetween(column="liq_count", min_value=1),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="notional_usd", column_B="max_notional_usd", or_equal=True),
    ]


def _bars_1m() -> list[Any]:
    import great_expectations.expectations as gxe

    keys = ["exchange", "symbol", "minute_ts"]
    return [
        *(gxe.ExpectColumnValuesToNotBeNull(column=k) for k in keys),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=keys),
        gxe.ExpectColumnValuesToBeInSet(column="kind", value_set=["perpetual", "future", "spot", "option"]),
        gxe.ExpectColumnValuesToBeBetween(column="volume_usd", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="long_liq_usd", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="short_liq_usd", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="low", min_value=0, strict_min=True),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="high", column_B="low", or_equal=True,
                                                     ignore_row_if="either_value_is_missing"),
    ]


def _cascades() -> list[Any]:
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnValuesToNotBeNull(column="episode_id"),
        gxe.ExpectColumnValuesToBeUnique(column="episode_id"),
        gxe.ExpectColumnValuesToBeInSet(column="direction", value_set=["long_liquidation", "short_squeeze"]),
        gxe.ExpectColumnValuesToBeInSet(column="status", value_set=["open", "closed"]),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="end_ts", column_B="start_ts", or_equal=False),
        gxe.ExpectColumnValuesToBeBetween(column="severity", min_value=0),
    ]


def _oi_deltas() -> list[Any]:
    import great_expectations.expectations as gxe

    keys = ["level", "exchange", "symbol", "as_of_ts", "span"]
    return [
        *(gxe.ExpectColumnValuesToNotBeNull(column=k) for k in ("level", "symbol", "as_of_ts", "span")),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=keys),
    ]


def _contagion() -> list[Any]:
    import great_expectations.expectations as gxe

    keys = ["base", "as_of_ts", "window_minutes"]
    return [
        *(gxe.ExpectColumnValuesToNotBeNull(column=k) for k in keys),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=keys),
    ]


SUITES: dict[str, SuiteSpec] = {
    "liquidations_1m": SuiteSpec("liquidations_1m", "liquidations_1m", critical=True, expectations=_liquidations_1m),
    "bars_1m": SuiteSpec("bars_1m", "bars_1m", critical=True, expectations=_bars_1m),
    "cascades": SuiteSpec("cascades", "cascades", critical=True, expectations=_cascades),
    "oi_deltas": SuiteSpec("oi_deltas", "oi_deltas", critical=False, expectations=_oi_deltas),
    "contagion": SuiteSpec("contagion", "contagion", critical=False, expectations=_contagion),
}
