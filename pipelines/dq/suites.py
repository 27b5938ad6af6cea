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


SUITES: dict[str, SuiteSpec] = {
    "liquidations_1m": SuiteSpec("liquidations_1m", "liquidations_1m", critical=True, expectations=_liquidations_1m),
}
