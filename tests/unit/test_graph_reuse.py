"""The stream job's reused analytics graph (ADR 045) against fresh pipelines.

A graph built once and re-run with each cycle's values must give, cycle after cycle, exactly
the rows a fresh ``build_analytics_graph`` pipeline gives for that cycle's values: nothing of one
cycle (its bases, files, emit bound, open-minute cut, OI reference, liquidation-map state, output
folder) may reach the next, and a changed config or runner setting must not be served a graph
built for the old one.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import random
from collections import defaultdict
from pathlib import Path

import apache_beam as beam
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from pipelines.jobs import graph_reuse
from pipelines.jobs.load import _run, _runner_options, build_analytics_graph, export_bars_by_base
from pipelines.settings import JobSettings
from pipelines.transforms.bars import ts_to_micros
from pipelines.transforms.config import MINUTE_US, AnalyticsConfig
from pipelines.transforms.liqmap import LiquidationMapFromPanels
from pipelines.warehouse import migrate
from tests.unit.test_transform_panel_arrow import M0, random_bars

T0 = ts_to_micros(M0)
CFG = AnalyticsConfig(beta_windows_minutes=(30, 60), beta_min_points=10)  # contagion within 150 minutes
SETTINGS = JobSettings()


@pytest.fixture(autouse=True)
def _no_kept_graphs():
    graph_reuse.clear()
    yield
    graph_reuse.clear()


def _bars(seed: int) -> list[dict]:
    """random_bars of BTC and ETH plus SOL (a copy of ETH's venues), with liquidation bursts
    in a few minutes so that cascades and alerts are detected."""
    rows = random_bars(seed, minutes=150)
    rows += [{**r, "base": "SOL", "symbol": r["symbol"].replace("ETH", "SOL")} for r in rows if r["base"] == "ETH"]
    rnd = random.Random(seed)
    for r in rows:
        m = (r["minute_ts"] - M0).total_seconds() // 60
        if (70 <= m <= 74 or 100 <= m <= 104) and r["kind"] == "perpetual":
            r["long_liq_usd"] = round(rnd.uniform(2e6, 6e6), 6)
            r["long_liq_count"] = 40
            r["max_liq_usd"] = round(r["long_liq_usd"] / 10, 6)
            if m >= 100 and r["close"] is not None:  # the second burst crashes the price too
                r["close"] = r["low"] = r["close"] * (1 - 0.04 * (m - 99))
    return rows


def _export(tmp: Path, name: str, rows: list[dict], since_us: int, bases: tuple[str, ...]) -> dict[str, list[str]]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    migrate(con)
    con.register("src", pa.Table.from_pylist([r for r in rows if r["base"] in bases]))
    con.execute("INSERT INTO bars_1m BY NAME SELECT * FROM src")
    return export_bars_by_base(con, tmp / name, CFG, since_us=since_us)


def _cycles(tmp: Path) -> list[dict]:
    """Two cycles that differ in every per-cycle value."""
    first = {"bars_by_base": _export(tmp, "bars-1", _bars(1), T0, ("BTC", "ETH", "SOL")),
             "emit_from_us": T0 + 60 * MINUTE_US, "closed_before_us": T0 + 100 * MINUTE_US,
             "oi_reference": [("BTC", 3e6), ("ETH", 2e6), ("market", 6e6)],
             "liqmap_state": {"state_path": None, "settled_us": T0 + 120 * MINUTE_US, "data_from_us": T0}}
    second = {"bars_by_base": _export(tmp, "bars-2", _bars(2), T0 + 20 * MINUTE_US, ("BTC", "ETH")),
              "emit_from_us": T0 + 65 * MINUTE_US, "closed_before_us": T0 + 102 * MINUTE_US,
              "oi_reference": [("BTC", 9e6), ("market", 1e7)],
              "liqmap_state": {"state_path": None, "settled_us": T0 + 100 * MINUTE_US,
                               "data_from_us": T0 + 20 * MINUTE_US}}
    return [first, second]


def _fresh(out: Path, cycle: dict, config: AnalyticsConfig = CFG) -> None:
    p = beam.Pipeline(runner=FnApiRunner(), options=_runner_options(SETTINGS))
    build_analytics_graph(p, cycle["bars_by_base"], out, config, emit_from_us=cycle["emit_from_us"],
                          oi_reference=cycle["oi_reference"], closed_before_us=cycle["closed_before_us"],
                          liqmap_state=cycle["liqmap_state"])
    _run(p)


def _reused(out: Path, cycle: dict, config: AnalyticsConfig = CFG, settings: JobSettings = SETTINGS) -> None:
    graph_reuse.run_analytics(settings, config, cycle["bars_by_base"], out, emit_from_us=cycle["emit_from_us"],
                              oi_reference=cycle["oi_reference"], closed_before_us=cycle["closed_before_us"],
                              liqmap_state=cycle["liqmap_state"])


def _outputs(out: Path) -> dict[str, list[tuple]]:
    """Every output file's rows by mart, in a total order (NaN made comparable)."""
    rows: dict[str, list[tuple]] = defaultdict(list)
    for f in sorted(out.glob("*.parquet")):
        name = f.name.rsplit("-", 1)[0]
        for r in pq.read_table(f).to_pylist():
            rows[name].append(tuple(sorted((k, "NaN" if isinstance(v, float) and math.isnan(v) else repr(v))
                                           for k, v in r.items())))
    return {k: sorted(v) for k, v in rows.items()}


def test_reused_cycles_equal_fresh_pipelines_and_carry_nothing_over(tmp_path):
    first, second = _cycles(tmp_path)
    # the first cycle's state file: the second cycle starts from the books the first stored
    _fresh(tmp_path / "fresh-1", first)
    state = sorted((tmp_path / "fresh-1").glob("liquidation_map_state-*.parquet"))
    assert state
    second["liqmap_state"]["state_path"] = str(state[0])

    for i, cycle in enumerate([first, second, first], start=1):
        _reused(tmp_path / f"reused-{i}", cycle)
    _fresh(tmp_path / "fresh-2", second)
    _fresh(tmp_path / "fresh-3", first)
    graphs = list(graph_reuse._GRAPHS.values())
    assert len(graphs) == 1 and graphs[0].runs == 3  # one graph, built once, run three times

    for i in (1, 2, 3):
        fresh, reused = _outputs(tmp_path / f"fresh-{i}"), _outputs(tmp_path / f"reused-{i}")
        assert reused == fresh, i
    one, two = _outputs(tmp_path / "fresh-1"), _outputs(tmp_path / "fresh-2")
    # every mart filled, and the two cycles differ in each: a value carried over would show
    for mart in ("bars_1m_symbol", "cascades", "cascade_alerts", "oi_deltas", "contagion", "liquidation_levels",
                 "liquidation_fuel", "liquidation_map_state"):
        assert one.get(mart) and two.get(mart), mart
        assert one[mart] != two[mart], mart
    # the second cycle has no SOL; its later open-minute cut closes the crash's first minutes
    assert not any(("base", "'SOL'") in r for r in two["bars_1m_symbol"])
    assert len(two["cascades"]) > len(one["cascades"])


def test_a_changed_config_or_runner_setting_is_not_served_a_stale_graph(tmp_path):
    first, _ = _cycles(tmp_path)
    changed = dataclasses.replace(CFG, ffill_max_minutes=3, contagion_every_minutes=10)
    _reused(tmp_path / "reused-old", first)
    _reused(tmp_path / "reused-new", first, changed)
    _fresh(tmp_path / "fresh-old", first)
    _fresh(tmp_path / "fresh-new", first, changed)
    new = _outputs(tmp_path / "fresh-new")
    assert new != _outputs(tmp_path / "fresh-old")  # the change shows in the marts
    assert _outputs(tmp_path / "reused-new") == new
    assert len(graph_reuse._GRAPHS) == 2
    # the runner options and the graph's shape key it too
    base = graph_reuse.graph_key(SETTINGS, CFG, 1, [], {})
    assert graph_reuse.graph_key(SETTINGS.replace(workers=2), CFG, 1, [], {}) != base
    assert graph_reuse.graph_key(SETTINGS, CFG, None, [], {}) != base
    assert graph_reuse.graph_key(SETTINGS, CFG, 1, None, {}) != base
    assert graph_reuse.graph_key(SETTINGS, CFG, 1, [], None) != base
    assert graph_reuse.graph_key(SETTINGS, CFG, 5, [("BTC", 1.0)], {"settled_us": 3}) == base


def test_every_graph_parameter_is_a_run_value_or_keys_the_cache():
    """A parameter added to build_analytics_graph (or to the liquidation map's state) must be made a
    RunParam or a key of the kept graphs, else a kept graph would run with its first cycle's value."""
    params = set(inspect.signature(build_analytics_graph).parameters) - {"p"}
    assert params == set(graph_reuse.RUN_VALUES) | set(graph_reuse.BAKED) | {"liqmap_state"}
    liqmap = set(inspect.signature(LiquidationMapFromPanels).parameters) - {"config", "emit_from_us"}
    assert liqmap == set(graph_reuse.LIQMAP_VALUES)
