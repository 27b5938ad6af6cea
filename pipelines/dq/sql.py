"""A suite's expectations evaluated in DuckDB: the gate's fast path (ADR 031).

Great Expectations spends ~20-40 ms of Python per expectation whatever the row count (its metric
graph, configuration copies, result serialization): ~1.5 s for the gate's 11 suites on 60 rows
as on 3,000 (docs/performance.md, "DQ gate per cycle"). Here each expectation of a suite becomes
one ``count_if`` over the suite's own rows (the same scoped query GX would get as a frame), all of
a suite's in one DuckDB query of a few milliseconds.

The SQL states GX's own semantics for the pandas frame it would validate:

* column map expectations (not null aside) ignore missing values; missing is NULL or, in a
  float column, NaN (pandas shows both as NaN);
* column pair expectations skip the rows ``ignore_row_if`` names (default: both missing); a row
  with one value missing is unexpected (pandas compares NaN as false);
* uniqueness counts the rows whose key occurs more than once among the rows not skipped
  (missing values equal to each other, as ``DataFrame.duplicated``).

Only expectations whose every argument is understood compile (no ``mostly``, no row
condition...); a suite with any other expectation returns None and goes to GX whole. The
verdicts are held equal to GX's by ``tests/unit/test_dq_sql.py`` on frames with every kind of
violation, and at run time by the gates that run GX: they evaluate both and log a disagreement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: arguments understood per expectation type (others: not compiled, GX validates the suite)
_ARGS = {
    "expect_column_values_to_not_be_null": {"column"},
    "expect_column_values_to_be_unique": {"column"},
    "expect_compound_columns_to_be_unique": {"column_list", "ignore_row_if"},
    "expect_column_values_to_be_in_set": {"column", "value_set"},
    "expect_column_values_to_be_between": {"column", "min_value", "max_value", "strict_min", "strict_max"},
    "expect_column_pair_values_a_to_be_greater_than_b": {"column_A", "column_B", "or_equal", "ignore_row_if"},
    "expect_column_pair_values_to_be_in_set": {"column_A", "column_B", "value_pairs_set", "ignore_row_if"},
}
_FLOAT_TYPES = {"DOUBLE", "FLOAT", "REAL"}


@dataclass(frozen=True)
class Compiled:
    """One expectation as a DuckDB boolean expression over the suite's rows (``t``) that holds on
    an unexpected row, or, for uniqueness, a query counting the unexpected rows."""

    type: str
    kwargs: dict[str, Any]
    row_unexpected: str | None = None
    count_query: str | None = None


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int | float):
        return repr(float(v)) if isinstance(v, float) else str(v)
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    raise TypeError(f"no SQL literal for {type(v).__name__}")


def _missing(col: str, types: dict[str, str]) -> str:
    c = _q(col)
    if col not in types:
        raise KeyError(col)  # GX reports a missing column as a failed expectation: let it
    return f"({c} IS NULL OR isnan({c}))" if types[col] in _FLOAT_TYPES else f"({c} IS NULL)"


def _skip(kind: str, cols: list[str], types: dict[str, str]) -> str:
    miss = [_missing(c, types) for c in cols]
    if kind in ("both_values_are_missing", "all_values_are_missing"):
        return "(" + " AND ".join(miss) + ")"
    if kind in ("either_value_is_missing", "any_value_is_missing"):
        return "(" + " OR ".join(miss) + ")"
    if kind == "neither":
        return "FALSE"
    raise ValueError(f"ignore_row_if={kind!r}")


def compile_expectation(exp: Any, types: dict[str, str]) -> Compiled | None:
    """The expectation as SQL over the suite's rows, or None when it has an argument (or a type)
    this module does not state GX's semantics for. ``types``: column -> DuckDB type name."""
    cfg = exp.configuration
    kind, kw = cfg.type, dict(cfg.kwargs)
    if kind not in _ARGS or set(kw) - _ARGS[kind]:
        return None
    try:
        if kind == "expect_column_values_to_not_be_null":
            return Compiled(kind, kw, row_unexpected=_missing(kw["column"], types))
        if kind in ("expect_column_values_to_be_unique", "expect_compound_columns_to_be_unique"):
            cols = [kw["column"]] if "column" in kw else list(kw["column_list"])
            skip = (_missing(cols[0], types) if "column" in kw
                    else _skip(kw.get("ignore_row_if", "all_values_are_missing"), cols, types))
            keys = ", ".join(_q(c) for c in cols)
            return Compiled(kind, kw, count_query=(
                f"SELECT coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM t WHERE NOT {skip} "
                f"GROUP BY {keys} HAVING count(*) > 1)"))
        if kind == "expect_column_values_to_be_in_set":
            col = kw["column"]
            values = ", ".join(_lit(v) for v in kw["value_set"]) or "NULL"
            return Compiled(kind, kw, row_unexpected=(
                f"(NOT {_missing(col, types)} AND NOT coalesce({_q(col)} IN ({values}), FALSE))"))
        if kind == "expect_column_values_to_be_between":
            col, c = kw["column"], _q(kw["column"])
            out = []
            if kw.get("min_value") is not None:
                out.append(f"{c} {'<=' if kw.get('strict_min') else '<'} {_lit(kw['min_value'])}")
            if kw.get("max_value") is not None:
                out.append(f"{c} {'>=' if kw.get('strict_max') else '>'} {_lit(kw['max_value'])}")
            if not out:
                return None  # GX refuses a range with neither bound
            return Compiled(kind, kw, row_unexpected=f"(NOT {_missing(col, types)} AND ({' OR '.join(out)}))")
        if kind == "expect_column_pair_values_a_to_be_greater_than_b":
            a, b = kw["column_A"], kw["column_B"]
            op = ">=" if kw.get("or_equal") else ">"
            skip = _skip(kw.get("ignore_row_if", "both_values_are_missing"), [a, b], types)
            holds = f"(NOT {_missing(a, types)} AND NOT {_missing(b, types)} AND {_q(a)} {op} {_q(b)})"
            return Compiled(kind, kw, row_unexpected=f"(NOT {skip} AND NOT coalesce({holds}, FALSE))")
        if kind == "expect_column_pair_values_to_be_in_set":
            a, b = kw["column_A"], kw["column_B"]
            skip = _skip(kw.get("ignore_row_if", "both_values_are_missing"), [a, b], types)
            pairs = " OR ".join(f"({_q(a)} = {_lit(x)} AND {_q(b)} = {_lit(y)})" for x, y in kw["value_pairs_set"])
            return Compiled(kind, kw, row_unexpected=f"(NOT {skip} AND NOT coalesce({pairs or 'FALSE'}, FALSE))")
    except (KeyError, TypeError, ValueError):
        return None
    return None


def sql_verdict(con: Any, sql: str, expectations: list[Any]) -> dict[str, Any] | None:
    """Evaluate ``expectations`` over the rows of ``sql`` in DuckDB. Returns a result shaped like
    GX's (``success``, ``statistics``, ``results`` with each ``expectation_config`` and its
    ``unexpected_count``), or None when an expectation does not compile. DuckDB errors propagate
    (the caller lets GX report them)."""
    types = {row[0]: str(row[1]).split("(")[0].upper() for row in con.execute(f"DESCRIBE ({sql})").fetchall()}
    compiled = [compile_expectation(e, types) for e in expectations]
    if any(c is None for c in compiled):
        return None
    rows = [c for c in compiled if c.row_unexpected is not None]
    selects = ["count(*)"] + [f"coalesce(count_if({c.row_unexpected}), 0)" for c in rows] + [
        f"({c.count_query})" for c in compiled if c.count_query is not None]
    (counts,) = con.execute(f"WITH t AS ({sql}) SELECT {', '.join(selects)} FROM t").fetchall()
    n, row_counts, dup_counts = counts[0], iter(counts[1:1 + len(rows)]), iter(counts[1 + len(rows):])
    results = []
    for c in compiled:
        unexpected = int(next(row_counts) if c.row_unexpected is not None else next(dup_counts))
        results.append({"expectation_config": {"type": c.type, "kwargs": c.kwargs}, "success": unexpected == 0,
                        "result": {"element_count": int(n), "unexpected_count": unexpected}})
    ok = sum(r["success"] for r in results)
    return {"success": ok == len(results), "engine": "duckdb", "rows": int(n),
            "statistics": {"evaluated_expectations": len(results), "successful_expectations": ok,
                           "unsuccessful_expectations": len(results) - ok,
                           "success_percent": 100.0 * ok / len(results) if results else 100.0},
            "results": results}
