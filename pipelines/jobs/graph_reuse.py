"""The stream job's analytics graph, built and fused once, re-run every cycle (ADR 045).

A live cycle's analytics phase built a fresh Beam pipeline (``build_analytics_graph``), had it
translated to its proto and fused into stages by the FnApiRunner, then ran it: ~60 % of the phase
was that fixed cost, not the analytics (docs/performance.md, "Analytics graph reuse"). Here the
same graph is built ONCE per shape with its per-cycle values as
:class:`~pipelines.transforms.params.RunParam`s (read from a small file when the graph runs) and
the runner keeps the fused stages of that first run; each later cycle rewrites the file and runs a
copy of the stages on the same FnApiRunner. Still a real Beam run on the FnApiRunner: a fresh
worker, bundle processors, DoFn instances (unpickled from the stages), state and side inputs
every run; only the graph construction, its proto and the fusion are reused.

What is baked into the graph (and so keys the cache): the AnalyticsConfig, the runner options
(``JobSettings.workers``) and the graph's shape (whether the cycle has an open-minute cut, an OI
reference, a liquidation-map state). Everything else a cycle passes is a RunParam
(``RUN_VALUES``); tests/unit/test_graph_reuse.py fails when ``build_analytics_graph`` grows a
parameter that is neither.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import threading
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from pipelines.settings import JobSettings
from pipelines.transforms.config import AnalyticsConfig
from pipelines.transforms.params import RunParam, write_run_params

#: the per-cycle values of ``build_analytics_graph`` read at run time (liqmap_state's keys too)
RUN_VALUES = ("bars_by_base", "out_dir", "emit_from_us", "oi_reference", "closed_before_us")
LIQMAP_VALUES = ("state_path", "settled_us", "data_from_us")
#: what keys the cache besides these values (``build_analytics_graph``'s other parameters)
BAKED = ("config", "window")
#: graphs kept (one per config and shape; a live job uses one or two)
MAX_GRAPHS = 4


class _KeepingFnApiRunner(FnApiRunner):
    """An FnApiRunner that keeps the fused stages of its first run and can run copies of them.

    The copy matters: a run rewrites its stages' data-port payloads (``FnApiRunnerExecutionContext.setup``),
    so the kept stages are copied before the first run uses them and again for every later run."""

    fused: tuple[Any, list] | None = None

    def create_stages(self, pipeline_proto):  # type: ignore[override]
        stage_context, stages = super().create_stages(pipeline_proto)
        if self.fused is None:
            self.fused = copy.deepcopy((stage_context, stages))
        return stage_context, stages

    def run_fused(self):
        stage_context, stages = copy.deepcopy(self.fused)
        return self.run_stages(stage_context, stages)


class ReusedAnalyticsGraph:
    """One shape of the analytics graph: built on its first :meth:`run`, re-run after."""

    def __init__(self, settings: JobSettings, config: AnalyticsConfig, with_cut: bool, with_reference: bool,
                 with_liqmap_state: bool) -> None:
        from pipelines.jobs.load import _runner_options, build_analytics_graph

        self._dir = Path(tempfile.mkdtemp(prefix="liqstream-analytics-graph-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self._dir), True)
        self._params = self._dir / "run-params.pkl"
        self._lock = threading.Lock()
        self.runs = 0

        def param(name: str) -> RunParam:
            return RunParam(self._params, name)

        self._runner = _KeepingFnApiRunner()
        self._pipeline = beam.Pipeline(runner=self._runner, options=_runner_options(settings))
        build_analytics_graph(
            self._pipeline, param("bars_by_base"), param("out_dir"), config, emit_from_us=param("emit_from_us"),
            oi_reference=param("oi_reference") if with_reference else None,
            closed_before_us=param("closed_before_us") if with_cut else None,
            liqmap_state={k: param(k) for k in LIQMAP_VALUES} if with_liqmap_state else None)

    def run(self, bars_by_base: dict[str, list[str]], out_dir: Path, emit_from_us: int | None,
            oi_reference: list | None, closed_before_us: int | None, liqmap_state: dict | None) -> dict[str, int]:
        from pipelines.jobs.load import _counters, _run

        values = {"bars_by_base": bars_by_base, "out_dir": str(out_dir), "emit_from_us": emit_from_us,
                  "oi_reference": list(oi_reference or []), "closed_before_us": closed_before_us,
                  **{k: (liqmap_state or {}).get(k) for k in LIQMAP_VALUES}}
        Path(out_dir).mkdir(parents=True, exist_ok=True)  # a RunParam folder is not made at build time
        with self._lock:
            write_run_params(self._params, values)
            self.runs += 1
            if self._runner.fused is None:  # the first run: translated and fused (and kept) as usual
                return _run(self._pipeline)
            result = self._runner.run_fused()
            result.wait_until_finish()
            return _counters(result)

    def close(self) -> None:
        self._cleanup()


_GRAPHS: OrderedDict[tuple, ReusedAnalyticsGraph] = OrderedDict()
_GRAPHS_LOCK = threading.Lock()


def graph_key(settings: JobSettings, config: AnalyticsConfig, closed_before_us: int | None,
              oi_reference: list | None, liqmap_state: dict | None) -> tuple:
    """Everything baked into a reused graph: equal keys, the same graph."""
    from pipelines.jobs.load import _runner_option_values

    options = tuple(sorted(_runner_option_values(settings).items()))
    return (config, options, closed_before_us is not None, oi_reference is not None, liqmap_state is not None)


def run_analytics(settings: JobSettings, config: AnalyticsConfig, bars_by_base: dict[str, list[str]], out_dir: Path,
                  emit_from_us: int | None, oi_reference: list | None = None, closed_before_us: int | None = None,
                  liqmap_state: dict | None = None) -> dict[str, int]:
    """``build_analytics_graph`` + run, on the kept graph of this config and shape (built on first use)."""
    key = graph_key(settings, config, closed_before_us, oi_reference, liqmap_state)
    with _GRAPHS_LOCK:
        graph = _GRAPHS.pop(key, None)
        if graph is None:
            graph = ReusedAnalyticsGraph(settings, config, *key[2:])
        _GRAPHS[key] = graph  # most recently used last
        while len(_GRAPHS) > MAX_GRAPHS:
            _GRAPHS.popitem(last=False)[1].close()
    return graph.run(bars_by_base, out_dir, emit_from_us, oi_reference, closed_before_us, liqmap_state)


def clear() -> None:
    """Drop every kept graph (tests; a job never needs to)."""
    with _GRAPHS_LOCK:
        while _GRAPHS:
            _GRAPHS.popitem()[1].close()
