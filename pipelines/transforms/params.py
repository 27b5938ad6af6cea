"""Values of a graph read when it runs, not baked into it (ADR 045).

A transform's argument is either a plain value (baked into the graph, as a backfill builds it)
or a :class:`RunParam`: the name of a value in a small pickle file that the DoFns read when the
graph runs (in ``start_bundle`` or per element, never in ``__init__`` or ``setup``). The stream
job's analytics graph is built and fused ONCE with its per-cycle values as RunParams
(pipelines/jobs/graph_reuse.py) and re-run every cycle after the file is rewritten: the same
graph code as the backfill's, only where its values come from differs.
"""

from __future__ import annotations

import os
import pickle
import uuid
from pathlib import Path
from typing import Any


class RunParam:
    """The value ``name`` of the run-parameter file ``path``, read at run time (every call: the
    file is small, and nothing read for one run can be served to the next)."""

    def __init__(self, path: str | Path, name: str) -> None:
        self.path = str(path)
        self.name = name

    def get(self) -> Any:
        values = read_run_params(self.path)
        if self.name not in values:
            raise KeyError(f"run parameter {self.name!r} is not in {self.path}")
        return values[self.name]

    def __repr__(self) -> str:
        return f"RunParam({self.name!r})"


def resolve(value: Any) -> Any:
    """A RunParam's value now; any other value as it is."""
    return value.get() if isinstance(value, RunParam) else value


def read_run_params(path: str | Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        return pickle.load(f)


def write_run_params(path: str | Path, values: dict[str, Any]) -> None:
    """Replace the run-parameter file whole (written aside, then renamed: a reader sees the old
    file or the new one, never a half)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as f:
        pickle.dump(values, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


class _Listing:
    def __init__(self, value: Any, listing) -> None:
        self.value, self.listing = value, listing

    def __call__(self, _impulse: bytes) -> list:
        return list(self.listing(self.value))


def _resolved(value: Any) -> Any:
    return resolve(value)


def values_at_run(pbegin, label: str, value: Any, listing=_resolved):
    """A PCollection of ``listing(value)``'s elements, listed when the graph runs (``value`` plain
    or a RunParam). An Impulse and one FlatMap: ``Create([value]) | FlatMap(...)`` is four
    transforms (Impulse, the Create's FlatMap and decoding Map, then the listing), and each
    ParDo costs the runner a DoFn set-up per run."""
    import apache_beam as beam

    return (pbegin | f"{label}Impulse" >> beam.Impulse()
            | label >> beam.FlatMap(_Listing(value, listing)))
